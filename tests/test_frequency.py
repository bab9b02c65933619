"""`dstbench frequency`: the radial Fourier filter against HFC's numpy code, the batched evaluation, and the command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dstbench import runner
from dstbench.cli import build_cli
from dstbench.frequency import (
    RadialFilter,
    default_radii,
    max_distance,
    parse_radii,
    radial_masks,
    radius_accuracy,
)

CPU = torch.device("cpu")


# --- HFC's code (HaohanWang/HFC, utility/frequencyHelper.py), rewritten for (N, C, H, W) images ------------------


def hfc_distance(i, j, image_size, r):
    dis = np.sqrt((i - image_size / 2) ** 2 + (j - image_size / 2) ** 2)
    return 1.0 if dis < r else 0


def hfc_mask_radial(size, r):
    mask = np.zeros((size, size))
    for i in range(size):
        for j in range(size):
            mask[i, j] = hfc_distance(i, j, image_size=size, r=r)
    return mask


def hfc_filter(images, r):
    """Low- and high-pass images, one image and channel at a time, as HFC's
    generateDataWithDifferentFrequencies_3Channel does (no clipping)."""
    mask = hfc_mask_radial(images.shape[-1], r)
    low, high = np.zeros_like(images), np.zeros_like(images)
    for n in range(images.shape[0]):
        for c in range(images.shape[1]):
            spectrum = np.fft.fftshift(np.fft.fft2(images[n, c]))
            low[n, c] = np.real(np.fft.ifft2(np.fft.ifftshift(spectrum * mask)))
            high[n, c] = np.real(np.fft.ifft2(np.fft.ifftshift(spectrum * (1 - mask))))
    return low, high


def random_images(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def filtered(images, radii):
    radial = RadialFilter(tuple(radii), *images.shape[-2:], images.device)
    return [radial(images, k) for k in range(len(radii))]


# --- the filter -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 28, 8])
def test_the_filter_is_hfcs_on_random_images(size):
    images = random_images((3, 3, size, size))
    radii = default_radii(size, size)
    for r, (low, high) in zip(radii, filtered(images, radii), strict=True):
        want_low, want_high = hfc_filter(images.double().numpy(), r)
        assert np.allclose(low.numpy(), want_low, rtol=0, atol=2e-6), r
        assert np.allclose(high.numpy(), want_high, rtol=0, atol=2e-6), r


def test_the_masks_are_hfcs_mask_ifftshifted():
    for size in (32, 28, 8):
        masks = radial_masks(default_radii(size, size), size, size, CPU)
        for r, mask in zip(default_radii(size, size), masks, strict=True):
            assert np.array_equal(np.fft.fftshift(mask.numpy()), hfc_mask_radial(size, r).astype(bool)), (size, r)


def test_at_an_odd_size_the_centre_is_the_dc_term():
    """HFC's size / 2 is half a pixel off the DC term at an odd size; dstbench centres on it (where fftshift puts it):
    the filtered images are still real, and r = 1 keeps the DC term alone."""
    size, images = 9, random_images((2, 3, 9, 9)).double()
    for r, (low, _) in zip(range(7), filtered(images, range(7)), strict=True):
        i, j = np.indices((size, size)) - size // 2
        mask = np.sqrt(i**2 + j**2) < r
        spectrum = np.fft.fftshift(np.fft.fft2(images.numpy()), axes=(-2, -1)) * mask
        want = np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1)))
        assert np.abs(want.imag).max() < 1e-12 and np.allclose(low.numpy(), want.real, atol=1e-12), r


def test_low_plus_high_is_the_image_and_the_ends_are_exact():
    size = 32
    images = random_images((4, 3, size, size))
    radii = (0, 1, 3, 8, 22, 23, 40)
    results = filtered(images, radii)
    for low, high in results:
        assert torch.allclose(low + high, images, rtol=0, atol=1e-6)
    low0, high0 = results[0]
    assert torch.equal(low0, torch.zeros_like(images)) and torch.equal(high0, images)  # r = 0: nothing kept
    assert 22 < max_distance(size, size) < 23
    for low, high in results[-2:]:  # r above the largest distance: everything kept
        assert torch.equal(low, images) and torch.equal(high, torch.zeros_like(images))
    low1, _ = results[1]  # the smallest positive radius: the DC term alone, each channel's mean
    assert torch.allclose(low1, images.mean(dim=(-2, -1), keepdim=True).expand_as(images), atol=1e-6)
    masks = radial_masks(radii, size, size, CPU)
    assert masks[1].sum() == 1 and masks[1][0, 0]  # DC at [0, 0] in torch.fft's unshifted layout


def test_filtered_images_are_not_clipped():
    """As in HFC: the high-pass image is centred on 0 and the low-pass one rings past [0, 1]; low + high stays the
    image, which clipping would break."""
    images = (random_images((2, 1, 32, 32)) > 0.5).float()  # hard edges ring
    low, high = filtered(images, [6])[0]
    assert high.min() < -0.1 and high.max() > 0.1 and abs(high.mean()) < 1e-6
    assert low.min() < 0 or low.max() > 1


def test_the_masks_are_symmetric_so_the_half_spectrum_suffices():
    for height, width in ((32, 32), (28, 28), (9, 9), (8, 12)):
        radii = default_radii(height, width)
        masks = radial_masks(radii, height, width, CPU)
        flipped = torch.roll(masks.flip(-2, -1), shifts=(1, 1), dims=(-2, -1))  # f -> -f (mod size)
        assert torch.equal(masks, flipped) and masks[-1].all() and not masks[0].any()


def test_batched_is_one_image_at_a_time_and_deterministic():
    images = random_images((5, 3, 32, 32), seed=1)
    radii = (1, 2, 5, 11, 17)
    batched = filtered(images, radii)
    singles = [filtered(image[None], radii) for image in images]
    for k in range(len(radii)):
        for side in (0, 1):
            one_by_one = torch.cat([single[k][side] for single in singles])
            assert torch.allclose(batched[k][side], one_by_one, rtol=0, atol=1e-6)
    again = filtered(images, radii)
    for pair, other in zip(batched, again, strict=True):
        assert torch.equal(pair[0], other[0]) and torch.equal(pair[1], other[1])


# --- radii ------------------------------------------------------------------------------------------------------


def test_radii():
    assert default_radii(32, 32) == tuple(range(24))
    assert default_radii(28, 28) == tuple(range(21))
    assert default_radii(224, 224) == tuple(range(160))
    assert parse_radii("0-16") == tuple(range(17))
    assert parse_radii("8,2,4, 4") == (2, 4, 8)
    assert parse_radii("0-2,8") == (0, 1, 2, 8)


@pytest.mark.parametrize("text", ["", "a", "-1", "5-2", "1.5", "2,,4", "0-"])
def test_bad_radii(text):
    from dstbench.errors import UserError

    with pytest.raises(UserError, match="invalid --radii"):
        parse_radii(text)


# --- the evaluation ---------------------------------------------------------------------------------------------


def test_radius_accuracy_is_the_same_in_any_batch_size_and_run_after_run(finished_run, plugins, quiet):
    from dstbench import checkpoint

    saved = checkpoint.load_model(Path(finished_run.out) / "model.pt")
    model = runner.build_model(finished_run, plugins, CPU, False)
    model.load_state_dict(saved["model"])
    test = runner.load_data(finished_run, plugins, quiet, CPU).test
    radii = (0, 2, 4, 23)

    def curves(batch_size):
        return radius_accuracy(
            model, test, radii, device=CPU, batch_size=batch_size, bf16=False, channels_last=False, reporter=quiet
        )

    full = curves(500)
    assert full == curves(500) == curves(7)
    entry = json.loads((Path(finished_run.out) / "entry.json").read_text())
    assert full.test_samples == len(test) == 100
    assert full.clean_acc == entry["clean_acc"] == full.low[-1] == full.high[0]
    assert full.low[0] == full.high[-1]  # both all-zero images


# --- the command ------------------------------------------------------------------------------------------------


def test_the_command_end_to_end(tmp_path, finished_run):
    run, out = Path(finished_run.out), tmp_path / "freq"
    env = {**os.environ, "DSTBENCH_PLUGINS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "dstbench", "frequency", str(run), "--radii", "0,4,8,23", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "dense seed 0" in result.stdout and "img/s" in result.stderr  # the table; plain progress (no TTY)
    data = json.loads((out / "frequency.json").read_text())
    assert data["radii"] == [0, 4, 8, 23] and data["dataset"] == "digits" and data["image_size"] == 32
    (curves,) = data["runs"]
    entry = json.loads((run / "entry.json").read_text())
    assert curves["label"] == "dense seed 0" and curves["test_samples"] == 100
    assert (curves["algo"], curves["sparsity"], curves["seed"]) == ("dense", 0.0, 0)
    assert len(curves["low"]) == len(curves["high"]) == 4
    assert curves["low"][-1] == curves["clean_acc"] == entry["clean_acc"] == curves["high"][0]
    assert (out / "frequency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "frequency.json").stat().st_mode & 0o777 == 0o644
    assert not (run / "frequency").exists()


def _rewritten(source: Path, target: Path, **config) -> Path:
    """A copy of a model file whose saved config says otherwise."""
    state = torch.load(source, map_location="cpu", weights_only=True)
    state["config"].update(config)
    torch.save(state, target)
    return target


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, finished_run, plugins):
    run = Path(finished_run.out)
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    fashion = _rewritten(run / "model.pt", tmp_path / "fashion.pt", dataset="fashion-mnist")
    video = _rewritten(run / "model.pt", tmp_path / "video.pt", dataset="moving-digits", model="clip-cnn")
    out = tmp_path / "out"
    cases = [
        ([tmp_path / "missing"], f"{tmp_path / 'missing'} does not exist"),
        ([tmp_path / "missing.pt"], "missing.pt does not exist"),
        ([tmp_path / "empty"], "empty holds no model.pt: not a finished run"),
        ([tmp_path / "junk.pt"], "junk.pt is not a dstbench checkpoint: the file is truncated or damaged"),
        ([video], "is a run on video dataset 'moving-digits'; the frequency analysis is for images"),
        ([run, fashion], f"{run} is on digits at 32 px, {fashion} on fashion-mnist at 28 px"),
        ([run, "--radii", "4-2"], "invalid --radii '4-2'"),
        ([run, "--radii", "a,b"], "invalid --radii 'a,b'"),
        ([run, "--max-test-samples", "1"], "--max-test-samples must be at least 2, got 1"),
        ([run, "--out", tmp_path / "file"], f"--out {tmp_path / 'file'} is a file; name a folder"),
        ([run, "--out", tmp_path / "file" / "x"], "is a file, so no folder can be made below it"),
    ]
    cli = build_cli(plugins)
    for args, message in cases:
        args = [str(a) for a in args]
        result = CliRunner().invoke(cli, ["frequency", *args, *([] if "--out" in args else ["--out", str(out)])])
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.output)
        assert lines[0].startswith("Error: ") and message in lines[0], (args, lines)
        assert not out.exists() and not (run / "frequency").exists()
