"""Benchmark of live ingest: ``vigil record`` against ``ffmpeg -c copy -f segment``.

What is measured
    The cost of recording many live cameras, each a 4 Mbit/s 1080p25 H.264 RTSP
    stream paced in real time, by

    * Vigil: ONE ``vigil record`` process recording all ``--cameras`` cameras, the
      whole path included: demux, chunking into fragmented MOV, fsync every second,
      sealing (SHA-256, AES-256-GCM, hash chain), the spool, the upload to S3 with
      its read-back, catalog commits and checkpoint signatures;
    * the baseline: ``ffmpeg -rtsp_transport tcp -i URL -c copy -f segment
      -segment_time S -reset_timestamps 1 out%05d.mp4``, one process per camera (the
      imageio-ffmpeg binary), writing to a local directory;

    on the same source, in the same run, one after the other (never concurrently;
    ``--rounds`` alternates which goes first). Over a window of ``--seconds`` after a
    warm-up of ``--warmup`` seconds:

    * CPU: user + system seconds of the measured processes (and any descendants),
      as a delta over the window (psutil), per stream-minute of video;
    * memory: RSS and PSS (proportional set size: shared pages split among the
      processes sharing them) sampled every second during the window; per stream is
      the total over the measured processes divided by the number of cameras (Vigil:
      one process / N; ffmpeg: the mean per process). Mean and peak are reported;
    * context, not counted in either figure: the CPU of the RTSP server, of the
      bench stack's servers (PostgreSQL, the S3 server, Redis: in production those
      run elsewhere) and of the whole machine (it is shared with other work).

    Targets (issue 3): Vigil at or below the baseline's CPU per stream (ratio <= 1.0)
    and under 20 MB of memory per stream (judged on the peak RSS per stream).

How
    1. The source is encoded once, then cached under ``bench/out/`` keyed by its
       parameters: ``testsrc2`` 1920x1080 at 25 fps with temporal noise (so that the
       encoder really spends 4 Mbit/s, as a camera watching a scene does; a clean
       test pattern compresses far below it), libx264 veryfast, 4 Mbit/s CBR-like
       (maxrate = bufsize = bitrate), closed GOP of 2 s, no B-frames, one slice per
       frame, as an Annex-B elementary stream.
    2. ONE GStreamer RTSP server process (``bench/rtsp_file_server.py`` under
       /usr/bin/python3) serves it looped, in real time, on 127.0.0.1 from ONE
       shared live pipeline: every camera URL ``rtsp://127.0.0.1:PORT/live?cam=K``
       (distinct per camera, one shared media) receives the same packets. A PyAV
       client checks the served rate (frames/s and Mbit/s) before anything else.
    3. A stack of its own under a temporary home on free ports (``vigil stack up``,
       ``vigil db upgrade``, ``vigil camera add`` xN; never the default ports or
       ``./var``), stopped with ``vigil stack down`` whatever happens.
    4. Vigil: ``vigil record``; warm-up; window; the spool's outbox at the window's
       end is the upload lag; SIGINT (it seals the chunks in progress and drains the
       spool) and wait. Chunks, media seconds and bytes committed come from the
       bench stack's catalog, gaps and camera states too.
    5. Baseline: N ffmpeg processes; warm-up; window; SIGINT (ffmpeg finalizes its
       segments); every segment is opened with PyAV to count its media seconds.
    6. The table: both figures, their ratios, PASS/FAIL against the targets.

Run from the repository root (a full run takes ~7 minutes; start it in the
background if your shell stops commands at 10 minutes):

    .venv/bin/python bench/ingest.py                       # 32 cameras, 120 s window
    .venv/bin/python bench/ingest.py --cameras 2 --seconds 20
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/ingest.py` puts bench/ first, not the root
    sys.path.insert(0, str(REPO))

import av  # noqa: E402
import imageio_ffmpeg  # noqa: E402
import psutil  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

from tests.support import VIGIL, environ_with, free_ports, stack_env  # noqa: E402

OUT_DIR: Final = REPO / "bench" / "out"
SERVER_SCRIPT: Final = REPO / "bench" / "rtsp_file_server.py"
SYSTEM_PYTHON: Final = "/usr/bin/python3"
FFMPEG: Final = imageio_ffmpeg.get_ffmpeg_exe()

TARGET_CPU_RATIO: Final = 1.0
TARGET_MB_PER_STREAM: Final = 20.0
MB: Final = 1024 * 1024
# Memory is sampled this often during a window (RSS and PSS from smaps_rollup).
SAMPLE_EVERY_S: Final = 1.0
# How long the served stream is read to check its rate, and how much of the start
# of that read is ignored (FFmpeg's probing delivers its first second in a burst).
VERIFY_S: Final = 10.0
VERIFY_SKIP_S: Final = 1.5
SERVER_READY_S: Final = 30.0
RECORDER_STOP_S: Final = 300.0
FFMPEG_STOP_S: Final = 30.0
CAMERA_ADD_PARALLEL: Final = 4
# Between the two contenders: let the server drop the previous clients and the
# machine settle.
PAUSE_S: Final = 5.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the source ----------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    width: int = 1920
    height: int = 1080
    fps: int = 25
    kbps: int = 4000
    gop: int = 50  # frames: 2 s at 25 fps
    seconds: int = 90
    noise: int = 10  # temporal noise strength: makes the encoder spend its bitrate

    @property
    def path(self) -> Path:
        return OUT_DIR / (f"src-{self.width}x{self.height}-{self.fps}fps-{self.kbps}k-"
                          f"gop{self.gop}-{self.seconds}s-n{self.noise}-v1.h264")

    def describe(self) -> str:
        return (f"H.264 {self.width}x{self.height} {self.fps} fps {self.kbps / 1000:g} Mbit/s, "
                f"closed GOP {self.gop / self.fps:g} s, no B-frames, {self.seconds} s looped")


def encode_source(src: Source) -> Path:
    """Encode the source once; later runs reuse the cached file."""
    if src.path.exists():
        return src.path
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    tmp = src.path.with_suffix(".tmp.h264")
    rate = f"{src.kbps}k"
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "lavfi",
           "-i", f"testsrc2=size={src.width}x{src.height}:rate={src.fps}:duration={src.seconds}",
           "-vf", f"noise=alls={src.noise}:allf=t+u,format=yuv420p",
           # zerolatency without sliced threads: one slice per frame, as cameras send.
           "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
           "-x264-params", "sliced-threads=0", "-profile:v", "main",
           "-b:v", rate, "-maxrate", rate, "-bufsize", rate,
           "-g", str(src.gop), "-keyint_min", str(src.gop), "-sc_threshold", "0", "-bf", "0",
           "-f", "h264", str(tmp)]
    log(f"encoding the source once ({src.describe()}) ...")
    subprocess.run(cmd, check=True)
    os.replace(tmp, src.path)
    return src.path


@dataclass(frozen=True)
class SourceCheck:
    frames: int
    mbps: float
    gop_frames: int


def check_source_file(src: Source) -> SourceCheck:
    frames, size, keys = 0, 0, []
    with av.open(str(src.path), format="h264") as container:
        for packet in container.demux(video=0):
            if packet.size == 0:
                continue
            if packet.is_keyframe:
                keys.append(frames)
            frames += 1
            size += packet.size
    gops = [b - a for a, b in zip(keys, keys[1:], strict=False)]
    return SourceCheck(frames=frames, mbps=size * 8 / (frames / src.fps) / 1e6,
                       gop_frames=int(statistics.median(gops)) if gops else 0)


# --- the RTSP server -----------------------------------------------------------------


class RtspFileServer:
    def __init__(self, path: Path, fps: int, workdir: Path) -> None:
        self.port = free_ports(1)[0]
        self.path, self.fps = path, fps
        self.stderr_path = workdir / "rtsp-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()

    def url(self, camera: int) -> str:
        return f"rtsp://127.0.0.1:{self.port}/live?cam={camera}"

    def start(self) -> None:
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--file",
             str(self.path), "--fps", str(self.fps), "--stop-on-stdin-eof"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + SERVER_READY_S
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the RTSP file server did not start:\n"
                                   + self.stderr_path.read_text(errors="replace")[-2000:])

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"READY "):
                self._ready.set()

    @property
    def process(self) -> psutil.Process:
        assert self.proc is not None
        return psutil.Process(self.proc.pid)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop(proc, signal.SIGTERM, 10.0)
            if proc.stdin is not None:
                proc.stdin.close()
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()


@dataclass(frozen=True)
class StreamCheck:
    fps: float
    mbps: float
    width: int
    height: int
    keyframe_interval_s: float
    rtcp: bool


def check_stream(url: str, seconds: float = VERIFY_S) -> StreamCheck:
    """Read the served stream with PyAV as the recorder does; rates over arrivals
    after the opening burst."""
    container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=10)
    try:
        video = container.streams.video[0]
        t0 = time.monotonic()
        arrivals: list[tuple[float, int, bool, float]] = []
        for packet in container.demux(video):
            if packet.pts is None:
                continue
            now = time.monotonic() - t0
            arrivals.append((now, packet.size, packet.is_keyframe,
                             float(packet.pts * packet.time_base)))
            if now > seconds:
                break
        steady = [a for a in arrivals if a[0] >= VERIFY_SKIP_S]
        span = steady[-1][0] - steady[0][0]
        keys = [a[3] for a in arrivals if a[2]]
        interval = statistics.median([b - a for a, b in zip(keys, keys[1:], strict=False)]
                                     ) if len(keys) > 1 else 0.0
        return StreamCheck(fps=(len(steady) - 1) / span,
                           mbps=sum(a[1] for a in steady[1:]) * 8 / span / 1e6,
                           width=video.codec_context.width, height=video.codec_context.height,
                           keyframe_interval_s=interval,
                           rtcp=container.start_time_realtime is not None)
    finally:
        container.close()


# --- processes and measurement -------------------------------------------------------


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout_s: float) -> bool:
    """Signal a process we started and wait; SIGKILL after the timeout. True if it
    stopped by itself."""
    if proc.poll() is not None:
        return True
    proc.send_signal(sig)
    return _wait_or_kill(proc, timeout_s)


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait for a process we started (and signalled once: a second SIGINT makes
    ffmpeg abandon its trailer); SIGKILL after the timeout."""
    try:
        proc.wait(max(0.0, timeout_s))
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def _tree(procs: Sequence[psutil.Process]) -> Iterator[psutil.Process]:
    for proc in procs:
        yield proc
        try:
            yield from proc.children(recursive=True)
        except psutil.NoSuchProcess:
            continue


def cpu_seconds(procs: Sequence[psutil.Process]) -> float:
    """user + system of the processes and their live descendants."""
    total = 0.0
    for proc in _tree(procs):
        try:
            t = proc.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            continue
    return total


def machine_busy_s() -> tuple[float, float]:
    """(busy CPU seconds, all CPU seconds) of the whole machine so far."""
    t = psutil.cpu_times()
    total = sum(t)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


@dataclass
class Window:
    """What one contender cost over one measurement window."""

    seconds: float = 0.0
    cpu_s: float = 0.0
    server_cpu_s: float = 0.0
    stack_cpu_s: float = 0.0
    machine_busy_frac: float = 0.0
    rss_total: list[int] = field(default_factory=list)  # one value per sample
    pss_total: list[int] = field(default_factory=list)
    alive_min: int = 0


def measure(procs: Sequence[psutil.Process], *, seconds: float, server: psutil.Process,
            stack: Sequence[psutil.Process], at_end: Callable[[], None] = lambda: None
            ) -> Window:
    w = Window(alive_min=len(procs))
    cpu0, srv0, stk0 = cpu_seconds(procs), cpu_seconds([server]), cpu_seconds(stack)
    busy0, all0 = machine_busy_s()
    t0 = time.monotonic()
    next_sample = t0
    while True:
        now = time.monotonic()
        if now - t0 >= seconds:
            break
        if now >= next_sample:
            rss = pss = alive = 0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    rss, pss, alive = rss + info.rss, pss + info.pss, alive + 1
                except psutil.NoSuchProcess:
                    continue
            w.rss_total.append(rss)
            w.pss_total.append(pss)
            w.alive_min = min(w.alive_min, alive)
            next_sample += SAMPLE_EVERY_S
        time.sleep(max(0.0, min(next_sample, t0 + seconds) - time.monotonic()))
    cpu1, srv1, stk1 = cpu_seconds(procs), cpu_seconds([server]), cpu_seconds(stack)
    busy1, all1 = machine_busy_s()
    w.seconds = time.monotonic() - t0
    at_end()
    w.cpu_s, w.server_cpu_s, w.stack_cpu_s = cpu1 - cpu0, srv1 - srv0, stk1 - stk0
    w.machine_busy_frac = (busy1 - busy0) / (all1 - all0) if all1 > all0 else 0.0
    return w


def warm_up(seconds: float, procs: Sequence[subprocess.Popen[bytes]], what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{what}: {len(dead)} process(es) exited during warm-up "
                               f"(exit {dead[0].returncode})")
        time.sleep(0.2)


# --- the bench stack -----------------------------------------------------------------


class BenchStack:
    """A Vigil stack of its own: temporary home, free ports."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.vars = stack_env(home)
        self.env = environ_with(self.vars)
        self.engine: Engine | None = None
        self.up_done = False

    def vigil(self, *args: str, timeout: float = 300.0) -> str:
        result = subprocess.run([*VIGIL, *args], env=self.env, cwd=REPO, capture_output=True,
                                text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"vigil {' '.join(args[:2])} failed ({result.returncode}):\n"
                               f"{result.stderr[-3000:]}")
        return result.stdout

    def up(self) -> None:
        self.up_done = True  # from here on, `down` must run, even after a failed start
        self.vigil("stack", "up")
        self.vigil("db", "upgrade")
        # The settings of this stack, for the bench's own catalog queries: the
        # variables go into this process's environment before Settings reads them.
        for key in [k for k in os.environ if k.startswith("VIGIL_")]:
            del os.environ[key]
        os.environ.update(self.vars)
        from vigil.settings import Settings

        url = Settings().sqlalchemy_url()  # holds the password: never printed
        self.engine = create_engine(url, poolclass=NullPool, hide_parameters=True)

    def down(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
        if self.up_done:
            try:
                self.vigil("stack", "down", timeout=120.0)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                log(f"WARNING: vigil stack down failed: {exc}")

    def processes(self) -> list[psutil.Process]:
        from ops import stack
        from vigil.settings import Settings

        found = []
        for pid in stack.pids(Settings()).values():
            try:
                found.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue
        return found

    def add_cameras(self, urls: Sequence[str], chunk_seconds: int) -> None:
        def add(k: int) -> None:
            self.vigil("camera", "add", f"cam{k}", urls[k], "--chunk-seconds", str(chunk_seconds))

        with ThreadPoolExecutor(CAMERA_ADD_PARALLEL) as pool:
            list(pool.map(add, range(len(urls))))

    def query(self, sql: str, **params: object) -> list[tuple]:
        assert self.engine is not None
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]

    @property
    def spool(self) -> Path:
        return self.home / "spool"


# --- the two contenders --------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    processes: int
    window: Window
    notes: list[str] = field(default_factory=list)
    media_s: float = 0.0  # recorded media seconds, whole run (warm-up and stop included)
    expected_media_s: float = 0.0
    problems: list[str] = field(default_factory=list)


def spool_state(root: Path) -> tuple[int, int, float]:
    """(sealed chunks waiting in the outbox, their bytes, age of the oldest in s)."""
    outbox = root / "outbox"
    blobs = list(outbox.glob("*.vch")) if outbox.exists() else []
    now = time.time()
    ages, size = [], 0
    for blob in blobs:
        try:
            st = blob.stat()
        except FileNotFoundError:
            continue
        size += st.st_size
        ages.append(now - st.st_mtime)
    return len(blobs), size, max(ages, default=0.0)


def run_vigil(args: argparse.Namespace, bench: BenchStack, server: RtspFileServer,
              workdir: Path, round_no: int) -> Outcome:
    n = args.cameras
    since = datetime.now(UTC)
    out = Outcome(name="vigil", processes=1, window=Window())
    logfile = workdir / f"vigil-record-{round_no}.log"
    with open(logfile, "wb") as logf:
        proc = subprocess.Popen([*VIGIL, "record"], env=bench.env, cwd=REPO,
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
    started = time.monotonic()
    profiler: subprocess.Popen[bytes] | None = None
    try:
        log(f"vigil record (pid {proc.pid}): warm-up {args.warmup:g} s")
        warm_up(args.warmup, [proc], "vigil record")
        states = dict(bench.query("SELECT status::text, count(*) FROM cameras GROUP BY 1"))
        recording = states.get("recording", 0)
        if recording < n:
            out.problems.append(f"only {recording} of {n} cameras recording at window start "
                                f"({states})")
        if args.py_spy and round_no == 1:
            profiler = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(proc.pid),
                 "--duration", str(int(args.seconds)), "--rate", "50", "--nonblocking",
                 "--threads", "--format", "raw", "--output", args.py_spy],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            out.notes.append(f"profiled with py-spy into {args.py_spy} (figures disturbed)")
        lag: list[tuple[int, int, float]] = []
        log(f"vigil record: measuring {args.seconds:g} s")
        out.window = measure([psutil.Process(proc.pid)], seconds=args.seconds,
                             server=server.process, stack=bench.processes(),
                             at_end=lambda: lag.append(spool_state(bench.spool)))
        entries, size, oldest = lag[0]
        out.notes.append(f"upload lag at window end: {entries} sealed chunk(s), "
                         f"{size / MB:.1f} MB waiting in the spool, oldest {oldest:.0f} s")
    finally:
        if profiler is not None:
            _stop(profiler, signal.SIGINT, 30.0)
        t_stop = time.monotonic()
        stop_wall = datetime.now(UTC)
        log("vigil record: SIGINT, waiting for it to seal and drain ...")
        clean = _stop(proc, signal.SIGINT, RECORDER_STOP_S)
    out.notes.append(f"stop (seal chunks in progress, drain spool) took "
                     f"{time.monotonic() - t_stop:.1f} s"
                     + ("" if clean else f", then KILLED after {RECORDER_STOP_S:.0f} s"))
    if proc.returncode not in (0, None):
        out.problems.append(f"vigil record exited with {proc.returncode} (see {logfile})")
    entries, size, _ = spool_state(bench.spool)
    if entries:
        out.problems.append(f"{entries} chunk(s), {size / MB:.1f} MB left in the spool "
                            "after stop")

    rows = bench.query(
        "SELECT camera_id, count(*), min(start_at), sum(media_duration_us)::bigint, "
        "sum(plaintext_bytes)::bigint, sum(stored_bytes)::bigint FROM chunks "
        "WHERE created_at >= :since GROUP BY camera_id", since=since)
    chunks = sum(r[1] for r in rows)
    out.media_s = sum(r[3] for r in rows) / 1e6
    # Expected media: every camera from the process's start to the stop signal (as
    # for ffmpeg; start-up and connecting count as not recorded). Expected chunks:
    # from each camera's first frame to the stop, in chunks of the target length.
    out.expected_media_s = n * (t_stop - started)
    spans = [(stop_wall - r[2]).total_seconds() for r in rows]
    expected_chunks = sum(math.ceil(s / args.chunk_seconds - 1e-3) for s in spans) + (
        (n - len(rows)) * math.ceil((t_stop - started) / args.chunk_seconds))
    per_cam = [r[1] for r in rows] + [0] * (n - len(rows))
    stored = sum(r[5] for r in rows)
    gaps = bench.query("SELECT cause::text, count(*) FROM recording_gaps "
                       "WHERE created_at >= :since AND cause::text <> 'recorder_stopped' "
                       "GROUP BY 1", since=since)
    out.notes.append(f"chunks committed: {chunks} (expected {expected_chunks}; per camera "
                     f"{min(per_cam)}-{max(per_cam)}), {stored / MB:.0f} MB stored in S3")
    if gaps:
        out.problems.append(f"recording gaps: {dict(gaps)}")
    text_log = logfile.read_text(errors="replace")
    warnings = [line for line in text_log.splitlines()
                if " WARNING " in line or " ERROR " in line]
    if warnings:
        out.problems.append(f"{len(warnings)} WARNING/ERROR line(s) in the recorder's log, "
                            "first: " + "; ".join(w[24:200] for w in warnings[:3]))
    return out


def run_ffmpeg(args: argparse.Namespace, bench: BenchStack, server: RtspFileServer,
               workdir: Path, round_no: int) -> Outcome:
    n = args.cameras
    root = workdir / f"ffmpeg-{round_no}"
    procs: list[subprocess.Popen[bytes]] = []
    out = Outcome(name="ffmpeg", processes=n, window=Window())
    started = time.monotonic()
    try:
        for k in range(n):
            d = root / f"cam{k}"
            d.mkdir(parents=True)
            with open(d / "ffmpeg.log", "wb") as logf:
                procs.append(subprocess.Popen(
                    [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "warning",
                     "-rtsp_transport", "tcp", "-i", server.url(k), "-c", "copy",
                     "-f", "segment", "-segment_time", str(args.chunk_seconds),
                     "-reset_timestamps", "1", str(d / "out%05d.mp4")],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=logf))
        log(f"ffmpeg x{n}: warm-up {args.warmup:g} s")
        warm_up(args.warmup, procs, "ffmpeg")
        writing = sum(1 for k in range(n) if any((root / f"cam{k}").glob("*.mp4")))
        if writing < n:
            out.problems.append(f"only {writing} of {n} ffmpeg processes writing at window "
                                "start")
        log(f"ffmpeg x{n}: measuring {args.seconds:g} s")
        out.window = measure([psutil.Process(p.pid) for p in procs], seconds=args.seconds,
                             server=server.process, stack=bench.processes())
    finally:
        t_stop = time.monotonic()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + FFMPEG_STOP_S
        killed = sum(0 if _wait_or_kill(p, deadline - time.monotonic()) else 1 for p in procs)
    elapsed = t_stop - started
    if killed:
        out.problems.append(f"{killed} ffmpeg process(es) had to be killed")
    bad_rc = [p.returncode for p in procs if p.returncode not in (0, 255)]
    if bad_rc:
        out.problems.append(f"ffmpeg exit codes {sorted(set(bad_rc))}")
    segments = unreadable = size = 0
    for k in range(n):
        for seg in sorted((root / f"cam{k}").glob("*.mp4")):
            segments += 1
            size += seg.stat().st_size
            try:
                with av.open(str(seg)) as c:
                    out.media_s += (c.duration or 0) / av.time_base
            except av.error.FFmpegError:
                unreadable += 1
    out.expected_media_s = n * elapsed
    out.notes.append(f"segments written: {segments}, {size / MB:.0f} MB"
                     + (f", {unreadable} UNREADABLE" if unreadable else ""))
    if unreadable:
        out.problems.append(f"{unreadable} unreadable segment(s)")
    if not segments:
        out.problems.append("ffmpeg wrote nothing")
    return out


# --- report --------------------------------------------------------------------------


def per_stream_minute(cpu_s: float, cameras: int, seconds: float) -> float:
    return cpu_s / (cameras * seconds / 60.0)


def mb_per_stream(samples: list[int], cameras: int) -> tuple[float, float]:
    if not samples:
        return 0.0, 0.0
    return statistics.fmean(samples) / cameras / MB, max(samples) / cameras / MB


@dataclass
class Totals:
    cpu_s: float = 0.0
    seconds: float = 0.0
    server_cpu_s: float = 0.0
    stack_cpu_s: float = 0.0
    busy: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    pss: list[int] = field(default_factory=list)
    media_s: float = 0.0
    expected_media_s: float = 0.0

    def add(self, o: Outcome) -> None:
        w = o.window
        self.cpu_s += w.cpu_s
        self.seconds += w.seconds
        self.server_cpu_s += w.server_cpu_s
        self.stack_cpu_s += w.stack_cpu_s
        self.busy.append(w.machine_busy_frac)
        self.rss += w.rss_total
        self.pss += w.pss_total
        self.media_s += o.media_s
        self.expected_media_s += o.expected_media_s


def table(rows: list[tuple[str, str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = []
    for i, r in enumerate(rows):
        lines.append(f"  {r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  "
                     f"{r[3]:>{widths[3]}}")
        if i == 0:
            lines.append("  " + "-" * (sum(widths) + 6))
    return "\n".join(lines)


def report(args: argparse.Namespace, totals: dict[str, Totals]) -> bool:
    n = args.cameras
    v, f = totals["vigil"], totals["ffmpeg"]
    v_cpu = per_stream_minute(v.cpu_s, n, v.seconds)
    f_cpu = per_stream_minute(f.cpu_s, n, f.seconds)
    v_rss, v_rss_peak = mb_per_stream(v.rss, n)
    f_rss, f_rss_peak = mb_per_stream(f.rss, n)
    v_pss, v_pss_peak = mb_per_stream(v.pss, n)
    f_pss, f_pss_peak = mb_per_stream(f.pss, n)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "-"

    rows = [
        ("", "vigil record", "ffmpeg -c copy", "vigil/ffmpeg"),
        ("processes", "1", str(n), ""),
        ("CPU-s per stream-minute", f"{v_cpu:.3f}", f"{f_cpu:.3f}", ratio(v_cpu, f_cpu)),
        ("CPU, cores busy (total)", f"{v.cpu_s / v.seconds:.2f}", f"{f.cpu_s / f.seconds:.2f}",
         ratio(v.cpu_s / v.seconds, f.cpu_s / f.seconds)),
        ("RSS per stream, mean (MB)", f"{v_rss:.1f}", f"{f_rss:.1f}", ratio(v_rss, f_rss)),
        ("RSS per stream, peak (MB)", f"{v_rss_peak:.1f}", f"{f_rss_peak:.1f}",
         ratio(v_rss_peak, f_rss_peak)),
        ("PSS per stream, mean (MB)", f"{v_pss:.1f}", f"{f_pss:.1f}", ratio(v_pss, f_pss)),
        ("PSS per stream, peak (MB)", f"{v_pss_peak:.1f}", f"{f_pss_peak:.1f}",
         ratio(v_pss_peak, f_pss_peak)),
        ("media recorded / (N x wall)", f"{v.media_s / v.expected_media_s:.1%}"
         if v.expected_media_s else "-",
         f"{f.media_s / f.expected_media_s:.1%}" if f.expected_media_s else "-", ""),
        ("-- context (not counted) --", "", "", ""),
        ("RTSP server, cores busy", f"{v.server_cpu_s / v.seconds:.2f}",
         f"{f.server_cpu_s / f.seconds:.2f}", ""),
        ("stack (PG, S3, Redis), cores busy", f"{v.stack_cpu_s / v.seconds:.2f}",
         f"{f.stack_cpu_s / f.seconds:.2f}", ""),
        ("machine busy (all CPUs)", f"{statistics.fmean(v.busy):.0%}",
         f"{statistics.fmean(f.busy):.0%}", ""),
    ]
    print(table(rows))
    cpu_ok = f_cpu > 0 and v_cpu / f_cpu <= TARGET_CPU_RATIO
    mem_ok = v_rss_peak < TARGET_MB_PER_STREAM
    print()
    print(f"  target CPU per stream <= ffmpeg's (ratio <= {TARGET_CPU_RATIO:.1f}): "
          f"{v_cpu / f_cpu if f_cpu else float('nan'):.2f}  {'PASS' if cpu_ok else 'FAIL'}")
    print(f"  target memory per stream < {TARGET_MB_PER_STREAM:.0f} MB (peak RSS / N): "
          f"{v_rss_peak:.1f} MB  {'PASS' if mem_ok else 'FAIL'}")
    return cpu_ok and mem_ok


# --- main ----------------------------------------------------------------------------


def _revision() -> str:
    """The commit measured, and whether the recorder's code differs from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "recorder", "vigil",
                                "ops"], cwd=REPO, text=True, capture_output=True,
                               check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (recorder/vigil/ops modified)" if dirty else "")


@contextmanager
def workspace(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="vigil-bench-ingest-"))
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        else:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cameras", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=120.0, help="measurement window")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--chunk-seconds", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1,
                        help="Vigil and ffmpeg this many times each, alternating who starts")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directories")
    parser.add_argument("--py-spy", metavar="FILE",
                        help="profile vigil record's first window with py-spy (raw format)")
    args = parser.parse_args(argv)

    src = Source()
    source = encode_source(src)
    checked = check_source_file(src)
    print(f"Ingest benchmark: {args.cameras} cameras, window {args.seconds:g} s after "
          f"{args.warmup:g} s warm-up, {args.chunk_seconds} s chunks, {args.rounds} round(s)")
    print(f"machine: {os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
          f"{psutil.virtual_memory().total / 2**30:.0f} GiB, {platform.platform()}, "
          f"load {os.getloadavg()[0]:.2f} at start")
    print(f"source: {src.describe()}; file {checked.frames} frames, "
          f"{checked.mbps:.2f} Mbit/s, keyframe every {checked.gop_frames} frames")
    print(f"vigil: commit {_revision()}; ffmpeg: {FFMPEG.rsplit('/', 1)[-1]}; "
          f"PyAV {av.__version__} (libavformat {av.library_versions.get('libavformat')})")

    totals = {"vigil": Totals(), "ffmpeg": Totals()}
    outcomes: list[tuple[int, Outcome]] = []
    with workspace(args.keep) as workdir:
        server = RtspFileServer(source, src.fps, workdir)
        bench = BenchStack(workdir / "home")
        try:
            server.start()
            sc = check_stream(server.url(0))
            print(f"served: one shared live media at rtsp://127.0.0.1:{server.port}/live"
                  f"?cam=K; PyAV reads {sc.fps:.1f} frames/s, {sc.mbps:.2f} Mbit/s, "
                  f"{sc.width}x{sc.height}, keyframe every {sc.keyframe_interval_s:.2f} s, "
                  f"RTCP {'yes' if sc.rtcp else 'no'}")
            log("bench stack: up, migrations, cameras ...")
            bench.up()
            bench.add_cameras([server.url(k) for k in range(args.cameras)], args.chunk_seconds)
            runners = {"vigil": run_vigil, "ffmpeg": run_ffmpeg}
            for r in range(1, args.rounds + 1):
                order = ["vigil", "ffmpeg"] if r % 2 == 1 else ["ffmpeg", "vigil"]
                for name in order:
                    time.sleep(PAUSE_S)
                    o = runners[name](args, bench, server, workdir, r)
                    totals[name].add(o)
                    outcomes.append((r, o))
        finally:
            server_log = server.stderr_path
            server.stop()
            log("bench stack: down")
            bench.down()
            if server_log.exists():
                tail = server_log.read_text(errors="replace").strip().splitlines()[-1:]
                if tail:
                    log(f"rtsp server: {tail[0]}")

    print()
    for r, o in outcomes:
        w = o.window
        print(f"round {r} {o.name}: {per_stream_minute(w.cpu_s, args.cameras, w.seconds):.3f} "
              f"CPU-s/stream-min over {w.seconds:.1f} s; "
              f"{o.media_s:.0f} of ~{o.expected_media_s:.0f} media-s recorded")
        for note in o.notes:
            print(f"    {note}")
        for problem in o.problems:
            print(f"    PROBLEM: {problem}")
    print()
    ok = report(args, totals)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
