"""Corruptions take some steps in forms meant for a CPU (pieces and blocks, early exits, compactions, CPU-friendly
shapes; see `dstbench.corruption.cpu_forms`). Run on the CPU, the forms meant for accelerators must give the same
images, so that a GPU, whose tests need a GPU, runs code these tests have checked."""

import dataclasses

import numpy as np
import pytest
import skimage.data
import skimage.transform
import torch

from dstbench import corruption
from dstbench.corruption import SampleRNG

SUITES = {"cifar-c": (32, 6), "tinyimagenet-c": (64, 4), "imagenet-c": (224, 2), "imagenet-c-bar": (224, 2)}


def photos(size: int, n: int) -> torch.Tensor:
    """n photos (N, 3, size, size) uint8: astronaut, coffee, chelsea, ..."""
    sources = (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea())
    resized = [skimage.transform.resize(sources[i % 3], (size, size), anti_aliasing=True) for i in range(n)]
    return torch.from_numpy((np.stack(resized) * 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("suite_name", SUITES)
def test_accelerator_forms_give_the_cpu_forms_images(suite_name, plugins, monkeypatch, request):
    suite = plugins.registry.suite(suite_name)
    size, n = SUITES[suite_name]
    images = photos(size, n)
    # the CPU's pieces and blocks engage even at these batch sizes: one image a piece, random numbers in odd blocks
    one_image = {
        name: dataclasses.replace(c, cpu_piece_elements=c.cpu_piece_elements and 3 * size * size)
        for name, c in suite.table.items()
    }
    monkeypatch.setattr(suite, "table", one_image)
    monkeypatch.setattr(corruption, "_CPU_BLOCK", 4099)
    cells = [(corruption, severity) for corruption in suite.corruptions for severity in (1, 5)]

    def corrupt_all() -> dict[tuple[str, int], torch.Tensor]:
        return {
            cell: suite.corrupt(images, *cell, SampleRNG.for_samples(0, suite_name, *cell, ids=torch.arange(n)))
            for cell in cells
        }

    cpu = corrupt_all()
    request.getfixturevalue("accelerator_forms")
    accelerator = corrupt_all()
    different = [cell for cell in cells if not torch.equal(accelerator[cell], cpu[cell])]
    assert not different


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize(
    "device, suite_name",
    [("cpu", "cifar-c"), *(pytest.param("cuda", name, marks=needs_cuda) for name in SUITES)],
)
def test_each_image_gets_its_image_in_any_batch(device, suite_name, plugins):
    """The per-sample promise, on the GPU too, where cuDNN and cuBLAS may pick other kernels, summing in other
    orders, for other batch sizes: each image alone, and the batch reversed, get the batch's images."""
    suite = plugins.registry.suite(suite_name)
    size, n = SUITES[suite_name]
    images = photos(size, 2 * n).to(device)
    ids = torch.arange(2 * n, device=device)
    for cell in [(name, severity) for name in suite.corruptions for severity in (1, 3, 5)]:
        whole = suite.corrupt(images, *cell, SampleRNG.for_samples(0, suite_name, *cell, ids=ids))
        alone = [
            suite.corrupt(images[i : i + 1], *cell, SampleRNG.for_samples(0, suite_name, *cell, ids=ids[i : i + 1]))
            for i in (0, n)
        ]
        reverse = ids.flip(0)
        backwards = suite.corrupt(images[reverse], *cell, SampleRNG.for_samples(0, suite_name, *cell, ids=reverse))
        assert torch.equal(alone[0], whole[:1]) and torch.equal(alone[1], whole[n : n + 1]), cell
        assert torch.equal(backwards, whole[reverse]), cell
