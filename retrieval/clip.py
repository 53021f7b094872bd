"""Frame-accurate clips by stream copy: decrypted chunks in, one MP4 out, nothing
re-encoded.

Status: built for the evidence packages (issue 4, docs/design/package.md). ``stitch``
makes ``data/camera-<id>/clip.mp4``; ``check_restitch`` is the verifier's
``clip.restitch`` check.

Objective: a clip that shows exactly the frames recorded in ``[from_us, to_us)``, whose
every frame can be traced to its wall-clock time, byte for byte the same each time it is
made from the same chunks, and that plays in ordinary players.

Time
* Clip time 0 is wall time ``from_us``. A packet's clip time is
  ``(chunk.start_us - from_us) + (packet time - chunk's first video packet time)``,
  in microseconds (floored), on a 1 µs time base for the video and text tracks (audio
  on its sample rate), so a frame's wall time is ``from_us`` plus its clip time. A gap
  between runs is a jump of the timestamps, never closed up.
* A frame belongs to the clip iff its wall time is in ``[from_us, to_us)``
  (docs/design/time.md): the first displayed frame is the first at or after
  ``from_us``, the last the last before ``to_us``.

Procedure (``stitch``)
1. Check the arguments (``InvalidInput``): a non-empty range; sources that are
   non-empty, overlap the range and do not overlap each other; gaps that overlap
   neither each other nor a source. Sources are stitched in time order.
2. Read each source's video packet times (``UnreadableChunk`` names the seq of a file
   that is not a chunk: unreadable, no video, not starting on a keyframe). All sources
   must share the video codec parameters, and those with audio the audio ones
   (``IncompatibleChunks``): one MP4 track holds one set.
3. Choose the video packets (pure, ``select_video``): the displayed frames are those in
   the range; the copied packets run, in decode order, from the last keyframe at or
   before the first displayed frame to the last displayed frame.
4. Write, by stream copy: the copied video packets, the audio packets in the range
   (first audio stream), and the timed text (``timeline``), interleaved, into a
   private temporary file next to ``out``.
5. Set the video edit list (``_set_video_edit``) to show exactly the displayed frames;
   rename the file to ``out``. ``out`` is either untouched or the whole new clip.

Edit list. The packets before the first displayed frame (needed to decode it) and, with
B-frames, reference frames after the last (needed to decode the frames before them) are
in the file but hidden by the video track's edit list: an empty edit from clip time 0 to
the first displayed frame, then the media from that frame's composition time to the end
of the last displayed frame. FFmpeg's muxer alone (negative timestamps, as
``ffmpeg -ss -c copy`` does) cannot express this: its edit list starts at media time 0,
which FFmpeg's own demuxer then moves onto the first frame whenever the track has
composition offsets (B-frames), losing up to a frame of wall-clock alignment; and it
never trims the end. So the muxer is given video that starts after clip time 0 (the
packets before it shifted to start at 1 µs), which makes it write a two-entry list
(empty edit, media edit), and the entries and the track and movie durations are then
set in place: same sizes, nothing else moves.
Players that follow ISO/IEC 14496-12 and FFmpeg (ffprobe, ffplay, PyAV) show the same
frames at the same times.

B-frames. Cameras almost never send them; files imported from DVRs and the test media
do. They are handled exactly: a frame shown at a B-frame's time may need a reference
frame whose time is at or after ``to_us``; that reference is copied and hidden by the
end of the edit list, so the clip still shows exactly the frames in the range, each
decoded from all its references (counted in ``ClipResult.video_packets``). The one
assumption is closed GOPs, as chunks already require (``recorder.segmenter``): a
decoder starting at a keyframe needs nothing before it.

Gaps. The video has no frames in a gap, so an MP4 player keeps the last frame before
the gap on screen until the first after it (MP4 sample durations run up to the next
sample). The timed-text track therefore says ``NO RECORDING <start>–<end> (<cause>)``
over the whole gap, and the timestamps (ffprobe) show the jump.

Wall-clock time travels in the file: container metadata (``creation_time`` = the
range's start, ``vigil_from_us``, ``vigil_to_us``, ``title``, ``comment``; with
``movflags=use_metadata_tags``) and a ``mov_text`` track (3GPP timed text, the MP4
subtitle format) with a cue per wall-clock second of recorded footage (UTC,
``2026-11-21T07:35:00Z``) and a cue per gap. Its packets are a 16-bit big-endian length
and UTF-8 text; the sample description (``tx3g``) is made by FFmpeg's mov_text encoder,
opened with a fixed style (``TEXT_STYLE``) and never used to encode.

Determinism. Same inputs, same bytes: no current time or randomness; the metadata is
set explicitly; ``fflags=+bitexact`` keeps the library version out of the file; the
muxer's interleaving depends only on the packets. A different FFmpeg version may write
slightly different boxes, which is why ``check_restitch`` compares packets, not bytes.

No frame in range. When no video frame falls in the range (the range lies in a gap, or
between two frames), ``stitch`` still writes a clip: its timed text says what was
recorded or not, it holds the audio in the range, and its video track is empty;
``ClipResult.frames`` is 0 and the frame times are None. The caller decides whether
such a clip is worth packaging.

Caveats
* Sources whose video codec parameters differ (a camera changed resolution or codec
  mid-range) cannot share one track and are refused; export the parts separately.
* A chunk's media time is mapped onto its wall time by offset, not by rate: if a
  recorder ever slews a chunk's wall duration away from its media duration by more than
  a frame, the last frames of one chunk could reach into the next and the stitch is
  refused (``IncompatibleChunks``); audio packets that would overlap are dropped.
* Open GOPs (HEVC CRA with leading pictures) are not supported, as in the recorder.
* H.265 is written with the muxer's default sample entry (``hev1``), which allows
  in-band parameter sets as cameras send them; Apple players want ``hvc1``.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO, Final

import av
import av.container
import av.error
import av.stream

from vigil.errors import IntegrityError, InvalidInput, VigilError

US_PER_S: Final = 1_000_000
# Opening a chunk: the MP4 boxes give every stream parameter the stitch copies, so
# FFmpeg's probe decodes as little as it can (30 ms a 1080p chunk by default, 12 ms so).
PROBE_OPTIONS: Final = {"probesize": "4096", "analyzeduration": "0"}
# What is read is MP4 (ISO BMFF) from local files only: a member of an untrusted package
# named *.m3u8 must not be opened as a playlist that fetches other files or URLs.
READ_FORMAT: Final = "mp4"
READ_OPTIONS: Final = {"protocol_whitelist": "file,subfile"}
# Linux's memory file system, for the re-stitch's throw-away clip (scratch_dir).
SCRATCH_MEMORY_DIR: Final = "/dev/shm"  # noqa: S108 - a private mkdtemp dir is made in it
# Video and text timestamps are microseconds: the catalog's unit, so a frame's wall time
# is exact, and ffprobe's 6-decimal times read back exactly.
TIME_BASE: Final = Fraction(1, US_PER_S)
MOV_OPTIONS: Final = {
    "movflags": "+faststart+use_metadata_tags",
    # Edit lists and durations in µs as well (the default, ms, would round the ends).
    "movie_timescale": str(US_PER_S),
    # No library version string (and nothing else that varies) in the file.
    "fflags": "+bitexact",
}
# Wall-clock times are UTC µs since 1970, up to the end of year 9999 (ISO 8601's four
# digits; Python's datetime).
MAX_WALL_US: Final = 253_402_300_800 * US_PER_S
# The format tags Vigil writes, and the ones check_restitch compares.
CLIP_TAGS: Final = ("title", "comment", "creation_time", "vigil_from_us", "vigil_to_us",
                    "vigil_audio_omitted")
# The timed text's style: an ASS header for FFmpeg's mov_text encoder, which turns it
# into the track's sample description (font, size, colours). White on the default
# (transparent) box, monospace so that the times do not jump about.
TEXT_STYLE: Final = (
    b"[Script Info]\n"
    b"ScriptType: v4.00+\n"
    b"PlayResX: 384\n"
    b"PlayResY: 288\n"
    b"\n"
    b"[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
    b"BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
    b"BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Monospace,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,"
    b"2,10,10,10,1\n"
    b"\n"
    b"[Events]\n"
    b"Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
# check_restitch lists at most this many differing packets per stream, then a count:
# one dropped packet shifts every later one.
MAX_PACKET_DIFFERENCES: Final = 5


# --- errors ---------------------------------------------------------------------------


class UnreadableChunk(IntegrityError):
    """A source file is not a chunk that can be stitched."""

    code = "unreadable_chunk"

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"chunk {seq} cannot be stitched: {reason}")
        self.seq = seq


class IncompatibleChunks(InvalidInput):
    """The sources cannot share one clip (codec parameters change, times run back)."""

    code = "incompatible_chunks"


class ClipWriteError(VigilError):
    """FFmpeg refused to write the clip, or wrote it in a shape this module does not
    know how to finish."""

    code = "clip_write_error"


# --- the interface --------------------------------------------------------------------


@dataclass(frozen=True)
class Extent:
    """Bytes ``[offset, offset + length)`` of a file: a member stored (not deflated) in
    a zip, read in place through FFmpeg's ``subfile`` protocol instead of copied out."""

    offset: int
    length: int


@dataclass(frozen=True)
class ClipSource:
    path: Path
    seq: int
    start_us: int  # wall-clock UTC µs of the chunk's first video packet
    end_us: int
    extent: Extent | None = None  # None: the whole file


def media_url(path: Path, extent: Extent | None = None) -> str:
    """What FFmpeg opens for ``path`` (or the ``extent`` of it)."""
    if extent is None:
        return str(path)
    if extent.offset < 0 or extent.length <= 0:
        raise InvalidInput(f"{path.name}: an empty or negative extent {extent}")
    return (f"subfile,,start,{extent.offset},end,{extent.offset + extent.length},,"
            f":file:{path.resolve()}")


@dataclass(frozen=True)
class ClipGap:
    start_us: int
    end_us: int
    cause: str


@dataclass(frozen=True)
class ClipResult:
    first_frame_us: int | None  # wall-clock µs of the first displayed video frame
    last_frame_us: int | None  # (None: no frame in range)
    frames: int  # displayed video frames
    video_packets: int  # copied, including those only needed to decode
    audio_packets: int
    duration_us: int  # of the clip: to_us - from_us


# --- the pure core --------------------------------------------------------------------


@dataclass(frozen=True)
class VideoPacket:
    """A video packet's times in clip µs (clip time 0 = ``from_us``)."""

    pts: int
    dts: int
    duration: int
    key: bool


@dataclass(frozen=True)
class VideoPlan:
    """Which video packets to copy (indices into decode order, inclusive) and what the
    edit list shows: ``[first_pts, end)`` in clip µs."""

    first: int
    last: int
    frames: int
    first_pts: int
    last_pts: int
    end: int


def select_video(packets: Sequence[VideoPacket], *, length_us: int) -> VideoPlan | None:
    """The packets to copy for the frames in ``[0, length_us)``; None if there are none.

    ``packets`` are in decode order and start with a keyframe. The copy starts at the
    last keyframe at or before the first displayed frame (in decode order) and ends at
    the last displayed frame (in decode order): with B-frames that may include
    reference frames at or after ``length_us``, which the edit list hides.
    """
    shown = [i for i, p in enumerate(packets) if 0 <= p.pts < length_us]
    if not shown:
        return None
    first = next(i for i in range(shown[0], -1, -1) if packets[i].key)
    last_shown = max(shown, key=lambda i: packets[i].pts)
    first_pts = min(packets[i].pts for i in shown)
    last_pts = packets[last_shown].pts
    duration = packets[last_shown].duration
    end = length_us if duration <= 0 else min(length_us, last_pts + duration)
    return VideoPlan(first=first, last=shown[-1], frames=len(shown), first_pts=first_pts,
                     last_pts=last_pts, end=end)


@dataclass(frozen=True)
class Cue:
    start_us: int  # wall clock
    end_us: int
    text: str


def iso(at_us: int, *, whole_seconds: bool = False) -> str:
    """UTC ISO 8601 with a ``Z``: ``2026-11-21T07:35:00Z``, a fraction only if there
    is one (``07:35:00.25Z``), or truncated to the second."""
    if not 0 <= at_us < MAX_WALL_US:
        return f"{at_us} µs since 1970"  # no calendar date; said as it is
    seconds, micros = divmod(at_us, US_PER_S)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if micros and not whole_seconds:
        text += f".{micros:06d}".rstrip("0")
    return text + "Z"


def timeline(spans: Sequence[tuple[int, int]], gaps: Sequence[ClipGap], *, from_us: int,
             to_us: int) -> list[Cue]:
    """The timed text: cues that partition ``[from_us, to_us)``.

    Recorded time (the union of ``spans``) gets one cue per wall-clock second, naming
    the second; every other stretch one cue ``NO RECORDING <start>–<end> (<cause>)``,
    with the bounds and cause of the given gap that covers it (uncovered stretches no
    gap describes are named by their own bounds, without a cause). Raises
    ``InvalidInput`` if a gap overlaps recorded time or another gap.
    """
    recorded: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        start, end = max(start, from_us), min(end, to_us)
        if end <= start:
            continue
        if recorded and start <= recorded[-1][1]:
            recorded[-1] = (recorded[-1][0], max(end, recorded[-1][1]))
        else:
            recorded.append((start, end))
    described: list[tuple[int, int, ClipGap]] = []
    for gap in sorted(gaps, key=lambda g: (g.start_us, g.end_us)):
        start, end = max(gap.start_us, from_us), min(gap.end_us, to_us)
        if end <= start:
            continue
        if described and start < described[-1][1]:
            raise InvalidInput(f"gaps [{iso(described[-1][2].start_us)}, "
                               f"{iso(described[-1][2].end_us)}) and [{iso(gap.start_us)}, "
                               f"{iso(gap.end_us)}) overlap")
        for r_start, r_end in recorded:
            if start < r_end and r_start < end:
                raise InvalidInput(f"the gap [{iso(gap.start_us)}, {iso(gap.end_us)}) "
                                   f"({gap.cause}) overlaps recorded footage")
        described.append((start, end, gap))
    cues: list[Cue] = []
    cursor = from_us

    def unrecorded(until: int) -> None:
        nonlocal cursor
        for start, end, gap in described:
            if cursor < start < until:
                cues.append(Cue(cursor, start, f"NO RECORDING {iso(cursor)}–{iso(start)}"))
            if start < until and end > cursor:
                cues.append(Cue(max(start, cursor), min(end, until),
                                f"NO RECORDING {iso(gap.start_us)}–{iso(gap.end_us)} "
                                f"({gap.cause})"))
                cursor = min(end, until)
        if cursor < until:
            cues.append(Cue(cursor, until, f"NO RECORDING {iso(cursor)}–{iso(until)}"))
        cursor = until

    for start, end in recorded:
        unrecorded(start)
        second = start - start % US_PER_S
        while second < end:
            cues.append(Cue(max(start, second), min(end, second + US_PER_S),
                            iso(second, whole_seconds=True)))
            second += US_PER_S
        cursor = end
    unrecorded(to_us)
    return cues


def rel_us(ticks: int, time_base: Fraction, origin: int, origin_base: Fraction) -> int:
    """``ticks * time_base - origin * origin_base`` in µs, floored, in integers."""
    num = (ticks * time_base.numerator * origin_base.denominator
           - origin * origin_base.numerator * time_base.denominator)
    return num * US_PER_S // (time_base.denominator * origin_base.denominator)


def _check_arguments(sources: Sequence[ClipSource], *, from_us: int, to_us: int
                     ) -> list[ClipSource]:
    if to_us <= from_us:
        raise InvalidInput(f"empty clip range [{iso(from_us)}, {iso(to_us)}): the end must "
                           "be after the start")
    if from_us < 0 or to_us > MAX_WALL_US:
        raise InvalidInput(f"the clip range [{iso(from_us)}, {iso(to_us)}) is not within "
                           "the years 1970 to 9999")
    ordered = sorted(sources, key=lambda s: (s.start_us, s.seq))
    for source in ordered:
        if source.end_us <= source.start_us:
            raise InvalidInput(f"chunk {source.seq} has an empty interval")
        if not (source.start_us < to_us and source.end_us > from_us):
            raise InvalidInput(f"chunk {source.seq} [{iso(source.start_us)}, "
                               f"{iso(source.end_us)}) does not overlap the clip's range "
                               f"[{iso(from_us)}, {iso(to_us)})")
    for before, after in zip(ordered, ordered[1:], strict=False):
        if after.start_us < before.end_us:
            raise InvalidInput(f"chunks {before.seq} and {after.seq} overlap in time")
    return ordered


# --- reading the sources (PyAV) ---------------------------------------------------------


@dataclass
class _Source:
    clip: ClipSource
    base_us: int  # clip time of the chunk's first video packet
    origin: int  # that packet's pts, in the video time base
    video_base: Fraction
    video: list[VideoPacket]
    video_params: tuple[Any, ...]
    audio_params: tuple[Any, ...] | None


def _params(stream: av.stream.Stream) -> tuple[Any, ...]:
    """What must be equal for packets of two streams to share one track."""
    ctx = stream.codec_context
    if stream.type == "video":
        shape: tuple[Any, ...] = (ctx.width, ctx.height)
    else:
        shape = (ctx.sample_rate, ctx.channels)
    return (stream.type, ctx.name, *shape, bytes(ctx.extradata or b""))


def _open(source: ClipSource) -> av.container.InputContainer:
    try:
        container = av.open(media_url(source.path, source.extent), format=READ_FORMAT,
                            options={**PROBE_OPTIONS, **READ_OPTIONS})
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise UnreadableChunk(source.seq, _reason(exc)) from None
    if not container.streams.video:
        container.close()
        raise UnreadableChunk(source.seq, "it has no video stream")
    return container


def _reason(exc: BaseException) -> str:
    if isinstance(exc, av.error.FFmpegError):
        return f"FFmpeg: {exc.strerror or type(exc).__name__}"
    return str(exc) or type(exc).__name__


def _demux(container: av.container.InputContainer, streams: list[av.stream.Stream],
           seq: int) -> Iterator[av.Packet]:
    demux = container.demux(streams)
    while True:
        try:
            packet = next(demux)
        except StopIteration:
            return
        except (av.error.FFmpegError, OSError) as exc:
            raise UnreadableChunk(seq, f"reading failed ({_reason(exc)})") from None
        if packet.dts is None or packet.pts is None:
            continue  # the demuxer's end-of-stream packet
        yield packet


def _scan(clip_source: ClipSource, *, from_us: int) -> _Source:
    """The source's video packet times in clip µs (pass 1)."""
    with _open(clip_source) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        packets: list[VideoPacket] = []
        origin, base = 0, clip_source.start_us - from_us
        time_base = video.time_base or TIME_BASE
        for packet in _demux(container, [video], clip_source.seq):
            if not packets:
                if not packet.is_keyframe:
                    raise UnreadableChunk(clip_source.seq,
                                          "its first video packet is not a keyframe")
                origin = packet.pts
            packets.append(VideoPacket(
                pts=base + rel_us(packet.pts, time_base, origin, time_base),
                dts=base + rel_us(packet.dts, time_base, origin, time_base),
                duration=rel_us(packet.duration or 0, time_base, 0, time_base),
                key=packet.is_keyframe))
        if not packets:
            raise UnreadableChunk(clip_source.seq, "it has no video packets")
        return _Source(clip=clip_source, base_us=base, origin=origin, video_base=time_base,
                       video=packets, video_params=_params(video),
                       audio_params=_params(audio) if audio is not None else None)


def _check_compatible(sources: Sequence[_Source]) -> None:
    first = sources[0]
    with_audio = [s for s in sources if s.audio_params is not None]
    for source in sources[1:]:
        if source.video_params != first.video_params:
            raise IncompatibleChunks(
                f"the video of chunk {source.clip.seq} ({_describe_params(source.video_params)}"
                f") differs from that of chunk {first.clip.seq} "
                f"({_describe_params(first.video_params)}): one clip holds one set of codec "
                "parameters; export the parts before and after the change separately")
    for source in with_audio[1:]:
        if source.audio_params != with_audio[0].audio_params:
            raise IncompatibleChunks(
                f"the audio of chunk {source.clip.seq} differs from that of chunk "
                f"{with_audio[0].clip.seq}; export the parts separately")


def _describe_params(params: tuple[Any, ...]) -> str:
    kind, codec, a, b, extradata = params
    shape = f"{a}x{b}" if kind == "video" else f"{a} Hz, {b} channels"
    return f"{codec} {shape}, extradata {hashlib.sha256(extradata).hexdigest()[:12]}"


# --- writing (PyAV) -----------------------------------------------------------------------


def stitch(sources: Sequence[ClipSource], *, from_us: int, to_us: int, out: Path,
           gaps: Sequence[ClipGap] = (), title: str = "", faststart: bool = True
           ) -> ClipResult:
    """Stitch ``sources`` (the chunks overlapping ``[from_us, to_us)``) into one MP4 at
    ``out`` by stream copy; see the module's docstring for the procedure.

    ``faststart=False`` leaves the index after the media instead of rewriting the file
    to put it first: the same packets, for ``check_restitch``, which compares packets."""
    ordered = _check_arguments(sources, from_us=from_us, to_us=to_us)
    length_us = to_us - from_us
    cues = timeline([(s.start_us, s.end_us) for s in ordered], gaps, from_us=from_us,
                    to_us=to_us)
    scanned = [_scan(source, from_us=from_us) for source in ordered]
    if scanned:
        _check_compatible(scanned)
    video = [packet for source in scanned for packet in source.video]
    plan = select_video(video, length_us=length_us)
    if plan is not None:
        copied = video[plan.first:plan.last + 1]
        for before, after in zip(copied, copied[1:], strict=False):
            if after.dts <= before.dts:
                raise IncompatibleChunks(
                    "the video's decode times run back at clip time "
                    f"{after.dts / US_PER_S:.6f} s: a chunk's footage reaches into the "
                    "next chunk's")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        audio_packets = _write(partial, scanned, plan, cues, from_us=from_us, to_us=to_us,
                               title=title, faststart=faststart)
        if plan is not None:
            first_dts = video[plan.first].dts
            _set_video_edit(partial, empty_us=plan.first_pts,
                            media_time_us=plan.first_pts - first_dts,
                            duration_us=plan.end - plan.first_pts)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    if plan is None:
        return ClipResult(first_frame_us=None, last_frame_us=None, frames=0, video_packets=0,
                          audio_packets=audio_packets, duration_us=length_us)
    return ClipResult(first_frame_us=from_us + plan.first_pts,
                      last_frame_us=from_us + plan.last_pts, frames=plan.frames,
                      video_packets=plan.last - plan.first + 1, audio_packets=audio_packets,
                      duration_us=length_us)


def _write(path: Path, scanned: Sequence[_Source], plan: VideoPlan | None,
           cues: Sequence[Cue], *, from_us: int, to_us: int, title: str,
           faststart: bool) -> int:
    """Pass 2: mux the chosen packets and the cues; returns the audio packets written."""
    options = dict(MOV_OPTIONS)
    if not faststart:
        options["movflags"] = options["movflags"].replace("+faststart", "")
    try:
        output = av.open(str(path), "w", format="mp4", container_options=options)
    except (av.error.FFmpegError, OSError) as exc:
        raise ClipWriteError(f"cannot create {path.name}: {_reason(exc)}") from None
    try:
        video_out = audio_out = None
        omitted: str | None = None
        if scanned:
            with _open(scanned[0].clip) as template:
                video_out = output.add_stream_from_template(template.streams.video[0])
            video_out.time_base = TIME_BASE
            _set_metadata(video_out, {"handler_name": "Vigil video", "language": "und"})
            # Let the muxer choose the sample entry, as the chunk writer does.
            video_out.codec_context.codec_tag = "\x00\x00\x00\x00"
        audio_source = next((s for s in scanned if s.audio_params is not None), None)
        if audio_source is not None:
            with _open(audio_source.clip) as template:
                audio = template.streams.audio[0]
                if _mp4_can_hold(output, audio.codec_context.name):
                    audio_out = output.add_stream_from_template(audio)
                else:
                    omitted = audio.codec_context.name
        if audio_out is not None:
            _set_metadata(audio_out, {"handler_name": "Vigil audio", "language": "und"})
            audio_out.codec_context.codec_tag = "\x00\x00\x00\x00"
        output.metadata.update(_tags(from_us=from_us, to_us=to_us, title=title,
                                     omitted_audio=omitted))
        text_out = output.add_stream("mov_text")
        text_out.codec_context.subtitle_header = TEXT_STYLE
        text_out.codec_context.time_base = TIME_BASE
        text_out.time_base = TIME_BASE
        _set_metadata(text_out, {"handler_name": "Vigil wall clock (UTC)", "language": "und"})
        output.start_encoding()
        written = _mux_all(output, scanned, plan, cues, video_out=video_out,
                           audio_out=audio_out, text_out=text_out, from_us=from_us,
                           to_us=to_us)
        output.close()
    except (av.error.FFmpegError, OSError) as exc:
        raise ClipWriteError(f"FFmpeg refused to write the clip: {_reason(exc)}") from None
    finally:
        _abandon(output)
    return written


def _set_metadata(stream: av.stream.Stream, tags: dict[str, str]) -> None:
    """Exactly these tags: nothing the template stream carried."""
    stream.metadata.clear()
    stream.metadata.update(tags)


def _abandon(output: av.container.OutputContainer) -> None:
    """Close an output that failed half-way (a no-op after a successful close). Its
    file is deleted by the caller, so a trailer FFmpeg cannot write does not matter,
    and the error that got us here is the one to report."""
    try:
        output.close()
    except (av.error.FFmpegError, OSError):
        pass


def _mp4_can_hold(output: av.container.OutputContainer, codec: str) -> bool:
    """Whether the MP4 muxer takes this codec: not G.711 (``pcm_alaw``, ``pcm_mulaw``),
    which QuickTime chunks hold but MP4 has no sample entry for."""
    return codec in output.supported_codecs


def _tags(*, from_us: int, to_us: int, title: str, omitted_audio: str | None
          ) -> dict[str, str]:
    seconds, micros = divmod(from_us, US_PER_S)
    comment = (f"Vigil clip by stream copy. Clip time 0 is {iso(from_us)}; the range is "
               f"[{iso(from_us)}, {iso(to_us)}) UTC.")
    tags = {
        "title": title,
        "creation_time": datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{micros:06d}Z",
        "vigil_from_us": str(from_us),
        "vigil_to_us": str(to_us),
    }
    if omitted_audio is not None:
        comment += (f" The audio ({omitted_audio}) is not in this clip: MP4 cannot hold it; "
                    "the original chunks keep it.")
        tags["vigil_audio_omitted"] = omitted_audio
    return {**tags, "comment": comment}


def _mux_all(output: av.container.OutputContainer, scanned: Sequence[_Source],
             plan: VideoPlan | None, cues: Sequence[Cue], *,
             video_out: av.stream.Stream | None, audio_out: av.stream.Stream | None,
             text_out: av.stream.Stream, from_us: int, to_us: int) -> int:
    """The copy itself, source by source in time order, with the cues interleaved by
    time; returns the audio packets written."""
    length_us = to_us - from_us
    pending = iter(cues)
    next_cue = next(pending, None)

    def cues_until(clip_us: int) -> None:
        nonlocal next_cue
        while next_cue is not None and next_cue.start_us - from_us <= clip_us:
            _mux_cue(output, text_out, next_cue, from_us=from_us)
            next_cue = next(pending, None)

    shift = 0
    if plan is not None:
        # Video that starts before clip time 0 goes to the muxer shifted to start at
        # 1 µs, so that it writes a two-entry edit list (empty edit, media edit) for
        # set_video_edit to fill in. Video that starts later is not shifted: the
        # muxer's own values are then as large as the final ones, and it chooses box
        # versions (32 or 64 bits) wide enough for them.
        video = [packet for source in scanned for packet in source.video]
        shift = max(0, 1 - video[plan.first].dts)
    audio_written = 0
    last_audio_dts: int | None = None
    offset = 0  # decode-order index of the source's first video packet
    for source in scanned:
        first, offset = offset, offset + len(source.video)
        takes_video = plan is not None and first <= plan.last and plan.first < offset
        takes_audio = audio_out is not None and source.audio_params is not None
        if not (takes_video or takes_audio):
            continue
        with _open(source.clip) as container:
            streams = [container.streams.video[0]]
            if takes_audio:
                streams.append(container.streams.audio[0])
            index = first - 1
            for packet in _demux(container, streams, source.clip.seq):
                if packet.stream.type == "video":
                    index += 1
                    if plan is None or not plan.first <= index <= plan.last:
                        continue
                    assert video_out is not None
                    times = source.video[index - first]
                    cues_until(times.dts)
                    _retime(packet, video_out, times.pts + shift, times.dts + shift,
                            times.duration)
                    output.mux(packet)
                    continue
                assert audio_out is not None
                tb = packet.time_base
                pts = source.base_us + rel_us(packet.pts, tb, source.origin, source.video_base)
                dts = source.base_us + rel_us(packet.dts, tb, source.origin, source.video_base)
                if not 0 <= pts < length_us:
                    continue
                if last_audio_dts is not None and dts <= last_audio_dts:
                    continue  # it would overlap the previous chunk's last audio
                last_audio_dts = dts
                cues_until(dts)
                _retime(packet, audio_out, pts, dts, rel_us(packet.duration or 0, tb, 0, tb))
                output.mux(packet)
                audio_written += 1
    cues_until(length_us)
    return audio_written


def _retime(packet: av.Packet, stream: av.stream.Stream, pts: int, dts: int,
            duration: int) -> None:
    packet.stream = stream
    packet.time_base = TIME_BASE
    packet.pts, packet.dts, packet.duration = pts, dts, duration


def _mux_cue(output: av.container.OutputContainer, stream: av.stream.Stream, cue: Cue, *,
             from_us: int) -> None:
    text = cue.text.encode()
    packet = av.Packet(struct.pack(">H", len(text)) + text)
    packet.stream = stream
    packet.time_base = TIME_BASE
    packet.pts = packet.dts = cue.start_us - from_us
    packet.duration = cue.end_us - cue.start_us
    packet.is_keyframe = True
    output.mux(packet)


# --- the edit list (ISO/IEC 14496-12 boxes, in place) ---------------------------------------

def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, box end) of the boxes in ``data[start:end]``."""
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            (size,) = struct.unpack_from(">Q", data, offset + 8)
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise ClipWriteError(f"malformed {kind!r} box in the written clip")
        yield kind, offset + header, offset + size
        offset += size


def _child(data: bytearray, start: int, end: int, kind: bytes) -> tuple[int, int] | None:
    for found, payload, box_end in _boxes(data, start, end):
        if found == kind:
            return payload, box_end
    return None


def _find_moov(f: BinaryIO, size: int) -> tuple[int, int]:
    offset = 0
    while offset + 8 <= size:
        f.seek(offset)
        head = f.read(16)
        box_size, kind = struct.unpack_from(">I4s", head)
        if box_size == 1:
            (box_size,) = struct.unpack_from(">Q", head, 8)
        elif box_size == 0:
            box_size = size - offset
        if box_size < 8:
            break
        if kind == b"moov":
            return offset, box_size
        offset += box_size
    raise ClipWriteError("the written clip has no moov box")


def _put(data: bytearray, offset: int, value: int, *, wide: bool, signed: bool = False,
         what: str) -> None:
    fmt = (">q" if signed else ">Q") if wide else (">i" if signed else ">I")
    try:
        struct.pack_into(fmt, data, offset, value)
    except struct.error:
        raise ClipWriteError(f"the {what} {value} does not fit the box FFmpeg wrote"
                             ) from None


def set_video_edit(moov: bytearray, *, empty_us: int, media_time_us: int,
                   duration_us: int) -> None:
    """Rewrite, in place, the video track's two-entry edit list of a ``moov`` box to
    ``[empty edit of empty_us][media from media_time_us for duration_us]``, and the
    track's and the movie's durations to match. Sizes do not change."""
    mvhd = _child(moov, 8, len(moov), b"mvhd")
    if mvhd is None:
        raise ClipWriteError("the written clip has no mvhd box")
    mvhd_wide = moov[mvhd[0]] == 1
    movie_scale = struct.unpack_from(">I", moov, mvhd[0] + (20 if mvhd_wide else 12))[0]
    track_durations: list[int] = []
    done = False
    for kind, trak, trak_end in _boxes(moov, 8, len(moov)):
        if kind != b"trak":
            continue
        tkhd = _child(moov, trak, trak_end, b"tkhd")
        mdia = _child(moov, trak, trak_end, b"mdia")
        if tkhd is None or mdia is None:
            raise ClipWriteError("a track of the written clip lacks tkhd or mdia")
        tkhd_wide = moov[tkhd[0]] == 1
        duration_at = tkhd[0] + (28 if tkhd_wide else 20)
        hdlr = _child(moov, mdia[0], mdia[1], b"hdlr")
        mdhd = _child(moov, mdia[0], mdia[1], b"mdhd")
        if hdlr is None or mdhd is None or bytes(moov[hdlr[0] + 8:hdlr[0] + 12]) != b"vide":
            fmt = ">Q" if tkhd_wide else ">I"
            track_durations.append(struct.unpack_from(fmt, moov, duration_at)[0])
            continue
        media_scale = struct.unpack_from(
            ">I", moov, mdhd[0] + (20 if moov[mdhd[0]] == 1 else 12))[0]
        edts = _child(moov, trak, trak_end, b"edts")
        elst = _child(moov, edts[0], edts[1], b"elst") if edts is not None else None
        if elst is None:
            raise ClipWriteError("the video track of the written clip has no edit list")
        wide = moov[elst[0]] == 1
        count = struct.unpack_from(">I", moov, elst[0] + 4)[0]
        entry = 20 if wide else 12
        first_time = struct.unpack_from(">q" if wide else ">i", moov,
                                        elst[0] + 8 + (8 if wide else 4))[0]
        if count != 2 or first_time != -1:
            raise ClipWriteError(f"FFmpeg wrote a video edit list of {count} entries "
                                 "without the leading empty edit this module fills in")
        empty = empty_us * movie_scale // US_PER_S
        duration = -(-duration_us * movie_scale // US_PER_S)  # rounded up
        media_time = media_time_us * media_scale // US_PER_S
        step = 8 if wide else 4
        at = elst[0] + 8
        _put(moov, at, empty, wide=wide, what="empty edit")
        at += entry
        _put(moov, at, duration, wide=wide, what="edit duration")
        _put(moov, at + step, media_time, wide=wide, signed=True, what="edit media time")
        _put(moov, duration_at, empty + duration, wide=tkhd_wide, what="track duration")
        track_durations.append(empty + duration)
        done = True
    if not done:
        raise ClipWriteError("the written clip has no video track")
    _put(moov, mvhd[0] + (24 if mvhd_wide else 16), max(track_durations), wide=mvhd_wide,
         what="movie duration")


def _set_video_edit(path: Path, *, empty_us: int, media_time_us: int,
                    duration_us: int) -> None:
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        offset, moov_size = _find_moov(f, size)
        f.seek(offset)
        moov = bytearray(f.read(moov_size))
        set_video_edit(moov, empty_us=empty_us, media_time_us=media_time_us,
                       duration_us=duration_us)
        f.seek(offset)
        f.write(moov)
        f.flush()
        os.fsync(f.fileno())


# --- the verifier's check ---------------------------------------------------------------


@dataclass(frozen=True)
class _PacketFacts:
    pts: int | None
    dts: int | None
    duration: int | None
    key: bool
    discard: bool
    sha256: str


@dataclass(frozen=True)
class _StreamFacts:
    kind: str
    codec: str
    params: tuple[Any, ...]
    time_base: str
    extradata_sha256: str
    packets: list[_PacketFacts]

    @property
    def label(self) -> str:
        return f"{self.kind} {self.codec}"


# What check_restitch compares of a clip: Vigil's format tags and each stream's facts.
Facts = tuple[dict[str, str], list[_StreamFacts]]


def _inventory(path: Path, extent: Extent | None = None) -> Facts:
    """What check_restitch compares: Vigil's format tags, each stream's codec
    parameters, and each packet as the demuxer gives it (edit list applied)."""
    with av.open(media_url(path, extent), format=READ_FORMAT,
                 options=dict(READ_OPTIONS)) as container:
        tags = {k: v for k, v in container.metadata.items() if k in CLIP_TAGS}
        streams: list[_StreamFacts] = []
        for stream in container.streams:
            ctx = stream.codec_context
            if stream.type == "video":
                params: tuple[Any, ...] = (ctx.width, ctx.height)
            elif stream.type == "audio":
                params = (ctx.sample_rate, ctx.channels)
            else:
                params = ()
            codec = ctx.name if ctx is not None else ""
            extradata = _configuration(codec, bytes(ctx.extradata or b"")
                                       if ctx is not None else b"")
            streams.append(_StreamFacts(
                kind=stream.type, codec=codec, params=params,
                time_base=str(stream.time_base),
                extradata_sha256=hashlib.sha256(extradata).hexdigest(), packets=[]))
        for packet in container.demux():
            if packet.size == 0 and packet.pts is None:
                continue  # end of stream
            streams[packet.stream.index].packets.append(_PacketFacts(
                pts=packet.pts, dts=packet.dts, duration=packet.duration,
                key=packet.is_keyframe, discard=packet.is_discard,
                sha256=hashlib.sha256(bytes(packet)).hexdigest()))
    return tags, streams


# The fixed fields of a 3GPP TextSampleEntry before its boxes (3GPP TS 26.245 5.16).
_TX3G_FIELDS: Final = 30


def _configuration(codec: str, extradata: bytes) -> bytes:
    """The codec configuration to compare. For mov_text, FFmpeg's demuxer hands over
    the rest of the sample entry, including the bitrate box (``btrt``) that the muxer
    computes from the samples (compared anyway) and that not every FFmpeg version
    writes: keep the entry's fields and its other boxes (the font table)."""
    if codec != "mov_text" or len(extradata) < _TX3G_FIELDS:
        return extradata
    kept, offset = bytearray(extradata[:_TX3G_FIELDS]), _TX3G_FIELDS
    while offset < len(extradata):
        size, kind = struct.unpack_from(">I4s", extradata, offset) \
            if offset + 8 <= len(extradata) else (0, b"")
        if size < 8 or offset + size > len(extradata):
            kept += extradata[offset:]  # not boxes: compare as it is
            break
        if kind != b"btrt":
            kept += extradata[offset:offset + size]
        offset += size
    return bytes(kept)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def scratch_dir(expected_bytes: int) -> str | None:
    """Where a file of about ``expected_bytes`` that is read once and deleted is best
    written: a memory file system (``SCRATCH_MEMORY_DIR``) when it has room to spare
    (four times the file), since the file never needs to reach a disk and writing
    pages that disk writeback then competes for is what the re-stitch costs most;
    otherwise the default temporary directory (None)."""
    try:
        fs = os.statvfs(SCRATCH_MEMORY_DIR)
    except OSError:
        return None
    room = fs.f_bavail * fs.f_frsize
    return SCRATCH_MEMORY_DIR if room >= 4 * max(expected_bytes, 1) else None


def compare_facts(expected: Facts, found: Facts) -> list[str]:
    """Differences between the facts the originals give and those the clip has."""
    differences: list[str] = []
    want_tags, want_streams = expected
    got_tags, got_streams = found
    for key in CLIP_TAGS:
        if want_tags.get(key) != got_tags.get(key):
            differences.append(f"metadata {key}: the clip has {got_tags.get(key)!r}, the "
                               f"originals give {want_tags.get(key)!r}")
    if len(want_streams) != len(got_streams):
        differences.append(f"the clip has {len(got_streams)} streams, the originals give "
                           f"{len(want_streams)}")
    for index, (want, got) in enumerate(zip(want_streams, got_streams, strict=False)):
        name = f"stream {index} ({want.kind})"
        if (want.kind, want.codec, want.params) != (got.kind, got.codec, got.params):
            differences.append(f"stream {index}: the clip has {got.label} {got.params}, the "
                               f"originals give {want.label} {want.params}")
            continue
        if want.extradata_sha256 != got.extradata_sha256:
            differences.append(f"{name}: codec extradata differs")
        if want.time_base != got.time_base:
            differences.append(f"{name}: time base {got.time_base} in the clip, "
                               f"{want.time_base} from the originals")
        if len(want.packets) != len(got.packets):
            differences.append(f"{name}: {len(got.packets)} packets in the clip, "
                               f"{len(want.packets)} from the originals")
        listed = unlisted = 0
        for number, (a, b) in enumerate(zip(want.packets, got.packets, strict=False)):
            if a == b:
                continue
            if listed == MAX_PACKET_DIFFERENCES:
                unlisted += 1
                continue
            listed += 1
            differences.append(f"{name} packet {number}: " + _packet_difference(a, b))
        if unlisted:
            differences.append(f"{name}: {unlisted} more packets differ")
    return differences


def _packet_difference(want: _PacketFacts, got: _PacketFacts) -> str:
    parts = []
    if want.sha256 != got.sha256:
        parts.append("payload differs")
    for field in ("pts", "dts", "duration", "key", "discard"):
        a, b = getattr(want, field), getattr(got, field)
        if a != b:
            parts.append(f"{field} {b} in the clip, {a} from the originals")
    return "; ".join(parts)


def check_restitch(clip: Path, sources: Sequence[ClipSource], *, from_us: int, to_us: int,
                   gaps: Sequence[ClipGap] = (), title: str = "",
                   clip_extent: Extent | None = None) -> list[str]:
    """Differences between ``clip`` and the clip the originals give when stitched again,
    for people to read; empty when they are the same packet for packet.

    Compared: Vigil's format tags; the streams' types, codecs, parameters, extradata
    and time bases; every packet's payload (SHA-256), pts, dts, duration, keyframe and
    discard flags as the demuxer gives them, so with the edit list applied. Not
    compared: the bytes of the boxes, which another FFmpeg version may write a little
    differently (nor, therefore, whether the index comes first: the clip is stitched
    again without ``faststart``). Never raises for a mismatch: a clip that cannot be
    read, or originals that cannot be stitched, are differences too.

    The two halves, ``clip_facts`` and ``restitched_facts``, may run on two threads
    (the verifier does); ``compare_facts`` then gives this function's answer.
    """
    found = clip_facts(clip, clip_extent)
    if isinstance(found, str):
        return [found]
    expected = restitched_facts(sources, from_us=from_us, to_us=to_us, gaps=gaps,
                                title=title)
    if isinstance(expected, str):
        return [expected]
    return compare_facts(expected, found)


def clip_facts(clip: Path, extent: Extent | None = None) -> Facts | str:
    """The facts of ``clip``, or why it cannot be read."""
    try:
        return _inventory(clip, extent)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        return f"the clip cannot be read as media ({_reason(exc)})"


def restitched_facts(sources: Sequence[ClipSource], *, from_us: int, to_us: int,
                     gaps: Sequence[ClipGap] = (), title: str = "") -> Facts | str:
    """The facts of the clip ``sources`` give when stitched again (into a temporary
    file, removed), or why they cannot be stitched."""
    expected = sum(s.extent.length if s.extent else _size(s.path) for s in sources)
    with tempfile.TemporaryDirectory(prefix="vigil-restitch-",
                                     dir=scratch_dir(expected)) as tmp:
        again = Path(tmp) / "clip.mp4"
        try:
            stitch(sources, from_us=from_us, to_us=to_us, out=again, gaps=gaps, title=title,
                   faststart=False)
            return _inventory(again)
        except (VigilError, av.error.FFmpegError, OSError, ValueError, OverflowError) as exc:
            return f"the originals cannot be stitched again: {exc}"
