"""The watermarked copy, made by the real FFmpeg binary from real encoded clips.

Pixel checks decode with PyAV and compare luma planes. Where a check must be exact
(which frame shows which time, whether user text was expanded) the copy is encoded
losslessly (``crf=0``), so that every pixel the overlay does not touch is the input's.
"""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import av
import imageio_ffmpeg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrieval import watermark as wm
from retrieval.watermark import EncoderSettings, Overlay, WatermarkError, WatermarkFontMissing
from tests.media import encode
from vigil.errors import InvalidInput

FFPROBE = "/usr/bin/ffprobe"
LOSSLESS = EncoderSettings(preset="ultrafast", crf=0, threads=2)
START_US = 1_700_000_000_520_000  # 2023-11-14 22:13:20.520 UTC: a fractional second
HOSTILE = ("INJECT' : \\ ' % %{n} %{pts} %{localtime} %{eif:1/0:d} , ; [out] [0:v] "
           "\n\r\t\0 \u202eevil\u202c \u2028 drawtext=text=x:fontfile=/etc/passwd")


def overlay(**changes: object) -> Overlay:
    fields: dict[str, object] = {
        "case": "CASE-2024-0042", "export_id": "6f1c2b7e-0000-4000-8000-000000000001",
        "recipient": "Det. Jane Roe", "exported_at": datetime(2024, 5, 1, 12, tzinfo=UTC),
        "camera": "Front door", "clip_start_us": START_US}
    fields.update(changes)
    return Overlay(**fields)  # type: ignore[arg-type]


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args],
                   check=True, capture_output=True, timeout=120)


def probe(path: Path, *entries: str) -> dict:
    out = subprocess.run([FFPROBE, "-v", "error", "-of", "json", *entries, str(path)],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    return json.loads(out)


def video_pts(path: Path) -> list[str]:
    """The displayed video frames' timestamps, as ffprobe decodes them."""
    frames = probe(path, "-select_streams", "v:0", "-show_entries", "frame=pts_time")["frames"]
    return [frame["pts_time"] for frame in frames]


def streams(path: Path) -> list[dict]:
    return probe(path, "-show_entries",
                 "stream=codec_type,codec_name,width,height,pix_fmt,r_frame_rate,"
                 "avg_frame_rate,time_base,duration")["streams"]


def top_level_boxes(path: Path) -> list[bytes]:
    data, at, types = path.read_bytes(), 0, []
    while at + 8 <= len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        if size == 1:
            size = int.from_bytes(data[at + 8:at + 16], "big")
        types.append(data[at + 4:at + 8])
        at += size if size else len(data)
    return types


def audio_packets(path: Path) -> list[tuple[int | None, bytes]]:
    with av.open(str(path)) as container:
        return [(p.pts, bytes(p)) for p in container.demux(audio=0) if p.size]


def lumas(path: Path) -> list[list[bytes]]:
    """Every displayed frame's luma plane, as rows."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            plane, raw = frame.planes[0], bytes(frame.planes[0])
            frames.append([raw[y * plane.line_size:y * plane.line_size + frame.width]
                           for y in range(frame.height)])
    return frames


def mean_diff(a: list[bytes], b: list[bytes], *, rows: range, cols: range) -> float:
    total = sum(abs(a[y][x] - b[y][x]) for y in rows for x in cols)
    return total / (len(rows) * len(cols))


def changed_bands(a: list[bytes], b: list[bytes]) -> list[range]:
    """The runs of rows in which ``b`` differs from ``a``."""
    bands: list[range] = []
    for y, (row_a, row_b) in enumerate(zip(a, b, strict=True)):
        if row_a != row_b:
            if bands and bands[-1].stop == y:
                bands[-1] = range(bands[-1].start, y + 1)
            else:
                bands.append(range(y, y + 1))
    return bands


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """320x240 25 fps 4 s with audio; the same with a mov_text track and an edit list
    hiding the first 13 frames (``-ss 0.52 -c copy``); the same starting at 0.2 s; the
    same at irregular times on a 90 kHz time base, as cameras send; a flat grey 1 s clip."""
    root = tmp_path_factory.mktemp("watermark-media")
    plain = encode(root / "plain.mp4", seconds=4)
    subs = root / "times.srt"
    subs.write_text("1\n00:00:00,000 --> 00:00:04,000\n2023-11-14 22:13:20.520\n")
    subtitled = root / "subtitled.mp4"
    ffmpeg("-i", str(plain), "-i", str(subs), "-map", "0", "-map", "1", "-c", "copy",
           "-c:s", "mov_text", str(subtitled))
    edited = root / "edited.mp4"
    ffmpeg("-ss", "0.52", "-i", str(subtitled), "-map", "0", "-c", "copy", str(edited))
    delayed = root / "delayed.mp4"
    ffmpeg("-i", str(plain), "-map", "0", "-c", "copy", "-output_ts_offset", "0.2", str(delayed))
    irregular = root / "irregular.mp4"
    ffmpeg("-i", str(plain), "-map", "0", "-c:a", "copy", "-c:v", "libx264",
           "-vf", r"setpts=(N*40000+mod(N*7919\,13)*1000)/1000000/TB",
           "-fps_mode:v", "passthrough", "-enc_time_base:v", "demux",
           "-video_track_timescale", "90000", str(irregular))
    flat = root / "flat.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=gray:size=320x240:rate=25", "-t", "1",
           "-c:v", "libx264", "-pix_fmt", "yuv420p", str(flat))
    return {"plain": plain, "edited": edited, "delayed": delayed, "irregular": irregular,
            "flat": flat}


# --- the copy keeps the clip's frames, timestamps and audio ------------------------


@pytest.mark.parametrize(("name", "frames"), [
    ("plain", 100), ("edited", 87), ("delayed", 100), ("irregular", 100)])
def test_same_frames_timestamps_and_audio(media: dict[str, Path], tmp_path: Path,
                                          name: str, frames: int) -> None:
    clip, out = media[name], tmp_path / "clip-watermarked.mp4"
    wm.watermark(clip, out, overlay())

    expected = video_pts(clip)
    assert len(expected) == frames
    assert video_pts(out) == expected
    source, copy = streams(clip), streams(out)
    assert [s["codec_type"] for s in copy] == ["video", "audio"]  # subtitles dropped
    video_in, video_out = source[0], copy[0]
    assert video_out["codec_name"] == "h264" and video_out["pix_fmt"] == "yuv420p"
    for key in ("width", "height", "r_frame_rate", "time_base"):
        assert video_out[key] == video_in[key], key
    if name != "irregular":
        # At irregular times the last frame may last differently (the module's caveat),
        # which moves the stream's duration and ffprobe's average rate with it.
        for key in ("duration", "avg_frame_rate"):
            assert video_out[key] == video_in[key], key
    assert audio_packets(out) == audio_packets(clip)
    boxes = top_level_boxes(out)
    assert boxes.index(b"moov") < boxes.index(b"mdat")  # faststart


def test_hidden_leading_frames_do_not_appear(media: dict[str, Path], tmp_path: Path) -> None:
    """The edited clip shows the plain clip's frames from 13 on; so must its copy."""
    out = tmp_path / "copy.mp4"
    wm.watermark(media["edited"], out, overlay())
    plain, copy = lumas(media["plain"]), lumas(out)

    def nearest(frame: list[bytes], candidates: range) -> int:
        return min(candidates, key=lambda k: mean_diff(frame, plain[k], rows=range(120, 240),
                                                       cols=range(320)))

    assert nearest(copy[0], range(0, 20)) == 13
    assert nearest(copy[1], range(0, 20)) == 14
    assert nearest(copy[-1], range(85, 100)) == 99


# --- the overlay -------------------------------------------------------------------


def test_overlay_is_drawn_top_left_and_nowhere_else(media: dict[str, Path],
                                                    tmp_path: Path) -> None:
    out = tmp_path / "copy.mp4"
    wm.watermark(media["plain"], out, overlay())
    source, copy = lumas(media["plain"])[50], lumas(out)[50]
    assert mean_diff(source, copy, rows=range(0, 80), cols=range(0, 160)) > 20
    assert mean_diff(source, copy, rows=range(120, 240), cols=range(320)) < 2
    assert mean_diff(source, copy, rows=range(240), cols=range(280, 320)) < 2


@pytest.mark.parametrize(("clip_start_us", "frame", "shown"), [
    # 0.52 s + frame 12 (0.48 s) lands exactly on a second: no .999 of the one before.
    (START_US, 12, "RECORDED 2023-11-14 22:13:21.000 UTC"),
    (520_000, 12, "RECORDED 1970-01-01 00:00:01.000 UTC"),
    # 0.017 + 0.08 s: computed without care, 0.097 comes out as 0.096.
    (1_700_000_000_017_000, 2, "RECORDED 2023-11-14 22:13:20.097 UTC"),
    # One microsecond before a millisecond (frame 2 = 0.08 s): still truncated.
    (1_700_000_000_919_999, 2, "RECORDED 2023-11-14 22:13:20.999 UTC"),
])
def test_recording_time_is_exact(media: dict[str, Path], tmp_path: Path, clip_start_us: int,
                                 frame: int, shown: str) -> None:
    """Stands in for OCR: the frame must be pixel-identical to one drawn with the
    expected text as a literal, and its neighbours (other times) must not be."""
    assert wm.wall_text(clip_start_us + frame * 40_000) == shown
    workdir, out, reference = tmp_path / "work", tmp_path / "copy.mp4", tmp_path / "ref.mp4"
    workdir.mkdir()
    cmd = wm.ffmpeg_command(media["plain"], out, overlay(clip_start_us=clip_start_us),
                            workdir=workdir, encoder=LOSSLESS)
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    (workdir / wm.TIME_TEXTFILE).write_text(shown)
    subprocess.run([*cmd[:-1], f"file:{reference}"], check=True, capture_output=True,
                   timeout=120)
    copy, drawn = lumas(out), lumas(reference)
    assert copy[frame] == drawn[frame]
    assert copy[frame - 1] != drawn[frame - 1]
    assert copy[frame + 1] != drawn[frame + 1]


def test_only_the_time_changes_between_frames(media: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "copy.mp4"
    wm.watermark(media["flat"], out, overlay(), encoder=LOSSLESS)
    source, copy = lumas(media["flat"])[0], lumas(out)
    time_band, static_band = changed_bands(source, copy[0])
    assert copy[0] != copy[24]
    assert [copy[0][y] for y in time_band] != [copy[24][y] for y in time_band]
    assert [copy[0][y] for y in static_band] == [copy[24][y] for y in static_band]


# --- hostile text never reaches the filter syntax -------------------------------------


def test_hostile_text_is_drawn_literally(media: dict[str, Path], tmp_path: Path) -> None:
    hostile = overlay(case=HOSTILE, recipient=HOSTILE, camera=HOSTILE, export_id=HOSTILE)
    workdir = tmp_path / "work"
    workdir.mkdir()
    cmd = wm.ffmpeg_command(media["flat"], tmp_path / "x.mp4", hostile, workdir=workdir)
    assert not any("INJECT" in arg or "passwd" in arg for arg in cmd)

    benign_out, hostile_out = tmp_path / "benign.mp4", tmp_path / "hostile.mp4"
    wm.watermark(media["flat"], benign_out, overlay(), encoder=LOSSLESS)
    record = wm.watermark(media["flat"], hostile_out, hostile, encoder=LOSSLESS)
    assert video_pts(hostile_out) == video_pts(media["flat"])

    source = lumas(media["flat"])[0]
    benign, copy = lumas(benign_out), lumas(hostile_out)
    _, benign_static = changed_bands(source, benign[0])
    time_band, static_band = changed_bands(source, copy[0])
    # Five lines, as with benign text: a newline in a field did not add one (which
    # would add a line's height; taller glyphs only add a few rows).
    assert abs(len(static_band) - len(benign_static)) < len(time_band) // 2
    # %{n}, %{pts}, %{localtime} were not expanded: the block is the same on every frame.
    assert all([frame[y] for y in static_band] == [copy[0][y] for y in static_band]
               for frame in copy)
    [drawn] = [text for name, text in record["text_files"].items()  # type: ignore[union-attr]
               if name.endswith(wm.STATIC_TEXTFILE)]
    assert drawn.count("\n") == 4
    assert "%{n}" in drawn and "\\n\\r\\t\\x00" in drawn and "\\u202eevil" in drawn


def test_hostile_paths(media: dict[str, Path], tmp_path: Path) -> None:
    weird = tmp_path / "in ' : , ; [a] \\ % = -x"
    weird.mkdir()
    clip = weird / "-clip's [1];x.mp4"
    clip.write_bytes(media["flat"].read_bytes())
    workdir = weird / "work ' : ,"
    workdir.mkdir()
    out = weird / "out : 'x'.mp4"
    cmd = wm.ffmpeg_command(clip, out, overlay(), workdir=workdir)
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    assert video_pts(out) == video_pts(media["flat"])


@pytest.mark.parametrize(("value", "shown"), [
    ("plain", "plain"),
    ("a\nb", "a\\nb"),
    ("\u202eabc", "\\u202eabc"),
    ("\x00\x1b\x7f", "\\x00\\x1b\\x7f"),
    ("\U000e0001", "\\U000e0001"),
    ("Zoë Łukasz 李", "Zoë Łukasz 李"),
    ("x" * 200, "x" * (wm.MAX_FIELD_CHARS - 1) + "…"),
])
def test_printable(value: str, shown: str) -> None:
    assert wm.printable(value) == shown


# --- the arithmetic behind the exact time ---------------------------------------------


def drawtext_shows(clip_start_us: int, media_us: int) -> tuple[int, int]:
    """(seconds, milliseconds) drawtext computes for our template, in its arithmetic:
    ``t = pts * av_q2d(tb)``; ``%{pts:gmtime:D}`` is ``(time_t)(t + delta_us / 1e6)``
    (libavfilter/textutils.c ff_print_pts); ``mod(x, y)`` is ``x - y*floor(x/y)``."""
    seconds, shift = wm.time_shift(clip_start_us)
    t = float(2 * media_us + shift) * (1 / 2_000_000)
    shown_s = int(t + float(seconds * 1_000_000) / 1_000_000)
    x = math.floor(t * 1000)
    return shown_s, int(x - 1000 * math.floor(x / 1000))


@given(st.integers(0, wm.MAX_WALL_US - 10**12), st.integers(-10**9, 10**11))
def test_time_arithmetic_is_exact(clip_start_us: int, media_us: int) -> None:
    wall_us = clip_start_us + media_us
    if wall_us < 0:
        return
    assert drawtext_shows(clip_start_us, media_us) == (wall_us // 10**6,
                                                       wall_us // 1000 % 1000)


@pytest.mark.parametrize("clip_start_us", [
    START_US, 520_000, 17_000, 2**31 * 10**6 + 999_999, (2**32 - 4) * 10**6 + 1])
def test_time_arithmetic_on_every_millisecond(clip_start_us: int) -> None:
    """Frames exactly on a millisecond, and a microsecond before it, for 3 s.
    (Without the half-microsecond, 0.007 s would show as 0.006.)"""
    first = -(-clip_start_us // 1000) * 1000
    for wall_us in range(max(first, 1000), first + 3_000_000, 1000):
        media_us = wall_us - clip_start_us
        assert drawtext_shows(clip_start_us, media_us) == (wall_us // 10**6,
                                                           wall_us // 1000 % 1000)
        before = wall_us - 1
        assert drawtext_shows(clip_start_us, media_us - 1) == (before // 10**6,
                                                               before // 1000 % 1000)


# --- record, progress, determinism -----------------------------------------------------


def test_transformation_record(media: dict[str, Path], tmp_path: Path) -> None:
    record = wm.watermark(media["plain"], tmp_path / "copy.mp4", overlay())
    assert record["tool"] == "ffmpeg"
    assert str(record["version"]).startswith("ffmpeg version ")
    arguments = record["arguments"]
    assert isinstance(arguments, list)
    assert arguments[0] == "ffmpeg"
    assert arguments[arguments.index("-vf") + 1] == record["filter_graph"]
    assert "drawtext" in str(record["filter_graph"])
    assert "file:{input}" in arguments and arguments[-1] == "file:{output}"
    assert record["encoder"] == {"codec": "libx264", "preset": "veryfast", "crf": 20,
                                 "threads": 0}
    font = wm.FONT_PATH.read_bytes()
    assert record["font"] == {"file": "DejaVuSansMono.ttf",
                              "sha256": hashlib.sha256(font).hexdigest()}
    assert set(record["text_files"]) == {  # type: ignore[arg-type]
        "{workdir}/overlay.txt", "{workdir}/time.txt"}
    text = json.dumps(record)
    assert str(tmp_path) not in text and "/tmp" not in text


def test_progress_reaches_one(media: dict[str, Path], tmp_path: Path) -> None:
    seen: list[float] = []
    wm.watermark(media["plain"], tmp_path / "copy.mp4", overlay(), on_progress=seen.append)
    assert seen and seen[-1] == 1.0
    assert seen == sorted(seen) and all(0.0 <= f <= 1.0 for f in seen)


def test_same_input_same_bytes(media: dict[str, Path], tmp_path: Path) -> None:
    """Frame-threaded x264 (2 threads) failed this about every other run on these frames."""
    digests = set()
    for run in range(4):
        out = tmp_path / f"{run}.mp4"
        wm.watermark(media["plain"], out, overlay(), encoder=EncoderSettings(threads=2))
        digests.add(hashlib.sha256(out.read_bytes()).hexdigest())
    assert len(digests) == 1


# --- failures ------------------------------------------------------------------------


def test_missing_input(tmp_path: Path) -> None:
    with pytest.raises(WatermarkError, match="does not exist"):
        wm.watermark(tmp_path / "absent.mp4", tmp_path / "out.mp4", overlay())
    assert list(tmp_path.iterdir()) == []


def test_unreadable_input(tmp_path: Path) -> None:
    clip = tmp_path / "garbage.mp4"
    clip.write_bytes(b"\0" * 4096)
    with pytest.raises(WatermarkError, match="cannot read the clip garbage.mp4"):
        wm.watermark(clip, tmp_path / "out.mp4", overlay())
    assert list(tmp_path.iterdir()) == [clip]


def test_ffmpeg_failure_keeps_out_and_leaves_no_partial(media: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"previous")
    with pytest.raises(WatermarkError, match="invalid preset 'no-such'") as failure:
        wm.watermark(media["plain"], out, overlay(), encoder=EncoderSettings(preset="no-such"))
    assert "ffmpeg failed (exit status" in str(failure.value)
    assert list(tmp_path.iterdir()) == [out] and out.read_bytes() == b"previous"


def test_interrupted_run_leaves_no_partial(media: dict[str, Path], tmp_path: Path) -> None:
    class Cancelled(Exception):
        pass

    def cancel(fraction: float) -> None:
        raise Cancelled

    with pytest.raises(Cancelled):
        wm.watermark(media["plain"], tmp_path / "out.mp4", overlay(), on_progress=cancel)
    assert list(tmp_path.iterdir()) == []


def test_missing_font_names_the_package(media: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wm, "FONT_PATH", tmp_path / "DejaVuSansMono.ttf")
    with pytest.raises(WatermarkFontMissing, match="fonts-dejavu-core"):
        wm.watermark(media["plain"], tmp_path / "out.mp4", overlay())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [
    {"exported_at": datetime(2024, 5, 1, 12)},
    {"clip_start_us": -1},
    {"clip_start_us": wm.MAX_WALL_US},
])
def test_bad_overlay(media: dict[str, Path], tmp_path: Path, bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        wm.watermark(media["plain"], tmp_path / "out.mp4", overlay(**bad))
