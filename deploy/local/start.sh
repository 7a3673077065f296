#!/usr/bin/env bash
# npm start: runs the whole platform on this machine.
#   - installs npm packages when missing, and NATS + MariaDB from Debian packages when missing
#   - starts private NATS (JetStream) and MariaDB under .run/dev on the contract's default
#     ports (4222, 3306), builds every service and runs each one in the background
#   - stays in the foreground; Ctrl-C (or SIGTERM) stops the services and the servers
#   - the demo (tools/demo.ts), when no agent is configured (no ORANGERY_UPLINK, no ORANGERY_SWARM_MANAGER, no
#     ORANGERY_VCENTER_URL) and ORANGERY_DEMO is not 0: the local lab (2 simulated servers,
#     vcsim with 3 ESXi hosts, every VM on the same fabric), 2 docker-agents and 1 vmware-agent
#     on it, a pool, demo/hello x3 as containers and demo/legacy x3 as VMs; the console gets a
#     fresh operator token, printed once here with the dashboard URL. The lab needs root (as
#     npm test does) and the lab lock /tmp/orangery-lab.lock: without root, or with the lab
#     busy, it says so and runs the control plane and console only. ORANGERY_DEMO=0: no demo.
#
#   npm start                      run, Ctrl-C to stop
#   npm start -- --detach          start and return; stop later with `npm start -- stop`
#   npm start -- stop              stop what a detached start left running
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false
run=${ORANGERY_RUN_DIR:-$root/.run/dev}
export ORANGERY_RUN_DIR=$run # infra.sh keeps its servers there too
logs=$run/logs
mode=${1:-foreground}
demo=0
if [ "${ORANGERY_DEMO:-1}" != 0 ] && [ -z "${ORANGERY_UPLINK:-}" ] && [ -z "${ORANGERY_VCENTER_URL:-}" ] && [ -z "${ORANGERY_SWARM_MANAGER:-}" ]; then demo=1; fi

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
    # The swarm-agent needs a swarm manager's engine: run it when ORANGERY_SWARM_MANAGER names one.
    if [ "$name" = swarm-agent ] && [ -z "${ORANGERY_SWARM_MANAGER:-}" ]; then continue; fi
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

stop_demo() { # the demo runner (it scales its apps to 0, stops its agents, tears the lab down), then agents a killed one left
  local pidf pid i
  if [ -e "$run/demo.pid" ]; then
    pid=$(cat "$run/demo.pid")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "tools/demo.ts"; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 1200; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      echo "stopped the demo (pid $pid): agents stopped, lab torn down"
    fi
    rm -f "$run/demo.pid"
  fi
  for pidf in "$run"/demo-*.pid; do
    [ -e "$pidf" ] || continue
    pid=$(cat "$pidf")
    if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -Eq "dist/services/(docker|vmware)-agent/main.js"; then
      kill -TERM "$pid" 2>/dev/null || true
      for ((i = 0; i < 250; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
      echo "stopped $(basename "$pidf" .pid) (pid $pid), left by a killed demo"
    fi
    rm -f "$pidf"
  done
}

stop_all() {
  stop_demo
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
stop_demo
stop_services >/dev/null
demo_token="" console_url=""
# The demo's console listens on loopback unless told otherwise.
[ "$demo" = 1 ] && export ORANGERY_CONSOLE_ADDR=${ORANGERY_CONSOLE_ADDR:-127.0.0.1:7480}
console_addr=${ORANGERY_CONSOLE_ADDR:-0.0.0.0:7480}
console_host=${console_addr%:*}
case "$console_host" in "" | 0.0.0.0 | "[::]") console_host=127.0.0.1 ;; esac
console_url="http://$console_host:${console_addr##*:}/"
# An operator token known here, printed once below and never written to a log (left to
# itself the console would print one on its stderr, which goes to its log file);
# ORANGERY_CONSOLE_TOKENS set by the caller wins.
[ -z "${ORANGERY_CONSOLE_TOKENS:-}" ] && demo_token=$(node -e 'process.stdout.write(require("crypto").randomBytes(24).toString("base64url"))')
for name in $(services); do
  # a fresh log per run (the last one kept as .prev): the ready check below reads it
  [ -f "$logs/$name.log" ] && mv -f "$logs/$name.log" "$logs/$name.log.prev"
  if [ "$name" = console ] && [ -n "$demo_token" ]; then
    ORANGERY_CONSOLE_TOKENS="demo:$demo_token:operator" nohup node --enable-source-maps "dist/services/$name/main.js" >"$logs/$name.log" 2>&1 &
  else
    # the service's node flags (tools/build-service.mjs NODE_FLAGS), unquoted on purpose: a word list
    # shellcheck disable=SC2046
    nohup node --enable-source-maps $(cat "dist/services/$name/node-flags" 2>/dev/null) "dist/services/$name/main.js" >"$logs/$name.log" 2>&1 &
  fi
  echo $! >"$run/svc-$name.pid"
done
for name in $(services); do
  for ((i = 0; i < 300; i++)); do
    grep -q '"msg":"ready"' "$logs/$name.log" 2>/dev/null && break
    kill -0 "$(cat "$run/svc-$name.pid")" 2>/dev/null || { echo "$name failed to start; last lines of $logs/$name.log:"; tail -5 "$logs/$name.log"; stop_all; exit 1; }
    sleep 0.1
  done
done

demo_state=""
if [ "$demo" = 1 ]; then
  trap 'echo; echo "stopping..."; stop_all; exit 130' INT TERM
  if [ "$(id -u)" != 0 ]; then
    echo "demo: the lab needs root (as npm test does); running the control plane and console only"
    demo_state="none: not root (the lab needs root, as npm test does)"
  else
    # In its own session, so a Ctrl-C here reaches only this script, which stops it in order.
    [ -f "$logs/demo.log" ] && mv -f "$logs/demo.log" "$logs/demo.log.prev"
    : >"$logs/demo.log" # exists before the loop below reads it
    setsid node tools/run-ts.mjs tools/demo.ts >>"$logs/demo.log" 2>&1 </dev/null &
    demopid=$!
    echo $demopid >"$run/demo.pid"
    shown=0
    while :; do
      n=$(wc -l <"$logs/demo.log")
      if [ "$n" -gt "$shown" ]; then sed -n "$((shown + 1)),${n}p" "$logs/demo.log" | grep '^demo: ' || true; shown=$n; fi
      if grep -qx 'demo: ready' "$logs/demo.log"; then demo_state=running; break; fi
      if ! kill -0 "$demopid" 2>/dev/null; then
        rc=0; wait "$demopid" || rc=$?
        sed -n "$((shown + 1)),\$p" "$logs/demo.log" | grep '^demo: ' || true
        rm -f "$run/demo.pid"
        if [ "$rc" = 75 ]; then demo_state="none: the lab is busy (see above); npm start again once it is free"
        else demo_state="failed (exit $rc): see $logs/demo.log; the control plane and console run without it"; fi
        break
      fi
      sleep 0.2
    done
  fi
fi

cat <<INFO

Orangery is running.
  NATS        $ORANGERY_NATS_URL   (JetStream; events in stream ORANGERY_EVENTS, subjects orangery.evt.>)
  MariaDB     ${ORANGERY_DB_URL/:orangery@/:***@}
  services    $(services | tr '\n' ' ')
  logs        $logs/<service>.log (JSON lines)
  agents      $( if [ -n "${ORANGERY_UPLINK:-}" ]; then echo "docker-agent on uplink $ORANGERY_UPLINK"; elif [ "$demo_state" = running ]; then echo "demo: 2 docker-agents and 1 vmware-agent on the lab (logs $logs/demo-*.log)"; else echo "none: set ORANGERY_UPLINK (and DOCKER_HOST) to run this machine's docker-agent"; fi)
  try         node tools/nats-req.mjs <subject> '<json>', e.g.
              node tools/nats-req.mjs orangery.ipam.pool.create '{"name":"lab","cidr":"198.18.0.0/24","gateway":"198.18.0.1"}'
INFO
if [ "$demo" = 1 ]; then
  echo "  demo        ${demo_state}$([ "$demo_state" = running ] && echo ": lab servers olab-s1 olab-s2, vCenter (vcsim) with esx01..03, pool demo-net, demo/hello x3 containers, demo/legacy x3 VMs (log $logs/demo.log)")"
fi
# (not `services | grep -q`: with pipefail, grep's early exit fails the pipeline)
if [[ " $(services | tr '\n' ' ') " == *" console "* ]]; then
  if [ -n "$demo_token" ]; then
    echo "  dashboard   ${console_url}?token=$demo_token"
    echo "  token       $demo_token   (operator, name demo; shown only here: keep it)"
  else
    echo "  dashboard   $console_url   (a token from ORANGERY_CONSOLE_TOKENS)"
  fi
fi

if [ "$mode" = --detach ]; then
  echo "  stop        npm start -- stop"
  exit 0
fi
echo "  stop        Ctrl-C"
tail -q -n 0 -F "$logs"/*.log &
tailpid=$!
trap 'echo; echo "stopping..."; kill $tailpid 2>/dev/null; stop_all; exit 0' INT TERM
wait
