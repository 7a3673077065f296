#!/usr/bin/env bash
# npm test: every test, on real servers that this script installs and starts itself.
#   1. npm packages (npm ci when node_modules is missing or stale)
#   2. NATS + MariaDB from Debian packages, private instances under .run/test (infra.sh)
#   3. typecheck, lint, build, unit tests, integration tests (real processes, real servers)
# Leaves nothing running: the servers are stopped and wiped on exit, even on failure.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false CI=${CI:-false}

step() { printf '\n=== %s ===\n' "$*"; }

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  step "installing npm packages"
  npm ci --no-audit --no-fund
fi

step "starting NATS and MariaDB (test profile)"
# Private ports: the profile's defaults, or free ones when another checkout holds those.
free_port() { node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"; }
busy() { (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; }
if [ ! -s .run/test/nats.pid ] && busy "${ORANGERY_LOCAL_NATS_PORT:-14222}"; then export ORANGERY_LOCAL_NATS_PORT=$(free_port) ORANGERY_LOCAL_NATS_MONITOR_PORT=$(free_port); fi
if [ ! -s .run/test/mysqld.pid ] && busy "${ORANGERY_LOCAL_DB_PORT:-13306}"; then export ORANGERY_LOCAL_DB_PORT=$(free_port); fi
bash deploy/local/infra.sh down test --wipe >/dev/null 2>&1 || true
trap 'bash deploy/local/infra.sh down test --wipe >/dev/null 2>&1 || true' EXIT
bash deploy/local/infra.sh up test
eval "$(bash deploy/local/infra.sh env test)"

step "typecheck"
npx tsc -p tsconfig.json --noEmit
step "lint"
npm run lint --silent
step "build"
npm run build --silent

results=.run/test-results
mkdir -p "$results"
status=0
step "unit tests"
npx vitest run --project unit --reporter=default --reporter=json --outputFile="$results/unit.json" || status=1
step "integration tests (real NATS, MariaDB, service processes and the network lab)"
# Two streams at once (vitest.config.ts): the files that use the network lab, one at a time,
# and the others (own NATS, own database, own processes), one at a time. Each line is
# prefixed with its stream; a stream's failure fails the run.
rm -f "$results/integration.json" "$results/integration-lab.json"
(set -o pipefail; npx vitest run --project integration-lab --reporter=default --reporter=json --outputFile="$results/integration-lab.json" 2>&1 | sed -u 's/^/[lab] /') &
lab=$!
(set -o pipefail; npx vitest run --project integration --reporter=default --reporter=json --outputFile="$results/integration.json" 2>&1 | sed -u 's/^/[svc] /') || status=1
wait "$lab" || status=1

node tools/test-summary.mjs "$results/unit.json" "$results/integration.json" "$results/integration-lab.json" || status=1
exit $status
