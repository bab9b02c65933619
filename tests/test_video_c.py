"""The video-c suite on tiny clips of a real photo moving across the frame: every corruption and severity, the
direction each one moves a clip in, seeding, the codec cache, and clips that no longer decode."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from skimage import data

from dstbench.corruption import SampleRNG, SuiteRequest
from dstbench.errors import UserError
from dstbench.imageops import rgb_to_hsv
from dstbench_plugins.video_c import VideoSuite, codec
from dstbench_plugins.video_c.suite import CODEC_CORRUPTIONS

FRAMES, SIZE = 8, 48
SEVERITIES = (1, 2, 3, 4, 5)
RANDOM = ("shot_noise", "rain", "fog", "bit_error", "packet_loss")


def moving_clips(count: int, size: int = SIZE, frames: int = FRAMES, grain: float = 0.0) -> torch.Tensor:
    """uint8 (count, 3, frames, size, size): windows of the astronaut photo panning 3 px a frame, each clip
    starting elsewhere; `grain` adds fresh noise of that standard deviation to every frame, which costs the codec
    many more bytes."""
    photo = torch.from_numpy(data.astronaut()[::4, ::4].copy()).permute(2, 0, 1)  # 128 px
    clips = torch.stack(
        [
            torch.stack([photo[:, 5 * n : 5 * n + size, 3 * t : 3 * t + size] for t in range(frames)], dim=1)
            for n in range(count)
        ]
    ).float()
    clips += grain * torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    return clips.round().clamp(0, 255).to(torch.uint8)


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    return VideoSuite(tmp_path_factory.mktemp("video-c-cache"))


@pytest.fixture(scope="module")
def clips():
    return moving_clips(3)


def corrupt(suite, clips, corruption, severity, seed=0, ids=None):
    ids = torch.arange(len(clips)) if ids is None else ids
    rng = SampleRNG.for_samples(seed, suite.name, corruption, severity, ids=ids.to(clips.device))
    return suite.corrupt(clips, corruption, severity, rng)


def error(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().mean().item()


def test_registered(plugins):
    suite = plugins.registry.suite("video-c")
    assert isinstance(suite, VideoSuite) and suite.modality == "video"
    assert len(suite.corruptions) == 12 and suite.severities == SEVERITIES


@pytest.mark.parametrize("corruption", VideoSuite.corruptions)
def test_every_severity_keeps_shape_and_changes_the_clip(suite, clips, corruption):
    for severity in SEVERITIES:
        out = corrupt(suite, clips, corruption, severity)
        assert out.shape == clips.shape and out.dtype == torch.uint8 and out.is_contiguous()
        if corruption not in ("bit_error", "packet_loss"):  # at these rates most tiny clips lose nothing
            assert error(out, clips) > 1, (corruption, severity)


def test_odd_and_tiny_frames_go_through_the_codecs(suite):
    clips = moving_clips(1, size=9, frames=5)
    for corruption in CODEC_CORRUPTIONS:
        assert corrupt(suite, clips, corruption, 5).shape == clips.shape


def test_compression_error_grows_as_quality_drops(suite, clips):
    for corruption in ("h264_crf", "h265_crf", "frame_rate"):
        errors = [error(corrupt(suite, clips, corruption, s), clips) for s in SEVERITIES]
        assert errors == sorted(errors) and errors[-1] > 2 * errors[0], (corruption, errors)


def test_stream_damage_grows_with_severity():
    clips = moving_clips(16, grain=20.0)  # about 16 kB of stream per clip
    suite = VideoSuite(cache_dir=None)
    suite.cache.get = lambda clip, corruption, severity, key, compute, variant: compute()  # no disk for this one
    clean = torch.from_numpy(
        np.stack(
            [
                codec.decode(codec.encode(c, "libx264", dict(codec.X264_OPTIONS)), *c.shape[:3])
                for c in clips.permute(0, 2, 3, 4, 1).numpy()
            ]
        )
    ).permute(0, 4, 1, 2, 3)
    for corruption in ("bit_error", "packet_loss"):
        errors = [
            np.mean([error(corrupt(suite, clips, corruption, s, seed), clean) for seed in (0, 1)]) for s in (1, 5)
        ]
        assert errors[1] > 2 * errors[0] + 1, (corruption, errors)


def test_contrast_brightness_saturation_move_the_right_way(suite, clips):
    def saturation(x):
        frames = x.transpose(1, 2).flatten(0, 1).double() / 255
        return rgb_to_hsv(frames)[:, 1].mean().item()

    stds = [corrupt(suite, clips, "contrast", s).float().std(dim=(1, 3, 4)).mean().item() for s in SEVERITIES]
    assert stds == sorted(stds, reverse=True) and stds[0] < clips.float().std(dim=(1, 3, 4)).mean().item()
    means = [corrupt(suite, clips, "brightness", s).float().mean().item() for s in SEVERITIES]
    assert means == sorted(means) and means[0] > clips.float().mean().item()
    levels = [saturation(corrupt(suite, clips, "saturate", s)) for s in SEVERITIES]
    assert levels[1] < levels[0] < saturation(clips) < levels[2] < levels[3] < levels[4]


def test_noise_and_rain_grow_with_severity(suite, clips):
    noise = [error(corrupt(suite, clips, "shot_noise", s), clips) for s in SEVERITIES]
    assert noise == sorted(noise)
    rain = [error(corrupt(suite, clips, "rain", s), clips) for s in SEVERITIES]
    assert rain[0] < rain[2] < rain[4]


def test_motion_blur_smooths_time(suite, clips):
    def change(x):
        return x.double().diff(dim=2).abs().mean().item()

    changes = [change(corrupt(suite, clips, "motion_blur", s)) for s in SEVERITIES]
    assert changes == sorted(changes, reverse=True) and changes[0] < change(clips) / 2


def _blur_by_hand(clip: np.ndarray, c: int, stride: int) -> np.ndarray:
    """Yi et al.'s mean of the 2c video frames u - c ... u + c - 1 around each clip frame's (u = t · stride), each
    video frame interpolated linearly between the clip's frames around it, indices clamped to the clip."""
    frames = clip.shape[1]
    out = np.empty_like(clip)
    for t in range(frames):
        total = np.zeros(clip[:, 0].shape)
        for d in range(-c, c):
            low, part = divmod(d, stride)
            at = [min(max(t + low + k, 0), frames - 1) for k in (0, 1)]
            total += (stride - part) / stride * clip[:, at[0]] + part / stride * clip[:, at[1]]
        out[:, t] = np.floor(total / (2 * c) + 1e-9)
    return out


@pytest.mark.parametrize("stride", [1, 2, 3, 8])
def test_motion_blur_averages_the_videos_frames(clips, stride):
    """At stride 1 the reference's mean of 2c clip frames; at stride s each missing video frame interpolated, so
    the blur spans the same time of video at any stride (and does not vanish when s > 2c)."""
    suite = VideoSuite(frame_stride=stride)
    for severity in (1, 5):
        ours = corrupt(suite, clips, "motion_blur", severity).numpy()
        for clip, blurred in zip(clips.numpy(), ours, strict=True):
            assert np.array_equal(blurred, _blur_by_hand(clip, (3, 5, 7, 9, 11)[severity - 1], stride))
    assert not torch.equal(corrupt(suite, clips, "motion_blur", 1), clips)


def test_frame_rate_retimes_the_clip_at_its_own_rate(tmp_path):
    """A clip of 25-fps video at stride 2 runs at 12.5 fps: 20 fps keeps all its frames, 6 fps about half of them;
    taken as 30 fps (no timing known) 20 fps drops a third. The rate is part of the cache key."""
    clip = moving_clips(1, frames=16)
    plain = VideoSuite(tmp_path)
    request = SuiteRequest("x", torch.zeros(1), torch.zeros(1), None, False, None, video_fps=25, frame_stride=2)
    timed = plain.prepare(request)
    assert timed.clip_fps == 12.5 and timed.frame_stride == 2 and plain.clip_fps == 30

    def distinct(out: torch.Tensor) -> int:  # how many source frames show (each output frame's nearest one)
        errors = (out[0, :, :, None].double() - clip[0, :, None].double()).abs().mean(dim=(0, 3, 4))
        return len(set(errors.argmin(dim=1).tolist()))

    assert distinct(corrupt(timed, clip, "frame_rate", 1)) == 16
    assert distinct(corrupt(plain, clip, "frame_rate", 1)) < 13
    assert 7 <= distinct(corrupt(timed, clip, "frame_rate", 5)) <= 9
    assert len(list((tmp_path / "frame_rate").iterdir())) == 3


def test_a_run_hands_its_videos_timing_to_the_suite(plugins, quiet):
    from dstbench.config import RunConfig
    from dstbench.data import DataSplits, TensorImages
    from dstbench.runner import prepare_suite

    clips = TensorImages(moving_clips(2), torch.tensor([0, 1]))
    data = DataSplits(clips, clips, ("a", "b"), video_fps=30000 / 1001, frame_stride=3)
    suite = prepare_suite(RunConfig(dataset="moving-digits", suite="video-c"), plugins, data, quiet)
    assert suite.frame_stride == 3 and suite.clip_fps == Fraction(10000, 1001)


def test_fog_is_one_layer_per_clip(suite):
    still = moving_clips(2, frames=1).expand(-1, -1, FRAMES, -1, -1).contiguous()  # every frame the same
    out = corrupt(suite, still, "fog", 3)
    assert torch.equal(out, out[:, :, :1].expand_as(out))  # the same layer on every frame
    assert error(out, still) > 5
    moving = moving_clips(1)
    fogged = corrupt(suite, moving, "fog", 3)
    # the layer stays where it is while the photo moves: frame differences shrink, but do not vanish
    assert 0 < error(fogged[:, :, 1:], fogged[:, :, :-1]) < error(moving[:, :, 1:], moving[:, :, :-1])


@pytest.mark.parametrize("corruption", RANDOM)
def test_seeded_per_clip(suite, clips, corruption):
    whole = corrupt(suite, clips, corruption, 5, ids=torch.tensor([7, 8, 9]))
    assert torch.equal(whole, corrupt(suite, clips, corruption, 5, ids=torch.tensor([7, 8, 9])))
    alone = corrupt(suite, clips[1:2], corruption, 5, ids=torch.tensor([8]))
    assert torch.equal(alone, whole[1:2])
    reordered = corrupt(suite, clips.flip(0), corruption, 5, ids=torch.tensor([9, 8, 7]))
    assert torch.equal(reordered, whole.flip(0))
    if corruption in ("shot_noise", "rain", "fog"):  # the stream damage may miss these tiny clips
        assert not torch.equal(whole, corrupt(suite, clips, corruption, 5, seed=1, ids=torch.tensor([7, 8, 9])))


def test_accelerator_forms_give_the_same_clips(suite, clips, request):
    """The corruptions' forms meant for accelerators, run on the CPU (see tests/test_accelerator_forms.py)."""
    on_cpu = {corruption: corrupt(suite, clips, corruption, 4) for corruption in VideoSuite.corruptions}
    request.getfixturevalue("accelerator_forms")
    different = [c for c in VideoSuite.corruptions if not torch.equal(corrupt(suite, clips, c, 4), on_cpu[c])]
    assert not different


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("corruption", VideoSuite.corruptions)
def test_same_clips_on_the_gpu(suite, clips, corruption):
    on_gpu = corrupt(suite, clips.cuda(), corruption, 4)
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), corrupt(suite, clips, corruption, 4), atol=1, rtol=0)


def test_codec_results_are_cached_and_damaged_entries_rebuilt(tmp_path, clips, monkeypatch):
    encodes = []
    real_encode = codec.encode
    monkeypatch.setattr(codec, "encode", lambda *args, **kwargs: encodes.append(1) or real_encode(*args, **kwargs))
    suite = VideoSuite(tmp_path)
    first = corrupt(suite, clips, "packet_loss", 3)
    assert len(encodes) == 3
    files = sorted((tmp_path / "packet_loss").iterdir())
    assert len(files) == 3
    assert torch.equal(corrupt(VideoSuite(tmp_path), clips, "packet_loss", 3), first) and len(encodes) == 3
    damaged = bytearray(files[1].read_bytes())
    damaged[10] ^= 0xFF
    files[1].write_bytes(bytes(damaged))
    files[2].write_bytes(files[2].read_bytes()[:100])  # a truncated write
    assert torch.equal(corrupt(suite, clips, "packet_loss", 3), first) and len(encodes) == 5
    assert len(encodes) == 5 and all(f.stat().st_size == clips[0].numel() + 32 for f in files)
    corrupt(suite, clips, "packet_loss", 3, seed=1)  # another seed: other entries
    assert len(encodes) == 8 and len(list((tmp_path / "packet_loss").iterdir())) == 6


@pytest.mark.parametrize("corruption", CODEC_CORRUPTIONS)
def test_codec_bytes_are_the_same_every_time(corruption):
    """Without the cache: encoders must not vary run to run (x264's mb-tree did, at every size, and so did x265 on
    a frame of a single coding tree unit), or a clip's corruption and an entry's accuracy depend on the run."""
    function, parameters, _ = CODEC_CORRUPTIONS[corruption]
    uniform = lambda count, stream: (np.arange(count) * 0.6180339887 + 0.1 * stream) % 1  # noqa: E731  fixed draws
    for size in (32, 64, 96):
        clips = torch.cat([moving_clips(2, size=size), moving_clips(2, size=size, grain=4.0)])
        for clip in clips.permute(0, 2, 3, 4, 1).numpy():
            outputs = {function(clip, parameters[2], uniform).tobytes() for _ in range(3)}
            assert len(outputs) == 1, (corruption, size)


def test_a_clip_that_does_not_decode_keeps_its_frames():
    clip = moving_clips(1)[0].permute(1, 2, 3, 0).numpy()
    every_byte = codec.bit_error(clip, 1, lambda count, stream: np.zeros(count))  # every payload byte replaced
    assert every_byte.shape == clip.shape and (every_byte == codec.GREY).all()
    stream = codec.encode(clip, "libx264", dict(codec.X264_OPTIONS))
    early = codec.Stream(stream.decoder, stream.extradata, [p for p in stream.packets if p[1] < 5], 48, 48)
    out = codec.decode(early, FRAMES, SIZE, SIZE)
    assert out.shape == clip.shape and (out[:5] != codec.GREY).any(axis=(1, 2, 3)).all()  # decoded, if concealed
    assert (out[5:] == out[4]).all()  # frames that never came repeat the last one decoded


def test_bad_input(suite, clips):
    with pytest.raises(UserError, match="clips"):
        corrupt(suite, clips[:, :, 0], "fog", 1)  # images, not clips
    with pytest.raises(UserError, match="RGB"):
        suite.check_input(1, SIZE)
    with pytest.raises(UserError, match="rain needs images of at least 2 px, these are 1 px"):
        suite.check_input(3, 1)
    suite.check_input(3, 1, ["shot_noise", "h264_crf"])  # rain left out
    with pytest.raises(UserError, match="unknown video-c corruption"):
        corrupt(suite, clips, "snow", 1)
    with pytest.raises(UserError, match="no severity 6"):
        corrupt(suite, clips, "fog", 6)
