#!/usr/bin/env bash
# Multi-process training, as mmseg's tools/dist_train.sh, launched with torchrun.
# Usage: bash tools/dist_train.sh CONFIG NUM_PROCS [train.py arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the processes run on the CPU with the gloo backend.
source "$(dirname "$0")/dist_run.sh"
torchrun_tool "$2" train.py "$1" --launcher pytorch "${@:3}"
