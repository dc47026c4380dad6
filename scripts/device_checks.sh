#!/usr/bin/env bash
# The GPU checks of issues 9 (throughput) and 10 (trainer) in one run on a lent GPU machine,
# about 8 minutes. The machine's image has torch; the rest travels as wheels:
#   here:    bash scripts/device_wheels.sh          (once; .whl/, about 20 MB)
#   device:  the device tool's `run` with command "bash scripts/device_checks.sh",
#            carry [".whl"], timeout_s 600
# Each step's log lands in $OUT (they come back); the tails are printed.
# The tree that travels is capped at 64 MiB: the demo bundle's weights (45 MB, tracked) and
# the wheels (21 MB) together are over it, and no step here reads the demo bundle, so move
# its two .safetensors files aside for the call (git checkout -- mammo_node/demo_bundle after).
#   1. the GPU tests: preprocessing on the device = the CPU reference, CUDA scoring;
#   2. bench_pipeline: model time per exam and exams/s at batch 1, 4, 8 (ResNet-101 @ 976,
#      bf16), then READY -> stored outputs through the node's Worker at batch 1 and 4;
#   3. bench_train --paper: training images/s, holistic and attention, loader share.
set -u
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
OUT="${OUT:-/tmp/device-checks}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || { echo "wheels missing: run scripts/device_wheels.sh here"; exit 2; }
export PYTHONPATH="/tmp/site:$PWD"

step() {  # name, seconds, command...
  local name=$1 limit=$2 start rc
  shift 2
  echo "== $name (at most $limit s)"
  start=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "   exit $rc after $(($(date +%s) - start)) s"
  grep -v " INFO " "$OUT/$name.log" | tail -n 30
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
step gpu-tests 150 python3 -m pytest -q -p no:cacheprovider \
  tests/test_ml_preprocess_reference.py tests/test_ml_inference.py
step pipeline 270 python3 scripts/bench_pipeline.py --no-node --device cuda --precision bf16 \
  --batch 1,4,8 --repeats 3 --worker-batch 1,4,8 --backlog 8 --out /tmp/bench-pipeline
step train 150 python3 scripts/bench_train.py --paper --device cuda
