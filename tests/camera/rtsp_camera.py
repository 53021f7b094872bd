"""A real RTSP camera for tests: GStreamer's RTSP server on 127.0.0.1.

Runs under the system interpreter (/usr/bin/python3), where GStreamer's Python
bindings import; the tests start it as a process of its own and stop it.

    /usr/bin/python3 tests/camera/rtsp_camera.py --port 8554 --codec h264 --audio aac

Serves a live test pattern (videotestsrc with a running clock overlay), encoded in
real time, with RTCP sender reports (GStreamer sends them by default), on
rtsp://127.0.0.1:PORT/cam. Prints "READY <url>" once it listens. With
--stop-on-stdin-eof it also quits when its stdin closes, i.e. when the test process
that started it with a pipe on stdin dies without stopping it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

# x264enc threads=1: zerolatency's sliced threads cut each frame into several slices,
# and rtph264pay (config-interval=-1) puts SPS/PPS before each IDR slice, so FFmpeg's
# parser split every keyframe into two packets with the same timestamp. One slice per
# frame is what cameras send.
VIDEO = {
    "h264": ("x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} "
             "key-int-max={gop} threads=1 ! video/x-h264,profile=baseline ! "
             "rtph264pay name=pay0 pt=96 config-interval=-1"),
    "h265": ("x265enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} "
             "key-int-max={gop} ! rtph265pay name=pay0 pt=96 config-interval=-1"),
}
AUDIO = {
    "none": "",
    "aac": ("audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
            "voaacenc ! rtpmp4gpay name=pay1 pt=97"),
    "pcma": ("audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
             "audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1 pt=8"),
    "opus": ("audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
             "opusenc ! rtpopuspay name=pay1 pt=98"),
}


def launch_line(args: argparse.Namespace) -> str:
    video = (f"videotestsrc is-live=true pattern={args.pattern} ! "
             f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
             "timeoverlay ! videoconvert ! "
             + VIDEO[args.codec].format(kbps=args.kbps, gop=args.gop))
    audio = AUDIO[args.audio]
    return f"( {video} {audio} )"


def _on_stdin(_channel: GLib.IOChannel, _condition: GLib.IOCondition,
              loop: GLib.MainLoop) -> bool:
    if os.read(sys.stdin.fileno(), 4096):
        return True
    loop.quit()
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--codec", choices=sorted(VIDEO), default="h264")
    parser.add_argument("--audio", choices=sorted(AUDIO), default="none")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=25, help="frames between keyframes")
    parser.add_argument("--kbps", type=int, default=800)
    parser.add_argument("--pattern", default="smpte")
    parser.add_argument("--stop-on-stdin-eof", action="store_true",
                        help="quit when stdin closes (the parent that started it died)")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    # One encoder shared by every client, as a real camera has.
    factory.set_shared(True)
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
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
