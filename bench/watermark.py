"""Benchmark of the watermarked copy: ``retrieval.watermark.watermark`` against the
FFmpeg CLI running the same command.

What is measured
    Frames per second of making the watermarked copy of a stitched 1080p clip, by

    * Vigil: ``retrieval.watermark.watermark(clip, out, overlay)`` in this process,
      the whole call: the clip's probe (PyAV), the font's hash, the text files, the
      FFmpeg child with its progress read from a pipe, the fsync and the rename;
    * the baseline: the exact command ``retrieval.watermark.ffmpeg_command`` returns
      for the same clip and overlay (same filter graph, same encoder settings:
      libx264 veryfast CRF 20, sliced threads, ``threads=0``), run directly with
      ``subprocess.run`` (stdout to /dev/null), the same imageio-ffmpeg binary;

    alternately, ``--rounds`` times each (odd rounds Vigil first). Frames are the
    clip's displayed frames (``ClipResult.frames``; the frames each output holds
    are counted and printed beside it). Reported per round and as the median;
    target: Vigil at least 0.95 of the baseline's frames per second.

How
    1. The clip: the source of ``bench/ingest.py`` (1080p25 H.264, 4 Mbit/s, closed
       2 s GOPs), looped by stream copy into an MP4 of whole minutes (cached under
       ``bench/out/``), cut into 60 s chunks by the recorder's own cutter
       (``recorder.importer.cut_file``), placed in wall time from a fixed instant, and
       stitched by ``retrieval.clip.stitch`` over ``[start + 1.3 s, start + 1.3 s +
       --seconds)``: a real export's clip, crossing a chunk boundary, starting
       mid-GOP (its edit list hides the leading packets), with the timed-text track.
    2. Each round times both contenders writing their own output in a temporary
       directory; both outputs are hashed (the module doc says the same command on
       the same machine gives the same bytes) and removed.
    3. CPU: user + system of the FFmpeg child (``os.times`` children), and of this
       process for Vigil's own share. Where Vigil's extra time goes: the module's
       ``_run`` (the FFmpeg child, its progress read) and ``_clip_end_us`` (the
       probe) are wrapped in this process to time them; the rest of the call is the
       font's hash, the text files, the fsync and the rename (nothing under
       ``retrieval/`` is changed).

Run from the repository root (~4 minutes; at ~55 frames/s on 2 cores the
machine's noise is +-10 % per run, hence the rounds):

    .venv/bin/python bench/watermark.py                    # 60 s clip, 3 rounds
    .venv/bin/python bench/watermark.py --seconds 10 --rounds 1
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/watermark.py` puts bench/ first, not the root
    sys.path.insert(0, str(REPO))

import av  # noqa: E402
import psutil  # noqa: E402

from bench.export import MB, header, looped_footage  # noqa: E402
from bench.ingest import Source, log, table, workspace  # noqa: E402

TARGET_RATIO: Final = 0.95
# The clip's wall-clock start: a fixed instant, so that runs draw the same text.
T0_US: Final = 1_764_000_000_000_000  # 2025-11-24T16:00:00Z
# The range starts this far into the footage: mid-GOP, as an export's range does.
OFFSET_US: Final = 1_300_000
CHUNK_US: Final = 60_000_000
PAUSE_S: Final = 2.0


@dataclass(frozen=True)
class Clip:
    path: Path
    frames: int
    seconds: float
    bytes: int
    chunks: int
    start_us: int


def make_clip(src: Source, seconds: float, workdir: Path) -> Clip:
    """A stitched clip of ``seconds`` from chunks cut by the recorder's cutter."""
    from recorder import importer
    from retrieval import clip as clips

    minutes = math.ceil((seconds + OFFSET_US / 1e6 + 1) / 60)
    footage = looped_footage(src, minutes)
    folder = workdir / "chunks"
    folder.mkdir()
    with importer.open_video(footage) as container:
        cuts = importer.cut_file(container, workdir=folder, target_us=CHUNK_US,
                                 name=footage.name, progress=importer._Progress(None))
    placed = importer.place(cuts, start_us=T0_US)
    from_us = T0_US + OFFSET_US
    to_us = from_us + int(seconds * 1e6)
    sources = [clips.ClipSource(path=c.path, seq=n, start_us=a, end_us=b)
               for n, (c, (a, b)) in enumerate(zip(cuts, placed, strict=True))
               if a < to_us and b > from_us]
    out = workdir / "clip.mp4"
    result = clips.stitch(sources, from_us=from_us, to_us=to_us, out=out, title="gate-north")
    return Clip(path=out, frames=result.frames, seconds=seconds, bytes=out.stat().st_size,
                chunks=len(sources), start_us=from_us)


def overlay_for(clip: Clip):  # noqa: ANN201 - retrieval.watermark.Overlay, imported lazily
    from retrieval.watermark import Overlay

    return Overlay(case="K7Q2-MX4P", export_id="5f0c1e2a-7d4b-4c1e-9a3f-2b6d8e0f1a7c",
                   recipient="Crown Court 4, clerk's office",
                   exported_at=datetime(2025, 11, 25, 9, 30, tzinfo=UTC), camera="gate-north",
                   clip_start_us=clip.start_us)


@dataclass
class Run:
    seconds: float
    child_s: float  # Vigil: inside ``_run`` (the FFmpeg child); FFmpeg: all of it
    probe_s: float  # Vigil: ``_clip_end_us``
    cpu_s: float  # FFmpeg's (children)
    self_cpu_s: float  # this process's (Vigil's own work around FFmpeg)
    sha256: str
    frames: int


def _children_cpu() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _self_cpu() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


class _Timed:
    """Wraps a function of ``retrieval.watermark`` and adds up its wall time."""

    def __init__(self, name: str) -> None:
        from retrieval import watermark

        self.module, self.name = watermark, name
        self.original = getattr(watermark, name)
        self.seconds = 0.0

    def __enter__(self) -> _Timed:
        def wrapper(*args: object, **kwargs: object) -> object:
            t0 = time.perf_counter()
            try:
                return self.original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0

        setattr(self.module, self.name, wrapper)
        return self

    def __exit__(self, *_exc: object) -> None:
        setattr(self.module, self.name, self.original)


def _finish(out: Path, seconds: float, cpu: float, self_cpu: float, *, child_s: float,
            probe_s: float) -> Run:
    digest = hashlib.sha256()
    with out.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    with av.open(str(out)) as c:
        frames = sum(1 for p in c.demux(c.streams.video[0]) if p.size)
    out.unlink()
    return Run(seconds=seconds, child_s=child_s, probe_s=probe_s, cpu_s=cpu,
               self_cpu_s=self_cpu, sha256=digest.hexdigest(), frames=frames)


def run_vigil(clip: Clip, workdir: Path) -> Run:
    from retrieval.watermark import watermark

    out = workdir / "vigil.mp4"
    overlay = overlay_for(clip)
    with _Timed("_run") as child, _Timed("_clip_end_us") as probe:
        c0, s0 = _children_cpu(), _self_cpu()
        t0 = time.perf_counter()
        watermark(clip.path, out, overlay)
        seconds = time.perf_counter() - t0
        cpu, self_cpu = _children_cpu() - c0, _self_cpu() - s0
    return _finish(out, seconds, cpu, self_cpu, child_s=child.seconds, probe_s=probe.seconds)


def run_ffmpeg(clip: Clip, workdir: Path) -> Run:
    from retrieval.watermark import ffmpeg_command

    out = workdir / "ffmpeg.mp4"
    with tempfile.TemporaryDirectory(prefix="text-", dir=workdir) as tmp:
        cmd = ffmpeg_command(clip.path, out, overlay_for(clip), workdir=Path(tmp))
        c0 = _children_cpu()
        t0 = time.perf_counter()
        subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
        seconds = time.perf_counter() - t0
        cpu = _children_cpu() - c0
    return _finish(out, seconds, cpu, 0.0, child_s=seconds, probe_s=0.0)


def report(clip: Clip, vigil: list[Run], ffmpeg: list[Run]) -> bool:
    f = clip.frames
    rows = [("", "vigil watermark()", "ffmpeg CLI", "vigil/ffmpeg")]
    for n, (rv, rf) in enumerate(zip(vigil, ffmpeg, strict=True), start=1):
        rows.append((f"round {n} ({'vigil' if n % 2 else 'ffmpeg'} first), frames/s",
                     f"{f / rv.seconds:.1f}", f"{f / rf.seconds:.1f}",
                     f"{rf.seconds / rv.seconds:.3f}"))
    v = statistics.median(f / r.seconds for r in vigil)
    b = statistics.median(f / r.seconds for r in ffmpeg)
    vc = statistics.median(r.child_s for r in vigil)
    fc = statistics.median(r.child_s for r in ffmpeg)
    rows += [
        ("median, frames/s", f"{v:.1f}", f"{b:.1f}", f"{v / b:.3f}"),
        ("median, s", f"{statistics.median(r.seconds for r in vigil):.2f}",
         f"{statistics.median(r.seconds for r in ffmpeg):.2f}", ""),
        ("FFmpeg CPU-s per 100 frames, median",
         f"{statistics.median(r.cpu_s for r in vigil) / f * 100:.2f}",
         f"{statistics.median(r.cpu_s for r in ffmpeg) / f * 100:.2f}", ""),
        ("Python CPU-s around FFmpeg, median",
         f"{statistics.median(r.self_cpu_s for r in vigil):.2f}", "-", ""),
        ("-- Vigil's call, median s --", "", "", ""),
        ("  FFmpeg child (_run)", f"{vc:.2f}", f"{fc:.2f}", f"{vc / fc:.3f}"),
        ("  probe of the clip (_clip_end_us)",
         f"{statistics.median(r.probe_s for r in vigil):.2f}", "", ""),
        ("  rest (font hash, text files, fsync, rename)",
         f"{statistics.median(r.seconds - r.child_s - r.probe_s for r in vigil):.2f}", "", ""),
    ]
    print(table(rows))
    same = {r.sha256 for r in vigil + ffmpeg}
    counts = {r.frames for r in vigil + ffmpeg}
    print()
    print(f"  outputs: {'byte-identical' if len(same) == 1 else f'{len(same)} different'} "
          f"across all runs; frames in the outputs: {sorted(counts)} (clip: {f})")
    ok = v / b >= TARGET_RATIO
    print(f"  target: Vigil at least {TARGET_RATIO:g} of FFmpeg's frames/s: {v / b:.3f}  "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the clip")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Vigil and FFmpeg this many times each, alternating")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    src = Source()
    with workspace(args.keep) as workdir:
        log("cutting and stitching the clip ...")
        clip = make_clip(src, args.seconds, workdir)
        header(f"Watermark benchmark: {args.seconds:g} s clip, {args.rounds} round(s)")
        print(f"clip: stitched by retrieval.clip.stitch from {clip.chunks} chunk(s) cut by "
              f"recorder.importer.cut_file from {src.describe()}; {clip.frames} frames "
              f"displayed, {clip.bytes / MB:.1f} MB, starts mid-GOP")
        vigil: list[Run] = []
        ffmpeg: list[Run] = []
        for r in range(1, args.rounds + 1):
            order = ["vigil", "ffmpeg"] if r % 2 == 1 else ["ffmpeg", "vigil"]
            for name in order:
                time.sleep(PAUSE_S)
                if name == "vigil":
                    vigil.append(run_vigil(clip, workdir))
                    log(f"round {r}: vigil {vigil[-1].seconds:.2f} s")
                else:
                    ffmpeg.append(run_ffmpeg(clip, workdir))
                    log(f"round {r}: ffmpeg {ffmpeg[-1].seconds:.2f} s")
    print()
    ok = report(clip, vigil, ffmpeg)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
