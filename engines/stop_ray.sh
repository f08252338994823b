#!/usr/bin/env bash
# Stop the Ray head engines/start_ray.sh started, and only it: every process whose command line names its temp dir
# ($HARNESS_RAY_DIR/tmp), by PID (SIGTERM, SIGKILL after 15 s). Not `ray stop`, which ends every Ray process on the
# machine, another user's or another test's included.
set -uo pipefail
DIR=${HARNESS_RAY_DIR:-/tmp/harness-ray}
log() { echo "[stop_ray] $*"; }
# the head's processes: those whose command line names its temp dir, and their descendants (workers and agents
# retitle themselves "ray::...", without the temp dir)
ours() {
  local proc found frontier
  found=$(for proc in /proc/[0-9]*; do
    [[ ${proc#/proc/} == "$$" ]] && continue
    { tr '\0' ' ' <"$proc/cmdline"; } 2>/dev/null | grep -qF -- "$DIR/tmp" && echo "${proc#/proc/}"
  done)
  frontier=$found
  while [[ -n $frontier ]]; do
    frontier=$(ps -eo pid=,ppid=,stat= | awk -v parents=" $(echo $frontier) " 'index(parents, " " $2 " ") && $3 !~ /^Z/ {print $1}')
    found="$found $frontier"
  done
  # a zombie has ended already (its parent has yet to reap it): nothing to stop
  ps -o pid=,stat= -p "$(echo $found | tr ' ' ,)" 2>/dev/null | awk '$2 !~ /^Z/ {print $1}'
}
pids=$(ours)
if [[ -z $pids ]]; then
  log "no process of the head in $DIR/tmp is running"
else
  kill -TERM $pids 2>/dev/null
  for _ in $(seq 60); do [[ -z $(ours) ]] && break; sleep 0.25; done
  left=$(ours)
  [[ -n $left ]] && kill -KILL $left 2>/dev/null
  log "stopped $(echo $pids | wc -w) processes${left:+ (killed after 15 s: $left)}"
fi
rm -f "$DIR/address"
exit 0
