#!/usr/bin/env bash
# Folder inference with several processes, launched with torchrun (as dist_test.sh).
# Usage: bash tools/dist_infer.sh INPUT CONFIG CHECKPOINT NUM_PROCS --out-dir OUT [infer.py arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# With CUDA each process takes one GPU (NCCL); without, the processes run on the CPU (gloo).
# The images are split by their sorted relative paths; rank 0 prints the summary of all.
source "$(dirname "$0")/dist_run.sh"
torchrun_tool "$4" infer.py "$1" "$2" "$3" "${@:5}"
