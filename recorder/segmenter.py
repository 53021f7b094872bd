"""Cutting a stream into chunks by stream copy: the cut policy (pure) and the writer.

A chunk is a fragmented ISO-BMFF/QuickTime file (``mov`` muxer, ``empty_moov``, one
fragment per second): it plays on its own, holds every codec cameras send (H.264,
H.265, AAC, G.711 A-law and µ-law, Opus), and a file cut short by a crash is valid up
to its last complete fragment (``complete_prefix``), so a partial chunk is
recovered, not thrown away. Packets are copied, never decoded.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Final

import av
import av.bitstream
import av.error
import av.stream

# The muxer closes a fragment at least this often, and the writer fsyncs at least
# this often: together they bound what a crash can lose to about two seconds.
FRAGMENT_US: Final = 1_000_000
FSYNC_INTERVAL_S: Final = 1.0
MOV_OPTIONS: Final = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof",
    "frag_duration": str(FRAGMENT_US),
    "flush_packets": "1",
}


# --- pure policy ---------------------------------------------------------------------


def ticks_to_us(ticks: int, time_base: Fraction) -> int:
    """Media time in microseconds, in integers: Fraction arithmetic on every packet
    was a measurable share of the recorder's CPU."""
    return ticks * time_base.numerator * 1_000_000 // time_base.denominator



@dataclass(frozen=True)
class CutDecision:
    cut: bool
    reason: str = ""


def decide_cut(*, elapsed_media_us: int, target_us: int, is_video_keyframe: bool,
               params_changed: bool) -> CutDecision:
    """Whether a packet starts a new chunk.

    A chunk is cut at the first video keyframe once it holds ``target_us`` of media,
    so that every chunk starts with a keyframe and decodes on its own. A change of
    codec parameters (codec, resolution, extradata) cuts at once: one chunk, one
    set of parameters.
    """
    if params_changed:
        return CutDecision(True, "codec parameters changed")
    if is_video_keyframe and elapsed_media_us >= target_us:
        return CutDecision(True, "target duration reached")
    return CutDecision(False)


def complete_prefix(data: bytes) -> int:
    """``complete_prefix_of`` for bytes in memory."""
    import io

    return complete_prefix_of(io.BytesIO(data), len(data))


def complete_prefix_of(f: BinaryIO, size: int) -> int:
    """Length of the longest prefix of a fragmented MP4 made of whole top-level boxes,
    ending after a complete fragment (or after the header when none is complete).

    Used to recover a chunk whose writing was cut short by a crash; reads only box
    headers. Returns 0 when not even the header (``moov``) is complete: nothing is
    recoverable.
    """
    offset, good = 0, 0
    saw_moof = saw_moov = False
    while offset + 8 <= size:
        f.seek(offset)
        head = f.read(16)
        if len(head) < 8:
            break
        box_size, kind = struct.unpack_from(">I4s", head)
        header = 8
        if box_size == 1:
            if len(head) < 16:
                break
            (box_size,) = struct.unpack_from(">Q", head, 8)
            header = 16
        if box_size < header or offset + box_size > size:
            break
        offset += box_size
        if kind == b"moof":
            saw_moof = True
        elif kind == b"mdat" and saw_moof:
            good = offset  # a fragment is complete once its mdat is
            saw_moof = False
        elif not saw_moof:  # ftyp, moov, and after the last fragment mfra
            saw_moov = saw_moov or kind == b"moov"
            good = offset
    return good if saw_moov else 0


def truncate_to_whole_fragments(path: Path) -> int:
    """Cut a chunk file to its last whole fragment; returns the bytes kept (0: none)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        keep = complete_prefix_of(f, size)
        if keep < size:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return keep


# NAL unit types that carry codec parameters: H.264 SPS (7) and PPS (8); HEVC VPS (32),
# SPS (33) and PPS (34).
_PARAMETER_NALS: Final = {"h264": {7, 8}, "hevc": {32, 33, 34}}


def _nal_units(data: bytes) -> list[bytes]:
    """NAL units of an access unit, Annex B (start codes, as RTSP and MPEG-TS give
    them) or length-prefixed (4 bytes, as MP4 files give them)."""
    if data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        units = []
        for part in data.split(b"\x00\x00\x01"):
            part = part.rstrip(b"\x00")
            if part:
                units.append(part)
        return units
    units, offset = [], 0
    while offset + 4 <= len(data):
        (size,) = struct.unpack_from(">I", data, offset)
        if size == 0 or offset + 4 + size > len(data):
            break
        units.append(data[offset + 4:offset + 4 + size])
        offset += 4 + size
    return units


def parameter_sets(data: bytes, codec: str) -> bytes | None:
    """The in-band parameter sets of a video access unit, or None if it has none.

    A camera that changes resolution or codec settings sends new ones with the next
    keyframe: comparing them is how a stream-copying recorder notices, since nothing
    is decoded.
    """
    wanted = _PARAMETER_NALS.get(codec)
    if not wanted:
        return None
    found = []
    for unit in _nal_units(data):
        kind = unit[0] & 0x1F if codec == "h264" else (unit[0] >> 1) & 0x3F
        if kind in wanted:
            found.append(unit)
    return b"".join(found) or None


# --- the writer (PyAV adapter) -------------------------------------------------------


@dataclass(frozen=True)
class WrittenChunk:
    path: Path
    plaintext_bytes: int
    media_duration_us: int
    first_pts_us: int  # of the first packet, in the source's media time


class ChunkWriter:
    """Stream-copies packets of the given input streams into one chunk file.

    The file is fsync'ed at least every ``FSYNC_INTERVAL_S``; ``close`` finalises it.
    Media time is the video's: a chunk spans from its first video frame to the end
    of its last (audio packets around a cut may reach a few ms beyond).
    """

    def __init__(self, path: Path, streams: list[av.stream.Stream]) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "wb")  # closed in close()
        self._out = av.open(self._file, "w", format="mov", options=dict(MOV_OPTIONS))
        self._map: dict[int, av.stream.Stream] = {}
        self._bsf: dict[int, av.bitstream.BitStreamFilterContext] = {}
        for stream in streams:
            out_stream = self._out.add_stream_from_template(stream)
            self._map[stream.index] = out_stream
            if stream.codec_context.name == "aac" and not stream.codec_context.extradata:
                # AAC with ADTS headers (MPEG-TS over UDP, SRT, HLS): MP4 wants the
                # raw frames and an AudioSpecificConfig, which this filter makes.
                self._bsf[stream.index] = av.bitstream.BitStreamFilterContext(
                    "aac_adtstoasc", stream, out_stream)
            # The source container's codec tag (an MPEG-TS stream type, say) means
            # nothing in MOV: let the muxer choose its own.
            out_stream.codec_context.codec_tag = "\x00\x00\x00\x00"
        self._first_us: int | None = None
        self._last_end_us: int | None = None
        self._last_sync = time.monotonic()

    def write(self, packet: av.Packet) -> None:
        out_stream = self._map.get(packet.stream.index)
        if out_stream is None or packet.dts is None:
            return
        if packet.stream.type == "video":
            self._track(packet)
        bsf = self._bsf.get(packet.stream.index)
        for out_packet in (bsf.filter(packet) if bsf is not None else (packet,)):
            out_packet.stream = out_stream
            self._out.mux(out_packet)
        if time.monotonic() - self._last_sync >= FSYNC_INTERVAL_S:
            self.sync()

    def _track(self, packet: av.Packet) -> None:
        tb = packet.time_base
        start_us = ticks_to_us(packet.pts if packet.pts is not None else packet.dts, tb)
        end_us = start_us + ticks_to_us(packet.duration or 0, tb)
        if self._first_us is None or start_us < self._first_us:
            self._first_us = start_us
        if self._last_end_us is None or end_us > self._last_end_us:
            self._last_end_us = end_us

    def sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._last_sync = time.monotonic()

    @property
    def media_us(self) -> int:
        if self._first_us is None or self._last_end_us is None:
            return 0
        return self._last_end_us - self._first_us

    def close(self) -> WrittenChunk:
        """Finish the file. After a failed write the muxer may refuse to finish it;
        the file then ends at its last whole fragment (the caller checks with
        ``complete_prefix``), and nothing more is written."""
        try:
            self._out.close()
        except (av.error.FFmpegError, OSError):
            pass
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return WrittenChunk(path=self.path, plaintext_bytes=self.path.stat().st_size,
                            media_duration_us=self.media_us,
                            first_pts_us=self._first_us or 0)


def probe_media_us(path: Path) -> int:
    """Media duration of a chunk file by its video packets' timestamps (for recovery)."""
    with av.open(str(path)) as container:
        first: int | None = None
        last_end: int | None = None
        for packet in container.demux(video=0):
            if packet.dts is None:
                continue
            tb = packet.time_base
            start = ticks_to_us(packet.pts if packet.pts is not None else packet.dts, tb)
            end = start + ticks_to_us(packet.duration or 0, tb)
            first = start if first is None else min(first, start)
            last_end = end if last_end is None else max(last_end, end)
    if first is None or last_end is None:
        return 0
    return last_end - first


class ParameterWatch:
    """Notices, at keyframes, when a stream's in-band parameter sets change."""

    def __init__(self, codec: str) -> None:
        self._codec = codec
        self._current: bytes | None = None

    def changed(self, packet: av.Packet) -> bool:
        """True at a keyframe whose parameter sets differ from those seen before."""
        if not packet.is_keyframe:
            return False
        now = parameter_sets(bytes(packet), self._codec)
        if now is None:
            return False
        changed = self._current is not None and now != self._current
        self._current = now
        return changed
