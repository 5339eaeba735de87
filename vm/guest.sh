#!/bin/sh
# vm/guest.sh: the VM lane's work inside the guest, run by the base's didx-vm.service (after
# docker.service, systemd as init, cgroup v2 only) from the payload disk. Waits for the VM's
# own Docker engine, loads the images the run brought, runs the plan's test commands one after
# another, writes the results to the results disk (/dev/vdc, a plain tar stream) and powers off.
#
# Payload (/payload, read-only): lane.env (REPO=, the repository's absolute path on the host,
# so the test binaries' compiled-in paths hold), repo/ (tracked files and the built binaries),
# images.tar (docker save), plan (lines: NAME TIMEOUT_SECONDS COMMAND..., and `@engine KIND`
# lines: docker or podman for the lines after it).
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

# The engine the plan's lines use: docker (the VM's docker.service; until a line says
# otherwise) or podman (`podman system service` as root: its Docker-compatible socket). Each
# gets the run's images the first time it is used. Fails (said) when the engine cannot serve.
ENGINES=""
use_engine() {
	case " $ENGINES " in *" $1 "*) ;; *)
		case "$1" in
		docker) ;;
		podman)
			say "starting podman system service"
			mkdir -p /run/podman
			setsid podman system service --time=0 unix:///run/podman/podman.sock >"$R/podman.log" 2>&1 </dev/null &
			i=0
			until docker -H unix:///run/podman/podman.sock version >/dev/null 2>&1; do
				i=$((i + 1))
				if [ $i -gt 120 ]; then
					say "podman's service did not answer"
					return 1
				fi
				sleep 1
			done
			podman version --format 'podman: {{.Server.Version}}, API {{.Server.APIVersion}}' >>"$R/facts" 2>&1
			podman info --format 'podman: cgroup {{.Host.CgroupsVersion}} {{.Host.CgroupManager}}, runtime {{.Host.OCIRuntime.Name}}, network {{.Host.NetworkBackend}}' >>"$R/facts" 2>&1
			say "engine up: $(tail -n 2 "$R/facts" | tr '\n' ' ')"
			;;
		esac
		say "loading images into $1"
		if ! engine_cli "$1" load -i "$P/images.tar" >"$R/load.$1.log" 2>&1; then
			say "loading images into $1 failed"
			cat "$R/load.$1.log" >/dev/console
			return 1
		fi
		say "images loaded into $1: $(engine_cli "$1" images --format '{{.Repository}}:{{.Tag}}' | tr '\n' ' ')"
		ENGINES="$ENGINES $1"
		;;
	esac
	case "$1" in
	docker) unset DOCKER_HOST ;;
	podman) export DOCKER_HOST=unix:///run/podman/podman.sock ;;
	esac
}
# The docker CLI for engine $1 (podman's own CLI for podman: it names loaded images as it
# stores them).
engine_cli() {
	kind=$1
	shift
	case "$kind" in
	docker) docker -H unix:///var/run/docker.sock "$@" ;;
	podman) podman "$@" ;;
	esac
}

cd "$REPO"
: >"$R/summary"
engine=""
broken=""
while read -r name limit cmd; do
	case "$name" in '' | '#'*) continue ;; esac
	if [ "$name" = @engine ]; then
		engine=$limit
		broken=""
		use_engine "$engine" || broken=$engine
		continue
	fi
	if [ -z "$engine" ]; then
		engine=docker
		use_engine docker || broken=docker
	fi
	if [ -n "$broken" ]; then
		# Its engine could not serve: the line fails without running.
		echo "$name 125 0" >>"$R/summary"
		echo "not run: the $broken engine could not be set up" >"$R/$name.log"
		say "$name: not run ($broken engine down)"
		continue
	fi
	say "$name: running on $engine"
	s=$(cut -d. -f1 /proc/uptime)
	timeout -k 10 "$limit" sh -c "$cmd" >"$R/$name.log" 2>&1 </dev/null
	rc=$?
	took=$(($(cut -d. -f1 /proc/uptime) - s))
	echo "$name $rc $took" >>"$R/summary"
	say "$name: exit $rc in $took s; $(grep '^test result:' "$R/$name.log" | tail -n 1)"
	# What failed, on the console at once (the whole log comes back with the results).
	[ "$rc" = 0 ] || grep -E '^test .* FAILED$|panicked at' -A2 "$R/$name.log" | head -n 40 >/dev/console
done <"$P/plan"

# What the tests left on the VM's engines (they assert it themselves; this is the lane's view).
c=0
v=0
for e in $ENGINES; do
	c=$((c + $(engine_cli "$e" ps -aq --filter label=io.didx.env | wc -l)))
	v=$((v + $(engine_cli "$e" volume ls -q --filter label=io.didx.env | wc -l)))
done
echo "$c" >"$R/left.containers"
echo "$v" >"$R/left.volumes"
journalctl -u docker -u containerd --no-pager >"$R/dockerd.log" 2>&1
finish
