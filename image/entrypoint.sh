#!/bin/sh
# didx entrypoint: PID 1 of didx's server and client containers.
#
#   entrypoint server [DOCKERD ARGS...]   prepare nesting, then run dockerd with the args and
#                                         stay its parent (PID 1) until it ends
#   entrypoint client                     idle until told to stop (SIGTERM/SIGINT end it at once)
#   entrypoint lease                      (run by didx as an exec with stdin attached) hold this
#                                         running container for the didx process that owns it
#                                         (a claim of a pooled environment); marks it claimed
#   entrypoint reap                       (a --engine host environment's reaper, held by didx) on
#                                         lease loss remove everything of DIDX_ENV but itself
#   entrypoint store-fill [DOCKERD ARGS...] PID 1 of a store's filler: dockerd on the store volume
#                                         (/didx/store); once committed and ended, a snapshot
#   entrypoint store-commit               (an exec in the filler) list the images, mark the fill
#                                         committed and stop dockerd cleanly
#   entrypoint store-published            (an exec in the filler) wait for the snapshot, print its index
#   entrypoint store-sealed               (an exec in the filler) didx kept the seal: PID 1 may end
#
# The image store (didx's --store): a volume filled by an engine of the same version, its data
# root at /didx/store/root. A filler's dockerd is stopped cleanly (quiesced) before its metadata
# is published: the small files (image/, each layer's link/lower/committed/work, overlay2/l/)
# are copied into /didx/store/snap-N, then /didx/store/current is renamed to name it. A server
# started with DIDX_STORE (the volume, mounted read-only) copies the current snapshot into its
# own empty /var/lib/docker before dockerd starts and binds each layer's diff/ read-only onto
# its own: its engine lists the images at once, runs and builds on them, and whatever it
# deletes or writes goes to its own storage. Layer diff/ directories never change once
# committed, so filling while servers use the store is safe (new layers are added beside).
#
# A container didx holds from its very start is created with stdin open and started under a
# bootstrap (a `sh -c` script, see didx's recipe): didx starts it, attaches to its stdin, writes
# this file and the certificates there as text records the bootstrap turns into files, then
# says "go". With DIDX_LEASE=stdin the server and client below keep watching that stdin the
# same way the lease mode does.
#
# The lease: didx keeps one exec per container it must not outlive, reading its stdin. The
# stream is a connection of the didx process, so the kernel closes it whatever ends that
# process, SIGKILL included; the engine then closes the exec's stdin. End of input without a
# "release" line means the owner is gone: the container stops itself (the server kills its
# dockerd; the client's PID 1 exits), and the engine's auto-removal (AutoRemove) takes the
# container and its anonymous volumes. A "release" line hands the container over: it stays,
# and says so on its output ("didx-lease: released"), which didx waits for before it lets the
# connection go (over SSH, what an ssh process still buffers when didx ends is lost).
#
# POSIX sh only: it runs in Debian's dash (didx/dind:local) and in busybox ash (docker:*-dind).
# didx places this file at /didx/entrypoint in every container it creates, so the same logic
# runs whatever image is used. The server part follows moby's hack/dind and kind's entrypoint:
# both cgroup v1 and v2 hosts, privileged or not (didx's "caps" isolation mounts /sys and the
# cgroup filesystem read-only; with CAP_SYS_ADMIN we may remount them writable).
set -eu

log() { printf 'didx-entrypoint: %s\n' "$*" >&2; }

# The mount table, read once: "MOUNTPOINT FSTYPE OPTIONS SUPER_OPTIONS" per line. Reading
# /proc/self/mountinfo with sh's read builtin once per question cost ~100 ms (it reads a byte per
# system call); one awk pass costs ~2 ms. The file system type follows the " - " separator,
# after a variable number of optional fields.
MOUNTS=""
load_mounts() {
	MOUNTS=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { print $5, $(i + 1), $6, $(i + 3); break } }' /proc/self/mountinfo)
}

# mounted MOUNTPOINT: whether something is mounted there.
mounted() {
	case "
$MOUNTS" in *"
$1 "*) return 0 ;; esac
	return 1
}

make_rw() {
	# A bind mount (what runtimes give a container) changes its own flag with remount,bind;
	# a plain remount changes the superblock and is refused for those.
	mount -o remount,bind,rw "$1" 2>/dev/null || mount -o remount,rw "$1" 2>/dev/null ||
		log "cannot remount $1 read-write"
}

prepare_sys() {
	load_mounts
	# /sys and the cgroup filesystem: writable, as dockerd must create cgroups. Parents first
	# (the table lists them first), so /sys before /sys/fs/cgroup before each hierarchy.
	printf '%s\n' "$MOUNTS" | while read -r mp fstype opts super; do
		case "$mp" in /sys | /sys/fs/cgroup | /sys/fs/cgroup/*) ;; *) continue ;; esac
		case "$fstype" in sysfs | tmpfs | cgroup | cgroup2) ;; *) continue ;; esac
		case ",$opts," in *,ro,*) make_rw "$mp" ;; esac
		# The superblock too: the runtime mounts a new sysfs read-only for a container that is
		# not privileged, and a writable mount of a read-only superblock still refuses writes
		# (kind's node image and some inner tools need a writable /sys). This container's own
		# network namespace owns that sysfs, so remounting it changes nothing outside.
		case ",$super," in *,ro,*) mount -o remount,rw "$mp" 2>/dev/null || log "cannot make $mp's superblock writable" ;; esac
	done
	# securityfs stays unmounted, unlike moby's hack/dind: with it, on a host whose kernel has
	# AppArmor (Debian, Ubuntu), the inner dockerd sees /sys/kernel/security/apparmor, takes
	# AppArmor as enabled and fails every `docker run` for want of apparmor_parser (found by the
	# VM lane; container=docker does not stop Debian's 20.10); with the parser it would load its
	# docker-default profile into the host kernel, over the host engine's own.
	if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
		# cgroup v2 (unified). Nesting as in moby's hack/dind: move every process out of the
		# root group, otherwise enabling controllers in subtree_control fails with EBUSY.
		mkdir -p /sys/fs/cgroup/init
		while read -r pid; do
			echo "$pid" >/sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
		done </sys/fs/cgroup/cgroup.procs
		ctrls=""
		for c in $(cat /sys/fs/cgroup/cgroup.controllers); do ctrls="$ctrls +$c"; done
		if [ -n "$ctrls" ]; then
			echo "$ctrls" >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null ||
				log "could not enable cgroup controllers:$ctrls"
		fi
	fi
	# cgroup v1 needs nothing more: a tmpfs at /sys/fs/cgroup holding one mount per hierarchy,
	# each made writable above.
}

prepare_dev() {
	# /dev/kmsg, the kernel log device: a privileged container gets the host's, the caps
	# profile's /dev is the runtime's minimal one without it. kind's node (a kubelet reads it)
	# and other inner --privileged containers get the devices of this /dev, so make it where it
	# is missing: the caps profile's device rule allows every device and it has CAP_MKNOD, so
	# this exposes nothing a process in here could not make itself. Reading it still takes
	# CAP_SYSLOG where the host restricts dmesg.
	[ -e /dev/kmsg ] || mknod -m 0644 /dev/kmsg c 1 11 2>/dev/null || log "cannot make /dev/kmsg"
}

prepare_tmp() {
	# dockerd and containerd write under /run and /tmp; moby's hack/dind mounts /tmp as tmpfs.
	if ! mounted /tmp; then mount -t tmpfs none /tmp 2>/dev/null || true; fi
}

choose_iptables() {
	# Prefer whichever iptables backend works in this kernel (nft where available, else legacy),
	# as docker:dind's entrypoint does. Only Debian-style alternatives are switched.
	command -v iptables >/dev/null 2>&1 || return 0
	if iptables -nL >/dev/null 2>&1; then return 0; fi
	if command -v iptables-legacy >/dev/null 2>&1 && iptables-legacy -nL >/dev/null 2>&1; then
		if command -v update-alternatives >/dev/null 2>&1; then
			update-alternatives --set iptables /usr/sbin/iptables-legacy >/dev/null 2>&1 || true
			update-alternatives --set ip6tables /usr/sbin/ip6tables-legacy >/dev/null 2>&1 || true
		else
			mkdir -p /didx/bin
			ln -sf "$(command -v iptables-legacy)" /didx/bin/iptables
			ln -sf "$(command -v ip6tables-legacy)" /didx/bin/ip6tables 2>/dev/null || true
			PATH="/didx/bin:$PATH"
			export PATH
		fi
	fi
}

# route_mtu: the MTU of the interface the default route leaves by (the network this server sits
# on), or nothing.
route_mtu() {
	iface=$(awk '$2 == "00000000" { print $1; exit }' /proc/net/route 2>/dev/null)
	[ -n "$iface" ] && cat "/sys/class/net/$iface/mtu" 2>/dev/null
}

# has_option NAME ARGS...: whether dockerd's ARGS set --NAME (as --NAME=V or --NAME V).
has_option() {
	name=$1
	shift
	for a in "$@"; do
		case "$a" in "--$name" | "--$name="*) return 0 ;; esac
	done
	return 1
}

LEASE_DIR=/run/didx

server() {
	prepare_sys
	prepare_dev
	prepare_tmp
	choose_iptables
	rm -f /var/run/docker.pid /run/docker/containerd/containerd.pid 2>/dev/null || true
	mkdir -p "$LEASE_DIR"
	[ -n "${DIDX_STORE:-}" ] && store_seed "$DIDX_STORE"
	# Inner containers get the MTU of the network this server sits on, not dockerd's default
	# 1500: a bigger MTU than the path's drops large packets, and TLS handshakes and downloads
	# hang. --mtu covers the default bridge; engines that have --default-network-opt (24.0 on)
	# also get it for the networks they create (compose projects). --dkropts setting either
	# wins. Asked only when the MTU is not the default (asking dockerd costs ~60 ms).
	mtu=$(route_mtu || true)
	if [ -n "$mtu" ] && [ "$mtu" != 1500 ]; then
		has_option mtu "$@" || set -- "--mtu=$mtu" "$@"
		if ! has_option default-network-opt "$@" && dockerd --help 2>&1 | grep -q -- --default-network-opt; then
			set -- "--default-network-opt=bridge=com.docker.network.driver.mtu=$mtu" "$@"
		fi
	fi
	# The engine outlives what it runs: under a --memory bound its inner containers share, the
	# kernel's OOM killer must take an inner process, not dockerd or containerd (they inherit
	# this; dockerd sets its containers' own 0). The inner dockerd leaves itself at 0, and in the
	# VM lane one inner OOM in 19 ended the engine instead (docker run: 'error waiting for
	# container: unexpected EOF'). Lowering needs CAP_SYS_RESOURCE: privileged servers have it,
	# the caps profile does not and stays at 0.
	{ echo -500 >/proc/self/oom_score_adj; } 2>/dev/null || true
	dockerd "$@" </dev/null &
	dockerd=$!
	echo "$dockerd" >"$LEASE_DIR/dockerd.pid"
	# Held from before its start: stdin is the owning didx's attached connection (see the
	# bootstrap in didx's recipe), watched in the background.
	[ "${DIDX_LEASE:-}" = stdin ] && watch_stdin
	# Stopping the container stops dockerd (PID 1 of a shell ignores signals it does not trap).
	trap 'kill -TERM "$dockerd" 2>/dev/null || true' TERM INT
	# A pooled server nobody claims within DIDX_IDLE_TIMEOUT seconds ends itself (a claim's
	# lease marks it claimed first).
	if [ -n "${DIDX_IDLE_TIMEOUT:-}" ]; then
		(
			sleep "$DIDX_IDLE_TIMEOUT"
			if [ ! -e "$LEASE_DIR/claimed" ]; then
				log "not claimed within ${DIDX_IDLE_TIMEOUT}s: ending this pooled environment"
				: >"$LEASE_DIR/ended"
				kill -KILL "$dockerd" 2>/dev/null || true
			fi
		) &
	fi
	status=0
	while :; do
		wait "$dockerd" && status=0 || status=$?
		kill -0 "$dockerd" 2>/dev/null || break
	done
	# dockerd is gone: this container ends whatever its lease says.
	trap - CHLD
	if [ -e "$LEASE_DIR/ended" ]; then
		# Ended by its lease or idle timeout: at once (the client shares no volume with this
		# container; it ends by its own lease, or follows), so the engine's auto-removal takes
		# the environment within moments of its owner letting go.
		exit 0
	fi
	# dockerd ended by itself (a bad option, a crash): say so where didx looks (this log), and
	# stay a while so the log can be read before the engine's auto-removal takes it.
	log "dockerd exited (status $status)"
	sleep "${DIDX_LINGER:-30}" &
	wait $! || true
	exit "$status"
}

# listing DIR [FIND ARGS]: one line per file under DIR: name, type and mode, owner, size,
# device numbers, inode, modification and change times, sorted. Any write to a file, any
# change of its mode or owner, any entry added, removed or renamed changes some line: a write
# sets the change time to the current time, and no system call sets it to another value.
listing() {
	dir=$1
	shift
	(cd "$dir" && find . "$@" -exec stat -c '%n %f %u:%g %s %t:%T %i %Y %Z' {} +) | LC_ALL=C sort
}

# fingerprint DIR [FIND ARGS]: the SHA-256 of DIR's listing.
fingerprint() {
	listing "$@" | sha256sum | cut -d' ' -f1
}

# store_seal SNAP ROOT: write SNAP/seal: the snapshot's own fingerprint (its files but the seal,
# which the index names by its digest) and each of its layers' diff/ under ROOT/overlay2. The
# digest of this file goes into the snapshot's index, and didx keeps it on the host engine,
# out of every sandbox's reach: a server seeds only when the seal and everything it names match.
store_seal() {
	snap=$1
	root=$2
	{
		printf 'snapshot %s\n' "$(fingerprint "$snap" -mindepth 1 ! -path ./seal ! -path ./index)"
		for l in "$snap"/overlay2/*/; do
			id=${l%/}
			id=${id##*/}
			[ "$id" = l ] && continue
			printf '%s %s\n' "$id" "$(fingerprint "$root/overlay2/$id/diff")"
		done
	} >"$snap/seal"
}

# store_verify SNAP ROOT: whether SNAP/seal's digest is DIDX_STORE_SEAL and the snapshot and
# every layer it names still match it (the layers checked in parallel); says what does not.
store_verify() {
	snap=$1
	root=$2
	if [ "$(sha256sum <"$snap/seal" 2>/dev/null | cut -d' ' -f1)" != "${DIDX_STORE_SEAL:-}" ]; then
		log "store: refused ${snap##*/}: its seal is not the one didx sealed it with"
		return 1
	fi
	work=$(mktemp -d)
	i=0
	while read -r what want; do
		i=$((i + 1))
		if [ "$what" = snapshot ]; then
			(fingerprint "$snap" -mindepth 1 ! -path ./seal ! -path ./index >"$work/$i") &
		else
			case $what in *[!0-9a-f]* | "") log "store: refused ${snap##*/}: a malformed seal"; rm -rf "$work"; return 1 ;; esac
			(fingerprint "$root/overlay2/$what/diff" >"$work/$i" 2>/dev/null) &
		fi
	done <"$snap/seal"
	wait
	i=0
	bad=""
	while read -r what want; do
		i=$((i + 1))
		[ "$(cat "$work/$i")" = "$want" ] || bad="$bad $what"
	done <"$snap/seal"
	rm -rf "$work"
	if [ -n "$bad" ]; then
		log "store: refused ${snap##*/}: changed since it was sealed:$bad"
		return 1
	fi
}

# store_seed STORE: the snapshot didx names (DIDX_STORE_SNAPSHOT, sealed with DIDX_STORE_SEAL)
# into this server's own (empty) data root, each layer's diff/ bound read-only from the store.
# Skipped, with a line saying why, when the store is empty, was made by another engine version,
# does not match its seal, or the data root is not empty. A failed bind undoes the seeding:
# the server then starts empty (didx's --load still loads).
store_seed() {
	s=$1
	d=/var/lib/docker
	name=${DIDX_STORE_SNAPSHOT:-}
	case $name in
	snap-[0-9]*) ;;
	*)
		log "store: not used: no sealed snapshot named"
		return 0
		;;
	esac
	snap=$s/$name
	if [ ! -f "$snap/seal" ]; then
		log "store: not used: $name is gone or unsealed"
		return 0
	fi
	made=$(cat "$snap/version" 2>/dev/null || true)
	# This engine's `dockerd --version` line: as didx found it for this image (saves ~45 ms),
	# else asked.
	this=${DIDX_STORE_ENGINE:-$(dockerd --version 2>/dev/null || true)}
	if [ "$made" != "$this" ]; then
		log "store: not used: it was filled by '$made', this engine is '$this'"
		return 0
	fi
	if [ -e "$d/image" ]; then
		log "store: not used: $d already holds images"
		return 0
	fi
	store_verify "$snap" "$s/root" || return 0
	if ! { mkdir -p "$d/overlay2" && cp -a "$snap/image" "$d/image" && cp -a "$snap/overlay2/." "$d/overlay2/"; }; then
		log "store: not used: cannot copy ${snap##*/}"
		rm -rf "$d/image" "$d/overlay2"
		return 0
	fi
	n=0
	while read -r id _; do
		[ "$id" = snapshot ] && continue
		mkdir -p "$d/overlay2/$id/diff"
		if ! { mount -o bind "$s/root/overlay2/$id/diff" "$d/overlay2/$id/diff" &&
			mount -o remount,bind,ro "$d/overlay2/$id/diff"; }; then
			log "store: not used: cannot bind layer $id read-only"
			for m in "$d"/overlay2/*/diff; do umount "$m" 2>/dev/null || true; done
			rm -rf "$d/image" "$d/overlay2"
			return 0
		fi
		n=$((n + 1))
	done <"$snap/seal"
	log "store: seeded ${snap##*/} ($n layers, read-only, sealed)"
}

# store_snapshot STORE: publish the (quiesced) data root's metadata as the next snapshot, with
# the image list store-commit wrote, then name it in STORE/current (a rename: readers see the
# old snapshot or the new one, whole). The one before it stays for readers still copying it.
store_snapshot() {
	s=$1
	root=$s/root
	n=$(($(cat "$s/serial" 2>/dev/null || echo 0) + 1))
	tmp=$s/.snap-$n
	# Every step checked: this runs where `set -e` does not apply (a condition).
	rm -rf "$tmp" && mkdir -p "$tmp/overlay2" && cp -a "$root/image" "$tmp/image" || return 1
	if [ -d "$root/overlay2/l" ]; then cp -a "$root/overlay2/l" "$tmp/overlay2/l" || return 1; fi
	# The layers the engine holds (its layer database names each one's directory): a fill that
	# was killed can leave a partly extracted directory that no image uses.
	for c in "$root"/image/overlay2/layerdb/sha256/*/cache-id; do
		[ -f "$c" ] || continue
		id=$(cat "$c")
		l=$root/overlay2/$id/
		mkdir "$tmp/overlay2/$id" || return 1
		for f in "$l"*; do
			if [ "${f##*/}" != diff ]; then cp -a "$f" "$tmp/overlay2/$id/" || return 1; fi
		done
	done
	dockerd --version >"$tmp/version" || return 1
	store_seal "$tmp" "$root" || return 1
	{
		printf 'snap-%s %s %s\n' "$n" "$(du -sk "$s" | cut -f1)" "$(sha256sum <"$tmp/seal" | cut -d' ' -f1)"
		cat "$LEASE_DIR/images"
	} >"$tmp/index" || return 1
	mv "$tmp" "$s/snap-$n" || return 1
	printf '%s\n' "$n" >"$s/serial.tmp" && mv -f "$s/serial.tmp" "$s/serial" || return 1
	cp "$s/snap-$n/index" "$s/index.tmp" && mv -f "$s/index.tmp" "$s/index" || return 1
	printf 'snap-%s\n' "$n" >"$s/current.tmp" && mv -f "$s/current.tmp" "$s/current" || return 1
	for o in "$s"/snap-*; do
		k=${o##*/snap-}
		[ "$k" -lt $((n - 1)) ] && rm -rf "$o"
	done
	log "store: published snap-$n"
}

# store_fill [DOCKERD ARGS]: PID 1 of a filler. dockerd runs on the store until it ends; only
# a committed fill (store-commit, its lease not lost) is published.
store_fill() {
	prepare_sys
	prepare_tmp
	choose_iptables
	rm -f /var/run/docker.pid /run/docker/containerd/containerd.pid 2>/dev/null || true
	mkdir -p "$LEASE_DIR" "$STORE/root"
	rm -rf "$STORE"/.snap-* 2>/dev/null || true
	# A removal: unpublish first, so that no server starting from now on seeds from layers it
	# may delete (they start empty until the commit publishes the next snapshot; without a
	# commit the store stays unpublished and the next fill publishes it again).
	if [ "${DIDX_STORE_DRAIN:-}" = 1 ]; then rm -f "$STORE/current" "$STORE/index"; fi
	dockerd "$@" </dev/null &
	dockerd=$!
	echo "$dockerd" >"$LEASE_DIR/dockerd.pid"
	[ "${DIDX_LEASE:-}" = stdin ] && watch_stdin
	trap 'kill -TERM "$dockerd" 2>/dev/null || true' TERM INT
	status=0
	while :; do
		wait "$dockerd" && status=0 || status=$?
		kill -0 "$dockerd" 2>/dev/null || break
	done
	# dockerd is gone: no reader is started again (the snapshot below forks many commands).
	trap - CHLD
	if [ -e "$LEASE_DIR/commit" ] && [ ! -e "$LEASE_DIR/ended" ]; then
		if store_snapshot "$STORE" 2>"$LEASE_DIR/snapshot.err"; then
			# Published: stay (holding the filler's name, so no other fill starts) until didx
			# has read the index (store-published) and kept its seal on the host engine
			# (store-sealed), at most a minute: a snapshot whose didx died first stays unsealed
			# and is filled anew.
			: >"$LEASE_DIR/published"
			i=0
			while [ ! -e "$LEASE_DIR/sealed" ] && [ "$i" -lt 600 ]; do
				sleep 0.1
				i=$((i + 1))
			done
			exit 0
		fi
		store_failed "the snapshot failed ($(tail -n 3 "$LEASE_DIR/snapshot.err" | tr '\n' ' ')); the store keeps its previous one"
	fi
	[ -e "$LEASE_DIR/commit" ] && committed=yes || committed=no
	[ -e "$LEASE_DIR/ended" ] && lease=lost || lease=held
	store_failed "the filler ended uncommitted (dockerd status $status, commit $committed, lease $lease); nothing published"
}

# store_failed WHY: PID 1 of a filler fails: WHY in its log and in $LEASE_DIR/failed, where
# store-published (an exec didx waits on) reads it and says it, as this container's log is gone
# with it (auto-removal) before didx could read it; a moment for that exec to read it, then out.
store_failed() {
	log "store: $1"
	printf '%s\n' "$1" >"$LEASE_DIR/failed.tmp" && mv -f "$LEASE_DIR/failed.tmp" "$LEASE_DIR/failed"
	sleep 1
	exit 1
}

# store_published: (an exec in the filler, after its commit) wait until PID 1 has published the
# snapshot (exit 1, saying why on stderr, if that failed), then print its index.
store_published() {
	while [ ! -e "$LEASE_DIR/published" ]; do
		if [ -e "$LEASE_DIR/failed" ]; then
			cat "$LEASE_DIR/failed" >&2
			exit 1
		fi
		sleep 0.05
	done
	cat "$STORE/index"
}

# store_commit: (an exec in the filler, dockerd up) record its images, mark the fill committed,
# stop dockerd; PID 1 publishes the snapshot once dockerd has ended.
store_commit() {
	ids=$(docker image ls -q --no-trunc | sort -u)
	: >"$LEASE_DIR/images.tmp"
	if [ -n "$ids" ]; then
		# shellcheck disable=SC2086
		docker image inspect --format '{{.Id}} {{.Size}}{{range .RepoTags}} {{.}}{{end}}' $ids >"$LEASE_DIR/images.tmp"
	fi
	mv -f "$LEASE_DIR/images.tmp" "$LEASE_DIR/images"
	: >"$LEASE_DIR/commit"
	kill -TERM "$(cat "$LEASE_DIR/dockerd.pid")"
}

STORE=${DIDX_STORE:-/didx/store}

# listening: whether the server's dockerd listens on its TLS port in this (shared) network
# namespace: port 2376 (hex 0948), state LISTEN (0A), in /proc/net/tcp or, as Go listens on
# both families at once, /proc/net/tcp6.
listening() {
	grep -qE ':0948 [0-9A-F]+:0000 0A ' /proc/net/tcp /proc/net/tcp6 2>/dev/null
}

# hold: read stdin until a "release" line (the container is handed over: mark it released, say
# "didx-lease: released" on stdout, and return), an "end" line or its end (the owning didx is
# gone, or let go: end this container).
# "end" is said before the stream closes because an engine may not pass the close on (Podman
# keeps a container's stdin open when the attach that fed it ends). The server ends by its
# dockerd's death (its PID 1 then exits), the client by PID 1's own exit. Beats are counted in
# $BEAT_FILE (default $LEASE_DIR/beat).
hold() {
	beat_file=${BEAT_FILE:-$LEASE_DIR/beat}
	# Counted on from where a reader before this one (see rehold) left off: the count only grows.
	beats=0
	if [ -f "$beat_file" ]; then read -r beats <"$beat_file" || beats=0; fi
	while IFS= read -r line; do
		case "$line" in
		release)
			mkdir -p "$LEASE_DIR"
			: >"$LEASE_DIR/released"
			# Told back (didx waits for it before letting its connection go).
			echo "didx-lease: released"
			return 0
			;;
		end)
			lease_lost "its didx let go of it"
			return 0
			;;
		esac
		# A word from didx (its `beat`): counted where watch_beat looks (builtins only: no
		# process per beat).
		if [ -n "${DIDX_LEASE_BEAT:-}" ]; then
			beats=$((beats + 1))
			echo "$beats" >"$beat_file"
		fi
	done
	lease_lost "the didx process that owned this environment is gone"
}

# lease_lost WHY: end this container (its dockerd, else PID 1), as its lease says.
lease_lost() {
	log "lease lost: $1; ending it"
	mkdir -p "$LEASE_DIR"
	: >"$LEASE_DIR/ended"
	if [ -f "$LEASE_DIR/dockerd.pid" ]; then
		kill -KILL "$(cat "$LEASE_DIR/dockerd.pid")" 2>/dev/null || true
	else
		kill -TERM 1
	fi
}

# watch_beat FILE [PID]: with DIDX_LEASE_BEAT=N (didx says `beat` every second where the
# engine may not pass the end of its connection on: over SSH, or Podman), end this container
# when the count in FILE did not move for N seconds: a link that drops silently closes nothing
# here until the sshd notices, if it is told to. Ends once the lease is released or ended, or,
# given PID (an exec's lease), once that process is gone. One `sleep` every N seconds; the
# count is read with a builtin.
watch_beat() {
	last=-1
	while sleep "$DIDX_LEASE_BEAT"; do
		if [ -n "${2:-}" ]; then
			kill -0 "$2" 2>/dev/null || return 0
		elif [ -e "$LEASE_DIR/released" ] || [ -e "$LEASE_DIR/ended" ]; then
			return 0
		fi
		n=0
		if [ -f "$1" ]; then read -r n <"$1" || n=0; fi
		if [ "$n" = "$last" ]; then
			lease_lost "no word from its didx for ${DIDX_LEASE_BEAT}s (its connection is lost)"
			return 0
		fi
		last=$n
	done
}

# watch_stdin: hold on this container's own stdin, in the background, for as long as it takes.
# The reader is a child of PID 1 (an asynchronous list would get /dev/null as stdin unless told
# otherwise, hence fd 3, which PID 1 keeps): any process in the container may kill it (`kill -9
# -1`, `pkill sh` in a command), but not PID 1 (the kernel does not deliver SIGKILL or an
# untrapped signal to a PID namespace's init from inside it). So PID 1 traps SIGCHLD and starts
# a new reader whenever the last one ended without a "release" line or an end of input: the
# stream stays open in PID 1 meanwhile, and its end is a state (every later read sees it), so
# nothing said while no reader ran is lost. The trap runs builtins only (a command it forked
# would end with another SIGCHLD).
HOLDER=""
watch_stdin() {
	exec 3<&0
	mkdir -p "$LEASE_DIR"
	hold <&3 &
	HOLDER=$!
	if [ -n "${DIDX_LEASE_BEAT:-}" ]; then watch_beat "$LEASE_DIR/beat" </dev/null & fi
	trap 'rehold' CHLD
}

rehold() {
	if [ -z "$HOLDER" ] || kill -0 "$HOLDER" 2>/dev/null; then return 0; fi
	if [ -e "$LEASE_DIR/released" ] || [ -e "$LEASE_DIR/ended" ]; then
		HOLDER=""
		trap - CHLD
		exec 3<&-
		return 0
	fi
	hold <&3 &
	HOLDER=$!
	return 0
}

lease() {
	mkdir -p "$LEASE_DIR"
	: >"$LEASE_DIR/claimed"
	# Beats (DIDX_LEASE_BEAT in this exec's environment) are counted apart from the
	# container's own lease, and watched while this process lives.
	BEAT_FILE="$LEASE_DIR/beat.$$"
	if [ -n "${DIDX_LEASE_BEAT:-}" ]; then watch_beat "$BEAT_FILE" $$ </dev/null & fi
	hold
}

client() {
	# A pooled environment's client has its files in a volume at /didx: link the certificates
	# where docker:dind's convention (and DOCKER_CERT_PATH) expects them.
	if [ ! -e /certs/client ] && [ -d /didx/certs/client ]; then
		mkdir -p /certs && ln -s /didx/certs/client /certs/client
	fi
	# A shell as PID 1 ignores SIGTERM unless it traps it; trap so `docker stop` is instant.
	trap 'exit 0' TERM INT
	# Held from before its start, as the server (above).
	[ "${DIDX_LEASE:-}" = stdin ] && watch_stdin
	if [ -n "${DIDX_FOLLOW:-}" ]; then
		# Follow the server (a pooled client, made once dockerd listens): end when its dockerd
		# no longer listens in the namespace we share, twice in a row.
		while :; do
			sleep 0.5 &
			wait $! || true
			listening || {
				sleep 0.5 &
				wait $! || true
				listening || exit 0
			}
		done
	fi
	# One idle child at a time: a wait that a SIGCHLD (see watch_stdin) interrupts waits again.
	while :; do
		sleep 2147483647 &
		idle=$!
		while kill -0 "$idle" 2>/dev/null; do wait "$idle" || true; done
	done
}

# reap: PID 1 of a `--engine host` environment's reaper (the engine's socket bound, DIDX_ENV its
# environment; held from its start, see watch_stdin's lease). PID 1 reads the lease itself
# (nothing else runs here, and nothing in the container can kill PID 1): a "release" line ends
# it, leaving all as it is; the end of input (its didx gone) removes every container, volume
# and network labelled with the environment but this reaper, then ends it (the engine's
# auto-removal takes it). Tried again for a few seconds while something stays (a container
# still being removed holds its volume or network).
reap() {
	mkdir -p "$LEASE_DIR"
	trap 'exit 0' TERM INT
	while IFS= read -r line; do
		if [ "$line" = release ]; then
			echo "didx-lease: released"
			exit 0
		fi
	done
	log "lease lost: removing what environment $DIDX_ENV holds"
	f="label=io.didx.env=$DIDX_ENV"
	n=0
	while :; do
		# Containers first (their anonymous volumes with them), then volumes and networks at
		# once; again while a removal fails (a container still being removed holds its volume
		# or network).
		ok=1
		ids=$(docker ps -a --no-trunc --filter "$f" --format '{{.ID}} {{.Label "io.didx.role"}}' | awk '$2 != "reaper" { print $1 }') || ok=0
		# One already gone or being removed (the client, by its own lease) is not a failure.
		# shellcheck disable=SC2086
		if [ -n "$ids" ] && ! out=$(docker rm -f -v $ids 2>&1 >/dev/null); then
			if printf '%s\n' "$out" | grep -v -e 'already in progress' -e 'No such container' | grep -q .; then ok=0; fi
		fi
		{ docker volume ls -q --filter "$f" | xargs -r docker volume rm -f >/dev/null 2>&1 && : >"$LEASE_DIR/reap-v"; } &
		{ docker network ls -q --filter "$f" | xargs -r docker network rm >/dev/null 2>&1 && : >"$LEASE_DIR/reap-n"; } &
		wait
		if [ "$ok" = 1 ] && [ -e "$LEASE_DIR/reap-v" ] && [ -e "$LEASE_DIR/reap-n" ]; then exit 0; fi
		rm -f "$LEASE_DIR/reap-v" "$LEASE_DIR/reap-n"
		n=$((n + 1))
		if [ "$n" -ge 25 ]; then
			log "could not remove all of environment $DIDX_ENV"
			exit 1
		fi
		sleep 0.2
	done
}

role="${1:-}"
[ $# -gt 0 ] && shift
case "$role" in
server) server "$@" ;;
client) client ;;
lease) lease ;;
reap) reap ;;
store-fill) store_fill "$@" ;;
store-commit) store_commit ;;
store-published) store_published ;;
store-sealed) : >"$LEASE_DIR/sealed" ;;
*)
	log "usage: entrypoint server [DOCKERD ARGS...] | entrypoint client | entrypoint lease | entrypoint reap | entrypoint store-fill [DOCKERD ARGS...] | entrypoint store-commit | entrypoint store-published | entrypoint store-sealed"
	exit 2
	;;
esac
