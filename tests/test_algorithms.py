"""Sparse training algorithms in real (small) runs, audited after every optimizer step."""

import pytest
import torch
from conftest import StopAfter, WarningsReporter, run_config
from torch import nn

from dstbench.errors import UserError
from dstbench.hookspecs import hookimpl
from dstbench.models import ModelSpec
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import RunDir, execute

QUIET = PlainReporter(quiet=True)
FAST = {"max_train_samples": 256, "max_test_samples": 50, "severities": "5", "epochs": 2, "batch_size": 32}
UPDATES = {  # options that make updates frequent in a 16-step run
    "static": [],
    "set": ["update_interval=3"],
    "rigl": ["update_interval=3"],
    "mest": ["update_every_epochs=0.25"],
    "mest-g": ["update_every_epochs=0.25"],
}


class Auditor:
    """After the algorithm's own step hook: masks match the counts, weights vanish outside the masks (and so does
    momentum, right after an update), and weights that just became active are zero with zero momentum."""

    def __init__(self):
        self.previous = None
        self.update_steps = []
        self.count_history = []

    @hookimpl(trylast=True)
    def on_run_start(self, run):
        self.previous = {n: m.clone() for n, m in run.algorithm.masks.masks.items()}
        self._check(run)

    @hookimpl(trylast=True)
    def on_step_end(self, run):
        algorithm = run.algorithm
        updated = algorithm.updates_at(run)
        if updated:
            self.update_steps.append(run.step)
        self._check(run, momentum=updated)
        state = run.optimizer.state
        for name, mask in algorithm.masks.masks.items():
            grown = mask & ~self.previous[name]
            weight = algorithm.masks.weights[name]
            assert torch.all(weight[grown] == 0), f"{name}: grown weights are not zero at step {run.step}"
            assert torch.all(state[weight]["momentum_buffer"][grown] == 0), f"{name}: momentum leaked"
        self.previous = {n: m.clone() for n, m in algorithm.masks.masks.items()}

    def _check(self, run, momentum=True):
        algorithm = run.algorithm
        assert algorithm.masks.counts() == algorithm.counts
        self.count_history.append(dict(algorithm.counts))
        for name, mask in algorithm.masks.masks.items():
            weight = algorithm.masks.weights[name]
            assert torch.all(weight[~mask] == 0)
            buffer = run.optimizer.state.get(weight, {}).get("momentum_buffer")
            if momentum and buffer is not None:
                assert torch.all(buffer[~mask] == 0)


def _run(tmp_path, algo, *, auditor=None, extra=None, **flags):
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""}, extra={"auditor": auditor} if auditor else extra)
    options = tuple(UPDATES[algo]) + tuple(flags.pop("algo_options", ()))
    cfg = run_config(plugins, tmp_path, algo=algo, algo_options=options, **{**FAST, **flags})
    return execute(cfg, plugins, QUIET), cfg


def _saved_masks(cfg):
    return torch.load(RunDir(tmp_dir(cfg)).model, weights_only=True)["algorithm"]["masks"]


def tmp_dir(cfg):
    from pathlib import Path

    return Path(cfg.out)


@pytest.mark.parametrize("distribution", ["erk", "er", "uniform"])
@pytest.mark.parametrize("algo", ["static", "set", "rigl", "mest", "mest-g"])
def test_exact_counts_at_init_and_after_every_update(tmp_path, algo, distribution):
    auditor = Auditor()
    entry, cfg = _run(tmp_path, algo, auditor=auditor, sparsity=0.5, distribution=distribution)
    targets = auditor.count_history[0]
    if algo in ("static", "set", "rigl"):
        assert all(counts == targets for counts in auditor.count_history)
        assert auditor.update_steps == ([] if algo == "static" else [3, 6, 9, 12])  # T_end = 0.75 · 16 = 12
    total = sum(layer.numel for layer in entry.sparsity.layers)
    assert sum(targets.values()) + sum(
        layer.numel for layer in entry.sparsity.layers if layer.name not in targets
    ) == round(0.5 * total)
    assert entry.sparsity.distribution == distribution
    masks = _saved_masks(cfg)
    assert {n: int(m.sum()) for n, m in masks.items()} == auditor.count_history[-1]


def test_mest_soft_bound_grows_past_the_target_and_prunes_back(tmp_path):
    auditor = Auditor()
    entry, _ = _run(tmp_path, "mest", auditor=auditor, sparsity=0.5, algo_options=("first_decay=0.5", "stop=0.75"))
    targets = auditor.count_history[0]
    sizes = {layer.name: layer.numel for layer in entry.sparsity.layers}
    above = [sum(c.values()) - sum(targets.values()) for c in auditor.count_history]
    # between mutations each layer holds 10% of its target more (a layer at density 1 has no room to grow)
    assert max(above) == sum(min(int(0.1 * t), sizes[n] - t) for n, t in targets.items()) > 0
    assert 0 < min(a for a in above if a > 0) < max(above)  # the mutation ratio halved at first_decay
    assert above[-1] == 0  # the mutation ratio reached 0 and the final model is on target


def test_mest_without_soft_bound_stays_on_target(tmp_path):
    auditor = Auditor()
    _run(tmp_path, "mest", auditor=auditor, sparsity=0.5, algo_options=("soft_bound=false",))
    assert all(counts == auditor.count_history[0] for counts in auditor.count_history)


@pytest.mark.parametrize("algo", ["set", "rigl"])
def test_masks_change_and_sign_split_set_runs(tmp_path, algo):
    auditor = Auditor()
    options = ("sign_split=true",) if algo == "set" else ()
    _run(tmp_path, algo, auditor=auditor, sparsity=0.5, algo_options=options)
    assert auditor.update_steps


def test_dense_first_keeps_the_first_layer_dense_and_total_on_target(tmp_path):
    entry, cfg = _run(tmp_path, "rigl", sparsity=0.5, algo_options=("dense_first=true",))
    first = entry.sparsity.layers[0]
    assert first.nonzeros == first.numel
    assert first.name not in _saved_masks(cfg)
    assert entry.sparsity.achieved == pytest.approx(0.5, abs=0.002)


class GrownValues:
    """The values of the weights each update made active."""

    def __init__(self):
        self.previous, self.grown_values = None, []

    @hookimpl(trylast=True)
    def on_step_end(self, run):
        masks = run.algorithm.masks
        if self.previous is not None and run.algorithm.updates_at(run):
            for name, mask in masks.masks.items():
                self.grown_values.append(masks.weights[name][mask & ~self.previous[name]].detach())
        self.previous = {n: m.clone() for n, m in masks.masks.items()}


@pytest.mark.parametrize("channels_last", [False, True])  # masks index weights in logical order, whatever the layout
def test_grow_init_normal_gives_grown_weights_nonzero_values(tmp_path, channels_last):
    recorder = GrownValues()
    options = ("grow_init=normal",)
    entry, _ = _run(
        tmp_path, "rigl", extra={"grown": recorder}, sparsity=0.5, channels_last=channels_last, algo_options=options
    )
    grown = torch.cat(recorder.grown_values)
    assert len(grown) > 100 and (grown != 0).all() and 0 < grown.std() < 1
    assert entry.sparsity.achieved == pytest.approx(0.5, abs=0.002)


def test_mest_reports_its_final_prune_back_to_later_plugins(tmp_path):
    """updates_at asked after the last step's update (as the Auditor does) still says it updated."""
    auditor = Auditor()
    _run(tmp_path, "mest", auditor=auditor, sparsity=0.5, algo_options=("update_every_epochs=0.375", "stop=1"))
    assert auditor.update_steps[-2:] == [15, 16]  # 16 steps, mutations every 3: the last update is the prune-back
    assert auditor.count_history[-1] == auditor.count_history[0]  # back on target


@pytest.mark.parametrize("algo", ["rigl", "mest"])
def test_same_seed_same_masks_other_seed_other_masks(tmp_path, algo):
    a_entry, a = _run(tmp_path / "a", algo, sparsity=0.5)
    b_entry, b = _run(tmp_path / "b", algo, sparsity=0.5)
    c_entry, c = _run(tmp_path / "c", algo, sparsity=0.5, seed=1)
    masks_a, masks_b, masks_c = _saved_masks(a), _saved_masks(b), _saved_masks(c)
    assert all(torch.equal(masks_a[n], masks_b[n]) for n in masks_a)
    assert a_entry.clean_acc == b_entry.clean_acc and a_entry.corruptions == b_entry.corruptions
    assert any(not torch.equal(masks_a[n], masks_c[n]) for n in masks_a)


@pytest.mark.parametrize("algo", ["rigl", "mest", "set"])
def test_resume_mid_run_gives_the_same_masks_and_metrics(tmp_path, algo):
    full, full_cfg = _run(tmp_path / "full", algo, sparsity=0.5, epochs=3)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "cut", algo, extra={"stop": StopAfter(2)}, sparsity=0.5, epochs=3)
    resumed, cut_cfg = _run(tmp_path / "cut", algo, sparsity=0.5, epochs=3, resume="true")
    full_masks, resumed_masks = _saved_masks(full_cfg), _saved_masks(cut_cfg)
    assert all(torch.equal(full_masks[n], resumed_masks[n]) for n in full_masks)
    assert resumed.clean_acc == full.clean_acc and resumed.corruptions == full.corruptions


class NothingSparsifiable:
    class Pool(nn.Module):
        def __init__(self, classes):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(classes))

        def forward(self, x):
            return x.mean(dim=(1, 2, 3))[:, None] * self.scale

    @hookimpl
    def register_models(self, register):
        register(ModelSpec("pool-only", lambda r: self.Pool(r.num_classes), "no conv or linear"))


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"sparsity": 0.99, "algo_options": ("dense_first=true", "dense_last=true")}, "cannot be met"),
        ({"sparsity": 0.5, "distribution": "random"}, "unknown distribution 'random'"),
        ({"sparsity": 0.5, "algo_options": ("update_interval=often",)}, "option 'update_interval': 'often'"),
        ({"sparsity": 0.5, "algo_options": ("drop_fraction=1.5",)}, "drop_fraction must be in (0, 1)"),
        ({"sparsity": 0.5, "algo_options": ("grow_init=ones",)}, "grow_init must be one of zero, normal"),
        ({"sparsity": 0.5, "algo_options": ("erk_power_scale=inf",)}, "'erk_power_scale' must be a finite number"),
        ({"sparsity": 0.5, "algo_options": ("erk_power_scale=nan",)}, "'erk_power_scale' must be a finite number"),
        ({"sparsity": 0.5, "algo_options": ("erk_power_scale=200",)}, "erk_power_scale must be in (0, 10], got 200"),
        ({"sparsity": 0.5, "algo_options": ("update_interval=9007199254740992",)}, "option 'update_interval' must be"),
        ({"sparsity": 0.5, "algo_options": ("drop_rate=0.3",)}, "has no option 'drop_rate'; its options:"),
        ({"sparsity": 1.0}, "--sparsity must be in [0, 1)"),
        ({"sparsity": 0.0}, "trains sparse weights: --sparsity must be in (0, 1); for 0 use --algo dense"),
        ({"sparsity": 0.9999}, "layer net.0.weight would keep none of its 432 weights; lower the sparsity"),
    ],
)
def test_bad_sparse_settings_are_one_line_errors_and_write_nothing(tmp_path, flags, message):
    with pytest.raises(UserError) as info:
        _run(tmp_path, "rigl", **flags)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("algo, option", [("rigl", "update_interval=100"), ("mest", "update_every_epochs=5")])
def test_a_run_too_short_for_any_mask_update_says_so(tmp_path, algo, option):
    reporter = WarningsReporter()
    plugins = Plugins.load(env={"DSTBENCH_PLUGINS": ""})
    cfg = run_config(plugins, tmp_path, algo=algo, sparsity=0.5, algo_options=(option,), **FAST)
    execute(cfg, plugins, reporter)
    assert [w for w in reporter.warnings if "will not change its masks" in w and "of 16" in w]


def test_a_model_with_nothing_sparsifiable_is_refused(tmp_path):
    with pytest.raises(UserError, match="no conv or linear weights"):
        _run(tmp_path, "rigl", extra={"pool": NothingSparsifiable()}, sparsity=0.5, model="pool-only")
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_with_masks_of_another_shape_is_refused(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "rigl", extra={"stop": StopAfter(2)}, sparsity=0.5, epochs=3)
    path = RunDir(tmp_path / "run").checkpoint
    state = torch.load(path, weights_only=True)
    name = next(iter(state["algorithm"]["masks"]))
    state["algorithm"]["masks"][name] = state["algorithm"]["masks"][name][:1]
    torch.save(state, path)
    with pytest.raises(UserError, match=f"saved mask of {name}"):
        _run(tmp_path, "rigl", sparsity=0.5, epochs=3, resume="true")
