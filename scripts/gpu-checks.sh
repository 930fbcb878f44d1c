#!/usr/bin/env bash
# The checks only a CUDA GPU can run, in one go (run from the repository root on a GPU
# machine with the app's venv, `make /abs/path/app/.venv/bin/personaplex-server`):
#   1. app/tests/engine/test_cuda.py: CUDA graph replay equals eager, per-piece graphs and the
#      whole step as one graph (cuda_graph_scope: step); batched equals alone within rounding.
#   2. the batched engine table (random weights, full architecture, nothing downloaded) with
#      both graph scopes: p50/p95/p99 per step, late frames per 1000, memory.
#   3. one conversation joining 8 talking ones (prompt whole and in parts).
# Prints numbers; nothing here is pass/fail except step 1. CONFIGS and SESSIONS override.
set -euo pipefail
cd "$(dirname "$0")/../app"
CONFIGS="${CONFIGS:-bf16,fp16+int8}"
SESSIONS="${SESSIONS:-1,2,4,8,16,32}"
bin=.venv/bin
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$bin/pytest" -q tests/engine/test_cuda.py
for scope in pieces step; do
    echo "== cuda_graph_scope: $scope"
    # exits 1 when a config is skipped (does not fit this GPU) or fails: go on
    "$bin/personaplex-server" bench engine --random-full --configs "$CONFIGS" \
        --sessions "$SESSIONS" --cuda-graph-scope "$scope" || echo "(bench exited $?)"
done
"$bin/personaplex-server" bench engine --random-full --configs "${CONFIGS%%,*}" --join --sessions 8
