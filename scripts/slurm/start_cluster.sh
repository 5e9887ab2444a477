#!/usr/bin/env bash
# Start a real single-node SLURM cluster on this machine, for tests and demos:
# munged + slurmctld + slurmd from Debian's packages, all on 127.0.0.1.
#
#   apt-get install -y munge slurmctld slurmd slurm-client     # once, as root
#   scripts/slurm/start_cluster.sh [--gpus N] [--partition NAME] [--max-time T] [--timeout S] [STATE_DIR]
#   export SLURM_CONF=STATE_DIR/etc/slurm.conf                 # or: source STATE_DIR/cluster.env
#   scripts/slurm/stop_cluster.sh [STATE_DIR]
#
# STATE_DIR (default /tmp/mindvis-slurm) receives the generated configuration
# (etc/), the MUNGE key and socket (munge/), the daemons' state, logs (log/)
# and PID files (pids/), which stop_cluster.sh uses to stop exactly these
# processes. Running it again while the cluster is up only reports it.
#   --gpus N          advertise N fake GPUs (GRES backed by empty files) so jobs that
#                     request GPUs are scheduled; they still run on the CPU (default 0)
#   --partition NAME  name of the only partition (default: mindvis)
#   --max-time T      partition time limit, SLURM syntax (default: INFINITE)
#   --timeout S       seconds to wait for the node to become idle (default: 60)
# Environment: MINDVIS_SLURMCTLD_PORT / MINDVIS_SLURMD_PORT (default 6817 / 6818).
#
# Job steps (srun inside a batch job) read /etc/slurm/slurm.conf: the SLURM
# executor plugin of Snakemake removes SLURM_* variables, SLURM_CONF included,
# before it calls srun. So when /etc/slurm/slurm.conf does not exist, this
# script links it to the generated file (and stop_cluster.sh removes the link);
# an existing configuration that is not such a link is never touched.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROG="start_cluster.sh"
GPUS=0
PARTITION=mindvis
MAX_TIME=INFINITE
TIMEOUT=60
STATE_DIR=/tmp/mindvis-slurm
CTLD_PORT="${MINDVIS_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${MINDVIS_SLURMD_PORT:-6818}"
SYSTEM_CONF=/etc/slurm/slurm.conf
# First line of the template: marks a configuration (or link target) as ours.
MARKER="# slurm.conf of the single-node TEST cluster started by scripts/slurm/start_cluster.sh."

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --gpus) GPUS="${2:?--gpus needs a number}"; shift 2 ;;
        --partition) PARTITION="${2:?--partition needs a name}"; shift 2 ;;
        --max-time) MAX_TIME="${2:?--max-time needs a time}"; shift 2 ;;
        --timeout) TIMEOUT="${2:?--timeout needs seconds}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) STATE_DIR="$1"; shift ;;
    esac
done
[[ "$GPUS" =~ ^[0-9]+$ ]] || die "--gpus must be a whole number, got '$GPUS'"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be whole seconds, got '$TIMEOUT'"
[[ "$PARTITION" =~ ^[A-Za-z0-9_-]+$ ]] || die "--partition may hold letters, digits, _ and - only"

# --- preconditions: say exactly what is missing ------------------------------
[ "$(uname -s)" = Linux ] || die "a SLURM test cluster needs Linux (this is $(uname -s))"
[ "$(id -u)" -eq 0 ] || die "run as root: slurmd starts jobs as their owner and munged must be started as the munge user"
missing=()
for bin in munged mungekey munge unmunge slurmctld slurmd sinfo scontrol squeue scancel sbatch srun setpriv setsid timeout; do
    command -v "$bin" >/dev/null 2>&1 || missing+=("$bin")
done
[ ${#missing[@]} -eq 0 ] || die "missing programs: ${missing[*]} (apt-get install -y munge slurmctld slurmd slurm-client)"
id munge >/dev/null 2>&1 || die "no 'munge' user: install Debian's munge package"
case "$STATE_DIR" in /*) ;; *) STATE_DIR="$(pwd)/$STATE_DIR" ;; esac

CONF="$STATE_DIR/etc/slurm.conf"
PIDS="$STATE_DIR/pids"
LOGS="$STATE_DIR/log"
MUNGE_DIR="$STATE_DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munged.socket"
export SLURM_CONF="$CONF"

running() {  # running NAME: the process recorded in pids/NAME.pid has not exited
    local pid
    pid="$(cat "$PIDS/$1.pid" 2>/dev/null)" && [ -n "$pid" ] && [ -d "/proc/$pid" ]
}

alive() {  # alive NAME: the process recorded in pids/NAME.pid runs and is NAME
    local pid
    pid="$(cat "$PIDS/$1.pid" 2>/dev/null)" || return 1
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

node_state() {
    timeout 10 sinfo --noheader --Node --nodes="$NODE_NAME" --format=%T 2>/dev/null | head -n1 | tr -d ' *'
}

show_logs() {
    for log in "$LOGS"/munged.out "$MUNGE_DIR"/munged.log "$LOGS"/slurmctld.log "$LOGS"/slurmctld.out "$LOGS"/slurmd.log "$LOGS"/slurmd.out; do
        [ -s "$log" ] || continue
        echo "----- last lines of $log -----" >&2
        tail -n 15 "$log" >&2
    done
}

fail() {  # report, show the daemons' logs, stop what this start began
    echo "$PROG: error: $*" >&2
    show_logs
    echo "$PROG: stopping the partly started cluster (logs stay in $LOGS)" >&2
    "$SCRIPT_DIR/stop_cluster.sh" "$STATE_DIR" >&2 || true
    exit 1
}

wait_for() {  # wait_for DESCRIPTION COMMAND...: poll every 0.2 s until TIMEOUT
    local what="$1"; shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@"; do
        [ $SECONDS -lt $deadline ] || fail "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}

NODE_NAME="$(hostname -s)"
if alive munged && alive slurmctld && alive slurmd; then
    state="$(node_state)"
    if [ "$state" = idle ] || [ "$state" = mixed ] || [ "$state" = allocated ]; then
        echo "SLURM test cluster already running under $STATE_DIR (node $NODE_NAME is $state)."
        echo "  export SLURM_CONF=$CONF"
        exit 0
    fi
fi
# Leftovers of an earlier, failed or unfinished start: stop them by PID file.
"$SCRIPT_DIR/stop_cluster.sh" "$STATE_DIR" >/dev/null 2>&1 || true

mkdir -p "$STATE_DIR"/{etc,pids,log,run,slurmctld,slurmd} "$MUNGE_DIR"
chmod go+x "$STATE_DIR"   # munged (as munge) must traverse it to reach its socket

# --- MUNGE: a private key and socket, daemon running as the munge user --------
# munged wants its socket folder owned by munge and traversable by all clients.
chown munge:munge "$MUNGE_DIR"
chmod 0711 "$MUNGE_DIR"
if [ ! -s "$MUNGE_DIR/munge.key" ]; then
    mungekey --create --keyfile="$MUNGE_DIR/munge.key" || die "mungekey could not create $MUNGE_DIR/munge.key"
fi
chown munge:munge "$MUNGE_DIR/munge.key"
chmod 0400 "$MUNGE_DIR/munge.key"
setpriv --reuid=munge --regid=munge --clear-groups test -x "$MUNGE_DIR" ||
    die "the munge user cannot reach $MUNGE_DIR: every folder above it needs o+x (e.g. use a state folder directly under /tmp)"
rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
# setsid: the daemons leave the caller's session and keep no pipe of its open.
setsid setpriv --reuid=munge --regid=munge --init-groups \
    munged --foreground --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" </dev/null >>"$LOGS/munged.out" 2>&1 &
echo $! >"$PIDS/munged.pid"
munge_works() {
    running munged || fail "munged exited"
    munge --socket="$MUNGE_SOCKET" --no-input 2>/dev/null | unmunge --socket="$MUNGE_SOCKET" >/dev/null 2>&1
}
wait_for "munged to answer on $MUNGE_SOCKET" munge_works

# --- slurm.conf from the template, with this machine's hardware ---------------
# slurmd -C prints what slurmd will detect; declaring more makes the node INVALID.
hardware="$(slurmd -C | head -n1)" || fail "slurmd -C failed"
hardware_fields=""
for key in CPUs Boards SocketsPerBoard CoresPerSocket ThreadsPerCore RealMemory; do
    value="$(sed -n "s/.*\b$key=\([0-9]*\).*/\1/p" <<<"$hardware")"
    [ -n "$value" ] || fail "slurmd -C did not report $key: $hardware"
    hardware_fields+="$key=$value "
    [ "$key" = CPUs ] && cpus="$value"
    [ "$key" = RealMemory ] && real_memory="$value"
done
# A job without a memory request gets an equal share of the node per CPU.
def_mem_per_cpu=$((real_memory / cpus))
node_gres=""
rm -f "$STATE_DIR/etc/gres.conf"
if [ "$GPUS" -gt 0 ]; then
    # slurmd drops a GPU without a device file: empty files stand in for them.
    mkdir -p "$STATE_DIR/fake-gpus"
    for ((i = 0; i < GPUS; i++)); do : >"$STATE_DIR/fake-gpus/gpu$i"; done
    node_gres="Gres=gpu:$GPUS"
    echo "NodeName=$NODE_NAME Name=gpu File=$STATE_DIR/fake-gpus/gpu[0-$((GPUS - 1))]" >"$STATE_DIR/etc/gres.conf"
fi
sed -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@NODE_NAME@|$NODE_NAME|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    -e "s|@DEF_MEM_PER_CPU@|$def_mem_per_cpu|g" -e "s|@NODE_HARDWARE@|${hardware_fields% }|g" \
    -e "s|@NODE_GRES@|$node_gres|g" -e "s|@PARTITION@|$PARTITION|g" -e "s|@MAX_TIME@|$MAX_TIME|g" \
    "$SCRIPT_DIR/slurm.conf.template" >"$CONF"
head -n1 "$CONF" | grep -qxF "$MARKER" || fail "template $SCRIPT_DIR/slurm.conf.template lost its first line"

# --- /etc/slurm/slurm.conf for job steps (see the header) ---------------------
if [ -L "$SYSTEM_CONF" ] && { [ ! -e "$SYSTEM_CONF" ] || head -n1 "$SYSTEM_CONF" | grep -qxF "$MARKER"; }; then
    # A link of another test cluster: repoint it, unless that cluster still runs.
    other_state="$(dirname "$(dirname "$(readlink "$SYSTEM_CONF")")")"
    if [ "$other_state" != "$STATE_DIR" ]; then
        other_pid="$(cat "$other_state/pids/slurmctld.pid" 2>/dev/null || true)"
        if [ -n "$other_pid" ] && [ "$(cat "/proc/$other_pid/comm" 2>/dev/null)" = slurmctld ]; then
            fail "another test cluster runs under $other_state and owns $SYSTEM_CONF; stop it first: $SCRIPT_DIR/stop_cluster.sh $other_state"
        fi
    fi
    ln -sfn "$CONF" "$SYSTEM_CONF"
elif [ ! -e "$SYSTEM_CONF" ]; then
    mkdir -p "$(dirname "$SYSTEM_CONF")"
    ln -s "$CONF" "$SYSTEM_CONF"
elif [ "$(readlink -f "$SYSTEM_CONF")" != "$CONF" ]; then
    fail "$SYSTEM_CONF exists and is not a link made by this script; job steps (srun) would read it instead of $CONF. Move it away or start this cluster on another machine."
fi

# --- slurmctld and slurmd in the foreground (-D), backgrounded here -----------
# -c: a fresh cluster, no jobs or node states from an earlier start.
setsid slurmctld -D -c -f "$CONF" </dev/null >>"$LOGS/slurmctld.out" 2>&1 &
echo $! >"$PIDS/slurmctld.pid"
ctld_up() { running slurmctld || fail "slurmctld exited"; timeout 5 scontrol ping 2>/dev/null | grep -q "is UP"; }
wait_for "slurmctld to answer scontrol ping" ctld_up

setsid slurmd -D -c -f "$CONF" -N "$NODE_NAME" </dev/null >>"$LOGS/slurmd.out" 2>&1 &
echo $! >"$PIDS/slurmd.pid"
node_idle() {
    running slurmd || fail "slurmd exited"
    local state
    state="$(node_state)"
    case "$state" in
        idle) return 0 ;;
        *drain*|*inval*|*down*|*fail*)
            # slurmctld marks a node down until it registers; only a reason means trouble
            reason="$(timeout 10 sinfo --noheader --Node --nodes="$NODE_NAME" --format=%E 2>/dev/null | head -n1)"
            case "$reason" in ""|none|"Not responding") return 1 ;; esac
            fail "node $NODE_NAME is $state: $reason" ;;
        *) return 1 ;;
    esac
}
wait_for "node $NODE_NAME to become idle (sinfo)" node_idle

cat >"$STATE_DIR/cluster.env" <<EOF
# source this file to use the test cluster started by start_cluster.sh
export SLURM_CONF=$CONF
export MINDVIS_SLURM_PARTITION=$PARTITION
export MINDVIS_SLURM_NODE=$NODE_NAME
EOF
echo "SLURM test cluster is up: node $NODE_NAME (${hardware_fields% }, GPUs=$GPUS), partition $PARTITION, state in $STATE_DIR."
echo "  export SLURM_CONF=$CONF      # or: source $STATE_DIR/cluster.env"
echo "  stop with: $SCRIPT_DIR/stop_cluster.sh $STATE_DIR"
