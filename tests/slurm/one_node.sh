#!/usr/bin/env bash
# A one-node SLURM (Debian's slurm-wlm 22.05) with accounting, for the integration test
# (tests/test_slurm_integration.py, issue 21).  No systemd: every daemon is started by hand,
# in the foreground of its own session, and its PID recorded; `stop` ends exactly those PIDs.
#
#   tests/slurm/one_node.sh install DIR   check for root, install the packages when missing
#   tests/slurm/one_node.sh start DIR     install if needed, then munged, mariadbd, slurmdbd,
#                                          slurmctld, slurmd; DIR/env sets SLURM_CONF
#   tests/slurm/one_node.sh stop DIR      cancel the jobs, then stop the recorded PIDs
#
# Everything (configs, keys, databases, spools, logs, PID files) lives under DIR; ports are
# free ones picked at start.  Where the machine cannot run it (not root, no apt-get, the
# packages cannot be installed) `install` and `start` print one line starting with "skip:",
# write it to DIR/skip and exit 0: the caller checks DIR/skip.  A failed start stops what it
# had started (trap) and exits non-zero; DIR/log/ keeps the daemons' logs.
set -euo pipefail

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
BINARIES=(munged mungekey mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct
          sacctmgr scontrol sinfo squeue scancel)
CLUSTER=s3dtest
# Requeued jobs wait for the credential lifetime (120 s by default) before they start again.
CRED_EXPIRE_S=10
START_TIMEOUT_S=120

usage() { echo "usage: $0 install|start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
ACTION=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
export PATH="$PATH:/usr/sbin:/sbin"

skip() {
    echo "skip (one-node SLURM): $*" | tee "$DIR/skip"
    exit 0
}

have_all() {
    local b path
    for b in "${BINARIES[@]}"; do
        path=$(command -v "$b" 2>/dev/null) && [ -f "$path" ] && [ -x "$path" ] || return 1
    done
}

install_packages() {
    rm -f "$DIR/skip"
    have_all && return 0
    command -v apt-get >/dev/null 2>&1 || skip "the SLURM packages are missing and there is no apt-get"
    # No service may start during the install: this script starts its own daemons.
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local log="$DIR/apt.log" ok=0
    export DEBIAN_FRONTEND=noninteractive
    if apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$log" 2>&1; then
        ok=1
    elif apt-get update -q >>"$log" 2>&1 &&
         apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$log" 2>&1; then
        ok=1
    fi
    [ "$made_policy" -eq 1 ] && rm -f "$policy"
    [ "$ok" -eq 1 ] || skip "apt-get could not install ${PACKAGES[*]} (see $log)"
    have_all || skip "installed ${PACKAGES[*]} but some commands are still missing"
}

free_ports() {  # N free TCP ports on 127.0.0.1
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# -- processes: started in their own session, recorded in DIR/pids as "name pid" ----------

launch() {  # launch NAME COMMAND...: run in the background, record its PID
    local name=$1; shift
    setsid "$@" >"$DIR/log/$name.out" 2>&1 </dev/null &
    echo "$name $!" >>"$DIR/pids"
}

ours() {  # ours PID: the process is alive and its command line or environment names DIR
    [ -r "/proc/$1/cmdline" ] || return 1
    tr '\0' '\n' <"/proc/$1/cmdline" | grep -qF "$DIR" ||
        { tr '\0' '\n' <"/proc/$1/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$DIR/etc/slurm.conf"
}

alive() {  # alive NAME: its recorded process still runs
    local pid
    pid=$(awk -v n="$1" '$1 == n {print $2}' "$DIR/pids" | tail -n 1)
    [ -n "$pid" ] && ours "$pid"
}

up() {  # up NAME COMMAND...: wait for COMMAND, failing at once if NAME died
    local name=$1 deadline=$((SECONDS + START_TIMEOUT_S)); shift
    until "$@" >/dev/null 2>&1; do
        if ! alive "$name"; then
            echo "one_node.sh: $name exited at start; see $DIR/log/" >&2
            tail -n 5 "$DIR/log/$name".* >&2 || true
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "one_node.sh: $name did not come up in ${START_TIMEOUT_S}s; see $DIR/log/" >&2
            return 1
        fi
        sleep 0.5
    done
}

stop() {
    [ -f "$DIR/pids" ] || return 0
    if [ -f "$DIR/etc/slurm.conf" ] && alive slurmctld; then
        # the jobs' processes are not ours to kill by PID: let SLURM end them
        SLURM_CONF="$DIR/etc/slurm.conf" scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
        local deadline=$((SECONDS + 20))
        while [ "$SECONDS" -lt "$deadline" ] &&
              [ -n "$(SLURM_CONF="$DIR/etc/slurm.conf" squeue -h -t R,CG 2>/dev/null)" ]; do
            sleep 0.5
        done
    fi
    local name pid pids=()
    # reverse order of start: slurmd, slurmctld, slurmdbd, mariadbd, munged
    while read -r name pid; do
        if ours "$pid"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done < <(tac "$DIR/pids")
    local deadline=$((SECONDS + 20))
    for pid in "${pids[@]}"; do
        while ours "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        ours "$pid" && kill -KILL "$pid" 2>/dev/null || true
    done
    mv "$DIR/pids" "$DIR/pids.stopped"
}

ready() {  # what `start` needs, installed when missing; else one skip line
    [ "$(id -u)" -eq 0 ] || skip "a one-node SLURM needs root"
    install_packages
    command -v python3 >/dev/null 2>&1 || skip "python3 is needed to pick free ports"
}

start() {
    ready
    if [ -f "$DIR/pids" ]; then
        echo "one_node.sh: $DIR already has a running SLURM (stop it first)" >&2
        exit 1
    fi
    trap 'echo "one_node.sh: start failed; stopping what it started" >&2; stop' EXIT
    trap 'exit 1' INT TERM HUP
    mkdir -p "$DIR"/{etc,log,munge,mysql,spool/ctld,spool/d}
    chmod 700 "$DIR/munge" "$DIR/etc"
    local host cpus mem
    host=$(hostname -s)
    read -r DB_PORT DBD_PORT CTLD_PORT SLURMD_PORT < <(free_ports 4)
    local conf_d
    conf_d=$(slurmd -C | head -n 1)
    cpus=$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$conf_d")
    mem=$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$conf_d")
    local node_hw
    node_hw=$(sed 's/^NodeName=[^ ]* //' <<<"$conf_d")  # CPUs Boards Sockets... RealMemory
    [ -n "$cpus" ] && [ -n "$mem" ] || { echo "one_node.sh: cannot read slurmd -C: $conf_d" >&2; exit 1; }

    # munge
    mungekey --create --keyfile="$DIR/munge/munge.key" --force >/dev/null
    chmod 600 "$DIR/munge/munge.key"
    local sock="$DIR/munge/munge.socket"
    launch munged munged --foreground --force --socket="$sock" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/munge/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munge/munged.seed"
    up munged test -S "$sock"

    # MariaDB for slurmdbd (sacct: without accounting submitit cannot see a task that died)
    mariadb-install-db --no-defaults --datadir="$DIR/mysql/data" --user=root \
        --auth-root-authentication-method=normal --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1
    launch mariadbd mariadbd --no-defaults --datadir="$DIR/mysql/data" --user=root \
        --socket="$DIR/mysql/mysqld.sock" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --pid-file="$DIR/mysql/mariadbd.pid" --log-error="$DIR/log/mariadbd.log" \
        --skip-grant-tables --innodb-buffer-pool-size=32M --skip-log-bin
    up mariadbd test -S "$DIR/mysql/mysqld.sock"

    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$sock
DbdHost=$host
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run-slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
    cat >"$DIR/etc/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock,cred_expire=$CRED_EXPIRE_S
StateSaveLocation=$DIR/spool/ctld
SlurmdSpoolDir=$DIR/spool/d
SlurmctldPidFile=$DIR/spool/slurmctld.pid
SlurmdPidFile=$DIR/spool/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
# for slurmdbd connections the munge socket is AccountingStoragePass, not AuthInfo
AccountingStoragePass=$sock
JobCompType=jobcomp/none
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
InactiveLimit=0
Waittime=0
PropagateResourceLimits=NONE
MailProg=/bin/true
PlugStackConfig=$DIR/etc/plugstack.conf
NodeName=$host NodeAddr=127.0.0.1 $node_hw State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$DIR/etc/plugstack.conf"
    printf 'export SLURM_CONF=%q\n' "$DIR/etc/slurm.conf" >"$DIR/env"
    export SLURM_CONF="$DIR/etc/slurm.conf"

    launch slurmdbd slurmdbd -D  # reads slurmdbd.conf next to $SLURM_CONF
    # slurmdbd answers once it has its tables; then the cluster is registered
    up slurmdbd sacctmgr -i add cluster "$CLUSTER"
    launch slurmctld slurmctld -D -i -f "$DIR/etc/slurm.conf"
    up slurmctld scontrol ping
    launch slurmd slurmd -D -N "$host" -f "$DIR/etc/slurm.conf"
    up slurmd node_idle
    trap - EXIT
    echo "up: SLURM_CONF=$SLURM_CONF (node $host, $cpus CPUs, $mem MB)"
}

node_idle() {
    [ "$(sinfo -h -o %t 2>/dev/null | head -n 1)" = idle ]
}

case "$ACTION" in
    install) ready ;;
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
