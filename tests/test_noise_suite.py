"""The built-in `cifar-c-noise` suite: output contract, parity with CIFAR-10-C's formulas, determinism, selection."""

import numpy as np
import pluggy
import pytest
import skimage.data
import skimage.transform
import skimage.util
import torch

from dstbench import hookspecs
from dstbench.corruption import SampleRNG
from dstbench.errors import UserError
from dstbench.registry import check
from dstbench_plugins import image_c

SUITE = next(suite for suite in image_c.suites() if suite.name == "cifar-c-noise")

NAMES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


def astronaut32() -> torch.Tensor:
    """A natural image at CIFAR's size, uint8 (3, 32, 32)."""
    image = skimage.transform.resize(skimage.data.astronaut(), (32, 32), anti_aliasing=True)
    return torch.from_numpy(skimage.util.img_as_ubyte(image)).permute(2, 0, 1).contiguous()


def gray32() -> torch.Tensor:
    return torch.full((3, 32, 32), 128, dtype=torch.uint8)


def corrupt(images: torch.Tensor, corruption: str, severity: int, ids=None, seed=0) -> torch.Tensor:
    ids = torch.arange(len(images)) if ids is None else ids
    rng = SampleRNG.for_samples(seed, SUITE.name, corruption, severity, ids=ids)
    return SUITE.corrupt(images, corruption, severity, rng)


def reference(images: np.ndarray, corruption: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """make_cifar_c.py's formulas on uint8 images, with a seeded NumPy generator."""
    c = SUITE.table[corruption].parameters[32][severity - 1]
    x = images / 255.0
    if corruption == "gaussian_noise":
        x = x + rng.normal(size=x.shape, scale=c)
    elif corruption == "shot_noise":
        x = rng.poisson(x * c) / c
    elif corruption == "impulse_noise":
        x = skimage.util.random_noise(x, mode="s&p", amount=c, rng=rng)
    else:
        x = x + x * rng.normal(size=x.shape, scale=c)
    return np.uint8(np.clip(x, 0, 1) * 255)


# --- Contract ------------------------------------------------------------------------------------------------------


def test_suite_is_registered_through_the_hook():
    pm = pluggy.PluginManager("dstbench")
    pm.add_hookspecs(hookspecs)
    pm.register(image_c)
    registered = []
    pm.hook.register_suites(register=registered.append)
    assert "cifar-c-noise" in [suite.name for suite in registered]
    check("suite", SUITE)
    assert SUITE.name == "cifar-c-noise" and SUITE.corruptions == NAMES and SUITE.severities == (1, 2, 3, 4, 5)
    assert SUITE.subsets == {"noise": NAMES} and SUITE.modality == "image" and "32 px" in SUITE.resolution


@pytest.mark.parametrize("corruption", NAMES)
@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (3, 1, 28, 28), (2, 3, 1, 1), (0, 3, 32, 32)])
def test_output_is_uint8_of_the_same_shape(corruption, shape):
    images = torch.randint(0, 256, shape, dtype=torch.uint8)
    SUITE.check_input(shape[1], shape[2])
    out = corrupt(images, corruption, 5)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.device == images.device
    if images.numel() > 1000:
        assert not torch.equal(out, images)


@pytest.mark.parametrize("channels", [2, 4])
def test_only_rgb_or_grey_images_are_accepted(channels):
    with pytest.raises(UserError, match=f"RGB or grey images, not {channels}-channel ones"):
        SUITE.check_input(channels, 32)


@pytest.mark.parametrize("image", [gray32, astronaut32])
@pytest.mark.parametrize("corruption", NAMES)
def test_severity_increases_the_damage(image, corruption):
    clean = image().expand(64, -1, -1, -1).contiguous()
    damage = [(corrupt(clean, corruption, s).float() - clean.float()).abs().mean().item() for s in SUITE.severities]
    assert 0 < damage[0] and damage == sorted(set(damage)), damage  # strictly increasing


# --- Parity with the reference formulas ---------------------------------------------------------------------------


# 128 noisy copies of the natural image and of mid-gray: 786k elements. The change (corrupted - clean, 0..255 units)
# must have the reference's mean within 0.25 (the standard error is about 0.03; rounding instead of truncating would
# shift it by about 0.5) and its standard deviation within 2%.
@pytest.mark.parametrize("severity", [1, 3, 5])
@pytest.mark.parametrize("corruption", NAMES)
def test_matches_the_reference_in_distribution(corruption, severity):
    clean = torch.cat([astronaut32().expand(128, -1, -1, -1), gray32().expand(128, -1, -1, -1)]).contiguous()
    ours = corrupt(clean, corruption, severity).numpy().astype(np.float64)
    theirs = reference(clean.numpy(), corruption, severity, np.random.default_rng(severity)).astype(np.float64)
    ours_change, their_change = ours - clean.numpy(), theirs - clean.numpy()
    assert abs(ours_change.mean() - their_change.mean()) < 0.25
    assert abs(ours_change.std() / their_change.std() - 1) < 0.02
    if corruption == "impulse_noise":
        for value in (0, 255):
            flipped, their_flipped = (ours == value).mean(), (theirs == value).mean()
            assert abs(flipped - their_flipped) < 0.0015, (value, flipped, their_flipped)


def test_shot_noise_truncates_exactly():
    """A count k becomes floor(k * 255 / photons), with no float error at exact integers: a Poisson draw of 0
    keeps black black, and white stays white only when the count reaches photons."""
    black = torch.zeros(50, 3, 8, 8, dtype=torch.uint8)
    assert torch.equal(corrupt(black, "shot_noise", 3), black)
    ids = torch.arange(40)
    images = torch.full((40, 3, 16, 16), 200, dtype=torch.uint8)
    rng = SampleRNG.for_samples(0, SUITE.name, "shot_noise", 5, ids=ids)
    counts = rng.poisson(images, 50 / 255)
    expected = torch.clamp(torch.div(counts.long() * 255, 50, rounding_mode="floor"), max=255).to(torch.uint8)
    assert torch.equal(corrupt(images, "shot_noise", 5, ids=ids), expected)


# --- Determinism -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("corruption", NAMES)
def test_same_keys_same_output_other_seed_other_output(corruption):
    clean = astronaut32().expand(20, -1, -1, -1).contiguous()
    first = corrupt(clean, corruption, 4)
    assert torch.equal(first, corrupt(clean, corruption, 4))
    assert not torch.equal(first, corrupt(clean, corruption, 4, seed=1))


@pytest.mark.parametrize("corruption", NAMES)
def test_output_does_not_depend_on_the_batch(corruption):
    """Each image gets the same noise alone, in a shuffled batch, and in a batch spanning several CPU sub-batches."""
    images = torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(1000, 1300)
    whole = corrupt(images, corruption, 3, ids=ids)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    assert torch.equal(corrupt(images[order], corruption, 3, ids=ids[order]), whole[order])
    for i in (0, 85, 86, 299):
        assert torch.equal(corrupt(images[i : i + 1], corruption, 3, ids=ids[i : i + 1]), whole[i : i + 1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("corruption", NAMES)
def test_cuda_matches_cpu(corruption):
    images = astronaut32().expand(100, -1, -1, -1).contiguous()
    on_cpu, on_gpu = corrupt(images, corruption, 3), corrupt(images.cuda(), corruption, 3, ids=torch.arange(100).cuda())
    assert on_gpu.device.type == "cuda"
    assert (on_gpu.cpu().int() - on_cpu.int()).abs().max() <= 1  # float rounding may differ by one level


# --- Selection -------------------------------------------------------------------------------------------------------


def test_select_defaults_to_everything():
    assert SUITE.select(None, None) == (NAMES, (1, 2, 3, 4, 5))


def test_select_expands_subsets_keeps_suite_order_and_drops_duplicates():
    assert SUITE.select(["noise"], [5, 1]) == (NAMES, (1, 5))
    assert SUITE.select(["speckle_noise", "gaussian_noise", "speckle_noise"], [3, 3]) == (
        ("gaussian_noise", "speckle_noise"),
        (3,),
    )
    assert SUITE.select(["shot_noise", "noise"], None)[0] == NAMES


def test_select_rejects_unknown_corruptions_listing_the_valid_ones():
    with pytest.raises(UserError) as error:
        SUITE.select(["gausian_noise"], None)
    message = str(error.value)
    assert "gausian_noise" in message and "did you mean 'gaussian_noise'" in message
    assert all(name in message for name in (*NAMES, "noise")) and "\n" not in message


@pytest.mark.parametrize("severity", [0, 6, -1])
def test_select_rejects_unknown_severities(severity):
    with pytest.raises(UserError, match="choose from: 1, 2, 3, 4, 5"):
        SUITE.select(None, [3, severity])


def test_select_rejects_an_empty_selection():
    with pytest.raises(UserError):
        SUITE.select([], None)


def test_corrupt_rejects_bad_calls():
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    rng = SampleRNG(torch.arange(2))
    with pytest.raises(UserError, match="gaussian_noise"):
        SUITE.corrupt(images, "fog", 1, rng)
    with pytest.raises(UserError):
        SUITE.corrupt(images, "shot_noise", 6, rng)
    with pytest.raises(ValueError):
        SUITE.corrupt(images.float(), "shot_noise", 1, rng)
    with pytest.raises(ValueError):
        SUITE.corrupt(images, "shot_noise", 1, SampleRNG(torch.arange(3)))


def test_clips_are_refused_with_a_pointer_to_video_suites():
    clips = torch.zeros(2, 3, 4, 32, 32, dtype=torch.uint8)
    with pytest.raises(UserError, match="corrupts images .* not video clips; use a video suite"):
        SUITE.corrupt(clips, "gaussian_noise", 1, SampleRNG.for_samples(0, "test", ids=torch.arange(2)))
