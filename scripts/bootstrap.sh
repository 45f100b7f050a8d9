#!/usr/bin/env bash
# Installs what sip-teleport needs on a fresh Debian machine, and nothing twice:
# Debian packages (QEMU, sipp, Kamailio, ...), the npm dependencies, the build.
# Used by `npm run demo`, `npm test` (through their pre-scripts) and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-system-x86 busybox-static cpio iputils-ping socat jq iproute2 sip-tester kamailio baresip openssl docker-compose systemd chromium librsvg2-bin nftables qemu-utils e2fsprogs libvirt-daemon-system libvirt-clients
  # the switchover's MAC claim (lib/net/host-announce.c), built on first use
  gcc libc6-dev
  # drachtio-server's runtime (the binary is in ../shared/drachtio, see lib/sip/README.md)
  libcurl4 libboost-log1.74.0 libboost-thread1.74.0 libboost-filesystem1.74.0)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "sip-teleport needs these Debian packages: ${missing[*]}" >&2
    echo "run as root, or: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}" >&2
  apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi

# npm ci only when the lock file changed since the last install.
stamp=node_modules/.sip-teleport-lock
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "bootstrap: npm ci" >&2
  npm ci --no-audit --no-fund >&2
  cp package-lock.json "$stamp"
fi

# Build when any source is newer than the build.
if [ ! -f dist/.built ] || [ -n "$(find agents nrdl lib bench index.ts tsconfig*.json -newer dist/.built -type f 2>/dev/null | head -1)" ]; then
  echo "bootstrap: building" >&2
  npx tsc -p tsconfig.build.json
  touch dist/.built
fi

# drachtio-server for the drachtio backend's tests: the shared build, else our own in .cache (built when its
# source is reachable). Without one the drachtio suites are reported as not run (under CI=true: failed).
drachtio_found=""
for c in "${SIP_TELEPORT_DRACHTIO_BIN:-}" ../shared/drachtio/bin/drachtio ../../shared/drachtio/bin/drachtio \
  .cache/drachtio/bin/drachtio; do
  if [ -n "$c" ] && [ -x "$c" ]; then drachtio_found="$c"; break; fi
done
if [ -z "$drachtio_found" ]; then
  if bash scripts/build-drachtio.sh --check >/dev/null 2>&1; then
    bash scripts/build-drachtio.sh >&2 || echo "bootstrap: building drachtio-server failed (see above)" >&2
  else
    echo "bootstrap: no drachtio-server and its source is not reachable: the drachtio tests will not run" >&2
  fi
fi
