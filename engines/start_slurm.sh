#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for the harness's integration tests (tests/test_engines.py) and for
# trying the submitit executor: munged, MariaDB + slurmdbd (accounting: sacct), slurmctld and slurmd.
#
# Needs root and Debian/Ubuntu packages (installed when missing). No systemd and no delegated cgroups are assumed:
# processes are tracked by parent PID (proctrack/linuxproc) and tasks are not confined (task/none). Every state, log
# and PID file lives under $HARNESS_SLURM_DIR; the configuration goes to /etc/slurm, where sbatch, squeue, sacct and
# submitit find it. Runs again safely: only what is not running is started. engines/stop_slurm.sh stops exactly what
# this script started (the names listed in $HARNESS_SLURM_DIR/started).
#
# Environment: HARNESS_SLURM_DIR (/tmp/harness-slurm), HARNESS_SLURM_ACCOUNTING (slurmdbd, or none: no sacct),
#              HARNESS_SLURM_KILL_WAIT (10: seconds between a cancel's SIGTERM and its SIGKILL).
set -euo pipefail
DIR=${HARNESS_SLURM_DIR:-/tmp/harness-slurm}
ACCOUNTING=${HARNESS_SLURM_ACCOUNTING:-slurmdbd}
KILL_WAIT=${HARNESS_SLURM_KILL_WAIT:-10}
DB_PASSWORD=harness-accounting
STARTED=$DIR/started
T0=$SECONDS

log() { echo "[start_slurm +$((SECONDS - T0))s] $*"; }
fail() { log "error: $*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || fail "needs root (it installs packages and starts daemons)"
case $ACCOUNTING in slurmdbd | none) ;; *) fail "HARNESS_SLURM_ACCOUNTING=$ACCOUNTING: expected slurmdbd or none" ;; esac

# running PIDFILE NAME: the PID file names a live process whose command line contains NAME
running() {
  local pid
  pid=$(cat "$1" 2>/dev/null | tr -dc 0-9) || return 1
  [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"
}
# until SECONDS LOG CMD...: retry CMD every 0.25 s; after SECONDS show the end of LOG and fail
until_ok() {
  local limit=$1 logfile=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      tail -n 20 "$logfile" >&2 2>/dev/null || true
      fail "'$*' still failing after ${limit}s (log: $logfile)"
    fi
    sleep 0.25
  done
}
started() { grep -qx "$1" "$STARTED" 2>/dev/null || echo "$1" >>"$STARTED"; }

mkdir -p "$DIR"/{run,log,state,spool}

# --- packages --------------------------------------------------------------------------------------------------
wanted=(munge slurm-client slurmctld slurmd)
[[ $ACCOUNTING == slurmdbd ]] && wanted+=(mariadb-server slurmdbd)
missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { apt-get -o DPkg::Lock::Timeout=300 update -qq &&
    apt-get -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confold install -y -qq --no-install-recommends \
      "${missing[@]}"; } >"$DIR/log/apt.log" 2>&1 || { tail -n 20 "$DIR/log/apt.log" >&2; fail "apt-get failed"; }
fi

# --- configuration ---------------------------------------------------------------------------------------------
host=$(hostname -s)
hardware=$(slurmd -C | head -n 1 | sed 's/^NodeName=[^ ]* //')  # CPUs, sockets, cores, memory as slurmd sees them
[[ $hardware == *CPUs=* ]] || fail "slurmd -C did not describe this machine"
if [[ $ACCOUNTING == slurmdbd ]]; then
  storage=$'AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=localhost'
else
  storage="AccountingStorageType=accounting_storage/none"
fi
mkdir -p /etc/slurm
cat >/etc/slurm/slurm.conf <<EOF
# engines/start_slurm.sh: one node ($host), one partition (debug), for sam-harness's integration tests
ClusterName=harness
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
$storage
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=300
KillWait=$KILL_WAIT
InactiveLimit=0
MailProg=/bin/true
NodeName=$host NodeAddr=127.0.0.1 $hardware State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF

# --- munged (authentication between the Slurm daemons and commands) --------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge
[[ -s /etc/munge/munge.key ]] || mungekey --create --keyfile=/etc/munge/munge.key
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 0700 /etc/munge && chmod 0600 /etc/munge/munge.key
if ! running /run/munge/munged.pid munged; then
  runuser -u munge -- munged --pid-file=/run/munge/munged.pid
  until_ok 20 /var/log/munge/munged.log bash -c 'munge -n | unmunge'
  started munged
  log "munged started"
fi

# --- MariaDB and slurmdbd (accounting) --------------------------------------------------------------------------
if [[ $ACCOUNTING == slurmdbd ]]; then
  db=$DIR/mysql socket=$DIR/run/mysqld.sock
  mkdir -p "$db" && chown mysql:mysql "$db" "$DIR/run"
  if [[ ! -d $db/mysql ]]; then
    mariadb-install-db --no-defaults --user=mysql --datadir="$db" --auth-root-authentication-method=socket \
      --skip-test-db >"$DIR/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed (log: $DIR/log/mariadb-install.log)"
  fi
  if ! running "$DIR/run/mariadb.pid" mariadbd; then
    setsid mariadbd --no-defaults --user=mysql --datadir="$db" --socket="$socket" --pid-file="$DIR/run/mariadb.pid" \
      --bind-address=127.0.0.1 --port=3306 --skip-name-resolve --log-error="$DIR/log/mariadb.log" \
      --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 &
    until_ok 60 "$DIR/log/mariadb.log" mariadb-admin --socket="$socket" ping
    started mariadb
    log "MariaDB started"
  fi
  mariadb --socket="$socket" -u root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
  cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=$DB_PASSWORD
StorageLoc=slurm_acct_db
EOF
  chmod 0600 /etc/slurm/slurmdbd.conf  # slurmdbd refuses a configuration others can read (it holds a password)
  if ! running "$DIR/run/slurmdbd.pid" slurmdbd; then
    slurmdbd
    until_ok 60 "$DIR/log/slurmdbd.log" sacctmgr -n list cluster
    started slurmdbd
    log "slurmdbd started"
  fi
  sacctmgr -n -P list cluster format=cluster | grep -qx harness || sacctmgr -i add cluster harness >/dev/null
fi

# --- slurmctld and slurmd ---------------------------------------------------------------------------------------
if running "$DIR/run/slurmctld.pid" slurmctld; then
  scontrol reconfigure
else
  slurmctld
  until_ok 60 "$DIR/log/slurmctld.log" scontrol ping
  started slurmctld
  log "slurmctld started"
fi
if ! running "$DIR/run/slurmd.pid" slurmd; then
  slurmd
  started slurmd
  log "slurmd started"
fi
node_takes_jobs() {
  case $(sinfo -h -n "$host" -o %T 2>/dev/null | head -n 1) in
    idle* | mixed* | allocated*) return 0 ;;
    down* | drain* | fail*) scontrol update nodename="$host" state=resume; return 1 ;;
    *) return 1 ;;
  esac
}
until_ok 120 "$DIR/log/slurmd.log" node_takes_jobs
log "Slurm ready: node $host ($hardware), partition debug, accounting $ACCOUNTING, KillWait ${KILL_WAIT}s; logs in $DIR/log"
