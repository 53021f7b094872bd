"""Benchmark of ``vigil verify``: its throughput against ``sha256sum`` over the same
package.

What is measured
    Megabytes of package per second of wall time, by

    * Vigil: ``vigil verify PACKAGE``, the real CLI (``.venv/bin/vigil``) as a child
      process, interpreter start-up included: every check of
      ``retrieval/verify.py``, the clip's re-stitch (``clip.restitch``) included;
      and, as a second figure, ``vigil verify --no-restitch PACKAGE``;
    * the baseline: ``sha256sum -c manifest-sha256.txt`` then ``sha256sum -c
      tagmanifest-sha256.txt`` (coreutils), run in the bag directory of the same
      package extracted once beforehand (untimed): every payload and tag file hashed
      and compared, which is the package's check with standard tools alone
      (docs/design/package.md).

    Why the extracted bag and not ``sha256sum PACKAGE.zip``: both hash the same
    bytes (the zip is the payload stored, not deflated, plus a few kB of headers and
    tag files), but ``sha256sum PACKAGE.zip`` checks nothing, while ``-c`` over the
    manifests is the work a verifier with standard tools really does: one open, one
    read and one comparison per file, as ``vigil verify`` does per member.
    ``sha256sum PACKAGE.zip`` is shown as context; the two come out within a few
    per cent of each other.

    Throughput is the package's size (the zip's bytes) over the wall time, for every
    contender: the same numerator, so that the ratio is the ratio of the times. The
    contenders run alternately, ``--rounds`` times each (the order rotates every
    round); reported per round and as the median. Targets: ``vigil verify`` (full,
    re-stitch included) at least 0.8 of ``sha256sum``'s throughput; the
    ``--no-restitch`` figure is shown against the same target.

How
    1. Footage: the source of ``bench/ingest.py`` (1080p25 H.264, 4 Mbit/s, closed 2 s
       GOPs) looped by stream copy into ``--minutes`` of MP4 (cached under
       ``bench/out/``), cut into 60 s chunks by the recorder's cutter
       (``recorder.importer.cut_file``), chained from GENESIS in wall time from a
       fixed instant, with a checkpoint signed over the last chunk.
    2. The package: ``retrieval.package.build_package`` with the real originals, the
       clip ``retrieval.clip.stitch`` makes from them over ``[first chunk's start +
       0.5 s, last chunk's end - 0.5 s)``, the evidence, a custody record and the
       fixed test keys of ``tests/packages.py`` (whose own builder makes 4 chunks of
       8 s of 320x240: too small for throughput). 30 minutes give a package of ~1.7
       GB: the originals and the clip, about the footage's size each.
    3. The package is extracted once (untimed) for the baseline; both are read once
       before the rounds, so that every contender reads from the page cache.
    4. Each contender is timed around ``subprocess.run``; ``vigil verify`` must exit
       0 and print VERIFIED, ``sha256sum -c`` must exit 0.

Run from the repository root (~4 minutes, ~4 GB of free space under the
temporary directory):

    .venv/bin/python bench/verify.py                       # 30 min, 3 rounds
    .venv/bin/python bench/verify.py --minutes 3 --rounds 1
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/verify.py` puts bench/ first, not the root
    sys.path.insert(0, str(REPO))

from bench.export import MB, SHA256SUM, header, looped_footage  # noqa: E402
from bench.ingest import Source, log, table, workspace  # noqa: E402

TARGET_RATIO: Final = 0.8
VIGIL_CLI: Final = Path(sys.executable).parent / "vigil"
PY_SPY: Final = Path(sys.executable).parent / "py-spy"
T0_US: Final = 1_764_000_000_000_000  # 2025-11-24T16:00:00Z
CHUNK_US: Final = 60_000_000
EDGE_US: Final = 500_000
PAUSE_S: Final = 2.0
READ_BLOCK: Final = 1 << 20


@dataclass(frozen=True)
class Package:
    path: Path
    bag: Path  # the extracted bag directory
    bytes: int
    files: int
    chunks: int
    originals_bytes: int
    clip_bytes: int
    media_s: float


def build(src: Source, minutes: float, workdir: Path) -> Package:
    """A real package of ``minutes`` of 1080p footage (module doc, step 2)."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from recorder import importer
    from retrieval import clip as clips
    from retrieval.package import PayloadFile, build_package
    from tests import packages as t
    from vigil import chain

    footage = looped_footage(src, minutes)
    folder = workdir / "chunks"
    folder.mkdir()
    log(f"cutting {footage.name} into 60 s chunks ...")
    with importer.open_video(footage) as container:
        cuts = importer.cut_file(container, workdir=folder, target_us=CHUNK_US,
                                 name=footage.name, progress=importer._Progress(None))
    placed = importer.place(cuts, start_us=T0_US)
    chunks, prev = [], chain.GENESIS
    for seq, (cut, (start_us, end_us)) in enumerate(zip(cuts, placed, strict=True)):
        digest, size = _hash(cut.path)
        link = chain.Link(camera_id=t.CAMERA_ID, seq=seq, start_us=start_us, end_us=end_us,
                          media_duration_us=cut.media_duration_us, plaintext_bytes=size,
                          sha256=digest, clock_source="receive")
        prev = chain.chain_hash(prev, link)
        chunks.append({"seq": seq, "start_us": start_us, "end_us": end_us,
                       "media_duration_us": cut.media_duration_us, "plaintext_bytes": size,
                       "sha256": digest.hex(), "chain_hash": prev.hex(),
                       "clock_source": "receive", "path": cut.path})
    from_us, to_us = placed[0][0] + EDGE_US, placed[-1][1] - EDGE_US
    camera_dir = f"camera-{t.CAMERA_ID}"
    log("stitching the clip ...")
    clip_path = workdir / "clip.mp4"
    stitched = clips.stitch([clips.ClipSource(c["path"], c["seq"], c["start_us"], c["end_us"])
                             for c in chunks], from_us=from_us, to_us=to_us, out=clip_path,
                            title=t.CAMERA_NAME)
    recorder_key = t.checkpoint_key()
    fingerprint = chain.fingerprint(recorder_key.public_key())
    last = chunks[-1]
    checkpoint = chain.Checkpoint(camera_id=t.CAMERA_ID, seq=last["seq"],
                                  chain_hash=bytes.fromhex(last["chain_hash"]),
                                  signed_at_us=last["end_us"] + 3_000_000,
                                  key_fingerprint=fingerprint)
    signature = chain.sign_checkpoint(recorder_key, checkpoint)

    def record(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k != "path"} | {
            "file": f"data/{camera_dir}/originals/{c['seq']:010d}.mov"}

    evidence = {
        "format": "vigil-evidence/1",
        "export": {"id": t.EXPORT_ID,
                   "case": {"reference": t.CASE, "title": "Burglary, north gate"},
                   "requested_by": "inspector.li", "purpose": "court", "recipient": None,
                   "requested_at": "2025-11-25T09:00:00+00:00",
                   "packaged_at": t.PACKAGED_AT.isoformat()},
        "items": [{
            "camera": {"id": t.CAMERA_ID, "name": t.CAMERA_NAME, "region": "city/north"},
            "from_us": from_us, "to_us": to_us,
            "chunks": [record(c) for c in chunks],
            "chain_prev": chain.GENESIS.hex(),
            "chain_tail": [],
            "checkpoint": {"seq": checkpoint.seq, "chain_hash": last["chain_hash"],
                           "signed_at_us": checkpoint.signed_at_us,
                           "key_fingerprint": fingerprint, "signature": signature.hex()},
            "gaps": [],
            "clip": {"file": f"data/{camera_dir}/clip.mp4",
                     "first_frame_us": stitched.first_frame_us,
                     "last_frame_us": stitched.last_frame_us, "frames": stitched.frames},
            "watermarked": None,
        }],
        "keys": {"checkpoint_signing": [{
            "fingerprint": fingerprint,
            "public_key": recorder_key.public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw).hex()}]},
        "software": {"vigil": "0.1.0", "python": "3.11", "pyav": "bench",
                     "libavformat": "bench"},
    }
    files = [PayloadFile(name=f"{camera_dir}/originals/{c['seq']:010d}.mov", path=c["path"],
                         sha256=c["sha256"]) for c in chunks]
    files.append(PayloadFile(name=f"{camera_dir}/clip.mp4", path=clip_path))
    log("building the package ...")
    out = workdir / "package.zip"
    result = build_package(
        out=out, export_id=t.EXPORT_ID,
        bag_info={"Source-Organization": "Vigil bench",
                  "External-Description": f"Vigil evidence export for case {t.CASE}",
                  "Bag-Software-Agent": "vigil 0.1.0", "Vigil-Case": t.CASE},
        evidence=evidence, custody_lines=t.custody_lines(), files=files,
        signing_key=t.package_key(), packaged_at=t.PACKAGED_AT)
    log("extracting it for the baseline (untimed) ...")
    extracted = workdir / "extracted"
    with zipfile.ZipFile(out) as zf:
        zf.extractall(extracted)
    originals = sum(c["plaintext_bytes"] for c in chunks)
    clip_bytes = clip_path.stat().st_size
    for c in chunks:  # the package holds them now; keep the disk and page cache for it
        c["path"].unlink()
    clip_path.unlink()
    return Package(path=out, bag=extracted / t.BAG, bytes=result.bytes,
                   files=len(files), chunks=len(chunks), originals_bytes=originals,
                   clip_bytes=clip_bytes, media_s=(to_us - from_us) / 1e6)


def _hash(path: Path) -> tuple[bytes, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as f:
        while block := f.read(READ_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.digest(), size


def warm(package: Package) -> None:
    """Read the zip and the extracted files once, so that every contender reads from
    the page cache."""
    for path in [package.path, *sorted(p for p in package.bag.rglob("*") if p.is_file())]:
        _hash(path)


# --- the contenders ------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, check=False)
    seconds = time.perf_counter() - t0
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} exited {result.returncode}:\n"
                           f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return seconds, result.stdout


def vigil_verify(package: Package, *extra: str) -> float:
    seconds, stdout = _run([str(VIGIL_CLI), "verify", *extra, str(package.path)])
    if "VERIFIED" not in stdout.splitlines()[-1:]:
        raise RuntimeError(f"vigil verify did not say VERIFIED:\n{stdout[-2000:]}")
    return seconds


def sha256sum_check(package: Package) -> float:
    a, _ = _run([SHA256SUM, "-c", "--quiet", "manifest-sha256.txt"], cwd=package.bag)
    b, _ = _run([SHA256SUM, "-c", "--quiet", "tagmanifest-sha256.txt"], cwd=package.bag)
    return a + b


def sha256sum_zip(package: Package) -> float:
    return _run([SHA256SUM, str(package.path)])[0]


CONTENDERS: Final = {
    "vigil verify": lambda p: vigil_verify(p),
    "vigil verify --no-restitch": lambda p: vigil_verify(p, "--no-restitch"),
    "sha256sum -c (extracted bag)": sha256sum_check,
}
BASELINE: Final = "sha256sum -c (extracted bag)"


def report(package: Package, times: dict[str, list[float]], context: dict[str, list[float]]
           ) -> bool:
    mb = package.bytes / MB
    base = statistics.median(times[BASELINE])
    rounds = len(times[BASELINE])
    rows = [("", "s", "MB/s", "vs sha256sum -c")]
    for name in CONTENDERS:
        for n, s in enumerate(times[name], start=1):
            rows.append((f"{name}, round {n}", f"{s:.2f}", f"{mb / s:.0f}",
                         f"{times[BASELINE][n - 1] / s:.3f}"))
    for name in CONTENDERS:
        s = statistics.median(times[name])
        rows.append((f"{name}, median", f"{s:.2f}", f"{mb / s:.0f}", f"{base / s:.3f}"))
    rows.append(("-- context --", "", "", ""))
    for name, values in context.items():
        s = statistics.median(values)
        rows.append((f"{name}, median", f"{s:.2f}", f"{mb / s:.0f}" if s > 0.5 else "",
                     f"{base / s:.3f}" if s > 0.5 else ""))
    print(table(rows))
    full = base / statistics.median(times["vigil verify"])
    fast = base / statistics.median(times["vigil verify --no-restitch"])
    ok = full >= TARGET_RATIO
    print()
    print(f"  ({rounds} round(s); the order of the three rotates every round)")
    print(f"  target: vigil verify at least {TARGET_RATIO:g} of sha256sum's throughput: "
          f"{full:.3f}  {'PASS' if ok else 'FAIL'}")
    print(f"  (--no-restitch: {fast:.3f}  "
          f"{'would pass' if fast >= TARGET_RATIO else 'would fail'})")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="footage in the package (30 min: ~1.7 GB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="after the rounds, profile one more `vigil verify` with py-spy "
                             "(raw format; not counted)")
    args = parser.parse_args(argv)

    src = Source()
    with workspace(args.keep) as workdir:
        package = build(src, args.minutes, workdir)
        header(f"Verify benchmark: a package of {args.minutes:g} min of footage, "
               f"{args.rounds} round(s)")
        print(f"package: {package.bytes / MB:.0f} MB ({package.bytes:,} bytes), "
              f"{package.files} payload files: {package.chunks} originals of 60 s "
              f"({package.originals_bytes / MB:.0f} MB) and the stitched clip "
              f"({package.clip_bytes / MB:.0f} MB, {package.media_s / 60:.2f} min), "
              f"from {src.describe()}")
        warm(package)
        names = list(CONTENDERS)
        times: dict[str, list[float]] = {n: [] for n in names}
        context: dict[str, list[float]] = {"sha256sum PACKAGE.zip": [],
                                           "vigil verify --help (CLI start-up)": []}
        for r in range(1, args.rounds + 1):
            k = (r - 1) % len(names)
            for name in names[k:] + names[:k]:
                time.sleep(PAUSE_S)
                times[name].append(CONTENDERS[name](package))
                log(f"round {r}: {name} {times[name][-1]:.2f} s")
            context["sha256sum PACKAGE.zip"].append(sha256sum_zip(package))
            context["vigil verify --help (CLI start-up)"].append(
                _run([str(VIGIL_CLI), "verify", "--help"])[0])
        if args.py_spy:
            log(f"profiling one more vigil verify into {args.py_spy} ...")
            _run([str(PY_SPY), "record", "--rate", "100", "--format", "raw", "--output",
                  args.py_spy, "--", str(VIGIL_CLI), "verify", str(package.path)])
    print()
    ok = report(package, times, context)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
