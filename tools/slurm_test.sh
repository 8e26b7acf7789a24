#!/usr/bin/env bash
# Testing on a Slurm cluster, as mmseg's tools/slurm_test.sh: one task per GPU, started by
# srun; tools/test.py runs with --launcher slurm.
# Usage: [GPUS=8] [GPUS_PER_NODE=8] [CPUS_PER_TASK=5] [SRUN_ARGS="..."] \
#            bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments...]
# GPUS: tasks in all (default 4); GPUS_PER_NODE: tasks and GPUs per node (default 4);
# CPUS_PER_TASK: data-loading cores per task (default 5); SRUN_ARGS: more srun options.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "slurm_test.sh: error: usage: bash tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py arguments...]" >&2
    exit 2
fi
# shellcheck source=tools/slurm_srun.sh
source "$(dirname "$0")/slurm_srun.sh"
slurm_srun "$1" "$2" test.py "$3" "$4" --launcher=slurm "${@:5}"
