"""Reading stored chunks back: fetch, unwrap, decrypt, check. Fails closed.

What exports (issue 4), the integrity scrub (issue 5) and the tests use, so that
there is one way to open a chunk: the slot comes from the catalog row, never from
the object, and the chain link is rebuilt from the row the same way the recorder
built it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from vigil import chain, crypto, keys
from vigil.catalog.models import Chunk
from vigil.objectstore import ObjectStore

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_us(at: datetime) -> int:
    return (at - _EPOCH) // timedelta(microseconds=1)


def slot_of(chunk: Chunk) -> crypto.Slot:
    return crypto.Slot(camera_id=chunk.camera_id, seq=chunk.seq,
                       start_us=to_us(chunk.start_at), sha256=chunk.sha256)


def link_of(chunk: Chunk) -> chain.Link:
    return chain.Link(camera_id=chunk.camera_id, seq=chunk.seq,
                      start_us=to_us(chunk.start_at), end_us=to_us(chunk.end_at),
                      media_duration_us=chunk.media_duration_us,
                      plaintext_bytes=chunk.plaintext_bytes, sha256=chunk.sha256,
                      clock_source=chunk.clock_source.value)


def read_plaintext(*, session: Session, provider: keys.KeyProvider, store: ObjectStore,
                   chunk: Chunk) -> bytes:
    """The chunk's plaintext, or a named error: ``KeyUnavailable`` (shredded or missing
    key), ``NotFound`` / ``StorageError`` (object), ``ChunkTampered`` /
    ``ChunkFormatError`` (bytes)."""
    data_key = keys.unwrap_data_key(session=session, provider=provider,
                                    data_key_id=chunk.data_key_id)
    return crypto.open_sealed(store.get(chunk.object_key), data_key=data_key,
                              slot=slot_of(chunk))
