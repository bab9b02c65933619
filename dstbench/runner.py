"""One run, start to finish: data → model → train → evaluate → entry.json.

Everything that can be wrong with the user's input (names, values, data, checkpoint) is found before the run
directory is created or touched. A run directory holds:
  checkpoint.pt  training state after the last finished epoch (removed once training is done)
  model.pt       the trained model, its masks, config and training record
  entry.json     the leaderboard entry, written last
  .lock          what `RunLock` locks while a process trains or evaluates there
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import torch
from torch.nn.parallel import DistributedDataParallel

from dstbench import checkpoint, sparse
from dstbench.config import RunConfig, resolve_device
from dstbench.corruption import SuiteRequest
from dstbench.data import DataSplits, LoadRequest, TensorImages
from dstbench.distributed import Distributed
from dstbench.entry import (
    AlgorithmInfo,
    CheckpointInfo,
    Entry,
    EnvironmentInfo,
    EvaluationInfo,
    LayerInfo,
    SparsityInfo,
    TrainingInfo,
    read_baseline,
    violations,
)
from dstbench.errors import UserError
from dstbench.evaluate import EvalResult, evaluate
from dstbench.models import Classifier, ModelRequest
from dstbench.report import PlainReporter
from dstbench.train import Run, TrainResult, resolve_precision

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: runs are not locked
    fcntl = None

if TYPE_CHECKING:
    from dstbench.corruption import CorruptionSuite
    from dstbench.data import ImageData
    from dstbench.plugins import Plugins
    from dstbench.report import Reporter

DEVICE_MEMORY_FRACTION = 0.5  # a split goes to the GPU when it takes at most this share of the free memory
SUBSET_SEED = 0  # --max-*-samples subsets are the same for every run seed


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pt"

    @property
    def model(self) -> Path:
        return self.path / "model.pt"

    @property
    def entry(self) -> Path:
        return self.path / "entry.json"

    def has_run(self) -> bool:
        return any(p.exists() for p in (self.checkpoint, self.model, self.entry))


def run_dir_of(cfg: RunConfig) -> RunDir:
    return RunDir(Path(cfg.out) if cfg.out else Path("runs") / cfg.run_id)


def saved_settings(run_dir: RunDir) -> dict[str, Any]:
    """The settings of the run in `run_dir` (its model file's, else its checkpoint's), less how it was started: what
    `dstbench run --out DIR --resume` continues with where the command line and --config say nothing."""
    path = run_dir.model if run_dir.model.exists() else run_dir.checkpoint
    if not path.exists():
        return {}
    loaded = checkpoint.load_model(path) if path == run_dir.model else checkpoint.load_state(path)
    return {key: value for key, value in loaded["config"].items() if key not in ("out", "resume", "quiet")}


def cache_dir() -> Path:
    from dstbench.data.sources import default_data_root

    return default_data_root() / ".cache"


def load_data(cfg: RunConfig, plugins: Plugins, reporter: Reporter, device: torch.device) -> DataSplits:
    spec = plugins.registry.dataset(cfg.dataset)
    request = LoadRequest(
        Path(cfg.data_dir).expanduser() if cfg.data_dir else None,
        cfg.download,
        cache_dir(),
        reporter,
        split=cfg.split,
        frames=cfg.frames,
        frame_stride=cfg.frame_stride,
        skip_bad=cfg.skip_bad,
        clip_cache_gib=cfg.clip_cache_gib,
    )
    splits = spec.load(request)
    train, test = splits.train, splits.test
    if cfg.max_train_samples and cfg.max_train_samples < len(train):
        train = train.subset(_subset(len(train), cfg.max_train_samples))
    if cfg.max_test_samples and cfg.max_test_samples < len(test):
        test = test.subset(_subset(len(test), cfg.max_test_samples))
    for split in (train, test):
        if hasattr(split, "workers"):
            split.workers = cfg.workers
    return DataSplits(place_on_device(train, device), place_on_device(test, device), splits.classes)


def _subset(n: int, k: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))[:k].sort().values


def place_on_device(data: ImageData, device: torch.device) -> ImageData:
    """Move a tensor split onto the GPU when it fits; otherwise batches are copied from pinned host memory."""
    if not isinstance(data, TensorImages) or device.type != "cuda":
        return data
    free, _ = torch.cuda.mem_get_info(device)
    return data.to(device) if data.images.nbytes <= DEVICE_MEMORY_FRACTION * free else data


def build_model(cfg: RunConfig, plugins: Plugins, device: torch.device, channels_last: bool) -> torch.nn.Module:
    registry = plugins.registry
    dataset = registry.dataset(cfg.dataset)
    spec, variant = registry.model(cfg.model)
    torch.manual_seed(cfg.seed)
    net = spec.build(ModelRequest(dataset.num_classes, dataset.channels, dataset.image_size, variant, cfg.frames))
    model = Classifier(net, dataset.mean, dataset.std).to(device)
    memory_format = torch.channels_last_3d if dataset.modality == "video" else torch.channels_last
    return model.to(memory_format=memory_format) if channels_last else model


def use_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.channels_last if cfg.channels_last is not None else device.type == "cuda"


class RunLock:
    """An exclusive lock on a run folder, so that two processes never train or evaluate in one: a second
    `dstbench run --out DIR` (or --resume) is refused while the first holds it. The lock is the operating system's
    (flock), so a process that dies leaves none behind."""

    NAME = ".lock"

    def __init__(self, folder: Path):
        self.folder = folder
        self.file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock (creating the folder) unless held; a UserError when another process holds it."""
        if self.file is not None or fcntl is None:  # fcntl: POSIX only
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        file = (self.folder / self.NAME).open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            file.seek(0)
            holder = file.read().strip() or "unknown"
            file.close()
            raise UserError(
                f"{self.folder} is in use by another dstbench process (pid {holder}); wait for it to finish, or "
                "choose another --out"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(f"{os.getpid()}\n")
        file.flush()
        self.file = file

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing drops the flock
            self.file = None


def _lock(
    lock: RunLock, dist: Distributed, device: torch.device, take: bool = True, fresh: RunDir | None = None
) -> None:
    """Rank 0 takes the run folder's lock (if `take`, as rank 0 sees it), and refuses a `fresh` run's folder that
    another process has put a run in since it was looked at; under torch.distributed every process then raises when
    rank 0 could not, so that none trains on alone. Every process must call this at the same point."""
    refused = None
    if dist.is_main and take:
        try:
            lock.acquire()
            if fresh is not None and fresh.has_run():
                raise UserError(f"{fresh.path} already holds a run: another process started one there meanwhile")
        except UserError as exc:
            refused = exc
    if dist.enabled and int(dist.sum(torch.tensor([refused is not None], dtype=torch.int32, device=device))):
        raise refused or UserError(f"{lock.folder} is in use by another dstbench process")
    if refused:
        raise refused


def execute(cfg: RunConfig, plugins: Plugins, reporter: Reporter) -> Entry | None:
    """Train (or resume), evaluate and write the entry. Under torch.distributed every process trains, and rank 0
    evaluates and returns the entry; the others return None. The run folder is locked (`RunLock`) from when it
    exists (at once on a resume, else when training starts) to the end."""
    lock = RunLock(run_dir_of(cfg).path)
    try:
        return _execute(cfg, plugins, reporter, lock)
    except BaseException:
        Distributed.from_env().abandon()
        raise
    finally:
        lock.release()


def _execute(cfg: RunConfig, plugins: Plugins, reporter: Reporter, lock: RunLock) -> Entry | None:
    registry = plugins.registry
    run_dir = run_dir_of(cfg)
    dist = Distributed.from_env()
    if dist.enabled and cfg.batch_size % dist.world_size:
        raise UserError(f"--batch-size {cfg.batch_size} does not split over {dist.world_size} processes")
    device = dist.device(resolve_device(cfg.device))
    dist.init(device)
    _lock(lock, dist, device, run_dir.path.is_dir())  # before looking at what the folder holds
    if cfg.resume and not run_dir.has_run():
        raise UserError(f"nothing to resume in {run_dir.path}: it holds no checkpoint.pt, model.pt or entry.json")
    if not cfg.resume and run_dir.has_run():
        raise UserError(f"{run_dir.path} already holds a run; pass --resume to continue it, or choose another --out")
    if cfg.resume and run_dir.entry.exists():
        raise UserError(f"the run in {run_dir.path} is complete; its results are in {run_dir.entry}")
    reporter = reporter if dist.is_main else PlainReporter(quiet=True, warnings=False)
    channels_last = use_channels_last(cfg, device)
    finished = checkpoint.load_model(run_dir.model, cfg) if cfg.resume and run_dir.model.exists() else None
    state = checkpoint.load_training(run_dir.checkpoint, cfg) if cfg.resume and not finished else None

    data = load_data(cfg, plugins, reporter, device)
    suite = prepare_suite(cfg, plugins, data, reporter)
    model = build_model(cfg, plugins, device, channels_last)
    algorithm = registry.algorithm(cfg.algo).from_config(cfg)
    trainer = registry.trainer(cfg.trainer)()
    optimizer = trainer.build_optimizer(cfg, model)
    steps_per_epoch = data.train.num_batches(cfg.batch_size, train=True, processes=dist.world_size)
    if steps_per_epoch == 0:
        raise UserError(f"the training set has {len(data.train)} samples, too few for one batch of {cfg.batch_size}")
    run = Run(
        config=cfg,
        model=model,
        optimizer=optimizer,
        scheduler=trainer.build_scheduler(cfg, optimizer, steps_per_epoch),
        algorithm=algorithm,
        train_data=data.train,
        device=device,
        hooks=plugins,
        reporter=reporter,
        generator=torch.Generator().manual_seed(cfg.seed),
        channels_last=channels_last,
        checkpoint_path=run_dir.checkpoint,
        dist=dist,
        train_model=DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if dist.enabled
        else None,
    )
    if finished:
        checkpoint.load_weights(model, finished["model"], run_dir.model)
        result = checkpoint.training_record(finished, run_dir.model)
        reporter.info(f"training already finished; evaluating {run_dir.model}")
        if dist.is_main:  # a process stopped between writing model.pt and removing the checkpoint
            run_dir.checkpoint.unlink(missing_ok=True)
    else:
        if state:
            checkpoint.restore_training(run, state)
            reporter.info(f"resuming {run_dir.path} after epoch {run.epoch}/{cfg.epochs}")
        algorithm.setup(run, state["algorithm"] if state else None)
        run_dir.path.mkdir(parents=True, exist_ok=True)
        _lock(lock, dist, device, fresh=None if cfg.resume else run_dir)
        plugins.register(algorithm, name=f"algorithm:{cfg.algo}")
        try:
            result = trainer.fit(run)
        finally:
            plugins.unregister(algorithm)
        if dist.is_main:
            checkpoint.save_model(run_dir.model, cfg, model, algorithm.state_dict(), {"training": result.to_dict()})
            run_dir.checkpoint.unlink(missing_ok=True)
    evaluation = evaluate_model(cfg, suite, model, data.test, device, channels_last, reporter, dist)
    entry = None
    if dist.is_main:
        entry = make_entry(cfg, plugins, model, algorithm, result, evaluation, run_dir.model, device, run)
        write_entry(run_dir.entry, entry)
    dist.shutdown()
    return entry


def prepare_suite(cfg: RunConfig, plugins: Plugins, data: DataSplits, reporter: Reporter) -> CorruptionSuite:
    """The run's suite, prepared for its test split: a suite that reads released files finds and checks them
    here, so a problem with them shows before training starts."""
    suite = plugins.registry.suite(cfg.suite)
    corruptions, severities = suite.select(cfg.corruptions, cfg.severities)
    request = SuiteRequest(
        dataset=cfg.dataset,
        test_labels=data.test.labels.cpu(),
        test_ids=data.test.ids.cpu(),
        c_dir=Path(cfg.c_dir).expanduser() if cfg.c_dir else None,
        download=cfg.download,
        reporter=reporter,
        corruptions=corruptions,
        severities=severities,
        classes=data.classes,
        video_fps=data.video_fps,
        frame_stride=data.frame_stride,
    )
    return suite.prepare(request)


@dataclass(frozen=True)
class Evaluation:
    """The grid of a run's model, and its metrics relative to --baseline (None without one)."""

    result: EvalResult
    mce: float | None = None
    relative_mce: float | None = None


def evaluate_model(
    cfg: RunConfig,
    suite: CorruptionSuite,
    model: torch.nn.Module,
    test: ImageData,
    device: torch.device,
    channels_last: bool,
    reporter: Reporter,
    dist: Distributed | None = None,
) -> Evaluation:
    """The prepared suite's grid on the test split, and mCE and relative mCE against --baseline when one is given;
    a warning names the corruptions that leave the relative mCE undefined."""
    corruptions, severities = suite.select(cfg.corruptions, cfg.severities)
    result = evaluate(
        model,
        test,
        suite,
        corruptions,
        severities,
        device=device,
        batch_size=cfg.eval_batch_size,
        seed=cfg.corruption_seed,
        bf16=resolve_precision(cfg.precision, device) == "bf16",
        channels_last=channels_last,
        reporter=reporter,
        dist=dist,
    )
    if not cfg.baseline:
        return Evaluation(result)
    baseline = EvalResult.of_entry(read_baseline(cfg.baseline))
    mce = result.mce(baseline.corruption_acc)
    relative = result.relative_mce(baseline)
    if relative is None:
        unhurt = [corruption for corruption, ce in result.relative_ces(baseline).items() if ce is None]
        reporter.warn(f"no relative mCE: the baseline's accuracy does not drop under {', '.join(unhurt)}")
    return Evaluation(result, mce, relative)


@dataclass
class Reevaluated:
    """A saved model evaluated again: the config it ran with, the model, and what `evaluate_model` returned."""

    cfg: RunConfig
    model: torch.nn.Module
    device: torch.device
    evaluation: Evaluation
    test_samples: int
    reporter: Reporter


def saved_config(saved: dict, overrides: dict, plugins: Plugins) -> RunConfig:
    """The config of a model file's run (`checkpoint.load_model`) with `overrides` on top (another suite, device,
    ...), to evaluate it again: not resuming, and quiet only when the overrides say so."""
    from dstbench.config import resolve

    return resolve(
        {**saved["config"], "out": None, "resume": False, "quiet": False, **overrides}, None, plugins.registry
    )


def saved_model(saved: dict, cfg: RunConfig, plugins: Plugins) -> tuple[torch.nn.Module, torch.device, bool]:
    """A model file's model on `cfg`'s device, and whether it runs channels-last there."""
    device = resolve_device(cfg.device)
    channels_last = use_channels_last(cfg, device)
    model = build_model(cfg, plugins, device, channels_last)
    checkpoint.load_weights(model, saved["model"], f"the model file of {cfg.model}")
    return model, device, channels_last


def reevaluate(saved: dict, overrides: dict, plugins: Plugins) -> Reevaluated:
    """Evaluate a model file's contents with its own config, `overrides` on top (`saved_config`); what
    `dstbench eval` and the leaderboard's checks do."""
    from dstbench.report import make_reporter

    cfg = saved_config(saved, overrides, plugins)
    reporter = make_reporter(cfg.quiet)
    model, device, channels_last = saved_model(saved, cfg, plugins)
    data = load_data(cfg, plugins, reporter, device)
    suite = prepare_suite(cfg, plugins, data, reporter)
    evaluation = evaluate_model(cfg, suite, model, data.test, device, channels_last, reporter)
    return Reevaluated(cfg, model, device, evaluation, len(data.test), reporter)


def make_entry(
    cfg: RunConfig,
    plugins: Plugins,
    model: torch.nn.Module,
    algorithm,
    result: TrainResult,
    evaluation: Evaluation,
    model_path: Path,
    device: torch.device,
    run: Run | None,
) -> Entry:
    registry = plugins.registry
    grid = evaluation.result
    algo_reg = registry.entries["algorithm"][cfg.algo]
    layers = sparse.measure(model)
    suite = registry.suite(cfg.suite)
    corruptions, severities = suite.select(cfg.corruptions, cfg.severities)
    entry = Entry(
        run_id=cfg.run_id,
        dataset=cfg.dataset,
        model=cfg.model,
        suite=cfg.suite,
        seed=cfg.seed,
        algorithm=AlgorithmInfo(cfg.algo, algorithm.params(), algo_reg.plugin, algo_reg.version),
        sparsity=SparsityInfo(
            target=cfg.sparsity,
            achieved=sparse.achieved_sparsity(layers),
            distribution=algorithm.distribution,
            layers=[LayerInfo(l.name, list(l.shape), l.nonzeros, l.numel, l.density) for l in layers],
        ),
        clean_acc=grid.clean_acc,
        corruptions_acc=grid.mpc,
        rpc=grid.rpc,
        corruptions_mce=evaluation.mce,
        corruptions_relative_mce=evaluation.relative_mce,
        corruptions={c: {str(s): acc for s, acc in row.items()} for c, row in grid.corruption_acc.items()},
        evaluation=EvaluationInfo(
            cfg.suite, list(corruptions), list(severities), cfg.corruption_seed, grid.num_samples, cfg.baseline
        ),
        training=TrainingInfo(
            trainer=cfg.trainer,
            epochs=result.epochs,
            steps=result.steps,
            batch_size=cfg.batch_size,
            train_samples=result.train_samples,
            wall_time_s=result.wall_time_s,
            images_per_s=result.images_per_s,
            device=_device_name(device),
            precision=resolve_precision(cfg.precision, device),
            history=[vars(s) for s in result.history],
        ),
        environment=EnvironmentInfo.current(),
        checkpoint=CheckpointInfo(model_path.name, checkpoint.sha256(model_path)),
        config=cfg.to_dict(),
    )
    entry.extensions = plugins.entry_fields(entry, run)
    return entry


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_entry(path: Path, entry: Entry) -> None:
    data = entry.to_dict()
    problems = violations(data)
    if problems:  # a bug in dstbench or a plugin, not the user's input
        raise RuntimeError(f"the entry dstbench built breaks its own schema: {'; '.join(problems[:5])}")
    checkpoint.write_json(path, data)
