"""Clips per second of the video path: decoding moving-digits, training r3d_18 dense and with RigL, and corrupting
with every video-c corruption.

Decoding: centre clips of the embedded moving-digits H.264 files (generated first if missing), one process
(`measure_decode_rate`). Training: r3d_18 through dstbench's own trainer on synthetic on-device clips, dense and
RigL at `--sparsity` (ERK), bf16 autocast on CUDA, interleaved and best of `--repeats`, the first epoch of each
untimed; `rigl_vs_dense` is their ratio in this run. Corruption: every video-c corruption over the given
severities on decoded moving-digits clips on the device; codec corruptions first with an empty cache (the cost of
an evaluation's first run), then again from the cache (every later run).

    python benchmarks/video_bench.py --json video.json                     # GPU: 16 x 112 x 112 clips, batch 32
    python benchmarks/video_bench.py --device cpu --train-clips 16 --batch-size 4 --frames 4 --size 32 \\
        --decode-clips 50 --corrupt-clips 4 --severities 1,5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import device_name, fit, print_report, sync

from dstbench.config import resolve, resolve_device
from dstbench.corruption import SampleRNG, parse_severities
from dstbench.data import Augment, LoadRequest, TensorImages
from dstbench.data.video import ClipSpec, measure_decode_rate
from dstbench.plugins import Plugins
from dstbench.report import PlainReporter
from dstbench.runner import cache_dir, place_on_device
from dstbench.train import resolve_precision
from dstbench_plugins.video_datasets import CANVAS, FRAMES, MOVING_DIGITS, ensure_moving_digits, moving_digits_folder

TRAIN_DATASET = "ucf101"  # its shape (101 classes, RGB) for the model; the clips themselves are synthetic
QUIET = PlainReporter(quiet=True)


def decode_rate(count: int) -> float:
    files = ensure_moving_digits(moving_digits_folder(None), QUIET)
    paths = files.train_files[:count]
    measure_decode_rate(paths[:4], ClipSpec(FRAMES, 1, CANVAS, CANVAS))  # warm-up: PyAV's codec set-up
    return measure_decode_rate(paths, ClipSpec(FRAMES, 1, CANVAS, CANVAS))


def synthetic_clips(count: int, frames: int, size: int, device: torch.device) -> TensorImages:
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (count, 3, frames, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 101, (count,), generator=generator)
    return place_on_device(TensorImages(clips, labels, augment=Augment(crop_padding=8, hflip=True)), device)


def training_rates(args, plugins: Plugins, device: torch.device) -> dict[str, float]:
    data = synthetic_clips(args.train_clips, args.frames, args.size, device)
    best: dict[str, float] = {}
    for _ in range(args.repeats):  # interleaved: other load on the machine hits both alike
        for algo in ("dense", "rigl"):
            flags = {
                "dataset": TRAIN_DATASET,
                "model": "r3d_18",
                "frames": args.frames,
                "batch_size": args.batch_size,
                "algo": algo,
                "sparsity": 0.0 if algo == "dense" else args.sparsity,
                "device": args.device,
                "channels_last": args.channels_last,
                "quiet": True,
            }
            cfg = resolve(flags, None, plugins.registry)
            history = fit(cfg, plugins, device, data, args.epochs).history[1:]
            rate = sum(s.images for s in history) / sum(s.seconds for s in history)
            best[algo] = max(best.get(algo, 0.0), rate)
    return {"dense_clips_per_s": round(best["dense"], 2), "rigl_clips_per_s": round(best["rigl"], 2)}


def corruption_rates(args, plugins: Plugins, device: torch.device) -> dict[str, dict[str, float]] | None:
    if "video-c" not in plugins.registry.names("suite"):
        return None
    from dstbench_plugins.video_c import VideoSuite

    splits = plugins.registry.dataset(MOVING_DIGITS).load(LoadRequest(None, False, cache_dir(), QUIET))
    clips = splits.test.images[: args.corrupt_clips].to(device)
    ids = torch.arange(len(clips), device=device)
    severities = parse_severities(args.severities)
    with tempfile.TemporaryDirectory() as scratch:
        suite = VideoSuite(Path(scratch))

        def clips_per_s(corruption: str) -> float:
            sync(device)
            start = time.perf_counter()
            for severity in severities:
                suite.corrupt(clips, corruption, severity, SampleRNG.for_samples(0, corruption, severity, ids=ids))
            sync(device)
            return round(len(clips) * len(severities) / (time.perf_counter() - start), 2)

        rates = {}
        for corruption in suite.corruptions:
            first = clips_per_s(corruption)
            codec = corruption in suite.subsets["codec"]
            rates[corruption] = {
                "clips_per_s": first,
                **({"cached_clips_per_s": clips_per_s(corruption)} if codec else {}),
            }
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode-clips", type=int, default=400, help="moving-digits files decoded")
    parser.add_argument("--train-clips", type=int, default=1024, help="synthetic training clips per epoch")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112, help="training clip side in pixels")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model, the first one untimed")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--channels-last", default=None, choices=["true", "false"], help="default: on for CUDA")
    parser.add_argument("--corrupt-clips", type=int, default=32, help="moving-digits test clips corrupted")
    parser.add_argument("--severities", default="1-5")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    plugins = Plugins.load()
    device = resolve_device(args.device)
    training = training_rates(args, plugins, device)
    report = {
        "device": device_name(device),
        "decode_clips_per_s": round(decode_rate(args.decode_clips), 2),
        "decode_clip": f"{FRAMES} x {CANVAS} x {CANVAS} (moving-digits, H.264, one process)",
        "training": {
            "model": "r3d_18",
            "clip": f"{args.frames} x {args.size} x {args.size}",
            "batch_size": args.batch_size,
            "precision": resolve_precision("auto", device),
            "sparsity": args.sparsity,
            **training,
            "rigl_vs_dense": round(training["rigl_clips_per_s"] / training["dense_clips_per_s"], 3),
        },
        "corruption": {
            "clips": args.corrupt_clips,
            "severities": list(parse_severities(args.severities)),
            "clips_per_s": corruption_rates(args, plugins, device),
        },
    }
    print_report(report, args.json)


if __name__ == "__main__":
    main()
