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
# shellcheck source=tools/slurm_srun.sh
source "$(dirname "$0")/slurm_srun.sh"
slurm_srun "$1" "$2" train.py "$3" --launcher=slurm "${@:4}"
