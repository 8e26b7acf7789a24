# Sourced by tools/slurm_train.sh and tools/slurm_test.sh: the srun call they share.
#   slurm_srun PARTITION JOB_NAME TOOL [tool arguments...]
# starts GPUS tasks (GPUS_PER_NODE per node, CPUS_PER_TASK cores each, SRUN_ARGS added to
# srun) that run `python -u tools/TOOL [tool arguments...]` with the repository on PYTHONPATH.
slurm_srun() {
    local partition=$1 job_name=$2 tool=$3
    shift 3
    local tools
    tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    # SRUN_ARGS is split into words on purpose: it holds several srun options.
    # shellcheck disable=SC2086
    PYTHONPATH="$tools/..${PYTHONPATH:+:$PYTHONPATH}" \
    srun -p "$partition" \
        --job-name="$job_name" \
        --gres=gpu:"${GPUS_PER_NODE:-4}" \
        --ntasks="${GPUS:-4}" \
        --ntasks-per-node="${GPUS_PER_NODE:-4}" \
        --cpus-per-task="${CPUS_PER_TASK:-5}" \
        --kill-on-bad-exit=1 \
        ${SRUN_ARGS:-} \
        python -u "$tools/$tool" "$@"
}
