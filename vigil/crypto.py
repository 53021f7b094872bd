"""Sealing chunks: AES-256-GCM under a fresh data key, bound to the chunk's slot.

A sealed chunk object is::

    b"VGLC"  | u8 format version (1) | u32 big-endian header length | header | ct+tag

The header is canonical JSON (``camera_id``, ``seq``, ``start_us``, ``sha256`` of the
plaintext, ``nonce``), readable without keys so that a scrub or a recovery can tell
what an object claims to be. It is *not* trusted: to open a chunk the caller states
the slot the catalog says it fills, and the associated data is that slot followed by
the header's exact bytes. A chunk copied into another camera's or another time's
slot, or whose header was edited, therefore fails authentication, as does any
changed byte anywhere in the object.

Data keys are wrapped with RFC 3394 AES key wrap under a key-encryption key
(``vigil/keys.py``); the wrapped key lives only in the catalog, never in the object.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vigil.errors import IntegrityError

MAGIC: Final = b"VGLC"
FORMAT_VERSION: Final = 1
DATA_KEY_BYTES: Final = 32  # AES-256
NONCE_BYTES: Final = 12  # GCM's standard nonce; a fresh key per chunk makes reuse moot
# A header is a few hundred bytes; anything larger is not ours.
MAX_HEADER_BYTES: Final = 4096
TAG_BYTES: Final = 16
# Streaming sealing reads and writes this much at a time: memory stays flat whatever
# the chunk's size (a 60 s chunk of a 4 Mbit/s camera is 30 MB).
STREAM_BLOCK_BYTES: Final = 1 << 20
_PREFIX = struct.Struct(">4sBI")
_AAD_DOMAIN: Final = b"vigil-chunk-v1\x00"


class ChunkFormatError(IntegrityError):
    """The object is not a sealed Vigil chunk (bad magic, version or header)."""

    code = "chunk_format_error"


class ChunkTampered(IntegrityError):
    """Authentication failed: the object was altered, truncated, or is in the wrong slot."""

    code = "chunk_tampered"


@dataclass(frozen=True)
class Slot:
    """Where a chunk belongs: what the associated data binds it to."""

    camera_id: int
    seq: int
    start_us: int  # wall-clock start, microseconds since the Unix epoch, UTC
    sha256: bytes  # of the plaintext

    def aad(self) -> bytes:
        return _AAD_DOMAIN + canonical({"camera_id": self.camera_id, "seq": self.seq,
                                         "start_us": self.start_us,
                                         "sha256": self.sha256.hex()})

    def describe(self) -> str:
        return f"camera {self.camera_id} seq {self.seq}"


@dataclass(frozen=True)
class Sealed:
    blob: bytes  # the object's bytes
    data_key: bytes  # plaintext data key: wrap it, store it wrapped, then forget it
    slot: Slot


def canonical(value: object) -> bytes:
    """Canonical JSON (keys sorted, no whitespace, ASCII): the encoding every signed or
    authenticated structure uses (docs/design/chain.md)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def seal(plaintext: bytes, *, camera_id: int, seq: int, start_us: int) -> Sealed:
    """Encrypt one chunk in memory under a fresh random data key (``seal_stream``)."""
    out = io.BytesIO()
    sealed = seal_stream(io.BytesIO(plaintext), out, camera_id=camera_id, seq=seq,
                         start_us=start_us, plaintext_sha256=hashlib.sha256(plaintext).digest())
    return Sealed(blob=out.getvalue(), data_key=sealed.data_key, slot=sealed.slot)


@dataclass(frozen=True)
class SealedFile:
    data_key: bytes  # plaintext data key: wrap it, store it wrapped, then forget it
    slot: Slot
    stored_bytes: int
    stored_sha256: bytes  # of the object's bytes, as the object store must return them


def sha256_of(src: BinaryIO) -> bytes:
    digest = hashlib.sha256()
    while block := src.read(STREAM_BLOCK_BYTES):
        digest.update(block)
    return digest.digest()


def seal_stream(src: BinaryIO, dst: BinaryIO, *, camera_id: int, seq: int, start_us: int,
                plaintext_sha256: bytes) -> SealedFile:
    """``seal`` from a file to a file in fixed-size blocks; the same object format.

    ``plaintext_sha256`` must be the hash of what ``src`` yields (it is bound into the
    associated data before any byte is encrypted; ``open_sealed`` re-checks it).
    """
    reader = SealingReader(src, camera_id=camera_id, seq=seq, start_us=start_us,
                           plaintext_sha256=plaintext_sha256)
    stored = hashlib.sha256()
    while block := reader.read(STREAM_BLOCK_BYTES):
        dst.write(block)
        stored.update(block)
    return reader.sealed(stored_sha256=stored.digest())


class SealingReader:
    """The sealed object, encrypted as it is read: what ``seal_stream`` writes, for a
    consumer that pulls (an upload), so that no sealed copy is written anywhere.

    ``plaintext_bytes``, when given, is checked against what ``src`` yields and makes
    ``size`` (the object's length) known before the first read, as an upload of known
    length needs. ``sealed()`` gives the result once everything has been read, with the
    hash of the object's bytes that whoever read them computed.
    """

    def __init__(self, src: BinaryIO, *, camera_id: int, seq: int, start_us: int,
                 plaintext_sha256: bytes, plaintext_bytes: int | None = None) -> None:
        self._src = src
        self._slot = Slot(camera_id=camera_id, seq=seq, start_us=start_us,
                          sha256=plaintext_sha256)
        self._data_key = AESGCM.generate_key(bit_length=DATA_KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        header = canonical({"camera_id": camera_id, "seq": seq, "start_us": start_us,
                             "sha256": plaintext_sha256.hex(), "nonce": nonce.hex()})
        self._encryptor = Cipher(algorithms.AES(self._data_key), modes.GCM(nonce)).encryptor()
        self._encryptor.authenticate_additional_data(self._slot.aad() + header)
        self._pending = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)) + header
        self._overhead = len(self._pending) + TAG_BYTES
        self._expected = plaintext_bytes
        self._plaintext = 0
        self._done = False
        self.size = None if plaintext_bytes is None else plaintext_bytes + self._overhead

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        out = bytearray()
        while len(out) < n:
            if self._pending:
                take = self._pending[:n - len(out)]
                self._pending = self._pending[len(take):]
                out += take
                continue
            if self._done:
                break
            block = self._src.read(min(max(n - len(out), 1), STREAM_BLOCK_BYTES))
            if block:
                self._plaintext += len(block)
                self._pending = self._encryptor.update(block)
                continue
            if self._expected is not None and self._plaintext != self._expected:
                raise IntegrityError(f"the plaintext was {self._plaintext} bytes, not the "
                                     f"{self._expected} announced")
            self._pending = self._encryptor.finalize() + self._encryptor.tag
            self._done = True
        return bytes(out)

    def sealed(self, *, stored_sha256: bytes) -> SealedFile:
        if not self._done or self._pending:
            raise RuntimeError("the sealed object has not been read to its end")
        return SealedFile(data_key=self._data_key, slot=self._slot,
                          stored_bytes=self._plaintext + self._overhead,
                          stored_sha256=stored_sha256)


def read_header(blob: bytes) -> dict[str, object]:
    """The header an object claims (untrusted). Raises ChunkFormatError."""
    if len(blob) < _PREFIX.size:
        raise ChunkFormatError(f"object of {len(blob)} bytes is too short to be a chunk")
    magic, version, header_len = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise ChunkFormatError("object is not a sealed Vigil chunk (bad magic)")
    if version != FORMAT_VERSION:
        raise ChunkFormatError(f"unsupported chunk format version {version}")
    if header_len > MAX_HEADER_BYTES or _PREFIX.size + header_len > len(blob):
        raise ChunkFormatError("chunk header length is out of bounds (truncated object?)")
    try:
        header = json.loads(blob[_PREFIX.size:_PREFIX.size + header_len])
    except ValueError as exc:
        raise ChunkFormatError("chunk header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise ChunkFormatError("chunk header is not an object")
    return header


def _nonce_of(header: dict[str, object]) -> bytes:
    try:
        nonce = bytes.fromhex(str(header["nonce"]))
    except (KeyError, ValueError) as exc:
        raise ChunkFormatError("chunk header has no valid nonce") from exc
    if len(nonce) != NONCE_BYTES:
        raise ChunkFormatError("chunk header has no valid nonce")
    return nonce


def open_sealed(blob: bytes, *, data_key: bytes, slot: Slot) -> bytes:
    """Decrypt a chunk for the slot the catalog says it fills; fail closed.

    Raises ChunkFormatError for an object that is not a chunk, and ChunkTampered when
    authentication fails or the plaintext's hash is not the slot's.
    """
    nonce = _nonce_of(read_header(blob))
    _, _, header_len = _PREFIX.unpack_from(blob)
    header_bytes = blob[_PREFIX.size:_PREFIX.size + header_len]
    ciphertext = blob[_PREFIX.size + header_len:]
    try:
        plaintext = AESGCM(data_key).decrypt(nonce, ciphertext, slot.aad() + header_bytes)
    except InvalidTag:
        raise ChunkTampered(
            f"chunk {slot.describe()}: decryption failed; the object was altered or "
            "truncated, or it belongs to another camera, sequence number or time") from None
    if hashlib.sha256(plaintext).digest() != slot.sha256:
        raise ChunkTampered(f"chunk {slot.describe()}: plaintext does not match its "
                            "recorded SHA-256")
    return plaintext


def open_sealed_file(src: Path, dst: Path, *, data_key: bytes, slot: Slot) -> None:
    """``open_sealed`` from a file to a file in fixed-size blocks, for objects too big
    for memory (packages). ``dst`` exists only if every check passed: plaintext goes
    to a temporary name, renamed once the tag and the hash verified."""
    size = src.stat().st_size
    with open(src, "rb") as f:
        head = f.read(_PREFIX.size + MAX_HEADER_BYTES)
        nonce = _nonce_of(read_header(head))
        _, _, header_len = _PREFIX.unpack_from(head)
        body_start = _PREFIX.size + header_len
        remaining = size - body_start - TAG_BYTES
        if remaining < 0:
            raise ChunkFormatError("object is truncated")
        decryptor = Cipher(algorithms.AES(data_key), modes.GCM(nonce)).decryptor()
        decryptor.authenticate_additional_data(slot.aad() + head[_PREFIX.size:body_start])
        digest = hashlib.sha256()
        tmp = dst.with_name(dst.name + ".part")
        try:
            with open(tmp, "wb") as out:
                f.seek(body_start)
                while remaining > 0:
                    block = f.read(min(STREAM_BLOCK_BYTES, remaining))
                    if not block:
                        raise ChunkFormatError("object is truncated")
                    remaining -= len(block)
                    plain = decryptor.update(block)
                    digest.update(plain)
                    out.write(plain)
                try:
                    decryptor.finalize_with_tag(f.read(TAG_BYTES))
                except (InvalidTag, ValueError):
                    raise ChunkTampered(
                        f"{slot.describe()}: decryption failed; the object was altered or "
                        "truncated, or it belongs elsewhere") from None
            if digest.digest() != slot.sha256:
                raise ChunkTampered(f"{slot.describe()}: plaintext does not match its "
                                    "recorded SHA-256")
            tmp.replace(dst)
        finally:
            tmp.unlink(missing_ok=True)
