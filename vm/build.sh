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
# The base holds only the system and a unit (didx-vm.service) that mounts the run's payload
# disk and hands over to vm/guest.sh from it, so changing the guest script, the tests or didx
# never rebuilds the base.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/.."

out="${DIDX_VM_DIR:-target/vm}"
mirror="${DIDX_VM_MIRROR:-http://deb.debian.org/debian}"
suite=trixie
# mmdebstrap skips Recommends: everything needed is named. docker.io 26 in trixie ships no
# client (docker-cli). apparmor, which Debian's kernel recommends and installs, loads the host
# engine's docker-default profile, as on users' Debian and Ubuntu hosts.
# Podman (5.x in trixie) is the second engine kind, driven through `podman system service`'s
# Docker-compatible socket (vm/guest.sh starts it for a plan's `@engine podman` lines); its
# systemd units stay masked so the docker lines see nothing of it. Its netavark sets the
# firewall through nft (nftables); crun reaches systemd (its cgroup manager) over D-Bus (dbus).
# A rootless dockerd (the third kind) needs rootlesskit, slirp4netns and uidmap (newuidmap,
# newgidmap), and a user systemd with its session bus (dbus-user-session) for its unit and
# its cgroups; docker.io ships dockerd-rootless.sh and dockerd-rootless-setuptool.sh.
packages=linux-image-amd64,initramfs-tools,zstd,systemd-sysv,apparmor,docker.io,docker-cli,iptables,ca-certificates,mount,iproute2,procps,kmod,e2fsprogs,podman,crun,netavark,aardvark-dns,catatonit,nftables,dbus,rootlesskit,slirp4netns,uidmap,dbus-user-session,passwd
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

# Booted the way users' hosts are: systemd as init (cgroup v2 only: trixie's systemd has no v1
# support), docker.io's own docker.service with its default systemd cgroup driver. One unit
# of ours, didx-vm.service, runs after it: it mounts the run's payload disk (/dev/vdb) and hands
# over to vm/guest.sh from it. Getties and timers that would only cost time are masked.
files="$work/files"
mkdir -p "$files/etc/systemd/system/multi-user.target.wants" "$files/usr/local/sbin"
cat >"$files/etc/systemd/system/didx-vm.service" <<'UNIT'
[Unit]
Description=didx VM lane: run the payload's plan, then power off
After=docker.service
Wants=docker.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/didx-vm-run
StandardOutput=journal+console
StandardError=journal+console
UNIT
ln -s ../didx-vm.service "$files/etc/systemd/system/multi-user.target.wants/didx-vm.service"
cat >"$files/usr/local/sbin/didx-vm-run" <<'RUN'
#!/bin/sh
mkdir -p /payload
if mount -t ext4 -o ro /dev/vdb /payload; then exec /bin/sh /payload/vm/guest.sh; fi
echo "didx-vm: no payload disk" >/dev/console
echo o >/proc/sysrq-trigger
RUN
chmod 755 "$files/usr/local/sbin/didx-vm-run"
for unit in getty@tty1.service serial-getty@ttyS0.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer e2scrub_reap.service fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service \
  podman.socket podman.service podman-restart.service podman-auto-update.timer podman-clean-transient.service; do
  ln -s /dev/null "$files/etc/systemd/system/$unit"
done
echo didx-vm >"$files/etc/hostname"
# A fixed machine id: without one systemd treats the boot as a first boot (and may ask).
echo 5d1d5e2a0d1d4c6f8a9b0c1d2e3f4a5b >"$files/etc/machine-id"

mmdebstrap --quiet --variant=minbase --include="$packages" \
  --customize-hook='rm -f "$1"/var/cache/apt/*.bin; rm -rf "$1"/var/lib/apt/lists/*' \
  --customize-hook="sync-in $files /" \
  "$suite" "$root" "$mirror"

cp "$root"/boot/vmlinuz-* "$work/vmlinuz"
cp "$root"/boot/initrd.img-* "$work/initrd.img"
rm -f "$work/base.img"
mkfs.ext4 -q -F -L didx-root -d "$root" "$work/base.img" "$size"
mv "$work/base.img" "$work/vmlinuz" "$work/initrd.img" "$out/"
echo "$key" >"$out/base.key"
echo "vm: base built in $((SECONDS - start)) s: $out/base.img ($(du -h "$out/base.img" | cut -f1) used)" >&2
