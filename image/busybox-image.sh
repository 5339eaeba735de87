#!/bin/sh
# didx-busybox-image [NAME]: import a tiny busybox image (default name "busybox") into the
# engine at $DOCKER_HOST, from the busybox binary of this image. The offline stand-in for
# `docker pull busybox` when no registry is reachable.
set -eu
name="${1:-busybox}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp" "$root/etc"
# The busybox file itself, searched on PATH: in busybox ash `command -v busybox` names the
# applet ("busybox"), not a file (found by running this in didx/dind-busybox:local).
bb=""
for d in $(printf '%s' "$PATH" | tr ':' ' '); do
	if [ -f "$d/busybox" ] && [ -x "$d/busybox" ]; then bb="$d/busybox" && break; fi
done
[ -n "$bb" ] || { echo "didx-busybox-image: no busybox file on PATH ($PATH)" >&2; exit 1; }
cp "$bb" "$root/bin/busybox"
for applet in $(busybox --list); do
	[ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
tar -C "$root" -c . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$name"
