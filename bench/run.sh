#!/usr/bin/env bash
# npm run bench [name]: runs the benchmarks (all, or one: ipam, agent, scheduler, growth, vmware, failover, leader, cluster, swarm) on real servers, like npm test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export NX_DAEMON=false NX_NO_CLOUD=true NX_TUI=false
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then npm ci --no-audit --no-fund; fi
bash deploy/local/infra.sh down test --wipe >/dev/null 2>&1 || true
trap 'bash deploy/local/infra.sh down test --wipe >/dev/null 2>&1 || true' EXIT
bash deploy/local/infra.sh up test
eval "$(bash deploy/local/infra.sh env test)"
npm run build --silent
which=${1:-all}
# name -> scripts (bench/<script>.ts), run in this order
declare -A scripts=([ipam]="ipam" [agent]="agent" [scheduler]="scheduler-engine scheduler-e2e" [growth]="growth" [vmware]="vmware" [failover]="failover" [leader]="leader" [cluster]="cluster" [swarm]="swarm")
for b in ipam agent scheduler growth vmware failover leader cluster swarm; do
  if [ "$which" = all ] || [ "$which" = "$b" ]; then
    for script in ${scripts[$b]}; do
      echo "=== bench:$b ($script) ==="
      node tools/run-ts.mjs "bench/$script.ts"
    done
  fi
done
node tools/readme-bench.mjs
