#!/bin/sh
# vm/guest.sh: PID 1 of the VM lane's guest (started by the base's stub init from the payload
# disk). Brings up a cgroup-v2-only system with the VM's own Docker engine, loads the images
# the run brought, runs the plan's test commands one after another, writes the results to the
# results disk (/dev/vdc, a plain tar stream) and powers off.
#
# Payload (/payload, read-only): lane.env (REPO=, the repository's absolute path on the host,
# so the test binaries' compiled-in paths hold), repo/ (tracked files and the built binaries),
# images.tar (docker save), plan (lines: NAME TIMEOUT_SECONDS COMMAND...).
set -u
P=/payload
R=/results
T0=$(cut -d. -f1 /proc/uptime)
say() { echo "didx-vm: [$(($(cut -d. -f1 /proc/uptime) - T0)) s] $*" >/dev/console; }
finish() {
	say "writing results"
	tar -C "$R" -cf /dev/vdc . && sync
	say "power off"
	echo o >/proc/sysrq-trigger
	sleep 60
}

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
mount -o remount,rw / 2>/dev/null
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
# cgroup v2 only: the unified hierarchy at /sys/fs/cgroup, no v1 hierarchy anywhere.
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /dev/pts /dev/shm /run/lock
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
hostname didx-vm
ip link set lo up
mkdir -p "$R"
say "booted: the guest started $T0 s after the kernel"

. "$P/lane.env"
# The repository at the same absolute path as on the host, writable (an overlay on the
# read-only payload), since test binaries carry that path (CARGO_BIN_EXE_didx and friends).
mkdir -p "$REPO" /run/repo/up /run/repo/work
mount -t overlay overlay -o "lowerdir=$P/repo,upperdir=/run/repo/up,workdir=/run/repo/work" "$REPO"

{
	echo "kernel: $(uname -r)"
	echo "cgroup: $(stat -fc %T /sys/fs/cgroup)"
	echo "cpus: $(nproc)"
	echo "memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
} >"$R/facts"

say "starting dockerd"
dockerd >/var/log/dockerd.log 2>&1 &
i=0
until docker version >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 120 ]; then
		say "dockerd did not come up"
		cp /var/log/dockerd.log "$R/"
		finish
	fi
	sleep 1
done
docker version --format 'engine: {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}}' >>"$R/facts"
docker info --format 'cgroup driver: {{.CgroupDriver}} v{{.CgroupVersion}}; security: {{.SecurityOptions}}' >>"$R/facts"
say "engine up: $(tail -n 2 "$R/facts" | tr '\n' ' ')"

say "loading images"
if ! docker load -i "$P/images.tar" >"$R/load.log" 2>&1; then
	say "docker load failed"
	cat "$R/load.log" >/dev/console
	finish
fi
say "images loaded: $(docker images --format '{{.Repository}}:{{.Tag}}' | tr '\n' ' ')"

cd "$REPO"
: >"$R/summary"
while read -r name limit cmd; do
	case "$name" in '' | '#'*) continue ;; esac
	say "$name: running"
	s=$(cut -d. -f1 /proc/uptime)
	timeout -k 10 "$limit" sh -c "$cmd" >"$R/$name.log" 2>&1 </dev/null
	rc=$?
	took=$(($(cut -d. -f1 /proc/uptime) - s))
	echo "$name $rc $took" >>"$R/summary"
	say "$name: exit $rc in $took s; $(grep '^test result:' "$R/$name.log" | tail -n 1)"
	# What failed, on the console at once (the whole log comes back with the results).
	[ "$rc" = 0 ] || grep -E '^test .* FAILED$|panicked at' -A2 "$R/$name.log" | head -n 40 >/dev/console
done <"$P/plan"

# What the tests left on the VM's engine (they assert it themselves; this is the lane's view).
docker ps -aq --filter label=io.didx.env | wc -l >"$R/left.containers"
docker volume ls -q --filter label=io.didx.env | wc -l >"$R/left.volumes"
cp /var/log/dockerd.log "$R/"
finish
