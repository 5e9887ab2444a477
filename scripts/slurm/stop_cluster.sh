#!/usr/bin/env bash
# Stop the single-node SLURM test cluster that start_cluster.sh started.
#
#   scripts/slurm/stop_cluster.sh [STATE_DIR]        (default /tmp/mindvis-slurm)
#
# Only the processes named in STATE_DIR/pids/*.pid are stopped, and only when
# the process behind the PID still is the daemon it was (a recycled PID is left
# alone). Safe to run after a failed or partial start, or twice in a row.
# Logs stay in STATE_DIR/log for a post-mortem.
set -uo pipefail

PROG="stop_cluster.sh"
STATE_DIR="${1:-/tmp/mindvis-slurm}"
case "$STATE_DIR" in -h|--help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
case "$STATE_DIR" in /*) ;; *) STATE_DIR="$(pwd)/$STATE_DIR" ;; esac
PIDS="$STATE_DIR/pids"
CONF="$STATE_DIR/etc/slurm.conf"
SYSTEM_CONF=/etc/slurm/slurm.conf
export SLURM_CONF="$CONF"

if [ ! -d "$STATE_DIR" ]; then
    echo "$PROG: nothing to stop: $STATE_DIR does not exist"
    exit 0
fi

pid_of() {  # pid_of NAME: the recorded PID when that process still is NAME
    local pid
    pid="$(cat "$PIDS/$1.pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
    echo "$pid"
}

# Jobs first, while the controller still runs: their steps would otherwise
# outlive slurmd. Bounded, so a wedged controller cannot block the stop.
if pid_of slurmctld >/dev/null && command -v squeue >/dev/null; then
    jobs="$(timeout 10 squeue --noheader --format=%A --states=PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null | tr '\n' ' ')"
    if [ -n "${jobs// /}" ]; then
        echo "$PROG: cancelling jobs $jobs"
        # shellcheck disable=SC2086
        timeout 10 scancel $jobs 2>/dev/null
        for _ in $(seq 50); do
            [ -z "$(timeout 5 squeue --noheader --format=%A --states=RUNNING,COMPLETING 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
fi

status=0
for name in slurmd slurmctld munged; do
    if pid="$(pid_of "$name")"; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 50); do   # up to 10 s for a clean exit
            [ -d "/proc/$pid" ] || break
            sleep 0.2
        done
        if [ -d "/proc/$pid" ]; then
            echo "$PROG: $name (pid $pid) ignored SIGTERM for 10 s, sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null
            sleep 0.2
        fi
        if [ -d "/proc/$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
            echo "$PROG: error: could not stop $name (pid $pid)" >&2
            status=1
            continue
        fi
        echo "$PROG: stopped $name (pid $pid)"
    fi
    rm -f "$PIDS/$name.pid"
done

# The /etc/slurm/slurm.conf link that start_cluster.sh made for this state folder.
if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
    rm -f "$SYSTEM_CONF"
fi
rm -f "$STATE_DIR/munge/munged.socket" "$STATE_DIR/munge/munged.socket.lock"
exit "$status"
