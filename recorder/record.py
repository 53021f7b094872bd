"""``vigil record``: one recorder process recording every enabled camera.

Start-up order: clean the spool's temporaries, seal the chunks a previous process
left half-written (recovery, never discard), then start the uploader and one thread
per camera. Stop: cameras first (each seals its chunk in progress), then the
uploader drains what it can; whatever it cannot stays in the spool for next time.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from recorder import service
from recorder.runner import CameraConfig, CameraRecorder, latest_tip, recover_active
from recorder.spool import Spool
from recorder.uploader import Uploader
from vigil import keys
from vigil.catalog.models import Camera, CameraStatus, Chunk
from vigil.db import get_engine, session_scope
from vigil.objectstore import get_object_store
from vigil.settings import Settings

log = logging.getLogger("vigil.recorder")

# Spool disk budget: ~30 min of one 4 Mbit/s camera per GiB; raise for long outages.
DEFAULT_SPOOL_BUDGET_BYTES: Final = 8 * 1024**3


@dataclass
class Recorder:
    cameras: list[CameraRecorder]
    uploader: Uploader
    stop: threading.Event

    def shutdown(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        for cam in self.cameras:
            cam.join(timeout_s)
        self.uploader.finish()
        self.uploader.join(timeout_s)


def start(settings: Settings, *, camera_names: list[str] | None = None,
          spool_budget_bytes: int = DEFAULT_SPOOL_BUDGET_BYTES) -> Recorder:
    engine = get_engine()
    provider = keys.file_key_ring(settings.home_dir)
    spool = Spool(settings.home_dir / "spool", budget_bytes=spool_budget_bytes)
    spool.clean()
    with session_scope(engine) as session:
        sealer = service.make_sealer(session=session, provider=provider)
        keys.active_key(session=session, provider=provider,
                        purpose=keys.KeyPurpose.CHECKPOINT_SIGNING)
    recovered = recover_active(spool=spool, sealer=sealer)
    if recovered:
        log.info("recovered %d partial chunk(s) left by a stopped recorder", len(recovered))
    stop = threading.Event()
    uploader = Uploader(spool=spool, store=get_object_store(settings), engine=engine,
                        provider=provider)
    recorders = []
    with session_scope(engine) as session:
        query = select(Camera).where(Camera.status != CameraStatus.DISABLED)
        if camera_names:
            query = query.where(Camera.name.in_(camera_names))
        for cam in session.scalars(query.order_by(Camera.id)).all():
            committed = service.committed_tip(session=session, camera_id=cam.id)
            last_end = session.scalars(select(func.max(Chunk.end_at))
                                       .where(Chunk.camera_id == cam.id)).first()
            tip, end_us = latest_tip(spool, cam.id, committed,
                                     service.dt_to_us(last_end) if last_end else None)
            recorders.append(CameraRecorder(
                camera=CameraConfig(id=cam.id, name=cam.name, url=cam.source_url,
                                    chunk_target_s=cam.chunk_target_s),
                spool=spool, sealer=sealer, tip=tip, stop=stop, last_end_us=end_us,
                on_status=_status_writer(engine)))
    uploader.start()
    for rec in recorders:
        rec.start()
    return Recorder(cameras=recorders, uploader=uploader, stop=stop)


def _status_writer(engine):  # noqa: ANN001, ANN202 - small closure
    def write(camera_id: int, status: str) -> None:
        try:
            with session_scope(engine) as session:
                cam = session.get(Camera, camera_id)
                if cam is not None and cam.status != CameraStatus.DISABLED:
                    cam.status = CameraStatus(status)
        except DBAPIError:
            log.warning("camera %d is %s (not saved: database unavailable)", camera_id, status)
    return write
