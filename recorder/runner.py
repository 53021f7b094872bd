"""Recording one camera: connect, cut into chunks, seal them into the spool, reconnect.

One ``CameraRecorder`` thread per camera. A run is one connection's unbroken output
(docs/design/time.md): its first chunk starts at the run's anchor, every later chunk
at the previous chunk's end, so a run's chunks are exactly contiguous. When a run
ends (the stream failed, the camera went away, garbage arrived) the chunk in
progress is sealed, the camera is marked reconnecting, and the next run's start
records an explicit gap. Errors in one camera never reach another.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import av
import av.error

from recorder import segmenter, sources
from recorder.service import Sealer, Tip, seal_chunk
from recorder.spool import ActiveChunk, PendingChunk, PendingGap, Spool
from vigil.errors import VigilError
from vigil.redact import redact_url

log = logging.getLogger("vigil.recorder")

RECONNECT_FIRST_S: Final = 1.0
RECONNECT_MAX_S: Final = 30.0
# RTCP-derived times are used only if they agree with the recorder's clock this well.
MAX_CAMERA_CLOCK_SKEW_S: Final = 5.0
# How long a source may stay silent before the run is declared over.
READ_TIMEOUT_S: Final = 10.0
# A chunk may not exceed MAX_CHUNK_WALL_S (600 s); a stream that sends no keyframe
# for this long cannot be cut, so its run ends here (and the gap says why).
NO_KEYFRAME_LIMIT_US: Final = 590_000_000


@dataclass(frozen=True)
class CameraConfig:
    id: int
    name: str
    url: str
    chunk_target_s: int


@dataclass
class CameraStats:
    status: str = "starting"
    chunks: int = 0
    runs: int = 0
    errors: int = 0
    last_error: str | None = None
    last_chunk_end_us: int | None = None
    spool_full: bool = False


class SpoolFull(Exception):
    """The spool reached its disk budget: no new chunk may start."""


def wall_us() -> int:
    return time.time_ns() // 1000


def codec_params(streams: list[av.stream.Stream]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stream in streams:
        ctx = stream.codec_context
        if stream.type == "video":
            out["video"] = {"codec": ctx.name, "width": ctx.width, "height": ctx.height,
                            "profile": getattr(ctx, "profile", None),
                            "time_base": str(stream.time_base)}
        elif stream.type == "audio":
            out.setdefault("audio", []).append(
                {"codec": ctx.name, "sample_rate": getattr(ctx, "sample_rate", None),
                 "channels": getattr(ctx, "channels", None)})
    return out


class CameraRecorder(threading.Thread):
    def __init__(self, *, camera: CameraConfig, spool: Spool, sealer: Sealer, tip: Tip,
                 stop: threading.Event, last_end_us: int | None = None,
                 on_status: Callable[[int, str], None] = lambda _c, _s: None) -> None:
        super().__init__(name=f"camera-{camera.name}", daemon=True)
        self.camera, self.spool, self.sealer, self.stop = camera, spool, sealer, stop
        self.tip = tip
        self.stats = CameraStats()
        self._on_status = on_status
        # End of the last chunk recorded (by any process): the next run's gap starts here.
        self._last_run_end_us = last_end_us
        self._last_failure: str | None = None  # data, spool, connection, internal

    # --- the loop --------------------------------------------------------------------

    def run(self) -> None:
        backoff = RECONNECT_FIRST_S
        while not self.stop.is_set():
            recorded = 0
            try:
                recorded = self._record_run()
            except (av.error.InvalidDataError, ValueError) as exc:
                self._failed("data", exc)
            except SpoolFull as exc:
                self._failed("spool", exc)
            except VigilError as exc:  # e.g. a chunk refused before sealing
                self._failed("data", exc)
            except (av.error.FFmpegError, OSError) as exc:
                self._failed("connection", exc)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop this camera
                # for good: it is counted, logged with its traceback, and the camera
                # reconnects; the other cameras never see it.
                trace = "".join(traceback.format_exception(exc)).replace(
                    self.camera.url, redact_url(self.camera.url))
                log.error("camera %s: unexpected error\n%s", self.camera.name, trace)
                self._failed("internal", exc)
            if self.stop.is_set():
                break
            self._set_status("reconnecting")
            backoff = RECONNECT_FIRST_S if recorded else min(backoff * 2, RECONNECT_MAX_S)
            self.stop.wait(backoff)
        self._set_status("offline")

    def _failed(self, kind: str, exc: Exception) -> None:
        """Count and log a failed run; the camera goes on reconnecting."""
        self._last_failure = kind
        self.stats.errors += 1
        # FFmpeg's messages name the URL, credentials included: never let them out.
        message = str(exc).replace(self.camera.url, redact_url(self.camera.url))
        self.stats.last_error = f"{type(exc).__name__}: {message}"
        log.warning("camera %s: %s error: %s", self.camera.name, kind,
                    self.stats.last_error)

    def _set_status(self, status: str) -> None:
        if status != self.stats.status:
            self.stats.status = status
            self._on_status(self.camera.id, status)

    def _record_run(self) -> int:
        """One connection. Returns the number of chunks sealed."""
        source = sources.open_source(self.camera.url, timeout_s=READ_TIMEOUT_S)
        try:
            return self._demux(source.container)
        finally:
            source.close()

    def _demux(self, container: av.container.InputContainer) -> int:
        if not container.streams.video:
            raise ValueError("the source has no video stream")
        video = container.streams.video[0]
        streams = [video, *container.streams.audio[:1]]
        run = _Run(receive_anchor_us=None)
        try:
            self._copy(container, run, streams, video)
        finally:
            # However the run ends, the chunk in progress is sealed, not lost.
            if run.writer is not None:
                self._finish_chunk(run, container, end_pts_us=None)
        return run.sealed

    def _copy(self, container: av.container.InputContainer, run: _Run,
              streams: list[av.stream.Stream], video: av.stream.Stream) -> None:
        target_us = self.camera.chunk_target_s * 1_000_000
        watch = segmenter.ParameterWatch(video.codec_context.name)
        for packet in container.demux(streams):
            if self.stop.is_set():
                break
            if packet.dts is None or packet.pts is None:
                continue
            pts_us = segmenter.ticks_to_us(packet.pts, packet.time_base)
            is_video = packet.stream.index == video.index
            changed = is_video and watch.changed(packet)
            if run.writer is None:
                if not (is_video and packet.is_keyframe):
                    continue  # a chunk starts with a keyframe: it must decode alone
                if not self.spool.has_room():
                    self.stats.spool_full = True  # the fleet loop raises the alarm
                    continue
                run.receive_anchor_us = wall_us()  # the first keyframe's arrival
                run.first_pts_us = pts_us
                self._start_chunk(run, streams, pts_us)
                self.stats.runs += 1
                self._set_status("recording")
            elif is_video:
                if pts_us - run.chunk_first_pts_us >= NO_KEYFRAME_LIMIT_US \
                        and not packet.is_keyframe:
                    raise ValueError(f"no keyframe for {NO_KEYFRAME_LIMIT_US // 1_000_000} s")
                decision = segmenter.decide_cut(
                    elapsed_media_us=pts_us - run.chunk_first_pts_us, target_us=target_us,
                    is_video_keyframe=packet.is_keyframe, params_changed=changed)
                if decision.cut:
                    if changed:
                        log.info("camera %s: codec parameters changed; new chunk",
                                 self.camera.name)
                    self._finish_chunk(run, container, end_pts_us=pts_us)
                    if not self.spool.has_room():
                        # The run ends here: what follows is lost until the spool
                        # drains, and the gap will say so.
                        self.stats.spool_full = True
                        raise SpoolFull(f"spool over its budget of "
                                        f"{self.spool.budget_bytes} bytes")
                    self._start_chunk(run, streams, pts_us)
            assert run.writer is not None
            run.writer.write(packet)

    # --- chunks ----------------------------------------------------------------------

    def _start_chunk(self, run: _Run, streams: list[av.stream.Stream], pts_us: int) -> None:
        seq = self.tip.seq + 1
        info = ActiveChunk(camera_id=self.camera.id, seq=seq,
                           prev_chain_hash=self.tip.chain_hash.hex(),
                           anchor_us=run.next_start_us or 0,
                           clock_source=run.clock_source, first_of_run=run.next_start_us is None)
        path = self.spool.start_active(info)
        run.active = info
        run.chunk_first_pts_us = pts_us
        run.writer = segmenter.ChunkWriter(path, streams)
        run.codec = codec_params(streams)

    def _finish_chunk(self, run: _Run, container: av.container.InputContainer,
                      end_pts_us: int | None) -> None:
        assert run.writer is not None and run.active is not None
        written = run.writer.close()
        media_us = (end_pts_us - run.chunk_first_pts_us if end_pts_us is not None
                    else written.media_duration_us)
        size = written.path.stat().st_size
        whole = segmenter.truncate_to_whole_fragments(written.path)
        if whole < size:  # the writer failed: keep what is whole and playable
            media_us = segmenter.probe_media_us(written.path) if whole else 0
        if media_us <= 0:  # nothing playable was written
            self.spool.drop_active(run.active.camera_id, run.active.seq)
            run.writer = None
            return
        if run.next_start_us is None:
            start_us, source = self._anchor(run, container)
            run.clock_source = source
            if self._last_run_end_us is not None and start_us > self._last_run_end_us:
                # The first run of this process follows a recorder stop (or crash);
                # later runs follow a failed or vanished stream.
                cause = ("recorder_stopped" if self.stats.runs <= 1 else
                         {"data": "stream_error", "spool": "spool_full"}.get(
                             self._last_failure or "", "disconnect"))
                self.spool.add_gap(PendingGap(camera_id=self.camera.id,
                                              start_us=self._last_run_end_us,
                                              end_us=start_us, cause=cause,
                                              detail=self.stats.last_error or ""))
            start_us = max(start_us, self._last_run_end_us or start_us)
        else:
            start_us = run.next_start_us
        end_us = start_us + media_us
        active = ActiveChunk(**{**run.active.__dict__, "clock_source": run.clock_source})
        pending = seal_chunk(sealer=self.sealer, plaintext_path=written.path,
                             sealed_path=self.spool.sealing_path(active.camera_id, active.seq),
                             active=active, start_us=start_us, end_us=end_us,
                             media_duration_us=media_us, codec=run.codec)
        self.spool.add_chunk(pending)
        self.spool.drop_active(active.camera_id, active.seq)
        self.tip = Tip(active.seq, bytes.fromhex(pending.chain_hash))
        run.next_start_us = end_us
        run.writer = None
        self._last_run_end_us = end_us
        run.sealed += 1
        self.stats.chunks += 1
        self.stats.last_chunk_end_us = end_us

    def _anchor(self, run: _Run, container: av.container.InputContainer) -> tuple[int, str]:
        """The run's first frame in wall-clock time, and where that time came from."""
        assert run.receive_anchor_us is not None
        realtime = container.start_time_realtime
        if realtime is not None:
            # FFmpeg maps the first RTCP sender report's NTP time to media time 0.
            rtcp_us = int(realtime) + run.first_pts_us
            if abs(rtcp_us - run.receive_anchor_us) <= MAX_CAMERA_CLOCK_SKEW_S * 1_000_000:
                return rtcp_us, "rtcp"
            log.warning("camera %s: RTCP clock is %.1f s off the recorder's; using receive "
                        "time", self.camera.name,
                        (rtcp_us - run.receive_anchor_us) / 1e6)
        return run.receive_anchor_us, "receive"


@dataclass
class _Run:
    receive_anchor_us: int | None
    first_pts_us: int = 0
    chunk_first_pts_us: int = 0
    next_start_us: int | None = None  # start of the next chunk of this run
    clock_source: str = "receive"
    writer: segmenter.ChunkWriter | None = None
    active: ActiveChunk | None = None
    codec: dict[str, Any] | None = None
    sealed: int = 0


def recover_active(*, spool: Spool, sealer: Sealer) -> list[int]:
    """Seal the chunks a previous process was writing when it stopped (kill -9, power).

    Each is cut to its last whole fragment; one with nothing playable is dropped.
    Returns the camera ids whose chain advanced. The recovered chunk's start is its
    recorded anchor when known (a run's later chunk), else the file's modification
    time minus its media duration.
    """
    advanced = []
    for info, media in spool.active_chunks():
        keep = segmenter.truncate_to_whole_fragments(media) if media.exists() else 0
        if keep == 0:
            spool.drop_active(info.camera_id, info.seq)
            continue
        media_us = segmenter.probe_media_us(media)
        if media_us <= 0:
            spool.drop_active(info.camera_id, info.seq)
            continue
        if info.first_of_run:
            mtime_us = int(media.stat().st_mtime * 1_000_000)
            start_us, source = mtime_us - media_us, "receive"
        else:
            start_us, source = info.anchor_us, info.clock_source
        active = ActiveChunk(**{**info.__dict__, "clock_source": source})
        pending = seal_chunk(sealer=sealer, plaintext_path=media,
                             sealed_path=spool.sealing_path(info.camera_id, info.seq),
                             active=active, start_us=start_us, end_us=start_us + media_us,
                             media_duration_us=media_us, codec={"recovered": True})
        spool.add_chunk(pending)
        spool.drop_active(info.camera_id, info.seq)
        advanced.append(info.camera_id)
    return advanced


def latest_tip(spool: Spool, camera_id: int, committed: Tip,
               committed_end_us: int | None) -> tuple[Tip, int | None]:
    """The chain tip and the last chunk's end, counting chunks still in the outbox."""
    tip, end_us = committed, committed_end_us
    for entry in spool.pending():
        if isinstance(entry, PendingChunk) and entry.camera_id == camera_id \
                and entry.seq > tip.seq:
            tip, end_us = Tip(entry.seq, bytes.fromhex(entry.chain_hash)), entry.end_us
    return tip, end_us


def spool_path(home: Path) -> Path:
    return home / "spool"
