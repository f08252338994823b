#!/usr/bin/env bash
# An external Ray head on this machine, for the harness's integration tests (tests/test_engines.py) and for trying
# the ray executor against a real cluster: `ray start --head` with its own --temp-dir (so it neither joins nor
# disturbs another Ray on the machine) and an explicit RAY_AUTH_MODE. Prints the address and writes it to
# $HARNESS_RAY_DIR/address (the tests read it there); engines/stop_ray.sh stops this head's processes by PID.
# Needs `ray` on PATH (pip install -e ".[ray]", in the active virtual environment).
#
# Environment: HARNESS_RAY_DIR (/tmp/harness-ray), HARNESS_RAY_PORT (6390), HARNESS_RAY_CPUS (every core),
#              RAY_AUTH_MODE (disabled).
set -euo pipefail
DIR=${HARNESS_RAY_DIR:-/tmp/harness-ray}
PORT=${HARNESS_RAY_PORT:-6390}
export RAY_AUTH_MODE=${RAY_AUTH_MODE:-disabled}
log() { echo "[start_ray] $*"; }
command -v ray >/dev/null || { log "error: no ray command on PATH (pip install -e \".[ray]\")" >&2; exit 1; }
if [[ -s $DIR/address ]] && ray status --address="$(cat "$DIR/address")" >/dev/null 2>&1; then
  log "already running at $(cat "$DIR/address")"
  exit 0
fi
mkdir -p "$DIR/tmp"
cpus=()
[[ -n ${HARNESS_RAY_CPUS:-} ]] && cpus=(--num-cpus="$HARNESS_RAY_CPUS")
ray start --head --port="$PORT" --temp-dir="$DIR/tmp" "${cpus[@]}" --include-dashboard=false \
  --disable-usage-stats >"$DIR/start.log" 2>&1 || { tail -n 20 "$DIR/start.log" >&2; log "error: ray start failed"; exit 1; }
echo "127.0.0.1:$PORT" >"$DIR/address"
log "Ray head at 127.0.0.1:$PORT (RAY_AUTH_MODE=$RAY_AUTH_MODE, temp dir $DIR/tmp; log $DIR/start.log)"
