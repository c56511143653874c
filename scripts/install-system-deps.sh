#!/usr/bin/env bash
# Debian packages used by the tests and benchmarks: Node.js (the third demo stack), wrk and
# nginx (the HTTP benchmark's load generator and baseline proxy), bubblewrap (sandboxed
# executors), apache2 and lighttpd (with nginx, the three web servers of examples/web),
# chromium (the dashboard's browser test, driven by Playwright), BIND 9, NSD and Knot (the three
# servers of examples/dns), dnsperf and dnsdist (the DNS benchmark's load generator and
# baseline proxy), iproute2 and nftables (each executor's network segment), etcd (the
# control-state store of a cluster of gateways). Idempotent; needs root.
set -euo pipefail
packages=(nodejs wrk nginx-light bubblewrap apache2 lighttpd chromium bind9 nsd knot bind9-dnsutils
          dnsperf dnsdist iproute2 nftables etcd-server etcd-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs may come from elsewhere on the machine; accept any working `node`.
if command -v node >/dev/null 2>&1; then
  missing=("${missing[@]/nodejs}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "system packages present: ${packages[*]}"
