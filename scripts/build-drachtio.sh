#!/usr/bin/env bash
# Builds drachtio-server (the C++ server behind the drachtio backend) into the ignored cache folder,
# .cache/drachtio/bin/drachtio, where the agents, tests and benchmarks look after
# $SIP_TELEPORT_DRACHTIO_BIN and ../shared/drachtio/bin/drachtio. Neither npm nor Debian has it.
# Pinned: v0.9.4 and the sofia-sip, jansson, hiredis and prometheus-cpp commits its submodules pin.
# Needs root (Debian build packages) and https access to github.com; takes ~15 min on 2 cores.
#   bash scripts/build-drachtio.sh           build unless the cache already holds it
#   bash scripts/build-drachtio.sh --check   only say whether the source is reachable (exit 0/1)
set -euo pipefail
cd "$(dirname "$0")/.."

REPO=https://github.com/drachtio/drachtio-server.git
TAG=v0.9.4
COMMIT=a0ce11fe47c4109eaa3fec3ab4a47256cc4ab2df
OUT=.cache/drachtio/bin/drachtio
SRC=.cache/drachtio/src

reachable() { timeout 15 git ls-remote --exit-code "$REPO" "refs/tags/$TAG" >/dev/null 2>&1; }

if [ "${1:-}" = "--check" ]; then
  reachable && { echo "build-drachtio: $REPO $TAG is reachable"; exit 0; }
  echo "build-drachtio: $REPO is not reachable from this machine" >&2
  exit 1
fi
if [ -x "$OUT" ]; then
  echo "build-drachtio: $OUT is there already"
  exit 0
fi
if ! reachable; then
  echo "build-drachtio: cannot reach $REPO: put a drachtio-server $TAG binary at $OUT" \
    "or set SIP_TELEPORT_DRACHTIO_BIN (its runtime packages are in scripts/bootstrap.sh)" >&2
  exit 1
fi

BUILD_PACKAGES=(ca-certificates git build-essential cmake autoconf automake libtool libtool-bin curl
  libssl-dev libcurl4-openssl-dev zlib1g-dev libboost-log-dev libboost-thread-dev libboost-filesystem-dev
  libboost-system-dev)
missing=()
for p in "${BUILD_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "build-drachtio: needs root to install ${missing[*]}" >&2; exit 1; }
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

rm -rf "$SRC"
git clone --quiet --depth 1 --branch "$TAG" "$REPO" "$SRC"
[ "$(git -C "$SRC" rev-parse HEAD)" = "$COMMIT" ] || { echo "build-drachtio: $TAG is not $COMMIT" >&2; exit 1; }
git -C "$SRC" submodule update --quiet --init --recursive --depth 50
(
  cd "$SRC"
  ./bootstrap.sh
  mkdir -p build
  cd build
  ../configure CPPFLAGS=-DNDEBUG CXXFLAGS=-O2
  make -j"$(nproc)" drachtio
)
mkdir -p "$(dirname "$OUT")"
install -m 0755 -s "$SRC/build/drachtio" "$OUT"
rm -rf "$SRC"
echo "build-drachtio: built $OUT"
