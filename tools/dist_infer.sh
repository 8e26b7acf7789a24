#!/usr/bin/env bash
# Folder inference with several processes, launched with torchrun (as dist_test.sh).
# Usage: bash tools/dist_infer.sh INPUT CONFIG CHECKPOINT NUM_PROCS --out-dir OUT [infer.py arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# With CUDA each process takes one GPU (NCCL); without, the processes run on the CPU (gloo).
# The images are split by their sorted relative paths; rank 0 prints the summary of all.
INPUT=$1
CONFIG=$2
CHECKPOINT=$3
GPUS=$4
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}

PYTHONPATH="$(dirname $0)/..":$PYTHONPATH \
python -m torch.distributed.run \
    --nnodes=$NNODES \
    --node_rank=$NODE_RANK \
    --master_addr=$MASTER_ADDR \
    --nproc_per_node=$GPUS \
    --master_port=$PORT \
    $(dirname "$0")/infer.py \
    "$INPUT" \
    "$CONFIG" \
    "$CHECKPOINT" \
    "${@:5}"
