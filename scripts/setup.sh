#!/usr/bin/env bash
# Everything a fresh Debian machine needs before didx runs or its tests run:
# a Docker engine (scripts/ensure-engine.sh), mmdebstrap for the offline image, the didx
# binary, the offline image didx/dind:local (bookworm's engine, also tagged
# didx/dind:20.10.24) and trixie's engine as didx/dind:26.1.5 (the version matrix's second
# engine); each is reused when its recipe is unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure-engine.sh

if ! command -v mmdebstrap >/dev/null 2>&1; then
  echo "setup: installing mmdebstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq mmdebstrap >/dev/null
fi

# The host clients tests/reach.rs drives a sandbox with (from outside the project): the Python
# docker SDK and Debian's docker-compose (v1). Installed when missing.
missing=()
python3 -c 'import docker' >/dev/null 2>&1 || missing+=(python3-docker)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
# The registry tests/registry.rs runs on the engine's bridge address (Debian's distribution
# registry, htpasswd auth): a mirror, an insecure registry, private images behind credentials.
# Its package's own service is not used (the tests start their own, on ports of their own).
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
  # Where systemd runs, the registry package starts its own service on :5000: not ours.
  if [[ " ${missing[*]} " == *" docker-registry "* ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now docker-registry >/dev/null 2>&1 || true
  fi
fi

profile="${DIDX_PROFILE:-debug}"
if [ "$profile" = release ]; then cargo build --release --locked; else cargo build --locked; fi
"./target/$profile/didx" image build
"./target/$profile/didx" image build --suite trixie
# The docker:*-dind stand-in (busybox ash and tools) the image tests run servers and clients of.
bash scripts/busybox-dind-image.sh
# The second host the remote-engine tests (tests/remote.rs) reach over SSH: a network
# namespace on this machine with its own sshd and dockerd, holding didx/dind:local.
# `bash scripts/remote-host.sh down` removes it (.ci/run does, at its end).
bash scripts/remote-host.sh up >/dev/null
