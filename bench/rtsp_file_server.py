"""An RTSP server replaying one H.264 file, looped and paced in real time, to many clients.

Runs under the system interpreter (/usr/bin/python3), where GStreamer's Python
bindings import; ``bench/ingest.py`` starts it as a process of its own.

    /usr/bin/python3 bench/rtsp_file_server.py --port 8554 --file src.h264

Design: every client gets the very same RTP packets from ONE pipeline.

* The feeder pipeline reads the file, an Annex-B H.264 elementary stream (closed
  GOPs, no B-frames, SPS/PPS + IDR first), with ``multifilesrc loop=true``: at its end
  it starts again at the beginning, which is a valid endless stream. ``h264parse``
  splits it into access units timestamped from the SPS frame rate, and an
  ``appsink sync=true`` releases each one at its time on the clock: real-time pacing.
* The served media is a *shared*, *live* ``appsrc ! h264parse ! rtph264pay``: each
  access unit from the feeder is pushed into it, re-stamped with a frame counter on
  the media's running time. Live, because FFmpeg's PLAY carries "Range: npt=0-",
  which would seek a seekable (file) media back to its start under every other
  client's feet. Shared, so the server does no per-client work beyond sending.
* Any query string is ignored when media are shared (``gen_key`` is the path), so
  ``/live?cam=7`` gives each camera a URL of its own while all get the one stream.

Prints "READY <url>" once it listens; at exit, how many frames it relayed on stderr.
With --stop-on-stdin-eof it also quits when its stdin closes (the parent that started
it died without stopping it).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

FEEDER = ('multifilesrc location="{location}" loop=true '
          'caps="video/x-h264,stream-format=byte-stream,alignment=au" ! h264parse ! '
          'video/x-h264,stream-format=byte-stream,alignment=au ! '
          'appsink name=out sync=true emit-signals=true max-buffers=4 drop=false')
# config-interval=-1: SPS/PPS before every IDR, as cameras send them, so that a
# client joining mid-stream starts decoding at the next keyframe.
MEDIA = ('( appsrc name=src is-live=true format=time do-timestamp=false '
         'max-bytes=16000000 block=false '
         'caps="video/x-h264,stream-format=byte-stream,alignment=au" ! h264parse ! '
         'rtph264pay name=pay0 pt=96 config-interval=-1 )')


class SharedFactory(GstRtspServer.RTSPMediaFactory):
    """Shares one media among all URLs of its mount point, whatever their query."""

    def do_gen_key(self, url: GstRtsp.RTSPUrl) -> str:
        return url.abspath


class _Target:
    def __init__(self, src: Gst.Element) -> None:
        self.src = src
        self.first_ts: int | None = None
        self.frames = 0


class Relay:
    """Moves the feeder's access units into every prepared media's appsrc (one, when
    all clients share), re-stamped on that media's running time."""

    def __init__(self, fps: int) -> None:
        self.frame_ns = Gst.SECOND // fps
        self._lock = threading.Lock()
        self._targets: dict[int, _Target] = {}
        self.relayed = 0
        self.media_count = 0

    def on_media_configure(self, _factory: GstRtspServer.RTSPMediaFactory,
                           media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_by_name("src")
        with self._lock:
            self._targets[id(media)] = _Target(src)
            self.media_count += 1
        media.connect("unprepared", self._on_unprepared)

    def _on_unprepared(self, media: GstRtspServer.RTSPMedia) -> None:
        with self._lock:
            self._targets.pop(id(media), None)

    def on_sample(self, sink: Gst.Element) -> Gst.FlowReturn:
        sample = sink.emit("pull-sample")
        if sample is None:
            return Gst.FlowReturn.OK
        with self._lock:
            targets = list(self._targets.values())
        for target in targets:
            clock = target.src.get_clock()
            if clock is None:  # that media is not playing yet
                continue
            if target.first_ts is None:
                target.first_ts = max(0, clock.get_time() - target.src.get_base_time())
            buf = sample.get_buffer().copy()  # shares the memory: no byte copy
            buf.pts = buf.dts = target.first_ts + target.frames * self.frame_ns
            buf.duration = self.frame_ns
            target.frames += 1
            target.src.emit("push-buffer", buf)
            self.relayed += 1
        return Gst.FlowReturn.OK


def _on_stdin(_channel: GLib.IOChannel, _condition: GLib.IOCondition,
              loop: GLib.MainLoop) -> bool:
    if os.read(sys.stdin.fileno(), 4096):
        return True
    loop.quit()
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--file", required=True, help="an Annex-B H.264 elementary stream")
    parser.add_argument("--fps", type=int, default=25, help="the file's frame rate")
    parser.add_argument("--path", default="/live")
    parser.add_argument("--stop-on-stdin-eof", action="store_true",
                        help="quit when stdin closes (the parent that started it died)")
    args = parser.parse_args()

    Gst.init(None)
    relay = Relay(args.fps)
    location = os.path.abspath(args.file).replace("\\", "\\\\").replace('"', '\\"')
    feeder = Gst.parse_launch(FEEDER.format(location=location))
    feeder.get_by_name("out").connect("new-sample", relay.on_sample)

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.set_backlog(256)  # dozens of recorders connect at once
    factory = SharedFactory()
    factory.set_launch(MEDIA)
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)  # what recorders use
    factory.connect("media-configure", relay.on_media_configure)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    if args.stop_on_stdin_eof:
        GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.PRIORITY_DEFAULT,
                          GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
                          _on_stdin, loop)
    feeder.set_state(Gst.State.PLAYING)
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    try:
        loop.run()
    finally:
        feeder.set_state(Gst.State.NULL)
        print(f"relayed {relay.relayed} frames into {relay.media_count} media",
              file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
