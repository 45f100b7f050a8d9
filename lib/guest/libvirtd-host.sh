#!/usr/bin/env bash
# One libvirt host on this machine for the tests: libvirtd + virtlogd in their own network
# namespace and mount namespace, with private /run/libvirt, /var/lib/libvirt, /var/log/libvirt,
# /var/cache/libvirt and /etc/libvirt (domain definitions) bound from DIR, and a host_uuid of
# their own (libvirt refuses a migration to a host with its own UUID).
#   up DIR NETNS [CAPS]  start it; the socket is DIR/run/libvirt-sock; CAPS: a folder of QEMU
#                  capabilities probed before, its starting cache (else libvirtd probes, ~4 s)
#   restart DIR    stop libvirtd only (domains keep running) and start it again in the same namespaces
#   down DIR       destroy its domains, stop the daemons, delete the netns (DIR stays for the caller)
set -euo pipefail
cmd=$1 dir=$2

start_libvirtd() {
  nsenter --mount="$dir/mntns" --net="/run/netns/$(cat "$dir/netns")" \
    libvirtd -d --config /etc/libvirt/libvirtd.conf --pid-file /run/libvirt/libvirtd.pid
  for _ in $(seq 100); do [ -S "$dir/run/libvirt-sock" ] && return 0; sleep 0.05; done
  echo "libvirtd in $dir did not create its socket" >&2; return 1
}

stop_libvirtd() {
  local pid
  pid=$(cat "$dir/run/libvirtd.pid" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -9 "$pid" 2>/dev/null || true
}

case $cmd in
up)
  ns=$3
  mkdir -p "$dir"/{run,lib,log,cache,etc}
  if [ -n "${4:-}" ] && compgen -G "$4/*.xml" >/dev/null; then
    mkdir -p "$dir/cache/qemu/capabilities"
    cp "$4"/*.xml "$dir/cache/qemu/capabilities/"
  fi
  cp -a /etc/libvirt/. "$dir/etc/"
  rm -rf "$dir/etc/qemu/networks/autostart" "$dir/etc/qemu/"*.xml
  cat >> "$dir/etc/libvirtd.conf" <<CONF
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
auth_unix_rw = "none"
auth_unix_ro = "none"
unix_sock_rw_perms = "0700"
CONF
  # tests run as root with guest files under the project: no per-domain users or labels
  cat >> "$dir/etc/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
security_driver = "none"
CONF
  ip netns add "$ns"
  echo "$ns" > "$dir/netns"
  ip -n "$ns" link set lo up
  touch "$dir/mntns"
  # a mount namespace kept alive by a bind mount of its handle, so restart can enter it again
  unshare --mount="$dir/mntns" --propagation private bash -c "
    mount --bind '$dir/run' /run/libvirt 2>/dev/null || { mkdir -p /run/libvirt; mount --bind '$dir/run' /run/libvirt; }
    for d in lib:/var/lib/libvirt log:/var/log/libvirt cache:/var/cache/libvirt etc:/etc/libvirt; do
      mkdir -p \"\${d#*:}\"; mount --bind '$dir/'\"\${d%%:*}\" \"\${d#*:}\"
    done"
  nsenter --mount="$dir/mntns" --net="/run/netns/$ns" virtlogd -d --pid-file /run/libvirt/virtlogd.pid
  start_libvirtd
  ;;
restart)
  stop_libvirtd
  start_libvirtd
  ;;
down)
  uri="qemu:///system?socket=$dir/run/libvirt-sock"
  if [ -S "$dir/run/libvirt-sock" ]; then
    # in parallel: each destroy waits for its QEMU to exit (~2 s for a TCG guest)
    for d in $(virsh -c "$uri" list --name 2>/dev/null); do virsh -c "$uri" destroy "$d" >/dev/null 2>&1 & done
    wait
  fi
  # QEMUs whose libvirtd is gone
  for p in "$dir"/run/qemu/*.pid; do [ -f "$p" ] && kill -9 "$(cat "$p")" 2>/dev/null || true; done
  stop_libvirtd
  kill "$(cat "$dir/run/virtlogd.pid" 2>/dev/null)" 2>/dev/null || true
  umount "$dir/mntns" 2>/dev/null || true
  [ -f "$dir/netns" ] && ip netns del "$(cat "$dir/netns")" 2>/dev/null || true
  ;;
esac
