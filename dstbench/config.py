"""The settings of one run: defaults < trainer recipe < dataset recipe < TOML file < command-line flags.

`RunConfig`'s fields are the single source of truth: the `dstbench run` flags and the TOML keys are both made
from them, and `resolve` validates every value once, with errors that say what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from dstbench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")
PRECISIONS = ("auto", "fp32", "bf16")

MAX_INTEGER = 2**53  # beyond it JSON readers (JavaScript's among them) lose digits

# What a field is for. Only "train" fields must match when a checkpoint is resumed.
TRAIN, EVAL, RUNTIME = "train", "eval", "runtime"


def _opt(default: Any, help: str, role: str = TRAIN, metavar: str | None = None) -> Any:
    factory = {"default_factory": lambda: dict(default)} if isinstance(default, dict) else {"default": default}
    return field(**factory, metadata={"help": help, "role": role, "metavar": metavar})


@dataclass(frozen=True)
class RunConfig:
    dataset: str = _opt("digits", "Dataset name (see `dstbench list`).", metavar="NAME")
    model: str | None = _opt(None, "Model name; default: the dataset's recipe.", metavar="NAME")
    algo: str = _opt("dense", "Sparsity algorithm (see `dstbench list`).", metavar="NAME")
    sparsity: float | None = _opt(None, "Fraction of sparsifiable weights that are zero, in [0, 1).", metavar="S")
    distribution: str | None = _opt(
        None, "Layer-wise sparsity distribution; default: the algorithm's (dense runs have none).", metavar="D"
    )
    algo_options: dict = _opt({}, "Algorithm option, repeatable: --algo-opt drop_fraction=0.3.", metavar="KEY=VALUE")
    trainer: str | None = _opt(None, "Training recipe; default: the dataset modality's trainer.", metavar="NAME")
    data_dir: str | None = _opt(None, "Where the dataset is; 'hf:<name>' for a Hugging Face dataset.", RUNTIME, "DIR")
    download: bool = _opt(
        False, "Allow downloading the dataset, or a released corrupted set (--suite ...-files), if not found.", RUNTIME
    )
    split: int = _opt(1, "Official train/test split of UCF101 or HMDB51: 1, 2 or 3.", metavar="N")
    frames: int | None = _opt(None, "Frames per video clip; default: the dataset's recipe.", metavar="T")
    frame_stride: int | None = _opt(None, "Take every n-th frame of a video when sampling a clip.", metavar="N")
    skip_bad: bool = _opt(False, "Skip unreadable videos (and report how many) instead of stopping.", RUNTIME)
    clip_cache_gib: float | None = _opt(
        None,
        "Memory for decoded video clips, GiB; default: a quarter of RAM, at most 8. A video set that fits is decoded "
        "once and cached (2 to 4 clips per training video), a larger one streams.",
        metavar="GIB",
    )
    max_train_samples: int | None = _opt(None, "Train on a seeded subset of this many samples.", metavar="N")
    max_test_samples: int | None = _opt(None, "Evaluate on a seeded subset of this many samples.", EVAL, "N")
    workers: int = _opt(min(8, os.cpu_count() or 1), "Decode workers for data that streams from disk.", RUNTIME, "N")
    epochs: int = _opt(10, "Training epochs; default: the dataset's recipe.", metavar="N")
    batch_size: int = _opt(128, "Training batch size; default: the dataset's recipe.", metavar="N")
    lr: float = _opt(0.1, "Peak learning rate; default: the dataset's recipe.", metavar="LR")
    optimizer: str = _opt("sgd", f"One of {', '.join(OPTIMIZERS)}.", metavar="NAME")
    momentum: float = _opt(0.9, "SGD momentum.", metavar="M")
    nesterov: bool = _opt(False, "SGD: Nesterov momentum.")
    weight_decay: float = _opt(5e-4, "Weight decay.", metavar="WD")
    schedule: str = _opt("cosine", f"Learning-rate schedule: {', '.join(SCHEDULES)}.", metavar="NAME")
    milestones: tuple[float, ...] = _opt(
        (0.5, 0.75), "Multistep: fractions of training where the LR drops.", metavar="F,F"
    )
    gamma: float = _opt(0.1, "Multistep: factor of each LR drop.", metavar="G")
    warmup_epochs: int = _opt(0, "Linear learning-rate warm-up epochs.", metavar="N")
    label_smoothing: float = _opt(0.0, "Label smoothing in [0, 1).", metavar="E")
    seed: int = _opt(0, "Seed of initialisation, data order, augmentation and masks.", metavar="N")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N.", RUNTIME, "DEV")
    precision: str = _opt(
        "auto",
        "auto (bf16 autocast on GPUs that compute it natively, Ampere and later; else fp32), fp32 or bf16.",
        metavar="P",
    )
    channels_last: bool | None = _opt(None, "Channels-last memory format; default: on for CUDA.", RUNTIME)
    suite: str | None = _opt(None, "Corruption suite; default: the dataset's.", EVAL, "NAME")
    corruptions: tuple[str, ...] | None = _opt(
        None, "Corruptions or subsets to evaluate, comma-separated.", EVAL, "C,C"
    )
    severities: tuple[int, ...] | None = _opt(None, "Severities to evaluate: '1,3,5' or '1-5'.", EVAL, "S")
    corruption_seed: int = _opt(0, "Seed of the corruptions (the same for every model).", EVAL, "N")
    c_dir: str | None = _opt(
        None, "Released corrupted test sets, for suites that read files (e.g. CIFAR-10-C).", EVAL, "DIR"
    )
    eval_batch_size: int = _opt(500, "Evaluation batch size.", RUNTIME, "N")
    baseline: str | None = _opt(None, "A baseline entry.json; adds mCE and relative mCE against it.", EVAL, "FILE")
    out: str | None = _opt(None, "Run directory; default: runs/<run id>.", RUNTIME, "DIR")
    resume: bool = _opt(False, "Continue the run in --out from its last checkpoint, with its settings.", RUNTIME)
    quiet: bool = _opt(False, "No progress output, only warnings and results.", RUNTIME)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}

    def role_dict(self, role: str) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.metadata["role"] == role}

    @property
    def run_id(self) -> str:
        sparsity = f"-s{self.sparsity:g}" if self.sparsity else ""
        return f"{self.dataset}-{self.model}-{self.algo}{sparsity}-seed{self.seed}"


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


FIELDS = {f.name: f for f in fields(RunConfig)}


# --- parsing of single values (flags arrive as strings, TOML values typed) -------------------------------------


def split_list(text: str) -> list[str]:
    """The items of a comma-separated list; a trailing comma is allowed ('7,' is a list of one), an empty item
    between commas is a ValueError."""
    parts = [part.strip() for part in text.split(",")]
    if parts and not parts[-1]:
        parts.pop()
    if "" in parts:
        raise ValueError(f"'{text}' has an empty item between commas")
    return parts


def _split(value: Any) -> list:
    if isinstance(value, str):
        return split_list(value)
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ValueError("expected a list or a comma-separated string")


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    raise ValueError("expected true or false")


def parse_number(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool) or (kind is int and isinstance(value, float)):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}")
        return kind(value)

    return parse


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value


def _severities(value: Any) -> tuple[int, ...]:
    from dstbench.corruption import parse_severities

    if isinstance(value, str):
        return parse_severities(value)
    return tuple(parse_number(int)(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def _options(value: Any) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    pairs = {}
    for item in [value] if isinstance(value, str) else value:
        key, sep, raw = str(item).partition("=")
        if not sep or not key.strip():
            raise ValueError(f"'{item}' is not KEY=VALUE")
        pairs[key.strip()] = raw.strip()
    return pairs


PARSERS: dict[str, Callable[[Any], Any]] = {
    "sparsity": parse_number(float),
    "clip_cache_gib": parse_number(float),
    "algo_options": _options,
    "download": parse_bool,
    "skip_bad": parse_bool,
    "nesterov": parse_bool,
    "channels_last": parse_bool,
    "resume": parse_bool,
    "quiet": parse_bool,
    "milestones": lambda v: tuple(sorted(parse_number(float)(x) for x in _split(v))),
    "corruptions": lambda v: tuple(_string(x) for x in _split(v)),
    "severities": _severities,
    **{
        name: parse_number(int)
        for name in (
            "max_train_samples",
            "max_test_samples",
            "split",
            "frames",
            "frame_stride",
            "workers",
            "epochs",
            "batch_size",
            "warmup_epochs",
            "seed",
            "corruption_seed",
            "eval_batch_size",
        )
    },
    **{name: parse_number(float) for name in ("lr", "momentum", "weight_decay", "gamma", "label_smoothing")},
}


def parse_values(values: Mapping[str, Any], origin: str) -> dict[str, Any]:
    """Typed values from flags or a TOML table; None means 'not given'. `origin` names the source in errors."""
    parsed = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise UserError(f"{origin}: unknown setting '{key}'; valid settings: {', '.join(FIELDS)}")
        if value is None:
            continue
        try:
            parsed[name] = PARSERS.get(name, _string)(value)
        except (TypeError, ValueError) as exc:
            shown = "" if isinstance(value, (list, tuple)) else f" {value!r}"  # the error names the bad item
            raise UserError(f"{origin}: bad value for '{key}':{shown} ({exc})") from None
    return parsed


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:  # TOML files are UTF-8
        raise UserError(f"cannot read config file {path}: {exc}") from None
    # Settings may sit at the top level or in a [run] table; [algo_options] is its own table.
    table = data.pop("run", {})
    if not isinstance(table, dict):
        raise UserError(f"config file {path}: 'run' must be a table of settings ([run]), got {table!r}")
    return parse_values({**table, **data}, str(path))


# --- validation ------------------------------------------------------------------------------------------------


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise UserError(message)


FLOAT32_MAX = 3.4028234663852886e38


def validate(cfg: RunConfig) -> None:
    """Range checks of a resolved config. Names are checked against the registries by `resolve`."""
    _check(cfg.sparsity is not None and 0.0 <= cfg.sparsity < 1.0, f"--sparsity must be in [0, 1), got {cfg.sparsity}")
    _check(cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}")
    _check(cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}")
    _check(cfg.eval_batch_size >= 1, f"--eval-batch-size must be at least 1, got {cfg.eval_batch_size}")
    _check(
        cfg.clip_cache_gib is None or cfg.clip_cache_gib >= 0,
        f"--clip-cache-gib must be at least 0, got {cfg.clip_cache_gib}",
    )
    # The optimizers compute in float32: a larger step size or decay overflows there.
    _check(0 < cfg.lr <= FLOAT32_MAX, f"--lr must be in (0, 3.4e38], got {cfg.lr}")
    _check(cfg.optimizer in OPTIMIZERS, f"unknown optimizer '{cfg.optimizer}'; choose from: {', '.join(OPTIMIZERS)}")
    _check(cfg.schedule in SCHEDULES, f"unknown schedule '{cfg.schedule}'; choose from: {', '.join(SCHEDULES)}")
    _check(cfg.precision in PRECISIONS, f"unknown precision '{cfg.precision}'; choose from: {', '.join(PRECISIONS)}")
    _check(0 <= cfg.momentum < 1, f"--momentum must be in [0, 1), got {cfg.momentum}")
    _check(0 <= cfg.weight_decay <= FLOAT32_MAX, f"--weight-decay must be in [0, 3.4e38], got {cfg.weight_decay}")
    _check(0 <= cfg.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    _check(0 < cfg.gamma <= 1, f"--gamma must be in (0, 1], got {cfg.gamma}")
    _check(all(0 < m < 1 for m in cfg.milestones), f"--milestones must be fractions in (0, 1), got {cfg.milestones}")
    _check(0 <= cfg.warmup_epochs < cfg.epochs, f"--warmup-epochs must be in [0, epochs), got {cfg.warmup_epochs}")
    _check(0 <= cfg.seed < 2**32, f"--seed must be in [0, 2**32), got {cfg.seed}")
    _check(0 <= cfg.corruption_seed < 2**32, f"--corruption-seed must be in [0, 2**32), got {cfg.corruption_seed}")
    _check(cfg.workers >= 0, f"--workers must be at least 0, got {cfg.workers}")
    _check(cfg.split in (1, 2, 3), f"--split must be 1, 2 or 3, got {cfg.split}")
    for name in ("frames", "frame_stride"):
        value = getattr(cfg, name)
        _check(value is None or value >= 1, f"--{name.replace('_', '-')} must be at least 1, got {value}")
    for name in ("max_train_samples", "max_test_samples"):
        value = getattr(cfg, name)
        _check(value is None or value >= 2, f"--{name.replace('_', '-')} must be at least 2, got {value}")
    for name in FIELDS:  # what JSON readers hold exactly; no run needs more
        value = getattr(cfg, name)
        if isinstance(value, int) and not isinstance(value, bool):
            _check(value < MAX_INTEGER, f"--{name.replace('_', '-')} must be below 2**53, got {value}")
    _check(
        cfg.device in ("auto", "cpu", "cuda") or (cfg.device.startswith("cuda:") and cfg.device[5:].isdigit()),
        f"unknown device '{cfg.device}'; choose from: auto, cpu, cuda, cuda:N",
    )


def unused_settings(cfg: RunConfig, modality: str) -> dict[str, str]:
    """The settings this run does not use, each with the reason."""
    unused = {}
    if modality != "video":
        video = ("frames", "frame_stride", "clip_cache_gib", "skip_bad", "split")
        unused |= dict.fromkeys(video, f"applies to video datasets; '{cfg.dataset}' is {modality}")
    if cfg.optimizer != "sgd":
        unused |= dict.fromkeys(("momentum", "nesterov"), f"applies to --optimizer sgd, not {cfg.optimizer}")
    elif cfg.momentum == 0:
        unused["nesterov"] = "needs --momentum above 0"
    if cfg.schedule != "multistep":
        unused |= dict.fromkeys(("milestones", "gamma"), f"applies to --schedule multistep, not {cfg.schedule}")
    return unused


def _check_used(cfg: RunConfig, modality: str) -> None:
    """A setting changed from its default where the run does not use it is refused: an entry never records a
    setting its run ignored, and two runs that differ only there are not two experiments."""
    for name, reason in unused_settings(cfg, modality).items():
        value = getattr(cfg, name)
        if value != FIELDS[name].default:
            shown = (
                ""
                if isinstance(value, bool)
                else " " + (",".join(map(str, value)) if isinstance(value, tuple) else str(value))
            )
            raise UserError(f"--{name.replace('_', '-')}{shown}: {reason}")


def settings_diff(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """'key=saved (now value)' for each of `now`'s settings that `saved` (a checkpoint's or entry's config) holds
    otherwise. Algorithm options are compared as values: runs of older versions saved a flag's as given ("3")."""
    diff = []
    for key, value in now.items():
        old = saved.get(key)
        if key == "algo_options" and isinstance(old, Mapping) and old.keys() == value.keys():
            old = {k: _as_typed(v, value[k]) for k, v in old.items()}
        if old != value:
            diff.append(f"{key}={saved.get(key)!r} (now {value!r})")
    return diff


def _as_typed(saved: Any, now: Any) -> Any:
    """`saved` as a value of `now`'s type, when it is a string that reads as one (else as it is)."""
    if not isinstance(saved, str) or isinstance(now, str):
        return saved
    if now is None:
        return None if saved.lower() in ("none", "null") else saved
    try:
        return parse_bool(saved) if isinstance(now, bool) else parse_number(type(now))(saved)
    except ValueError:
        return saved


def resolve(
    flags: Mapping[str, Any], config_file: str | Path | None, registry, saved: Mapping[str, Any] | None = None
) -> RunConfig:
    """Merge the layers (`saved`: a resumed run's settings, below the config file and the flags), fill recipe
    defaults from the dataset and trainer, and validate everything."""
    toml = read_toml(config_file) if config_file else {}
    given = {**parse_values(saved or {}, "the resumed run"), **toml, **parse_values(flags, "command line")}
    dataset = registry.dataset(given.get("dataset", RunConfig.dataset))
    trainer = registry.trainer(given["trainer"]) if "trainer" in given else registry.trainer_for(dataset.modality)
    if trainer.modality != dataset.modality:
        raise UserError(
            f"trainer '{trainer.name}' trains {trainer.modality} data, dataset '{dataset.name}' is {dataset.modality}"
        )
    algorithm = registry.algorithm(given.get("algo", RunConfig.algo))
    recipe = parse_values({**trainer.defaults, **dataset.recipe}, f"recipe of {dataset.name}")
    merged = {"trainer": trainer.name, "sparsity": algorithm.default_sparsity, **recipe, **given}
    if not algorithm.sparse:  # so that a sweep's --distribution or config file serves its dense runs too
        merged["distribution"] = None
    cfg = RunConfig(**merged)
    validate(cfg)
    _check_used(cfg, dataset.modality)
    resolve_device(cfg.device)
    _check(cfg.model is not None, f"dataset '{dataset.name}' has no default model; pass --model")
    model, _ = registry.model(cfg.model)
    _check(
        model.modality == dataset.modality,
        f"model '{cfg.model}' takes {model.modality} input but dataset '{dataset.name}' is {dataset.modality}",
    )
    _check(cfg.suite is not None, f"dataset '{dataset.name}' has no default corruption suite; pass --suite")
    suite = registry.suite(cfg.suite)
    _check(
        suite.modality == dataset.modality,
        f"suite '{suite.name}' corrupts {suite.modality} data, dataset '{dataset.name}' is {dataset.modality}",
    )
    corruptions, severities = suite.select(cfg.corruptions, cfg.severities)
    suite.check_input(dataset.channels, dataset.image_size, corruptions)
    algorithm.check_config(cfg)
    options = algorithm.parse_options(cfg.algo_options)  # a flag's "3" and a TOML table's 3 alike: 3
    cfg = dataclasses.replace(cfg, algo_options={key: getattr(options, key) for key in cfg.algo_options})
    if cfg.baseline:  # now, not after training
        from dstbench.entry import read_baseline

        read_baseline(cfg.baseline, corruptions, severities)
    return cfg


def resolve_device(name: str):
    """The torch device for --device, or a UserError when CUDA is asked for and absent."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            available = f"CUDA is not available on this machine (torch {torch.__version__})"
            raise UserError(f"--device {name}: {available}; use --device cpu or auto")
        index = int(name[5:] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)
