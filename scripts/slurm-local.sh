#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, from the OS packages (Debian/Ubuntu:
# apt-get install slurmctld slurmd slurm-client munge): to try `hydra/launcher=slurm` before a
# real cluster, and for the slow tests (tests/test_slurm.py).
#
#   scripts/slurm-local.sh start    # prints the `export SLURM_CONF=...` its commands need
#   scripts/slurm-local.sh status
#   scripts/slurm-local.sh stop     # cancels its jobs, stops its own daemons (by their PIDs)
#
# Everything lives in one state dir (LITHOVAE_SLURM_DIR, default /tmp/lithovae-slurm): its own
# slurm.conf, munge key and socket, logs and PIDs; nothing under /etc is touched. One partition,
# `debug`, with this machine's CPUs and memory; no accounting (no slurmdbd), no cgroups. Ports:
# LITHOVAE_SLURM_PORT (slurmctld, default 6817) and the next one (slurmd).
# Where it cannot run it says in one line what is missing and exits 1.
set -euo pipefail

STATE=${LITHOVAE_SLURM_DIR:-/tmp/lithovae-slurm}
PORT=${LITHOVAE_SLURM_PORT:-6817}
CONF=$STATE/slurm.conf
DAEMONS=(slurmctld slurmd munged)
START_TIMEOUT_S=60

say() { echo "slurm-local: $*"; }
fail() { echo "slurm-local: $*" >&2; exit 1; }

missing() {
    # one line naming what this machine lacks, or nothing
    [ "$(id -u)" -eq 0 ] || { echo "needs root (slurmd starts jobs as their users): run it as root or with sudo"; return; }
    local absent=()
    for cmd in slurmctld slurmd munged sbatch srun sinfo scontrol scancel squeue; do
        PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null || absent+=("$cmd")
    done
    if [ ${#absent[@]} -gt 0 ]; then
        echo "missing ${absent[*]}: install the packages (apt-get install slurmctld slurmd slurm-client munge)"
    fi
}

pid_of() {  # the PID in <state>/<daemon>.pid if that process is alive
    local file=$STATE/$1.pid pid
    [ -f "$file" ] || return 1
    pid=$(cat "$file")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

answering() { SLURM_CONF=$CONF timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

write_conf() {
    local host cpus mem_mb
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mkdir -p "$STATE/ctld" "$STATE/d" "$STATE/munge"
    chmod 700 "$STATE/munge"
    cat > "$CONF" <<CONF
# written by scripts/slurm-local.sh: a single-node cluster for trying lithovae's SLURM launcher
ClusterName=lithovae-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$STATE/munge/munge.socket
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# no cgroups: processes tracked through /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
# no accounting database: squeue (not sacct) reports job states
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
ReturnToService=2
SlurmdParameters=config_overrides
# a requeued or cancelled job has KillWait seconds between SIGTERM and SIGKILL
KillWait=30
MinJobAge=300
InactiveLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    local why
    why=$(missing)
    [ -z "$why" ] || fail "$why"
    if pid_of slurmctld >/dev/null && answering; then
        say "already running ($STATE)"
        echo "export SLURM_CONF=$CONF"
        return
    fi
    stop_daemons
    rm -rf "$STATE/ctld" "$STATE/d"   # a fresh cluster: no jobs left from an earlier start
    write_conf
    local key=$STATE/munge/munge.key
    [ -f "$key" ] || { dd if=/dev/urandom of="$key" bs=1 count=1024 status=none; chmod 400 "$key"; }
    PATH=$PATH:/usr/sbin:/sbin
    munged --force --socket="$STATE/munge/munge.socket" --key-file="$key" --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/munged.log" --seed-file="$STATE/munge/munged.seed" \
        || fail "munged did not start: see $STATE/munged.log"
    SLURM_CONF=$CONF slurmctld -i || fail "slurmctld did not start: see $STATE/slurmctld.log"
    SLURM_CONF=$CONF slurmd || fail "slurmd did not start: see $STATE/slurmd.log"
    local waited=0
    until answering; do
        sleep 1
        waited=$((waited + 1))
        if [ $waited -ge $START_TIMEOUT_S ]; then
            stop_daemons
            fail "no idle node after ${START_TIMEOUT_S}s: see $STATE/slurmctld.log and $STATE/slurmd.log"
        fi
    done
    say "running: partition debug, $(nproc) CPUs, state in $STATE"
    echo "export SLURM_CONF=$CONF"
}

stop_daemons() {
    local pid daemon waited
    for daemon in "${DAEMONS[@]}"; do
        pid=$(pid_of "$daemon") || continue
        kill "$pid" 2>/dev/null || true
        waited=0
        while kill -0 "$pid" 2>/dev/null && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        rm -f "$STATE/$daemon.pid"
    done
}

stop() {
    if pid_of slurmctld >/dev/null; then
        # its jobs first: their steps would outlive slurmd
        SLURM_CONF=$CONF timeout 10 scancel --full --signal=KILL --state=RUNNING "--partition=debug" 2>/dev/null || true
        SLURM_CONF=$CONF timeout 10 scancel "--partition=debug" 2>/dev/null || true
        local waited=0
        while [ -n "$(SLURM_CONF=$CONF timeout 10 squeue -h -o %i 2>/dev/null)" ] && [ $waited -lt 30 ]; do
            sleep 1; waited=$((waited + 1))
        done
    fi
    stop_daemons
    say "stopped ($STATE)"
}

status() {
    local line=() daemon pid
    for daemon in "${DAEMONS[@]}"; do
        pid=$(pid_of "$daemon") && line+=("$daemon $pid") || line+=("$daemon down")
    done
    if pid_of slurmctld >/dev/null && answering; then
        say "running (${line[*]}); export SLURM_CONF=$CONF"
    else
        say "not running (${line[*]})"
        return 3
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    missing) why=$(missing); [ -z "$why" ] || { echo "slurm-local: $why"; exit 1; } ;;
    *) echo "usage: $0 start|stop|status|missing" >&2; exit 2 ;;
esac
