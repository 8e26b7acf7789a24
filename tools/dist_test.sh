#!/usr/bin/env bash
# Multi-process testing, as mmseg's tools/dist_test.sh, launched with torchrun.
# Usage: bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCS [test.py arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the processes run on the CPU with the gloo backend.
source "$(dirname "$0")/dist_run.sh"
torchrun_tool "$3" test.py "$1" "$2" --launcher pytorch "${@:4}"
