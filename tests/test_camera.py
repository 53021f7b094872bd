"""The RTSP test camera is real: PyAV reads it as it would read a camera on the network.

These pin down what the recorder's tests rely on: the codecs announced, keyframes
every ``gop`` frames, increasing timestamps, RTCP sender reports (wall-clock time),
and a camera that goes away and comes back on the same URL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from itertools import islice, pairwise

import av
import pytest
from av.container import InputContainer

from tests.cameras import Audio, Codec, RtspCamera

pytestmark = pytest.mark.slow

# Whatever a test does not look at is kept small, so that encoding stays cheap.
SMALL = {"width": 320, "height": 240, "kbps": 300}
OPEN_TIMEOUT_S = 10
# FFmpeg sets start_time_realtime from the first RTCP sender report. GStreamer sends
# the first one within about 2.5 s of the stream starting (then every ~5 s); measured
# here: 0 to 2.1 s after av.open returned. 8 s leaves room on a loaded CI machine.
FIRST_SENDER_REPORT_S = 8.0
# Slack between the camera's clock and ours (same machine, same realtime clock).
CLOCK_SLACK_US = 500_000


@contextmanager
def opened(url: str) -> Iterator[InputContainer]:
    container = av.open(url, options={"rtsp_transport": "tcp"}, timeout=OPEN_TIMEOUT_S)
    try:
        yield container
    finally:
        container.close()


def test_h264_keyframes_every_gop_and_increasing_dts() -> None:
    fps, gop = 25, 25
    with RtspCamera(codec="h264", audio="none", fps=fps, gop=gop, **SMALL) as cam, \
            opened(cam.url) as container:
        assert [s.type for s in container.streams] == ["video"]
        video = container.streams.video[0]
        assert video.codec_context.name == "h264"
        # Three seconds of video; the demuxer ends each stream with an empty packet.
        packets = [p for p in islice(container.demux(video), 3 * fps) if p.size]
        assert len(packets) == 3 * fps

        keyframes = [p for p in packets if p.is_keyframe]
        assert len(keyframes) >= 2
        # One keyframe every gop frames: as far apart as gop frames last.
        intervals = [(b.pts - a.pts) * video.time_base
                     for a, b in pairwise(keyframes) if None not in (a.pts, b.pts)]
        assert intervals and all(i == Fraction(gop, fps) for i in intervals), intervals

        # FFmpeg may give the very first packet of an RTSP stream no timestamps;
        # every later one has them, strictly increasing (no B-frames).
        dts = [p.dts for p in packets[1:]]
        assert None not in dts
        assert all(a < b for a, b in pairwise(dts)), dts

        frames = [f for p in packets for f in p.decode()]
        assert frames and (frames[0].width, frames[0].height) == (320, 240)


@pytest.mark.parametrize(("codec", "audio", "expected"), [
    ("h265", "aac", {"hevc", "aac"}),
    ("h264", "pcma", {"h264", "pcm_alaw"}),
    ("h264", "opus", {"h264", "opus"}),
])
def test_codecs_announced_and_flowing(codec: Codec, audio: Audio, expected: set[str]) -> None:
    with RtspCamera(codec=codec, audio=audio, **SMALL) as cam, opened(cam.url) as container:
        assert {s.codec_context.name for s in container.streams} == expected
        # Both streams deliver packets, not only the SDP announcing them.
        seen: set[str] = set()
        deadline = time.monotonic() + 5
        for packet in container.demux():
            if packet.size:
                seen.add(packet.stream.codec_context.name)
            if seen == expected or time.monotonic() > deadline:
                break
        assert seen == expected


def test_rtcp_sender_reports_give_wall_clock_time() -> None:
    with RtspCamera(codec="h264", audio="aac", **SMALL) as cam:
        before_open_us = time.time() * 1e6
        with opened(cam.url) as container:
            deadline = time.monotonic() + FIRST_SENDER_REPORT_S
            for _ in container.demux():
                if container.start_time_realtime is not None or time.monotonic() > deadline:
                    break
            start_us = container.start_time_realtime
            now_us = time.time() * 1e6
    assert start_us is not None, f"no RTCP sender report within {FIRST_SENDER_REPORT_S} s"
    # The wall-clock time of the stream's start: the camera starts its pipeline for
    # our first client, so after we asked and before now.
    assert abs(now_us - start_us) < 5_000_000
    assert before_open_us - CLOCK_SLACK_US <= start_us <= now_us + CLOCK_SLACK_US


def test_camera_goes_away_and_comes_back_on_the_same_url() -> None:
    with RtspCamera(**SMALL) as cam:
        url = cam.url
        with opened(url) as container:
            packets = container.demux()
            next(packets)
            cam.stop()
            # A reader sees the stream end when the camera dies: demuxing stops (the
            # camera closed the connection) or raises (it was reset).
            try:
                drained = sum(1 for _ in islice(packets, 1000))
            except av.error.FFmpegError:
                drained = 0
            assert drained < 1000
        with pytest.raises(ConnectionRefusedError):
            av.open(url, options={"rtsp_transport": "tcp"}, timeout=OPEN_TIMEOUT_S)

        cam.start()
        with opened(url) as container:
            assert next(container.demux()).size
        cam.restart()
        assert cam.url == url
        with opened(url) as container:
            assert next(container.demux()).size
