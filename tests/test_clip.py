"""Frame-accurate clips by stream copy, on real footage cut by the recorder's own code.

The footage (tests.media.encode: 25 fps, a keyframe every second, B-frames, AAC; and
H.264 without B-frames, as cameras send it) is cut into 2 s chunks by
``recorder.importer.cut_file`` and placed in wall time as an import places it: each
chunk starts where the one before ends. Frame times are read back with the system's
ffprobe, which applies edit lists; frame content with PyAV.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import av
import imageio_ffmpeg
import pytest

from recorder import importer
from retrieval import clip as clips
from retrieval.clip import ClipGap, ClipSource, check_restitch, iso, stitch, timeline
from tests.media import encode
from vigil.errors import InvalidInput

FFPROBE = "/usr/bin/ffprobe"
SECONDS = 6
FRAME_US = 40_000  # 25 fps, tests.media.encode's default
CHUNK_US = 2_000_000
# A fixed instant, a quarter second past a whole second: per-second cues start mid-cue.
START_US = (datetime(2026, 11, 21, 7, 34, 58, 250_000, tzinfo=UTC)
            - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
# MP4 header times count seconds from 1904-01-01.
MP4_EPOCH_OFFSET_S = 2_082_844_800
# Between the two runs: not a whole number of frames or milliseconds.
GAP_US = 2_345_678


@dataclass(frozen=True)
class Run:
    """One recording run: its chunks in wall time, and the truth to compare with,
    taken from the encoded file rather than from the chunks."""

    sources: list[ClipSource]
    frame_us: list[int]  # wall time of every frame, in display order
    frame_digest: list[str]  # what each frame shows (luma plane, SHA-256)

    @property
    def start_us(self) -> int:
        return self.sources[0].start_us

    @property
    def end_us(self) -> int:
        return self.sources[-1].end_us


def _digest(frame: av.VideoFrame) -> str:
    plane = frame.planes[0]
    data = bytes(plane)
    rows = (data[y * plane.line_size:y * plane.line_size + plane.width]
            for y in range(plane.height))
    return hashlib.sha256(b"".join(rows)).hexdigest()


def _run(source: Path, workdir: Path, *, start_us: int, first_seq: int) -> Run:
    workdir.mkdir()
    with av.open(str(source)) as container:
        cuts = importer.cut_file(container, workdir=workdir, target_us=CHUNK_US,
                                 name=source.name, progress=importer._Progress(None))
    sources, at = [], start_us
    for n, cut in enumerate(cuts):
        sources.append(ClipSource(path=cut.path, seq=first_seq + n, start_us=at,
                                  end_us=at + cut.media_duration_us))
        at += cut.media_duration_us
    with av.open(str(source)) as container:
        stream = container.streams.video[0]
        frames = [(int(f.pts * stream.time_base * 1_000_000), _digest(f))
                  for f in container.decode(stream)]
    first = frames[0][0]
    return Run(sources=sources, frame_us=[start_us + t - first for t, _ in frames],
               frame_digest=[d for _, d in frames])


def _encode_as_cameras_do(path: Path, *, audio: str = "aac", sample_rate: int = 48_000
                          ) -> Path:
    """H.264 without B-frames, as cameras send it (tests.media.encode's x264 uses them)."""
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
                    "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
                    "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}",
                    "-t", str(SECONDS), "-c:v", "libx264", "-bf", "0", "-g", "25",
                    "-keyint_min", "25", "-pix_fmt", "yuv420p", "-c:a", audio, "-shortest",
                    str(path)], check=True, capture_output=True, timeout=120)
    return path


@pytest.fixture(scope="module", params=["libx264", "libx265", "libx264-no-b-frames"])
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Run, Run]:
    """Two runs of one camera with a gap between them (the same footage twice)."""
    base = tmp_path_factory.mktemp(f"clip-{request.param}")
    if request.param == "libx264-no-b-frames":
        footage = _encode_as_cameras_do(base / "src.mp4")
    else:
        footage = encode(base / "src.mp4", seconds=SECONDS, codec=request.param, gop=25)
    a = _run(footage, base / "a", start_us=START_US, first_seq=1)
    b = _run(footage, base / "b", start_us=a.end_us + GAP_US, first_seq=len(a.sources) + 1)
    assert len(a.sources) == SECONDS * 1_000_000 // CHUNK_US
    assert a.end_us == START_US + SECONDS * 1_000_000
    return a, b


def _overlapping(sources: Sequence[ClipSource], from_us: int, to_us: int
                 ) -> list[ClipSource]:
    return [s for s in sources if s.start_us < to_us and s.end_us > from_us]


def _probe_frames(clip: Path) -> list[int]:
    """Clip times (µs) of the displayed video frames, as ffprobe decodes them."""
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "frame=pts_time", "-of", "csv=p=0", str(clip)],
                         capture_output=True, text=True, check=True, timeout=60)
    assert out.stderr == ""  # no decoding errors: every frame had its references
    return [int(Decimal(line.split(",")[0]) * 1_000_000)
            for line in out.stdout.splitlines() if line.strip()]


def _probe_tags(clip: Path) -> dict[str, str]:
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "format_tags",
                          "-of", "default=noprint_wrappers=1", str(clip)],
                         capture_output=True, text=True, check=True, timeout=60)
    return dict(line.removeprefix("TAG:").split("=", 1) for line in out.stdout.splitlines())


def _decoded_digests(clip: Path) -> list[str]:
    with av.open(str(clip)) as container:
        return [_digest(f) for f in container.decode(video=0)]


def _cues(clip: Path) -> list[tuple[int, int, str]]:
    """The timed text: (start, end) in clip µs, and the text."""
    with av.open(str(clip)) as container:
        stream = container.streams.subtitles[0]
        assert stream.codec_context.name == "mov_text"
        cues = []
        for packet in container.demux(stream):
            if packet.pts is None or packet.size <= 2:
                continue
            tb = packet.time_base
            start = int(packet.pts * tb * 1_000_000)
            cues.append((start, start + int(packet.duration * tb * 1_000_000),
                         bytes(packet)[2:].decode()))
    return cues


def _header_times(clip: Path) -> set[int]:
    """Creation and modification times (seconds since 1904) of mvhd, tkhd and mdhd."""
    data = clip.read_bytes()
    times: set[int] = set()

    def walk(start: int, end: int) -> None:
        while start + 8 <= end:
            size = int.from_bytes(data[start:start + 4], "big")
            kind = data[start + 4:start + 8]
            if kind in (b"moov", b"trak", b"mdia"):
                walk(start + 8, start + size)
            elif kind in (b"mvhd", b"tkhd", b"mdhd"):
                width = 8 if data[start + 8] == 1 else 4
                at = start + 12
                times.add(int.from_bytes(data[at:at + width], "big"))
                times.add(int.from_bytes(data[at + width:at + 2 * width], "big"))
            start += size

    walk(0, len(data))
    return times


def _expected(runs: Sequence[Run], from_us: int, to_us: int) -> tuple[list[int], list[str]]:
    pairs = [(t, d) for run in runs for t, d in zip(run.frame_us, run.frame_digest,
                                                   strict=True) if from_us <= t < to_us]
    return [t for t, _ in pairs], [d for _, d in pairs]


# --- frame accuracy ---------------------------------------------------------------------


def test_frames_are_exact_at_both_ends_and_across_chunk_boundaries(
        runs: tuple[Run, Run], tmp_path: Path) -> None:
    a, _ = runs
    # Mid-GOP and mid-frame at both ends; crossing the chunk boundaries at 2 s and 4 s.
    from_us = START_US + 1_234_567
    to_us = START_US + 4_567_891
    sources = _overlapping(a.sources, from_us, to_us)
    assert len(sources) == 3
    out = tmp_path / "clip.mp4"
    result = stitch(sources, from_us=from_us, to_us=to_us, out=out, title="gate")

    wall, digests = _expected([a], from_us, to_us)
    assert wall[0] >= from_us > wall[0] - FRAME_US  # the first frame at or after from
    assert wall[-1] < to_us <= wall[-1] + FRAME_US  # the last frame before to
    assert [from_us + t for t in _probe_frames(out)] == wall  # none missing, none twice
    assert _decoded_digests(out) == digests  # each shows its own picture, fully decoded
    assert result.first_frame_us == wall[0]
    assert result.last_frame_us == wall[-1]
    assert result.frames == len(wall)
    # Decoding needs the frames from the keyframe at 1 s: copied, not shown.
    assert result.video_packets > result.frames
    assert result.audio_packets > 0
    assert result.duration_us == to_us - from_us


def test_a_range_on_frame_boundaries_keeps_its_first_frame_and_drops_the_last(
        runs: tuple[Run, Run], tmp_path: Path) -> None:
    a, _ = runs
    from_us, to_us = a.frame_us[25], a.frame_us[60]  # a keyframe, and half-open at the end
    out = tmp_path / "clip.mp4"
    result = stitch(_overlapping(a.sources, from_us, to_us), from_us=from_us, to_us=to_us,
                    out=out)
    assert [from_us + t for t in _probe_frames(out)] == a.frame_us[25:60]
    assert result.frames == 35
    # Nothing before a keyframe is needed; the B-frames before to_us need references
    # after it, which are copied and hidden.
    with av.open(str(out)) as container:
        hidden = [p.pts for p in container.demux(video=0)
                  if p.pts is not None and p.is_discard]
    assert result.video_packets == 35 + len(hidden)
    assert all(pts >= to_us - from_us for pts in hidden)


def test_a_clip_across_a_gap_shows_the_jump_and_names_it(runs: tuple[Run, Run],
                                                          tmp_path: Path) -> None:
    a, b = runs
    from_us = a.end_us - 1_100_007
    to_us = b.start_us + 1_300_003
    sources = _overlapping(a.sources + b.sources, from_us, to_us)
    gap = ClipGap(a.end_us, b.start_us, "disconnect")
    out = tmp_path / "clip.mp4"
    result = stitch(sources, from_us=from_us, to_us=to_us, out=out, gaps=[gap], title="gate")

    wall, digests = _expected([a, b], from_us, to_us)
    clip_times = _probe_frames(out)
    assert [from_us + t for t in clip_times] == wall
    assert _decoded_digests(out) == digests
    assert result.frames == len(wall)
    # The timestamps jump by the gap: never closed up.
    steps = [after - before for before, after in zip(clip_times, clip_times[1:],
                                                     strict=False)]
    assert sorted(set(steps)) == [FRAME_US, GAP_US + FRAME_US]

    cues = _cues(out)
    # The cues partition the clip, from 0 to its end.
    assert cues[0][0] == 0 and cues[-1][1] == to_us - from_us
    assert all(before[1] == after[0] for before, after in zip(cues, cues[1:], strict=False))
    gap_cue = (a.end_us - from_us, b.start_us - from_us,
               f"NO RECORDING {iso(a.end_us)}–{iso(b.start_us)} (disconnect)")
    assert gap_cue in cues
    assert "NO RECORDING 2026-11-21T07:35:04.25Z–2026-11-21T07:35:06.595678Z (disconnect)" \
        == gap_cue[2]
    for start, end, text in cues:
        if text.startswith("NO RECORDING"):
            continue
        second = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        second_us = (second - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
        assert second_us <= from_us + start < from_us + end <= second_us + 1_000_000


def test_a_clip_that_starts_in_a_gap_starts_its_video_at_the_first_recorded_frame(
        runs: tuple[Run, Run], tmp_path: Path) -> None:
    a, b = runs
    from_us, to_us = b.start_us - 1_000_003, b.start_us + 1_500_000
    gap = ClipGap(a.end_us, b.start_us, "disconnect")
    out = tmp_path / "clip.mp4"
    result = stitch(_overlapping(b.sources, from_us, to_us), from_us=from_us, to_us=to_us,
                    out=out, gaps=[gap])
    wall, digests = _expected([b], from_us, to_us)
    assert [from_us + t for t in _probe_frames(out)] == wall
    assert _decoded_digests(out) == digests
    assert result.first_frame_us == b.start_us
    cues = _cues(out)
    assert cues[0] == (0, 1_000_003, f"NO RECORDING {iso(a.end_us)}–{iso(b.start_us)} "
                                     "(disconnect)")


# --- what the file says -----------------------------------------------------------------


def test_stitching_is_deterministic_and_carries_the_wall_clock(runs: tuple[Run, Run],
                                                               tmp_path: Path) -> None:
    a, b = runs
    from_us, to_us = START_US + 333_333, b.start_us + 500_000
    sources = _overlapping(a.sources + b.sources, from_us, to_us)
    gaps = [ClipGap(a.end_us, b.start_us, "disconnect")]
    first, second = tmp_path / "one.mp4", tmp_path / "two.mp4"
    stitch(sources, from_us=from_us, to_us=to_us, out=first, gaps=gaps, title="gate")
    stitch(sources, from_us=from_us, to_us=to_us, out=second, gaps=gaps, title="gate")
    data = first.read_bytes()
    assert data == second.read_bytes()
    assert b"Lavf" not in data  # no library version string
    # Every creation and modification time is the range's start, never "now".
    assert _header_times(first) == {from_us // 1_000_000 + MP4_EPOCH_OFFSET_S}
    assert first.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*partial"))

    tags = _probe_tags(first)
    assert tags["creation_time"] == "2026-11-21T07:34:58.583333Z"
    assert tags["vigil_from_us"] == str(from_us)
    assert tags["vigil_to_us"] == str(to_us)
    assert tags["title"] == "gate"
    assert _cues(first)[0] == (0, 1_000_000 - 583_333, "2026-11-21T07:34:58Z")


def test_a_range_without_frames_gives_a_clip_that_says_so(runs: tuple[Run, Run],
                                                          tmp_path: Path) -> None:
    a, b = runs
    # Inside the gap: no chunk at all.
    gap = ClipGap(a.end_us, b.start_us, "disconnect")
    from_us, to_us = a.end_us + 100_000, a.end_us + 900_000
    out = tmp_path / "gap.mp4"
    result = stitch([], from_us=from_us, to_us=to_us, out=out, gaps=[gap])
    assert (result.frames, result.first_frame_us, result.last_frame_us) == (0, None, None)
    assert result.video_packets == result.audio_packets == 0
    assert _cues(out) == [
        (0, 800_000, f"NO RECORDING {iso(a.end_us)}–{iso(b.start_us)} (disconnect)")]
    assert check_restitch(out, [], from_us=from_us, to_us=to_us, gaps=[gap]) == []

    # After the last frame of a chunk, before its end: a chunk, but no frame starts.
    from_us, to_us = a.frame_us[-1] + 1, a.end_us
    out = tmp_path / "between.mp4"
    result = stitch(a.sources[-1:], from_us=from_us, to_us=to_us, out=out)
    assert result.frames == 0 and result.first_frame_us is None
    assert _probe_frames(out) == []


def test_audio_mp4_cannot_hold_is_left_to_the_originals_and_said(tmp_path: Path) -> None:
    footage = _encode_as_cameras_do(tmp_path / "g711.mov", audio="pcm_alaw",
                                    sample_rate=8_000)
    run = _run(footage, tmp_path / "chunks", start_us=START_US, first_seq=1)
    with av.open(str(run.sources[0].path)) as chunk:
        assert chunk.streams.audio[0].codec_context.name == "pcm_alaw"
    from_us, to_us = START_US + 500_000, START_US + 2_500_000
    out = tmp_path / "clip.mp4"
    result = stitch(_overlapping(run.sources, from_us, to_us), from_us=from_us, to_us=to_us,
                    out=out)
    assert result.audio_packets == 0
    assert [from_us + t for t in _probe_frames(out)] == _expected([run], from_us, to_us)[0]
    with av.open(str(out)) as container:
        assert [s.type for s in container.streams] == ["video", "subtitle"]
    tags = _probe_tags(out)
    assert tags["vigil_audio_omitted"] == "pcm_alaw"
    assert "the original chunks keep it" in tags["comment"]
    assert check_restitch(out, _overlapping(run.sources, from_us, to_us), from_us=from_us,
                          to_us=to_us) == []


# --- errors -------------------------------------------------------------------------------


def test_an_unreadable_chunk_is_named(runs: tuple[Run, Run], tmp_path: Path) -> None:
    a, _ = runs
    broken = tmp_path / "broken.mov"
    broken.write_bytes(b"\x00\x00\x00\x08free" + b"not a chunk" * 100)
    sources = [a.sources[0], ClipSource(path=broken, seq=4242, start_us=a.sources[0].end_us,
                                        end_us=a.sources[0].end_us + CHUNK_US)]
    out = tmp_path / "clip.mp4"
    with pytest.raises(clips.UnreadableChunk, match="chunk 4242") as caught:
        stitch(sources, from_us=START_US, to_us=START_US + 3_000_000, out=out)
    assert caught.value.seq == 4242
    assert not out.exists() and not list(tmp_path.glob(".*partial"))

    missing = ClipSource(path=tmp_path / "absent.mov", seq=7, start_us=START_US,
                         end_us=START_US + CHUNK_US)
    with pytest.raises(clips.UnreadableChunk, match="chunk 7"):
        stitch([missing], from_us=START_US, to_us=START_US + 1, out=out)


def test_chunks_with_other_codec_parameters_are_refused(runs: tuple[Run, Run],
                                                        tmp_path: Path) -> None:
    a, _ = runs
    smaller = encode(tmp_path / "small.mp4", seconds=2, size="160x120")
    later = _run(smaller, tmp_path / "small", start_us=a.end_us + GAP_US, first_seq=99)
    sources = [a.sources[-1], *later.sources]
    with pytest.raises(clips.IncompatibleChunks, match="chunk 99"):
        stitch(sources, from_us=a.sources[-1].start_us, to_us=later.end_us,
               out=tmp_path / "clip.mp4")


def test_bad_arguments_are_refused(runs: tuple[Run, Run], tmp_path: Path) -> None:
    a, _ = runs
    out = tmp_path / "clip.mp4"
    with pytest.raises(InvalidInput, match="empty clip range"):
        stitch(a.sources, from_us=START_US, to_us=START_US, out=out)
    with pytest.raises(InvalidInput, match="does not overlap"):
        stitch(a.sources, from_us=START_US, to_us=START_US + 1_000_000, out=out)
    overlapping = [a.sources[0], ClipSource(a.sources[1].path, 9, START_US + 1, a.end_us)]
    with pytest.raises(InvalidInput, match="overlap in time"):
        stitch(overlapping, from_us=START_US, to_us=a.end_us, out=out)
    with pytest.raises(InvalidInput, match="overlaps recorded footage"):
        stitch(a.sources[:1], from_us=START_US, to_us=START_US + 1_000_000, out=out,
               gaps=[ClipGap(START_US + 500_000, START_US + 600_000, "disconnect")])
    assert not out.exists()


# --- check_restitch -------------------------------------------------------------------------


@pytest.fixture
def genuine(runs: tuple[Run, Run], tmp_path: Path) -> tuple[Path, dict]:
    a, b = runs
    args = {"sources": _overlapping(a.sources + b.sources, START_US + 1_234_567,
                                    b.start_us + 700_001),
            "from_us": START_US + 1_234_567, "to_us": b.start_us + 700_001,
            "gaps": [ClipGap(a.end_us, b.start_us, "disconnect")], "title": "gate"}
    out = tmp_path / "clip.mp4"
    stitch(out=out, **args)
    return out, args


def test_check_restitch_accepts_a_genuine_clip(genuine: tuple[Path, dict]) -> None:
    clip, args = genuine
    assert check_restitch(clip, **args) == []


def test_check_restitch_finds_a_changed_payload(genuine: tuple[Path, dict],
                                                tmp_path: Path) -> None:
    clip, args = genuine
    with av.open(str(clip)) as container:
        packets = [p for p in container.demux(video=0) if p.pts is not None]
        number = next(n for n, p in enumerate(packets) if n >= 10 and p.size > 100)
        pos, size = packets[number].pos, packets[number].size
    data = bytearray(clip.read_bytes())
    data[pos + size // 2] ^= 0x01  # one bit of one frame
    tampered = tmp_path / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    assert check_restitch(tampered, **args) == [
        f"stream 0 (video) packet {number}: payload differs"]


def test_check_restitch_finds_a_changed_edit_list(genuine: tuple[Path, dict],
                                                 tmp_path: Path) -> None:
    """The same packets under another edit list: other frames shown."""
    clip, args = genuine
    data = bytearray(clip.read_bytes())
    start = data.index(b"moov") - 4
    size = int.from_bytes(data[start:start + 4], "big")
    moov = data[start:start + size]
    clips.set_video_edit(moov, empty_us=1_000_000, media_time_us=1_000_000,
                         duration_us=2_000_000)
    data[start:start + size] = moov
    tampered = tmp_path / "edited.mp4"
    tampered.write_bytes(bytes(data))
    # The demuxer applies the edit list: it leaves out what the new list does not need
    # to decode, and times the rest from the new start.
    differences = check_restitch(tampered, **args)
    assert any("packets in the clip" in d for d in differences), differences


def test_check_restitch_finds_a_dropped_packet(genuine: tuple[Path, dict],
                                               tmp_path: Path) -> None:
    """One frame cut out, the rest remuxed as it was."""
    clip, args = genuine
    tampered = tmp_path / "dropped.mp4"
    video = 0
    with av.open(str(clip)) as src, av.open(str(tampered), "w", format="mp4") as dst:
        dst.metadata.update(src.metadata)
        mapping = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "video":
                video += 1
                if video == 40:
                    continue
            packet.stream = mapping[packet.stream.index]
            dst.mux(packet)
    differences = check_restitch(tampered, **args)
    assert f"stream 0 (video): {video - 1} packets in the clip, {video} from the originals" \
        in differences, differences


def test_check_restitch_finds_a_clip_of_another_range(genuine: tuple[Path, dict],
                                                      tmp_path: Path) -> None:
    clip, args = genuine
    other = tmp_path / "other.mp4"
    stitch(out=other, **{**args, "from_us": args["from_us"] + FRAME_US})
    differences = check_restitch(other, **args)
    assert any(d.startswith("metadata vigil_from_us") for d in differences), differences
    assert any("packet" in d for d in differences), differences


def test_check_restitch_reports_a_clip_it_cannot_read(genuine: tuple[Path, dict],
                                                      tmp_path: Path) -> None:
    clip, args = genuine
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not an mp4 file")
    (difference,) = check_restitch(garbage, **args)
    assert "cannot be read" in difference
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:4000])
    assert check_restitch(truncated, **args)


def test_check_restitch_reports_originals_that_cannot_be_stitched(
        genuine: tuple[Path, dict]) -> None:
    clip, args = genuine
    (difference,) = check_restitch(clip, **{**args, "to_us": args["from_us"]})
    assert "cannot be stitched again" in difference


# --- the pure parts -----------------------------------------------------------------------


def test_timeline_partitions_the_range() -> None:
    s = 1_000_000
    cues = timeline([(10 * s + 500_000, 12 * s), (12 * s, 12 * s + 250_000),
                     (14 * s, 20 * s)],
                    [ClipGap(12 * s + 250_000, 13 * s, "disconnect")],
                    from_us=11 * s, to_us=14 * s + 1)
    assert cues == [
        clips.Cue(11 * s, 12 * s, "1970-01-01T00:00:11Z"),
        clips.Cue(12 * s, 12 * s + 250_000, "1970-01-01T00:00:12Z"),
        clips.Cue(12 * s + 250_000, 13 * s,
                  "NO RECORDING 1970-01-01T00:00:12.25Z–1970-01-01T00:00:13Z (disconnect)"),
        # A stretch no chunk covers and no gap describes is still said.
        clips.Cue(13 * s, 14 * s, "NO RECORDING 1970-01-01T00:00:13Z–1970-01-01T00:00:14Z"),
        clips.Cue(14 * s, 14 * s + 1, "1970-01-01T00:00:14Z"),
    ]
    with pytest.raises(InvalidInput, match="overlap"):
        timeline([], [ClipGap(0, 10, "a"), ClipGap(5, 15, "b")], from_us=0, to_us=20)


def test_select_video_copies_hidden_references_for_b_frames() -> None:
    P = clips.VideoPacket  # noqa: N806
    # Decode order I0 P3 B1 B2 P6 B4 B5 (frame numbers = display times in 10 µs).
    order = [(0, True), (3, False), (1, False), (2, False), (6, False), (4, False),
             (5, False)]
    packets = [P(pts=10 * n, dts=10 * i - 20, duration=10, key=k)
               for i, (n, k) in enumerate(order)]
    plan = clips.select_video(packets, length_us=55)  # frames 0..5
    assert plan is not None
    assert (plan.first, plan.last, plan.frames) == (0, 6, 6)  # P6 copied, hidden
    assert (plan.first_pts, plan.last_pts, plan.end) == (0, 50, 55)
    assert clips.select_video(packets, length_us=0) is None


def test_the_re_stitch_scratch_goes_to_memory_only_with_room_to_spare() -> None:
    from retrieval import clip

    if not Path(clip.SCRATCH_MEMORY_DIR).is_dir():
        assert clip.scratch_dir(1) is None
        return
    assert clip.scratch_dir(1 << 20) == clip.SCRATCH_MEMORY_DIR
    assert clip.scratch_dir(1 << 60) is None  # more than any memory: the disk
