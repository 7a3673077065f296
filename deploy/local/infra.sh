#!/usr/bin/env bash
# Local infrastructure for Orangery: private NATS (JetStream) and MariaDB servers under a
# project-local run directory, on their own ports, installed from Debian packages when missing.
#
#   infra.sh up   [dev|test]          install what is missing, start (or reuse) the servers, wait until they answer
#   infra.sh down [dev|test] [--wipe] stop the servers this script started (by PID file); --wipe removes their data
#   infra.sh env  [dev|test]          print the ORANGERY_* variables that point at them
#   infra.sh status [dev|test]
#
# Idempotent: `up` twice reuses running servers; PID files of processes that died (a killed
# earlier run) are cleaned before starting again. Only processes whose PID files live in
# this run directory are ever signalled.
set -euo pipefail

cmd=${1:-up}
profile=${2:-dev}
wipe=${3:-}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

case "$profile" in
  dev)  def_nats=4222;  def_mon=8222;  def_db=3306 ;;
  test) def_nats=14222; def_mon=18222; def_db=13306 ;;
  *) echo "infra.sh: unknown profile '$profile' (dev|test)" >&2; exit 2 ;;
esac
run=${ORANGERY_RUN_DIR:-$root/.run/$profile}
nats_port=${ORANGERY_LOCAL_NATS_PORT:-$def_nats}
mon_port=${ORANGERY_LOCAL_NATS_MONITOR_PORT:-$def_mon}
db_port=${ORANGERY_LOCAL_DB_PORT:-$def_db}
db_user=orangery db_pass=orangery db_name=orangery

log() { printf '[infra:%s] %s\n' "$profile" "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else
  log "need root to run: $*"; exit 1; fi; }

apt_updated=""
ensure_pkg() { # ensure_pkg <command-to-find> <debian-package>...
  local probe=$1; shift
  if command -v "$probe" >/dev/null 2>&1 || [ -x "/usr/sbin/$probe" ]; then return 0; fi
  log "installing $* from Debian packages"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >/dev/null; apt_updated=1; fi
  # policy-rc.d 101 keeps Debian's maintainer scripts from starting system-wide daemons:
  # we run private instances only.
  local policy=/usr/sbin/policy-rc.d created_policy=""
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' | as_root tee $policy >/dev/null; as_root chmod +x $policy; created_policy=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  [ -n "$created_policy" ] && as_root rm -f $policy
  return 0
}

alive() { # alive <pidfile>: the PID in it is a live process
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_port() { # wait_port <port> <what> <seconds>
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$2 did not answer on 127.0.0.1:$1 within $3 s; see $run/*.log"; return 1
}

port_busy() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }

nats_up() {
  mkdir -p "$run/nats/js"
  if alive "$run/nats.pid"; then log "NATS already running (pid $(cat "$run/nats.pid"))"; return 0; fi
  rm -f "$run/nats.pid"
  if port_busy "$nats_port"; then log "port $nats_port is taken by a process this script did not start; set ORANGERY_LOCAL_NATS_PORT"; exit 1; fi
  cat >"$run/nats.conf" <<CONF
listen: 127.0.0.1:$nats_port
http: 127.0.0.1:$mon_port
pid_file: "$run/nats.pid"
max_payload: 8MB
jetstream { store_dir: "$run/nats/js", max_memory_store: 256MB, max_file_store: 4GB }
CONF
  nohup nats-server -c "$run/nats.conf" >"$run/nats.log" 2>&1 &
  echo $! >"$run/nats.pid"
  wait_port "$nats_port" NATS 20
  log "NATS up on 127.0.0.1:$nats_port (monitor :$mon_port, JetStream in $run/nats/js)"
}

db_sql() { mariadb --protocol=socket -S "$run/mysqld.sock" -uroot "$@"; }

db_up() {
  mkdir -p "$run"
  if alive "$run/mysqld.pid"; then log "MariaDB already running (pid $(cat "$run/mysqld.pid"))"; return 0; fi
  rm -f "$run/mysqld.pid" "$run/mysqld.sock" "$run/mysqld.sock.lock"
  if port_busy "$db_port"; then log "port $db_port is taken by a process this script did not start; set ORANGERY_LOCAL_DB_PORT"; exit 1; fi
  if [ ! -d "$run/mysql/mysql" ]; then
    rm -rf "$run/mysql"; mkdir -p "$run/mysql"
    mariadb-install-db --no-defaults --user="$(id -un)" --datadir="$run/mysql" --auth-root-authentication-method=socket \
      --skip-test-db >"$run/mysqld-install.log" 2>&1 || { log "mariadb-install-db failed: see $run/mysqld-install.log"; exit 1; }
  fi
  # --no-defaults: nothing from /etc/mysql leaks in; this server is ours alone.
  nohup mariadbd --no-defaults --user="$(id -un)" --datadir="$run/mysql" --socket="$run/mysqld.sock" \
    --pid-file="$run/mysqld.pid" --port="$db_port" --bind-address=127.0.0.1 \
    --innodb-buffer-pool-size=512M --innodb-log-file-size=256M --max-connections=500 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_bin --skip-name-resolve \
    --log-error="$run/mysqld.err" >"$run/mysqld.log" 2>&1 &
  local pid=$!
  echo $pid >"$run/mysqld.pid"
  local i
  for ((i = 0; i < 300; i++)); do
    if db_sql -e 'select 1' >/dev/null 2>&1; then break; fi
    kill -0 $pid 2>/dev/null || { log "MariaDB exited at start; see $run/mysqld.err"; exit 1; }
    sleep 0.1
  done
  db_sql -e "CREATE DATABASE IF NOT EXISTS \`$db_name\`;
    CREATE USER IF NOT EXISTS '$db_user'@'127.0.0.1' IDENTIFIED BY '$db_pass';
    CREATE USER IF NOT EXISTS '$db_user'@'localhost' IDENTIFIED BY '$db_pass';
    GRANT ALL ON \`$db_name\`.* TO '$db_user'@'127.0.0.1';
    GRANT ALL ON \`$db_name\`.* TO '$db_user'@'localhost';
    GRANT ALL ON \`${db_name}%\`.* TO '$db_user'@'127.0.0.1';
    FLUSH PRIVILEGES;"
  wait_port "$db_port" MariaDB 30
  log "MariaDB up on 127.0.0.1:$db_port (data in $run/mysql)"
}

stop_pidfile() { # stop_pidfile <pidfile> <name>
  local f=$1 pid i
  if alive "$f"; then
    pid=$(cat "$f"); kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { log "$2 (pid $pid) ignored SIGTERM for 30 s, killing"; kill -KILL "$pid" 2>/dev/null || true; }
    log "$2 stopped"
  fi
  rm -f "$f"
}

print_env() {
  echo "export ORANGERY_NATS_URL=nats://127.0.0.1:$nats_port"
  echo "export ORANGERY_DB_URL=mysql://$db_user:$db_pass@127.0.0.1:$db_port/$db_name"
  echo "export ORANGERY_LOCAL_DB_SOCKET=$run/mysqld.sock"
  echo "export ORANGERY_LOCAL_RUN_DIR=$run"
}

case "$cmd" in
  up)
    ensure_pkg nats-server nats-server
    ensure_pkg mariadbd mariadb-server mariadb-client
    nats_up
    db_up
    ;;
  down)
    stop_pidfile "$run/nats.pid" NATS
    stop_pidfile "$run/mysqld.pid" MariaDB
    if [ "$wipe" = --wipe ]; then rm -rf "$run"; log "wiped $run"; fi
    ;;
  env) print_env ;;
  status)
    alive "$run/nats.pid" && echo "nats: running pid $(cat "$run/nats.pid") port $nats_port" || echo "nats: stopped"
    alive "$run/mysqld.pid" && echo "mariadb: running pid $(cat "$run/mysqld.pid") port $db_port" || echo "mariadb: stopped"
    ;;
  *) echo "usage: infra.sh up|down|env|status [dev|test] [--wipe]" >&2; exit 2 ;;
esac
