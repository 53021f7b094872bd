"""The RTSP test camera (tests/camera/rtsp_camera.py) as a process of its own.

    with RtspCamera(codec="h265", audio="aac", width=320, height=240) as cam:
        container = av.open(cam.url, options={"rtsp_transport": "tcp"}, timeout=10)

The camera runs under the system interpreter, where GStreamer's Python bindings
import (``make system-deps`` installs them). It is bound to 127.0.0.1 and is
stopped on ``__exit__``; should the test process die without stopping it, the
camera sees its stdin close and stops by itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Literal

from tests.support import free_ports

SYSTEM_PYTHON = "/usr/bin/python3"
CAMERA_SCRIPT = Path(__file__).resolve().parent / "camera" / "rtsp_camera.py"
# Start-up is GStreamer's plugin scan (seconds on a cold registry) plus binding the port.
READY_TIMEOUT_S = 20.0
# The camera quits its main loop on SIGTERM at once; past this it is killed.
STOP_TIMEOUT_S = 10.0

Codec = Literal["h264", "h265"]
Audio = Literal["none", "aac", "pcma", "opus"]


class RtspCamera:
    """A live test-pattern camera at ``rtsp://127.0.0.1:{port}/cam``."""

    def __init__(self, *, port: int | None = None, codec: Codec = "h264",
                 audio: Audio = "none", width: int = 640, height: int = 360, fps: int = 25,
                 gop: int = 25, kbps: int = 800) -> None:
        self.port = port if port is not None else free_ports(1)[0]
        self.codec = codec
        self.audio = audio
        self.width = width
        self.height = height
        self.fps = fps
        self.gop = gop
        self.kbps = kbps
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [SYSTEM_PYTHON, str(CAMERA_SCRIPT), "--port", str(self.port),
                "--codec", self.codec, "--audio", self.audio,
                "--width", str(self.width), "--height", str(self.height),
                "--fps", str(self.fps), "--gop", str(self.gop), "--kbps", str(self.kbps),
                "--stop-on-stdin-eof"]

    def start(self) -> None:
        """Spawn the camera and return once it listens; raise with its stderr if not."""
        if self._proc is not None:
            raise RuntimeError(f"camera on port {self.port} is already started")
        # A file, not a pipe: nobody reads stderr while the camera runs, so a pipe
        # could fill up and block it.
        self._stderr = tempfile.TemporaryFile(prefix="rtsp-camera-", suffix=".stderr")
        self._ready.clear()
        self._proc = subprocess.Popen(self.command(), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._stderr)
        self._reader = threading.Thread(target=self._read_stdout, args=(self._proc,),
                                        name=f"rtsp-camera-{self.port}", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._ready.wait(0.05):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                log = self.stderr_text()
                self.stop()
                raise RuntimeError(f"RTSP test camera exited with {code} before READY "
                                   f"({' '.join(self.command())}):\n{log}")
            if time.monotonic() > deadline:
                log = self.stderr_text()
                self.stop()
                raise RuntimeError(f"RTSP test camera not READY within {READY_TIMEOUT_S} s "
                                   f"({' '.join(self.command())}):\n{log}")

    def _read_stdout(self, proc: subprocess.Popen[bytes]) -> None:
        # Drains stdout until the camera exits, so that it can never block on it.
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"READY "):
                self._ready.set()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Does nothing if not started."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        if self._reader is not None:
            self._reader.join(timeout=STOP_TIMEOUT_S)
            self._reader = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def restart(self) -> None:
        """Stop, then start again on the same port: the camera goes away and comes back."""
        self.stop()
        self.start()

    def stderr_text(self) -> str:
        """What the camera has written to stderr so far (of the current run)."""
        if self._stderr is None:
            return ""
        # pread: the file offset is shared with the camera, which is still writing.
        fd = self._stderr.fileno()
        return os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")

    def __enter__(self) -> RtspCamera:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
