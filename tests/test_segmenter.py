"""Cutting real encoded streams into chunks by stream copy."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from recorder.segmenter import (
    ChunkWriter,
    WrittenChunk,
    complete_prefix,
    decide_cut,
    probe_media_us,
)
from tests.media import encode


def segment(source: Path, out_dir: Path, target_us: int) -> list[WrittenChunk]:
    chunks: list[WrittenChunk] = []
    with av.open(str(source)) as src:
        streams = list(src.streams)
        writer: ChunkWriter | None = None
        start_us = 0
        for packet in src.demux():
            if packet.dts is None:
                continue
            is_video = packet.stream.type == "video"
            t_us = int(packet.pts * packet.time_base * 1_000_000)
            if writer is None:
                writer, start_us = ChunkWriter(out_dir / "c0.mov", streams), t_us
            elif is_video and decide_cut(elapsed_media_us=t_us - start_us, target_us=target_us,
                                         is_video_keyframe=packet.is_keyframe,
                                         params_changed=False).cut:
                chunks.append(writer.close())
                writer = ChunkWriter(out_dir / f"c{len(chunks)}.mov", streams)
                start_us = t_us
            writer.write(packet)
        assert writer is not None
        chunks.append(writer.close())
    return chunks


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_chunks_start_on_keyframes_decode_alone_and_add_up(tmp_path: Path, codec: str) -> None:
    source = encode(tmp_path / "src.mp4", seconds=10, codec=codec, gop=25)
    chunks = segment(source, tmp_path, target_us=3_000_000)
    assert len(chunks) == 4  # cuts at the keyframes at 3 s, 6 s, 9 s (one per second)
    total_frames = 0
    for chunk in chunks:
        with av.open(str(chunk.path)) as c:
            assert {s.type for s in c.streams} == {"video", "audio"}
            first = next(c.demux(video=0))
            assert first.is_keyframe
        with av.open(str(chunk.path)) as c:
            frames = sum(1 for _ in c.decode(video=0))  # every frame decodes
        total_frames += frames
        assert chunk.media_duration_us == probe_media_us(chunk.path)
    assert total_frames == 250
    assert sum(c.media_duration_us for c in chunks) == 10_000_000


def test_decide_cut() -> None:
    assert not decide_cut(elapsed_media_us=5, target_us=10, is_video_keyframe=True,
                          params_changed=False).cut
    assert not decide_cut(elapsed_media_us=15, target_us=10, is_video_keyframe=False,
                          params_changed=False).cut
    assert decide_cut(elapsed_media_us=15, target_us=10, is_video_keyframe=True,
                      params_changed=False).cut
    assert decide_cut(elapsed_media_us=0, target_us=10, is_video_keyframe=False,
                      params_changed=True).reason == "codec parameters changed"


def test_a_chunk_cut_short_is_recovered_to_its_last_whole_fragment(tmp_path: Path) -> None:
    source = encode(tmp_path / "src.mp4", seconds=6, gop=25)
    (chunk,) = segment(source, tmp_path, target_us=60_000_000)
    data = chunk.path.read_bytes()
    recovered_frames = []
    for cut in range(200, len(data), len(data) // 13):
        prefix = complete_prefix(data[:cut])
        assert prefix <= cut
        if prefix == 0:  # not even the header was written: nothing to recover
            recovered_frames.append(0)
            continue
        part = tmp_path / "part.mov"
        part.write_bytes(data[:prefix])
        with av.open(str(part)) as c:
            frames = sum(1 for _ in c.decode(video=0))
        recovered_frames.append(frames)
    # More bytes never recover fewer frames, and the loss is at most a fragment (1 s).
    assert recovered_frames == sorted(recovered_frames)
    assert recovered_frames[-1] >= 150 - 25 - len(data) // 13 // 100
    assert complete_prefix(data) == len(data)


def test_parameter_sets_are_found_in_both_framings() -> None:
    from recorder.segmenter import parameter_sets

    sps, pps, idr = b"\x67\x42\x00\x1f\xaa", b"\x68\xce\x3c\x80", b"\x65\x88\x84\x00"
    annex_b = b"\x00\x00\x00\x01" + sps + b"\x00\x00\x00\x01" + pps + b"\x00\x00\x01" + idr
    length_prefixed = b"".join(len(u).to_bytes(4, "big") + u for u in (sps, pps, idr))
    assert parameter_sets(annex_b, "h264") == sps + pps
    assert parameter_sets(length_prefixed, "h264") == sps + pps
    assert parameter_sets(b"\x00\x00\x01" + idr, "h264") is None
    vps, hevc_sps = b"\x40\x01\x0c", b"\x42\x01\x01"  # NAL types 32 and 33
    assert parameter_sets(b"\x00\x00\x01" + vps + b"\x00\x00\x01" + hevc_sps, "hevc") \
        == vps + hevc_sps
    assert parameter_sets(annex_b, "mpeg4") is None
