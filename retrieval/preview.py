"""Preview clips: a camera's range stitched on request, to watch before exporting.

A preview is the same frame-accurate stream-copy clip an export holds
(``retrieval.clip``), built from chunks that decrypt and match their recorded hash,
but it is not evidence: no custody event, no package, no chain check; it is audited.
It lives in a temporary directory that the caller removes once it is sent.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Final

from sqlalchemy.orm import Session

from retrieval import clip
from retrieval.timeline import timeline
from vigil import audit, keys
from vigil.catalog.models import Camera, Principal
from vigil.catalog.queries import chunks_overlapping
from vigil.chunks import read_plaintext, to_us
from vigil.errors import InvalidInput, NotFound
from vigil.intervals import Span
from vigil.objectstore import get_object_store
from vigil.settings import Settings

MAX_PREVIEW: Final = timedelta(minutes=30)


def build_preview(*, session: Session, settings: Settings, camera: Camera, span: Span,
                  principal: Principal, workdir: Path) -> Path:
    """Stitch ``camera``'s footage over ``span`` into ``workdir/preview.mp4``."""
    if span.end - span.start > MAX_PREVIEW:
        raise InvalidInput(f"a preview is at most {MAX_PREVIEW.total_seconds() / 60:g} min; "
                           "export longer ranges")
    chunks = chunks_overlapping(session, camera_id=camera.id, window=span)
    if not chunks:
        raise NotFound(f"camera {camera.name!r} has no recording in the range")
    provider = keys.file_key_ring(settings.home_dir)
    store = get_object_store(settings)
    sources = []
    for chunk in chunks:
        path = workdir / f"{chunk.seq:010d}.mov"
        path.write_bytes(read_plaintext(session=session, provider=provider, store=store,
                                        chunk=chunk))
        sources.append(clip.ClipSource(path=path, seq=chunk.seq, start_us=to_us(chunk.start_at),
                                       end_us=to_us(chunk.end_at)))
    gaps = [clip.ClipGap(to_us(g.span.start), to_us(g.span.end), g.cause)
            for g in timeline(session, camera_id=camera.id, window=span).gaps]
    out = workdir / "preview.mp4"
    clip.stitch(sources, from_us=to_us(span.start), to_us=to_us(span.end), out=out,
                gaps=gaps, title=camera.name)
    for source in sources:
        source.path.unlink()
    audit.record(session=session, actor=principal.name, principal_id=principal.id,
                 action="clip.preview", target_type="camera", target_id=str(camera.id),
                 detail={"from": span.start.isoformat(), "to": span.end.isoformat()})
    session.commit()
    return out
