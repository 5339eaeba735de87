#!/usr/bin/env bash
# scripts/busybox-dind-image.sh [NAME]: build the docker:*-dind stand-in, didx/dind-busybox:local
# by default, offline from what didx/dind:local already holds (Debian's packages): /bin/sh and
# every core tool is busybox (busybox-static, ash), with the Docker binaries, iptables (nft and
# legacy, with their extension modules) and their shared libraries copied in. No dash, no
# coreutils, no update-alternatives, no mountpoint: what docker:dind images lack, this lacks.
# didx places its entrypoint into the containers it makes, so this image runs didx's servers
# and clients the way docker:dind does.
#
# Reused when built from the same didx/dind:local and this script (label io.didx.image.key).
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-didx/dind-busybox:local}"
base=didx/dind:local

base_id="$(docker image inspect --format '{{.Id}}' "$base")"
key="$(printf '%s\n' "$base_id" | cat - scripts/busybox-dind-image.sh | sha256sum | cut -c1-16)"
have="$(docker image inspect --format '{{index .Config.Labels "io.didx.image.key"}}' "$name" 2>/dev/null || true)"
if [ "$have" = "$key" ]; then
  echo "busybox-dind-image: $name reused (key $key)" >&2
  exit 0
fi

# Runs inside a throwaway container of the base image; writes the new root as a tar to stdout.
assemble='
set -eu
R=/tmp/root
mkdir -p $R/bin $R/sbin $R/usr/bin $R/usr/sbin $R/usr/local/bin $R/etc $R/tmp $R/run $R/root \
	$R/var/lib $R/proc $R/sys $R/dev
cp /bin/busybox $R/bin/busybox
for a in $(/bin/busybox --list-full); do
	[ -e "$R/$a" ] || [ -L "$R/$a" ] || ln -s /bin/busybox "$R/$a"
done
# A file and the shared libraries it loads, at the same paths.
copy() {
	cp -L --parents "$1" $R/ 2>/dev/null || { rm -f "$R$1"; cp -L --parents "$1" $R/; }
	ldd "$1" 2>/dev/null | awk "/=> \\// { print \$3 } /^\t\\// { print \$1 }" | while read -r lib; do
		[ -e "$R$lib" ] || cp -L --parents "$lib" $R/
	done
}
for b in dockerd docker containerd containerd-shim-runc-v2 runc docker-init docker-proxy \
	xtables-nft-multi xtables-legacy-multi; do
	p=$(command -v $b) || { echo "missing $b" >&2; exit 1; }
	rm -f "$R$p"
	copy "$p"
done
for x in /usr/lib/x86_64-linux-gnu/xtables/*.so; do copy "$x"; done
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
	rm -f $R/usr/sbin/$t $R/usr/sbin/$t-nft $R/usr/sbin/$t-legacy
	ln -s xtables-nft-multi $R/usr/sbin/$t
	ln -s xtables-nft-multi $R/usr/sbin/$t-nft
	ln -s xtables-legacy-multi $R/usr/sbin/$t-legacy
done
rm -f $R/usr/local/bin/didx-busybox-image
cp /usr/local/bin/didx-busybox-image $R/usr/local/bin/
printf "root:x:0:0:root:/root:/bin/sh\n" >$R/etc/passwd
printf "root:x:0:\ndocker:x:999:\n" >$R/etc/group
tar -C $R -c .
'
echo "busybox-dind-image: building $name from $base" >&2
cid="$(docker create --entrypoint /bin/sh "$base" -c "$assemble")"
trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
docker start -a "$cid" |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["sh"]' \
    --change "LABEL io.didx.image.key=$key" \
    --change 'LABEL org.opencontainers.image.description="didx test image: busybox ash and tools, Docker and iptables from didx/dind:local"' \
    - "$name" >/dev/null
docker run --rm --entrypoint /bin/sh "$name" -c 'test "$(readlink /bin/sh)" = /bin/busybox && dockerd --version && iptables --version' >&2
echo "busybox-dind-image: $name built ($(docker image inspect --format '{{.Size}}' "$name" | awk '{printf "%d MB", $1/1e6}'))" >&2
