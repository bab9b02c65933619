"""Valid leaderboard entries for tests, without training anything."""

from __future__ import annotations

import hashlib
from statistics import fmean

from dstbench.entry import (
    AlgorithmInfo,
    CheckpointInfo,
    Entry,
    EnvironmentInfo,
    EvaluationInfo,
    LayerInfo,
    SparsityInfo,
    TrainingInfo,
)


def make_entry(
    *,
    dataset: str = "cifar10",
    model: str = "cifar-resnet18",
    algo: str = "dense",
    sparsity: float = 0.0,
    seed: int = 0,
    clean: float = 94.0,
    drop: float = 10.0,
    suite: str = "cifar-c",
    corruptions: tuple[str, ...] = ("gaussian_noise", "fog"),
    severities: tuple[int, ...] = (1, 2, 3, 4, 5),
) -> dict:
    """An entry dict that passes `dstbench.entry.violations`: accuracy falls by `drop` per severity step."""
    grid = {c: {str(s): max(0.0, clean - drop * s - i) for s in severities} for i, c in enumerate(corruptions)}
    mpc = fmean(acc for row in grid.values() for acc in row.values())
    numel = 1000
    nonzeros = round((1 - sparsity) * numel)
    run_id = f"{dataset}-{model}-{algo}{f'-s{sparsity:g}' if sparsity else ''}-seed{seed}"
    entry = Entry(
        run_id=run_id,
        dataset=dataset,
        model=model,
        suite=suite,
        seed=seed,
        algorithm=AlgorithmInfo(algo, {}, algo, "0.1.0"),
        sparsity=SparsityInfo(
            sparsity,
            1 - nonzeros / numel,
            None if algo == "dense" else "erk",
            [LayerInfo("net.fc.weight", [10, 100], nonzeros, numel, nonzeros / numel)],
        ),
        clean_acc=clean,
        corruptions_acc=mpc,
        rpc=mpc / clean,
        corruptions_mce=None,
        corruptions_relative_mce=None,
        corruptions=grid,
        evaluation=EvaluationInfo(suite, list(corruptions), list(severities), 0, 10000),
        training=TrainingInfo(
            "image",
            200,
            78200,
            128,
            50000,
            3600.0,
            2800.0,
            "NVIDIA H200",
            "bf16",
            [{"epoch": 1, "loss": 2.0, "train_acc": 30.0, "lr": 0.1, "seconds": 18.0, "images": 50000}],
        ),
        environment=EnvironmentInfo("0.1.0", None, "3.11.7", "2.14.1", None, "Linux"),
        checkpoint=CheckpointInfo("model.pt", hashlib.sha256(run_id.encode()).hexdigest()),
        config={"dataset": dataset, "model": model, "algo": algo, "sparsity": sparsity, "seed": seed},
        created="2026-11-26T00:00:00+00:00",
    )
    return entry.to_dict()
