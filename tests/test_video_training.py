"""The `video` trainer in real runs: its recipe, DST on 3D convolutions (exact per-layer counts at init and after
every update), a whole train + evaluate run of clip-cnn on the embedded moving-digits clips, and the same through
the CLI with the video-c suite."""

import json
import os
import subprocess
import sys

import pytest
import torch
from test_algorithms import Auditor

from dstbench.config import resolve
from dstbench.corruption import CorruptionSuite
from dstbench.data import DatasetSpec, DataSplits, TensorImages
from dstbench.entry import validate_file
from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import RunDir, execute
from dstbench_plugins.video_trainer import VideoTrainer

QUIET = PlainReporter(quiet=True)
SYNTHETIC = "synthetic-clips"
FRAMES, SIDE, CLASSES = 8, 16, 3
# clip-cnn's weights at 3 classes: conv1 (16, 3, 3, 3, 3), conv2 (32, 16, 3, 3, 3), conv3 (64, 32, 3, 3, 3), fc (3, 64)
LAYERS = ("net.0.weight", "net.4.weight", "net.8.weight", "net.14.weight")
SIZES = (1296, 13824, 55296, 192)
# ERK at 50 % by hand (score = sum of all dims / their product): fc (67/192) and conv1 (28/1296) would pass
# density 1 and stay dense; conv2 and conv3 share 0.5 · 70608 - 192 - 1296 = 33816 weights in proportion to
# their dim sums 57 and 105: 11898.44 and 21917.56, rounded to 11898 and 21918 (the larger remainder).
EXPECTED_COUNTS = {
    "uniform": dict(zip(LAYERS, (648, 6912, 27648, 96), strict=True)),
    "erk": dict(zip(LAYERS, (1296, 11898, 21918, 192), strict=True)),
}


def synthetic_clips(n: int, seed: int) -> TensorImages:
    """Noise clips whose brightness rises (class 0), falls (1) or stays (2) over time: only motion in T tells."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % CLASSES
    ramp = torch.linspace(-60, 60, FRAMES)
    trend = torch.stack([ramp, -ramp, torch.zeros(FRAMES)])[labels].view(n, 1, FRAMES, 1, 1)
    noise = torch.randint(60, 196, (n, 3, FRAMES, SIDE, SIDE), generator=generator)
    return TensorImages((noise + trend).clamp(0, 255).to(torch.uint8), labels)


class Darken(CorruptionSuite):
    """A video suite of one cheap corruption, so these runs need no codec and no other helper's suite."""

    name = "test-darken"
    description = "clips scaled by 1 - 0.3 · severity"
    corruptions = ("darken",)
    severities = (1, 2)
    modality = "video"

    def corrupt(self, images, corruption, severity, rng):
        return (images.float() * (1 - 0.3 * severity)).to(torch.uint8)


class SyntheticVideo:
    """A video dataset with no recipe of its own (so the trainer's recipe shows) and the Darken suite."""

    @hookimpl
    def register_datasets(self, register):
        register(
            DatasetSpec(
                name=SYNTHETIC,
                description="noise clips with a brightness trend",
                num_classes=CLASSES,
                image_size=SIDE,
                channels=3,
                mean=(0.5, 0.5, 0.5),
                std=(0.25, 0.25, 0.25),
                load=lambda request: DataSplits(synthetic_clips(48, 0), synthetic_clips(24, 1), ("up", "down", "flat")),
                modality="video",
                recipe={"model": "clip-cnn", "frames": FRAMES, "suite": Darken.name},
            )
        )

    @hookimpl
    def register_suites(self, register):
        register(Darken())


class MaskAuditor(Auditor):
    """Also keeps the first and the last masks, to show the updates moved them."""

    @hookimpl(trylast=True)
    def on_run_start(self, run):
        super().on_run_start(run)
        self.first = {name: mask.clone() for name, mask in run.algorithm.masks.masks.items()}

    @hookimpl(trylast=True)
    def on_run_end(self, run, result):
        self.last = {name: mask.clone() for name, mask in run.algorithm.masks.masks.items()}


def video_plugins(**extra):
    return Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"synthetic": SyntheticVideo(), **extra})


def video_config(plugins, tmp_path, **flags):
    base = {"dataset": SYNTHETIC, "epochs": 2, "batch_size": 12, "device": "cpu", "out": str(tmp_path / "run")}
    return resolve({**base, "quiet": True, **flags}, None, plugins.registry)


def test_video_trainer_recipe_sits_below_the_dataset_recipe_and_flags(tmp_path):
    plugins = video_plugins()
    cfg = resolve({"dataset": SYNTHETIC, "device": "cpu"}, None, plugins.registry)
    recipe = (cfg.trainer, cfg.lr, cfg.schedule, cfg.momentum, cfg.weight_decay, cfg.epochs)
    assert recipe == ("video", 0.01, "cosine", 0.9, 5e-4, 50)
    flagged = resolve({"dataset": SYNTHETIC, "lr": "0.2", "epochs": "3"}, None, plugins.registry)
    assert (flagged.lr, flagged.epochs, flagged.schedule) == (0.2, 3, "cosine")
    digits = resolve({"dataset": "moving-digits", "suite": Darken.name}, None, plugins.registry)
    own = plugins.registry.dataset("moving-digits").recipe
    assert digits.trainer == "video" and digits.lr == own.get("lr", VideoTrainer.defaults["lr"])


@pytest.mark.parametrize("distribution", ["uniform", "erk"])
@pytest.mark.parametrize("algo", ["rigl", "set"])
def test_conv3d_layers_keep_exact_counts_at_init_and_after_every_update(tmp_path, algo, distribution):
    auditor = MaskAuditor()
    plugins = video_plugins(auditor=auditor)
    flags = {"algo": algo, "sparsity": "0.5", "distribution": distribution, "algo_options": ("update_interval=2",)}
    entry = execute(video_config(plugins, tmp_path, **flags), plugins, QUIET).to_dict()
    assert auditor.update_steps == [2, 4, 6]  # 8 steps, updates every 2 until 75 % of them
    assert all(counts == EXPECTED_COUNTS[distribution] for counts in auditor.count_history)
    moved = [name for name in LAYERS if EXPECTED_COUNTS[distribution][name] < SIZES[LAYERS.index(name)]]
    assert moved and all(not torch.equal(auditor.first[name], auditor.last[name]) for name in moved)
    layers = {layer["name"]: layer for layer in entry["sparsity"]["layers"]}
    assert [layers[name]["shape"][2:] for name in LAYERS[:3]] == [[3, 3, 3]] * 3
    # Counted in the weights: never above the mask's count; a weight grown at zero whose gradient stays zero (a
    # corner tap of conv3 on these 2 x 2 x 2 maps, say) is active but still zero.
    assert all(layers[name]["nonzeros"] <= count for name, count in EXPECTED_COUNTS[distribution].items())
    assert entry["sparsity"]["achieved"] == pytest.approx(0.5, abs=0.01)


def test_synthetic_run_uses_the_video_recipe_and_scores_every_cell(tmp_path):
    plugins = video_plugins()
    entry = execute(video_config(plugins, tmp_path), plugins, QUIET).to_dict()
    assert entry["training"]["trainer"] == "video" and entry["config"]["lr"] == 0.01
    # cosine from 0.01 over two epochs: half way after the first, zero after the last
    assert [h["lr"] for h in entry["training"]["history"]] == pytest.approx([0.005, 0.0], abs=1e-12)
    assert set(entry["corruptions"]) == {"darken"} and set(entry["corruptions"]["darken"]) == {"1", "2"}
    assert all(0 <= acc <= 100 for acc in [entry["clean_acc"], *entry["corruptions"]["darken"].values()])
    assert validate_file(RunDir(tmp_path / "run").entry) == []


def test_channels_last_video_run_trains(tmp_path):
    plugins = video_plugins()
    entry = execute(video_config(plugins, tmp_path, epochs=1, channels_last="true"), plugins, QUIET)
    assert entry.training.epochs == 1


@pytest.mark.parametrize(("dataset", "model"), [("digits", "clip-cnn"), (SYNTHETIC, "digits-cnn")])
def test_a_model_of_the_other_modality_is_a_user_error(dataset, model):
    with pytest.raises(UserError, match=f"model '{model}' takes (video|image) input but dataset '{dataset}' is"):
        resolve({"dataset": dataset, "model": model, "device": "cpu"}, None, video_plugins().registry)


def test_moving_digits_rigl_run_in_process(tmp_path):
    plugins = video_plugins()
    flags = {"dataset": "moving-digits", "suite": Darken.name, "algo": "rigl", "sparsity": "0.5"}
    small = {"max_train_samples": 96, "max_test_samples": 48, "batch_size": 16, "epochs": 1}
    entry = execute(video_config(plugins, tmp_path, **flags, **small), plugins, QUIET).to_dict()
    assert entry["dataset"] == "moving-digits" and entry["model"] == "clip-cnn"
    assert entry["training"]["train_samples"] == 96 and entry["evaluation"]["test_samples"] == 48
    assert entry["sparsity"]["achieved"] == pytest.approx(0.5, abs=2e-3)
    assert all(map(torch.isfinite, torch.tensor([entry["clean_acc"], entry["training"]["history"][0]["loss"]])))


def dstbench(*args, cwd):
    env = {**os.environ, "DSTBENCH_PLUGINS": ""}
    command = [sys.executable, "-m", "dstbench", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_moving_digits_rigl_run_through_the_cli_with_video_c(tmp_path):
    args = ["--dataset", "moving-digits", "--algo", "rigl", "--sparsity", "0.5", "--suite", "video-c"]
    small = ["--corruptions", "brightness,motion_blur", "--severities", "1,5", "--epochs", "2"]
    sizes = ["--max-train-samples", "96", "--max-test-samples", "32", "--batch-size", "16", "--device", "cpu"]
    result = dstbench("run", *args, *small, *sizes, "--out", tmp_path / "run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    entry = json.loads((tmp_path / "run" / "entry.json").read_text())
    assert (entry["dataset"], entry["model"], entry["suite"]) == ("moving-digits", "clip-cnn", "video-c")
    assert entry["algorithm"]["name"] == "rigl" and entry["training"]["trainer"] == "video"
    assert entry["sparsity"]["target"] == 0.5 and entry["sparsity"]["achieved"] == pytest.approx(0.5, abs=2e-3)
    assert {c: set(row) for c, row in entry["corruptions"].items()} == {
        c: {"1", "5"} for c in ("brightness", "motion_blur")
    }
    metrics = [
        entry["clean_acc"],
        entry["corruptions_acc"],
        entry["rpc"],
        *(h["loss"] for h in entry["training"]["history"]),
    ]
    assert all(map(torch.isfinite, torch.tensor(metrics)))
    # the dataset's recipe (cosine from its lr) over the trainer's; --epochs 2 ends the cosine at zero
    assert entry["config"]["schedule"] == "cosine" and entry["training"]["history"][-1]["lr"] == 0.0
