"""HTTP routes for keys: the published public keys and rotation.

``GET /api/v1/keys`` publishes every signing key ever used, whatever its state, so
that packages and checkpoints signed before a rotation still verify against a key
obtained from the issuing office; KEKs appear only by identity and the number of data
keys wrapped under them, never with material. ``POST /api/v1/keys/rotate`` is for
admins. Thin: the logic is in ``vigil.keys``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict

from vigil import keys
from vigil.auth.api import SessionDep, allow
from vigil.catalog.models import KeyPurpose, Principal, RoleName
from vigil.settings import get_settings

router = APIRouter(prefix="/api/v1", tags=["keys"])

_readers = allow(RoleName.ADMIN, RoleName.INVESTIGATOR, RoleName.AUDITOR)
_admins = allow(RoleName.ADMIN, system=True)


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: KeyPurpose


class KeyOut(BaseModel):
    purpose: str
    version: int
    state: str
    created_at: datetime
    retired_at: datetime | None
    destroyed_at: datetime | None
    # Signing keys: the raw Ed25519 public key (hex and PEM) and its SHA-256 (hex).
    fingerprint: str | None = None
    public_key_hex: str | None = None
    public_key_pem: str | None = None
    # KEKs: how many data keys (not destroyed) are wrapped under it.
    data_keys: int | None = None


def _out(item: keys.Listed) -> KeyOut:
    k = item.key
    return KeyOut(purpose=k.purpose.value, version=k.version, state=k.state.value,
                  created_at=k.created_at, retired_at=k.retired_at,
                  destroyed_at=k.destroyed_at, fingerprint=k.fingerprint,
                  public_key_hex=k.public_key.hex() if k.public_key else None,
                  public_key_pem=keys.public_pem(k.public_key) if k.public_key else None,
                  data_keys=item.data_keys)


@router.get("/keys", response_model=list[KeyOut])
def list_keys(session: SessionDep,
              _principal: Annotated[Principal, Depends(_readers)]) -> list[KeyOut]:
    """Every key, by purpose and version: signing keys with their public keys, KEKs
    by identity only."""
    return [_out(item) for item in keys.list_keys(session=session)]


@router.post("/keys/rotate", response_model=KeyOut, status_code=201)
def rotate_key(body: RotateIn, session: SessionDep,
               principal: Annotated[Principal, Depends(_admins)]) -> KeyOut:
    """Make a new version of a key active and retire the old one; 409 while another
    rotation of the same purpose is in progress. Data keys follow a KEK rotation in
    the background (``vigil.keys.rewrap``)."""
    new = keys.rotate(session=session, provider=keys.file_key_ring(get_settings().home_dir),
                      purpose=body.purpose, actor=principal.name, principal_id=principal.id)
    session.commit()
    data_keys = 0 if new.purpose is KeyPurpose.KEK else None
    return _out(keys.Listed(key=new, data_keys=data_keys))
