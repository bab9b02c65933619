#!/usr/bin/env bash
# Everything a GPU session checks, in one call (see benchmarks/RESULTS.md for the numbers it produced):
#   the CUDA-only tests, corruption speed vs the reference, a real `dstbench run` on the GPU, what torch.compile
#   would buy the corruptions, training throughput (ceiling vs pipeline), sparse algorithms vs dense, and the video
#   path (decode, r3d_18 dense vs RigL, video-c). Steps in that order, each under its own time limit (about 8.5 min in
#   all through the compile step, 12.5 min for everything).
#   Results and each step's log land in $OUT (or ./gpu-results).
# Run from the repository root on a machine with PyTorch and a GPU:  bash benchmarks/gpu_session.sh
set -uo pipefail
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . ./plugins/granet 2>&1 | tail -2
if [ -d .whl ]; then python3 -m pip install -q --no-index --no-deps .whl/*.whl 2>&1 | tail -2; fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
step() { echo "== $1 ($(date +%T))"; }
# issue 4's goals first: whatever a cut-off call leaves under $OUT still comes back
step "CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests -k "cuda or gpu" 2>&1 | tee "$OUT/cuda-tests.log" | tail -40
step "corruption speed"
timeout 150 python3 benchmarks/corruption_speed.py --images-32 10000 --images-224 500 --reference-images-32 200 --reference-images-224 20 --eval-images 10000 --json "$OUT/corruption.json" 2>&1 | tee "$OUT/corruption.log" | tail -80
step "dstbench run on the GPU"
timeout 40 dstbench run --algo rigl --sparsity 0.5 --device cuda --out "$OUT/run" --quiet 2>&1 | tee "$OUT/run.log" | tail -12
step "torch.compile'd corruptions vs eager"
timeout 150 python3 benchmarks/compile_speed.py --json "$OUT/compile.json" 2>&1 | tee "$OUT/compile.log" | tail -60
step "training throughput"
timeout 50 python3 benchmarks/train_throughput.py --json "$OUT/train.json" 2>&1 | tee "$OUT/train.log" | tail -12
step "sparse algorithms vs dense"
timeout 75 python3 benchmarks/dst_throughput.py --epochs 3 --repeats 1 --images 25000 --json "$OUT/dst.json" 2>&1 | tee "$OUT/dst.log" | tail -50
step "video: decode, r3d_18 dense vs RigL, video-c"
timeout 120 python3 benchmarks/video_bench.py --json "$OUT/video.json" 2>&1 | tee "$OUT/video.log" | tail -40
step "done"
