"""Benchmark of the retention sweeper: its throughput against a plain batched S3 delete.

What is measured
    Chunks (and stored bytes) deleted per second of wall time, by

    * Vigil: ``retention.sweep.sweep`` over one camera whose ``--chunks`` chunks have
      all expired under its rule, in this process, exactly as the beat task runs it:
      D1 tombstones (one transaction per batch of ``VIGIL_SWEEP_BATCH`` = 1000),
      D2 every version of every object deleted (S3 DeleteObjects, 1000 per request,
      after listing each day's directory from the batch's first key), D3 data keys
      destroyed, D4+D5 retention records, audit event, tombstones removed, and the
      final audit event;
    * the baseline (issue 5): the same objects deleted with no catalog at all: list
      the versions under each day's directory, then DeleteObjects with key and
      version id, 1000 per request (what an operator's script over the bucket does;
      on an object-lock bucket every version must be named, or the delete only adds
      a delete marker).

    Both delete the same keys: the objects are written, the baseline deletes them,
    the same keys are written again (new versions of them), and the sweep deletes
    those, with ``--rounds`` alternations (odd rounds baseline first). Target: the
    sweep at least 0.7 of the baseline's rate.

How
    1. A stack of its own (``vigil stack up`` under a temporary home, free ports).
    2. A camera with ``--chunks`` catalog rows of 60 s each (one data key each, under
       a KEK row), starting 120 days ago: ~70 days of one camera, all older than the
       camera's 30-day rule; object keys in the recorder's layout
       (``chunks/<camera>/<yyyy>/<mm>/<dd>/<seq>-<random>.vch``).
    3. Before each contender, the objects are PUT (``--object-bytes`` each, 16
       threads, untimed) and, for Vigil, the rows and data keys are (re)inserted.
    4. Each contender is timed with ``time.perf_counter``.

Run from the repository root (100,000 chunks, 2 rounds: ~14 minutes on 2 cores):

    .venv/bin/python bench/retention.py
    .venv/bin/python bench/retention.py --chunks 5000 --rounds 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import groupby
from pathlib import Path
from typing import Any, Final

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.export import header  # noqa: E402
from bench.ingest import BenchStack, log, workspace  # noqa: E402

TARGET_RATIO: Final = 0.7
CAMERA: Final = "bench-retention"
CHUNK_S: Final = 60
KEEP_DAYS: Final = 30
PUT_THREADS: Final = 16
MB: Final = 1_000_000


def object_keys(camera_id: int, start: datetime, n: int) -> list[tuple[int, datetime, str]]:
    keys = []
    for seq in range(n):
        at = start + timedelta(seconds=seq * CHUNK_S)
        keys.append((seq, at, f"chunks/{camera_id}/{at:%Y/%m/%d}/{seq:020d}-"
                              f"{os.urandom(8).hex()}.vch"))
    return keys


def put_objects(settings: Any, keys: Sequence[str], size: int) -> None:
    from io import BytesIO

    from vigil.objectstore import make_minio_client

    client = make_minio_client(settings)
    payload = os.urandom(size)
    bucket, prefix = settings.s3_bucket, settings.s3_prefix

    def put(key: str) -> None:
        client.put_object(bucket, prefix + key, BytesIO(payload), size)

    with ThreadPoolExecutor(PUT_THREADS) as pool:
        list(pool.map(put, keys, chunksize=64))


def insert_rows(engine: Any, camera_id: int, kek_id: int,
                rows: Sequence[tuple[int, datetime, str]], size: int) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        ids = conn.execute(text("""
            INSERT INTO data_keys (kek_id, wrapped)
            SELECT :kek, decode(md5(g::text) || md5(g::text), 'hex')
              FROM generate_series(1, :n) g RETURNING id"""),
            {"kek": kek_id, "n": len(rows)}).scalars().all()
        conn.execute(text("""
            INSERT INTO chunks (camera_id, seq, start_at, end_at, media_duration_us,
                clock_source, plaintext_bytes, stored_bytes, object_key, sha256, chain_hash,
                data_key_id, codec)
            SELECT :camera, r.seq, r.start_at, r.start_at + interval '60 seconds', 60000000,
                   'rtcp', :size, :size, r.object_key, sha256(r.object_key::bytea),
                   sha256(('chain' || r.seq)::bytea), r.data_key_id, '{}'::jsonb
              FROM unnest(CAST(:seqs AS bigint[]), CAST(:starts AS timestamptz[]),
                          CAST(:keys AS text[]), CAST(:dks AS bigint[]))
                   AS r(seq, start_at, object_key, data_key_id)"""),
            {"camera": camera_id, "size": size, "seqs": [r[0] for r in rows],
             "starts": [r[1] for r in rows], "keys": [r[2] for r in rows], "dks": ids})


def baseline_delete(settings: Any, keys: Sequence[str]) -> float:
    """List the versions under each day's directory; DeleteObjects, 1000 per request."""
    from minio.deleteobjects import DeleteObject

    from vigil.objectstore import make_minio_client

    client = make_minio_client(settings)
    bucket, prefix = settings.s3_bucket, settings.s3_prefix
    t0 = time.perf_counter()
    targets = []
    for directory, _group in groupby(sorted(prefix + k for k in keys),
                                     key=lambda k: k.rsplit("/", 1)[0] + "/"):
        targets += [DeleteObject(o.object_name, o.version_id) for o in client.list_objects(
            bucket, prefix=directory, include_version=True)]
    errors = list(client.remove_objects(bucket, targets))
    seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"the baseline's delete failed: {errors[:3]}")
    return seconds


def vigil_sweep(settings: Any) -> tuple[float, int]:
    from retention import sweep

    t0 = time.perf_counter()
    report = sweep.sweep(settings=settings, camera=CAMERA)
    return time.perf_counter() - t0, report.chunks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--object-bytes", type=int, default=4096,
                        help="size of each object (the sweep never reads them)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    header(f"Retention benchmark: {args.chunks:,} expired chunks, {args.rounds} round(s)")
    times: dict[str, list[float]] = {"vigil sweep": [], "baseline delete": []}
    with workspace(args.keep) as workdir:
        bench = BenchStack(workdir / "home")
        try:
            log("bench stack: up, migrations, camera ...")
            bench.up()
            bench.vigil("camera", "add", CAMERA, "rtsp://127.0.0.1:9/none")
            from sqlalchemy import text

            from vigil.db import get_engine, session_scope
            from vigil.settings import get_settings

            settings = get_settings()
            engine = get_engine()
            with engine.begin() as conn:
                camera_id = conn.execute(text("SELECT id FROM cameras WHERE name = :n"),
                                         {"n": CAMERA}).scalar_one()
                kek_id = conn.execute(text("""
                    INSERT INTO keys (purpose, version, provider, provider_ref)
                    VALUES ('kek', 900, 'file', 'bench') RETURNING id""")).scalar_one()
                admin = conn.execute(text("""
                    INSERT INTO principals (name, role) VALUES ('bench-admin', 'admin')
                    RETURNING id""")).scalar_one()
                conn.execute(text("""INSERT INTO retention_rules (camera_id, keep_days,
                    created_by) VALUES (:c, :k, :a)"""),
                             {"c": camera_id, "k": KEEP_DAYS, "a": admin})
            start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=120)
            for r in range(1, args.rounds + 1):
                order = ["baseline delete", "vigil sweep"] if r % 2 else \
                    ["vigil sweep", "baseline delete"]
                for name in order:
                    rows = object_keys(camera_id, start, args.chunks)
                    keys = [k for _, _, k in rows]
                    log(f"round {r}: writing {len(keys):,} objects for {name} (untimed) ...")
                    put_objects(settings, keys, args.object_bytes)
                    if name == "vigil sweep":
                        insert_rows(engine, camera_id, kek_id, rows, args.object_bytes)
                        seconds, deleted = vigil_sweep(settings)
                        if deleted != args.chunks:
                            raise RuntimeError(f"the sweep deleted {deleted} chunks")
                    else:
                        seconds = baseline_delete(settings, keys)
                    times[name].append(seconds)
                    log(f"round {r}: {name} {seconds:.1f} s, "
                        f"{args.chunks / seconds:,.0f} chunks/s")
            with session_scope() as session:
                left = session.execute(text("SELECT count(*) FROM chunks WHERE camera_id = :c"),
                                       {"c": camera_id}).scalar_one()
            if left:
                raise RuntimeError(f"{left} chunks were left")
        finally:
            from vigil import db

            if db.get_engine.cache_info().currsize:
                db.get_engine().dispose()
            log("bench stack: down")
            bench.down()
    print()
    megabytes = args.chunks * args.object_bytes / MB
    print(f"{'':28}{'s (median)':>12}{'chunks/s':>12}{'MB/s':>10}{'ratio':>8}")
    base = statistics.median(times["baseline delete"])
    for name, values in times.items():
        s = statistics.median(values)
        print(f"{name:28}{s:12.1f}{args.chunks / s:12,.0f}{megabytes / s:10.1f}"
              f"{base / s:8.2f}")
    ratio = base / statistics.median(times["vigil sweep"])
    verdict = "met" if ratio >= TARGET_RATIO else "FAIL"
    print(f"\ntarget: the sweep at least {TARGET_RATIO} of the plain delete's rate: "
          f"{ratio:.2f}  {verdict}")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
