"""`dstbench sweep`: the grid algorithm × sparsity × seed, run one after another or in parallel, then summarised.

Every run gets its own directory, `<out>/runs/<run id>`, so a sweep that stops resumes where it stopped: a run
with an entry.json is skipped, a run with a checkpoint or model is resumed. The summary (`dstbench.summary`)
compares each algorithm with dense training paired by seed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.markup import escape

from dstbench import config
from dstbench.config import EVAL, FIELDS, TRAIN, RunConfig
from dstbench.errors import UserError
from dstbench.options import check_writable, config_options, given
from dstbench.report import make_reporter
from dstbench.summary import summarize, summary_tables, write_summary

if TYPE_CHECKING:
    from dstbench.plugins import Plugins
    from dstbench.registry import Registry
    from dstbench.report import Reporter

GRID_FIELDS = ("algo", "sparsity", "seed", "out", "resume")  # set per run by the sweep, not by its options
MAX_SEEDS = 1000  # the largest count of seeds (a list may name any seeds)


# --- the grid ----------------------------------------------------------------------------------------------------


def _parse_list(text: str, option: str, parse: Callable[[str], Any], what: str) -> list:
    """The values of a comma-separated option, in the order given."""
    try:
        values = [parse(part) for part in config.split_list(text)]
    except ValueError:
        raise UserError(f"{option}: '{text}' is not a comma-separated list of {what}") from None
    if not values:
        raise UserError(f"{option} is empty; give a comma-separated list of {what}")
    return values


def _unique(values: list) -> list:
    return list(dict.fromkeys(values))


def parse_seeds(text: str) -> list[int]:
    """'3' -> seeds 0, 1, 2; '0,4,7' -> those seeds ('7,' for seed 7 alone)."""
    seeds = _parse_list(text, "--seeds", config.parse_number(int), "seeds (or a count, e.g. 3)")
    if "," in text:
        return _unique(seeds)
    if not 1 <= seeds[0] <= MAX_SEEDS:
        raise UserError(f"--seeds must be a count from 1 to {MAX_SEEDS:,} or a list like 0,4,7; got {text}")
    return list(range(seeds[0]))


@dataclass(frozen=True)
class Grid:
    algos: list[str]
    sparsities: list[float]
    seeds: list[int]

    @classmethod
    def parse(cls, algos: str, sparsities: str, seeds: str) -> Grid:
        return cls(
            _unique(_parse_list(algos, "--algo", str, "algorithm names")),
            _unique(_parse_list(sparsities, "--sparsity", config.parse_number(float), "numbers")),
            parse_seeds(seeds),
        )

    def points(self, registry: Registry) -> list[tuple[str, float, int]]:
        """(algorithm, sparsity, seed) for every run; an algorithm that is not sparse runs at sparsity 0 only."""
        return [
            (algo, sparsity, seed)
            for algo in self.algos
            for sparsity in (self.sparsities if registry.algorithm(algo).sparse else [0.0])
            for seed in self.seeds
        ]


def _option_names(algorithm: type) -> set[str]:
    return {f.name for f in dataclasses.fields(algorithm.Options)}


def _algo_options(flags: Mapping[str, Any], config_file: str | None) -> dict[str, Any]:
    """--algo-opt values, else the config file's [algo_options] (as `config.resolve` layers them)."""
    layers = [config.read_toml(config_file) if config_file else {}, config.parse_values(flags, "command line")]
    return next((layer["algo_options"] for layer in reversed(layers) if "algo_options" in layer), {})


def _options_by_algo(grid: Grid, options: dict[str, Any], registry: Registry) -> dict[str, dict[str, Any]]:
    """Each algorithm gets the options it has, so `--algo dense,rigl --algo-opt drop_fraction=0.3` works."""
    names = {algo: _option_names(registry.algorithm(algo)) for algo in grid.algos}
    unknown = options.keys() - set().union(*names.values())
    if unknown:
        raise UserError(f"no algorithm of the sweep ({', '.join(grid.algos)}) has option '{sorted(unknown)[0]}'")
    return {algo: {k: v for k, v in options.items() if k in names[algo]} for algo in grid.algos}


def plan(
    grid: Grid, flags: Mapping[str, Any], config_file: str | None, registry: Registry, out: str | None
) -> tuple[Path, list[RunConfig]]:
    """The sweep directory and every run's resolved config, each with its own run directory. Validates all."""
    options = _options_by_algo(grid, _algo_options(flags, config_file), registry)
    configs = [
        config.resolve(
            {**flags, "algo": algo, "sparsity": sparsity, "seed": seed, "algo_options": options[algo]},
            config_file,
            registry,
        )
        for algo, sparsity, seed in grid.points(registry)
    ]
    _check_distinct(configs)
    sweep_dir = Path(out) if out else Path("sweeps") / f"{configs[0].dataset}-{configs[0].model}"
    return sweep_dir, [_in_sweep(cfg, sweep_dir) for cfg in configs]


def _check_distinct(configs: list[RunConfig]) -> None:
    """Two grid points that would share a run directory (sparsities equal to 6 significant digits) are refused:
    the second would be skipped as finished, or fail on the first's checkpoint, every time."""
    seen: dict[str, RunConfig] = {}
    for cfg in configs:
        other = seen.setdefault(cfg.run_id, cfg)
        if other is not cfg:
            raise UserError(
                f"--sparsity {other.sparsity!r} and {cfg.sparsity!r} share the run directory {cfg.run_id}; "
                "give sparsities that differ within 6 significant digits"
            )


def _in_sweep(cfg: RunConfig, sweep_dir: Path) -> RunConfig:
    """The run in its directory, resumed when it has started; an existing entry must have the same settings."""
    cfg = dataclasses.replace(cfg, out=str(sweep_dir / "runs" / cfg.run_id))
    return _prepared(cfg) or cfg


def _prepared(cfg: RunConfig) -> RunConfig | None:
    """The run as its directory holds it now: None when it is finished (with the same settings), else resumed when
    it has started. Asked again just before each run starts, as another sweep on the same --out may have moved on."""
    from dstbench.runner import run_dir_of

    run_dir = run_dir_of(cfg)
    if run_dir.entry.exists():
        _check_finished(cfg, run_dir.entry)
        return None
    return dataclasses.replace(cfg, resume=run_dir.has_run())


def _check_finished(cfg: RunConfig, entry_path: Path) -> None:
    saved = _read_entry(entry_path)["config"]
    now = {**cfg.role_dict(TRAIN), **cfg.role_dict(EVAL)}
    diff = config.settings_diff(saved, now)
    if diff:
        raise UserError(f"{entry_path} was written with other settings: {', '.join(diff)}; choose another --out")


def _read_entry(path: Path) -> dict[str, Any]:
    """A run's entry, migrated to the current schema (a sweep resumed with a newer dstbench reads older ones)."""
    from dstbench.entry import load_entry

    return load_entry(path)


# --- running -----------------------------------------------------------------------------------------------------

STOP_GRACE_S = 10.0  # how long an interrupted sweep waits for its subprocesses to stop before it kills them


@dataclass(frozen=True)
class Outcome:
    cfg: RunConfig
    seconds: float
    entry: dict[str, Any] | None = None  # None also on a torch.distributed process other than rank 0
    error: str | None = None  # one line, when the run failed
    skipped: bool = False  # finished by then (by another sweep on the same directory)


def _one_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _ready(cfg: RunConfig) -> RunConfig | Outcome:
    """The run as it starts now (resumed or not), or its outcome when there is nothing to run."""
    try:
        prepared = _prepared(cfg)
    except UserError as exc:
        return Outcome(cfg, 0.0, error=str(exc))
    return Outcome(cfg, 0.0, skipped=True) if prepared is None else prepared


def run_here(cfg: RunConfig, plugins: Plugins, reporter: Reporter) -> Outcome:
    """The run in this process; an error fails only this run, in one line, as in a subprocess. Under
    torch.distributed only a UserError (which every process meets alike) is caught: a process that went on after
    an error of its own would wait for the others forever, so it stops and torchrun stops the others."""
    from dstbench.distributed import Distributed
    from dstbench.runner import execute

    start = time.perf_counter()
    try:
        entry = execute(cfg, plugins, reporter)
    except UserError as exc:
        return Outcome(cfg, time.perf_counter() - start, error=str(exc))
    except Exception as exc:
        if Distributed.from_env().enabled:
            raise
        return Outcome(cfg, time.perf_counter() - start, error=_one_line(exc))
    return Outcome(cfg, time.perf_counter() - start, entry=None if entry is None else entry.to_dict())


def run_args(cfg: RunConfig) -> list[str]:
    """`dstbench run` flags that resolve to `cfg` again."""
    args = []
    for name, value in cfg.to_dict().items():
        flag = "--" + name.replace("_", "-")
        if value is None:
            continue
        if name == "algo_options":
            args += [f"--algo-opt={key}={option}" for key, option in value.items()]
        elif isinstance(value, bool):
            args.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            args.append(f"{flag}={','.join(map(str, value))}")
        else:
            args.append(f"{flag}={value}")
    return args


def child_device(device: str, devices: list[str], environ: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The --device and the environment of a subprocess on `device`. A GPU is the only one the subprocess sees
    (CUDA_VISIBLE_DEVICES, as cuda:0), so nothing it does on the 'current' GPU lands on another run's. Parallel CPU
    runs share the cores rather than each taking all of them (unless OMP_NUM_THREADS is set)."""
    env = dict(environ)
    if device.startswith("cuda"):
        index = int(device[5:] or 0)
        visible = [part.strip() for part in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if part.strip()]
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
        return "cuda:0", env
    if device == "cpu":
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices.count("cpu"))))
    return device, env


class Children:
    """The sweep's running subprocesses. Each runs in its own session, so a Ctrl-C reaches the sweep alone, which
    passes it on (`stop`) and waits for them: none goes on training after the sweep has stopped."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[subprocess.Popen] = set()
        self.stopping = False

    def run(self, command: list[str], env: Mapping[str, str]) -> tuple[int, str] | None:
        """The exit code and stderr of `command`; None when the sweep is stopping."""
        with self.lock:
            if self.stopping:
                return None
            child = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                start_new_session=True,
            )
            self.running.add(child)
        try:
            _, stderr = child.communicate()
        finally:
            with self.lock:
                self.running.discard(child)
        return child.returncode, stderr

    def stop(self, grace: float = STOP_GRACE_S) -> None:
        """SIGINT to every running subprocess (a run stops as on Ctrl-C), SIGKILL to those left after `grace` s."""
        with self.lock:
            self.stopping = True
            running = list(self.running)
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace
        while any(child.poll() is None for child in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in running:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()


def _failure(returncode: int, stderr: str) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {returncode}"


def run_subprocess(cfg: RunConfig, device: str, devices: list[str], children: Children) -> Outcome | None:
    """The run as `python -m dstbench run` on `device`; a failure is the last line of its stderr. None when the
    sweep stopped before the run started."""
    from dstbench.runner import run_dir_of

    ready = _ready(cfg)
    if isinstance(ready, Outcome):
        return ready
    flag, env = child_device(device, devices, os.environ)
    command = [sys.executable, "-m", "dstbench", "run", *run_args(dataclasses.replace(ready, device=flag, quiet=True))]
    start = time.perf_counter()
    done = children.run(command, env)
    if done is None:
        return None
    seconds = time.perf_counter() - start
    if done[0]:
        return Outcome(cfg, seconds, error=f"{_failure(*done)} (on {device})")
    return Outcome(cfg, seconds, entry=_read_entry(run_dir_of(cfg).entry))


def run_parallel(configs: list[RunConfig], devices: list[str]) -> Iterator[Outcome]:
    """The runs in subprocesses, at most one per listed device at a time; outcomes in the order they finish. When
    the caller stops (Ctrl-C, an error), no run starts any more and the running ones are stopped."""
    free: queue.SimpleQueue[str] = queue.SimpleQueue()
    for device in devices:
        free.put(device)
    children = Children()

    def on_free_device(cfg: RunConfig) -> Outcome | None:
        device = free.get()
        try:
            return run_subprocess(cfg, device, devices, children)
        finally:
            free.put(device)

    pool = ThreadPoolExecutor(max_workers=len(devices))
    try:
        for future in as_completed([pool.submit(on_free_device, c) for c in configs]):
            outcome = future.result()
            if outcome is not None:
                yield outcome
    finally:
        children.stop()
        pool.shutdown(cancel_futures=True)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a batch scheduler, `kill`) stops the sweep as Ctrl-C does: the subprocesses are stopped too."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _label(cfg: RunConfig) -> str:
    return f"{cfg.algo} s={cfg.sparsity:g} seed={cfg.seed}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{seconds:.1f}s"


class Progress:
    """One line per run: '[3/45] rigl s=0.3 seed=1  clean 93.10  mPC 85.20  (2m13s)'. Silent (`show` false) on a
    torch.distributed process other than rank 0, which still counts the failures."""

    def __init__(self, reporter: Reporter, total: int, show: bool = True):
        self.reporter, self.total, self.count, self.show = reporter, total, 0, show
        self.failed: list[Outcome] = []

    def _line(self, cfg: RunConfig, text: str) -> str:
        self.count += 1
        return escape(f"[{self.count}/{self.total}] {_label(cfg)}  {text}")

    def skipped(self, cfg: RunConfig) -> None:
        if self.show:
            self.reporter.result(self._line(cfg, "skip (entry.json exists)"))

    def finished(self, outcome: Outcome) -> None:
        time_taken = _duration(outcome.seconds)
        if outcome.skipped:
            self.skipped(outcome.cfg)
        elif outcome.error is not None:
            self.failed.append(outcome)
            if self.show:
                self.reporter.warn(self._line(outcome.cfg, f"failed ({time_taken}): {outcome.error}"))
        elif self.show and outcome.entry is not None:
            clean, mpc = outcome.entry["clean_acc"], outcome.entry["corruptions_acc"]
            self.reporter.result(self._line(outcome.cfg, f"clean {clean:.2f}  mPC {mpc:.2f}  ({time_taken})"))


# --- the command -------------------------------------------------------------------------------------------------

SWEEP_EXAMPLES = """
\b
Examples:
  dstbench sweep --algo dense,static,set,rigl,mest --sparsity 0.1,0.3,0.5 --seeds 3
  dstbench sweep --algo dense,rigl --seeds 0,4 --epochs 5 --severities 3,5
  dstbench sweep --algo dense,rigl --dataset cifar10 --data-dir ~/data --devices cuda:0,cuda:1
  dstbench sweep --algo dense,rigl --config recipe.toml --out sweeps/cifar   (run again to resume)
"""


def _devices(text: str | None) -> list[str]:
    """Listed devices, repeats included: `cpu,cpu` runs two at a time."""
    return _parse_list(text, "--devices", str, "devices") if text else []


def _check_devices(devices: list[str], cfg: RunConfig) -> None:
    for device in devices:
        config.validate(dataclasses.replace(cfg, device=device))
        config.resolve_device(device)


@click.command(epilog=SWEEP_EXAMPLES)
@click.option("--algo", "algos", required=True, metavar="A,A", help="Algorithms; a dense one runs at sparsity 0 only.")
@click.option("--sparsity", "sparsities", default="0.1,0.3,0.5", show_default=True, metavar="S,S", help="Sparsities.")
@click.option("--seeds", default="3", show_default=True, metavar="N|S,S", help="A count (seeds 0..N-1) or seeds.")
@click.option("--out", metavar="DIR", help="Sweep directory; default: sweeps/<dataset>-<model>.")
@click.option("--devices", metavar="D,D", help="Run in parallel subprocesses, one run per listed device at a time.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file of settings (flags win).")
@config_options([name for name in FIELDS if name not in GRID_FIELDS])
@click.pass_context
def sweep(
    ctx: click.Context,
    algos: str,
    sparsities: str,
    seeds: str,
    out: str | None,
    devices: str | None,
    config_file: str | None,
    **flags,
) -> None:
    """Train and evaluate every algorithm × sparsity × seed; print and save the comparison with dense training.

    Every other `dstbench run` setting applies to every run. A run directory with an entry.json is skipped, one
    with a checkpoint is resumed: run the same command again to continue an interrupted sweep. Writes
    <out>/runs/<run id>/, <out>/summary.json and <out>/summary.png.
    """
    from dstbench.distributed import Distributed, one_group

    plugins: Plugins = ctx.find_root().obj
    device_list = _devices(devices)
    dist = Distributed.from_env()
    if dist.enabled and len(device_list) > 1:
        raise UserError("--devices: under torchrun every run already uses all its processes; leave --devices out")
    run_flags = {**given(flags), **({"device": device_list[0]} if len(device_list) == 1 else {})}
    sweep_dir, configs = plan(Grid.parse(algos, sparsities, seeds), run_flags, config_file, plugins.registry, out)
    check_writable(sweep_dir, "--out")
    _check_devices(device_list, configs[0])
    reporter = make_reporter(configs[0].quiet)
    try:
        with one_group() if dist.enabled else contextlib.nullcontext():
            failed = _run_all(configs, device_list, plugins, Progress(reporter, len(configs), show=dist.is_main))
    except KeyboardInterrupt:
        error = click.ClickException("interrupted; run the same command again to continue the sweep")
        error.exit_code = 130
        raise error from None
    if dist.is_main:  # under torchrun, rank 0 speaks for all
        _report(configs, sweep_dir, reporter)
    if failed and not dist.is_main:
        ctx.exit(1)
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(configs)} runs failed; run the same command to retry them")


def _run_all(configs: list[RunConfig], devices: list[str], plugins: Plugins, progress: Progress) -> list[Outcome]:
    """Every run not finished yet, the failed ones again; whether a run is finished or started is asked again just
    before it starts."""
    from dstbench.runner import run_dir_of

    todo = []
    for cfg in configs:
        if run_dir_of(cfg).entry.exists():
            progress.skipped(cfg)
        else:
            todo.append(cfg)
    if len(devices) > 1:
        with _sigterm_as_interrupt():
            for outcome in run_parallel(todo, devices):
                progress.finished(outcome)
    else:
        for cfg in todo:
            ready = _ready(cfg)
            progress.finished(ready if isinstance(ready, Outcome) else run_here(ready, plugins, progress.reporter))
    return progress.failed


def _report(configs: list[RunConfig], sweep_dir: Path, reporter: Reporter) -> None:
    from dstbench.runner import run_dir_of

    entry_paths = {cfg.run_id: run_dir_of(cfg).entry for cfg in configs}
    missing = [run_id for run_id, path in entry_paths.items() if not path.exists()]
    if len(missing) == len(configs):
        return
    summary = summarize(_read_entry(path) for path in entry_paths.values() if path.exists())
    reporter.result(summary_tables(summary))
    reporter.result(write_summary(summary, sweep_dir, missing))
