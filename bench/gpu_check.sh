#!/usr/bin/env bash
# The GPU check (issue: the model's life on MLflow, "GPU path"): one prepared script, at most
# about 5 minutes on a machine with NVIDIA GPUs. It sets the project up, then trains the
# default model on Amazon Beauty through the real path (Delta -> petastorm -> TorchDistributor,
# one process per GPU, DDP over NCCL) for 1.5 minutes in fp32 and 1.5 minutes with bf16
# autocast, and writes examples/s and the validation NDCG@10 reached to
# bench/results/gpu-check.json (copy the figures into bench/RESULTS.md with the GPU's name).
#
#   bash bench/gpu_check.sh [path/to/amazon_beauty.txt]
set -euo pipefail
cd "$(dirname "$0")/.."
DATASET="${1:-../shared/datasets/amazon_beauty.txt}"
shift || true
[ -f "$DATASET" ] || DATASET="shared/datasets/amazon_beauty.txt"
command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "gpu_check: no nvidia-smi: this needs a GPU machine" >&2; exit 2; }
make setup >/dev/null
.venv/bin/python bench/train_throughput.py --gpu --dataset "$DATASET" --minutes 1.5 \
    --out bench/results/gpu-check.json "$@"
