#!/usr/bin/env bash
# The GPU check of issue 12 section 3: one prepared script, a few minutes on one GPU.
#   bash benchmarks/gpu_check.sh [--json gpu.json] [--no-ddp] [--repeats N]
# Runs the CUDA/bf16 paths of the paper-size models once each and prints samples/s, peak
# memory and achieved FLOP/s as a share of a bf16 matmul peak measured in the same run
# (see benchmarks/gpu_check.py). Without a GPU it says so and exits 0; --cpu-smoke runs the
# same logic on the CPU at tiny widths.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec "${PYTHON:-python}" "$here/gpu_check.py" "$@"
