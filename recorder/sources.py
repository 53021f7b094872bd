"""Opening camera sources with PyAV, and the built-in synthetic camera.

Anything FFmpeg opens is a source: ``rtsp://`` and ``rtsps://`` (over TCP, the
common case), ``rtmp://``, HLS over ``http(s)://``, ``srt://``, MPEG-TS over
``udp://``, ``tcp://``, and files. ``synthetic://`` is a live test pattern with a
tone, encoded in real time to H.264 + AAC by the FFmpeg binary that ships in the
``imageio-ffmpeg`` wheel, for demos (``make run``) and for trying Vigil without a
camera. Its query sets ``size`` (``640x360``), ``fps`` (25) and ``gop`` (50).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qs, urlsplit

import av
import av.container

from vigil.errors import InvalidInput

SYNTHETIC_SCHEME: Final = "synthetic"
# How long opening may wait for a source, and a read for its next packet.
OPEN_TIMEOUT_S: Final = 10.0
_SIZE_LIMITS: Final = (16, 3840)


@dataclass
class Source:
    """An open source: the PyAV container and whatever must be stopped with it."""

    container: av.container.InputContainer
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def close(self) -> None:
        try:
            self.container.close()
        finally:
            if self._process is not None:
                self._process.kill()
                self._process.wait()
                if self._process.stdout is not None:
                    self._process.stdout.close()


def synthetic_command(url: str) -> list[str]:
    """The FFmpeg command line of a synthetic camera URL (validated)."""
    import imageio_ffmpeg

    query = {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}
    size = query.get("size", "640x360")
    try:
        width, height = (int(x) for x in size.split("x"))
        fps, gop = int(query.get("fps", "25")), int(query.get("gop", "50"))
    except ValueError:
        raise InvalidInput(f"bad synthetic camera parameters in {url!r}") from None
    if not all(_SIZE_LIMITS[0] <= v <= _SIZE_LIMITS[1] for v in (width, height)) \
            or not 1 <= fps <= 60 or not 1 <= gop <= 600:
        raise InvalidInput(f"synthetic camera parameters out of range in {url!r}")
    return [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error",
            "-re", "-f", "lavfi", "-i", f"testsrc2=size={width}x{height}:rate={fps}",
            "-re", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
            "-g", str(gop), "-bf", "0", "-pix_fmt", "yuv420p",
            "-c:a", "aac", "-b:a", "64k", "-f", "mpegts", "pipe:1"]


def _timeout_options(url: str, timeout_s: float) -> dict[str, str]:
    """FFmpeg's own I/O timeouts, in microseconds.

    Not PyAV's ``timeout=``: that one makes FFmpeg call back into Python, taking the
    GIL, on every blocking read, which tripled the recorder's CPU per stream in
    bench/ingest.py. FFmpeg's options cost nothing while data flows.
    """
    us = str(int(timeout_s * 1_000_000))
    if url.startswith(("rtsp://", "rtsps://")):
        return {"rtsp_transport": "tcp", "timeout": us}
    if "://" in url and not url.startswith("file:"):
        return {"rw_timeout": us}
    return {}


def open_source(url: str, *, timeout_s: float = OPEN_TIMEOUT_S) -> Source:
    if url.startswith(f"{SYNTHETIC_SCHEME}:"):
        process = subprocess.Popen(synthetic_command(url), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        assert process.stdout is not None
        try:
            # FFmpeg's pipe protocol reads the encoder's output straight from its fd.
            container = av.open(f"pipe:{process.stdout.fileno()}", format="mpegts")
        except BaseException:
            process.kill()
            process.wait()
            raise
        return Source(container=container, _process=process)
    return Source(container=av.open(url, options=_timeout_options(url, timeout_s)))
