"""Key rotation: new versions, re-wrapping without re-encryption, destruction of retired
KEKs only when nothing needs them, signing keys whose old public keys stay published."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from ops import keys_cli
from recorder.service import dt_to_us, sign_checkpoints
from retrieval import verify
from tests import factories, packages
from vigil import chain, crypto, db, key_tasks, keys
from vigil.auth import service as auth_service
from vigil.catalog.models import (
    AuditEvent,
    CameraLease,
    ChainHead,
    Checkpoint,
    Chunk,
    ClockSource,
    DataKey,
    Key,
    KeyPurpose,
    KeyState,
)
from vigil.chunks import read_plaintext
from vigil.errors import Conflict
from vigil.settings import Settings
from vigil.tasks import celery_app

T0_US = 1_780_000_000_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture
def ring(settings: Settings) -> Iterator[keys.FileKeyRing]:
    """The suite's key ring, where the keys other tests committed to the catalog live.

    A test's destruction of a key is rolled back in the catalog (the ``session``
    fixture) but not on disk, so every key file the test removed is put back."""
    directory = settings.home_dir / "keys"
    before = {p.name: p.read_bytes() for p in directory.glob("*.key")}
    yield keys.file_key_ring(settings.home_dir)
    for name, material in before.items():
        path = directory / name
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(material)


def _key_file(settings: Settings, key: Key) -> Path:
    return settings.home_dir / "keys" / f"{key.provider_ref}.key"


def _stored_chunks(session: Session, ring: keys.FileKeyRing, store, count: int  # noqa: ANN001
                   ) -> list[Chunk]:
    """Sealed chunks in the object store, their data keys wrapped under the active KEK."""
    cam = factories.camera(session)
    chunks = []
    for seq in range(count):
        plaintext = os.urandom(2000 + seq)
        start_us = T0_US + seq * 2_000_000
        sealed = crypto.seal(plaintext, camera_id=cam.id, seq=seq, start_us=start_us)
        object_key = f"chunks/{cam.id}/{seq:020d}-{os.urandom(4).hex()}.vch"
        store.put(object_key, sealed.blob)
        data_key = keys.new_data_key(session=session, provider=ring, data_key=sealed.data_key)
        start_at = _EPOCH + timedelta(microseconds=start_us)
        row = Chunk(camera_id=cam.id, seq=seq, start_at=start_at,
                    end_at=start_at + timedelta(seconds=2), media_duration_us=2_000_000,
                    clock_source=ClockSource.RTCP, plaintext_bytes=len(plaintext),
                    stored_bytes=len(sealed.blob), object_key=object_key,
                    sha256=hashlib.sha256(plaintext).digest(), chain_hash=os.urandom(32),
                    data_key_id=data_key.id, codec={"video": "h264"})
        session.add(row)
        chunks.append(row)
    session.flush()
    return chunks


def _last_audit(session: Session, action: str) -> AuditEvent:
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                            .order_by(AuditEvent.id.desc()).limit(1)).first()
    assert event is not None, action
    return event


def _rewrap_everything(session: Session, ring: keys.FileKeyRing) -> int:
    total = 0
    while done := keys.rewrap_batch(session=session, provider=ring):
        total += done
    return total


# --- the key ring ----------------------------------------------------------------------


def test_a_destroyed_key_file_is_gone_and_destroying_again_is_harmless(tmp_path: Path) -> None:
    ring = keys.FileKeyRing(tmp_path / "keys")
    ref = ring.create(KeyPurpose.KEK, 1)
    wrapped = ring.wrap(ref, os.urandom(32))
    ring.destroy(ref)
    assert not (tmp_path / "keys" / f"{ref}.key").exists()
    ring.destroy(ref)
    with pytest.raises(keys.KeyUnavailable, match="missing"):
        ring.unwrap(ref, wrapped)


# --- rotation ------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", [KeyPurpose.KEK, KeyPurpose.CHECKPOINT_SIGNING,
                                     KeyPurpose.PACKAGE_SIGNING])
def test_rotation_makes_the_next_version_active_and_retires_the_old(
        session: Session, settings: Settings, ring: keys.FileKeyRing,
        purpose: KeyPurpose) -> None:
    old = keys.active_key(session=session, provider=ring, purpose=purpose)
    new = keys.rotate(session=session, provider=ring, purpose=purpose, actor="test")
    session.refresh(old)
    assert (new.version, new.state) == (old.version + 1, KeyState.ACTIVE)
    assert old.state is KeyState.RETIRED and old.retired_at is not None
    assert keys.active_key(session=session, provider=ring, purpose=purpose).id == new.id
    assert stat.S_IMODE(_key_file(settings, new).stat().st_mode) == 0o600
    assert _key_file(settings, old).exists()  # retired keys are kept

    event = _last_audit(session, "keys.rotated")
    assert (event.actor, event.target_type, event.target_id) == ("test", "key", str(new.id))
    expected: dict[str, object] = {"purpose": purpose.value, "old_version": old.version,
                                   "new_version": new.version}
    if purpose is not KeyPurpose.KEK:
        assert len(new.public_key) == 32 and new.fingerprint != old.fingerprint
        expected |= {"old_fingerprint": old.fingerprint, "new_fingerprint": new.fingerprint}
    assert event.detail == expected
    for key in (old, new):  # no material in the audit trail
        material = _key_file(settings, key).read_bytes()
        assert material.hex() not in json.dumps(event.detail)


def test_every_purpose_rotates_and_the_cli_offers_them_all(session: Session,
                                                           ring: keys.FileKeyRing) -> None:
    """Audit checkpoints sign with audit_signing (vigil/audit.py): it rotates too."""
    new = keys.rotate(session=session, provider=ring, purpose=KeyPurpose.AUDIT_SIGNING,
                      actor="test")
    assert new.purpose is KeyPurpose.AUDIT_SIGNING and new.public_key is not None
    assert set(keys.ROTATABLE) == set(KeyPurpose)
    # The CLI offers exactly the purposes the service rotates.
    assert [p.value for p in keys_cli.Rotatable] == [p.value for p in keys.ROTATABLE]


def test_two_concurrent_rotations_do_not_both_succeed(engine: Engine,
                                                      ring: keys.FileKeyRing) -> None:
    # Two transactions of their own, both rolled back: nothing here is committed.
    with engine.connect() as a_conn, engine.connect() as b_conn:
        a_tx, b_tx = a_conn.begin(), b_conn.begin()
        a, b = Session(bind=a_conn), Session(bind=b_conn)
        try:
            keys.active_key(session=a, provider=ring, purpose=KeyPurpose.KEK)
            first = keys.rotate(session=a, provider=ring, purpose=KeyPurpose.KEK,
                                actor="first")
            with pytest.raises(Conflict, match="already in progress"):
                keys.rotate(session=b, provider=ring, purpose=KeyPurpose.KEK, actor="second")
            active = a.scalars(select(Key).where(Key.purpose == KeyPurpose.KEK,
                                                 Key.state == KeyState.ACTIVE)).all()
            assert [k.id for k in active] == [first.id]
        finally:
            a.close()
            b.close()
            a_tx.rollback()
            b_tx.rollback()


# --- re-wrapping ---------------------------------------------------------------------


def test_after_a_kek_rotation_and_rewrap_every_chunk_decrypts_and_none_was_reencrypted(
        session: Session, ring: keys.FileKeyRing, store) -> None:  # noqa: ANN001
    chunks = _stored_chunks(session, ring, store, 4)
    objects_before = {c.object_key: store.sha256_of(c.object_key) for c in chunks}
    plaintexts = [read_plaintext(session=session, provider=ring, store=store, chunk=c)
                  for c in chunks]
    old_kek = keys.active_key(session=session, provider=ring, purpose=KeyPurpose.KEK)
    wrapped_before = {c.id: session.get(DataKey, c.data_key_id).wrapped for c in chunks}

    new_kek = keys.rotate(session=session, provider=ring, purpose=KeyPurpose.KEK,
                          actor="test")
    # Before the re-wrap, the retired KEK still unwraps what it wrapped.
    assert [read_plaintext(session=session, provider=ring, store=store, chunk=c)
            for c in chunks] == plaintexts
    assert keys.pending_rewrap(session=session) >= len(chunks)

    outcome = key_tasks.rewrap_all(session=session, provider=ring, actor="test")
    assert outcome.rewrapped >= len(chunks) and outcome.remaining == 0
    # Within its grace period the retired KEK is kept, though nothing needs it now.
    assert outcome.destroyed_versions == []
    for chunk in chunks:
        data_key = session.get(DataKey, chunk.data_key_id)
        session.refresh(data_key)
        assert data_key.kek_id == new_kek.id != old_kek.id
        assert data_key.wrapped != wrapped_before[chunk.id]
    assert [read_plaintext(session=session, provider=ring, store=store, chunk=c)
            for c in chunks] == plaintexts
    assert {c.object_key: store.sha256_of(c.object_key) for c in chunks} == objects_before
    counts = keys.data_keys_per_kek(session=session)
    assert counts.get(old_kek.id, 0) == 0 and counts[new_kek.id] >= len(chunks)


def test_rewrap_is_resumable_batch_by_batch(session: Session, ring: keys.FileKeyRing,
                                            store) -> None:  # noqa: ANN001
    chunks = _stored_chunks(session, ring, store, 5)
    new_kek = keys.rotate(session=session, provider=ring, purpose=KeyPurpose.KEK,
                          actor="test")
    pending = keys.pending_rewrap(session=session)
    assert keys.rewrap_batch(session=session, provider=ring, limit=2) == 2
    session.commit()  # a batch is committed on its own; a crash now loses nothing
    assert keys.pending_rewrap(session=session) == pending - 2
    # Some data keys are under the new KEK, the rest still under the old: all open.
    for chunk in chunks:
        read_plaintext(session=session, provider=ring, store=store, chunk=chunk)
    assert _rewrap_everything(session, ring) == pending - 2
    assert keys.pending_rewrap(session=session) == 0
    assert keys.rewrap_batch(session=session, provider=ring) == 0  # idempotent
    assert all(session.get(DataKey, c.data_key_id).kek_id == new_kek.id for c in chunks)


# --- destruction ---------------------------------------------------------------------


def test_a_retired_kek_is_destroyed_only_once_no_data_key_needs_it(
        session: Session, settings: Settings, ring: keys.FileKeyRing, store  # noqa: ANN001
) -> None:
    chunks = _stored_chunks(session, ring, store, 3)
    old_kek = keys.active_key(session=session, provider=ring, purpose=KeyPurpose.KEK)
    new_kek = keys.rotate(session=session, provider=ring, purpose=KeyPurpose.KEK,
                          actor="test")

    def destroy(grace: timedelta = timedelta(0)) -> list[Key]:
        return keys.destroy_unneeded_keks(session=session, provider=ring, actor="test",
                                          grace=grace)

    assert destroy() == []  # every data key still needs it
    keys.rewrap_batch(session=session, provider=ring, limit=1)
    assert destroy() == []  # some still do
    assert _key_file(settings, old_kek).exists()

    _rewrap_everything(session, ring)
    assert destroy(grace=keys.KEK_DESTROY_GRACE) == []  # retired too recently

    # A recorder that took its lease before the rotation may still seal with the old KEK.
    cam = factories.camera(session)
    session.refresh(old_kek)
    lease = CameraLease(camera_id=cam.id, recorder_id="rec-before-rotation",
                        acquired_at=old_kek.retired_at - timedelta(minutes=1),
                        expires_at=datetime.now(UTC) + timedelta(minutes=1))
    session.add(lease)
    session.flush()
    assert destroy() == []
    session.delete(lease)
    session.flush()

    # A data key destroyed by crypto-shredding needs no KEK.
    shredded = keys.new_data_key(session=session, provider=ring, data_key=os.urandom(32))
    shredded.kek_id, shredded.wrapped, shredded.destroyed_at = \
        old_kek.id, None, datetime.now(UTC)
    session.flush()

    assert [k.id for k in destroy()] == [old_kek.id]
    session.refresh(old_kek)
    assert old_kek.state is KeyState.DESTROYED and old_kek.destroyed_at is not None
    assert not _key_file(settings, old_kek).exists()
    event = _last_audit(session, "keys.destroyed")
    assert event.detail == {"purpose": "kek", "version": old_kek.version}
    assert destroy() == []  # once
    assert keys.active_key(session=session, provider=ring, purpose=KeyPurpose.KEK).id == \
        new_kek.id
    for chunk in chunks:
        read_plaintext(session=session, provider=ring, store=store, chunk=chunk)


def test_signing_keys_are_never_destroyed(session: Session, settings: Settings,
                                          ring: keys.FileKeyRing) -> None:
    old = keys.active_key(session=session, provider=ring,
                          purpose=KeyPurpose.CHECKPOINT_SIGNING)
    keys.rotate(session=session, provider=ring, purpose=KeyPurpose.CHECKPOINT_SIGNING,
                actor="test")
    destroyed = keys.destroy_unneeded_keks(session=session, provider=ring, actor="test",
                                           grace=timedelta(0))
    assert all(k.purpose is KeyPurpose.KEK for k in destroyed)
    session.refresh(old)
    assert old.state is KeyState.RETIRED and old.public_key is not None
    assert _key_file(settings, old).exists()


def test_the_rewrap_task_is_registered_under_the_scheduled_name() -> None:
    from vigil.tasks import BEAT_SCHEDULE

    assert BEAT_SCHEDULE["rewrap"]["task"] == "vigil.keys.rewrap"
    assert celery_app.tasks["vigil.keys.rewrap"] is key_tasks.rewrap_keys


# --- signing keys --------------------------------------------------------------------


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_after_a_signing_key_rotation_new_signatures_use_the_new_key_and_old_ones_verify(
        session: Session, ring: keys.FileKeyRing, client, make_token,  # noqa: ANN001
        tmp_path: Path) -> None:
    # A checkpoint under the current key, then a rotation, then the next checkpoint.
    cam = factories.camera(session)
    head = ChainHead(camera_id=cam.id, seq=0, chain_hash=os.urandom(32))
    session.add(head)
    session.flush()
    old_cp_key = keys.active_key(session=session, provider=ring,
                                 purpose=KeyPurpose.CHECKPOINT_SIGNING)
    assert sign_checkpoints(session=session, provider=ring, camera_ids=[cam.id],
                            at_once=True) == 1
    new_cp_key = keys.rotate(session=session, provider=ring,
                             purpose=KeyPurpose.CHECKPOINT_SIGNING, actor="test")
    head.seq, head.chain_hash = 1, os.urandom(32)
    session.flush()
    assert sign_checkpoints(session=session, provider=ring, camera_ids=[cam.id],
                            at_once=True) == 1
    checkpoints = session.scalars(select(Checkpoint).where(Checkpoint.camera_id == cam.id)
                                  .order_by(Checkpoint.seq)).all()
    assert [c.key_id for c in checkpoints] == [old_cp_key.id, new_cp_key.id]

    # A package signed by the package key of the day, which is then rotated.
    old_pkg_key = keys.active_key(session=session, provider=ring,
                                  purpose=KeyPurpose.PACKAGE_SIGNING)
    built = packages.build(tmp_path / "pkg",
                           signing_key=ring.signing_key(old_pkg_key.provider_ref))
    new_pkg_key = keys.rotate(session=session, provider=ring,
                              purpose=KeyPurpose.PACKAGE_SIGNING, actor="test")

    # Both public keys of each purpose stay published.
    response = client.get("/api/v1/keys", headers=_auth(make_token("auditor")))
    assert response.status_code == 200
    published = response.json()
    by_fp = {k["fingerprint"]: k for k in published if k["fingerprint"]}
    for key in (old_cp_key, new_cp_key, old_pkg_key, new_pkg_key):
        entry = by_fp[key.fingerprint]
        assert (entry["purpose"], entry["version"]) == (key.purpose.value, key.version)
        assert entry["public_key_hex"] == key.public_key.hex()
        assert chain.fingerprint(verify.load_public_key(
            entry["public_key_pem"].encode())) == key.fingerprint
    assert by_fp[old_pkg_key.fingerprint]["state"] == "retired"
    assert by_fp[new_pkg_key.fingerprint]["state"] == "active"

    # Each checkpoint verifies under the published key it names.
    for checkpoint in checkpoints:
        key = session.get(Key, checkpoint.key_id)
        public = verify.load_public_key(by_fp[key.fingerprint]["public_key_pem"].encode())
        chain.verify_checkpoint(public, chain.Checkpoint(
            camera_id=cam.id, seq=checkpoint.seq, chain_hash=checkpoint.chain_hash,
            signed_at_us=dt_to_us(checkpoint.signed_at),
            key_fingerprint=key.fingerprint), checkpoint.signature)

    # The package built before the rotation verifies against the published keys.
    trusted = [verify.load_public_key(k["public_key_pem"].encode()) for k in published
               if k["purpose"] == "package_signing"]
    report = verify.verify_package(built.path, trusted_keys=trusted, restitch=False)
    assert report.ok, verify.render(report)
    assert report.checks["signature.trusted"] == 1
    # Only the new key published: the old package would not be trusted.
    report = verify.verify_package(built.path, trusted_keys=[keys.load_public(
        new_pkg_key.public_key)], restitch=False)
    assert [f.check for f in report.failures] == ["signature.trusted"]


# --- the API -------------------------------------------------------------------------


def test_keks_are_listed_by_identity_never_with_material(
        session: Session, settings: Settings, ring: keys.FileKeyRing, store, client,
        make_token) -> None:  # noqa: ANN001
    _stored_chunks(session, ring, store, 2)
    kek = keys.active_key(session=session, provider=ring, purpose=KeyPurpose.KEK)
    response = client.get("/api/v1/keys", headers=_auth(make_token("investigator")))
    assert response.status_code == 200
    entry = next(k for k in response.json()
                 if (k["purpose"], k["version"]) == ("kek", kek.version))
    assert entry["data_keys"] == keys.data_keys_per_kek(session=session)[kek.id] >= 2
    assert entry["public_key_hex"] is entry["public_key_pem"] is entry["fingerprint"] is None
    material = _key_file(settings, kek).read_bytes()
    assert material.hex() not in response.text and kek.provider_ref not in response.text


@pytest.mark.parametrize(("role", "status"), [
    ("admin", 200), ("investigator", 200), ("auditor", 200), ("recorder", 403)])
def test_key_listing_by_role(client, make_token, role: str,  # noqa: ANN001
                             status: int) -> None:
    response = client.get("/api/v1/keys", headers=_auth(make_token(role)))
    assert response.status_code == status


@pytest.mark.parametrize("role", ["investigator", "auditor", "recorder"])
def test_only_admins_rotate(client, make_token, role: str) -> None:  # noqa: ANN001
    response = client.post("/api/v1/keys/rotate", json={"purpose": "kek"},
                           headers=_auth(make_token(role)))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_rotation_needs_a_token(client) -> None:  # noqa: ANN001
    assert client.get("/api/v1/keys").status_code == 401
    response = client.post("/api/v1/keys/rotate", json={"purpose": "kek"})
    assert response.status_code == 401


def test_an_admin_rotates_through_the_api(session: Session, client, make_token,  # noqa: ANN001
                                          ring: keys.FileKeyRing) -> None:
    old = keys.active_key(session=session, provider=ring, purpose=KeyPurpose.PACKAGE_SIGNING)
    response = client.post("/api/v1/keys/rotate", json={"purpose": "package_signing"},
                           headers=_auth(make_token("admin", name="key-admin")))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["purpose"], body["version"], body["state"]) == \
        ("package_signing", old.version + 1, "active")
    assert body["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")
    event = _last_audit(session, "keys.rotated")
    assert event.actor == "key-admin" and event.principal_id is not None

    for bad in ({"purpose": "nope"},
                {"purpose": "kek", "extra": 1}):
        response = client.post("/api/v1/keys/rotate", json=bad,
                               headers=_auth(make_token("admin")))
        assert response.status_code == 422, bad


# --- the CLI -------------------------------------------------------------------------


@pytest.fixture
def cli(session: Session, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a runner
    """``vigil keys ...`` in-process, its session being the test's (rolled back)."""
    @contextmanager
    def scope(engine=None):  # noqa: ANN001, ANN202
        yield session
        session.commit()

    monkeypatch.setattr(db, "session_scope", scope)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(keys_cli.keys_app, list(args), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return run


def test_the_cli_rotates_lists_and_rewraps(session: Session, ring: keys.FileKeyRing, store,
                                           cli) -> None:  # noqa: ANN001
    chunks = _stored_chunks(session, ring, store, 2)
    old = keys.active_key(session=session, provider=ring, purpose=KeyPurpose.KEK)
    assert f"kek rotated: version {old.version + 1} is active" in cli("rotate", "--purpose",
                                                                       "kek")
    assert _last_audit(session, "keys.rotated").actor == "cli"
    listing = cli("list")
    assert "retired" in listing and "active" in listing
    output = cli("rewrap")
    assert " left; retired KEK version(s) destroyed: none" in output
    assert keys.pending_rewrap(session=session) == 0
    for chunk in chunks:
        read_plaintext(session=session, provider=ring, store=store, chunk=chunk)

    signer = keys.active_key(session=session, provider=ring,
                             purpose=KeyPurpose.CHECKPOINT_SIGNING)
    auth_service.issue_token(session=session, principal_name="keys-admin-cli", role="admin",
                             label="test", actor="test")
    output = cli("rotate", "--purpose", "checkpoint_signing", "--as", "keys-admin-cli")
    assert "fingerprint" in output
    event = _last_audit(session, "keys.rotated")
    assert event.actor == "keys-admin-cli" and event.principal_id is not None
    assert event.detail["old_fingerprint"] == signer.fingerprint


def test_a_running_recorder_seals_under_the_rotated_kek_from_its_next_tick(
        session: Session, ring: keys.FileKeyRing) -> None:
    from recorder import service as recorder_service

    sealer = recorder_service.make_sealer(session=session, provider=ring)
    before = sealer.kek
    new = keys.rotate(session=session, provider=ring, purpose=KeyPurpose.KEK, actor="test")
    assert sealer.kek == before  # nothing changes under a chunk being sealed
    sealer.refresh(session=session)  # what the fleet loop does on every tick
    assert sealer.kek == (new.id, new.provider_ref) != before
