#!/usr/bin/env bash
# Builds the test guest into .cache/guest/ (or $1): a Debian cloud kernel unpacked from its .deb
# (never installed) and a busybox-static initramfs whose /init loads virtio-net, takes its address
# from the kernel command line (st.ip=ADDR/LEN st.name=NAME) and serves ping, HTTP (with an
# uptime CGI at /cgi-bin/up) and a TCP echo on port 7. Optional, for the testbed's routed topologies:
# st.addr=CIDR[,CIDR] more addresses, st.gw=IP a default route, st.fwd=1 forward between subnets
# (routers, firewalls), st.udpecho=PORT a UDP echo (needs socat: the second output, socat.cpio.gz,
# is a cpio overlay to append to initramfs.gz), st.disk=1 mounts the ext4 filesystem on the first
# virtio disk at /mnt and appends a sequence number to /mnt/seq every few ms (a 4 KiB record, one
# filesystem block of its own written once and never again: a write the disk copy lost is never
# healed by a later rewrite of the same block), fsyncing each and then printing "SEQ n" on the
# console (the disk tests' writer), st.dirty=MIBS a memory writer dirtying
# MIBS MiB/s (also started, changed or stopped at run time by GET /cgi-bin/dirty?rate=MIBS; GET
# /cgi-bin/dirty says how it goes: passes and the longest gap between two of them, in ms),
# st.fill=SHARED,OWN fills RAM files with SHARED MiB that every guest holds alike and OWN MiB of
# its own (the dedup tests' patterns: distinct pages within each), prints "FILL NAME SUM" on the
# console once written and "FILL-CHECK NAME SUM" every second after (the same SUM while memory is whole).
# Idempotent: does nothing when this version is built.
set -euo pipefail
OUT=${1:-"$(cd "$(dirname "$0")/../.." && pwd)/.cache/guest"}
# Bump when the image changes, so cached builds are redone.
VERSION=9
[ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initramfs.gz" ] && [ -s "$OUT/socat.cpio.gz" ] && [ "$(cat "$OUT/version" 2>/dev/null)" = "$VERSION" ] && exit 0
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# The image package the cloud metapackage points at today (fresh CI images may lack apt's lists).
image_pkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
PKG=$(image_pkg)
if [ -z "$PKG" ] && [ "$(id -u)" = 0 ]; then apt-get update -q >&2; PKG=$(image_pkg); fi
[ -n "$PKG" ] || { echo "build-guest: linux-image-cloud-amd64 not known to apt (run apt-get update as root)" >&2; exit 1; }
apt-get -o APT::Sandbox::User=root download -q=2 "$PKG" >/dev/null   # as root, into a private folder
dpkg-deb -x "$PKG"_*.deb kernel

# Order matters: each module needs the ones before it.
# ext4 is built into the cloud kernel; virtio_blk is a module.
MODS="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_blk"
mkdir -p root/run root/bin root/proc root/sys root/dev root/tmp root/www/cgi-bin root/lib
cp /bin/busybox root/bin/
for a in $(root/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "root/bin/$a"; done
for m in $MODS; do
  ko=$(find kernel/lib/modules -name "$m.ko" | head -1)
  [ -n "$ko" ] || { echo "build-guest: module $m.ko not found in $PKG" >&2; exit 1; }
  cp "$ko" root/lib/
done
cat > root/init <<INIT
#!/bin/sh
export PATH=/bin
mount -t proc p /proc; mount -t sysfs s /sys; mount -t devtmpfs d /dev
for m in $MODS; do insmod /lib/\$m.ko 2>/dev/null; done
IP=; N=guest; ADDRS=; GW=; FWD=; UDP=; DISK=; FILL=
for a in \$(cat /proc/cmdline); do case \$a in st.ip=*) IP=\${a#st.ip=};; st.name=*) N=\${a#st.name=};;
  st.addr=*) ADDRS=\${a#st.addr=};; st.gw=*) GW=\${a#st.gw=};; st.fwd=1) FWD=1;; st.udpecho=*) UDP=\${a#st.udpecho=};;
  st.disk=1) DISK=1;; st.fill=*) FILL=\${a#st.fill=};;
  st.dirty=*) QUERY_STRING=rate=\${a#st.dirty=} /www/cgi-bin/dirty >/dev/null;; esac; done
hostname "\$N"; echo "hello from \$N" > /www/index.html
printf '#!/bin/sh\necho "Content-Type: text/plain"; echo; echo "\$(hostname) up \$(cut -d" " -f1 /proc/uptime)s"\n' > /www/cgi-bin/up
chmod +x /www/cgi-bin/up
[ -n "\$FILL" ] && (fill "\$FILL" </dev/null >/dev/console 2>&1 &)
ip link set lo up
if [ -n "\$IP" ] && [ -e /sys/class/net/eth0 ]; then ip addr add "\$IP" dev eth0; ip link set eth0 up; fi
for c in \$(echo "\$ADDRS" | tr , " "); do ip addr add "\$c" dev eth0; done
[ -n "\$GW" ] && ip route add default via "\$GW"
# A one-armed router: both subnets on eth0, so ICMP redirects would teach hosts to bypass it.
if [ -n "\$FWD" ]; then for f in /proc/sys/net/ipv4/conf/*/send_redirects; do echo 0 > \$f; done; echo 1 > /proc/sys/net/ipv4/ip_forward; fi
# socat serves one peer per run; -T restarts it for the next peer after 10 s of silence.
if [ -n "\$UDP" ] && [ -x /bin/socat ]; then (while :; do socat -T 10 UDP-LISTEN:\$UDP,reuseaddr PIPE; done) </dev/null >/dev/null 2>&1 & fi
# The writer: record n is block n-1 of /mnt/seq; a number is printed only once it is on the disk
# (dd's fsync returned), so every number the console shows must be in /mnt/seq, whichever host the
# disk is on by then. The record is made in RAM first: dd reading a pipe could split it.
if [ -n "\$DISK" ]; then
  mkdir -p /mnt
  if mount -t ext4 /dev/vda /mnt; then
    (i=\$(( \$(stat -c %s /mnt/seq 2>/dev/null || echo 0) / 4096 )); while :; do i=\$((i+1))
      printf "%-4095s\\n" \$i > /tmp/rec
      dd if=/tmp/rec of=/mnt/seq bs=4096 seek=\$((i-1)) conv=notrunc,fsync 2>/dev/null || { echo "SEQ-FAILED \$i"; break; }
      echo "SEQ \$i"; usleep 5000; done) </dev/null >/dev/console 2>&1 &
    echo "DISK-READY \$N"
  else echo "DISK-FAILED \$N"; fi
fi
httpd -p 80 -h /www
nc -ll -p 7 -e cat </dev/null >/dev/null 2>&1 &
echo "GUEST-READY \$N"
exec setsid cttyhack sh
INIT
chmod +x root/init

# The memory writer: every second it rewrites RATE MiB of a RAM file with random bytes (zero pages
# would travel as markers, not as pages), so the migration must resend them. A pass that waits for
# the migration (throttling, post-copy page faults) shows as a gap longer than 1000 ms between passes.
cat > root/bin/dirty <<'DIRTY'
#!/bin/sh
RATE=$1; D=/run/dirty
now() { read u _ < /proc/uptime; f=${u#*.}; echo $(( ${u%.*} * 1000 + (1$f - 100) * 10 )); }
# its own RAM file system: the root one is capped at half the RAM
mkdir -p $D; grep -q " $D " /proc/mounts || mount -t tmpfs -o size=100% dirty $D
P=1; [ "$RATE" -ge 8 ] && P=4
N=$(( RATE / P ))
dd if=/dev/urandom of=$D/src bs=${P}M count=1 2>/dev/null
passes=0; max=0; last=$(now)
while :; do
  s=$(now); k=0
  while [ $k -lt $N ]; do dd if=$D/src of=$D/buf bs=${P}M count=1 seek=$k conv=notrunc 2>/dev/null; k=$((k + 1)); done
  e=$(now); gap=$((e - last)); last=$e; passes=$((passes + 1)); [ $gap -gt $max ] && max=$gap
  echo "rate $RATE passes $passes maxgap_ms $max lastgap_ms $gap" > $D/stats.new && mv $D/stats.new $D/stats
  cp $D/stats /dev/console 2>/dev/null  # DIRTY lines on the console, for hosts without a network to the guest
  w=$((e - s)); [ $w -lt 1000 ] && sleep 0.$(printf %03d $((1000 - w)))
done
DIRTY
cat > root/www/cgi-bin/dirty <<'CGI'
#!/bin/sh
echo "Content-Type: text/plain"; echo
case "$QUERY_STRING" in rate=*)
  r=${QUERY_STRING#rate=}; [ -f /run/dirty.pid ] && kill "$(cat /run/dirty.pid)" 2>/dev/null
  rm -f /run/dirty.pid /run/dirty/stats /run/dirty/buf
  [ "$r" -gt 0 ] 2>/dev/null && { mkdir -p /run/dirty; echo "rate $r passes 0 maxgap_ms 0" > /run/dirty/stats
    dirty "$r" </dev/null >/dev/null 2>&1 & echo $! > /run/dirty.pid; } ;;
esac
cat /run/dirty/stats 2>/dev/null || echo "rate 0"
CGI
# The filler: distinct numbered lines, so every 4 KiB page differs from its neighbours; the
# shared part is the same text in every guest, the own part starts with the guest's name.
cat > root/bin/fill <<'FILL'
#!/bin/sh
S=${1%,*}; O=${1#*,}; D=/run/fill; N=$(hostname)
mkdir -p $D; mount -t tmpfs -o size=100% fill $D
seq 1 99999999 | head -c $((S * 1048576)) > $D/shared
seq 1 99999999 | sed "s/^/$N /" | head -c $((O * 1048576)) > $D/own
sum() { cat $D/shared $D/own | md5sum | cut -d" " -f1; }
echo "FILL $N $(sum)"
while :; do sleep 1; echo "FILL-CHECK $N $(sum)"; done
FILL
chmod +x root/bin/dirty root/www/cgi-bin/dirty root/bin/fill
(cd root && find . | cpio -o -H newc --quiet | gzip -1) > initramfs.gz
cp kernel/boot/vmlinuz-* "$OUT/vmlinuz.tmp" && mv "$OUT/vmlinuz.tmp" "$OUT/vmlinuz"
mv initramfs.gz "$OUT/initramfs.gz"

# socat and the libraries it loads (about 9 MiB), only for guests that need the UDP echo.
mkdir overlay
for f in /usr/bin/socat $(ldd /usr/bin/socat | awk '/=> \//{print $3} /^[ \t]*\/lib.*ld-linux/{print $1}'); do cp -L --parents "$f" overlay/; done
mkdir -p overlay/bin && mv overlay/usr/bin/socat overlay/bin/socat
(cd overlay && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT/socat.cpio.gz"
echo "$VERSION" > "$OUT/version"
echo "build-guest: $PKG -> $OUT" >&2
