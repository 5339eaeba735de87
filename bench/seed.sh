#!/usr/bin/env bash
# Files-and-images benchmark, one run on one machine:
#  1. seeding throughput of a ~SIZE_MB image: `didx --load` next to the plain pipe
#     `docker save IMG | docker exec -i CLIENT docker load`, A/B interleaved, RUNS times each,
#     timed over the same span (export start → load done) in the same kind of environment;
#  2. didx's peak RSS while copying a CP_MB directory into the client with --cp.
# Targets (issue 4): seeding at least as fast as the pipe; peak RSS under 64 MB.
# Needs: an engine, didx/dind:local (scripts/setup.sh). The docker CLI is used only for the
# reference pipe and to make the test image. Usage: bench/seed.sh [--short]
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}; SIZE_MB=${SIZE_MB:-200}; CP_MB=${CP_MB:-1024}
if [ "${1:-}" = --short ]; then RUNS=1; SIZE_MB=20; CP_MB=64; fi
DIDX=${DIDX:-./target/release/didx}
[ -x "$DIDX" ] || cargo build --release --locked
IMG=didx-bench-seed:${SIZE_MB}m
work=$(mktemp -d)
export DIDX_CACHE_DIR=$work/cache

cleanup() {
  for n in $(cat "$work/envs" 2>/dev/null); do docker rm -fv "$n" >/dev/null 2>&1 || true; done
  docker rmi -f "$IMG" didx-bench-base:1 >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(uname -r), engine $(docker version -f '{{.Server.Version}}'), storage $(docker info -f '{{.Driver}}')"

# The test image, made offline: busybox from the offline image plus a layer of random data.
cid=$(docker create didx/dind:local)
docker cp -q "$cid:/usr/bin/busybox" "$work/busybox" && docker rm "$cid" >/dev/null
mkdir -p "$work/root/bin" && cp "$work/busybox" "$work/root/bin/" && ln -s busybox "$work/root/bin/sh" && ln -s busybox "$work/root/bin/head"
tar -C "$work/root" -c . | docker import -c 'ENV PATH=/bin' - didx-bench-base:1 >/dev/null
printf 'FROM didx-bench-base:1\nRUN head -c %d /dev/urandom > /blob\n' "$((SIZE_MB * 1048576))" | docker build -q --force-rm -t "$IMG" - >/dev/null 2>&1
bytes=$(docker image inspect -f '{{.Size}}' "$IMG")
echo "image: $IMG, $((bytes / 1000000)) MB"

median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f", m}'; }

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
