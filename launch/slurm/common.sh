# Shared by the TurboTrain sbatch scripts (sourced, not run): rendezvous, network settings, and the
# preemption -> requeue logic of the batch shell. Everything can be overridden from the environment.
#
#   TURBOTRAIN_ROOT   repository checkout (default: the submit directory)
#   RUN_DIR           run directory; fixed per job so a requeued job resumes (default: runs/slurm-<jobid>)
#   MASTER_PORT       rendezvous port on the first node (default: derived from the job id)
#   MAX_REQUEUES      stop requeueing after this many restarts (default: 20)
#   PYTHON            interpreter on the nodes (default: python3)

TURBOTRAIN_ROOT=${TURBOTRAIN_ROOT:-${SLURM_SUBMIT_DIR:?not inside a Slurm job}}
EXIT_PREEMPTED=75   # launch/train.py: "checkpoint saved, requeue me"

turbotrain_rendezvous() {
    # The first node of the allocation hosts the rendezvous (rank 0).
    MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
    MASTER_PORT=${MASTER_PORT:-$((20000 + SLURM_JOB_ID % 20000))}
    RUN_DIR=${RUN_DIR:-$TURBOTRAIN_ROOT/runs/slurm-$SLURM_JOB_ID}
    PYTHON=${PYTHON:-python3}
    export MASTER_ADDR MASTER_PORT RUN_DIR PYTHON TURBOTRAIN_ROOT
    export PYTHONPATH="$TURBOTRAIN_ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
    # NCCL (GPU clusters). Set NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME to the interface that joins the
    # nodes (e.g. ib0, eth0) when hosts have several; NCCL_IB_DISABLE=1 on clusters without InfiniBand.
    export NCCL_DEBUG=${NCCL_DEBUG:-WARN}
    export TORCH_NCCL_ASYNC_ERROR_HANDLING=${TORCH_NCCL_ASYNC_ERROR_HANDLING:-1}   # a dead peer fails fast, not hangs
    export NCCL_SOCKET_NTHREADS=${NCCL_SOCKET_NTHREADS:-4} NCCL_NSOCKS_PERTHREAD=${NCCL_NSOCKS_PERTHREAD:-2}
    echo "[turbotrain] job $SLURM_JOB_ID restart ${SLURM_RESTART_COUNT:-0}: $SLURM_NNODES nodes ($SLURM_JOB_NODELIST)," \
         "rendezvous $MASTER_ADDR:$MASTER_PORT, run dir $RUN_DIR"
}

turbotrain_train_args() {
    # The user's arguments plus run.dir=$RUN_DIR (unless given), printed one per line.
    local arg has_dir=0
    for arg in "$@"; do
        printf '%s\n' "$arg"
        case $arg in run.dir=*) has_dir=1 ;; esac
    done
    [ "$has_dir" = 1 ] || printf 'run.dir=%s\n' "$RUN_DIR"
}

turbotrain_run_and_requeue() {
    # Run the step "$@" (srun ...) in the background so that signals to this batch shell are
    # handled while it runs; a USR1/TERM sent to the batch shell only (--signal=B:USR1@T) is
    # forwarded to the job steps. Exit 75 from the step requeues the job.
    local pid rc
    trap 'echo "[turbotrain] batch shell got USR1, forwarding to the job steps"; scancel --signal=USR1 "$SLURM_JOB_ID"' USR1
    "$@" &
    pid=$!
    while :; do
        wait "$pid"; rc=$?
        if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi   # wait was interrupted by a trap
        break
    done
    if [ "$rc" -eq "$EXIT_PREEMPTED" ]; then
        if [ "${SLURM_RESTART_COUNT:-0}" -ge "${MAX_REQUEUES:-20}" ]; then
            echo "[turbotrain] preempted, but already restarted ${SLURM_RESTART_COUNT} times (MAX_REQUEUES); not requeueing" >&2
            return "$rc"
        fi
        echo "[turbotrain] preempted: checkpoint saved; requeueing job $SLURM_JOB_ID"
        scontrol requeue "$SLURM_JOB_ID"
        return "$rc"
    fi
    echo "[turbotrain] training step ended with exit code $rc"
    return "$rc"
}
