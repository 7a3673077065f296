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
bash deploy/local/infra.sh down test --wipe >/dev/null 2>&1 || true
trap 'bash deploy/local/infra.sh down test --wipe >/dev/null 2>&1 || true' EXIT
bash deploy/local/infra.sh up test
eval "$(bash deploy/local/infra.sh env test)"

step "typecheck"
npx tsc -p tsconfig.json --noEmit
step "lint"
npx eslint .
step "build"
npm run build --silent

results=.run/test-results
mkdir -p "$results"
status=0
step "unit tests"
npx vitest run --project unit --reporter=default --reporter=json --outputFile="$results/unit.json" || status=1
step "integration tests (real NATS, MariaDB and service processes)"
npx vitest run --project integration --reporter=default --reporter=json --outputFile="$results/integration.json" || status=1

node tools/test-summary.mjs "$results/unit.json" "$results/integration.json" || status=1
exit $status
