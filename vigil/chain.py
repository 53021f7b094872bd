"""Per-camera hash chains and signed checkpoints: pure functions, no I/O.

A chunk's chain hash is ``SHA-256(domain || previous chain hash || canonical link)``,
where the link is the chunk's metadata and its plaintext SHA-256; the first link of
a camera follows ``GENESIS``. Changing, removing, inserting or reordering any chunk
changes every chain hash after it. A checkpoint is an Ed25519 signature over a
camera's chain head (seq and chain hash) at a moment: with the recorder's public key,
it proves that the chain, and so every chunk in it, existed as recorded by then,
without trusting the database.

The canonical encodings here are part of the evidence package format: an auditor's
tool recomputes them offline (docs/design/chain.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from vigil.crypto import canonical
from vigil.errors import IntegrityError

GENESIS: Final = bytes(32)
_LINK_DOMAIN: Final = b"vigil-chain-v1\x00"
_CHECKPOINT_DOMAIN: Final = b"vigil-checkpoint-v1\x00"


class ChainBroken(IntegrityError):
    """A chain hash does not follow from its predecessor and its chunk."""

    code = "chain_broken"


class CheckpointInvalid(IntegrityError):
    """A checkpoint's signature does not verify under the given key."""

    code = "checkpoint_invalid"


@dataclass(frozen=True)
class Link:
    """What a chain hash covers, besides the previous chain hash."""

    camera_id: int
    seq: int
    start_us: int
    end_us: int
    media_duration_us: int
    plaintext_bytes: int
    sha256: bytes
    clock_source: str

    def canonical(self) -> bytes:
        fields = asdict(self)
        fields["sha256"] = self.sha256.hex()
        return canonical(fields)


def chain_hash(prev: bytes, link: Link) -> bytes:
    if len(prev) != 32:
        raise ValueError("a chain hash is 32 bytes")
    return hashlib.sha256(_LINK_DOMAIN + prev + link.canonical()).digest()


def verify_chain(links: Iterable[tuple[Link, bytes]], *, prev: bytes = GENESIS) -> bytes:
    """Check ``(link, recorded chain hash)`` pairs in order; return the last hash.

    Raises ChainBroken at the first pair whose hash does not follow.
    """
    for link, recorded in links:
        expected = chain_hash(prev, link)
        if recorded != expected:
            raise ChainBroken(f"camera {link.camera_id} seq {link.seq}: chain hash does not "
                              "follow from the previous chunk (a chunk was altered, "
                              "removed, inserted or reordered)")
        prev = recorded
    return prev


@dataclass(frozen=True)
class Checkpoint:
    camera_id: int
    seq: int  # the head's sequence number
    chain_hash: bytes
    signed_at_us: int
    key_fingerprint: str  # sha256 of the raw public key, hex

    def message(self) -> bytes:
        fields = asdict(self)
        fields["chain_hash"] = self.chain_hash.hex()
        return _CHECKPOINT_DOMAIN + canonical(fields)


def fingerprint(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def sign_checkpoint(key: Ed25519PrivateKey, checkpoint: Checkpoint) -> bytes:
    if checkpoint.key_fingerprint != fingerprint(key.public_key()):
        raise ValueError("the checkpoint names another key's fingerprint")
    return key.sign(checkpoint.message())


def verify_checkpoint(public_key: Ed25519PublicKey, checkpoint: Checkpoint,
                      signature: bytes) -> None:
    """Raise CheckpointInvalid unless ``signature`` is the key's over ``checkpoint``."""
    if checkpoint.key_fingerprint != fingerprint(public_key):
        raise CheckpointInvalid(f"checkpoint of camera {checkpoint.camera_id} seq "
                                f"{checkpoint.seq} names key {checkpoint.key_fingerprint[:16]}…"
                                ", not the key given")
    try:
        public_key.verify(signature, checkpoint.message())
    except InvalidSignature:
        raise CheckpointInvalid(f"checkpoint of camera {checkpoint.camera_id} seq "
                                f"{checkpoint.seq}: signature does not verify") from None
