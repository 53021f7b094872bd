"""Offline verification of an evidence package (``vigil verify``; docs/design/package.md).

No server, network or database: the package, the standard library, ``cryptography``
and Vigil's pure encodings (``vigil.chain``, ``vigil.custody``, ``vigil.crypto``) are
enough, plus ``retrieval.clip`` to re-stitch the clip and ``retrieval.timestamp``'s
reader (``asn1crypto``) for an RFC 3161 timestamp. Members are read straight from
the zip, never extracted by their own names; each is read once.

Checklist (every failure is collected and named by file and check, except that an
unsafe zip stops everything after step 1):

1. ``zip.safe``: no absolute or ``..`` path, no link or other special file, no
   duplicate, no encrypted member or unknown compression; entries, total size and
   each deflated entry's ratio within ``Limits``.
2. ``bag.structure``: one ``vigil-export-<id>/`` directory holding well-formed
   ``bagit.txt``, ``bag-info.txt`` (format 1's labels, in order) and both manifests
   (lines ``<sha256>  <path>``, sorted, unique), and nothing the format does not name.
3. Read the tag files and the signature files (bounded), then stream every payload
   file once: its SHA-256 and size; the originals and clips that step 12 needs are
   copied on the way into numbered folders of a private temporary directory (never
   to a path the zip names).
4. ``bag.manifest``: every payload file listed, every listed file present, every
   SHA-256 equal; ``Payload-Oxum`` equal.
5. ``bag.tagmanifest``: the five tag files listed and equal.
6. ``signature.package``: the embedded key (its PEM exactly the canonical one), whose
   fingerprint is ``bag-info.txt``'s, verifies the signature over the tag manifest.
7. ``signature.trusted``: with trusted keys, the embedded key is one of them.
7a. ``signature.timestamp``: if the package holds an RFC 3161 timestamp
    (``signature/tagmanifest-sha256.txt.tsr``), it parses as a ``TimeStampResp`` with
    a granted status (or as a bare token) holding a SignedData ``TSTInfo``, whose
    message imprint is the SHA-256 of ``tagmanifest-sha256.txt``'s bytes; its genTime
    goes into the report's notes. A package without one is not failed (the TSA is
    optional).
8. ``evidence.schema``: ``evidence.json`` has the fields of format 1 with their types,
   agrees with ``bag-info.txt``, names every payload file and only files the package
   holds, and each item's gaps are exactly the stretches of its range that no chunk
   covers.
9. ``chunk.hash``: each original's SHA-256 and size are the recorded ones.
10. ``chain.link``: from ``chain_prev``, through ``chunks[]`` (their SHA-256 and size
    as re-computed from the files) and ``chain_tail[]``, every chain hash follows and
    seqs are consecutive.
11. ``chain.checkpoint``: the chain so computed reaches the checkpoint's seq and chain
    hash, and the checkpoint's signature verifies under the listed recorder key of
    its fingerprint. An item without a checkpoint FAILS: an export is packaged only
    once a signed checkpoint covers its chunks, so a package without one proves less
    than the format promises and is not accepted.
12. ``clip.restitch``: stitching the originals again gives the clip, packet for
    packet (only from members whose manifest hashes checked; skipped with a note when
    ``restitch`` is false). Stored members are read where they lie in the zip
    (``stored_extent``, FFmpeg's ``subfile`` protocol): a second thread stitches them
    again while the first hashes the members and then reads the clip's packets; the
    verdict counts only for members whose hashes checked. Other members are
    re-stitched afterwards, from copies made while hashing them.
13. ``custody.link``: every custody event parses in canonical form, follows the one
    before it from the case's first event and re-computes its hash; all are of the
    package's case; the last is this export's ``export_packaged`` event.

Caveats:

* Trust comes from outside: anyone can build a package that passes every check with
  keys of their own. ``signature.trusted`` (a package key obtained out of band) and
  the recorder keys' fingerprints are what tie a package to Vigil; without a trusted
  key the report says so in a note.
* The RFC 3161 timestamp's own signature (the TSA's CMS signature and its
  certificate chain) is not verified here: ``cryptography`` has no CMS verifier, and
  trusting a TSA takes its CA certificate, which the auditor chooses. Step 7a checks
  what the token says, not who said it; the note it leaves gives the
  ``openssl ts -verify`` command that checks the rest.
* zipfile reads the whole central directory before step 1 can count its entries;
  the entry limit bounds the work after that, not the directory's parse.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)

from retrieval import package, timestamp
from retrieval.package import (
    BAG_DIR_PREFIX,
    BAG_INFO_TXT,
    BAGIT_TXT,
    BAGIT_TXT_BYTES,
    CUSTODY_JSONL,
    EVIDENCE_JSON,
    MANIFEST,
    SIGNATURE,
    SIGNING_KEY_PEM,
    TAG_FILES,
    TAGMANIFEST,
    TIMESTAMP_TSR,
)
from vigil import chain, custody
from vigil.errors import IntegrityError, InvalidInput

CHECKS: Final = ("zip.safe", "bag.structure", "bag.manifest", "bag.tagmanifest",
                 "signature.package", "signature.trusted", "signature.timestamp",
                 "evidence.schema", "chunk.hash", "chain.link", "chain.checkpoint",
                 "clip.restitch", "custody.link")

# The format (docs/design/package.md; retrieval/package.py writes it).
EVIDENCE_FORMAT: Final = "vigil-evidence/1"
SMALL_FILES: Final = (*TAG_FILES, TAGMANIFEST, SIGNATURE, SIGNING_KEY_PEM, TIMESTAMP_TSR)
BAG_INFO_LABELS: Final = tuple(label for label, _given in package.BAG_INFO_LABELS)
PACKAGED_ACTION: Final = "export_packaged"
# A camera's first chunk is seq 0, the one whose chain_prev is GENESIS (the recorder
# starts from a tip of -1: recorder.service.Tip; the catalog checks seq >= 0).
FIRST_CHUNK_SEQ: Final = 0
# Integers in evidence.json (times in µs, sizes, seqs) are the catalog's bigints, and
# non-negative: anything else is not a record of footage (and would overflow FFmpeg's
# 64-bit timestamps when the clip is stitched again).
MAX_INT: Final = 1 << 63
SIGNATURE_BYTES: Final = 64  # Ed25519

# Tag and signature files are read whole; evidence.json of the largest package the
# entry limit allows (100,000 chunks of ~500 bytes of JSON each) is ~50 MB.
MAX_SMALL_FILE_BYTES: Final = 256 << 20
# An RFC 3161 reply is a few KiB (a token and the TSA's certificates): one larger than
# the most the TSA client accepts is not parsed.
MAX_TIMESTAMP_BYTES: Final = timestamp.MAX_RESPONSE_BYTES
# Members are streamed in blocks of this size: memory stays flat for any size.
READ_BLOCK_BYTES: Final = 1 << 20
PROGRESS_STEP: Final = 0.01

_SAFE_SEGMENT: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_MANIFEST_LINE: Final = re.compile(r"([0-9a-f]{64})  (.+)")
_BAG_INFO_LINE: Final = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*): (.*)")
_HEX: Final = re.compile(r"[0-9a-f]*")


# --- the report ---------------------------------------------------------------------


class PackageInvalid(IntegrityError):
    """The package failed verification; the message lists the failures."""

    code = "package_invalid"


@dataclass(frozen=True)
class Failure:
    file: str  # path inside the bag, or "" for the package as a whole
    check: str  # one of CHECKS
    message: str


@dataclass
class Report:
    failures: list[Failure] = field(default_factory=list)
    checks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CHECKS, 0))
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, check: str, file: str, message: str) -> None:
        assert check in CHECKS, check
        self.failures.append(Failure(file=file, check=check, message=message))

    def passed(self, check: str, count: int = 1) -> None:
        self.checks[check] += count

    def raise_if_failed(self) -> None:
        """Fail closed: raise ``PackageInvalid`` naming the failures, if any."""
        if self.failures:
            raise PackageInvalid(f"the package does not verify ({len(self.failures)} "
                                 "failures):\n" + render(self))


@dataclass(frozen=True)
class Limits:
    # One entry per chunk plus a few: 100,000 is ~70 days of one camera in 60 s chunks.
    max_entries: int = 100_000
    max_total_bytes: int = 1 << 40  # uncompressed
    # Text deflates 2-20x (hashes do not compress); zeros deflate ~1000x: a deflated
    # entry beyond 200x is a bomb, not evidence.
    max_ratio: float = 200.0


def render(report: Report) -> str:
    """The report for people: every failure on its own line, then the tallies."""
    lines = []
    for f in report.failures:
        where = f" {_printable(f.file)}" if f.file else ""
        lines.append(f"FAIL {f.check}{where}: {_printable(f.message)}")
    lines.extend(f"note: {_printable(note)}" for note in report.notes)
    lines.extend(f"ok   {name}: {count} passed" for name, count in report.checks.items()
                 if count and not any(f.check == name for f in report.failures))
    lines.append("VERIFIED" if report.ok else
                 f"NOT VERIFIED: {len(report.failures)} failure"
                 f"{'' if len(report.failures) == 1 else 's'}")
    return "\n".join(lines)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def load_public_key(pem_or_raw: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo), 32 raw bytes or 64 hex
    characters. Raises ``InvalidInput``."""
    data = pem_or_raw.strip()
    try:
        if data.startswith(b"-----BEGIN"):
            key = load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise InvalidInput("the PEM key is not an Ed25519 key")
            return key
        if len(pem_or_raw) == 32:
            return Ed25519PublicKey.from_public_bytes(pem_or_raw)
        if len(data) == 64 and _HEX.fullmatch(data.decode("ascii", "replace").lower()):
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(data.decode()))
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidInput(f"not an Ed25519 public key: {exc}") from None
    raise InvalidInput("a public key is a PEM file, 32 raw bytes or 64 hex characters")


# --- the entry point ----------------------------------------------------------------


def verify_package(path: Path, *, trusted_keys: Sequence[Ed25519PublicKey] = (),
                   limits: Limits = Limits(), restitch: bool = True,
                   on_progress: Callable[[float], None] | None = None) -> Report:
    """Check the package at ``path`` (the module's checklist); never raises for what
    the package holds, only for an unreadable path or a broken environment."""
    report = Report()
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
            NotImplementedError) as exc:
        report.fail("zip.safe", "", f"not a readable zip file: {exc}")
        return report
    with zf:
        infos = check_zip(zf.infolist(), limits, report, archive_bytes=path.stat().st_size)
        if infos is None:
            return report
        _Verifier(zf, infos, report, path=path, trusted_keys=trusted_keys,
                  restitch=restitch, on_progress=on_progress).run()
    return report


# --- 1. zip.safe (pure) -------------------------------------------------------------


def check_zip(infos: Sequence[zipfile.ZipInfo], limits: Limits, report: Report, *,
              archive_bytes: int) -> list[zipfile.ZipInfo] | None:
    """The regular-file members if the zip is safe to read, else None (failures
    reported)."""
    before = len(report.failures)
    if len(infos) > limits.max_entries:
        report.fail("zip.safe", "", f"{len(infos)} entries, more than the limit of "
                                    f"{limits.max_entries}")
    seen: set[str] = set()
    total = 0
    files = []
    for info in infos:
        name = info.orig_filename
        problem = _unsafe_name(name) or _unsafe_entry(info, limits, archive_bytes)
        key = unicodedata.normalize("NFC", name).casefold()
        if problem is None and key in seen:
            problem = "appears twice (or would extract onto another member)"
        if problem is not None:
            report.fail("zip.safe", name, problem)
            continue
        seen.add(key)
        total += info.file_size
        if not info.is_dir():
            files.append(info)
    if total > limits.max_total_bytes:
        report.fail("zip.safe", "", f"{total} bytes uncompressed, more than the limit of "
                                    f"{limits.max_total_bytes}")
    if len(report.failures) > before:
        report.fail("zip.safe", "", "the zip is unsafe to read; nothing else was checked")
        return None
    report.passed("zip.safe", len(infos))
    return files


def _unsafe_name(name: str) -> str | None:
    if not name:
        return "has an empty name"
    if any(not c.isprintable() for c in name):
        return "has a control character in its name"
    if "\\" in name:
        return "has a backslash in its name"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    segments = name.removesuffix("/").split("/")
    if ".." in segments:
        return "has a '..' path segment"
    if any(s in ("", ".") for s in segments):
        return "has an empty or '.' path segment"
    return None


def _unsafe_entry(info: zipfile.ZipInfo, limits: Limits, archive_bytes: int) -> str | None:
    if not 0 <= info.header_offset <= info.header_offset + info.compress_size <= archive_bytes:
        return "has data outside the archive (a corrupt zip directory)"
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"is a special file (mode {mode:o})"
    if info.flag_bits & 0x1:
        return "is encrypted"
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return f"uses compression method {info.compress_type} (only stored and deflated)"
    if info.file_size > limits.max_total_bytes:
        return f"is {info.file_size} bytes uncompressed, more than the limit"
    if info.compress_type == zipfile.ZIP_DEFLATED and info.file_size:
        ratio = info.file_size / max(info.compress_size, 1)
        if ratio > limits.max_ratio:
            return (f"expands {ratio:.0f}-fold when inflated, more than the limit of "
                    f"{limits.max_ratio:.0f}")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        return "is stored with a size that differs from its compressed size"
    return None


# --- 2. the bag's structure (pure) --------------------------------------------------


def split_bag(infos: Sequence[zipfile.ZipInfo], report: Report
              ) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """The bag directory's name and its members by path inside the bag."""
    tops = sorted({info.filename.split("/", 1)[0] for info in infos
                   if "/" in info.filename})
    bag = next((t for t in tops if t.startswith(BAG_DIR_PREFIX)), "")
    if len(tops) != 1 or not bag:
        report.fail("bag.structure", "", "the zip does not hold exactly one "
                    f"'{BAG_DIR_PREFIX}<export id>/' directory (it holds {tops[:5]})")
        if not bag:
            return "", {}
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        if bag and info.filename.startswith(bag + "/"):
            members[info.filename[len(bag) + 1:]] = info
        else:
            report.fail("bag.structure", info.filename, "is outside the bag directory")
    for name in members:
        if name not in SMALL_FILES and not name.startswith("data/"):
            report.fail("bag.structure", name, "is not a file of format 1")
    for name in (BAGIT_TXT, BAG_INFO_TXT, MANIFEST, TAGMANIFEST):
        if name not in members:
            report.fail("bag.structure", name, "is missing")
    return bag, members


def parse_manifest(name: str, data: bytes, report: Report, *, payload: bool
                   ) -> dict[str, str]:
    """``path -> sha256 hex`` from a manifest; malformed lines reported and skipped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        report.fail("bag.structure", name, "is not UTF-8")
        return {}
    if text and not text.endswith("\n"):
        report.fail("bag.structure", name, "does not end with a newline")
    entries: dict[str, str] = {}
    paths = []
    ok = True
    for number, line in enumerate(_lines(text), start=1):
        m = _MANIFEST_LINE.fullmatch(line)
        problem = None
        if m is None:
            problem = "is not '<sha256, lower-case hex>  <path>'"
        elif payload and not (m[2].startswith("data/") and _is_safe_path(m[2][5:])):
            problem = f"names {m[2]!r}, not a safe path under data/"
        elif not payload and m[2] not in TAG_FILES:
            problem = f"names {m[2]!r}, not a tag file of format 1"
        elif m[2] in entries:
            problem = f"lists {m[2]} a second time"
        if problem is not None:
            report.fail("bag.structure", name, f"line {number} {problem}")
            ok = False
            continue
        assert m is not None
        entries[m[2]] = m[1]
        paths.append(m[2])
    if paths != sorted(paths):
        report.fail("bag.structure", name, "is not sorted by path")
        ok = False
    if ok:
        report.passed("bag.structure")
    return entries


def _lines(text: str) -> list[str]:
    """Lines as a tag file has them: ended by LF alone (a CR stays in its line)."""
    return text.removesuffix("\n").split("\n") if text else []


def _is_safe_path(path: str) -> bool:
    return all(_SAFE_SEGMENT.fullmatch(s) for s in path.split("/"))


def parse_bag_info(data: bytes, report: Report) -> dict[str, str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        report.fail("bag.structure", BAG_INFO_TXT, "is not UTF-8")
        return {}
    labels: list[tuple[str, str]] = []
    ok = True
    for number, line in enumerate(_lines(text), start=1):
        if line[:1] in (" ", "\t") and labels:  # RFC 8493 continuation line
            labels[-1] = (labels[-1][0], f"{labels[-1][1]} {line.strip()}")
            continue
        m = _BAG_INFO_LINE.fullmatch(line)
        if m is None:
            report.fail("bag.structure", BAG_INFO_TXT, f"line {number} is not 'Label: value'")
            ok = False
            continue
        labels.append((m[1], m[2]))
    if tuple(label for label, _ in labels) != BAG_INFO_LABELS:
        report.fail("bag.structure", BAG_INFO_TXT,
                    f"has the labels {[label for label, _ in labels]}, not format 1's "
                    f"{list(BAG_INFO_LABELS)} in that order")
        ok = False
    info = dict(labels)
    if not re.fullmatch(r"[0-9]+\.[0-9]+", info.get("Payload-Oxum", "")):
        report.fail("bag.structure", BAG_INFO_TXT, "Payload-Oxum is not '<bytes>.<files>'")
        ok = False
    if not re.fullmatch(r"[0-9a-f]{64}", info.get("Vigil-Signing-Key-Fingerprint", "")):
        report.fail("bag.structure", BAG_INFO_TXT,
                    "Vigil-Signing-Key-Fingerprint is not 64 lower-case hex digits")
        ok = False
    if ok:
        report.passed("bag.structure")
    return info


# --- 7a. the RFC 3161 timestamp (pure) -----------------------------------------------


def check_timestamp(tsr: bytes, tagmanifest: bytes | None, report: Report) -> None:
    """``signature.timestamp``: the token in ``tsr`` timestamps ``tagmanifest``'s
    bytes (step 7a). Its genTime, and how to verify the TSA's signature, go into the
    notes."""
    try:
        stamp = timestamp.read_timestamp(tsr)
    except timestamp.TimestampError as exc:
        report.fail("signature.timestamp", TIMESTAMP_TSR, str(exc))
        return
    said = (f"timestamped by {stamp.tsa or 'an unnamed TSA'} at "
            f"{stamp.gen_time.isoformat()} (genTime; serial {stamp.serial}, policy "
            f"{stamp.policy})")
    if tagmanifest is None:
        report.fail("signature.timestamp", TAGMANIFEST, f"is missing or unreadable: the "
                    f"timestamp in {TIMESTAMP_TSR} ({said}) covers nothing")
        return
    expected = hashlib.sha256(tagmanifest).digest()
    if stamp.imprint != expected:
        report.fail("signature.timestamp", TIMESTAMP_TSR,
                    f"timestamps SHA-256 {stamp.imprint.hex()}, not {TAGMANIFEST} (SHA-256 "
                    f"{expected.hex()}): it is the timestamp of other bytes ({said})")
        return
    report.passed("signature.timestamp")
    token_in = "" if stamp.is_response else " -token_in"
    report.notes.append(
        f"signature.timestamp: {TAGMANIFEST} was {said}. The TSA's own signature is not "
        f"verified here: in the bag, run 'openssl ts -verify -data {TAGMANIFEST} -in "
        f"{TIMESTAMP_TSR}{token_in} -CAfile TSA-CA.pem' with the TSA's CA certificate")


# --- 8. evidence.json: the schema (pure) --------------------------------------------


@dataclass(frozen=True)
class ChunkRecord:
    seq: int
    start_us: int
    end_us: int
    media_duration_us: int
    plaintext_bytes: int
    sha256: bytes
    chain_hash: bytes
    clock_source: str
    file: str | None  # path inside the bag; None in chain_tail[]


@dataclass(frozen=True)
class CheckpointRecord:
    seq: int
    chain_hash: bytes
    signed_at_us: int
    key_fingerprint: str
    signature: bytes


@dataclass(frozen=True)
class GapRecord:
    start_us: int
    end_us: int
    cause: str


@dataclass(frozen=True)
class ItemRecord:
    index: int
    camera_id: int
    camera_name: str
    from_us: int
    to_us: int
    chunks: list[ChunkRecord]
    chain_prev: bytes
    chain_tail: list[ChunkRecord]
    checkpoint: CheckpointRecord | None
    gaps: list[GapRecord]
    clip_file: str
    watermarked_file: str | None

    @property
    def files(self) -> list[str]:
        named = [c.file for c in self.chunks] + [self.clip_file, self.watermarked_file]
        return [f for f in named if f is not None]


@dataclass(frozen=True)
class EvidenceRecord:
    export_id: str | None
    case_reference: str | None
    packaged_at: datetime | None
    items: list[ItemRecord]  # the well-formed ones; the others are reported
    keys: dict[str, bytes]  # checkpoint-signing key fingerprint -> raw public key


_MISSING: Final = object()


class _Schema:
    """Reads evidence.json's fields, recording what is missing or of the wrong type."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def get(self, obj: object, key: str, where: str) -> Any:
        if not isinstance(obj, dict):
            return _MISSING
        if key not in obj:
            self.errors.append(f"{where}{key}: missing")
            return _MISSING
        return obj[key]

    def _typed(self, obj: object, key: str, where: str, kind: str, test: Callable[[Any], bool],
               *, nullable: bool) -> Any:
        value = self.get(obj, key, where)
        if value is _MISSING:
            return None
        if value is None and nullable:
            return None
        if not test(value):
            self.errors.append(f"{where}{key}: expected {kind}"
                               f"{' or null' if nullable else ''}, found {_kind(value)}")
            return None
        return value

    def str_(self, obj: object, key: str, where: str, *, nullable: bool = False
             ) -> str | None:
        return self._typed(obj, key, where, "a string", lambda v: isinstance(v, str),
                           nullable=nullable)

    def int_(self, obj: object, key: str, where: str, *, nullable: bool = False
             ) -> int | None:
        return self._typed(obj, key, where, f"an integer in [0, {MAX_INT})",
                           lambda v: isinstance(v, int) and not isinstance(v, bool)
                           and 0 <= v < MAX_INT, nullable=nullable)

    def obj(self, obj: object, key: str, where: str, *, nullable: bool = False
            ) -> dict[str, Any] | None:
        return self._typed(obj, key, where, "an object", lambda v: isinstance(v, dict),
                           nullable=nullable)

    def list_(self, obj: object, key: str, where: str) -> list[Any]:
        return self._typed(obj, key, where, "a list", lambda v: isinstance(v, list),
                           nullable=False) or []

    def hex_(self, obj: object, key: str, where: str, nbytes: int) -> bytes | None:
        return _unhex(self._typed(
            obj, key, where, f"{nbytes * 2} lower-case hex digits",
            lambda v: isinstance(v, str) and len(v) == 2 * nbytes and bool(_HEX.fullmatch(v)),
            nullable=False))

    def time_(self, obj: object, key: str, where: str) -> datetime | None:
        text = self.str_(obj, key, where)
        if text is None:
            return None
        try:
            at = datetime.fromisoformat(text)
        except ValueError:
            at = None
        offset = None if at is None else at.utcoffset()
        if offset is None or offset.total_seconds() != 0:
            self.errors.append(f"{where}{key}: expected an ISO 8601 time in UTC")
            return None
        return at


def _unhex(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(
        type(value), type(value).__name__)


def parse_evidence(data: bytes) -> tuple[EvidenceRecord | None, list[str]]:
    """The evidence's records and the schema errors; None if it is not a JSON object."""
    try:
        root = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, [f"is not UTF-8 JSON: {exc}"]
    except RecursionError:
        return None, ["is nested too deeply to be evidence"]
    if not isinstance(root, dict):
        return None, [f"is {_kind(root)}, not a JSON object"]
    s = _Schema()
    fmt = s.str_(root, "format", "")
    if fmt is not None and fmt != EVIDENCE_FORMAT:
        s.errors.append(f"format: {fmt!r}, not {EVIDENCE_FORMAT!r}")
    export = s.obj(root, "export", "")
    export_id = s.str_(export, "id", "export.")
    case = s.obj(export, "case", "export.")
    reference = s.str_(case, "reference", "export.case.")
    s.str_(case, "title", "export.case.")
    for key in ("requested_by", "purpose"):
        s.str_(export, key, "export.")
    s.str_(export, "recipient", "export.", nullable=True)
    s.time_(export, "requested_at", "export.")
    packaged_at = s.time_(export, "packaged_at", "export.")
    keys_obj = s.obj(root, "keys", "")
    keys: dict[str, bytes] = {}
    for n, k in enumerate(s.list_(keys_obj, "checkpoint_signing", "keys.")):
        where = f"keys.checkpoint_signing[{n}]."
        if not isinstance(k, dict):
            s.errors.append(f"{where[:-1]}: expected an object, found {_kind(k)}")
            continue
        fp, public = s.hex_(k, "fingerprint", where, 32), s.hex_(k, "public_key", where, 32)
        if fp is not None and public is not None:
            if hashlib.sha256(public).digest() != fp:
                s.errors.append(f"{where}fingerprint: not the SHA-256 of public_key")
            else:
                keys[fp.hex()] = public
    software = s.obj(root, "software", "")
    for key in ("vigil", "python", "pyav", "libavformat"):
        s.str_(software, key, "software.")
    if isinstance(software, dict) and "ffmpeg" in software:  # only when watermarking
        s.str_(software, "ffmpeg", "software.", nullable=True)
    items = []
    raw_items = s.list_(root, "items", "")
    if not raw_items and isinstance(root.get("items"), list):
        s.errors.append("items: empty; a package exports at least one range")
    for n, raw in enumerate(raw_items):
        item = _parse_item(s, raw, n)
        if item is not None:
            items.append(item)
    return EvidenceRecord(export_id=export_id, case_reference=reference,
                          packaged_at=packaged_at, items=items, keys=keys), s.errors


def _parse_item(s: _Schema, raw: object, n: int) -> ItemRecord | None:
    where = f"items[{n}]."
    if not isinstance(raw, dict):
        s.errors.append(f"items[{n}]: expected an object, found {_kind(raw)}")
        return None
    before = len(s.errors)
    camera = s.obj(raw, "camera", where)
    camera_id = s.int_(camera, "id", where + "camera.")
    camera_name = s.str_(camera, "name", where + "camera.")
    s.str_(camera, "region", where + "camera.", nullable=True)
    from_us, to_us = s.int_(raw, "from_us", where), s.int_(raw, "to_us", where)
    chunks = [_parse_chunk(s, c, f"{where}chunks[{i}]", with_file=True)
              for i, c in enumerate(s.list_(raw, "chunks", where))]
    if not chunks and isinstance(raw.get("chunks"), list):
        s.errors.append(f"{where}chunks: empty; a range without footage is not exported")
    chain_prev = s.hex_(raw, "chain_prev", where, 32)
    tail = [_parse_chunk(s, c, f"{where}chain_tail[{i}]", with_file=False)
            for i, c in enumerate(s.list_(raw, "chain_tail", where))]
    cp = s.obj(raw, "checkpoint", where, nullable=True)
    checkpoint = None
    if cp is not None:
        w = where + "checkpoint."
        fields = (s.int_(cp, "seq", w), s.hex_(cp, "chain_hash", w, 32),
                  s.int_(cp, "signed_at_us", w), s.hex_(cp, "key_fingerprint", w, 32),
                  s.hex_(cp, "signature", w, 64))
        if None not in fields:
            seq, chain_hash, signed_at_us, fp, signature = fields
            checkpoint = CheckpointRecord(seq=seq, chain_hash=chain_hash,
                                          signed_at_us=signed_at_us, key_fingerprint=fp.hex(),
                                          signature=signature)
    gaps = []
    for i, g in enumerate(s.list_(raw, "gaps", where)):
        w = f"{where}gaps[{i}]."
        if not isinstance(g, dict):
            s.errors.append(f"{w[:-1]}: expected an object, found {_kind(g)}")
            continue
        start, end, cause = s.int_(g, "start_us", w), s.int_(g, "end_us", w), \
            s.str_(g, "cause", w)
        s.get(g, "detail", w)  # any JSON value
        if start is not None and end is not None and cause is not None:
            gaps.append(GapRecord(start_us=start, end_us=end, cause=cause))
    clip = s.obj(raw, "clip", where)
    clip_file = s.str_(clip, "file", where + "clip.")
    for key in ("first_frame_us", "last_frame_us"):  # null when no frame is in range
        s.int_(clip, key, where + "clip.", nullable=True)
    s.int_(clip, "frames", where + "clip.")
    marked = s.obj(raw, "watermarked", where, nullable=True)
    marked_file = None
    if marked is not None:
        marked_file = s.str_(marked, "file", where + "watermarked.")
        transformation = s.obj(marked, "transformation", where + "watermarked.",
                               nullable=True)
        for key in ("tool", "version", "filter_graph", "arguments"):
            if transformation is not None:
                s.get(transformation, key, where + "watermarked.transformation.")
    if len(s.errors) > before:
        return None
    assert camera_id is not None and camera_name is not None and chain_prev is not None
    assert from_us is not None and to_us is not None and clip_file is not None
    return ItemRecord(index=n, camera_id=camera_id, camera_name=camera_name,
                      from_us=from_us, to_us=to_us, chunks=[c for c in chunks if c],
                      chain_prev=chain_prev, chain_tail=[c for c in tail if c],
                      checkpoint=checkpoint, gaps=gaps, clip_file=clip_file,
                      watermarked_file=marked_file)


def _parse_chunk(s: _Schema, raw: object, where: str, *, with_file: bool
                 ) -> ChunkRecord | None:
    if not isinstance(raw, dict):
        s.errors.append(f"{where}: expected an object, found {_kind(raw)}")
        return None
    w = where + "."
    ints = {key: s.int_(raw, key, w) for key in
            ("seq", "start_us", "end_us", "media_duration_us", "plaintext_bytes")}
    sha256, chain_hash = s.hex_(raw, "sha256", w, 32), s.hex_(raw, "chain_hash", w, 32)
    clock_source = s.str_(raw, "clock_source", w)
    file = s.str_(raw, "file", w) if with_file else None
    if None in ints.values() or sha256 is None or chain_hash is None or \
            clock_source is None or (with_file and file is None):
        return None
    return ChunkRecord(**ints, sha256=sha256, chain_hash=chain_hash,  # type: ignore[arg-type]
                       clock_source=clock_source, file=file)


def check_item_times(item: ItemRecord) -> list[str]:
    """Each chunk overlaps the range, and the gaps are exactly the stretches
    of ``[from, to)`` that no chunk covers."""
    where = f"items[{item.index}]"
    if item.from_us >= item.to_us:
        return [f"{where}: from_us is not before to_us"]
    errors = []
    covered: list[tuple[int, int]] = []
    for c in item.chunks:
        if c.start_us >= c.end_us:
            errors.append(f"{where} chunk {c.seq}: start_us is not before end_us")
        elif c.end_us <= item.from_us or c.start_us >= item.to_us:
            errors.append(f"{where} chunk {c.seq}: outside the range [from_us, to_us)")
        else:
            covered.append((max(c.start_us, item.from_us), min(c.end_us, item.to_us)))
    holes, at = [], item.from_us
    for start, end in sorted(covered):
        if start > at:
            holes.append((at, start))
        at = max(at, end)
    if at < item.to_us:
        holes.append((at, item.to_us))
    if holes != [(g.start_us, g.end_us) for g in item.gaps]:
        errors.append(f"{where}.gaps: {[(g.start_us, g.end_us) for g in item.gaps]} are not "
                      f"the stretches no chunk covers, {holes}")
    return errors


# --- 10, 11. the chain (pure) -------------------------------------------------------


def check_chain(item: ItemRecord, hashes: dict[str, tuple[str, int]], report: Report
                ) -> bytes:
    """``chain.link`` for one item; returns the chain head computed from what the
    package holds (files for the exported chunks, evidence for the tail)."""
    camera = f"camera {item.camera_name!r}"
    links = [*item.chunks, *item.chain_tail]
    first = links[0].seq if links else None
    if (first == FIRST_CHUNK_SEQ) != (item.chain_prev == chain.GENESIS):
        report.fail("chain.link", EVIDENCE_JSON,
                    f"{camera}: chain_prev must be GENESIS (64 zeros) exactly when the first "
                    f"chunk is the camera's first, seq {FIRST_CHUNK_SEQ} (it is seq {first})")
    recorded_prev = computed = item.chain_prev
    expected_seq = first
    for record in links:
        where = record.file or EVIDENCE_JSON
        sha256, size = record.sha256, record.plaintext_bytes
        if record.file is not None and record.file in hashes:
            sha256, size = bytes.fromhex(hashes[record.file][0]), hashes[record.file][1]
        link = chain.Link(camera_id=item.camera_id, seq=record.seq, start_us=record.start_us,
                          end_us=record.end_us, media_duration_us=record.media_duration_us,
                          plaintext_bytes=size, sha256=sha256, clock_source=record.clock_source)
        ok = True
        if record.seq != expected_seq:
            report.fail("chain.link", where, f"{camera}: seq {record.seq} follows seq "
                        f"{(expected_seq or 1) - 1}; chunk seqs must be consecutive")
            ok = False
        if chain.chain_hash(recorded_prev, link) != record.chain_hash:
            report.fail("chain.link", where, f"{camera} seq {record.seq}: the chain hash does "
                        "not follow from the previous one and this chunk (the chunk or its "
                        "record was altered, removed, inserted or reordered)")
            ok = False
        if ok:
            report.passed("chain.link")
        recorded_prev = record.chain_hash
        computed = chain.chain_hash(computed, link)
        expected_seq = record.seq + 1
    return computed


def check_checkpoint(item: ItemRecord, head: bytes, keys: dict[str, bytes],
                     report: Report) -> None:
    camera = f"camera {item.camera_name!r}"
    cp = item.checkpoint
    if cp is None:
        report.fail("chain.checkpoint", EVIDENCE_JSON,
                    f"{camera}: not covered by a signed checkpoint (checkpoint is null), so "
                    "nothing signed by the recorder vouches for these chunks")
        return
    ok = True
    last = [*item.chunks, *item.chain_tail]
    if not last or cp.seq != last[-1].seq:
        report.fail("chain.checkpoint", EVIDENCE_JSON,
                    f"{camera}: the checkpoint is at seq {cp.seq}, but chunks and chain_tail "
                    f"end at seq {last[-1].seq if last else None}")
        ok = False
    if head != cp.chain_hash:
        report.fail("chain.checkpoint", EVIDENCE_JSON,
                    f"{camera}: the chain from chain_prev through the chunks in the package "
                    f"and chain_tail does not reach the checkpoint's chain hash (seq {cp.seq})")
        ok = False
    raw = keys.get(cp.key_fingerprint)
    if raw is None:
        report.fail("chain.checkpoint", EVIDENCE_JSON,
                    f"{camera}: the checkpoint's key {cp.key_fingerprint} is not listed in "
                    "keys.checkpoint_signing")
        return
    try:
        public = Ed25519PublicKey.from_public_bytes(raw)
        chain.verify_checkpoint(public, chain.Checkpoint(
            camera_id=item.camera_id, seq=cp.seq, chain_hash=cp.chain_hash,
            signed_at_us=cp.signed_at_us, key_fingerprint=cp.key_fingerprint), cp.signature)
    except (chain.CheckpointInvalid, ValueError) as exc:
        report.fail("chain.checkpoint", EVIDENCE_JSON, f"{camera}: {exc}")
        return
    if ok:
        report.passed("chain.checkpoint")


# --- 13. custody (pure) -------------------------------------------------------------


def check_custody(data: bytes, evidence: EvidenceRecord | None, report: Report) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        report.fail("custody.link", CUSTODY_JSONL, "is not UTF-8")
        return
    if not text.endswith("\n"):
        report.fail("custody.link", CUSTODY_JSONL, "is empty or does not end with a newline")
    case = evidence.case_reference if evidence is not None else None
    export_id = evidence.export_id if evidence is not None else None
    # After a line that does not parse, the next event's link cannot be checked.
    prev_hash: bytes | None = custody.GENESIS
    expected_seq: int | None = 1
    last: custody.CustodyEvent | None = None
    for number, line in enumerate(_lines(text), start=1):
        try:
            event, recorded = custody.parse_line(line)
        except (ValueError, RecursionError) as exc:
            report.fail("custody.link", CUSTODY_JSONL, f"line {number}: not a custody event "
                        f"({type(exc).__name__}: {str(exc)[:200]})")
            prev_hash = expected_seq = last = None
            continue
        problems = []
        if expected_seq is not None and event.seq != expected_seq:
            problems.append(f"is event {event.seq}, expected {expected_seq}")
        try:
            custody.verify_events([(event, recorded)],
                                  prev_hash=event.prev_hash if prev_hash is None else prev_hash)
        except custody.CustodyChainBroken as exc:
            problems.append(str(exc))
        if case is not None and event.case != case:
            problems.append(f"belongs to case {event.case!r}, not {case!r}")
        if problems:
            report.fail("custody.link", CUSTODY_JSONL, f"line {number}: {'; '.join(problems)}")
        else:
            report.passed("custody.link")
        prev_hash, expected_seq, last = recorded, event.seq + 1, event
    if last is None or last.action != PACKAGED_ACTION or \
            (export_id is not None and last.export_id != export_id):
        report.fail("custody.link", CUSTODY_JSONL,
                    f"does not end with the {PACKAGED_ACTION} event of export {export_id}")


# --- the I/O: reading members, signatures, re-stitching -----------------------------


# Where a member clip.restitch reads lies: (file, None) for a copy made while hashing
# it, or (the package, (offset, length)) for a stored member read in place.
_Media = tuple[Path, tuple[int, int] | None]
_LOCAL_HEADER: Final = struct.Struct("<4s22xHH")  # signature, ..., name and extra lengths
_LOCAL_SIGNATURE: Final = b"PK\x03\x04"


def stored_extent(f: IO[bytes], member: zipfile.ZipInfo) -> tuple[int, int] | None:
    """(offset, length) of a stored, unencrypted member's bytes in the archive ``f``,
    found as zipfile finds them (after the local header, its name and extra field);
    None for any other member, which is then copied out to be read."""
    if member.compress_type != zipfile.ZIP_STORED or member.flag_bits & 0x1 or \
            member.file_size <= 0 or member.compress_size != member.file_size:
        return None
    f.seek(member.header_offset)
    head = f.read(_LOCAL_HEADER.size)
    if len(head) < _LOCAL_HEADER.size:
        return None
    signature, name_length, extra_length = _LOCAL_HEADER.unpack(head)
    if signature != _LOCAL_SIGNATURE:
        return None
    return member.header_offset + _LOCAL_HEADER.size + name_length + extra_length, \
        member.file_size


class _Verifier:
    def __init__(self, zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], report: Report, *,
                 path: Path, trusted_keys: Sequence[Ed25519PublicKey], restitch: bool,
                 on_progress: Callable[[float], None] | None) -> None:
        self.zf, self.infos, self.report, self.path = zf, infos, report, path
        self.trusted_keys, self.restitch = trusted_keys, restitch
        self.progress = _Progress(on_progress, total=sum(i.file_size for i in infos))
        self.small: dict[str, bytes] = {}
        self.hashes: dict[str, tuple[str, int]] = {}  # data path -> (sha256 hex, size)
        self.unreadable: set[str] = set()

    def run(self) -> None:
        report = self.report
        bag, members = split_bag(self.infos, report)
        for name in SMALL_FILES:
            if name in members:
                self._read_small(name, members[name])
        info = parse_bag_info(self.small[BAG_INFO_TXT], report) \
            if BAG_INFO_TXT in self.small else {}
        if BAGIT_TXT in self.small:
            if self.small[BAGIT_TXT] == BAGIT_TXT_BYTES:
                report.passed("bag.structure")
            else:
                report.fail("bag.structure", BAGIT_TXT, "is not 'BagIt-Version: 1.0' and "
                            "'Tag-File-Character-Encoding: UTF-8'")
        manifest = parse_manifest(MANIFEST, self.small[MANIFEST], report, payload=True) \
            if MANIFEST in self.small else None
        tagmanifest = parse_manifest(TAGMANIFEST, self.small[TAGMANIFEST], report,
                                     payload=False) if TAGMANIFEST in self.small else None
        if bag and info and bag != f"{BAG_DIR_PREFIX}{info.get('External-Identifier')}":
            report.fail("bag.structure", "", f"the bag directory {bag!r} is not named after "
                        f"External-Identifier {info.get('External-Identifier')!r}")

        evidence, schema_errors = None, ["is missing"]
        if EVIDENCE_JSON in self.small:
            evidence, schema_errors = parse_evidence(self.small[EVIDENCE_JSON])
        elif EVIDENCE_JSON in self.unreadable:
            schema_errors = ["cannot be read"]

        data = {name: i for name, i in members.items() if name.startswith("data/")}
        with tempfile.TemporaryDirectory(prefix="vigil-verify-") as tmp, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="vigil-restitch") as pool:
            wanted = self._wanted(evidence, data, Path(tmp))
            early = self._restitch_early(evidence, wanted, pool)
            for name, member in data.items():
                media = wanted.get(name)
                self._read_data(name, member, media[0] if media and not media[1] else None)
            self._check_manifest(manifest, data, info)
            tag_consistent = self._check_tagmanifest(tagmanifest)
            key = self._check_signature(info, tag_consistent)
            self._check_trusted(key)
            if TIMESTAMP_TSR in members and TIMESTAMP_TSR not in self.unreadable:
                check_timestamp(self.small[TIMESTAMP_TSR], self.small.get(TAGMANIFEST),
                                report)
            self._check_evidence(evidence, schema_errors, info, manifest, data)
            if evidence is not None:
                self._check_chunks(evidence)
                for item in evidence.items:
                    head = check_chain(item, self.hashes, report)
                    check_checkpoint(item, head, evidence.keys, report)
                self._restitch(evidence, manifest, wanted, early)
            if CUSTODY_JSONL in self.small:
                check_custody(self.small[CUSTODY_JSONL], evidence, report)
            else:
                report.fail("custody.link", CUSTODY_JSONL, "is missing or unreadable")
        self.progress.finished()

    # reading

    def _read(self, member: zipfile.ZipInfo, sink: IO[bytes] | None,
              keep: bool) -> tuple[bytes, str, int] | str:
        """Stream one member: (content if kept, sha256 hex, size), or an error."""
        digest = hashlib.sha256()
        size = 0
        kept = []
        try:
            with self.zf.open(member) as src:
                while block := src.read(READ_BLOCK_BYTES):
                    digest.update(block)
                    size += len(block)
                    self.progress.advance(len(block))
                    if keep:
                        kept.append(block)
                    if sink is not None:
                        sink.write(block)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError,
                NotImplementedError) as exc:
            return f"cannot be read from the zip: {exc}"
        return b"".join(kept), digest.hexdigest(), size

    def _read_small(self, name: str, member: zipfile.ZipInfo) -> None:
        check = "signature.timestamp" if name == TIMESTAMP_TSR else \
            "signature.package" if name.startswith("signature/") else "bag.tagmanifest"
        if member.file_size > MAX_SMALL_FILE_BYTES:
            self.report.fail("bag.structure", name, f"is {member.file_size} bytes, more than "
                             f"{MAX_SMALL_FILE_BYTES} for a tag file")
            self.unreadable.add(name)
            return
        if name == TIMESTAMP_TSR and member.file_size > MAX_TIMESTAMP_BYTES:
            self.report.fail(check, name, f"is {member.file_size} bytes, more than "
                             f"{MAX_TIMESTAMP_BYTES} for an RFC 3161 timestamp")
            self.unreadable.add(name)
            return
        result = self._read(member, None, keep=True)
        if isinstance(result, str):
            self.report.fail(check, name, result)
            self.unreadable.add(name)
            return
        self.small[name] = result[0]

    def _read_data(self, name: str, member: zipfile.ZipInfo, extract_to: Path | None) -> None:
        if extract_to is None:
            result = self._read(member, None, keep=False)
        else:
            with extract_to.open("xb") as sink:
                result = self._read(member, sink, keep=False)
        if isinstance(result, str):
            self.report.fail("bag.manifest", name, result)
            self.unreadable.add(name)
            return
        self.hashes[name] = (result[1], result[2])

    def _wanted(self, evidence: EvidenceRecord | None, data: dict[str, zipfile.ZipInfo],
                tmp: Path) -> dict[str, _Media]:
        """Where clip.restitch reads the members it needs: stored members in place,
        others from a copy under our own names, made while hashing them."""
        if not self.restitch or evidence is None:
            return {}
        wanted: dict[str, _Media] = {}
        with self.path.open("rb") as f:
            for item in evidence.items:
                for name in [c.file for c in item.chunks] + [item.clip_file]:
                    if name not in data or name in wanted:
                        continue
                    if (extent := stored_extent(f, data[name])) is not None:
                        wanted[name] = (self.path, extent)
                        continue
                    folder = tmp / f"{len(wanted):06d}"  # the member's own name inside,
                    folder.mkdir()  # so that clip.restitch's messages name it
                    wanted[name] = (folder / Path(name).name, None)
        return wanted

    # 4, 5. manifests

    def _check_manifest(self, manifest: dict[str, str] | None,
                        data: dict[str, zipfile.ZipInfo], info: dict[str, str]) -> None:
        report = self.report
        if manifest is None:
            report.fail("bag.manifest", MANIFEST, "is missing: no payload file can be checked")
            return
        for name, expected in manifest.items():
            if name not in data:
                report.fail("bag.manifest", name, f"is listed in {MANIFEST} but not in the "
                            "package")
            elif name in self.hashes and self.hashes[name][0] != expected:
                report.fail("bag.manifest", name, f"has SHA-256 {self.hashes[name][0]}, "
                            f"{MANIFEST} says {expected}")
            elif name in self.hashes:
                report.passed("bag.manifest")
        for name in data:
            if name not in manifest:
                report.fail("bag.manifest", name, f"is not listed in {MANIFEST}")
        oxum = f"{sum(size for _, size in self.hashes.values())}.{len(data)}"
        if "Payload-Oxum" in info and info["Payload-Oxum"] != oxum and \
                not self.unreadable & set(data):
            report.fail("bag.manifest", BAG_INFO_TXT, f"Payload-Oxum is "
                        f"{info['Payload-Oxum']}, the payload is {oxum} (bytes.files)")

    def _check_tagmanifest(self, tagmanifest: dict[str, str] | None) -> bool:
        """True if the tag manifest is exactly the one the tag files call for."""
        report = self.report
        if tagmanifest is None:
            return False
        actual = {name: hashlib.sha256(self.small[name]).hexdigest()
                  for name in TAG_FILES if name in self.small}
        for name in TAG_FILES:
            if name not in tagmanifest:
                report.fail("bag.tagmanifest", name, f"is not listed in {TAGMANIFEST}")
            elif name not in actual:
                if name not in self.unreadable:
                    report.fail("bag.tagmanifest", name, f"is listed in {TAGMANIFEST} but "
                                "not in the package")
            elif actual[name] != tagmanifest[name]:
                report.fail("bag.tagmanifest", name, f"has SHA-256 {actual[name]}, "
                            f"{TAGMANIFEST} says {tagmanifest[name]}")
            else:
                report.passed("bag.tagmanifest")
        expected = "".join(f"{actual[n]}  {n}\n" for n in sorted(actual)).encode()
        return len(actual) == len(TAG_FILES) and self.small[TAGMANIFEST] == expected

    # 6, 7. signatures

    def _check_signature(self, info: dict[str, str], tag_consistent: bool
                         ) -> Ed25519PublicKey | None:
        report = self.report
        key = None
        for name in (SIGNING_KEY_PEM, SIGNATURE):
            if name not in self.small and name not in self.unreadable:
                report.fail("signature.package", name, "is missing")
        pem = self.small.get(SIGNING_KEY_PEM)
        if pem is not None:
            try:
                key = load_public_key(pem)
            except InvalidInput as exc:
                report.fail("signature.package", SIGNING_KEY_PEM, f"is not a usable key: {exc}")
        if key is not None:
            canonical = key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
            named = info.get("Vigil-Signing-Key-Fingerprint")
            if pem != canonical:
                report.fail("signature.package", SIGNING_KEY_PEM, "is not the canonical PEM "
                            "encoding of the key it holds (the file was altered)")
            elif named is not None and chain.fingerprint(key) != named:
                report.fail("signature.package", SIGNING_KEY_PEM,
                            f"holds key {chain.fingerprint(key)}, but {BAG_INFO_TXT} names "
                            f"{named}")
        signature = self.small.get(SIGNATURE)
        signed = self.small.get(TAGMANIFEST)
        if signature is not None and len(signature) != SIGNATURE_BYTES:
            report.fail("signature.package", SIGNATURE, f"is {len(signature)} bytes, not a "
                        f"{SIGNATURE_BYTES}-byte Ed25519 signature")
        elif signed is None:
            report.fail("signature.package", TAGMANIFEST, "is missing or unreadable: the "
                        "signature covers nothing")
        elif key is not None and signature is not None:
            try:
                key.verify(signature, signed)
            except InvalidSignature:
                # The tag manifest re-computed from the tag files says which one changed.
                file = SIGNATURE if tag_consistent else TAGMANIFEST
                report.fail("signature.package", file, f"the signature in {SIGNATURE} does "
                            f"not verify over {TAGMANIFEST} under the embedded key"
                            + ("" if tag_consistent else f" ({TAGMANIFEST} does not match "
                               "the tag files either: it was altered)"))
        if not any(f.check == "signature.package" for f in report.failures) and \
                key is not None:
            report.passed("signature.package")
        return key

    def _check_trusted(self, key: Ed25519PublicKey | None) -> None:
        report = self.report
        if not self.trusted_keys:
            fp = chain.fingerprint(key) if key is not None else "unknown"
            report.notes.append(f"signature.trusted not checked: no trusted key given; the "
                                f"package is signed by key {fp}: compare it with the "
                                "publisher's key obtained by other means")
            return
        trusted = {chain.fingerprint(k) for k in self.trusted_keys}
        if key is None:
            report.fail("signature.trusted", SIGNING_KEY_PEM, "no usable embedded key to "
                        "compare with the trusted keys")
        elif chain.fingerprint(key) not in trusted:
            report.fail("signature.trusted", SIGNING_KEY_PEM,
                        f"the package is signed by key {chain.fingerprint(key)}, not by a "
                        f"trusted key ({', '.join(sorted(trusted))})")
        else:
            report.passed("signature.trusted")

    # 8, 9. evidence

    def _check_evidence(self, evidence: EvidenceRecord | None, errors: list[str],
                        info: dict[str, str], manifest: dict[str, str] | None,
                        data: dict[str, zipfile.ZipInfo]) -> None:
        report = self.report
        errors = list(errors)
        if evidence is not None:
            for item in evidence.items:
                errors.extend(check_item_times(item))
            if info and evidence.export_id is not None and \
                    evidence.export_id != info.get("External-Identifier"):
                errors.append(f"export.id {evidence.export_id!r} is not {BAG_INFO_TXT}'s "
                              f"External-Identifier {info.get('External-Identifier')!r}")
            if info and evidence.case_reference is not None and \
                    evidence.case_reference != info.get("Vigil-Case"):
                errors.append(f"export.case.reference {evidence.case_reference!r} is not "
                              f"{BAG_INFO_TXT}'s Vigil-Case {info.get('Vigil-Case')!r}")
            if info and evidence.packaged_at is not None and \
                    evidence.packaged_at.astimezone(UTC).date().isoformat() != \
                    info.get("Bagging-Date"):
                errors.append(f"export.packaged_at {evidence.packaged_at.isoformat()} is not "
                              f"on {BAG_INFO_TXT}'s Bagging-Date {info.get('Bagging-Date')}")
            named: set[str] = set()
            for item in evidence.items:
                for name in item.files:
                    if name in named:
                        errors.append(f"items[{item.index}] names {name} a second time")
                    named.add(name)
                    if name not in data and (manifest is None or name not in manifest):
                        errors.append(f"items[{item.index}] names {name}, which the package "
                                      "does not hold")
            for name in sorted(set(data) - named):
                report.fail("evidence.schema", name, f"is not named in {EVIDENCE_JSON}")
        for error in errors:
            report.fail("evidence.schema", EVIDENCE_JSON, error)
        if evidence is not None and not errors and \
                not any(f.check == "evidence.schema" for f in report.failures):
            report.passed("evidence.schema")

    def _check_chunks(self, evidence: EvidenceRecord) -> None:
        report = self.report
        for item in evidence.items:
            for c in item.chunks:
                assert c.file is not None
                got = self.hashes.get(c.file)
                if got is None:
                    report.fail("chunk.hash", c.file, f"camera {item.camera_name!r} chunk "
                                f"{c.seq}: the original is not in the package")
                elif got[0] != c.sha256.hex():
                    report.fail("chunk.hash", c.file, f"camera {item.camera_name!r} chunk "
                                f"{c.seq}: SHA-256 is {got[0]}, recorded {c.sha256.hex()}")
                elif got[1] != c.plaintext_bytes:
                    report.fail("chunk.hash", c.file, f"camera {item.camera_name!r} chunk "
                                f"{c.seq}: {got[1]} bytes, recorded {c.plaintext_bytes}")
                else:
                    report.passed("chunk.hash")

    # 12. the clip

    def _restitch(self, evidence: EvidenceRecord, manifest: dict[str, str] | None,
                  wanted: dict[str, _Media], early: Future[list[_Restitched]] | None
                  ) -> None:
        """Report clip.restitch for each item whose members all passed the manifest;
        ``early`` holds what re-stitching gave when it ran while hashing."""
        report = self.report
        if not self.restitch:
            report.notes.append("clip.restitch not checked (restitch off)")
            return
        from retrieval import clip as clips

        for n, item in enumerate(evidence.items):
            needed = _needed(item)
            bad = [name for name in needed if name not in wanted or manifest is None
                   or self.hashes.get(name, ("",))[0] != manifest.get(name)]
            if bad:
                report.fail("clip.restitch", item.clip_file,
                            f"not re-stitched: {', '.join(bad)} did not pass {MANIFEST}")
                continue
            clip, at = wanted[item.clip_file]
            found = clips.clip_facts(clip, clips.Extent(*at) if at is not None else None)
            # This thread reads the clip while the other may still be stitching.
            expected = early.result()[n] if early is not None else _restitched(item, wanted)
            if isinstance(found, str) or isinstance(expected, str) or expected is None:
                differences = [found if isinstance(found, str) else str(expected)]
            else:
                differences = clips.compare_facts(expected, found)
            for difference in differences:
                report.fail("clip.restitch", item.clip_file, difference)
            if not differences:
                report.passed("clip.restitch")

    def _restitch_early(self, evidence: EvidenceRecord | None, wanted: dict[str, _Media],
                        pool: ThreadPoolExecutor) -> Future[list[_Restitched]] | None:
        """When every member the re-stitch needs is read in place, stitch again on
        another thread while this one hashes (FFmpeg and SHA-256 run without the GIL);
        whether the result counts is decided once the hashes are known."""
        if not self.restitch or evidence is None or not wanted or \
                any(extent is None for _, extent in wanted.values()):
            return None
        items = evidence.items
        return pool.submit(lambda: [
            _restitched(item, wanted) if all(n in wanted for n in _needed(item)) else None
            for item in items])


# What stitching an item's originals again gave: the clip's facts, why it failed, or
# None when a member it needs is missing (reported from the manifest instead).
_Restitched = Any


def _needed(item: ItemRecord) -> list[str]:
    return [c.file for c in item.chunks if c.file is not None] + [item.clip_file]


def _restitched(item: ItemRecord, wanted: dict[str, _Media]) -> _Restitched:
    from retrieval import clip as clips

    sources = [clips.ClipSource(wanted[c.file][0], c.seq, c.start_us, c.end_us,
                                extent=clips.Extent(*at) if (at := wanted[c.file][1])
                                else None)
               for c in item.chunks if c.file is not None]
    gaps = [clips.ClipGap(g.start_us, g.end_us, g.cause) for g in item.gaps]
    return clips.restitched_facts(sources, from_us=item.from_us, to_us=item.to_us,
                                  gaps=gaps, title=item.camera_name)


class _Progress:
    def __init__(self, callback: Callable[[float], None] | None, *, total: int) -> None:
        self._callback, self._total = callback, total
        self._done, self._last = 0, 0.0

    def advance(self, n: int) -> None:
        self._done += n
        if self._callback is None or self._total <= 0:
            return
        fraction = min(1.0, self._done / self._total)
        if self._last + PROGRESS_STEP <= fraction < 1.0:
            self._last = fraction
            self._callback(fraction)

    def finished(self) -> None:
        if self._callback is not None:
            self._callback(1.0)
