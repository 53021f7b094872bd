"""The embedded stack: loopback only, private credentials, idempotent, and stoppable
by pid even after the CLI that started it crashed."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import psutil
import psycopg
import pytest
import redis

from ops import stack
from tests.support import VIGIL
from vigil.settings import Settings

pytestmark = pytest.mark.slow


def _listening(pid: int) -> list[tuple[str, int]]:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return [(c.laddr.ip, c.laddr.port) for p in procs for c in p.net_connections("inet")
            if c.status == psutil.CONN_LISTEN]


def test_every_server_listens_on_loopback_only(settings: Settings) -> None:
    pids = stack.pids(settings)
    assert set(pids) == {"postgres", "s3", "redis"}
    for name, pid in pids.items():
        addresses = _listening(pid)
        assert addresses, f"{name} listens nowhere?"
        assert {ip for ip, _ in addresses} == {"127.0.0.1"}, (name, addresses)


def test_state_files_are_private(settings: Settings) -> None:
    sdir = stack.stack_dir(settings)
    for path in [settings.secrets_path, sdir / "redis.conf", sdir / "s3-identities.json",
                 *sdir.glob("*.pid")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_secrets_are_not_on_any_command_line(settings: Settings) -> None:
    creds = settings.embedded_secrets()
    secrets = [s.get_secret_value() for s in (creds.pg_password, creds.redis_password,
                                              creds.s3_secret_key)]
    for pid in stack.pids(settings).values():
        cmdline = " ".join(psutil.Process(pid).cmdline())
        assert not any(s in cmdline for s in secrets)


def test_servers_refuse_wrong_credentials(settings: Settings) -> None:
    st = settings.stack
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=st.bind_host, port=st.pg_port, user="vigil", dbname="vigil",
                        password="wrong-password", connect_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=st.bind_host, port=st.redis_port, password="wrong").ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=st.bind_host, port=st.redis_port).ping()


def test_up_is_idempotent(settings: Settings) -> None:
    before = stack.pids(settings)
    assert stack.up(settings) == []
    assert stack.pids(settings) == before


def _pidfile_pids(home: Path) -> dict[str, int]:
    return {p.stem: json.loads(p.read_text())["pid"] for p in (home / "stack").glob("*.pid")}


def test_down_stops_everything_after_the_cli_crashed(own_stack: dict[str, str]) -> None:
    home = Path(own_stack["VIGIL_HOME"])
    cli = subprocess.Popen([*VIGIL, "stack", "up"], env=own_stack,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # Kill the CLI the moment the servers are spawned, before it finished waiting.
    deadline = time.monotonic() + 60
    while len(_pidfile_pids(home)) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    started = _pidfile_pids(home)
    assert set(started) == {"postgres", "s3", "redis"}
    assert all(psutil.pid_exists(pid) for pid in started.values())

    down = subprocess.run([*VIGIL, "stack", "down"], env=own_stack, capture_output=True,
                          text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    for name, pid in started.items():
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie", name
    assert _pidfile_pids(home) == {}


def test_a_stale_pid_file_never_kills_a_stranger(own_stack: dict[str, str]) -> None:
    """A pid file whose pid now belongs to another process must be ignored."""
    home = Path(own_stack["VIGIL_HOME"])
    (home / "stack").mkdir(parents=True)
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        record = {"pid": stranger.pid, "create_time": psutil.Process(stranger.pid)
                  .create_time() - 1000, "exe": "postgres"}
        (home / "stack" / "postgres.pid").write_text(json.dumps(record))
        down = subprocess.run([*VIGIL, "stack", "down"], env=own_stack, capture_output=True,
                              text=True, timeout=60)
        assert down.returncode == 0
        assert stranger.poll() is None, "stack down killed a process it did not start"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_busy_port_is_a_clear_error(own_stack: dict[str, str]) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(own_stack["VIGIL_STACK_PG_PORT"])))
        blocker.listen()
        up = subprocess.run([*VIGIL, "stack", "up"], env=own_stack, capture_output=True,
                            text=True, timeout=120)
    assert up.returncode == 2
    assert "cannot start postgres" in up.stderr
    assert own_stack["VIGIL_STACK_PG_PORT"] in up.stderr


def test_status_reports_every_server(settings: Settings) -> None:
    states = {s.name: s for s in stack.status(settings)}
    assert all(s.running and s.answering for s in states.values())
    assert os.path.basename(str(states["postgres"].log)) == "postgres.log"
