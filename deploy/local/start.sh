#!/usr/bin/env bash
# npm start: runs the whole platform on this machine.
#   - installs npm packages when missing, and NATS + MariaDB from Debian packages when missing
#   - starts private NATS (JetStream) and MariaDB under .run/dev on the contract's default
#     ports (4222, 3306), builds every service and runs each one in the background
#   - stays in the foreground; Ctrl-C (or SIGTERM) stops the services and the servers
#
#   npm start                      run, Ctrl-C to stop
#   npm start -- --detach          start and return; stop later with `npm start -- stop`
#   npm start -- stop              stop what a detached start left running
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false
run=$root/.run/dev
logs=$run/logs
mode=${1:-foreground}

services() { # every control-plane service that exists; host agents only when configured
  local p name
  for p in services/*/project.json; do
    [ -f "$p" ] || continue
    name=$(basename "$(dirname "$p")")
    # An agent belongs next to a server's engine and uplink: run it when ORANGERY_UPLINK
    # says which interface that is (and DOCKER_HOST which engine), never by guess.
    if [ "$name" = docker-agent ] && [ -z "${ORANGERY_UPLINK:-}" ]; then continue; fi
    # The vmware-agent needs a vCenter: run it when ORANGERY_VCENTER_URL names one.
    if [ "$name" = vmware-agent ] && [ -z "${ORANGERY_VCENTER_URL:-}" ]; then continue; fi
    echo "$name"
  done
}

stop_services() {
  local name pidf pid i
  for pidf in "$run"/svc-*.pid; do
    [ -e "$pidf" ] || continue
    name=$(basename "$pidf" .pid); name=${name#svc-}
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "dist/services/$name/main.js"; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 250; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      echo "stopped $name (pid $pid)"
    fi
    rm -f "$pidf"
  done
}

stop_all() {
  stop_services
  bash deploy/local/infra.sh down dev
}

if [ "$mode" = stop ]; then stop_all; exit 0; fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm packages..."
  npm ci --no-audit --no-fund
fi
bash deploy/local/infra.sh up dev
eval "$(bash deploy/local/infra.sh env dev)"
echo "building services..."
npm run build --silent
mkdir -p "$logs"
stop_services >/dev/null
for name in $(services); do
  # a fresh log per run (the last one kept as .prev): the ready check below reads it
  [ -f "$logs/$name.log" ] && mv -f "$logs/$name.log" "$logs/$name.log.prev"
  nohup node --enable-source-maps "dist/services/$name/main.js" >"$logs/$name.log" 2>&1 &
  echo $! >"$run/svc-$name.pid"
done
for name in $(services); do
  for ((i = 0; i < 300; i++)); do
    grep -q '"msg":"ready"' "$logs/$name.log" 2>/dev/null && break
    kill -0 "$(cat "$run/svc-$name.pid")" 2>/dev/null || { echo "$name failed to start; last lines of $logs/$name.log:"; tail -5 "$logs/$name.log"; stop_all; exit 1; }
    sleep 0.1
  done
done

cat <<INFO

Orangery is running.
  NATS        $ORANGERY_NATS_URL   (JetStream; events in stream ORANGERY_EVENTS, subjects orangery.evt.>)
  MariaDB     ${ORANGERY_DB_URL/:orangery@/:***@}
  services    $(services | tr '\n' ' ')
  logs        $logs/<service>.log (JSON lines)
  agents      $( [ -n "${ORANGERY_UPLINK:-}" ] && echo "docker-agent on uplink $ORANGERY_UPLINK" || echo "none: set ORANGERY_UPLINK (and DOCKER_HOST) to run this machine's docker-agent")
  try         node tools/nats-req.mjs <subject> '<json>', e.g.
              node tools/nats-req.mjs orangery.ipam.pool.create '{"name":"lab","cidr":"198.18.0.0/24","gateway":"198.18.0.1"}'
INFO

if [ "$mode" = --detach ]; then
  echo "  stop        npm start -- stop"
  exit 0
fi
echo "  stop        Ctrl-C"
tail -q -n 0 -F "$logs"/*.log &
tailpid=$!
trap 'echo; echo "stopping..."; kill $tailpid 2>/dev/null; stop_all; exit 0' INT TERM
wait
