#!/usr/bin/env bash
# Multi-process training, as mmseg's tools/dist_train.sh, launched with torchrun.
# Usage: bash tools/dist_train.sh CONFIG NUM_PROCS [train.py arguments...]
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# Without CUDA the processes run on the CPU with the gloo backend.
CONFIG=$1
GPUS=$2
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
    $(dirname "$0")/train.py \
    $CONFIG \
    --launcher pytorch ${@:3}
