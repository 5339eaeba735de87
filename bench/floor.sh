#!/usr/bin/env bash
# The floor: the shortest plain docker CLI script doing what `didx --clean anycase CMD` does,
# one step after another. didx is measured against it (bench/speed.sh).
#
#   bench/floor.sh [CMD...]        default CMD: docker version
#
# It creates a network and a volume, starts the server image running dockerd on that volume
# (same isolation profile as didx: --privileged, or where the engine refuses that, every
# capability of the host's bounding set with seccomp/AppArmor unconfined and /proc, /sys
# unmasked), starts a client container with the docker CLI on the network, polls from the client
# every 0.1 s until the inner engine answers, runs CMD in the client, then force-removes both
# containers, the volume and the network.
#
# It is a fair floor, not a strawman: dockerd listens on plain TCP with an explicit --tls=false
# (no certificates to make, and dockerd 20.10 adds no start-up delay for it), and it uses the
# same entrypoint for the nesting set-up (didx/dind:local runs /usr/local/bin/didx-entrypoint,
# roles server and client).
#
# Environment: FLOOR_IMAGE (didx/dind:local), FLOOR_ISOLATION (caps|privileged; default caps),
# FLOOR_DROP (capabilities the engine does not know; default those engine 20.10 rejects).
# With FLOOR_PHASES=1 it prints "floor-phase NAME SECONDS" lines (time since start) on stderr.
set -euo pipefail

image=${FLOOR_IMAGE:-didx/dind:local}
[ $# -gt 0 ] || set -- docker version
t0=${EPOCHREALTIME/./}
phase() { [ "${FLOOR_PHASES:-}" != 1 ] || echo "floor-phase $1 $(((${EPOCHREALTIME/./} - t0) / 1000))" >&2; }

isolation=()
if [ "${FLOOR_ISOLATION:-caps}" = privileged ]; then
  isolation=(--privileged)
else
  names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP
    LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER
    SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE
    SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP
    MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF
    CHECKPOINT_RESTORE)
  drop=" ${FLOOR_DROP:-PERFMON BPF CHECKPOINT_RESTORE} "
  bnd=$(awk '/^CapBnd:/{print $2}' /proc/self/status)
  for i in "${!names[@]}"; do
    if (((0x$bnd >> i) & 1)) && [[ $drop != *" ${names[i]} "* ]]; then isolation+=(--cap-add "${names[i]}"); fi
  done
  isolation+=(--security-opt seccomp=unconfined --security-opt apparmor=unconfined
    --security-opt systempaths=unconfined)
fi

n=floor-$$-$RANDOM
docker network create "$n" >/dev/null
docker volume create "$n" >/dev/null
docker run -d --name "$n-server" --network "$n" --network-alias docker "${isolation[@]}" \
  -v "$n:/var/lib/docker" "$image" server --host=tcp://0.0.0.0:2375 --tls=false >/dev/null
phase server-started
docker run -d --name "$n-client" --network "$n" -e DOCKER_HOST=tcp://docker:2375 "$image" client >/dev/null
phase client-started
tries=0
until docker exec "$n-client" docker version >/dev/null 2>&1; do
  tries=$((tries + 1)); [ "$tries" -lt 600 ] || { echo "floor: inner engine not up in 60 s" >&2; break; }
  sleep 0.1
done
phase ready
set +e
docker exec "$n-client" "$@"
rc=$?
set -e
phase command-done
docker rm -fv "$n-client" "$n-server" >/dev/null
docker volume rm "$n" >/dev/null
docker network rm "$n" >/dev/null
phase removed
exit "$rc"
