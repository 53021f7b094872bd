"""Real media for tests, encoded by the FFmpeg binary of the imageio-ffmpeg wheel."""

from __future__ import annotations

import subprocess
from pathlib import Path

import imageio_ffmpeg


def encode(path: Path, *, seconds: float, codec: str = "libx264", gop: int = 25,
           fps: int = 25, size: str = "320x240", audio: bool = True) -> Path:
    """A test-pattern clip with a keyframe every ``gop`` frames (and a 440 Hz tone)."""
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y",
           "-f", "lavfi", "-i", f"testsrc=size={size}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    cmd += ["-t", str(seconds), "-c:v", codec, "-g", str(gop), "-keyint_min", str(gop),
            "-pix_fmt", "yuv420p"]
    if codec == "libx265":
        # Closed GOPs, as cameras send: an open GOP's leading pictures cannot be
        # decoded from a chunk that starts at their CRA keyframe.
        cmd += ["-tag:v", "hvc1", "-x265-params", "log-level=error:open-gop=0"]
    if audio:
        cmd += ["-c:a", "aac", "-shortest"]
    subprocess.run([*cmd, str(path)], check=True, capture_output=True, timeout=120)
    return path
