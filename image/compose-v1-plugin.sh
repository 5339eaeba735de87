#!/bin/sh
# docker compose → docker-compose: a docker CLI plugin that runs Debian's docker-compose (v1,
# Python), so `docker compose …` works in an image whose suite ships only compose v1 (bookworm
# and older; trixie's docker-compose is v2 and is itself the plugin). It is v1 behind the
# other spelling: v1's options and output (no `up --wait`: poll the health instead).
#
# The docker CLI asks a plugin for its metadata (`PLUGIN docker-cli-plugin-metadata`), then
# runs it as `PLUGIN compose ARGS…` with the CLI's environment (DOCKER_HOST and the TLS
# variables), which docker-compose reads as well.
set -eu
if [ "${1:-}" = docker-cli-plugin-metadata ]; then
	# dpkg-query, not `docker-compose version`: the CLI asks every plugin on `docker info` and
	# `docker --help`, and starting Python each time would cost most of a second.
	v=$(dpkg-query -W -f '${Version}' docker-compose 2>/dev/null || echo unknown)
	printf '{"SchemaVersion":"0.1.0","Vendor":"didx","Version":"%s","ShortDescription":"Docker Compose v1 (Debian docker-compose) as docker compose"}\n' "$v"
	exit 0
fi
[ "${1:-}" = compose ] && shift
exec /usr/bin/docker-compose "$@"
