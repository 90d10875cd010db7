#!/usr/bin/env bash
# On a machine with a CUDA GPU: calibrate there, ask recommend, and hold the predictions to a measured
# decode on the GPU (validate --device cuda). Writes the profile, the recommendations and the validate
# JSON under DIR (default benchmarks/results/cuda). Usage: benchmarks/cuda_check.sh [DIR]
# Without an installed bmc-tune it runs from this checkout (PYTHONPATH), with the python3 on PATH.
set -uo pipefail
DIR=${1:-benchmarks/results/cuda}
mkdir -p "$DIR"
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
bmc() { python3 -c 'from bmc_model.cli import main; main()' "$@"; }
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
  torch.cuda.get_device_name() if torch.cuda.is_available() else "")'
t0=$(date +%s)
bmc calibrate --device cuda --out "$DIR/profile_cuda_fp32.json" --json > "$DIR/calibrate.json" \
  || { echo "calibrate failed"; exit 1; }
echo "calibrated in $(( $(date +%s) - t0 )) s"
for args in "--seq 2048" "--seq 16384" "--seq 16384 --batch 8"; do
  echo "== recommend --model llama-7b $args"
  bmc recommend --model llama-7b $args --profile "$DIR/profile_cuda_fp32.json"
done
for seq in 2048 16384; do
  echo "== validate --device cuda --seq $seq"
  bmc validate --device cuda --profile "$DIR/profile_cuda_fp32.json" --model llama-7b --layers 2 --seq $seq \
    --out "$DIR/validate_cuda_$seq.json" || echo "validate at $seq failed"
done
echo "total $(( $(date +%s) - t0 )) s"
