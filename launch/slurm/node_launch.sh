#!/bin/bash
# One node's share of a multi-node TurboTrain run; srun starts it once per node (one task per node).
#   node_launch.sh accelerate|deepspeed [launch/train.py arguments...]
# Needs MASTER_ADDR, MASTER_PORT (see common.sh); the node rank comes from SLURM_NODEID.
#
# Signals: Slurm delivers USR1/TERM to every process of the step. The launcher (torch elastic agent
# or DeepSpeed's launch.py) must not act on them -- it would kill the workers mid-checkpoint -- so it
# runs with USR1/TERM ignored, and the Python workers install their own handlers
# (trainer/engine/signals.py): they agree on the stop, checkpoint and exit 75. The launchers report a failed
# worker as exit 1, so this wrapper turns "stopped after USR1" back into 75 for the batch shell. A TERM
# (scancel, srun --kill-on-bad-exit after a peer failed, Slurm's own preemption) still makes the
# workers checkpoint within KillWait, but is not turned into a requeue request: it may be a real
# failure or a cancellation, and Slurm requeues preempted jobs itself where PreemptMode=REQUEUE.
set -uo pipefail
launcher=${1:?usage: node_launch.sh accelerate|deepspeed [train.py args...]}; shift
: "${MASTER_ADDR:?}" "${MASTER_PORT:?}" "${TURBOTRAIN_ROOT:?}"
PYTHON=${PYTHON:-python3}
NODE_RANK=${SLURM_NODEID:?not inside srun}
NNODES=${SLURM_NNODES:?not inside srun}
PROCS_PER_NODE=${PROCS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
TRAIN=$TURBOTRAIN_ROOT/launch/train.py

case $launcher in
    accelerate)
        cmd=("$PYTHON" -m accelerate.commands.launch --multi_gpu --num_machines "$NNODES"
             --num_processes $((NNODES * PROCS_PER_NODE)) --machine_rank "$NODE_RANK"
             --main_process_ip "$MASTER_ADDR" --main_process_port "$MASTER_PORT" --rdzv_backend static
             --same_network --mixed_precision "${MIXED_PRECISION:-bf16}" --dynamo_backend no "$TRAIN" "$@") ;;
    deepspeed)
        : "${HOSTFILE:?deepspeed needs HOSTFILE}"
        cmd=("$PYTHON" -m deepspeed.launcher.runner --hostfile "$HOSTFILE" --no_ssh --node_rank "$NODE_RANK"
             --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" "$TRAIN" "$@") ;;
    *) echo "node_launch.sh: unknown launcher '$launcher' (accelerate|deepspeed)" >&2; exit 2 ;;
esac

got_usr1=0
trap 'got_usr1=1' USR1
trap ':' TERM
# torch elastic would otherwise turn TERM into "kill all workers now".
export TORCHELASTIC_SIGNALS_TO_HANDLE=SIGINT,SIGHUP,SIGQUIT
( trap '' USR1 TERM; exec "${cmd[@]}" ) &
pid=$!
while :; do
    wait "$pid"; rc=$?
    if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi   # interrupted by a trap
    break
done
if [ "$got_usr1" = 1 ] && [ "$rc" -ne 0 ]; then
    echo "[turbotrain] node $NODE_RANK: stopped after USR1 (launcher exit $rc) -> exit 75 (requeue)" >&2
    exit 75
fi
exit "$rc"
