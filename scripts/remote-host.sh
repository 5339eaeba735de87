#!/usr/bin/env bash
# A second host for didx's remote-engine tests, on this machine: a network namespace with an
# address of its own, its own sshd (a key made for it, host-key checking on) and its own
# dockerd (own data root, exec root, socket and cgroup parent), holding didx's offline images.
#
#   bash scripts/remote-host.sh up      start it (idempotent); prints the env file's path
#   bash scripts/remote-host.sh down    stop it and remove everything it made
#   bash scripts/remote-host.sh env     the env file's path, if it is up
#
# The env file (REMOTE_STATE/env; `. FILE` in a shell, values single-quoted) sets:
#   DIDX_SSH=ssh -F REMOTE_STATE/ssh_config   the ssh didx runs (host alias didx-remote: the
#                                             test key, the host's key in its known_hosts)
#   DIDX_REMOTE_HOST=ssh://didx-remote        the engine address
#   DIDX_REMOTE_SOCKET=unix://REMOTE_STATE/docker.sock   the remote engine on this machine,
#                                             for checks (the test reads it without ssh)
#   DIDX_REMOTE_NETNS=didx-remote             the namespace (a test can cut its link)
#   DIDX_REMOTE_ADDR=10.254.231.2:22          its sshd (a test waits for it after the cut)
# Traffic goes only between this machine and the namespace (a veth pair on 10.254.231.0/30).
# Needs root, iproute2, openssh-server and -client (installed when missing) and an engine with
# didx/dind:local (scripts/setup.sh).
set -euo pipefail

NAME=didx-remote
STATE=/run/$NAME
DATA=/var/lib/$NAME
HOST_IP=10.254.231.1
NS_IP=10.254.231.2
SOCK=$STATE/docker.sock
IMAGES=(didx/dind:local)

say() { echo "remote-host: $*" >&2; }

in_ns() { nsenter --net="/run/netns/$NAME" "$@"; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

remote_docker() { DOCKER_HOST="unix://$SOCK" docker "$@"; }

up() {
  local need=()
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || need+=(openssh-client)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    # Debian starts a packaged daemon on install unless policy-rc.d says no: this machine
    # wants no sshd listening on its own addresses.
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    [ -z "$policy" ] || rm -f "$policy"
  fi
  mkdir -p "$STATE" "$DATA" /run/sshd
  chmod 700 "$STATE"

  if [ ! -e "/run/netns/$NAME" ]; then
    ip netns add "$NAME"
    ip link add "${NAME}0" type veth peer name "${NAME}1"
    ip link set "${NAME}1" netns "$NAME"
    ip addr add "$HOST_IP/30" dev "${NAME}0"
    ip link set "${NAME}0" up
    in_ns ip addr add "$NS_IP/30" dev "${NAME}1"
    in_ns ip link set "${NAME}1" up
    in_ns ip link set lo up
  fi

  if [ ! -f "$STATE/id_ed25519" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "didx remote-host test key" -f "$STATE/id_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C "didx remote-host host key" -f "$STATE/host_ed25519"
    cp "$STATE/id_ed25519.pub" "$STATE/authorized_keys"
    echo "$NAME $(cut -d' ' -f1,2 "$STATE/host_ed25519.pub")" >"$STATE/known_hosts"
  fi
  cat >"$STATE/sshd_config" <<EOF
ListenAddress $NS_IP
Port 22
HostKey $STATE/host_ed25519
PidFile $STATE/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
# No ClientAliveInterval, as in a stock sshd: a client whose link is cut is not noticed here
# for hours, so didx's own beat is what ends its environments then (tests/remote.rs).
MaxSessions 100
MaxStartups 100
SetEnv DOCKER_HOST=unix://$SOCK
Subsystem sftp internal-sftp
EOF
  cat >"$STATE/ssh_config" <<EOF
Host $NAME
  HostName $NS_IP
  HostKeyAlias $NAME
  User root
  IdentityFile $STATE/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $STATE/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  LogLevel ERROR
EOF
  if ! pid_alive "$STATE/sshd.pid"; then
    in_ns /usr/sbin/sshd -f "$STATE/sshd_config"
  fi

  if ! pid_alive "$STATE/docker.pid"; then
    # Its own configuration file (not the local engine's /etc/docker/daemon.json); with engine
    # 20.10, which takes its ID from /etc/docker/key.json (the local engine's, the same ID),
    # a key of its own.
    local major
    major=$(dockerd --version | sed -n 's/^Docker version \([0-9]*\)\..*/\1/p')
    if [ "${major:-99}" -lt 23 ]; then
      printf '{"deprecated-key-path": "%s"}\n' "$DATA/key.json" >"$STATE/daemon.json"
    else
      echo '{}' >"$STATE/daemon.json"
    fi
    # nsenter, not `ip netns exec` (that remounts /sys and hides the cgroups).
    in_ns dockerd --config-file "$STATE/daemon.json" --data-root "$DATA/docker" --exec-root "$STATE/exec" --pidfile "$STATE/docker.pid" \
      --host "unix://$SOCK" --cgroup-parent "$NAME" --bip 10.254.232.1/24 \
      --default-address-pool base=10.254.240.0/20,size=24 >"$STATE/dockerd.log" 2>&1 &
    for _ in $(seq 300); do
      remote_docker version >/dev/null 2>&1 && break
      sleep 0.1
    done
    remote_docker version >/dev/null 2>&1 || { say "its dockerd did not answer; see $STATE/dockerd.log"; tail -5 "$STATE/dockerd.log" >&2; exit 1; }
  fi
  for image in "${IMAGES[@]}"; do
    local want have
    want=$(docker image inspect -f '{{.Id}}' "$image")
    have=$(remote_docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
    if [ "$want" != "$have" ]; then
      say "loading $image into the remote engine"
      docker save "$image" | remote_docker load -q >/dev/null
    fi
  done
  cat >"$STATE/env" <<EOF
DIDX_SSH='ssh -F $STATE/ssh_config'
DIDX_REMOTE_HOST='ssh://$NAME'
DIDX_REMOTE_SOCKET='unix://$SOCK'
DIDX_REMOTE_NETNS='$NAME'
DIDX_REMOTE_ADDR='$NS_IP:22'
EOF
  # The whole path works: ssh with the test key, the remote docker CLI, its engine.
  ssh -F "$STATE/ssh_config" -o BatchMode=yes "$NAME" docker version --format '{{.Server.Version}}' >/dev/null ||
    { say "ssh to $NAME or its docker failed"; exit 1; }
  say "up: ssh://$NAME ($NS_IP), engine $(remote_docker version --format '{{.Server.Version}}')"
  echo "$STATE/env"
}

down() {
  if pid_alive "$STATE/sshd.pid"; then kill "$(cat "$STATE/sshd.pid")"; fi
  if pid_alive "$STATE/docker.pid"; then
    local pid
    pid=$(cat "$STATE/docker.pid")
    # Its containers first (the engine stops them on SIGTERM, within its shutdown timeout).
    remote_docker ps -aq 2>/dev/null | xargs -r env DOCKER_HOST="unix://$SOCK" docker rm -fv >/dev/null 2>&1 || true
    kill "$pid"
    for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  fi
  # What the remote engine mounted under its roots.
  grep -E " ($DATA|$STATE)/" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  if [ -e "/run/netns/$NAME" ]; then ip netns del "$NAME"; fi
  ip link del "${NAME}0" 2>/dev/null || true
  rm -rf "$STATE" "$DATA"
  # The remote engine's cgroups (cgroup v1: one per hierarchy; v2: one).
  find /sys/fs/cgroup -maxdepth 2 -type d -name "$NAME" 2>/dev/null | while read -r d; do
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  say "down"
}

case "${1:-}" in
up) up ;;
down) down ;;
env) [ -f "$STATE/env" ] && echo "$STATE/env" ;;
*) echo "usage: bash scripts/remote-host.sh up|down|env" >&2; exit 2 ;;
esac
