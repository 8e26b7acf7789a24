#!/usr/bin/env bash
# Training on a Slurm cluster, as mmseg's tools/slurm_train.sh: one task per GPU, started by
# srun; tools/train.py runs with --launcher slurm (mmengine reads SLURM_PROCID, SLURM_NTASKS,
# SLURM_NODELIST and MASTER_PORT from the environment).
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#            bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py arguments...]
# GPUS: tasks in all (default 4); GPUS_PER_NODE: tasks and GPUs per node (default 4);
# CPUS_PER_TASK: data-loading cores per task (default 5); SRUN_ARGS: more srun options.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "slurm_train.sh: error: usage: bash tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py arguments...]" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-4}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOLS="$(cd "$(dirname "$0")" && pwd)"

# SRUN_ARGS is split into words on purpose: it holds several srun options.
# shellcheck disable=SC2086
PYTHONPATH="$TOOLS/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
    --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" \
    --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 \
    $SRUN_ARGS \
    python -u "$TOOLS/train.py" "$CONFIG" --launcher=slurm "${@:4}"
