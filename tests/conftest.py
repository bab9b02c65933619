import os

# Tests never touch the network: without these, Hugging Face look-ups retry for about 45 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
# OpenMP threads that busy-wait make every small torch op crawl when the 2 CI cores are shared with a subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_leaves  # noqa: E402

from dstbench.hookspecs import hookimpl  # noqa: E402
from dstbench.report import PlainReporter  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def plugins():
    from dstbench.plugins import Plugins

    return Plugins.load(env={"DSTBENCH_PLUGINS": ""})


@pytest.fixture
def accelerator_forms(monkeypatch):
    """Corruptions on the CPU take the forms meant for accelerators (`cpu_forms` is false in every module that
    imported it), with the form-dependent Poisson tables rebuilt before and after."""
    import sys

    from dstbench import corruption

    original = corruption.cpu_forms
    for module in list(sys.modules.values()):
        if getattr(module, "cpu_forms", None) is original:
            monkeypatch.setattr(module, "cpu_forms", lambda device: False)
    corruption._poisson_table.cache_clear()
    yield
    corruption._poisson_table.cache_clear()


@pytest.fixture
def quiet():
    return PlainReporter(quiet=True)


def run_config(plugins, tmp_path, config_file=None, **flags):
    """A resolved config for a small, fast digits run."""
    from dstbench.config import resolve

    base = {
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.1,
        "max_test_samples": 100,
        "suite": "cifar-c-noise",  # four corruptions: the runs stay fast
        "severities": "1,5",
        "device": "cpu",
        "out": str(tmp_path / "run"),
        "quiet": True,
    }
    return resolve({**base, **flags}, config_file, plugins.registry)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, plugins):
    """A complete small run: its directory holds model.pt and entry.json."""
    from dstbench.runner import execute

    cfg = run_config(plugins, tmp_path_factory.mktemp("finished"))
    execute(cfg, plugins, PlainReporter(quiet=True))
    return cfg


class WarningsReporter(PlainReporter):
    """A quiet reporter that keeps its warnings."""

    def __init__(self):
        super().__init__(quiet=True)
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)


class StopAfter:
    """A plugin that interrupts training after the given epoch, as Ctrl-C would."""

    def __init__(self, epoch):
        self.epoch = epoch

    @hookimpl
    def on_epoch_end(self, run, stats):
        if stats.epoch == self.epoch:
            raise KeyboardInterrupt


class HostCopies(TorchDispatchMode):
    """Records the operations that take a CPU tensor and give a meta one: copies from the host."""

    def __init__(self):
        super().__init__()
        self.copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.device.type for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        outputs = {t.device.type for t in tree_leaves(out) if isinstance(t, torch.Tensor)}
        if "cpu" in inputs and "meta" in outputs:
            self.copies.append(str(func))
        return out
