#!/usr/bin/env bash
# The libvirt lab's emulator: QEMU with 8 KiB more guest RAM than libvirt asks for. QEMU before 9.0
# loses TCG guest writes in migration when the RAM size is a multiple of 256 KiB (see tcgSafeMemory
# in lib/hypervisor/qemu.ts; the lab's guests crashed after 1 move in 5), and libvirt rounds every
# size to whole MiB. So the size is padded here, alike on both hosts: `-m N` (MiB) and the pc.ram
# backend's bytes. Any other form of -m is refused, not passed on unpadded.
set -euo pipefail
pad_kib=8
args=()
prev=""
for a in "$@"; do
  orig=$a
  if [[ $prev == -m ]]; then
    [[ $a =~ ^[0-9]+$ ]] || { echo "qemu-tcg-padded: cannot pad -m $a" >&2; exit 1; }
    a="$((a * 1024 + pad_kib))k"
  elif [[ $a == *'"qom-type":"memory-backend-ram","id":"pc.ram"'* ]]; then
    [[ $a =~ \"size\":([0-9]+) ]] || { echo "qemu-tcg-padded: cannot pad $a" >&2; exit 1; }
    size=${BASH_REMATCH[1]}
    a=${a/\"size\":$size/\"size\":$((size + pad_kib * 1024))}
  fi
  args+=("$a")
  prev=$orig
done
exec /usr/bin/qemu-system-x86_64 "${args[@]}"
