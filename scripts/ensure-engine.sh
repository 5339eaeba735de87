#!/usr/bin/env bash
# Make sure a Docker engine answers. Does nothing when `docker info` already succeeds;
# otherwise installs Debian's docker.io (if dockerd is missing) and starts dockerd in the
# background, then waits until it answers. Used by .ci/run and by fresh machines.
set -euo pipefail

log() { printf 'ensure-engine: %s\n' "$*" >&2; }

engine_up() { timeout 10 docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then
  log "engine already answers; nothing to do"
  exit 0
fi

if ! command -v dockerd >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { log "dockerd missing and not root: install docker.io yourself"; exit 1; }
  log "installing docker.io from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq docker.io >/dev/null
fi

# The host's dockerd is the one its pid file names. (Not any process called dockerd: every
# sandbox's inner dockerd shows in the host's process list too, and its containers outlive a
# host dockerd that died.) A pid file left by a dockerd that died would make the new one
# refuse to start.
pid=$(cat /var/run/docker.pid 2>/dev/null || true)
if [ -z "$pid" ] || [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
  rm -f /var/run/docker.pid
  log "starting dockerd (log: /var/log/dockerd.log)"
  nohup dockerd >/var/log/dockerd.log 2>&1 </dev/null &
fi

for _ in $(seq 1 120); do
  if engine_up; then log "engine is up"; exit 0; fi
  sleep 0.5
done
log "dockerd did not answer within 60 s; last log lines:"
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
