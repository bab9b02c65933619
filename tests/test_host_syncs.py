"""Generated corruptions never make the host wait for the device.

On a GPU the host queues a corruption's kernels and then the model's, and runs ahead while the device works. An
operation that reads a value back (`.item()`, `nonzero`, a boolean mask) or copies Python data or a CPU tensor to
the device without pinning makes the host wait for everything queued: the evaluation would then alternate between
host and device instead of overlapping them. On the meta device, where tensors have no data, reading a value back
raises; a dispatch mode sees every copy from the CPU; and the meta device takes the accelerator code paths (it is not
the CPU). Only the video codecs round-trip through the host, by design (FFmpeg runs there).
"""

import pytest
import torch
from conftest import HostCopies

from dstbench.corruption import SampleRNG
from dstbench_plugins.video_c.suite import CODEC_CORRUPTIONS

META = torch.device("meta")
THROUGH_THE_HOST = set(CODEC_CORRUPTIONS)


@pytest.fixture
def tensors_from_python_data(monkeypatch):
    """Records torch.tensor / torch.as_tensor calls that put Python data on the device (made inside one C++ call, so
    no dispatch mode sees their copy)."""
    made: list[str] = []
    for name in ("tensor", "as_tensor"):
        original = getattr(torch, name)

        def recording(*args, _original=original, _name=name, **kwargs):
            out = _original(*args, **kwargs)
            if out.device.type != "cpu":
                made.append(f"torch.{_name} on {out.device}")
            return out

        monkeypatch.setattr(torch, name, recording)
    return made


@pytest.mark.parametrize(
    ("suite_name", "shape"),
    [
        ("cifar-c", (3, 3, 32, 32)),
        ("cifar-c", (3, 1, 32, 32)),  # grey images are corrupted in RGB and converted back
        ("tinyimagenet-c", (2, 3, 64, 64)),
        ("imagenet-c", (2, 3, 224, 224)),
        ("imagenet-c-bar", (2, 3, 224, 224)),
        ("video-c", (2, 3, 4, 112, 112)),
    ],
)
def test_generated_corruptions_never_wait_for_the_device(plugins, tensors_from_python_data, suite_name, shape):
    suite = plugins.registry.suite(suite_name)
    images = torch.empty(shape, dtype=torch.uint8, device=META)
    ids = torch.arange(len(images), device=META)
    for corruption in sorted(set(suite.corruptions) - THROUGH_THE_HOST):
        for severity in suite.severities:
            rng = SampleRNG.for_samples(0, suite.name, corruption, severity, ids=ids)
            out = suite.corrupt(images, corruption, severity, rng)  # the first call may fill caches on the device
            assert (out.shape, out.dtype, out.device) == (images.shape, torch.uint8, META), corruption
            tensors_from_python_data.clear()
            with HostCopies() as host:
                suite.corrupt(images, corruption, severity, rng)
            assert host.copies + tensors_from_python_data == [], f"{corruption} severity {severity}"


def test_the_detectors_see_what_they_look_for(tensors_from_python_data):
    with HostCopies() as host:
        torch.ones(2).to(META)
        torch.zeros(2, device=META)  # made on the device: no copy
    assert host.copies == ["aten._to_copy.default"]
    torch.tensor([0.5, 1.0], device=META)
    assert tensors_from_python_data == ["torch.tensor on meta"]
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.ones(3, device=META).nonzero()
    with pytest.raises((NotImplementedError, RuntimeError)):
        torch.ones(1, device=META).item()
