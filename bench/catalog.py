"""Benchmark of the catalog's time index at production scale.

What is measured
    The latency, seen by the client, of the two production time-index queries in
    ``vigil.catalog.queries``, each called exactly as the service calls it (the real
    function, an ORM ``Session``, results fetched):

    * ``chunks_overlapping``: the chunks of one camera overlapping a window of 1 min
      to 1 h (what playback and export read);
    * ``recorded_ranges``: the merged recorded ranges of one camera over a window of
      1 h to 24 h (what the timeline shows);

    against a floor: fetching one ``Chunk`` by primary key through the same ORM path,
    which is the cheapest query the catalog can answer. The ratios to the floor say
    how much the time index costs beyond one round trip.

How
    1. The embedded stack is started if needed (``ops.stack.up``); a fresh database
       ``vigil_bench`` gets the project's real schema and indexes by running the real
       Alembic migrations (``vigil.migrate.upgrade``).
    2. Footage of ``--cameras`` cameras over ``--days`` days, one chunk every
       ``--chunk-seconds``, is generated server-side by ``INSERT ... SELECT`` over
       ``generate_series`` (cameras outer, sequence inner, so rows arrive in index
       order, as a recorder appends them), with every NOT NULL column filled with
       realistic values, one data key per chunk and a short outage per camera every
       ~17 h so that timelines have gaps. Then ``VACUUM (ANALYZE)``, so that the
       visibility map allows index-only scans, as autovacuum would on a live table.
    3. After a warm-up, ``--samples`` calls of each query with a random camera and a
       random window inside the recorded period are timed with
       ``time.perf_counter`` around each call. The three queries run round-robin, in
       a shuffled order each iteration, so that noise from the shared machine falls
       on all of them alike. Python's cyclic GC is paused during timed calls and run
       between iterations, so that its pauses do not pose as query latency.
    4. p50 and p99 are printed with their ratio to the floor, against the target
       "p99 under 10 ms". Each time-index query gets an ``EXPLAIN (ANALYZE, BUFFERS)``
       twice: as a one-off statement (values known to the planner) and through the
       statement psycopg prepared for the measured calls (it prepares after 5
       executions; PostgreSQL then usually switches to a generic plan). Both are
       checked to be a range scan of ``ix_chunks_camera_id_start_at`` bounded on both
       sides.
    5. ``vigil_bench`` is dropped unless ``--keep``.

Run from the repository root: ``.venv/bin/python bench/catalog.py``. The database
URL holds a password and is never printed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
import psycopg.sql
import sqlalchemy
from sqlalchemy import Connection, Engine, create_engine, event, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from ops import stack
from vigil.catalog.models import MAX_CHUNK_WALL_S, Chunk
from vigil.catalog.queries import chunks_overlapping, recorded_ranges
from vigil.intervals import Span, merge
from vigil.migrate import upgrade
from vigil.settings import Settings, get_settings

BENCH_DB: Final = "vigil_bench"
# Where the generated footage starts: a fixed UTC instant, so runs are comparable.
EPOCH: Final = datetime(2026, 1, 1, tzinfo=UTC)
SECONDS_PER_DAY: Final = 86_400

# ~1 M rows per statement with the defaults: long enough to amortise each
# statement, short enough for a steady progress report and a modest transaction.
CAMERAS_PER_BATCH: Final = 50
# A typical 1080p H.264 stream.
BITRATE_BPS: Final = 4_000_000
# Per-chunk size jitter, so that sizes are not all equal (+/- this many bytes).
SIZE_JITTER_BYTES: Final = 1_000_000
# AES-256-GCM per stored object: 12-byte nonce + 16-byte tag.
AEAD_OVERHEAD_BYTES: Final = 28
# Outages: every camera misses OUTAGE_CHUNKS consecutive chunks once every
# OUTAGE_PERIOD_CHUNKS (0.5 %; ~17 h at 60 s chunks), phase-shifted per camera by a
# prime stride so that cameras do not all fail at the same instant.
OUTAGE_PERIOD_CHUNKS: Final = 1000
OUTAGE_CHUNKS: Final = 5
OUTAGE_PHASE_STRIDE: Final = 7919
# Codec parameters as the recorder stores them (small JSONB object).
CODEC: Final = {"codec": "h264", "profile": "main", "level": "4.1", "width": 1920,
                "height": 1080, "time_base": "1/90000", "audio": None,
                "extradata_sha256": "9f2c1d0e"}

# Calls of each query before measuring: fills the caches and lets psycopg prepare
# its statements (it prepares after 5 executions), as in a long-running service.
WARMUP_CALLS: Final = 200
# Windows whose timeline is compared with merged overlap results before measuring:
# a cheap check that the generated data and both queries agree.
SANITY_WINDOWS: Final = 20
# Run the cyclic GC between iterations this often (it is paused during calls).
GC_EVERY_ITERATIONS: Final = 50
OVERLAP_WINDOW: Final = (timedelta(minutes=1), timedelta(hours=1))
TIMELINE_WINDOW: Final = (timedelta(hours=1), timedelta(hours=24))
TARGET_P99_MS: Final = 10.0
TIME_INDEX: Final = "ix_chunks_camera_id_start_at"


# --- the generated data's shape ------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Which chunks exist: shared by the generator (in SQL) and the samplers."""

    cameras: int
    chunks_per_camera: int
    chunk_s: int

    def recorded(self, camera_id: int, seq: int) -> bool:
        phase = (seq + camera_id * OUTAGE_PHASE_STRIDE) % OUTAGE_PERIOD_CHUNKS
        return phase >= OUTAGE_CHUNKS

    def chunk_id(self, camera_id: int, seq: int) -> int:
        """Chunk ids (and their data key ids) follow (camera, seq) order."""
        return (camera_id - 1) * self.chunks_per_camera + seq + 1

    @property
    def period(self) -> Span:
        return Span(EPOCH, EPOCH + timedelta(seconds=self.chunks_per_camera * self.chunk_s))


# --- database setup ------------------------------------------------------------------


def _engine(url: URL, **kwargs: Any) -> Engine:
    # Never echo: the URL and the parameters may hold secrets.
    return create_engine(url, echo=False, hide_parameters=True, **kwargs)


def drop_database(admin_url: URL) -> None:
    _admin_command(admin_url, f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')


def recreate_database(admin_url: URL) -> None:
    drop_database(admin_url)
    _admin_command(admin_url, f'CREATE DATABASE "{BENCH_DB}"')


def _admin_command(admin_url: URL, sql: str) -> None:
    """Run one statement on the maintenance database (outside a transaction)."""
    admin = _engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        admin.dispose()


def migrate(engine: Engine) -> None:
    with engine.connect() as conn:
        upgrade(conn)
        conn.commit()


# --- data generation -----------------------------------------------------------------

_CAMERAS_SQL = text("""
INSERT INTO cameras (id, name, source_url, chunk_target_s, status, created_at, updated_at)
SELECT c, 'bench-cam-' || lpad(c::text, 5, '0'),
       'rtsp://10.' || (c / 65536) || '.' || (c / 256 % 256) || '.' || (c % 256)
           || '/stream1',
       :chunk_s, 'recording', :epoch, :epoch
FROM generate_series(1, :cameras) AS c
""")

_KEK_SQL = text("""
INSERT INTO keys (purpose, version, provider, provider_ref)
VALUES ('kek', 1, 'file', 'bench') RETURNING id
""")

# The rows of cameras [:lo, :hi]: cameras outer, sequence inner (a set-returning
# function in the select list runs to completion for each outer row), so ids and
# every index key arrive in ascending order. Missing: the outages of Layout.recorded.
_ROWS_CTE = """
WITH r AS (
    SELECT (g.camera_id - 1) * :per_camera + g.seq + 1 AS id, g.camera_id, g.seq,
           :epoch + make_interval(secs => g.seq * :chunk_s) AS start_at
    FROM (SELECT c AS camera_id, generate_series(0::bigint, :per_camera - 1) AS seq
          FROM generate_series(CAST(:lo AS bigint), CAST(:hi AS bigint)) AS c) AS g
    WHERE mod(g.seq + g.camera_id * :stride, :period) >= :outage
)
"""

# Wrapped data key: 40 bytes, as AES key wrap (RFC 3394) of a 32-byte key gives.
_DATA_KEYS_SQL = text(_ROWS_CTE + """
INSERT INTO data_keys (id, kek_id, wrapped, created_at)
SELECT id, :kek_id,
       sha256(int8send(id) || int8send(:kek_id))
           || substring(sha256(int8send(-id)) from 1 for 8),
       start_at + make_interval(secs => :chunk_s)
FROM r
""")

# object_key is zero-padded, as storage keys are, so that it sorts like (camera, seq).
_CHUNKS_SQL = text(_ROWS_CTE + """
INSERT INTO chunks (id, camera_id, seq, start_at, end_at, media_duration_us, clock_source,
                    plaintext_bytes, stored_bytes, object_key, sha256, chain_hash,
                    data_key_id, codec, created_at)
SELECT id, camera_id, seq, start_at, start_at + make_interval(secs => :chunk_s),
       :chunk_s * 1000000::bigint, 'rtcp', bytes, bytes + :aead_overhead,
       'c/' || lpad(camera_id::text, 6, '0') || '/' || lpad(seq::text, 10, '0'),
       sha256(int8send(id)), sha256(sha256(int8send(id)) || int8send(id - 1)),
       id, CAST(:codec AS jsonb),
       start_at + make_interval(secs => :chunk_s + 2)
FROM (SELECT r.*, :base_bytes + mod(id * 2654435761, 2 * :jitter + 1) - :jitter AS bytes
      FROM r) AS r
""")

_RESET_IDENTITY_SQL = """
SELECT setval(pg_get_serial_sequence('{table}', 'id'),
              (SELECT coalesce(max(id), 1) FROM {table}))
"""


def _batch_params(layout: Layout, lo: int, hi: int, kek_id: int) -> dict[str, Any]:
    return {
        "lo": lo, "hi": hi, "per_camera": layout.chunks_per_camera,
        "chunk_s": layout.chunk_s, "epoch": EPOCH, "kek_id": kek_id,
        "stride": OUTAGE_PHASE_STRIDE, "period": OUTAGE_PERIOD_CHUNKS,
        "outage": OUTAGE_CHUNKS, "aead_overhead": AEAD_OVERHEAD_BYTES,
        "base_bytes": BITRATE_BPS // 8 * layout.chunk_s, "jitter": SIZE_JITTER_BYTES,
        "codec": json.dumps(CODEC),
    }


def _fmt_duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def load(engine: Engine, layout: Layout) -> int:
    """Insert cameras, one KEK, and one data key per chunk and the chunks."""
    with engine.connect() as conn:
        # Commits stay synchronous: with ~1 M rows per commit, asynchronous commit
        # would save nothing, and VACUUM cannot mark a page all-visible while the
        # commit of its rows is not yet flushed (no index-only scans then).
        conn.execute(_CAMERAS_SQL, {"cameras": layout.cameras, "chunk_s": layout.chunk_s,
                                    "epoch": EPOCH})
        kek_id = int(conn.execute(_KEK_SQL).scalar_one())
        conn.commit()
        total = 0
        started = time.perf_counter()
        for lo in range(1, layout.cameras + 1, CAMERAS_PER_BATCH):
            hi = min(lo + CAMERAS_PER_BATCH - 1, layout.cameras)
            params = _batch_params(layout, lo, hi, kek_id)
            conn.execute(_DATA_KEYS_SQL, params)
            total += conn.execute(_CHUNKS_SQL, params).rowcount
            conn.commit()
            elapsed = time.perf_counter() - started
            eta = elapsed / hi * (layout.cameras - hi)
            print(f"  cameras {lo:>5}-{hi:<5} of {layout.cameras}: {total:>12,} chunks, "
                  f"{total / elapsed:>9,.0f} rows/s, elapsed {_fmt_duration(elapsed)}, "
                  f"eta {_fmt_duration(eta)}", flush=True)
        for table in ("cameras", "data_keys", "chunks"):
            conn.exec_driver_sql(_RESET_IDENTITY_SQL.format(table=table))
        conn.commit()
    return total


def vacuum_analyze(engine: Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM (ANALYZE) chunks")


# --- facts ---------------------------------------------------------------------------


def print_sizes(conn: Connection) -> None:
    table = conn.execute(text(
        "SELECT pg_size_pretty(pg_relation_size('chunks')), "
        "pg_size_pretty(pg_indexes_size('chunks')), "
        "pg_size_pretty(pg_total_relation_size('chunks')), "
        "pg_size_pretty(pg_total_relation_size('data_keys'))")).one()
    print(f"chunks heap {table[0]}, indexes {table[1]}, total {table[2]}; "
          f"data_keys total {table[3]}")
    rows = conn.execute(text(
        "SELECT indexrelname, pg_size_pretty(pg_relation_size(indexrelid)) "
        "FROM pg_stat_user_indexes WHERE relname = 'chunks' "
        "ORDER BY pg_relation_size(indexrelid) DESC")).all()
    for name, size in rows:
        print(f"  {name:<32} {size:>10}")


def print_machine(conn: Connection, rows: int) -> None:
    version = conn.exec_driver_sql("SHOW server_version").scalar_one()
    shared_buffers = conn.exec_driver_sql("SHOW shared_buffers").scalar_one()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: nproc {os.cpu_count()}, RAM {mem_gib:.0f} GiB, "
          f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
          f"SQLAlchemy {sqlalchemy.__version__}, psycopg {psycopg.__version__}")
    print(f"PostgreSQL {version} (shared_buffers {shared_buffers}); "
          f"chunks rows: {rows:,}")


# --- the measured calls --------------------------------------------------------------

# A measured call: run it, return how many rows (chunks or ranges) it produced.
Call = Callable[[], int]
# Draws the arguments of one call (outside the timing) and returns the call.
Sampler = Callable[[Session, random.Random], Call]


def _random_window(rng: random.Random, period: Span,
                   bounds: tuple[timedelta, timedelta]) -> Span:
    length = timedelta(seconds=rng.uniform(bounds[0].total_seconds(),
                                           bounds[1].total_seconds()))
    latest = (period.duration - length).total_seconds()
    start = period.start + timedelta(seconds=rng.uniform(0, latest))
    return Span(start, start + length)


def floor_sampler(layout: Layout) -> Sampler:
    def sample(session: Session, rng: random.Random) -> Call:
        while True:
            camera_id = rng.randint(1, layout.cameras)
            seq = rng.randrange(layout.chunks_per_camera)
            if layout.recorded(camera_id, seq):
                break
        stmt = select(Chunk).where(Chunk.id == layout.chunk_id(camera_id, seq))
        return lambda: 1 if session.scalars(stmt).one() is not None else 0
    return sample


def overlap_sampler(layout: Layout) -> Sampler:
    def sample(session: Session, rng: random.Random) -> Call:
        camera_id = rng.randint(1, layout.cameras)
        window = _random_window(rng, layout.period, OVERLAP_WINDOW)
        return lambda: len(chunks_overlapping(session, camera_id=camera_id, window=window))
    return sample


def timeline_sampler(layout: Layout) -> Sampler:
    def sample(session: Session, rng: random.Random) -> Call:
        camera_id = rng.randint(1, layout.cameras)
        window = _random_window(rng, layout.period, TIMELINE_WINDOW)
        return lambda: len(recorded_ranges(session, camera_id=camera_id, window=window))
    return sample


@dataclass
class Series:
    name: str
    sampler: Sampler
    latencies_s: list[float]
    rows: list[int]

    def p50_p99_ms(self) -> tuple[float, float]:
        q = statistics.quantiles(self.latencies_s, n=100)
        return q[49] * 1000, q[98] * 1000


def _timed(call: Call) -> tuple[float, int]:
    gc.disable()
    try:
        t0 = time.perf_counter()
        rows = call()
        return time.perf_counter() - t0, rows
    finally:
        gc.enable()


def run_round_robin(session: Session, series: list[Series], rng: random.Random,
                    iterations: int, *, record: bool) -> None:
    for i in range(iterations):
        for s in rng.sample(series, k=len(series)):
            call = s.sampler(session, rng)
            elapsed, rows = _timed(call)
            session.expunge_all()  # the next call must go to the database
            if record:
                s.latencies_s.append(elapsed)
                s.rows.append(rows)
        if i % GC_EVERY_ITERATIONS == 0:
            gc.collect()


def sanity_check(session: Session, layout: Layout, rng: random.Random) -> None:
    """The timeline of a window equals the merged spans of its overlapping chunks."""
    for _ in range(SANITY_WINDOWS):
        camera_id = rng.randint(1, layout.cameras)
        window = _random_window(rng, layout.period, TIMELINE_WINDOW)
        chunks = chunks_overlapping(session, camera_id=camera_id, window=window)
        expected = [span for c in chunks
                    if (span := Span(c.start_at, c.end_at).clip(window)) is not None]
        got = recorded_ranges(session, camera_id=camera_id, window=window)
        if merge(expected) != got:
            raise SystemExit(f"sanity check failed: camera {camera_id}, window {window}")
        session.expunge_all()
    print(f"sanity: recorded_ranges == merge(chunks_overlapping) on {SANITY_WINDOWS} windows")


# --- EXPLAIN -------------------------------------------------------------------------


@contextmanager
def capture_statements(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The driver-level statements and parameters the engine sends, as sent."""
    seen: list[tuple[str, Any]] = []

    def listener(_conn: Any, _cursor: Any, statement: str, parameters: Any,
                 _context: Any, _executemany: bool) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", listener)


_PLACEHOLDER: Final = re.compile(r"%\((\w+)\)s")


@dataclass(frozen=True)
class Plans:
    custom: list[str]  # the statement as sent, its values known to the planner
    generic: list[str] | None  # the prepared statement the measured calls ran
    prepared_name: str | None


def _server_text(statement: str) -> tuple[str, list[str]]:
    """The statement as psycopg prepares it ($1, $2 ... in order of first use)."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return _PLACEHOLDER.sub(number, statement).replace("%%", "%"), names


def explain(session: Session, engine: Engine, call: Call) -> Plans:
    """EXPLAIN (ANALYZE, BUFFERS) of the statement a real call sends: once as a
    one-off statement, and once through the statement psycopg prepared for the
    measured calls (after 5 executions), whose cached plan may be generic."""
    with capture_statements(engine) as seen:
        call()
    session.expunge_all()
    statement, parameters = seen[-1]
    conn = session.connection()
    custom = [str(r[0]) for r in
              conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)]
    server_sql, names = _server_text(statement)
    name = conn.exec_driver_sql(
        "SELECT name FROM pg_prepared_statements WHERE statement = %s "
        "ORDER BY generic_plans + custom_plans DESC LIMIT 1", (server_sql,)).scalar()
    if name is None:
        return Plans(custom, None, None)
    # EXECUTE takes no bound parameters: its arguments go as quoted literals.
    raw = conn.connection.driver_connection
    execute = psycopg.sql.SQL("EXPLAIN (ANALYZE, BUFFERS) EXECUTE {}({})").format(
        psycopg.sql.Identifier(str(name)),
        psycopg.sql.SQL(", ").join(psycopg.sql.Literal(parameters[n]) for n in names))
    generic = [str(r[0]) for r in conn.exec_driver_sql(execute.as_string(raw))]
    return Plans(custom, generic, str(name))


def two_sided_range_scan(plan: list[str]) -> bool:
    """A scan of the time index whose Index Cond bounds start_at from both sides."""
    uses_index = any(TIME_INDEX in line and "Index" in line and "Scan" in line
                     for line in plan)
    conds = [line for line in plan if "Index Cond:" in line]
    bounded = any("start_at >" in c and "start_at <" in c and "camera_id =" in c
                  for c in conds)
    return uses_index and bounded


def _print_one_plan(title: str, plan: list[str]) -> None:
    print(f"\nEXPLAIN (ANALYZE, BUFFERS) — {title}:")
    for line in plan:
        print("  " + line)
    verdict = ("index range scan on " + TIME_INDEX + ", bounded on both sides"
               if two_sided_range_scan(plan) else
               "NOT a two-sided index range scan on " + TIME_INDEX + " (queries unchanged)")
    print(f"  => {verdict}")


def print_plans(title: str, plans: Plans) -> None:
    _print_one_plan(f"{title}, one-off statement", plans.custom)
    if plans.generic is None:
        print(f"  (no prepared statement found for {title})")
    else:
        _print_one_plan(f"{title}, as measured: EXECUTE {plans.prepared_name}",
                        plans.generic)


def print_plan_cache(session: Session) -> None:
    """How PostgreSQL planned the statements psycopg prepared on the measuring
    connection: generic plans bind the window only at execution time."""
    rows = session.connection().exec_driver_sql(
        "SELECT generic_plans, custom_plans, "
        r"left(regexp_replace(statement, '\s+', ' ', 'g'), 70) "
        "FROM pg_prepared_statements ORDER BY generic_plans + custom_plans DESC").all()
    print("\nprepared statements on the measuring connection (generic/custom plans):")
    for generic, custom, statement in rows:
        print(f"  {generic:>6} / {custom:<6} {statement}")


# --- report --------------------------------------------------------------------------


def print_results(series: list[Series]) -> None:
    floor_p50, floor_p99 = series[0].p50_p99_ms()
    print(f"\n{'query':<10} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'mean rows':>10} "
          f"{'p50/floor':>10} {'p99/floor':>10}  target p99 < {TARGET_P99_MS:g} ms")
    for s in series:
        p50, p99 = s.p50_p99_ms()
        verdict = "" if s is series[0] else ("PASS" if p99 < TARGET_P99_MS else "FAIL")
        print(f"{s.name:<10} {len(s.latencies_s):>6} {p50:>8.3f} {p99:>8.3f} "
              f"{statistics.fmean(s.rows):>10.1f} {p50 / floor_p50:>9.2f}x "
              f"{p99 / floor_p99:>9.2f}x  {verdict}")


# --- main ----------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--cameras", type=int, default=1000)
    p.add_argument("--days", type=float, default=15.0)
    p.add_argument("--chunk-seconds", type=int, default=60,
                   help=f"2..300 (cameras' chunk_target_s), at most {MAX_CHUNK_WALL_S}")
    p.add_argument("--samples", type=int, default=2000, help="timed calls per query")
    p.add_argument("--keep", action="store_true", help=f"keep {BENCH_DB} afterwards")
    p.add_argument("--seed", type=int, default=20260101)
    args = p.parse_args()
    if not 2 <= args.chunk_seconds <= min(300, MAX_CHUNK_WALL_S):
        p.error("--chunk-seconds must be between 2 and 300")
    if args.cameras < 1 or args.samples < 2:
        p.error("--cameras must be >= 1 and --samples >= 2")
    if args.days * SECONDS_PER_DAY < 2 * TIMELINE_WINDOW[1].total_seconds():
        p.error("--days must cover at least two of the longest timeline windows (2 days)")
    return args


def measure(engine: Engine, layout: Layout, samples: int, seed: int) -> None:
    rng = random.Random(seed)
    series = [Series(name, make(layout), [], []) for name, make in (
        ("floor", floor_sampler), ("overlap", overlap_sampler),
        ("timeline", timeline_sampler))]
    with Session(engine) as session:
        sanity_check(session, layout, rng)
        run_round_robin(session, series, rng, WARMUP_CALLS, record=False)
        started = time.perf_counter()
        run_round_robin(session, series, rng, samples, record=True)
        print(f"measured {samples} x {len(series)} calls in "
              f"{_fmt_duration(time.perf_counter() - started)} (round-robin, shuffled)")
        print_results(series)
        print_plan_cache(session)
        print_plans("overlap (chunks_overlapping)",
                    explain(session, engine, series[1].sampler(session, rng)))
        print_plans("timeline (recorded_ranges)",
                    explain(session, engine, series[2].sampler(session, rng)))


def main() -> None:
    args = parse_args()
    settings: Settings = get_settings()
    stack.up(settings)
    url = make_url(settings.sqlalchemy_url())
    admin_url, bench_url = url.set(database="postgres"), url.set(database=BENCH_DB)
    layout = Layout(cameras=args.cameras, chunk_s=args.chunk_seconds,
                    chunks_per_camera=int(args.days * SECONDS_PER_DAY) // args.chunk_seconds)

    recreate_database(admin_url)
    engine = _engine(bench_url, pool_size=1, max_overflow=0)
    try:
        migrate(engine)
        print(f"generating {layout.cameras} cameras x {layout.chunks_per_camera} "
              f"chunks of {layout.chunk_s} s, minus {OUTAGE_CHUNKS}/{OUTAGE_PERIOD_CHUNKS} "
              "outages", flush=True)
        t0 = time.perf_counter()
        rows = load(engine, layout)
        t1 = time.perf_counter()
        vacuum_analyze(engine)
        t2 = time.perf_counter()
        print(f"load: {rows:,} chunks in {_fmt_duration(t1 - t0)} "
              f"({rows / (t1 - t0):,.0f} rows/s); VACUUM (ANALYZE) {_fmt_duration(t2 - t1)}")
        with engine.connect() as conn:
            counted = int(conn.exec_driver_sql("SELECT count(*) FROM chunks").scalar_one())
            print_machine(conn, counted)
            print_sizes(conn)
        # Measured in autocommit: each call is one round trip, no BEGIN/COMMIT around it.
        measure(engine.execution_options(isolation_level="AUTOCOMMIT"), layout,
                args.samples, args.seed)
    finally:
        engine.dispose()
        if args.keep:
            print(f"kept database {BENCH_DB}")
        else:
            drop_database(admin_url)
            print(f"dropped database {BENCH_DB}")


if __name__ == "__main__":
    main()
