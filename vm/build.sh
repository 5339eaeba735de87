#!/usr/bin/env bash
# vm/build.sh: build (or reuse) the VM lane's base disk: a Debian trixie system from Debian's
# packages only (kernel 6.12, docker.io 26.x with the docker-cli package, iptables), booted
# with the cgroup v2 hierarchy alone. Offline apart from the Debian mirror; no loop mounts
# (mmdebstrap into a directory, then `mkfs.ext4 -d`), no container engine involved.
#
# Output, in $DIDX_VM_DIR (default target/vm):
#   base.img     raw ext4 root file system (sparse; runs boot a qcow2 overlay of it)
#   vmlinuz, initrd.img   the kernel and Debian's initramfs, for QEMU's -kernel/-initrd
#   base.key     what the base was built from; a matching key means reuse
#
# The base holds only the system and a stub init (/sbin/didx-vm-init) that mounts the run's
# payload disk and hands over to vm/guest.sh from it, so changing the guest script, the tests or
# didx never rebuilds the base.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

out="${DIDX_VM_DIR:-target/vm}"
mirror="${DIDX_VM_MIRROR:-http://deb.debian.org/debian}"
suite=trixie
# mmdebstrap skips Recommends: everything needed is named. docker.io 26 in trixie ships no
# client (docker-cli). busybox-static gives the guest a poweroff-free shell toolbox.
packages=linux-image-amd64,initramfs-tools,zstd,docker.io,docker-cli,iptables,ca-certificates,mount,iproute2,procps,kmod,busybox-static,e2fsprogs
size="${DIDX_VM_DISK:-24G}"

key="$(printf '%s\n' "$suite" "$mirror" "$packages" "$size" | cat - "$self" | sha256sum | cut -c1-16)"
if [ -f "$out/base.key" ] && [ "$(cat "$out/base.key")" = "$key" ] && [ -f "$out/base.img" ]; then
  echo "vm: base reused ($out/base.img, key $key)" >&2
  exit 0
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "vm: installing mmdebstrap" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
fi

mkdir -p "$out"
work="$(mktemp -d "$out/base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
root="$work/root"
start=$SECONDS
echo "vm: building the base from Debian $suite ($mirror)" >&2

# The stub init: the real work is the run's vm/guest.sh, on the payload disk (/dev/vdb).
stub='#!/bin/sh
mount -t proc proc /proc 2>/dev/null
mkdir -p /payload
if mount -t ext4 -o ro /dev/vdb /payload; then exec /bin/sh /payload/vm/guest.sh; fi
echo "didx-vm: no payload disk" >/dev/console
echo o >/proc/sysrq-trigger'

mmdebstrap --quiet --variant=minbase --include="$packages" \
  --customize-hook='echo didx-vm >"$1/etc/hostname"' \
  --customize-hook="printf '%s\n' '$stub' >\"\$1/sbin/didx-vm-init\" && chmod 755 \"\$1/sbin/didx-vm-init\"" \
  --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/cache/apt/*.bin; rm -rf "$1"/var/lib/apt/lists/*' \
  "$suite" "$root" "$mirror"

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
rm -f "$work/base.img"
mkfs.ext4 -q -F -L didx-root -d "$root" "$work/base.img" "$size"
mv "$work/base.img" "$work/vmlinuz" "$work/initrd.img" "$out/"
echo "$key" >"$out/base.key"
echo "vm: base built in $((SECONDS - start)) s: $out/base.img ($(du -h "$out/base.img" | cut -f1) used)" >&2
