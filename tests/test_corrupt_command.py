"""`dstbench corrupt`: lossless PNGs of exactly what the evaluation sees, a preview grid, and one-line errors for bad
input that leave nothing written; through click's runner and once through a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dstbench.cli import build_cli
from dstbench.corruption import Corruption, SampleRNG, TableSuite
from dstbench.hookspecs import hookimpl
from dstbench.plugins import Plugins
from dstbench_plugins.image_c import noise

SUITE = "cifar-c-noise"


class LargeOnly:
    """'large-only': gaussian noise that needs images of at least 16 px, and impulse noise, which takes any."""

    @hookimpl
    def register_suites(self, register):
        base = noise.CORRUPTIONS["gaussian_noise"]
        large = Corruption(base.function, base.parameters, min_size=16)
        table = {"gaussian_noise": large, "impulse_noise": noise.CORRUPTIONS["impulse_noise"]}
        register(TableSuite("large-only", "test suite", 32, table))


@pytest.fixture(scope="module")
def plugins():
    return Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"large": LargeOnly()})


@pytest.fixture(scope="module")
def cli(plugins):
    return build_cli(plugins)


def write_image(path: Path, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return pixels


def read_png(path: Path) -> torch.Tensor:
    pixels = torch.from_numpy(np.array(Image.open(path)))
    return pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)


def corrupted(plugins, image: np.ndarray, corruption: str, severity: int, sample_id: int, seed=0, suite=SUITE):
    """What the suite makes of one image (H, W) or (H, W, C) with this sample id."""
    tensor = torch.from_numpy(image)
    tensor = tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    rng = SampleRNG.for_samples(seed, suite, corruption, severity, ids=torch.tensor([sample_id]))
    return plugins.registry.suite(suite).corrupt(tensor[None], corruption, severity, rng)[0]


def invoke(cli, *args: object):
    return CliRunner().invoke(cli, ["corrupt", *map(str, args)])


@pytest.fixture
def images(tmp_path) -> dict[str, np.ndarray]:
    """An RGB image 20x30 and a grey one 17x23."""
    return {
        "rgb": write_image(tmp_path / "rgb.png", (20, 30, 3)),
        "grey": write_image(tmp_path / "grey.png", (17, 23), seed=1),
    }


def test_pngs_are_lossless_copies_of_the_suites_output(cli, plugins, tmp_path, images):
    out = tmp_path / "out"
    args = ["--suite", SUITE, "--corruption", "gaussian_noise,shot_noise", "--severity", "2,4", "--out", out]
    result = invoke(cli, tmp_path / "rgb.png", tmp_path / "grey.png", *args)
    assert result.exit_code == 0, result.output
    assert len(os.listdir(out)) == 8
    for position, (stem, image) in enumerate(images.items()):
        for corruption in ("gaussian_noise", "shot_noise"):
            for severity in (2, 4):
                written = read_png(out / f"{stem}_{corruption}_s{severity}.png")
                assert written.shape[1:] == image.shape[:2] and written.shape[0] == (3 if stem == "rgb" else 1)
                assert torch.equal(written, corrupted(plugins, image, corruption, severity, position))


def test_same_seed_same_files_other_seed_other_files(cli, tmp_path, images):
    def run(out: str, seed: int) -> bytes:
        args = ["--suite", SUITE, "--corruption", "impulse_noise", "--severity", "5", "--seed", seed]
        assert invoke(cli, tmp_path / "rgb.png", *args, "--out", tmp_path / out).exit_code == 0
        return (tmp_path / out / "rgb_impulse_noise_s5.png").read_bytes()

    assert run("a", 3) == run("b", 3) != run("c", 4)


def test_grid_has_a_row_per_corruption_and_image_and_a_clean_column(cli, tmp_path, images):
    write_image(tmp_path / "grey.png", (20, 30), seed=1)  # a grid needs one size
    args = ["--suite", SUITE, "--corruption", "noise", "--severities", "1,3", "--grid", "--out", tmp_path / "out"]
    result = invoke(cli, tmp_path / "rgb.png", tmp_path / "grey.png", *args)
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path / "out") == [f"grid_{SUITE}.png"]
    grid = Image.open(tmp_path / "out" / f"grid_{SUITE}.png")
    rows, columns = 4 * 2, 1 + 2
    assert grid.mode == "RGB" and grid.size == (columns * (30 + 2) + 2, rows * (20 + 2) + 2)
    clean = np.array(grid)[2:22, 2:32]
    assert np.array_equal(clean, images["rgb"])


def test_dataset_samples_are_what_the_evaluation_sees(cli, plugins, tmp_path, quiet):
    from dstbench.data import LoadRequest

    args = ["--dataset", "digits", "--samples", 3, "--suite", SUITE, "--corruption", "shot_noise", "--severity", 5]
    result = invoke(cli, *args, "--seed", 7, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    test = plugins.registry.dataset("digits").load(LoadRequest(None, False, tmp_path, quiet)).test
    rng = SampleRNG.for_samples(7, SUITE, "shot_noise", 5, ids=test.ids[:3])
    expected = plugins.registry.suite(SUITE).corrupt(test.images[:3], "shot_noise", 5, rng)
    for position, image in enumerate(expected):
        assert torch.equal(read_png(tmp_path / "out" / f"digits_{position}_shot_noise_s5.png"), image)


def test_rgba_is_corrupted_as_rgb_with_a_note(cli, plugins, tmp_path):
    pixels = write_image(tmp_path / "clear.png", (16, 16, 4))
    args = ["--suite", SUITE, "--corruption", "gaussian_noise", "--severity", 1, "--out", tmp_path / "out"]
    result = invoke(cli, tmp_path / "clear.png", *args)
    assert result.exit_code == 0 and "RGBA image; corrupting it as RGB, transparency dropped" in result.output
    written = read_png(tmp_path / "out" / "clear_gaussian_noise_s1.png")
    assert torch.equal(written, corrupted(plugins, pixels[..., :3], "gaussian_noise", 1, 0))


def test_16_bit_grey_is_corrupted_as_8_bit_grey(cli, plugins, tmp_path):
    deep = np.random.default_rng(0).integers(0, 65536, (16, 16)).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    args = ["--suite", SUITE, "--corruption", "gaussian_noise", "--severity", 1, "--out", tmp_path / "out"]
    result = invoke(cli, tmp_path / "deep.png", *args)
    assert result.exit_code == 0 and "image; corrupting it as 8-bit grey" in result.output, result.output
    written = read_png(tmp_path / "out" / "deep_gaussian_noise_s1.png")
    assert torch.equal(written, corrupted(plugins, np.rint(deep / 257).astype(np.uint8), "gaussian_noise", 1, 0))


BAD_INPUT = [
    (["{tmp}/rgb.png", "--suite", "nope"], "unknown suite 'nope'; choose from: "),
    (["{tmp}/rgb.png", "--suite", SUITE, "--corruption", "fog"], "choose from: gaussian_noise, impulse_noise"),
    (["{tmp}/rgb.png", "--suite", SUITE, "--severity", "6"], "has no severity 6; choose from: 1, 2, 3, 4, 5"),
    (["{tmp}/rgb.png", "--suite", SUITE, "--severity", "high"], "invalid severities 'high'"),
    (["{tmp}/rgb.png", "--suite", "large-only"], "gaussian_noise needs images of at least 16 px, these are 15 px"),
    (["{tmp}/broken.png", "--suite", SUITE], "cannot read image {tmp}/broken.png"),
    (["{tmp}/missing.png", "--suite", SUITE], "image file {tmp}/missing.png does not exist"),
    (["{tmp}/sub", "--suite", SUITE], "{tmp}/sub is a folder; give image files"),
    (["{tmp}/float.tif", "--suite", SUITE], "{tmp}/float.tif is a 32-bit (F) image; save it as 8-bit grey or RGB"),
    (["{tmp}/rgb.png", "{tmp}/sub/rgb.png", "--suite", SUITE], "two images are named 'rgb'"),
    (["{tmp}/rgb.png", "--suite", SUITE, "--samples", "4"], "--samples and --data-dir need --dataset"),
    (["--suite", SUITE], "give image files to corrupt, or --dataset NAME"),
    (["{tmp}/rgb.png", "--suite", SUITE, "--dataset", "digits"], "image files or --dataset, not both"),
    (["--suite", SUITE, "--dataset", "digits", "--samples", "0"], "--samples must be at least 1"),
    (["{tmp}/rgb.png", "--suite", SUITE, "--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["{tmp}/rgb.png", "--suite", "cifar10-c-files"], "32x32 RGB images, not 15 px ones"),
    (["{tmp}/rgb.png", "--suite", SUITE, "--out", "{tmp}/rgb.png"], "is a file; name a folder"),
    (["{tmp}/rgb.png", "{tmp}/square.png", "--suite", SUITE, "--grid"], "--grid needs images of one size"),
    (["{tmp}/rgb.png", "--suite", "video-c"], "writes images; suite 'video-c' corrupts video"),
    (["--suite", SUITE, "--dataset", "moving-digits"], "writes images; dataset 'moving-digits' holds video"),
]


def test_a_corruption_left_out_does_not_limit_the_size(cli, plugins, tmp_path):
    """The 15-px image is too small for the suite's gaussian noise (BAD_INPUT), not for its impulse noise."""
    pixels = write_image(tmp_path / "rgb.png", (15, 40, 3))
    args = ["--suite", "large-only", "--corruption", "impulse_noise", "--severity", 2, "--out", tmp_path / "out"]
    assert invoke(cli, tmp_path / "rgb.png", *args).exit_code == 0
    written = read_png(tmp_path / "out" / "rgb_impulse_noise_s2.png")
    assert torch.equal(written, corrupted(plugins, pixels, "impulse_noise", 2, 0, suite="large-only"))


@pytest.mark.parametrize("args, message", BAD_INPUT)
def test_bad_input_is_one_line_and_writes_nothing(cli, tmp_path, args, message):
    write_image(tmp_path / "rgb.png", (15, 40, 3))
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "rgb.png", (15, 40, 3))
    write_image(tmp_path / "square.png", (16, 16))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.fromarray(np.zeros((20, 20), np.float32)).save(tmp_path / "float.tif")
    args = [arg.replace("{tmp}", str(tmp_path)) for arg in args]
    result = invoke(cli, *args, *([] if "--out" in args else ["--out", tmp_path / "out"]))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message.format(tmp=tmp_path) in lines[0], lines
    assert not (tmp_path / "out").exists()


def test_real_subprocess(tmp_path, images):
    command = ["corrupt", tmp_path / "grey.png", "--suite", SUITE, "--severity", "3", "--out", tmp_path / "out"]
    env = {**os.environ, "DSTBENCH_PLUGINS": ""}
    result = subprocess.run(
        [sys.executable, "-m", "dstbench", *map(str, command)], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(tmp_path / "out")) == [f"grey_{c}_s3.png" for c in sorted(noise.CORRUPTIONS)]
    assert "wrote 4 PNG file(s)" in result.stderr
