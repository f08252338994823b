#!/usr/bin/env bash
# Stop what engines/start_slurm.sh started, and nothing else: the daemons named in $HARNESS_SLURM_DIR/started, each
# through its PID file after checking that the PID still runs that program (SIGTERM; SIGKILL after 30 s). Jobs still
# queued are cancelled first. State, logs and the accounting database stay for the next start; --purge deletes them.
set -uo pipefail
DIR=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
STARTED=$DIR/started
log() { echo "[stop_slurm] $*"; }

pidfile() { case $1 in munged) echo /run/munge/munged.pid ;; *) echo "$DIR/run/$1.pid" ;; esac; }
program() { case $1 in mariadb) echo mariadbd ;; *) echo "$1" ;; esac; }

stop() {
  local pid
  pid=$(cat "$(pidfile "$1")" 2>/dev/null | tr -dc 0-9)
  if [[ -z $pid ]] || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$(program "$1")"; then
    log "$1: not running"
    return
  fi
  kill -TERM "$pid"
  for _ in $(seq 120); do [[ -d /proc/$pid ]] || break; sleep 0.25; done
  if [[ -d /proc/$pid ]]; then kill -KILL "$pid"; log "$1 ($pid): killed after 30 s"; else log "$1 ($pid): stopped"; fi
}

if [[ -s $STARTED ]]; then
  grep -qx slurmctld "$STARTED" && timeout 10 scancel --user="$(id -un)" 2>/dev/null
  for name in slurmd slurmctld slurmdbd mariadb munged; do  # the reverse of the start order
    grep -qx "$name" "$STARTED" && stop "$name"
  done
  rm -f "$STARTED"
else
  log "nothing was started by engines/start_slurm.sh ($STARTED is empty)"
fi
[[ ${1:-} == --purge ]] && rm -rf "$DIR" && log "removed $DIR"
exit 0
