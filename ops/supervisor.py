"""``vigil run`` (what ``make run`` runs): the whole system in the foreground.

Starts the embedded stack (whatever of it is not running), migrates the catalog,
issues a fresh admin token, registers the synthetic demo camera, starts the API, a
worker and a recorder as child processes, prints the API URL and the token, and
waits. Ctrl-C (SIGINT) or SIGTERM stops the children
and then exactly the servers this run started. If a child dies on its own, the
rest is stopped too and the exit status is 1.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from types import FrameType
from typing import Final

import httpx
from rich.console import Console

from ops import stack
from vigil import migrate
from vigil.errors import StackError
from vigil.settings import Settings, child_env

API_START_TIMEOUT_S: Final = 60.0
CHILD_STOP_GRACE_S: Final = 20.0
DEMO_ADMIN: Final = "admin"
DEMO_CAMERA: Final = "demo"
# The built-in synthetic camera: a live test pattern, 10 s chunks so that the
# timeline fills quickly.
DEMO_CAMERA_URL: Final = "synthetic://?size=640x360&fps=25&gop=50"
DEMO_CHUNK_S: Final = 10


def _spawn(args: list[str], settings: Settings) -> subprocess.Popen[bytes]:
    # Own session: the terminal's Ctrl-C reaches only the supervisor, which then
    # stops everything in order (children first, servers last).
    return subprocess.Popen([sys.executable, "-m", "ops", *args], env=child_env(settings),
                            stdin=subprocess.DEVNULL, start_new_session=True)


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + CHILD_STOP_GRACE_S
    for child in children:
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _wait_for_api(settings: Settings, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + API_START_TIMEOUT_S
    url = settings.api_url() + "/healthz"
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise StackError(f"the API exited during start-up (status {api.returncode})")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise StackError(f"the API did not answer on {settings.api_url()} within "
                     f"{API_START_TIMEOUT_S:.0f} s")


def run(settings: Settings, *, err: Console) -> int:
    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    started: list[str] = []
    children: list[subprocess.Popen[bytes]] = []
    status = 0
    try:
        err.print("starting the embedded stack ...")
        started = stack.up(settings, on_event=lambda m: err.print(f"  {m}"))
        migrate.upgrade()
        token = _issue_admin_token()
        _ensure_demo_camera()
        children.append(_spawn(["worker"], settings))
        children.append(_spawn(["record"], settings))
        api = _spawn(["api"], settings)
        children.append(api)
        _wait_for_api(settings, api)
        url = settings.api_url()
        # Plain prints: a terminal-width wrap would break the token and the command.
        print(f"\nVigil API:   {url}", flush=True)
        print(f"Admin token: {token}", flush=True)
        print(f'Try:         curl -H "Authorization: Bearer {token}" {url}/api/v1/cameras',
              flush=True)
        print(f"Recording:   camera {DEMO_CAMERA!r} ({DEMO_CAMERA_URL}); see it with "
              f"`.venv/bin/vigil timeline {DEMO_CAMERA}`", flush=True)
        print("Press Ctrl-C to stop everything.\n", flush=True)
        while not stop_requested:
            dead = [c for c in children if c.poll() is not None]
            if dead:
                err.print(f"a child process exited (status {dead[0].returncode}); stopping")
                status = 1
                break
            time.sleep(0.3)
    finally:
        err.print("stopping ...")
        _stop(children)
        stack.down(settings, names=started, on_event=lambda m: err.print(f"  {m}"))
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    err.print("stopped")
    return status


def _ensure_demo_camera() -> None:
    from recorder import service as recorder_service
    from vigil.db import session_scope
    from vigil.errors import NotFound

    with session_scope() as session:
        try:
            recorder_service.get_camera(session=session, name=DEMO_CAMERA)
        except NotFound:
            recorder_service.add_camera(session=session, name=DEMO_CAMERA, url=DEMO_CAMERA_URL,
                                        chunk_seconds=DEMO_CHUNK_S, actor="vigil run")


def _issue_admin_token() -> str:
    from vigil.auth import service as auth_service
    from vigil.db import session_scope

    label = "vigil run " + datetime.now(UTC).isoformat(timespec="seconds")
    with session_scope() as session:
        issued = auth_service.issue_token(session=session, principal_name=DEMO_ADMIN,
                                          role="admin", label=label, actor="vigil run")
    return issued.token
