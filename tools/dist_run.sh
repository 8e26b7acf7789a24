# Sourced by tools/dist_train.sh, tools/dist_test.sh and tools/dist_infer.sh: the torchrun call they share.
#   torchrun_tool NUM_PROCS TOOL [tool arguments...]
# starts NUM_PROCS processes per node that run `tools/TOOL [tool arguments...]` with the repository
# on PYTHONPATH. Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
torchrun_tool() {
    local procs=$1 tool=$2
    shift 2
    local tools
    tools="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
    PYTHONPATH="$tools/..${PYTHONPATH:+:$PYTHONPATH}" \
    python -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$procs" \
        --master_port="${PORT:-29500}" \
        "$tools/$tool" "$@"
}
