"""Evidence packages: one BagIt bag in a zip, signed (docs/design/package.md).

``build_package`` writes the zip directly, with no bag directory on disk: each
payload file is streamed into its entry and hashed as it goes (one read per file),
then the tag files, built from those hashes, and the signature over the tag manifest.

Procedure:

1. Check the inputs: the export id and every payload name are safe relative names of
   the restricted alphabet below (no ``..``, no absolute path, no character a manifest
   would have to percent-encode), names are unique, the caller's ``bag-info.txt``
   labels are exactly the four it owns, custody lines are single lines.
2. Open a temporary file next to ``out`` (created exclusively, mode 0600: the
   package holds decrypted footage).
3. Payload, in manifest order (sorted by path): stream each file into a stored entry
   while computing its SHA-256 and size; a file whose SHA-256 the caller gave must
   have it (``PackageIntegrityError`` otherwise).
4. Tag files, deflated, in the doc's order: ``bagit.txt``, ``bag-info.txt``,
   ``manifest-sha256.txt``, ``tagmanifest-sha256.txt``, ``evidence.json``,
   ``custody.jsonl``; then ``signature/``: the Ed25519 signature over the tag
   manifest's bytes, the public key (SubjectPublicKeyInfo PEM), and the RFC 3161 token
   when ``timestamp_token`` returns one.
5. Close the zip, hash the finished zip once (while ``check``, when given, reads it
   on a second thread), rename it to ``out``. Any failure removes the temporary file.
   Nothing is fsync'ed: the zip is a working file that the export seals and stores,
   and an export interrupted before storing runs again from the chunks.

Determinism: every entry has the packaging time as its timestamp (the zip's two-second
resolution, UTC), mode 0644, the Unix "made by" system, a fixed compression level and
a fixed place, and zip64 is used exactly when an entry's size calls for it. The same
inputs therefore give the same bytes.

Caveats:

* Entry order is payload first, then tag files, then ``signature/``. The doc lists the
  tag files first, but their content (the manifest's hashes) exists only once the
  payload has been read, and payload files are read once; listing them first would
  take a second read of every payload file or rewriting the zip's directory out of
  write order.
* The zip is read once more after it is written, for its SHA-256: zipfile rewrites
  each entry's local header after its data, so the hash cannot be taken on the way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from vigil.chain import fingerprint
from vigil.errors import IntegrityError, InvalidInput

FORMAT_VERSION: Final = 1
BAG_DIR_PREFIX: Final = "vigil-export-"
BAGIT_TXT: Final = "bagit.txt"
BAG_INFO_TXT: Final = "bag-info.txt"
MANIFEST: Final = "manifest-sha256.txt"
TAGMANIFEST: Final = "tagmanifest-sha256.txt"
EVIDENCE_JSON: Final = "evidence.json"
CUSTODY_JSONL: Final = "custody.jsonl"
SIGNATURE: Final = "signature/tagmanifest-sha256.txt.sig"
SIGNING_KEY_PEM: Final = "signature/package-signing-key.pem"
TIMESTAMP_TSR: Final = "signature/tagmanifest-sha256.txt.tsr"
PAYLOAD_DIR: Final = "data"
# The tag files the tag manifest covers, in the doc's order (the zip's order too).
TAG_FILES: Final = (BAGIT_TXT, BAG_INFO_TXT, MANIFEST, EVIDENCE_JSON, CUSTODY_JSONL)
SIGNATURE_FILES: Final = (SIGNATURE, SIGNING_KEY_PEM, TIMESTAMP_TSR)

BAGIT_TXT_BYTES: Final = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
# bag-info.txt labels in the doc's order; the caller gives the ones marked True.
BAG_INFO_LABELS: Final = (
    ("Source-Organization", True),
    ("External-Identifier", False),
    ("External-Description", True),
    ("Bagging-Date", False),
    ("Payload-Oxum", False),
    ("Bag-Software-Agent", True),
    ("Vigil-Case", True),
    ("Vigil-Signing-Key-Fingerprint", False),
)
CALLER_LABELS: Final = frozenset(label for label, given in BAG_INFO_LABELS if given)

# Names are kept to an alphabet that needs no escaping anywhere: not in a manifest
# (RFC 8493 percent-encodes CR, LF and %), not for sha256sum (which escapes "\" and
# newlines), not in a zip, not on any file system.
SAFE_SEGMENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# Payload files are copied in blocks of this size: memory stays flat for any size.
COPY_BLOCK_BYTES: Final = 1 << 20
# Fixed so that the same text deflates to the same bytes.
DEFLATE_LEVEL: Final = 9
ENTRY_MODE: Final = 0o644
ZIP_MADE_BY_UNIX: Final = 3
# Progress is reported in steps of at least this fraction, not once per block.
PROGRESS_STEP: Final = 0.01


class PackageIntegrityError(IntegrityError):
    """A payload file's bytes are not those the caller said they are."""

    code = "package_integrity_error"


@dataclass(frozen=True)
class PayloadFile:
    name: str  # path under data/, e.g. "camera-3/originals/0000000042.mov"
    path: Path  # local file
    sha256: str | None = None  # hex, when the caller already knows it (verified on copy)


@dataclass(frozen=True)
class PackageResult:
    path: Path
    bytes: int
    sha256: str  # of the zip, hex
    tagmanifest_sha256: str  # hex


@dataclass(frozen=True)
class _Copied:
    name: str  # path inside the bag: "data/..."
    sha256: str
    size_bytes: int


def build_package(*, out: Path, export_id: str, bag_info: Mapping[str, str],
                  evidence: Mapping[str, Any], custody_lines: Sequence[str],
                  files: Sequence[PayloadFile], signing_key: Ed25519PrivateKey,
                  packaged_at: datetime,
                  timestamp_token: Callable[[bytes], bytes | None] | None = None,
                  on_progress: Callable[[float], None] | None = None,
                  check: Callable[[Path], None] | None = None) -> PackageResult:
    """Write the evidence package to ``out`` (see the module's procedure).

    Raises ``InvalidInput`` for inputs the format cannot hold and
    ``PackageIntegrityError`` when a payload file does not have the SHA-256 given
    for it; ``out`` is then left as it was. ``check`` is run on the finished zip on a
    second thread while this one hashes it, before it becomes ``out``; what it raises
    leaves ``out`` as it was too.

    The zip is not fsync'ed: it is a working file that the caller seals and stores (a
    crash before that runs the export again from the chunks).
    """
    check_name(export_id, what="export id")
    if packaged_at.tzinfo is None or packaged_at.utcoffset() is None:
        raise InvalidInput("packaged_at must carry a UTC offset")
    packaged_at = packaged_at.astimezone(UTC)
    payload = sorted(files, key=lambda f: f.name)
    check_payload_names([f.name for f in payload])
    check_bag_info(bag_info)
    custody = custody_bytes(custody_lines)
    evidence_json = evidence_bytes(evidence)

    bag = f"{BAG_DIR_PREFIX}{export_id}/"
    stamp = zip_timestamp(packaged_at)
    progress = _Progress(on_progress, total=sum(f.path.stat().st_size for f in payload))
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as raw:
            with zipfile.ZipFile(raw, "w", allowZip64=True) as zf:
                copied = [_copy_payload(zf, f, bag=bag, stamp=stamp, progress=progress)
                          for f in payload]
                manifest = manifest_bytes((c.name, c.sha256) for c in copied)
                info = bag_info_bytes(
                    bag_info, export_id=export_id, packaged_at=packaged_at,
                    payload_bytes=sum(c.size_bytes for c in copied),
                    payload_files=len(copied),
                    key_fingerprint=fingerprint(signing_key.public_key()))
                tags = {BAGIT_TXT: BAGIT_TXT_BYTES, BAG_INFO_TXT: info, MANIFEST: manifest,
                        EVIDENCE_JSON: evidence_json, CUSTODY_JSONL: custody}
                tagmanifest = manifest_bytes(
                    (name, hashlib.sha256(data).hexdigest()) for name, data in tags.items())
                for name in (BAGIT_TXT, BAG_INFO_TXT, MANIFEST):
                    _write_small(zf, bag + name, tags[name], stamp)
                _write_small(zf, bag + TAGMANIFEST, tagmanifest, stamp)
                for name in (EVIDENCE_JSON, CUSTODY_JSONL):
                    _write_small(zf, bag + name, tags[name], stamp)
                _write_small(zf, bag + SIGNATURE, signing_key.sign(tagmanifest), stamp,
                            compress=False)
                _write_small(zf, bag + SIGNING_KEY_PEM, public_key_pem(signing_key), stamp)
                token = timestamp_token(tagmanifest) if timestamp_token is not None else None
                if token is not None:
                    _write_small(zf, bag + TIMESTAMP_TSR, token, stamp, compress=False)
        if check is None:
            size, digest = _hash_file(tmp)
        else:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-check") as pool:
                checked = pool.submit(check, tmp)
                size, digest = _hash_file(tmp)
                checked.result()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    progress.finished()
    return PackageResult(path=out, bytes=size, sha256=digest,
                         tagmanifest_sha256=hashlib.sha256(tagmanifest).hexdigest())


# --- the tag files (pure) -----------------------------------------------------------


def check_name(name: str, *, what: str) -> None:
    """One path segment of the safe alphabet."""
    if not SAFE_SEGMENT.fullmatch(name):
        raise InvalidInput(f"{what} {name!r} is not a safe name (letters, digits, '.', "
                           "'_' and '-', not starting with '.' or '-')")


def check_payload_names(names: Sequence[str]) -> None:
    seen: set[str] = set()
    directories: set[str] = set()
    for name in names:
        segments = name.split("/")
        for segment in segments:
            check_name(segment, what=f"payload path {name!r}: segment")
        key = name.casefold()
        if key in seen:
            raise InvalidInput(f"payload path {name!r} is given twice (or differs from "
                               "another only in case)")
        seen.add(key)
        directories.update("/".join(segments[:i]).casefold() for i in range(1, len(segments)))
    # A file and a directory of one name cannot both exist once extracted.
    if clash := seen & directories:
        raise InvalidInput(f"payload path {sorted(clash)[0]!r} is also a directory")


def check_bag_info(bag_info: Mapping[str, str]) -> None:
    given = set(bag_info)
    if given != CALLER_LABELS:
        missing, extra = sorted(CALLER_LABELS - given), sorted(given - CALLER_LABELS)
        raise InvalidInput(f"bag-info.txt labels: missing {missing}, not allowed {extra} "
                           f"(the caller gives exactly {sorted(CALLER_LABELS)})")
    for label, value in bag_info.items():
        if not value or "\n" in value or "\r" in value or value != value.strip():
            raise InvalidInput(f"bag-info.txt {label}: a value is one non-empty line "
                               "without surrounding spaces")


def bag_info_bytes(bag_info: Mapping[str, str], *, export_id: str, packaged_at: datetime,
                   payload_bytes: int, payload_files: int, key_fingerprint: str) -> bytes:
    values = {**bag_info,
              "External-Identifier": export_id,
              "Bagging-Date": packaged_at.astimezone(UTC).date().isoformat(),
              "Payload-Oxum": f"{payload_bytes}.{payload_files}",
              "Vigil-Signing-Key-Fingerprint": key_fingerprint}
    return "".join(f"{label}: {values[label]}\n" for label, _ in BAG_INFO_LABELS).encode()


def manifest_bytes(entries: Iterable[tuple[str, str]]) -> bytes:
    """``"<sha256 hex>  <path>"`` lines sorted by path, from (path, hex) pairs."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(entries)).encode()


def evidence_bytes(evidence: Mapping[str, Any]) -> bytes:
    try:
        text = json.dumps(evidence, sort_keys=True, indent=2, ensure_ascii=False,
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"evidence is not JSON: {exc}") from None
    return (text + "\n").encode()


def custody_bytes(lines: Sequence[str]) -> bytes:
    for number, line in enumerate(lines, start=1):
        if "\n" in line or "\r" in line:
            raise InvalidInput(f"custody line {number} is not a single line")
    return "".join(line + "\n" for line in lines).encode()


def public_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def zip_timestamp(at: datetime) -> tuple[int, int, int, int, int, int]:
    at = at.astimezone(UTC)
    if at.year < 1980:
        raise InvalidInput("a zip cannot hold a time before 1980")
    return (at.year, at.month, at.day, at.hour, at.minute, at.second)


# --- writing ------------------------------------------------------------------------


def _entry(name: str, stamp: tuple[int, int, int, int, int, int], *, size: int,
           compress: bool) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=stamp)
    info.create_system = ZIP_MADE_BY_UNIX
    info.external_attr = (stat.S_IFREG | ENTRY_MODE) << 16
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    info.file_size = size  # decides zip64 before the first byte is written
    return info


def _write_small(zf: zipfile.ZipFile, name: str, data: bytes,
                stamp: tuple[int, int, int, int, int, int], *, compress: bool = True) -> None:
    info = _entry(name, stamp, size=len(data), compress=compress)
    zf.writestr(info, data, compresslevel=DEFLATE_LEVEL if compress else None)


def _copy_payload(zf: zipfile.ZipFile, item: PayloadFile, *, bag: str,
                  stamp: tuple[int, int, int, int, int, int], progress: _Progress) -> _Copied:
    """Stream one payload file into a stored entry, hashing it on the way."""
    name = f"{PAYLOAD_DIR}/{item.name}"
    digest = hashlib.sha256()
    size = 0
    with item.path.open("rb") as src:
        info = _entry(bag + name, stamp, size=os.fstat(src.fileno()).st_size, compress=False)
        with zf.open(info, "w") as dst:
            while block := src.read(COPY_BLOCK_BYTES):
                digest.update(block)
                dst.write(block)
                size += len(block)
                progress.advance(len(block))
    actual = digest.hexdigest()
    if item.sha256 is not None and item.sha256.lower() != actual:
        raise PackageIntegrityError(f"payload file {name} ({item.path}) has SHA-256 "
                                    f"{actual}, not the {item.sha256} recorded for it")
    return _Copied(name=name, sha256=actual, size_bytes=size)


def _hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        block: bytes
        while block := f.read(COPY_BLOCK_BYTES):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


class _Progress:
    """Reports the share of payload bytes copied, in [0, 1]."""

    def __init__(self, callback: Callable[[float], None] | None, *, total: int) -> None:
        self._callback = callback
        self._total = total
        self._done = 0
        self._last = 0.0

    def advance(self, n: int) -> None:
        self._done += n
        if self._callback is None or self._total <= 0:
            return
        fraction = min(1.0, self._done / self._total)
        if fraction >= self._last + PROGRESS_STEP and fraction < 1.0:
            self._last = fraction
            self._callback(fraction)

    def finished(self) -> None:
        if self._callback is not None:
            self._callback(1.0)

