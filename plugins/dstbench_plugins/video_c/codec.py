"""The whole-video corruptions of video-c: a clip is encoded with PyAV, its bitstream damaged or re-encoded, and
decoded again with FFmpeg's error concealment, one clip at a time on the CPU.

Clips are numpy uint8 (T, H, W, 3). Frames are padded (edge pixels repeated) to the sides the codecs need
(`_ALIGN`), and cropped back after decoding. Bit errors and packet loss hit the clean stream a video dataset would
ship: H.264 at the embedded dataset's quality (`X264_OPTIONS`), SPS/PPS in the container's
extradata as in an mp4 file, so errors hit the slices and not the stream headers, as FFmpeg's `noise` bitstream
filter in Yi et al.'s `-c copy` pipeline does. Whatever no longer decodes is scored as the decoder leaves it: a
frame that is missing repeats the last one decoded before it, or is mid-grey if there is none.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from dstbench.data.video import X264_OPTIONS

__all__ = [
    "SOURCE_FPS",
    "Stream",
    "Uniform",
    "bit_error",
    "decode",
    "encode",
    "frame_rate",
    "h264_crf",
    "h265_crf",
    "packet_loss",
]

SOURCE_FPS = 30  # the frame rate of clips whose video's is not known (Kinetics' and UCF101's are 25-30 fps)
MIN_SIDE = 16  # libx265 refuses smaller frames
# yuv420p needs even sides; libx265 (PyAV 18's build) corrupts the heap on some frame sides that are not multiples
# of 32, 40 and 48 px among them.
_ALIGN = {"libx264": 2, "libx265": 32}
GREY = 128
# One thread each: the bytes, hence the damage a seeded error does, are the same on every machine.
X265_PARAMS = "log-level=error:pools=none:frame-threads=1"
DATAGRAM_BYTES = 7 * 188  # one UDP datagram of MPEG-TS packets
_DECODERS = {"libx264": "h264", "libx265": "hevc"}
# `uniform(count, stream)`: `count` of the clip's seeded uniforms in (0, 1), float64, from one of its streams
Uniform = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class Stream:
    """An encoded clip: the decoder's name, its extradata (SPS/PPS), and each packet's (bytes, pts, dts)."""

    decoder: str
    extradata: bytes | None
    packets: list[tuple[bytes, int | None, int | None]]
    height: int  # the coded (padded) frame size
    width: int


def _pad(clip: np.ndarray, align: int) -> np.ndarray:
    _, h, w, _ = clip.shape
    height, width = (max(MIN_SIDE, -(-side // align) * align) for side in (h, w))
    if (height, width) == (h, w):
        return np.ascontiguousarray(clip)
    return np.pad(clip, ((0, 0), (0, height - h), (0, width - w), (0, 0)), mode="edge")


def _reproducible(codec: str, height: int, width: int) -> dict[str, str]:
    """Encoder options that make the bytes the same on every run: one thread each; for x264 no mb-tree, and for
    x265 a coding tree unit smaller than the frame (measured: x264's mb-tree, and x265 on a frame of one CTU, give
    other bytes on repeated encodes of the same clip). At the usual 112-224 px x265 keeps its default 64 px CTU."""
    if codec == "libx264":
        return {"threads": "1", "x264-params": "mbtree=0"}
    ctu = next(side for side in (64, 32, 16) if side < min(height, width))  # frames are padded to >= 32 px
    return {"x265-params": f"{X265_PARAMS}:ctu={ctu}"}


def encode(clip: np.ndarray, codec: str, options: dict[str, str], fps: int = SOURCE_FPS) -> Stream:
    """Encode a uint8 (T, H, W, 3) clip as yuv420p with `codec` (libx264 or libx265), its options and the options
    that make its bytes reproducible."""
    import av
    from av.codec.context import Flags

    frames = _pad(clip, _ALIGN[codec])
    context: Any = av.CodecContext.create(codec, "w")
    context.height, context.width = frames.shape[1:3]
    context.pix_fmt, context.time_base, context.framerate = "yuv420p", Fraction(1, fps), fps
    context.options = {**options, **_reproducible(codec, *frames.shape[1:3])}
    context.flags |= Flags.global_header
    packets = []
    for index, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts = index
        packets += context.encode(picture)
    packets += context.encode(None)
    stream = [(bytes(packet), packet.pts, packet.dts) for packet in packets]
    return Stream(_DECODERS[codec], context.extradata, stream, *frames.shape[1:3])


def decode(stream: Stream, frames: int, height: int, width: int) -> np.ndarray:
    """The first `frames` frames of a (possibly damaged) stream, uint8 (frames, height, width, 3). Packets the
    decoder rejects are skipped; frames are placed by their pts, and a frame that did not decode repeats the one
    before it (grey at the start)."""
    import av

    context: Any = av.CodecContext.create(stream.decoder, "r")
    context.extradata = stream.extradata
    context.thread_count = 1
    decoded: list[Any] = []

    def drain(packet: Any) -> None:
        try:
            decoded.extend(context.decode(packet))
        except av.error.FFmpegError:
            pass  # damaged beyond concealment: the frame stays missing

    for data, pts, dts in stream.packets:
        # A copy: FFmpeg's decoders read past a packet's end, into the zeroed padding that av_new_packet adds and
        # that a packet made from Python bytes lacks (a damaged stream then corrupts the heap).
        packet = av.Packet(len(data))
        memoryview(packet)[:] = data
        packet.pts, packet.dts = pts, dts
        drain(packet)
    drain(None)
    out = np.full((frames, stream.height, stream.width, 3), GREY, dtype=np.uint8)
    filled = np.zeros(frames, dtype=bool)
    for order, frame in enumerate(decoded):
        index = frame.pts if frame.pts is not None else order
        if 0 <= index < frames and not filled[index] and (frame.height, frame.width) == out.shape[1:3]:
            out[index], filled[index] = frame.to_ndarray(format="rgb24"), True
    for index in range(1, frames):
        if not filled[index] and filled[index - 1]:
            out[index], filled[index] = out[index - 1], True
    return out[:, :height, :width]


def _round_trip(clip: np.ndarray, codec: str, options: dict[str, str]) -> np.ndarray:
    return decode(encode(clip, codec, options), *clip.shape[:3])


def h264_crf(clip: np.ndarray, crf: int, uniform: Uniform) -> np.ndarray:
    """`ffmpeg -vcodec libx264 -crf c`: x264's default preset, constant rate factor c (mb-tree off, see
    `_reproducible`)."""
    return _round_trip(clip, "libx264", {"crf": str(crf)})


def h265_crf(clip: np.ndarray, crf: int, uniform: Uniform) -> np.ndarray:
    """`ffmpeg -vcodec libx265 -crf c`."""
    return _round_trip(clip, "libx265", {"crf": str(crf)})


def frame_rate(clip: np.ndarray, fps: int, uniform: Uniform, clip_fps: Fraction = Fraction(SOURCE_FPS)) -> np.ndarray:
    """The clip, shown at `clip_fps`, resampled to `fps` (each output frame the source frame nearest its time, as
    FFmpeg's fps filter), encoded with libx265 at its default quality, decoded, and shown again at the clip's rate:
    each of the T frames is the low-rate frame on screen at its time."""
    frames = len(clip)
    ratio = Fraction(fps) / clip_fps  # low-rate frames per clip frame
    low_rate = math.ceil(frames * ratio)
    picks = [min(math.floor(j / ratio + Fraction(1, 2)), frames - 1) for j in range(low_rate)]
    shown = [math.floor(t * ratio) for t in range(frames)]
    coded = decode(encode(clip[picks], "libx265", {}, fps), low_rate, *clip.shape[1:3])
    return coded[shown]


def _clean_stream(clip: np.ndarray) -> tuple[Stream, np.ndarray]:
    """The clip's clean stream, and all its packets' payload bytes in one array."""
    stream = encode(clip, "libx264", dict(X264_OPTIONS))
    return stream, np.frombuffer(b"".join(packet[0] for packet in stream.packets), dtype=np.uint8).copy()


def _decode_damaged(clip: np.ndarray, stream: Stream, data: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Decode `stream` with its payload bytes replaced by `data`, of which only the `kept` ones arrive; a packet
    none of whose bytes arrive is lost."""
    packets, start = [], 0
    for payload, pts, dts in stream.packets:
        arrived = data[start : start + len(payload)][kept[start : start + len(payload)]]
        start += len(payload)
        if len(arrived):
            packets.append((arrived.tobytes(), pts, dts))
    return decode(Stream(stream.decoder, stream.extradata, packets, stream.height, stream.width), *clip.shape[:3])


def bit_error(clip: np.ndarray, bytes_per_error: int, uniform: Uniform) -> np.ndarray:
    """FFmpeg's `noise=c` bitstream filter on the clean stream: each payload byte is replaced, with probability
    1/c, by a different random byte."""
    stream, data = _clean_stream(clip)
    hit = uniform(len(data), 0) < 1 / bytes_per_error
    offsets = 1 + np.floor(uniform(len(data), 1) * 255).astype(np.int64)  # 1..255: the byte always changes
    data[hit] = (data[hit].astype(np.int64) + offsets[hit]) % 256
    return _decode_damaged(clip, stream, data, np.ones(len(data), dtype=bool))


def packet_loss(clip: np.ndarray, percent: float, uniform: Uniform) -> np.ndarray:
    """The clean stream sent as datagrams of `DATAGRAM_BYTES` payload bytes (7 MPEG-TS packets, as UDP streaming
    sends them), each lost with probability `percent` / 100; frames keep whatever bytes of theirs arrive."""
    stream, data = _clean_stream(clip)
    datagram = np.arange(len(data)) // DATAGRAM_BYTES
    lost = uniform(int(datagram[-1]) + 1 if len(data) else 0, 0) < percent / 100
    return _decode_damaged(clip, stream, data, ~lost[datagram])
