#!/usr/bin/env bash
# Installs the docker-agent on a physical server as a systemd service, after checking that
# the server can run it. Run as root from a release tree (the repository after
# `npm ci --omit=dev && npm run build`, or an unpacked release with the same layout):
#
#   deploy/systemd/install-docker-agent.sh <uplink>     e.g. bond0.100 or ens2f1
#
# Checks, each refused with one line saying what is missing (all of them are reported):
#   - node >= 20 at /usr/bin/node (the unit's ExecStart);
#   - the built agent (dist/services/docker-agent/main.js) and node_modules in the tree;
#   - the docker engine answers on DOCKER_HOST (default unix:///var/run/docker.sock) with an
#     API version >= 1.41 (Docker 20.10), and its socket belongs to the group `docker`;
#   - the uplink exists, is up, and does not carry the default route;
#   - arping (Debian: iputils-arping) and ip (iproute2) are installed.
# Then it copies the agent to /opt/orangery, installs orangery-docker-agent.service, writes
# /etc/orangery/docker-agent.env from the template (never over an existing one: yours is
# kept as it is), and runs `systemctl daemon-reload`. It does not start the agent: check the
# environment file, then `systemctl enable --now orangery-docker-agent`.
#
# Test seams (the tests never touch the real /etc or systemd): ORANGERY_INSTALL_ROOT (a
# prefix for every path written, default /), ORANGERY_SOURCE (the release tree, default:
# this script's repository), ORANGERY_NODE (default /usr/bin/node), ORANGERY_ARPING
# (default arping), ORANGERY_SYSFS_NET (default /sys/class/net), ORANGERY_DOCKER_GROUP
# (default docker), ORANGERY_SYSTEMCTL (default systemctl).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source_dir=${ORANGERY_SOURCE:-$(cd "$here/../.." && pwd)}
install_root=${ORANGERY_INSTALL_ROOT:-/}
install_root=${install_root%/}
node=${ORANGERY_NODE:-/usr/bin/node}
arping=${ORANGERY_ARPING:-arping}
sysfs_net=${ORANGERY_SYSFS_NET:-/sys/class/net}
docker_group=${ORANGERY_DOCKER_GROUP:-docker}
systemctl=${ORANGERY_SYSTEMCTL:-systemctl}
docker_host=${DOCKER_HOST:-unix:///var/run/docker.sock}
min_api=1.41

say() { printf 'install-docker-agent: %s\n' "$*" >&2; }

if [ $# -ne 1 ] || [ -z "$1" ] || [[ "$1" == -* ]]; then
  say "usage: install-docker-agent.sh <uplink interface>"
  exit 2
fi
uplink=$1
if ! [[ "$uplink" =~ ^[A-Za-z0-9_.-]{1,15}$ ]]; then
  say "refused: '$uplink' is not an interface name"
  exit 2
fi

problems=0
refuse() {
  say "refused: $*"
  problems=$((problems + 1))
}

# --- node ---
node_ok=false
if [ ! -x "$node" ]; then
  refuse "node is not installed at $node (the unit runs $node; Node.js 20 or later is needed)"
else
  version=$("$node" -v 2>/dev/null || true)
  major=${version#v}
  major=${major%%.*}
  if ! [[ "$major" =~ ^[0-9]+$ ]]; then
    refuse "$node -v printed '$version', not a Node.js version"
  elif [ "$major" -lt 20 ]; then
    refuse "node at $node is $version; Node.js 20 or later is needed"
  else
    node_ok=true
  fi
fi

# --- the built agent ---
if [ ! -f "$source_dir/dist/services/docker-agent/main.js" ]; then
  refuse "the agent is not built: $source_dir/dist/services/docker-agent/main.js is missing (run npm run build)"
fi
if [ ! -d "$source_dir/node_modules" ]; then
  refuse "$source_dir/node_modules is missing (run npm ci --omit=dev)"
fi

# --- the engine ---
# Asked with node itself (no curl or docker CLI needed): GET /version on the socket or TCP.
if $node_ok; then
  engine=$("$node" -e '
    const http = require("node:http");
    const h = process.argv[1];
    const opts = { path: "/version", timeout: 5000 };
    if (h.startsWith("unix://")) opts.socketPath = h.slice(7);
    else if (h.startsWith("tcp://")) { const u = new URL("http://" + h.slice(6)); opts.host = u.hostname; opts.port = u.port || 2375; }
    else { console.log("bad DOCKER_HOST " + h); process.exit(3); }
    const req = http.get(opts, (res) => {
      let b = ""; res.on("data", (c) => (b += c));
      res.on("end", () => { try { console.log(JSON.parse(b).ApiVersion ?? "none"); } catch { console.log("no JSON from the engine"); process.exit(3); } });
    });
    req.on("timeout", () => req.destroy(new Error("no answer in 5 s")));
    req.on("error", (e) => { console.log(e.message); process.exit(3); });
  ' "$docker_host" 2>&1)
  rc=$?
  if [ $rc -ne 0 ]; then
    refuse "the docker engine does not answer on $docker_host ($engine)"
  elif ! [[ "$engine" =~ ^[0-9]+\.[0-9]+$ ]]; then
    refuse "the docker engine on $docker_host reported API version '$engine'"
  else
    read -r have_major have_minor <<<"${engine/./ }"
    read -r want_major want_minor <<<"${min_api/./ }"
    if [ "$have_major" -lt "$want_major" ] || { [ "$have_major" -eq "$want_major" ] && [ "$have_minor" -lt "$want_minor" ]; }; then
      refuse "the docker engine on $docker_host speaks API $engine; $min_api (Docker 20.10) or later is needed"
    fi
  fi
fi
if [[ "$docker_host" == unix://* ]] && [ -S "${docker_host#unix://}" ]; then
  group=$(stat -c %G "${docker_host#unix://}")
  if [ "$group" != "$docker_group" ]; then
    refuse "the engine's socket ${docker_host#unix://} belongs to group '$group', not '$docker_group' (the unit reaches it through SupplementaryGroups=$docker_group)"
  fi
fi

# --- the uplink ---
if [ ! -e "$sysfs_net/$uplink" ]; then
  refuse "the uplink $uplink does not exist on this host"
else
  flags=$(cat "$sysfs_net/$uplink/flags" 2>/dev/null || echo 0)
  if [ $((flags & 1)) -eq 0 ]; then
    refuse "the uplink $uplink is down (ip link set $uplink up)"
  fi
  if [ -z "${ORANGERY_SYSFS_NET:-}" ] && ip -o route show default 2>/dev/null | grep -qw "dev $uplink"; then
    refuse "the uplink $uplink carries the default route: containers must hang off a dedicated interface"
  fi
fi

# --- helpers the agent runs ---
if ! command -v "$arping" >/dev/null 2>&1; then
  refuse "arping is not installed (Debian: apt-get install iputils-arping): the agent probes every IP on the wire before using it"
fi
if ! command -v ip >/dev/null 2>&1; then
  refuse "ip is not installed (Debian: apt-get install iproute2)"
fi

if [ $problems -gt 0 ]; then
  say "nothing installed ($problems problem(s) above)"
  exit 1
fi

# --- install ---
set -e
opt="$install_root/opt/orangery"
unit_dir="$install_root/etc/systemd/system"
etc="$install_root/etc/orangery"
mkdir -p "$opt/dist/services" "$opt/deploy" "$unit_dir" "$etc"
rm -rf "$opt/dist/services/docker-agent.new"
cp -a "$source_dir/dist/services/docker-agent" "$opt/dist/services/docker-agent.new"
rm -rf "$opt/dist/services/docker-agent"
mv "$opt/dist/services/docker-agent.new" "$opt/dist/services/docker-agent"
rm -rf "$opt/node_modules.new"
cp -a "$source_dir/node_modules" "$opt/node_modules.new"
rm -rf "$opt/node_modules"
mv "$opt/node_modules.new" "$opt/node_modules"
for f in package.json deploy/README.md; do
  if [ -f "$source_dir/$f" ]; then cp "$source_dir/$f" "$opt/$f"; fi
done
chmod -R go-w "$opt"
install -m 0644 "$here/orangery-docker-agent.service" "$unit_dir/orangery-docker-agent.service"
chmod 0755 "$etc"
if [ -e "$etc/docker-agent.env" ]; then
  say "kept the existing $etc/docker-agent.env (compare it with $here/env/docker-agent.env)"
else
  umask 077
  sed -e "s/^ORANGERY_UPLINK=CHANGE-ME\$/ORANGERY_UPLINK=$uplink/" "$here/env/docker-agent.env" >"$etc/docker-agent.env"
  chmod 0600 "$etc/docker-agent.env"
  say "wrote $etc/docker-agent.env: set ORANGERY_NATS_URL (and review the rest)"
fi
"$systemctl" daemon-reload
say "installed orangery-docker-agent.service; start it with: systemctl enable --now orangery-docker-agent"
