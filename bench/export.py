"""Benchmark of an evidence export: ``run_export`` against ``ffmpeg -f concat -c copy``.

What is measured
    The wall time to turn ``--minutes`` of recorded 4 Mbit/s 1080p footage into a
    finished package, by

    * Vigil: ``retrieval.exports.run_export``, in this process, exactly as a worker
      runs it (lease, plan, fetch every sealed chunk from the S3 server, decrypt and
      check it against the catalog and the chain up to the signed checkpoint, write
      the originals, stitch the clip, record the custody event, build the signed
      BagIt zip and check it with the offline verifier (the re-stitch aside) while
      hashing it, seal it under a fresh data key as it is uploaded, read it back). No
      recipient: no
      watermark;
    * the baseline (issue 4): ``ffmpeg -f concat -safe 0 -i list.txt -c copy
      -movflags +faststart out.mp4`` over the same chunks as plaintext local files,
      then ``sha256sum`` of every input and the output (real binaries: the
      imageio-ffmpeg FFmpeg and coreutils' ``sha256sum``, one process each, one
      after the other as a shell would run them);

    alternately, ``--rounds`` times each (odd rounds Vigil first, even rounds the
    baseline first), on the same chunks. Reported per round and as the median;
    target: Vigil's median at most 1.5 times the baseline's.

    Context, not counted: the import that brought the footage in (``import_file``:
    cut, seal, store, commit, checkpoint), the download of each package
    (``download_package``: fetch, decrypt, check its hash, custody event), the CPU
    of this process and of the bench stack's servers during ``run_export`` (the S3
    server does real work for Vigil, none for the baseline), and where Vigil's time
    goes, stage by stage.

How
    1. The source of ``bench/ingest.py`` (90 s of 1080p25 H.264 at 4 Mbit/s with
       temporal noise, closed 2 s GOPs, cached under ``bench/out/``) is remuxed into
       an MP4 and looped by stream copy (``-stream_loop N -c copy -t``) into an MP4 of
       ``--minutes``, cached under ``bench/out/`` as well.
    2. A stack of its own under a temporary home on free ports (``vigil stack up``,
       ``vigil db upgrade``, ``vigil camera add``; never the default ports or
       ``./var``), stopped with ``vigil stack down`` whatever happens.
    3. ``recorder.importer.import_file`` brings the MP4 into the camera in chunks of
       ``--chunk-seconds`` (60): sealed chunks in the real S3 server, chained,
       checkpointed, ending an hour before now.
    4. The baseline's inputs: every chunk is read back with ``vigil.chunks.
       read_plaintext`` into a local ``.mov`` file, untimed, and ``list.txt`` names
       them in seq order.
    5. Each round times both, in alternating order. Vigil: an investigator's export
       of the whole imported range is requested (``request_export``, committed), then
       ``run_export`` is timed with ``time.perf_counter``; the package is then
       downloaded (timed apart) and removed. The baseline: the two commands, timed
       together; its output is removed after each round.
    6. Stages: the functions ``run_export`` calls through module attributes
       (``_check_chain``, ``read_plaintext``, ``clip.stitch``,
       ``package.build_package`` and its ``_hash_file``, ``verify.verify_package``,
       ``clip.check_restitch``, the store's ``put_stream`` and its read-back
       ``sha256_of``) are wrapped in this process, for the measured
       rounds too, to record when each starts and ends (a few function calls per
       chunk: nothing measurable; nothing under ``retrieval/`` is changed). Phases run
       from one boundary to the next, so they add up to the total.

Caveats
    * Both sides read warm data: the chunks in the S3 server's volume files and the
      plaintext files were just written and fit in the page cache.
    * Vigil writes more than the baseline by design: the originals, the clip and a zip
      holding both (twice the footage), which the S3 server stores again, sealed.

Run from the repository root (60 minutes, 3 rounds: ~8 minutes on 2 cores, ~15 GB
of free space under the temporary directory):

    .venv/bin/python bench/export.py                      # 60 min, 3 rounds
    .venv/bin/python bench/export.py --minutes 5 --rounds 1
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/export.py` puts bench/ first, not the root
    sys.path.insert(0, str(REPO))

import psutil  # noqa: E402

from bench.ingest import (  # noqa: E402
    FFMPEG,
    OUT_DIR,
    BenchStack,
    Source,
    cpu_seconds,
    encode_source,
    log,
    table,
    workspace,
)

TARGET_RATIO: Final = 1.5
MB: Final = 1024 * 1024
CAMERA: Final = "bench-cam"
# The camera's URL: never connected to (no recorder runs), the footage is imported.
CAMERA_URL: Final = "rtsp://127.0.0.1:9/none"
INVESTIGATOR: Final = "bench-investigator"
OWNER: Final = "bench"
# The imported footage ends this long before now (an import may not end in the future).
END_BEFORE_NOW: Final = timedelta(hours=1)
SHA256SUM: Final = "sha256sum"
PAUSE_S: Final = 2.0


# --- the footage ---------------------------------------------------------------------


def _ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True)


def source_mp4(src: Source) -> Path:
    """The bench source remuxed into an MP4 (a raw stream has no timestamps); cached."""
    encode_source(src)
    out = src.path.with_suffix(".mp4")
    if not out.exists():
        tmp = out.with_suffix(".tmp.mp4")
        _ffmpeg("-f", "h264", "-framerate", str(src.fps), "-i", str(src.path), "-c", "copy",
                "-fflags", "+genpts", "-movflags", "+faststart", str(tmp))
        os.replace(tmp, out)
    return out


def looped_footage(src: Source, minutes: float) -> Path:
    """``minutes`` of the source, looped by stream copy into one MP4; cached."""
    base = source_mp4(src)
    seconds = minutes * 60
    out = OUT_DIR / f"{src.path.stem}-loop-{minutes:g}min.mp4"
    if not out.exists():
        loops = max(0, math.ceil(seconds / src.seconds) - 1)
        log(f"looping the source into {minutes:g} min of footage ...")
        tmp = out.with_suffix(".tmp.mp4")
        _ffmpeg("-stream_loop", str(loops), "-i", str(base), "-c", "copy", "-t", f"{seconds:g}",
                "-movflags", "+faststart", str(tmp))
        os.replace(tmp, out)
    return out


# --- stages --------------------------------------------------------------------------


@dataclass
class Timing:
    first_start: float = math.inf
    last_end: float = 0.0
    total: float = 0.0
    calls: int = 0


@dataclass
class StageClock:
    """Start and end times of the functions ``run_export`` calls (in this process)."""

    spans: dict[str, Timing] = field(default_factory=dict)
    in_verify: bool = False

    def reset(self) -> None:
        self.spans.clear()
        self.in_verify = False

    def record(self, label: str, t0: float, t1: float) -> None:
        s = self.spans.setdefault(label, Timing())
        s.first_start, s.last_end = min(s.first_start, t0), max(s.last_end, t1)
        s.total += t1 - t0
        s.calls += 1

    def start(self, label: str) -> float:
        return self.spans[label].first_start if label in self.spans else math.nan

    def end(self, label: str) -> float:
        return self.spans[label].last_end if label in self.spans else math.nan

    def total(self, label: str) -> float:
        return self.spans[label].total if label in self.spans else 0.0


@contextmanager
def instrumented(clock: StageClock) -> Iterator[None]:
    """Wrap what ``run_export`` calls through module attributes; undone on exit."""
    from retrieval import clip, exports, package, verify

    saved: list[tuple[object, str, object]] = []

    def swap(owner: object, name: str, new: object) -> None:
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, new)

    def timed(label: str | Callable[[], str], fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            name = label() if callable(label) else label
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                clock.record(name, t0, time.perf_counter())
        return wrapper

    def verifying(fn: Callable[..., Any]) -> Callable[..., Any]:
        inner = timed("verify", fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            clock.in_verify = True
            try:
                return inner(*args, **kwargs)
            finally:
                clock.in_verify = False
        return wrapper

    real_store = exports.get_object_store

    def store_of(settings: Any) -> Any:
        store = real_store(settings)
        # This instance only; put_stream calls self.sha256_of for its read-back.
        store.put_stream = timed("store", store.put_stream)
        store.sha256_of = timed("readback", store.sha256_of)
        return store

    swap(exports, "_check_chain", timed("check_chain", exports._check_chain))
    swap(exports, "read_plaintext", timed("read_plaintext", exports.read_plaintext))
    swap(exports, "get_object_store", store_of)
    swap(clip, "stitch", timed(lambda: "restitch.stitch" if clock.in_verify else "stitch",
                               clip.stitch))
    swap(clip, "check_restitch", timed("restitch", clip.check_restitch))
    swap(package, "build_package", timed("build_package", package.build_package))
    swap(package, "_hash_file", timed("zip_rehash", package._hash_file))
    swap(verify, "verify_package", verifying(verify.verify_package))
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            setattr(owner, name, original)


# Phases: (name, the boundary it starts at); each ends where the next one starts.
PHASES: Final = (
    ("plan (lease, chunks, checkpoint, gaps)", "begin"),
    ("fetch: S3 get, decrypt, check, write", "check_chain"),
    ("stitch the clip", "stitch"),
    ("evidence, custody event", "stitch_end"),
    ("build the zip, self-check it", "build_package"),
    ("(between build and store)", "build_end"),
    ("seal and store it (put, read-back)", "store"),
    ("mark succeeded, clean up", "store_end"),
)


def phases(clock: StageClock, begin: float, end: float) -> dict[str, float]:
    marks = {"begin": begin, "check_chain": clock.start("check_chain"),
             "stitch": clock.start("stitch"), "stitch_end": clock.end("stitch"),
             "build_package": clock.start("build_package"),
             "build_end": clock.end("build_package"), "store": clock.start("store"),
             "store_end": clock.end("store")}
    bounds = [marks[b] for _, b in PHASES] + [end]
    out = {name: bounds[i + 1] - bounds[i] for i, (name, _) in enumerate(PHASES)}
    out["  of fetch: read_plaintext (get, unwrap, decrypt, hash)"] = clock.total(
        "read_plaintext")
    out["  of build: hash the finished zip again"] = clock.total("zip_rehash")
    out["  of build: self-check, alongside that hash"] = clock.total("verify")
    out["  of self-check: clip re-stitch check"] = clock.total("restitch")
    out["  of store: read-back (streamed get, hash)"] = clock.total("readback")
    return out


# --- the stack, the footage in it ----------------------------------------------------


@dataclass(frozen=True)
class Imported:
    camera_id: int
    start_at: datetime
    end_at: datetime
    chunks: int
    plaintext_bytes: int
    stored_bytes: int
    media_s: float
    seconds: float  # wall time of the import


def import_footage(settings: Any, footage: Path, chunk_seconds: int) -> Imported:
    from recorder.importer import import_file

    minutes = _media_seconds(footage) / 60
    start = (datetime.now(UTC) - END_BEFORE_NOW - timedelta(minutes=minutes + 1)
             ).replace(microsecond=0)
    log(f"importing {footage.name} ({footage.stat().st_size / MB:.0f} MB) in "
        f"{chunk_seconds} s chunks ...")
    t0 = time.perf_counter()
    result = import_file(settings=settings, path=footage, camera_name=CAMERA, start_at=start,
                         actor=OWNER, chunk_seconds=chunk_seconds)
    seconds = time.perf_counter() - t0
    rows = _query("SELECT count(*), sum(plaintext_bytes)::bigint, sum(stored_bytes)::bigint, "
                  "sum(media_duration_us)::bigint FROM chunks WHERE camera_id = :c",
                  c=result.camera_id)
    count, plain, stored, media_us = rows[0]
    return Imported(camera_id=result.camera_id, start_at=result.start_at,
                    end_at=result.end_at, chunks=count, plaintext_bytes=plain,
                    stored_bytes=stored, media_s=media_us / 1e6, seconds=seconds)


def _media_seconds(path: Path) -> float:
    import av

    with av.open(str(path)) as c:
        return (c.duration or 0) / 1e6


def _query(sql: str, **params: object) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    from vigil.db import get_engine

    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def decrypt_chunks(settings: Any, camera_id: int, folder: Path) -> list[Path]:
    """Every chunk of the camera as a plaintext file, in seq order (untimed)."""
    from sqlalchemy import select

    from vigil import keys
    from vigil.catalog.models import Chunk
    from vigil.chunks import read_plaintext
    from vigil.db import session_scope
    from vigil.objectstore import get_object_store

    folder.mkdir(parents=True)
    provider = keys.file_key_ring(settings.home_dir)
    store = get_object_store(settings)
    paths = []
    with session_scope() as session:
        for chunk in session.scalars(select(Chunk).where(Chunk.camera_id == camera_id)
                                     .order_by(Chunk.seq)):
            path = folder / f"{chunk.seq:010d}.mov"
            path.write_bytes(read_plaintext(session=session, provider=provider, store=store,
                                            chunk=chunk))
            paths.append(path)
    return paths


def make_case() -> str:
    from retrieval import cases
    from vigil.auth import service as auth_service
    from vigil.db import session_scope

    with session_scope() as session:
        auth_service.issue_token(session=session, principal_name=INVESTIGATOR,
                                 role="investigator", label="bench", actor=OWNER)
    with session_scope() as session:
        case = cases.create_case(session=session, title="Export benchmark",
                                 principal=_principal(session))
        return case.reference


def _principal(session: Any) -> Any:
    from sqlalchemy import select

    from vigil.catalog.models import Principal

    return session.scalars(select(Principal).where(Principal.name == INVESTIGATOR)).one()


def request(reference: str, imported: Imported) -> uuid.UUID:
    from retrieval import exports
    from vigil.db import session_scope

    with session_scope() as session:
        export = exports.request_export(
            session=session, reference=reference,
            items=[exports.ItemRequest(CAMERA, imported.start_at, imported.end_at)],
            purpose="benchmark", recipient=None, principal=_principal(session))
        return export.id


# --- the two contenders --------------------------------------------------------------


@dataclass
class VigilRun:
    seconds: float
    phases: dict[str, float]
    package_bytes: int
    download_s: float
    cpu_s: float
    stack_cpu_s: float  # PostgreSQL, the S3 server, Redis during run_export


@dataclass
class BaselineRun:
    seconds: float
    concat_s: float
    sha256_s: float
    output_bytes: int
    cpu_s: float


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _self_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def run_vigil(settings: Any, reference: str, imported: Imported, clock: StageClock,
              workdir: Path, stack: Sequence[psutil.Process]) -> VigilRun:
    from retrieval import exports
    from vigil.catalog.models import Export
    from vigil.db import session_scope

    export_id = request(reference, imported)
    clock.reset()
    cpu0, stack0 = _self_cpu(), cpu_seconds(stack)
    t0 = time.perf_counter()
    outcome = exports.run_export(settings=settings, export_id=export_id, owner=OWNER)
    t1 = time.perf_counter()
    cpu, stack_cpu = _self_cpu() - cpu0, cpu_seconds(stack) - stack0
    with session_scope() as session:
        row = session.get(Export, export_id)
        assert row is not None
        status, error, size = row.status.value, row.error, row.package_bytes
    if outcome != "succeeded":
        raise RuntimeError(f"run_export returned {outcome!r} (status {status}: {error})")
    dst = workdir / f"download-{export_id}.zip"
    d0 = time.perf_counter()
    with session_scope() as session:
        principal = _principal(session)
        export, case = exports.get_export(session=session, export_id=export_id,
                                          principal=principal)
        exports.download_package(session=session, settings=settings, export=export, case=case,
                                 principal=principal, dst=dst, via="bench")
    download_s = time.perf_counter() - d0
    if dst.stat().st_size != size:
        raise RuntimeError(f"the download is {dst.stat().st_size} bytes, not {size}")
    dst.unlink()
    return VigilRun(seconds=t1 - t0, phases=phases(clock, t0, t1), package_bytes=size or 0,
                    download_s=download_s, cpu_s=cpu, stack_cpu_s=stack_cpu)


def run_baseline(inputs: Sequence[Path], workdir: Path, round_no: int) -> BaselineRun:
    folder = workdir / f"baseline-{round_no}"
    folder.mkdir()
    listing = folder / "list.txt"
    listing.write_text("".join(f"file '{p}'\n" for p in inputs))
    out = folder / "out.mp4"
    cpu0 = _children_cpu()
    t0 = time.perf_counter()
    subprocess.run([FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "concat",
                    "-safe", "0", "-i", str(listing), "-c", "copy", "-movflags", "+faststart",
                    str(out)], check=True)
    t1 = time.perf_counter()
    subprocess.run([SHA256SUM, *map(str, inputs), str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    t2 = time.perf_counter()
    cpu = _children_cpu() - cpu0
    size = out.stat().st_size
    out.unlink()
    return BaselineRun(seconds=t2 - t0, concat_s=t1 - t0, sha256_s=t2 - t1, output_bytes=size,
                       cpu_s=cpu)


# --- profile -------------------------------------------------------------------------


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """py-spy on this process (raw format, all threads), if asked for."""
    if path is None:
        yield
        return
    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "--pid",
                            str(os.getpid()), "--rate", "50", "--nonblocking", "--threads",
                            "--format", "raw", "--output", path],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file and exits
        try:
            spy.wait(60)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


# --- report --------------------------------------------------------------------------


def _revision() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "retrieval", "recorder",
                                "vigil"], cwd=REPO, text=True, capture_output=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (retrieval/recorder/vigil modified: working tree measured)" if dirty
                   else "")


def header(title: str) -> None:
    print(title)
    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"load {os.getloadavg()[0]:.2f} at start")
    print(f"vigil: commit {_revision()}; ffmpeg: {FFMPEG.rsplit('/', 1)[-1]}")


def report(args: argparse.Namespace, imported: Imported, vigil: list[VigilRun],
           baseline: list[BaselineRun]) -> bool:
    mb = imported.plaintext_bytes / MB
    v = statistics.median(r.seconds for r in vigil)
    b = statistics.median(r.seconds for r in baseline)
    rows = [("", "vigil run_export", "concat + sha256sum", "vigil/baseline")]
    for n, (rv, rb) in enumerate(zip(vigil, baseline, strict=True), start=1):
        rows.append((f"round {n} ({'vigil' if n % 2 else 'baseline'} first), s",
                     f"{rv.seconds:.1f}", f"{rb.seconds:.1f}", f"{rv.seconds / rb.seconds:.2f}"))
    rows += [
        ("median, s", f"{v:.1f}", f"{b:.1f}", f"{v / b:.2f}"),
        ("footage MB/s (median)", f"{mb / v:.0f}", f"{mb / b:.0f}", ""),
        ("CPU-s of the process(es), median", f"{statistics.median(r.cpu_s for r in vigil):.1f}",
         f"{statistics.median(r.cpu_s for r in baseline):.1f}", ""),
        ("  + stack's CPU-s (PG, S3, Redis), median",
         f"{statistics.median(r.stack_cpu_s for r in vigil):.1f}", "-", ""),
        ("output MB", f"{vigil[0].package_bytes / MB:.0f} (package)",
         f"{baseline[0].output_bytes / MB:.0f} (out.mp4)", ""),
        ("baseline: concat / sha256sum, s (median)", "",
         f"{statistics.median(r.concat_s for r in baseline):.1f} / "
         f"{statistics.median(r.sha256_s for r in baseline):.1f}", ""),
    ]
    print(table(rows))
    ok = v / b <= TARGET_RATIO
    print()
    print(f"  target: Vigil at most {TARGET_RATIO:g}x the baseline's time: {v / b:.2f}x  "
          f"{'PASS' if ok else 'FAIL'}")

    print()
    print("Where Vigil's time goes (phase boundaries from the wrapped calls; median of the "
          "rounds):")
    names = list(vigil[0].phases)
    srows = [("phase", "s", "share", "footage MB/s")]
    for name in names:
        s = statistics.median(r.phases[name] for r in vigil)
        srows.append((name, f"{s:.1f}", f"{s / v:.0%}", f"{mb / s:.0f}" if s > 0.05 else ""))
    srows.append(("total", f"{v:.1f}", "100%", f"{mb / v:.0f}"))
    print(table(srows))

    print()
    d = statistics.median(r.download_s for r in vigil)
    size = vigil[0].package_bytes
    print(f"context: package {size / MB:.0f} MB ({size / imported.plaintext_bytes:.2f}x the "
          f"footage); download (fetch, decrypt, hash check, custody event) "
          f"{d:.1f} s median, {size / MB / d:.0f} MB/s")
    print(f"context: import of the {imported.media_s / 60:.1f} min file (cut, seal, store with "
          f"read-back, commit, checkpoint) {imported.seconds:.1f} s, "
          f"{imported.plaintext_bytes / MB / imported.seconds:.0f} MB/s, "
          f"{imported.media_s / imported.seconds:.0f}x real time")
    return ok


# --- main ----------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="footage to export")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Vigil and the baseline this many times each, alternating")
    parser.add_argument("--chunk-seconds", type=int, default=60)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="after the measured rounds, profile one more export with py-spy "
                             "(raw format; not counted)")
    args = parser.parse_args(argv)

    src = Source()
    footage = looped_footage(src, args.minutes)
    header(f"Export benchmark: {args.minutes:g} min of footage, {args.chunk_seconds} s chunks, "
           f"{args.rounds} round(s)")
    print(f"source: {src.describe()}, looped by stream copy into {footage.name} "
          f"({footage.stat().st_size / MB:.0f} MB)")

    vigil: list[VigilRun] = []
    baseline: list[BaselineRun] = []
    with workspace(args.keep) as workdir:
        bench = BenchStack(workdir / "home")
        try:
            log("bench stack: up, migrations, camera ...")
            bench.up()
            bench.vigil("camera", "add", CAMERA, CAMERA_URL, "--chunk-seconds",
                        str(args.chunk_seconds))
            from vigil.settings import get_settings

            settings = get_settings()
            imported = import_footage(settings, footage, args.chunk_seconds)
            print(f"imported: {imported.media_s / 60:.2f} min, {imported.chunks} chunks, "
                  f"{imported.plaintext_bytes / MB:.0f} MB plaintext, "
                  f"{imported.stored_bytes / MB:.0f} MB sealed in S3, "
                  f"[{imported.start_at.isoformat()}, {imported.end_at.isoformat()})")
            log("decrypting the chunks for the baseline (untimed) ...")
            inputs = decrypt_chunks(settings, imported.camera_id, workdir / "plain")
            reference = make_case()
            clock = StageClock()
            stack = bench.processes()
            with instrumented(clock):
                for r in range(1, args.rounds + 1):
                    order = ["vigil", "baseline"] if r % 2 == 1 else ["baseline", "vigil"]
                    for name in order:
                        time.sleep(PAUSE_S)
                        log(f"round {r}: {name} ...")
                        if name == "vigil":
                            vigil.append(run_vigil(settings, reference, imported, clock,
                                                   workdir, stack))
                            log(f"round {r}: vigil {vigil[-1].seconds:.1f} s")
                        else:
                            baseline.append(run_baseline(inputs, workdir, r))
                            log(f"round {r}: baseline {baseline[-1].seconds:.1f} s")
                if args.py_spy:
                    log(f"profiling one more export into {args.py_spy} ...")
                    with profiled(args.py_spy):
                        run_vigil(settings, reference, imported, clock, workdir, stack)
        finally:
            from vigil import db

            if db.get_engine.cache_info().currsize:
                db.get_engine().dispose()
            log("bench stack: down")
            bench.down()

    print()
    print(f"footage: {imported.media_s / 60:.2f} min, {imported.plaintext_bytes / MB:.0f} MB "
          f"({imported.plaintext_bytes:,} bytes), {imported.chunks} chunks of "
          f"{args.chunk_seconds} s")
    print()
    ok = report(args, imported, vigil, baseline)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
