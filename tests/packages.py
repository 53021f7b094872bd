"""Real evidence packages for tests: real footage, cut by the recorder's code, chained,
checkpointed, stitched and packaged, with no server (docs/design/package.md).

``make_inputs`` prepares everything ``retrieval.package.build_package`` takes (but
``out``); ``build`` builds the package from them. The keys come from fixed seeds, so
that two builds from the same footage give the same bytes.

The camera's chain, in wall time from ``T0_US``:

    seq 0 [0, 2 s)   seq 1 [2, 4 s)   1 s gap   seq 2 [5, 7 s)   seq 3 [7, 9 s)

(a camera's first chunk is seq 0, as the recorder numbers them). The export asks for
[seq 1's start + 0.5 s, seq 2's end - 0.5 s): chunks 1 and 2 with the gap between
them; ``chain_prev`` is seq 0's chain hash, ``chain_tail`` is seq 3, which the
checkpoint covers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from recorder import importer
from retrieval.package import PackageResult, PayloadFile, build_package
from tests.media import encode
from vigil import chain, custody

T0_US = 1_764_000_000_000_000  # 2025-11-24T16:00:00Z
GAP_US = 1_000_000
CAMERA_ID = 3
CAMERA_NAME = "gate-north"
CASE = "K7Q2-MX4P"
EXPORT_ID = "5f0c1e2a-7d4b-4c1e-9a3f-2b6d8e0f1a7c"
PACKAGED_AT = datetime(2025, 11, 25, 9, 30, 0, tzinfo=UTC)
PACKAGE_KEY_SEED = hashlib.sha256(b"vigil tests: package signing key").digest()
CHECKPOINT_KEY_SEED = hashlib.sha256(b"vigil tests: recorder checkpoint key").digest()
BAG = f"vigil-export-{EXPORT_ID}"


@dataclass(frozen=True)
class Footage:
    path: Path
    seq: int
    start_us: int
    end_us: int
    media_duration_us: int
    plaintext_bytes: int
    sha256: str
    chain_hash: str

    def link_fields(self) -> dict[str, Any]:
        return {"seq": self.seq, "start_us": self.start_us, "end_us": self.end_us,
                "media_duration_us": self.media_duration_us,
                "plaintext_bytes": self.plaintext_bytes, "sha256": self.sha256,
                "chain_hash": self.chain_hash, "clock_source": "receive"}


@dataclass(frozen=True)
class Built:
    path: Path
    result: PackageResult
    inputs: dict[str, Any]  # build_package's keyword arguments, ``out`` aside
    signing_key: Ed25519PrivateKey
    checkpoint_key: Ed25519PrivateKey

    @property
    def evidence(self) -> dict[str, Any]:
        return self.inputs["evidence"]


def package_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(PACKAGE_KEY_SEED)


def checkpoint_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(CHECKPOINT_KEY_SEED)


def cut_footage(workdir: Path) -> list[Footage]:
    """Four chunks of real H.264 + AAC footage, chained from GENESIS."""
    source = encode(workdir / "camera.mp4", seconds=8, gop=25)
    chunks_dir = workdir / "chunks"
    chunks_dir.mkdir()
    with importer.open_video(source) as container:
        cuts = importer.cut_file(container, workdir=chunks_dir, target_us=2_000_000,
                                 name="x", progress=importer._Progress(None))
    assert len(cuts) == 4, [c.media_duration_us for c in cuts]
    footage, start_us, prev = [], T0_US, chain.GENESIS
    for seq, cut in enumerate(cuts):
        if seq == 2:
            start_us += GAP_US  # the recorder stopped for a second: a new run
        data = cut.path.read_bytes()
        link = chain.Link(camera_id=CAMERA_ID, seq=seq, start_us=start_us,
                          end_us=start_us + cut.media_duration_us,
                          media_duration_us=cut.media_duration_us, plaintext_bytes=len(data),
                          sha256=hashlib.sha256(data).digest(), clock_source="receive")
        prev = chain.chain_hash(prev, link)
        footage.append(Footage(path=cut.path, seq=seq, start_us=link.start_us,
                               end_us=link.end_us, media_duration_us=link.media_duration_us,
                               plaintext_bytes=len(data), sha256=link.sha256.hex(),
                               chain_hash=prev.hex()))
        start_us = link.end_us
    return footage


def custody_lines(*, export_id: str = EXPORT_ID) -> list[str]:
    events = [("case_opened", None, {"title": "Burglary, north gate"}),
              ("export_requested", export_id, {"purpose": "court"}),
              ("export_packaged", export_id, {"payload_files": 3})]
    lines, prev = [], custody.GENESIS
    for seq, (action, event_export, detail) in enumerate(events, start=1):
        event = custody.CustodyEvent(case=CASE, seq=seq, at_us=T0_US + 86_400_000_000 + seq,
                                     actor="inspector.li" if seq < 3 else "system",
                                     action=action, export_id=event_export, detail=detail,
                                     prev_hash=prev)
        prev = event.digest()
        lines.append(event.line(prev))
    return lines


def make_inputs(workdir: Path) -> dict[str, Any]:
    """Everything ``build_package`` takes but ``out``, from freshly cut footage."""
    from retrieval import clip as clips

    footage = cut_footage(workdir)
    exported = footage[1:3]
    tail = footage[3]
    from_us, to_us = exported[0].start_us + 500_000, exported[1].end_us - 500_000
    gaps = [{"start_us": exported[0].end_us, "end_us": exported[1].start_us,
             "cause": "unrecorded", "detail": ""}]
    camera_dir = f"camera-{CAMERA_ID}"
    sources = [clips.ClipSource(f.path, f.seq, f.start_us, f.end_us) for f in exported]
    clip_path = workdir / "clip.mp4"
    stitched = clips.stitch(sources, from_us=from_us, to_us=to_us, out=clip_path,
                            title=CAMERA_NAME,
                            gaps=[clips.ClipGap(g["start_us"], g["end_us"], g["cause"])
                                  for g in gaps])

    recorder_key = checkpoint_key()
    fingerprint = chain.fingerprint(recorder_key.public_key())
    checkpoint = chain.Checkpoint(camera_id=CAMERA_ID, seq=tail.seq,
                                  chain_hash=bytes.fromhex(tail.chain_hash),
                                  signed_at_us=tail.end_us + 3_000_000,
                                  key_fingerprint=fingerprint)
    signature = chain.sign_checkpoint(recorder_key, checkpoint)
    evidence = {
        "format": "vigil-evidence/1",
        "export": {"id": EXPORT_ID, "case": {"reference": CASE, "title": "Burglary, north gate"},
                   "requested_by": "inspector.li", "purpose": "court", "recipient": None,
                   "requested_at": "2025-11-25T09:00:00+00:00",
                   "packaged_at": PACKAGED_AT.isoformat()},
        "items": [{
            "camera": {"id": CAMERA_ID, "name": CAMERA_NAME, "region": "city/north"},
            "from_us": from_us, "to_us": to_us,
            "chunks": [{**f.link_fields(),
                        "file": f"data/{camera_dir}/originals/{f.seq:010d}.mov"}
                       for f in exported],
            "chain_prev": footage[0].chain_hash,
            "chain_tail": [tail.link_fields()],
            "checkpoint": {"seq": checkpoint.seq, "chain_hash": tail.chain_hash,
                           "signed_at_us": checkpoint.signed_at_us,
                           "key_fingerprint": fingerprint, "signature": signature.hex()},
            "gaps": gaps,
            "clip": {"file": f"data/{camera_dir}/clip.mp4",
                     "first_frame_us": stitched.first_frame_us,
                     "last_frame_us": stitched.last_frame_us, "frames": stitched.frames},
            "watermarked": None,
        }],
        "keys": {"checkpoint_signing": [{
            "fingerprint": fingerprint,
            "public_key": recorder_key.public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw).hex()}]},
        "software": {"vigil": "0.1.0", "python": "3.11.7", "pyav": "test",
                     "libavformat": "test"},
    }
    files = [PayloadFile(name=f"{camera_dir}/originals/{f.seq:010d}.mov", path=f.path,
                         sha256=f.sha256) for f in exported]
    files.append(PayloadFile(name=f"{camera_dir}/clip.mp4", path=clip_path))
    return {"export_id": EXPORT_ID,
            "bag_info": {"Source-Organization": "Vigil test bureau",
                         "External-Description": f"Vigil evidence export for case {CASE}",
                         "Bag-Software-Agent": "vigil 0.1.0", "Vigil-Case": CASE},
            "evidence": evidence, "custody_lines": custody_lines(), "files": files,
            "signing_key": package_key(), "packaged_at": PACKAGED_AT}


def build(workdir: Path, out: Path | None = None, **overrides: Any) -> Built:
    """A package built from fresh footage under ``workdir`` (``overrides`` replace
    build_package's arguments)."""
    workdir.mkdir(parents=True, exist_ok=True)
    inputs = {**make_inputs(workdir), **overrides}
    out = out or workdir / "package.zip"
    result = build_package(out=out, **inputs)
    return Built(path=out, result=result, inputs=inputs, signing_key=inputs["signing_key"],
                 checkpoint_key=checkpoint_key())
