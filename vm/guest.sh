#!/bin/sh
# vm/guest.sh: the VM lane's work inside the guest, run by the base's didx-vm.service (after
# docker.service, systemd as init, cgroup v2 only) from the payload disk. Waits for the VM's
# own Docker engine, loads the images the run brought, runs the plan's test commands one after
# another, writes the results to the results disk (/dev/vdc, a plain tar stream) and powers off.
#
# Payload (/payload, read-only): lane.env (REPO=, the repository's absolute path on the host,
# so the test binaries' compiled-in paths hold), repo/ (tracked files and the built binaries),
# images.tar (docker save), plan (lines: NAME TIMEOUT_SECONDS COMMAND..., and `@engine KIND`
# lines: docker, podman or rootless for the lines after it).
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
# otherwise), podman (`podman system service` as root: its Docker-compatible socket) or
# rootless (a rootless dockerd of user didx, set up as its users do: a user systemd unit
# written by dockerd-rootless-setuptool.sh; the lines after it run as that user). Each gets
# the run's images the first time it is used. Fails (said) when the engine cannot serve.
ENGINES=""
RUN_AS=""
# wait_for SECONDS WHAT CMD...: CMD every second until it succeeds; after SECONDS, say that
# WHAT did not come up, and fail.
wait_for() {
	n=$1
	what=$2
	shift 2
	i=0
	until "$@" >/dev/null 2>&1; do
		i=$((i + 1))
		if [ $i -gt "$n" ]; then
			say "$what did not come up"
			return 1
		fi
		sleep 1
	done
}
ROOTLESS_UID=1000
ROOTLESS_SOCK=/run/user/$ROOTLESS_UID/docker.sock
# as_user CMD...: CMD as user didx, in its session's environment (its runtime directory and
# bus, where systemctl --user and the rootless engine's tools look).
as_user() {
	runuser -u didx -- env HOME=/home/didx XDG_RUNTIME_DIR=/run/user/$ROOTLESS_UID \
		DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$ROOTLESS_UID/bus \
		PATH=/usr/local/lib/didx-rootless:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@"
}
start_rootless() {
	say "starting a rootless dockerd for user didx"
	id didx >/dev/null 2>&1 || useradd -m -u $ROOTLESS_UID -s /bin/sh didx
	# The user's subordinate ids (useradd gives them where login.defs says so; said here
	# whatever it did).
	grep -q '^didx:' /etc/subuid || echo 'didx:100000:65536' >>/etc/subuid
	grep -q '^didx:' /etc/subgid || echo 'didx:100000:65536' >>/etc/subgid
	# Its user manager (systemd --user, with its session bus), kept without a login.
	loginctl enable-linger didx
	wait_for 60 "user didx's systemd and bus" test -S /run/user/$ROOTLESS_UID/bus || return 1
	# The tool expects the docker CLI beside itself (Docker's own packages put them together;
	# Debian's docker.io keeps the scripts in its contrib directory): a directory of links.
	b=/usr/local/lib/didx-rootless
	mkdir -p "$b"
	for f in /usr/share/docker.io/contrib/dockerd-rootless.sh /usr/share/docker.io/contrib/dockerd-rootless-setuptool.sh /usr/bin/docker /usr/sbin/dockerd; do
		ln -sf "$f" "$b/"
	done
	if ! as_user "$b/dockerd-rootless-setuptool.sh" install >"$R/rootless-setup.log" 2>&1; then
		say "dockerd-rootless-setuptool.sh install failed:"
		tail -n 30 "$R/rootless-setup.log" >/dev/console
		return 1
	fi
	if ! wait_for 120 "the rootless engine" docker -H "unix://$ROOTLESS_SOCK" version; then
		as_user journalctl --user -u docker --no-pager 2>&1 | tail -n 30 >/dev/console
		return 1
	fi
	docker -H "unix://$ROOTLESS_SOCK" version --format 'rootless: engine {{.Server.Version}} (API {{.Server.APIVersion}})' >>"$R/facts" 2>&1
	docker -H "unix://$ROOTLESS_SOCK" info --format 'rootless: cgroup driver {{.CgroupDriver}} v{{.CgroupVersion}}, storage {{.Driver}}; security: {{.SecurityOptions}}' >>"$R/facts" 2>&1
	say "engine up: $(tail -n 2 "$R/facts" | tr '\n' ' ')"
}
use_engine() {
	case " $ENGINES " in *" $1 "*) ;; *)
		case "$1" in
		docker) ;;
		podman)
			say "starting podman system service"
			mkdir -p /run/podman
			setsid podman system service --time=0 unix:///run/podman/podman.sock >"$R/podman.log" 2>&1 </dev/null &
			wait_for 120 "podman's service" docker -H unix:///run/podman/podman.sock version || return 1
			docker -H unix:///run/podman/podman.sock version --format 'podman: {{.Server.Version}} (Docker API {{.Server.APIVersion}})' >>"$R/facts" 2>&1
			podman info --format 'podman: cgroup {{.Host.CgroupsVersion}} {{.Host.CgroupManager}}, runtime {{.Host.OCIRuntime.Name}}, network {{.Host.NetworkBackend}}' >>"$R/facts" 2>&1
			say "engine up: $(tail -n 2 "$R/facts" | tr '\n' ' ')"
			;;
		rootless) start_rootless || return 1 ;;
		esac
		say "loading images into $1"
		if ! engine_cli "$1" load -i "$P/images.tar" >"$R/load.$1.log" 2>&1; then
			say "loading images into $1 failed"
			cat "$R/load.$1.log" >/dev/console
			return 1
		fi
		if [ "$1" = rootless ] && engine_cli rootless image inspect didx/dind:26.1.5 >/dev/null 2>&1; then
			# Debian bookworm's image (docker 20.10, runc 1.1.5) cannot start inner containers
			# under rootless Docker on this kernel (didx refuses it at the start: r_refused);
			# trixie's (runc 1.1.15) can. This engine's offline image is trixie's, as a user
			# here would build it (`didx image build --suite trixie`, then --server-image).
			engine_cli rootless tag didx/dind:26.1.5 didx/dind:local
		fi
		say "images loaded into $1: $(engine_cli "$1" images --format '{{.Repository}}:{{.Tag}}' | tr '\n' ' ')"
		ENGINES="$ENGINES $1"
		;;
	esac
	RUN_AS=""
	case "$1" in
	docker) unset DOCKER_HOST ;;
	podman) export DOCKER_HOST=unix:///run/podman/podman.sock ;;
	rootless)
		export DOCKER_HOST=unix://$ROOTLESS_SOCK
		RUN_AS=didx
		# The image whose runtime fails here, for the refusal's test.
		export DIDX_TEST_BROKEN_INNER_IMAGE=didx/dind:20.10.24
		;;
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
	rootless) docker -H "unix://$ROOTLESS_SOCK" "$@" ;;
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
	if [ -n "$RUN_AS" ]; then
		as_user env DOCKER_HOST="$DOCKER_HOST" TMPDIR=/tmp timeout -k 10 "$limit" sh -c "$cmd" >"$R/$name.log" 2>&1 </dev/null
	else
		timeout -k 10 "$limit" sh -c "$cmd" >"$R/$name.log" 2>&1 </dev/null
	fi
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
case " $ENGINES " in *" rootless "*) as_user journalctl --user -u docker --no-pager >"$R/rootless-dockerd.log" 2>&1 ;; esac
finish
