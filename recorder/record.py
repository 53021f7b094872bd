"""``vigil record``: a recorder process, one of a fleet sharing cameras through leases.

Start-up: clean the spool's temporaries, seal the chunks a previous process left
half-written (recovery, never discard), start the uploader. Then, every
``RENEW_INTERVAL``: renew this recorder's leases, stop the cameras whose lease was
lost, and take the leases of cameras nobody records (new, or left by a dead
recorder), starting a thread for each. Stop: cameras first (each seals its chunk in
progress), then one last drain of the spool, then the leases are released so that
another recorder takes over at once.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import DBAPIError

from recorder import leases, service
from recorder.runner import CameraConfig, CameraRecorder, latest_tip, recover_active
from recorder.service import Sealer
from recorder.spool import Spool
from recorder.uploader import Uploader
from vigil import keys
from vigil.catalog.models import Camera, CameraStatus, CameraStatusEvent, Chunk
from vigil.db import get_engine, session_scope
from vigil.objectstore import get_object_store
from vigil.settings import Settings

log = logging.getLogger("vigil.recorder")


@dataclass
class Fleet:
    """This process's part of the fleet: which cameras it records."""

    recorder_id: str
    engine: Engine
    spool: Spool
    sealer: Sealer
    camera_names: list[str] | None
    max_cameras: int | None
    running: dict[int, tuple[CameraRecorder, threading.Event]] = field(default_factory=dict)

    def tick(self) -> None:
        """Renew, drop lost cameras, take free ones. Raises DBAPIError when the
        database is away (the caller logs it; recording goes on)."""
        with session_scope(self.engine) as session:
            held = leases.renew(session=session, recorder_id=self.recorder_id)
            reaped = leases.reap_dead_local(session=session)
            self.sealer.refresh(session=session)  # a rotated KEK, from this tick on
        if reaped:
            log.info("freed the leases of cameras %s: their recorder on this host is gone",
                     reaped)
        for camera_id in set(self.running) - held:
            log.warning("lease of camera %d lost: another recorder took it", camera_id)
            self._stop_camera(camera_id)
        room = (None if self.max_cameras is None
                else self.max_cameras - len(self.running))
        if room is not None and room <= 0:
            return
        with session_scope(self.engine) as session:
            query = select(Camera).where(Camera.status != CameraStatus.DISABLED)
            if self.camera_names:
                query = query.where(Camera.name.in_(self.camera_names))
            candidates = [c for c in session.scalars(query.order_by(Camera.id)).all()
                          if c.id not in self.running][:room]
            got = leases.acquire(session=session, recorder_id=self.recorder_id,
                                 camera_ids=[c.id for c in candidates])
            starts = [(c, service.committed_tip(session=session, camera_id=c.id),
                       session.scalars(select(func.max(Chunk.end_at))
                                       .where(Chunk.camera_id == c.id)).first())
                      for c in candidates if c.id in got]
        for cam, committed, last_end in starts:
            self._start_camera(cam, committed, last_end)

    def _start_camera(self, cam: Camera, committed: service.Tip,
                      last_end: datetime | None) -> None:
        tip, end_us = latest_tip(self.spool, cam.id, committed,
                                 service.dt_to_us(last_end) if last_end else None)
        stop = threading.Event()
        thread = CameraRecorder(
            camera=CameraConfig(id=cam.id, name=cam.name, url=cam.source_url,
                                chunk_target_s=cam.chunk_target_s),
            spool=self.spool, sealer=self.sealer, tip=tip, stop=stop, last_end_us=end_us,
            on_status=self._record_status)
        self.running[cam.id] = (thread, stop)
        thread.start()
        log.info("recording camera %s (id %d)", cam.name, cam.id)

    def _stop_camera(self, camera_id: int, timeout_s: float = 30.0) -> None:
        thread, stop = self.running.pop(camera_id)
        stop.set()
        thread.join(timeout_s)

    def stop_all(self) -> None:
        for camera_id in list(self.running):
            self.running[camera_id][1].set()
        for camera_id in list(self.running):
            self._stop_camera(camera_id)

    def _record_status(self, camera_id: int, status: str) -> None:
        try:
            with session_scope(self.engine) as session:
                cam = session.get(Camera, camera_id)
                if cam is None or cam.status == CameraStatus.DISABLED:
                    return
                cam.status = CameraStatus(status)
                cam.updated_at = datetime.now(UTC)
                session.add(CameraStatusEvent(camera_id=camera_id, status=CameraStatus(status),
                                              changed_at=datetime.now(UTC),
                                              recorder_id=self.recorder_id))
        except DBAPIError:
            log.warning("camera %d is %s (not saved: database unavailable)", camera_id, status)


class Recorder(threading.Thread):
    """The fleet loop of one recorder process."""

    def __init__(self, fleet: Fleet, uploader: Uploader) -> None:
        super().__init__(name="fleet", daemon=True)
        self.fleet, self.uploader = fleet, uploader
        self.halt = threading.Event()
        self.last_error: str | None = None

    @property
    def cameras(self) -> list[CameraRecorder]:
        return [thread for thread, _stop in self.fleet.running.values()]

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                self.fleet.tick()
                if self.last_error is not None:
                    log.info("database reachable again")
                self.last_error = None
            except DBAPIError as exc:
                error = f"database unavailable ({type(exc.orig).__name__})"
                if error != self.last_error:
                    log.warning("%s: leases not renewed; recording goes on into the spool",
                                error)
                self.last_error = error
            if not self.fleet.spool.has_room():
                log.error("ALARM spool full: %d of %d bytes used in %s; new chunks are "
                          "not being written until uploads drain it",
                          self.fleet.spool.used_bytes(), self.fleet.spool.budget_bytes,
                          self.fleet.spool.root)
            self.halt.wait(leases.RENEW_INTERVAL.total_seconds())

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self.halt.set()
        self.join(timeout_s)
        self.fleet.stop_all()
        self.uploader.finish()
        self.uploader.join(timeout_s)
        try:
            with session_scope(self.fleet.engine) as session:
                leases.release(session=session, recorder_id=self.fleet.recorder_id)
        except DBAPIError:
            log.warning("leases not released (database unavailable); they expire in %s",
                        leases.LEASE_TTL)


def start(settings: Settings, *, camera_names: list[str] | None = None,
          max_cameras: int | None = None) -> Recorder:
    engine = get_engine()
    provider = keys.file_key_ring(settings.home_dir)
    spool = Spool(settings.home_dir / "spool",
                  budget_bytes=settings.spool_budget_mb * 1024 * 1024)
    spool.clean()
    with session_scope(engine) as session:
        sealer = service.make_sealer(session=session, provider=provider)
        keys.active_key(session=session, provider=provider,
                        purpose=keys.KeyPurpose.CHECKPOINT_SIGNING)
    recovered = recover_active(spool=spool, sealer=sealer)
    if recovered:
        log.info("recovered %d partial chunk(s) left by a stopped recorder", len(recovered))
    uploader = Uploader(spool=spool, store=get_object_store(settings), engine=engine,
                        provider=provider)
    fleet = Fleet(recorder_id=leases.new_recorder_id(), engine=engine, spool=spool,
                  sealer=sealer, camera_names=camera_names, max_cameras=max_cameras)
    recorder = Recorder(fleet, uploader)
    uploader.start()
    fleet.tick()  # take leases now, so that recording starts at once
    recorder.start()
    return recorder
