"""Helpers shared by the tests: free loopback ports and stack environments."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from vigil.settings import Settings, StackSettings

# The CLI, run as a child process with this interpreter.
VIGIL = [sys.executable, "-m", "ops"]

STACK_PORT_FIELDS = [name for name in StackSettings.model_fields if name.endswith("_port")]


def _free(port: int, taken: set[int]) -> bool:
    if port in taken:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int, *, taken: set[int] | None = None) -> list[int]:
    """``count`` distinct free loopback ports below the ephemeral range, so that no
    outgoing connection grabs one between this check and the server's bind."""
    taken = set(taken or ())
    ports: list[int] = []
    rng = random.Random()
    while len(ports) < count:
        port = rng.randrange(20000, 30000)
        if _free(port, taken):
            ports.append(port)
            taken.add(port)
    return ports


def stack_env(home: Path) -> dict[str, str]:
    """VIGIL_* variables for a stack of its own under ``home`` on free ports."""
    ports = free_ports(len(STACK_PORT_FIELDS) + 1)
    env = {"VIGIL_HOME": str(home), "VIGIL_PROFILE": "embedded",
           "VIGIL_API_HOST": "127.0.0.1", "VIGIL_API_PORT": str(ports.pop())}
    for name, port in zip(STACK_PORT_FIELDS, ports, strict=True):
        env[f"VIGIL_STACK_{name.upper()}"] = str(port)
    return env


def environ_with(env: dict[str, str]) -> dict[str, str]:
    """The current environment with ``env`` applied and other VIGIL_* removed."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("VIGIL_")}
    base.update(env)
    return base


def settings_for(env: dict[str, str]) -> Settings:
    """Settings of a stack described by ``env`` (from ``stack_env``), without touching
    this process's environment."""
    ports = {name: int(env[f"VIGIL_STACK_{name.upper()}"]) for name in STACK_PORT_FIELDS}
    return Settings(home=Path(env["VIGIL_HOME"]), stack=StackSettings(**ports))


def read_until(proc: subprocess.Popen[str], marker: str, timeout_s: float) -> list[str]:
    """Lines of ``proc``'s stdout up to the first that starts with ``marker``."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        lines.append(line.rstrip("\n"))
        if line.startswith(marker):
            return lines
    raise AssertionError(f"no {marker!r} within {timeout_s} s; output: {lines}")


def read_rest(proc: subprocess.Popen[str], timeout_s: float) -> list[str]:
    """The rest of ``proc``'s stdout, to its end, once ``proc`` has been told to stop.

    Reads through ``proc.stdout`` itself: ``communicate(timeout=...)`` reads the raw
    pipe and drops whatever ``readline`` had already buffered.
    """
    assert proc.stdout is not None
    stdout = proc.stdout
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.append(stdout.read()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if reader.is_alive():
        proc.kill()
        reader.join(10)
        raise AssertionError(f"stdout did not end within {timeout_s} s")
    proc.wait(timeout=max(1.0, timeout_s))
    return "".join(rest).splitlines()
