#!/bin/sh
# vm/guest.sh: the VM lane's work inside the guest, run by the base's didx-vm.service (after
# docker.service, systemd as init, cgroup v2 only) from the payload disk. Waits for the VM's
# own Docker engine, loads the images the run brought, runs the plan's test commands one after
# another, writes the results to the results disk (/dev/vdc, a plain tar stream) and powers off.
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
mkdir -p "$R"
say "booted: systemd reached us $T0 s after the kernel started"
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security 2>/dev/null

. "$P/lane.env"
# The repository at the same absolute path as on the host, writable (an overlay on the
# read-only payload), since test binaries carry that path (CARGO_BIN_EXE_didx and friends).
mkdir -p "$REPO" /run/repo/up /run/repo/work
mount -t overlay overlay -o "lowerdir=$P/repo,upperdir=/run/repo/up,workdir=/run/repo/work" "$REPO"

{
	echo "kernel: $(uname -r)"
	echo "init: $(cat /proc/1/comm)"
	echo "cgroup: $(stat -fc %T /sys/fs/cgroup), v1 hierarchies: $(grep -c ' cgroup ' /proc/mounts)"
	echo "lsm: $(cat /sys/kernel/security/lsm 2>/dev/null || echo unknown)"
	echo "cpus: $(nproc)"
	echo "memory: $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo)"
} >"$R/facts"

say "waiting for docker.service"
i=0
until docker version >/dev/null 2>&1; do
	i=$((i + 1))
	if [ $i -gt 180 ]; then
		say "docker.service did not come up"
		journalctl -u docker -u containerd --no-pager >"$R/dockerd.log" 2>&1
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
journalctl -u docker -u containerd --no-pager >"$R/dockerd.log" 2>&1
finish
