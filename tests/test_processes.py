"""The worker and `vigil run` as real processes on real servers."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import text

from tests.support import VIGIL, read_rest, read_until, settings_for
from vigil.db import make_engine
from vigil.settings import Settings

pytestmark = pytest.mark.slow


def test_a_worker_runs_a_task_through_broker_and_database(settings: Settings, engine) -> None:
    import os

    from vigil.tasks import configure, ping

    worker = subprocess.Popen([*VIGIL, "worker", "--concurrency", "1"], env=dict(os.environ),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        configure(settings)
        result = ping.delay().get(timeout=90)
        assert set(result) == {"worker", "db_time"}
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)


def test_run_serves_the_api_and_ctrl_c_stops_everything(own_stack: dict[str, str]) -> None:
    """What `make run` does, end to end, on a stack of its own."""
    home = Path(own_stack["VIGIL_HOME"])
    family: list[int] = []
    servers: list[int] = []
    started_at = time.monotonic()
    stderr_path = home.parent / "run-stderr.log"
    run = subprocess.Popen([*VIGIL, "run"], env=own_stack, stdout=subprocess.PIPE,
                           stderr=stderr_path.open("w"), text=True)
    try:
        lines = read_until(run, "Admin token:", timeout_s=120)
        up_after_s = time.monotonic() - started_at
        url = next(line.split()[-1] for line in lines if line.startswith("Vigil API:"))
        token = lines[-1].split()[-1]
        assert url == f"http://127.0.0.1:{own_stack['VIGIL_API_PORT']}"
        assert up_after_s < 60

        authed = httpx.get(f"{url}/api/v1/cameras", timeout=10,
                           headers={"Authorization": f"Bearer {token}"})
        assert authed.status_code == 200
        assert [c["name"] for c in authed.json()] == ["demo"]
        assert httpx.get(f"{url}/api/v1/cameras", timeout=10).status_code == 401

        # The demo camera is being recorded: its first chunks reach the catalog.
        # Keep every line read: the API's access log of the requests above may come
        # before the supervisor's "Recording:" line, and is checked below.
        lines += read_until(run, "Recording:", timeout_s=10)
        engine = make_engine(settings_for(own_stack), pool_size=1)
        try:
            deadline = time.monotonic() + 60
            chunks = 0
            while chunks < 2 and time.monotonic() < deadline:
                with engine.connect() as conn:
                    chunks = conn.execute(text(
                        "SELECT count(*) FROM chunks JOIN cameras c ON c.id = camera_id "
                        "WHERE c.name = 'demo'")).scalar_one()
                time.sleep(1)
            assert chunks >= 2, "the demo camera was not recorded"
        finally:
            engine.dispose()

        family = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
        servers = [json.loads(p.read_text())["pid"] for p in (home / "stack").glob("*.pid")]
        assert len(servers) == 3
    finally:
        run.send_signal(signal.SIGINT)
        rest = read_rest(run, timeout_s=120)
    assert run.returncode == 0
    output = [*lines, *rest]
    time.sleep(0.5)
    leftovers = [pid for pid in family + servers
                 if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert leftovers == [], f"processes left behind: {leftovers}"
    assert list((home / "stack").glob("*.pid")) == []

    # Nothing secret in any log: not the servers' credentials, not the token.
    secrets = json.loads((home / "stack" / "secrets.json").read_text())
    logs = {p.name: p.read_text(errors="replace")
            for p in [stderr_path, *(home / "log").glob("*")]}
    # The token is printed for the operator on two lines; nowhere else.
    logs["stdout"] = "\n".join(line for line in output
                               if not line.startswith(("Admin token:", "Try:")))
    assert "Press Ctrl-C to stop everything." in output  # no line of stdout was dropped
    assert "GET /api/v1/cameras" in logs["stdout"]  # the API did log its requests
    for path, content in logs.items():
        for name, secret in [*secrets.items(), ("admin token", token)]:
            assert secret not in content, f"{name} appears in {path}"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([*VIGIL, *args], env=dict(os.environ), capture_output=True,
                          text=True, timeout=120)


def test_cli_migrates_and_issues_tokens(settings: Settings, engine) -> None:
    from vigil.auth import service as auth_service
    from vigil.db import session_scope

    upgrade = _cli("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    created = _cli("token", "create", "--role", "auditor", "--name", "cli-auditor")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("vgl_")
    with session_scope() as session:
        principal = auth_service.authenticate(session=session, token=token)
        assert (principal.name, principal.role) == ("cli-auditor", "auditor")

    wrong = _cli("token", "create", "--role", "root", "--name", "x")
    assert wrong.returncode == 2
    assert "unknown role 'root'" in wrong.stderr


def test_status_exit_code_follows_the_servers(settings: Settings) -> None:
    assert _cli("stack", "status").returncode == 0


def test_record_without_a_database_is_a_clear_error(tmp_path: Path) -> None:
    import os

    from tests.support import free_ports

    (port,) = free_ports(1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    env.update(VIGIL_HOME=str(tmp_path),
               VIGIL_DATABASE_URL=f"postgresql://vigil:Xy9-Secret-Pw@127.0.0.1:{port}/vigil")
    result = subprocess.run([*VIGIL, "record"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "the database is unreachable" in result.stderr
    assert "Xy9-Secret-Pw" not in result.stderr + result.stdout
