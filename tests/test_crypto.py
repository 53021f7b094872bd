"""Sealing, key wrapping and chains: tampering of any kind fails closed, by name."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from vigil import chain, crypto, keys
from vigil.catalog.models import KeyPurpose
from vigil.errors import IntegrityError
from vigil.settings import Settings

PLAINTEXT = os.urandom(50_000)


def sealed() -> crypto.Sealed:
    return crypto.seal(PLAINTEXT, camera_id=7, seq=42, start_us=1_790_000_000_000_000)


def test_a_sealed_chunk_opens_for_its_slot_and_hides_the_media() -> None:
    s = sealed()
    assert crypto.open_sealed(s.blob, data_key=s.data_key, slot=s.slot) == PLAINTEXT
    assert PLAINTEXT[:64] not in s.blob
    assert crypto.read_header(s.blob)["seq"] == 42


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_any_flipped_bit_fails_with_a_named_error(position: int, bit: int) -> None:
    s = sealed()
    blob = bytearray(s.blob)
    blob[position % len(blob)] ^= 1 << bit
    with pytest.raises((crypto.ChunkTampered, crypto.ChunkFormatError)):
        crypto.open_sealed(bytes(blob), data_key=s.data_key, slot=s.slot)


def test_every_byte_of_a_small_chunk_is_protected() -> None:
    s = crypto.seal(os.urandom(1500), camera_id=1, seq=0, start_us=0)
    for position in range(len(s.blob)):
        blob = bytearray(s.blob)
        blob[position] ^= 0x01
        with pytest.raises((crypto.ChunkTampered, crypto.ChunkFormatError)):
            crypto.open_sealed(bytes(blob), data_key=s.data_key, slot=s.slot)


@pytest.mark.parametrize("change", [
    {"camera_id": 8}, {"seq": 43}, {"start_us": 1_790_000_000_000_001},
    {"sha256": bytes(32)}])
def test_a_chunk_moved_into_another_slot_does_not_open(change: dict[str, object]) -> None:
    s = sealed()
    other = crypto.Slot(**{**s.slot.__dict__, **change})
    with pytest.raises(crypto.ChunkTampered, match="decryption failed"):
        crypto.open_sealed(s.blob, data_key=s.data_key, slot=other)


def test_truncation_and_foreign_objects_are_named() -> None:
    s = sealed()
    with pytest.raises(crypto.ChunkTampered):
        crypto.open_sealed(s.blob[:-1], data_key=s.data_key, slot=s.slot)
    with pytest.raises(crypto.ChunkFormatError, match="bad magic"):
        crypto.open_sealed(b"\x00\x00\x00\x18ftypisom" + PLAINTEXT, data_key=s.data_key,
                           slot=s.slot)
    with pytest.raises(crypto.ChunkFormatError, match="too short"):
        crypto.read_header(b"VG")


def test_every_chunk_gets_a_fresh_key_and_nonce() -> None:
    a, b = sealed(), sealed()
    assert a.data_key != b.data_key
    assert crypto.read_header(a.blob)["nonce"] != crypto.read_header(b.blob)["nonce"]


def test_file_key_ring_wraps_and_keeps_keys_private(tmp_path: Path) -> None:
    ring = keys.FileKeyRing(tmp_path / "keys")
    ref = ring.create(KeyPurpose.KEK, 1)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "keys" / f"{ref}.key").stat().st_mode) == 0o600
    dek = os.urandom(32)
    wrapped = ring.wrap(ref, dek)
    assert dek not in wrapped
    assert ring.unwrap(ref, wrapped) == dek
    other = ring.create(KeyPurpose.KEK, 2)
    with pytest.raises(keys.KeyUnavailable):
        ring.unwrap(other, wrapped)
    # A key file is never replaced: one left by an attempt that never committed its
    # catalog row is taken as it is.
    material = (tmp_path / "keys" / f"{ref}.key").read_bytes()
    assert ring.create(KeyPurpose.KEK, 1) == ref
    assert (tmp_path / "keys" / f"{ref}.key").read_bytes() == material
    assert ring.unwrap(ref, wrapped) == dek


def test_catalog_keeps_identities_never_material(session: Session, settings: Settings) -> None:
    # The suite's own ring: keys other tests committed to the catalog live there.
    ring = keys.file_key_ring(settings.home_dir)
    dek = os.urandom(32)
    row = keys.new_data_key(session=session, provider=ring, data_key=dek)
    assert keys.unwrap_data_key(session=session, provider=ring, data_key_id=row.id) == dek
    signer = keys.active_key(session=session, provider=ring,
                             purpose=KeyPurpose.CHECKPOINT_SIGNING)
    assert len(signer.public_key) == 32 and len(signer.fingerprint) == 64
    kek = keys.active_key(session=session, provider=ring, purpose=KeyPurpose.KEK)
    assert kek.public_key is None
    material = (settings.home_dir / "keys" / f"{kek.provider_ref}.key").read_bytes()
    assert material not in row.wrapped


def test_a_destroyed_data_key_is_a_named_error(session: Session, settings: Settings) -> None:
    from datetime import UTC, datetime

    ring = keys.file_key_ring(settings.home_dir)
    row = keys.new_data_key(session=session, provider=ring, data_key=os.urandom(32))
    row.wrapped, row.destroyed_at = None, datetime.now(UTC)
    session.flush()
    with pytest.raises(keys.KeyUnavailable, match="unrecoverable"):
        keys.unwrap_data_key(session=session, provider=ring, data_key_id=row.id)


def _links(n: int) -> list[chain.Link]:
    return [chain.Link(camera_id=1, seq=i, start_us=i * 60_000_000,
                       end_us=(i + 1) * 60_000_000, media_duration_us=60_000_000,
                       plaintext_bytes=1000 + i, sha256=os.urandom(32), clock_source="rtcp")
            for i in range(n)]


def _chained(links: list[chain.Link]) -> list[tuple[chain.Link, bytes]]:
    out, prev = [], chain.GENESIS
    for link in links:
        prev = chain.chain_hash(prev, link)
        out.append((link, prev))
    return out


def test_a_chain_verifies_and_any_change_breaks_it() -> None:
    pairs = _chained(_links(6))
    assert chain.verify_chain(pairs) == pairs[-1][1]
    altered = list(pairs)
    altered[3] = (chain.Link(**{**pairs[3][0].__dict__, "plaintext_bytes": 1}), pairs[3][1])
    for broken in (altered, pairs[:2] + pairs[3:], [pairs[1], pairs[0], *pairs[2:]]):
        with pytest.raises(chain.ChainBroken):
            chain.verify_chain(broken)


def test_checkpoints_verify_only_under_their_key() -> None:
    key = Ed25519PrivateKey.generate()
    head = _chained(_links(3))[-1]
    cp = chain.Checkpoint(camera_id=1, seq=2, chain_hash=head[1], signed_at_us=123,
                          key_fingerprint=chain.fingerprint(key.public_key()))
    sig = chain.sign_checkpoint(key, cp)
    chain.verify_checkpoint(key.public_key(), cp, sig)
    with pytest.raises(chain.CheckpointInvalid, match="does not verify"):
        chain.verify_checkpoint(key.public_key(),
                                chain.Checkpoint(**{**cp.__dict__, "seq": 3}), sig)
    other = Ed25519PrivateKey.generate()
    with pytest.raises(chain.CheckpointInvalid, match="names key"):
        chain.verify_checkpoint(other.public_key(), cp, sig)


def test_streamed_sealing_gives_the_same_format(tmp_path: Path) -> None:
    import hashlib
    import io

    plaintext = os.urandom(3 * crypto.STREAM_BLOCK_BYTES + 123)
    digest = hashlib.sha256(plaintext).digest()
    out = io.BytesIO()
    sealed = crypto.seal_stream(io.BytesIO(plaintext), out, camera_id=3, seq=9, start_us=5,
                                plaintext_sha256=digest)
    blob = out.getvalue()
    assert sealed.stored_bytes == len(blob)
    assert sealed.stored_sha256 == hashlib.sha256(blob).digest()
    assert crypto.open_sealed(blob, data_key=sealed.data_key, slot=sealed.slot) == plaintext
    out2 = io.BytesIO()  # a wrong claimed hash is caught when the chunk is opened
    lying = crypto.seal_stream(io.BytesIO(plaintext), out2, camera_id=3, seq=9, start_us=5,
                               plaintext_sha256=bytes(32))
    with pytest.raises(crypto.ChunkTampered, match="does not match its recorded SHA-256"):
        crypto.open_sealed(out2.getvalue(), data_key=lying.data_key, slot=lying.slot)


@given(sizes=st.lists(st.integers(min_value=1, max_value=3 * crypto.STREAM_BLOCK_BYTES),
                     min_size=1, max_size=8))
@settings(max_examples=25, deadline=None)
def test_a_sealing_reader_read_in_any_sizes_gives_an_object_that_opens(
        sizes: list[int]) -> None:
    plaintext = os.urandom(2 * crypto.STREAM_BLOCK_BYTES + 77)
    reader = crypto.SealingReader(io.BytesIO(plaintext), camera_id=0, seq=0, start_us=0,
                                  plaintext_sha256=hashlib.sha256(plaintext).digest(),
                                  plaintext_bytes=len(plaintext))
    parts, turn = [], 0
    while part := reader.read(sizes[turn % len(sizes)]):
        assert len(part) <= sizes[turn % len(sizes)]
        parts.append(part)
        turn += 1
    blob = b"".join(parts)
    assert len(blob) == reader.size
    sealed = reader.sealed(stored_sha256=hashlib.sha256(blob).digest())
    assert crypto.open_sealed(blob, data_key=sealed.data_key, slot=sealed.slot) == plaintext


def test_a_sealing_reader_refuses_a_plaintext_of_another_length() -> None:
    plaintext = os.urandom(1000)
    reader = crypto.SealingReader(io.BytesIO(plaintext), camera_id=0, seq=0, start_us=0,
                                  plaintext_sha256=hashlib.sha256(plaintext).digest(),
                                  plaintext_bytes=1001)
    with pytest.raises(IntegrityError, match="1000 bytes, not the 1001 announced"):
        reader.read()
    with pytest.raises(RuntimeError, match="not been read to its end"):
        reader.sealed(stored_sha256=bytes(32))


def test_a_sealed_file_opens_streamed_and_a_flipped_byte_leaves_no_plaintext(
        tmp_path: Path) -> None:
    data = os.urandom(3 * crypto.STREAM_BLOCK_BYTES + 123)  # several blocks, a ragged end
    sealed_path, plain = tmp_path / "sealed", tmp_path / "plain"
    with open(sealed_path, "wb") as dst:
        sealed = crypto.seal_stream(io.BytesIO(data), dst, camera_id=0, seq=0, start_us=0,
                                    plaintext_sha256=hashlib.sha256(data).digest())
    crypto.open_sealed_file(sealed_path, plain, data_key=sealed.data_key, slot=sealed.slot)
    assert plain.read_bytes() == data

    for offset in (10, len(data) // 2, sealed_path.stat().st_size - 1):  # header, body, tag
        blob = bytearray(sealed_path.read_bytes())
        blob[offset] ^= 0x01
        tampered = tmp_path / f"tampered-{offset}"
        tampered.write_bytes(blob)
        with pytest.raises((crypto.ChunkTampered, crypto.ChunkFormatError)):
            crypto.open_sealed_file(tampered, tmp_path / "out", data_key=sealed.data_key,
                                    slot=sealed.slot)
        assert list(tmp_path.glob("out*")) == []  # no plaintext, not even partial
