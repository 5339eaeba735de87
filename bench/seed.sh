#!/usr/bin/env bash
# Files-and-images benchmark, one run on one machine:
#  1. seeding throughput of a ~SIZE_MB image: `didx --load` next to the plain pipe
#     `docker save IMG | docker exec -i CLIENT docker load`, A/B interleaved, RUNS times each,
#     timed over the same span (export start → load done) in the same kind of environment;
#  2. didx's peak RSS while copying a CP_MB directory into the client with --cp.
#  3. the image store (--store, issue 15) with a ~STORE_MB multi-layer image built from
#     didx/dind:local: the first fill's cost; a sandbox seeded from the store against today's
#     --load (each sandbox's wall time less a plain sandbox's, medians of RUNS, interleaved);
#     the start of a sandbox with the store mounted against one without; the disk NENV
#     sandboxes on the store use (du of their storage volumes) against the store's.
# Targets (issue 4): seeding at least as fast as the pipe; peak RSS under 64 MB. (Issue 15):
# seeding from the store <= 0.05 x --load; a start with the store no slower (within noise);
# NENV sandboxes on the store use the disk of one copy, not NENV.
# Needs: an engine, didx/dind:local (scripts/setup.sh). The docker CLI is used only for the
# reference pipe, to make the test images and to read volume sizes.
# Usage: bench/seed.sh [--short] [--store | --no-store] (--store: only part 3, which
# bench/speed.py runs itself to print the store's ratio beside its own; --no-store: parts 1-2)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}; SIZE_MB=${SIZE_MB:-200}; CP_MB=${CP_MB:-1024}; STORE_MB=${STORE_MB:-400}; NENV=${NENV:-8}
ONLY_STORE=0; NO_STORE=0
for a in "$@"; do
  case "$a" in
  --short) RUNS=1; SIZE_MB=20; CP_MB=64; STORE_MB=60; NENV=2 ;;
  --store) ONLY_STORE=1 ;;
  --no-store) NO_STORE=1 ;;
  *) echo "usage: bench/seed.sh [--short] [--store | --no-store] (unknown: $a)" >&2; exit 2 ;;
  esac
done
DIDX=${DIDX:-./target/release/didx}
[ -x "$DIDX" ] || cargo build --release --locked
IMG=didx-bench-seed:${SIZE_MB}m
work=$(mktemp -d)
export DIDX_CACHE_DIR=$work/cache

# The store's own prefix: the bench never touches a user's store.
export DIDX_STORE_PREFIX=didx-bench-$$
SIMG=didx-bench-store:${STORE_MB}m

cleanup() {
  for n in $(cat "$work/envs" 2>/dev/null); do docker rm -fv "$n" >/dev/null 2>&1 || true; done
  "$DIDX" store rm >/dev/null 2>&1 || true
  docker rmi -f "$IMG" "$SIMG" didx-bench-base:1 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), engine $(docker version -f '{{.Server.Version}}'), storage $(docker info -f '{{.Driver}}')"

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

if [ "$ONLY_STORE" = 0 ]; then
# The test image, made offline: busybox from the offline image plus a layer of random data.
cid=$(docker create didx/dind:local)
docker cp -q "$cid:/usr/bin/busybox" "$work/busybox" && docker rm "$cid" >/dev/null
mkdir -p "$work/root/bin" && cp "$work/busybox" "$work/root/bin/" && ln -s busybox "$work/root/bin/sh" && ln -s busybox "$work/root/bin/head"
tar -C "$work/root" -c . | docker import -c 'ENV PATH=/bin' - didx-bench-base:1 >/dev/null
printf 'FROM didx-bench-base:1\nRUN head -c %d /dev/urandom > /blob\n' "$((SIZE_MB * 1048576))" | docker build -q --force-rm -t "$IMG" - >/dev/null 2>&1
bytes=$(docker image inspect -f '{{.Size}}' "$IMG")
echo "image: $IMG, $((bytes / 1000000)) MB"

: >"$work/didx.t"; : >"$work/pipe.t"
for i in $(seq 1 "$RUNS"); do
  # A: didx --load (its own figure: export start to load done).
  out=$("$DIDX" --clean anycase --load "$IMG" true 2>&1)
  echo "$out" | grep -o 'in [0-9.]* s (' | awk '{print $2}' >>"$work/didx.t"
  # B: the plain pipe into an environment started the same way.
  "$DIDX" --clean none 2>"$work/start.err"
  server=$(grep -o "dind_[a-z0-9]*_server_latest" "$work/start.err" | head -1)
  client=${server/_server_/_client_}
  printf '%s\n%s\n' "$server" "$client" >>"$work/envs"
  t0=$(date +%s.%N)
  docker save "$IMG" | docker exec -i "$client" docker load -q >/dev/null
  t1=$(date +%s.%N)
  docker rm -fv "$client" "$server" >/dev/null
  echo "$t1 - $t0" | bc -l >>"$work/pipe.t"
done
d=$(median <"$work/didx.t"); p=$(median <"$work/pipe.t")
mb=$(echo "$bytes / 1000000" | bc -l)
printf '\n| seeding %s MB (median of %s) | seconds | MB/s |\n|---|---|---|\n' "$((bytes / 1000000))" "$RUNS"
printf '| didx --load | %s | %.0f |\n' "$d" "$(echo "$mb / $d" | bc -l)"
printf '| docker save \\| docker exec -i … docker load | %s | %.0f |\n' "$p" "$(echo "$mb / $p" | bc -l)"
printf 'didx/pipe time ratio: %.2f (target <= 1.00); all runs: didx %s, pipe %s\n' "$(echo "$d / $p" | bc -l)" "$(tr '\n' ' ' <"$work/didx.t")" "$(tr '\n' ' ' <"$work/pipe.t")"

# Peak RSS while copying a CP_MB directory with --cp.
mkdir -p "$work/big"
for j in $(seq 1 $((CP_MB / 64))); do head -c 64M /dev/urandom >"$work/big/f$j"; done
/usr/bin/time -f '%M %e' -o "$work/rss" "$DIDX" --clean anycase --cp "$work/big:/data" 'sh -c "du -sm /data"' 2>/dev/null | tail -1
read -r kb secs <"$work/rss"
printf '\n| --cp of a %s MB directory | peak RSS | wall |\n|---|---|---|\n| didx | %.1f MB | %s s |\n' "$CP_MB" "$(echo "$kb / 1024" | bc -l)" "$secs"
printf 'target: peak RSS < 64 MB\n'
fi
[ "$NO_STORE" = 1 ] && exit 0

# 3. The image store. A multi-layer image from didx/dind:local's layer and three of its own.
printf 'FROM didx/dind:local\nRUN head -c %d /dev/urandom > /l1\nRUN head -c 1048576 /dev/urandom > /l2\nRUN echo 3 > /l3\n' \
  "$(( (STORE_MB > 398 ? STORE_MB - 397 : 1) * 1000000 ))" | docker build -q --force-rm -t "$SIMG" - >/dev/null 2>&1
sbytes=$(docker image inspect -f '{{.Size}}' "$SIMG")
slayers=$(docker image inspect -f '{{len .RootFS.Layers}}' "$SIMG")
echo "store image: $SIMG, $((sbytes / 1000000)) MB in $slayers layers; store prefix $DIDX_STORE_PREFIX"
# A run's wall time in seconds; a failed run ends the benchmark, saying why (its stderr's end).
wall() {
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/last.err" || rc=$?
  t1=$(date +%s.%N)
  if [ "$rc" != 0 ]; then
    { echo "seed: $* exited $rc:"; tail -5 "$work/last.err"; } >&2
    exit 1
  fi
  echo "$t1 - $t0" | bc -l
}
ready() { grep -o 'timing ready [0-9]*' "$work/last.err" | awk '{print $3 / 1000}'; }
first=$(wall "$DIDX" --clean anycase --store --load "$SIMG" true)
fill=$(grep -o 'into the image store [^ ]* in [0-9.]* s' "$work/last.err" | awk '{print $(NF-1)}' || true)
if [ -z "$fill" ]; then
  { echo "seed: the first --store --load run did not fill the store; its stderr:"; cat "$work/last.err"; } >&2
  exit 1
fi
store=$(grep -o 'into the image store [^ ]*' "$work/last.err" | head -1 | awk '{print $NF}')
: >"$work/plain.t"; : >"$work/load.t"; : >"$work/store.t"; : >"$work/loadfig.t"; : >"$work/plain.r"; : >"$work/store.r"
for i in $(seq 1 "$RUNS"); do
  wall "$DIDX" --clean anycase --timings true >>"$work/plain.t"; ready >>"$work/plain.r"
  wall "$DIDX" --clean anycase --load "$SIMG" true >>"$work/load.t"
  grep -o 'in [0-9.]* s (' "$work/last.err" | awk '{print $2}' >>"$work/loadfig.t"
  wall "$DIDX" --clean anycase --timings --store --load "$SIMG" true >>"$work/store.t"; ready >>"$work/store.r"
done
pl=$(median <"$work/plain.t"); ld=$(median <"$work/load.t"); st=$(median <"$work/store.t"); lf=$(median <"$work/loadfig.t")
dl=$(echo "$ld - $pl" | bc -l); ds=$(echo "$st - $pl" | bc -l)
printf '\n| store, %s MB in %s layers (median of %s) | seconds |\n|---|---|\n' "$((sbytes / 1000000))" "$slayers" "$RUNS"
printf '| first fill (filler start, export, load, snapshot), its own figure | %s |\n' "$fill"
printf '| first run with --store --load, wall | %.2f |\n' "$first"
printf '| plain sandbox (no image), wall | %s |\n' "$pl"
printf '| --load, wall (its own "loaded in" figure: %s) | %s |\n' "$lf" "$ld"
printf '| --store --load (already stored), wall | %s |\n' "$st"
printf '| seeding cost over the plain sandbox: --load | %.2f |\n| seeding cost over the plain sandbox: --store | %.2f |\n' "$dl" "$ds"
printf 'store/--load seeding ratio: %.3f (target <= 0.05); all runs: plain %s; load %s; store %s\n' \
  "$(echo "$ds / $dl" | bc -l)" "$(tr '\n' ' ' <"$work/plain.t")" "$(tr '\n' ' ' <"$work/load.t")" "$(tr '\n' ' ' <"$work/store.t")"
printf 'inner engine ready after (s): plain %s; with the store mounted %s\n' "$(tr '\n' ' ' <"$work/plain.r")" "$(tr '\n' ' ' <"$work/store.r")"

# Disk: NENV sandboxes on the store, each checked to hold the image, then du of their volumes.
vkb=0
for i in $(seq 1 "$NENV"); do
  "$DIDX" --clean none --store "image inspect -f {{.Id}} $SIMG" 2>"$work/start.err" >/dev/null
  server=$(grep -o "dind_[a-z0-9]*_server_latest" "$work/start.err" | head -1)
  printf '%s\n%s\n' "$server" "${server/_server_/_client_}" >>"$work/envs"
  vol=$(docker inspect -f '{{range .Mounts}}{{if eq .Destination "/var/lib/docker"}}{{.Name}}{{end}}{{end}}' "$server")
  kb=$(du -sk "$(docker volume inspect -f '{{.Mountpoint}}' "$vol")" | cut -f1)
  vkb=$((vkb + kb))
done
skb=$(du -sk "$(docker volume inspect -f '{{.Mountpoint}}' "$store")" | cut -f1)
for n in $(cat "$work/envs"); do docker rm -fv "$n" >/dev/null 2>&1 || true; done
: >"$work/envs"
printf '\n| disk | MB |\n|---|---|\n| the store (%s) | %.1f |\n| %s sandboxes on it, their own storage together | %.1f |\n| %s sandboxes with --load (%s x the image) | %.1f |\n' \
  "$store" "$(echo "$skb / 1024" | bc -l)" "$NENV" "$(echo "$vkb / 1024" | bc -l)" "$NENV" "$NENV" "$(echo "$NENV * $sbytes / 1048576" | bc -l)"
