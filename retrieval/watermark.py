"""The watermarked copy of a stitched clip: re-encoded, with a burned-in overlay.

The copy names the case, the export, the recipient, the export time and the camera,
and shows each frame's recording wall-clock time (UTC, to the millisecond). It is made
by the FFmpeg binary of the imageio-ffmpeg wheel and described, for ``evidence.json``,
by the record :func:`watermark` returns (``docs/design/package.md``).

Invariants
1. No user input reaches FFmpeg's filter syntax. The overlay's text is written to
   files in a work directory and drawn through ``drawtext=textfile=...:expansion=none``,
   so not even drawtext's ``%{...}`` expansion sees it. The filter graph holds only
   text this module writes: numbers, the font path, the work directory path, each
   value quoted for both of FFmpeg's parsing levels (:func:`_quote`).
2. User text is drawn as one line per field: control, format (bidi overrides,
   zero-width) and separator characters are shown as escapes (``\\n``, ``\\u202e``),
   so a field can neither add a line nor reorder what is drawn. Each field is cut at
   ``MAX_FIELD_CHARS``; the record holds the text as drawn (``text_files``).
3. The output shows the same frames at the same timestamps as the input: the
   frames FFmpeg decodes (those an edit list hides are never decoded into the
   output), timestamps kept (``-copyts``, ``-fps_mode passthrough``, the encoder on
   the input's time base), never duplicated or dropped.
4. A frame's wall time is ``clip_start_us`` plus its media time rounded to the
   nearest microsecond; the overlay shows it truncated to the millisecond, exactly
   (see "Exact time" below). Wall times must lie in [1970, 2106).
5. ``out`` is either untouched or the whole new file: FFmpeg writes a partial file
   next to it, which is renamed over ``out`` on success and removed on any failure.

Streams: the first video stream (re-encoded, libx264, yuv420p, same size and frame
rate) and every audio stream (copied). Subtitle and data streams are dropped: the
stitched clip's mov_text track carries the wall-clock times that the copy now burns
in, and the unaltered clip next to it in the package keeps them.

Exact time. drawtext computes in doubles: ``t = pts * time_base``, ``%{pts:gmtime:D}``
shows ``(time_t)(t + D)`` and the milliseconds are ``floor(t*1000)``. A frame exactly
on a millisecond often computes as a hair below it (0.007 * 1000 = 6.9999...) and
would show one millisecond early; at epoch magnitude (2^31 s) doubles are 2.4e-7 s
apart. So the graph rounds each timestamp to the microsecond, moves it onto a
half-microsecond time base and shifts it by the clip start's fraction of a second
plus half a microsecond: ``t`` is then small and always 0.5 µs away from any
millisecond, more than any rounding error (< 0.25 µs for wall times before 2106),
and ``D`` is the start's whole seconds. Seconds and milliseconds are then both
exact, and agree. After the text is drawn the shift is undone and the encoder gets
the original timestamps back (exact for time bases of 1 µs or coarser; finer ones
are refused).

Determinism, measured with this binary (FFmpeg 9.0.2, x264 core 165) on 2 cores:
x264's default frame threading gave different bytes from run to run of the same
command on 320x240 clips (2 to 5 different outputs in 8 runs with 2 or 3 threads),
though 1080p runs happened to agree. With sliced threads, which this module uses,
and with 1 thread, every run gave the same bytes. The output depends on the number
of threads (slices): ``threads=0`` lets x264 choose from the machine's cores (same
machine, same bytes); a fixed ``threads`` gives the same bytes on other machines
with the same binary. ``+bitexact`` keeps version strings and times out of the
container and ``-map_metadata -1`` keeps out the input's (its creation time).
At 1080p on 2 cores sliced threads ran as fast as frame threads (about 100 frames/s,
the encoder's pace; the overlay costs nothing measurable) and the file came out 1.7%
larger.

Caveats
- At irregular frame times the last frame's display duration may differ from the
  input's: FFmpeg hands frame durations through in decode order, so after B-frame
  reordering the last frame may carry another's. Its timestamp is still the same.
- DejaVu Sans Mono has no CJK glyphs: such characters are drawn as boxes (the
  record keeps the text).
- ``-fps_mode passthrough`` only guards: with strictly increasing timestamps FFmpeg's
  default for MP4 would drop nothing either.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
import tempfile
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Final

import av
import imageio_ffmpeg

from vigil.errors import ConfigurationError, InvalidInput, VigilError

FONT_PATH: Final = Path("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf")
FONT_PACKAGE: Final = "fonts-dejavu-core"
# Label and field fit across a 720p or 1080p frame; the record keeps what was drawn.
MAX_FIELD_CHARS: Final = 96
# Wall times must stay below 2^32 s (2106-02-07): up to there a double's rounding
# error at epoch magnitude (<= 2.4e-7 s) stays below the 0.5 µs margin (module doc).
MAX_WALL_US: Final = 2**32 * 1_000_000
# The timestamps round-trip through microseconds (module doc): a time base with
# ticks finer than that would come back changed.
MAX_TIME_BASE_HZ: Final = 1_000_000
# How much of FFmpeg's stderr an error message carries.
STDERR_TAIL_CHARS: Final = 2000

# Layout, top left: the recording time, then the static block.
FONT_SIZE_EXPR: Final = "max(10,h/40)"
BOX_BORDER_PX: Final = 4
MARGIN_PX: Final = 6
GAP_PX: Final = 3
STATIC_TEXTFILE: Final = "overlay.txt"
TIME_TEXTFILE: Final = "time.txt"
WORKDIR_PLACEHOLDER: Final = "{workdir}"

_US_PER_S: Final = 1_000_000
_HALF_US_TB: Final = "1/2000000"
_BARE: Final = re.compile(r"[A-Za-z0-9_./@+*{}-]+")
# Control, format (bidi overrides, zero-width), surrogate, private, unassigned,
# line and paragraph separator characters.
_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAMED_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class WatermarkError(VigilError):
    """The watermarked copy could not be made (the message says why)."""

    code = "watermark_failed"


class WatermarkFontMissing(ConfigurationError):
    """The font the overlay is drawn with is not installed."""


@dataclass(frozen=True)
class Overlay:
    case: str
    export_id: str
    recipient: str
    exported_at: datetime      # aware UTC
    camera: str
    clip_start_us: int         # wall-clock UTC µs of the clip's media time 0


@dataclass(frozen=True)
class EncoderSettings:
    codec: str = "libx264"
    preset: str = "veryfast"
    crf: int = 20
    threads: int = 0


# ---------------------------------------------------------------------------
# Pure: text, time, filter graph, arguments.

def _escape(ch: str) -> str:
    if unicodedata.category(ch) not in _ESCAPED_CATEGORIES:
        return ch
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else (
        f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")


def printable(value: str) -> str:
    """``value`` as one drawable line: invisible and line-breaking characters as escapes."""
    line = "".join(_escape(ch) for ch in value)
    return line if len(line) <= MAX_FIELD_CHARS else line[:MAX_FIELD_CHARS - 1] + "…"


def static_text(overlay: Overlay) -> str:
    """The overlay's fixed lines, as drawn."""
    exported = overlay.exported_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "\n".join([
        f"CASE     {printable(overlay.case)}",
        f"EXPORT   {printable(overlay.export_id)}",
        f"TO       {printable(overlay.recipient)}",
        f"EXPORTED {exported}",
        f"CAMERA   {printable(overlay.camera)}",
    ])


def time_shift(clip_start_us: int) -> tuple[int, int]:
    """(whole seconds for ``gmtime``, shift in half-µs ticks) for a clip start (module doc)."""
    seconds, fraction_us = divmod(clip_start_us, _US_PER_S)
    return seconds, 2 * fraction_us + 1


def time_text(clip_start_us: int) -> str:
    """The drawtext template of the per-frame recording time (our text, never user input)."""
    seconds, _ = time_shift(clip_start_us)
    return (f"RECORDED %{{pts:gmtime:{seconds}:%Y-%m-%d %H\\:%M\\:%S}}"
            ".%{eif:mod(floor(t*1000),1000):d:3} UTC")


def wall_text(wall_us: int) -> str:
    """What the overlay shows for a frame at ``wall_us`` (the reference the tests use)."""
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=wall_us)
    return f"RECORDED {at:%Y-%m-%d %H:%M:%S}.{at.microsecond // 1000:03d} UTC"


def _quote(value: str) -> str:
    """A filter option value, literal through both FFmpeg parsing levels.

    Level 1 (the filter's ``key=value:...`` options): single quotes, inside which
    everything is literal; a quote is closed, escaped and reopened. Level 2 (the
    filter graph): a backslash before each character the graph parser treats
    specially. The result never ends in whitespace, which the parsers would strip.
    Values made only of characters neither level treats specially stay bare."""
    if _BARE.fullmatch(value):
        return value
    level1 = "'" + value.replace("'", "'\\''") + "'"
    return re.sub(r"([\\'\[\],;])", r"\\\1", level1)


def _filter(name: str, **options: str | int) -> str:
    return name + "=" + ":".join(f"{key}={_quote(str(value))}" for key, value in options.items())


def filter_graph(clip_start_us: int, *, workdir: str) -> str:
    """The ``-vf`` graph, reading its text from ``workdir`` (a path or the placeholder)."""
    _, shift = time_shift(clip_start_us)
    text_style: dict[str, str | int] = {
        "fontfile": str(FONT_PATH), "fontsize": FONT_SIZE_EXPR, "fontcolor": "white",
        "borderw": 1, "bordercolor": "black", "box": 1, "boxcolor": "black@0.6",
        "boxborderw": BOX_BORDER_PX, "x": MARGIN_PX,
    }
    return ",".join([
        _filter("format", pix_fmts="yuv420p"),
        # Round to µs (the unit of wall times), then half-µs ticks shifted by the
        # start's fraction of a second plus half a µs (module doc, "Exact time").
        _filter("settb", expr="1/1000000"),
        _filter("settb", expr=_HALF_US_TB),
        _filter("setpts", expr=f"PTS+{shift}"),
        _filter("drawtext", textfile=f"{workdir}/{TIME_TEXTFILE}", **text_style,
                y=MARGIN_PX),
        _filter("drawtext", textfile=f"{workdir}/{STATIC_TEXTFILE}", expansion="none",
                line_spacing=2, **text_style, y=f"{MARGIN_PX}+lh+{2 * BOX_BORDER_PX + GAP_PX}"),
        _filter("setpts", expr=f"PTS-{shift}"),
        _filter("settb", expr="1/1000000"),
    ])


def _arguments(*, exe: str, clip: str, out: str, graph: str,
               encoder: EncoderSettings) -> list[str]:
    return [
        exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats",
        "-progress", "pipe:1",
        "-copyts", "-i", clip,
        # The first video stream and all audio; subtitles and data are dropped.
        "-map", "0:v:0", "-map", "0:a?", "-map_metadata", "-1", "-map_chapters", "-1",
        "-vf", graph,
        "-fps_mode:v", "passthrough", "-enc_time_base:v", "demux",
        "-c:v", encoder.codec, "-preset", encoder.preset, "-crf", str(encoder.crf),
        "-threads:v", str(encoder.threads),
        # Frame-threaded x264 gave different bytes from run to run (module doc).
        *(["-x264-params", "sliced-threads=1"] if encoder.codec == "libx264" else []),
        "-c:a", "copy",
        "-fflags", "+bitexact", "-flags:v", "+bitexact",
        "-movflags", "+faststart", "-f", "mp4", "-y", out,
    ]


def _check(overlay: Overlay, encoder: EncoderSettings) -> None:
    if overlay.exported_at.tzinfo is None or overlay.exported_at.utcoffset() is None:
        raise InvalidInput("the export time of a watermark must be timezone-aware")
    if not 0 <= overlay.clip_start_us < MAX_WALL_US:
        raise InvalidInput(f"clip_start_us {overlay.clip_start_us} is outside [1970, 2106)")
    if not 0 <= encoder.crf <= 51 or encoder.threads < 0:
        raise InvalidInput(f"bad encoder settings: {encoder}")


# ---------------------------------------------------------------------------
# I/O: font, FFmpeg.

def _font_sha256() -> str:
    try:
        return hashlib.sha256(FONT_PATH.read_bytes()).hexdigest()
    except FileNotFoundError:
        raise WatermarkFontMissing(
            f"the watermark font {FONT_PATH} is missing: install the Debian package "
            f"{FONT_PACKAGE} (ops/system-deps.sh does)") from None


@functools.cache
def _ffmpeg_version(exe: str) -> str:
    result = subprocess.run([exe, "-version"], capture_output=True, text=True, check=True,
                            timeout=30)
    return result.stdout.splitlines()[0]


def ffmpeg_command(clip: Path, out: Path, overlay: Overlay, *, workdir: Path,
                   encoder: EncoderSettings = EncoderSettings()) -> list[str]:
    """The exact FFmpeg command that writes the watermarked copy of ``clip`` to ``out``.

    Writes the overlay's text files into ``workdir``, which must outlive the command.
    Progress goes to stdout (``-progress pipe:1``), errors only to stderr."""
    _check(overlay, encoder)
    _font_sha256()
    workdir = Path(workdir).resolve()
    (workdir / STATIC_TEXTFILE).write_text(static_text(overlay), encoding="utf-8")
    (workdir / TIME_TEXTFILE).write_text(time_text(overlay.clip_start_us), encoding="utf-8")
    # "file:" so that no path is taken for an option or a protocol.
    return _arguments(exe=imageio_ffmpeg.get_ffmpeg_exe(), clip=f"file:{Path(clip).resolve()}",
                      out=f"file:{Path(out).resolve()}",
                      graph=filter_graph(overlay.clip_start_us, workdir=str(workdir)),
                      encoder=encoder)


def _clip_end_us(clip: Path) -> int:
    """Where the clip's media ends (for progress), after checking it can be watermarked."""
    try:
        with av.open(str(clip)) as container:
            if not container.streams.video:
                raise WatermarkError(f"the clip {clip.name} has no video stream")
            time_base = container.streams.video[0].time_base
            start, duration = container.start_time or 0, container.duration or 0
    except (av.FFmpegError, OSError) as exc:
        raise WatermarkError(f"cannot read the clip {clip.name}: {exc}") from exc
    if time_base is None or 1 / Fraction(time_base) > MAX_TIME_BASE_HZ:
        raise WatermarkError(f"the clip {clip.name} has a video time base of {time_base}, "
                             f"finer than 1/{MAX_TIME_BASE_HZ} s, which the watermark "
                             "cannot keep exactly")
    return max(start + duration, 1)


def _run(cmd: list[str], *, clip_name: str, stderr_path: Path, end_us: int,
         on_progress: Callable[[float], None] | None) -> None:
    with stderr_path.open("wb") as stderr, subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr,
            text=True) as proc:
        assert proc.stdout is not None
        try:
            reported = -1.0
            for line in proc.stdout:
                key, _, value = line.strip().partition("=")
                if key == "out_time_us" and value.lstrip("-").isdigit():
                    fraction = min(max(int(value) / end_us, 0.0), 1.0)
                elif key == "progress" and value == "end":
                    fraction = 1.0
                else:
                    continue
                if on_progress is not None and fraction > reported:
                    reported = fraction
                    on_progress(fraction)
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        tail = stderr_path.read_bytes()[-STDERR_TAIL_CHARS:].decode("utf-8", "replace")
        raise WatermarkError(f"ffmpeg failed (exit status {proc.returncode}) making the "
                             f"watermarked copy of {clip_name}: {tail.strip()}")


def watermark(clip: Path, out: Path, overlay: Overlay, *,
              encoder: EncoderSettings = EncoderSettings(),
              on_progress: Callable[[float], None] | None = None) -> dict[str, object]:
    """Write the watermarked copy of ``clip`` to ``out``; return its transformation record.

    ``on_progress`` is called with fractions from 0 to 1, in FFmpeg's pace. Raises
    :class:`WatermarkError` (``out`` untouched, no partial file left) if it fails."""
    clip, out = Path(clip), Path(out)
    _check(overlay, encoder)
    font_sha256 = _font_sha256()
    if not clip.is_file():
        raise WatermarkError(f"the clip to watermark does not exist: {clip}")
    end_us = _clip_end_us(clip)
    partial = out.with_name(f".{out.name}.partial")
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-watermark-") as tmp:
            workdir = Path(tmp)
            cmd = ffmpeg_command(clip, partial, overlay, workdir=workdir, encoder=encoder)
            _run(cmd, clip_name=clip.name, stderr_path=workdir / "ffmpeg.stderr", end_us=end_us,
                 on_progress=on_progress)
            texts = {name: (workdir / name).read_text(encoding="utf-8")
                     for name in (STATIC_TEXTFILE, TIME_TEXTFILE)}
        with partial.open("rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    graph = filter_graph(overlay.clip_start_us, workdir=WORKDIR_PLACEHOLDER)
    return {
        "tool": "ffmpeg",
        "version": _ffmpeg_version(imageio_ffmpeg.get_ffmpeg_exe()),
        "filter_graph": graph,
        "arguments": _arguments(exe="ffmpeg", clip="file:{input}", out="file:{output}",
                                graph=graph, encoder=encoder),
        "encoder": asdict(encoder),
        "font": {"file": FONT_PATH.name, "sha256": font_sha256},
        "text_files": {f"{WORKDIR_PLACEHOLDER}/{name}": text for name, text in texts.items()},
    }
