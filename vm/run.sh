#!/usr/bin/env bash
# vm/run.sh [--short] [--accel auto|kvm|tcg] [--plan FILE]: the VM lane. Runs didx's tests in a
# Debian trixie VM (kernel 6.12, cgroup v2 only, docker.io 26.x, working --privileged) against
# the VM's own engine, and prints what came back. Exit 0 only if every planned test command
# passed and the VM's engine held nothing of didx's afterwards.
#
#   --short      vm/plans/short (what CI runs) instead of vm/plans/full
#   --accel A    kvm, tcg or auto (default: KVM if a 15 s probe boots the kernel, else TCG)
#   --plan FILE  another plan (lines: NAME TIMEOUT_SECONDS PACKAGE/TARGET [LIBTEST ARGS], and
#                `@engine docker|podman|rootless`: the engine the lines after it use; docker
#                first; rootless: a rootless dockerd of an unprivileged user, who runs them)
#
# Needs: qemu-system-x86 (installed if missing), mmdebstrap (vm/build.sh), the host engine
# with didx/dind:local (scripts/setup.sh) for `docker save`; the host engine is only read.
# Environment: DIDX_VM_DIR (target/vm), DIDX_VM_MEM (6G), DIDX_VM_CPUS (nproc),
# DIDX_VM_TIMEOUT (seconds for the whole boot-to-poweroff; default from the plan).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"

plan=vm/plans/full
accel=auto
while [ $# -gt 0 ]; do
  case "$1" in
    --short) plan=vm/plans/short ;;
    --accel) accel="$2"; shift ;;
    --plan) plan="$2"; shift ;;
    *) echo "vm/run.sh: unknown argument '$1' (try --short, --accel tcg, --plan FILE)" >&2; exit 2 ;;
  esac
  shift
done
case "$accel" in auto | kvm | tcg) ;; *) echo "vm/run.sh: --accel takes auto, kvm or tcg, not '$accel'" >&2; exit 2 ;; esac

say() { echo "vm: [$SECONDS s] $*" >&2; }
out="${DIDX_VM_DIR:-target/vm}"
mem="${DIDX_VM_MEM:-6G}"
cpus="${DIDX_VM_CPUS:-$(nproc)}"

if ! command -v qemu-system-x86_64 >/dev/null 2>&1 || ! command -v qemu-img >/dev/null 2>&1; then
  say "installing qemu-system-x86 and qemu-utils"
  apt-get update -qq
  # One QEMU release for both packages: a machine may ship a newer qemu-utils (a backport)
  # whose Breaks refuses the suite's qemu-system-common, so qemu-utils is pinned to the
  # version apt picks for qemu-system-x86 (a downgrade where the backport is installed).
  qv=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  [ -n "$qv" ] && [ "$qv" != "(none)" ] || { say "no qemu-system-x86 in this machine's package lists"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$qv" "qemu-utils=$qv" >/dev/null
fi

bash vm/build.sh

# The test binaries, built on the host (the guest's glibc is newer, so they run there).
say "building the test binaries"
cargo build --locked -p didx-cli
exes="$out/exes.json"
cargo test --locked --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
m = {}
for line in sys.stdin:
    a = json.loads(line)
    if a.get("reason") == "compiler-artifact" and a.get("executable") and a["profile"]["test"]:
        base, _, frag = a["package_id"].rpartition("#")
        pkg = frag.split("@")[0] if "@" in frag else base.rstrip("/").split("/")[-1]
        m[pkg + "/" + a["target"]["name"]] = a["executable"]
json.dump(m, sys.stdout)' >"$exes"

run="$out/run.$(basename "$plan")"
rm -rf "$run"
mkdir -p "$run/payload/vm" "$run/payload/repo" "$run/results"
payload="$run/payload"
cp vm/guest.sh "$payload/vm/"
git ls-files -z | tar --null -T - -c | tar -x -C "$payload/repo"
mkdir -p "$payload/repo/target/debug"
strip --strip-debug -o "$payload/repo/target/debug/didx" target/debug/didx

# The plan: targets become the binaries' paths relative to the repository.
total=0
: >"$payload/plan"
while read -r name limit target args; do
  case "$name" in '' | '#'*) continue ;; esac
  # `@engine KIND`: the lines after it run against that engine (vm/guest.sh sets it up).
  if [ "$name" = @engine ]; then
    case "$limit" in docker | podman | rootless) echo "@engine $limit" >>"$payload/plan"; continue ;; esac
    echo "vm/run.sh: $plan: '@engine $limit': the engines are docker, podman and rootless" >&2; exit 2
  fi
  exe="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$exes" "$target")"
  if [ -z "$exe" ]; then echo "vm/run.sh: $plan names test target '$target', which cargo did not build" >&2; exit 2; fi
  case "$exe" in "$repo"/*) rel="${exe#"$repo"/}" ;; *) echo "vm/run.sh: $exe is outside the repository (CARGO_TARGET_DIR is not supported here)" >&2; exit 2 ;; esac
  if [ ! -f "$payload/repo/$rel" ]; then
    mkdir -p "$(dirname "$payload/repo/$rel")"
    strip --strip-debug -o "$payload/repo/$rel" "$exe"
  fi
  echo "$name $limit $rel $args" >>"$payload/plan"
  total=$((total + limit))
done <"$plan"
cat >"$payload/lane.env" <<ENV
REPO='$repo'
# The VM's engine grants --privileged: the isolation tests expect it to work, not to be refused.
export DIDX_TEST_PRIVILEGED=works
# Software emulation is slow: the tests' time bounds (reaping after SIGKILL, idle timeouts) x10.
export DIDX_TEST_SLOWDOWN=\${DIDX_TEST_SLOWDOWN:-10}
ENV

say "saving the images from the host engine"
# Every didx/dind tag: local and its version tag (one image), and the trixie image (docker 26
# inside, `didx image build --suite trixie`) for the tests that need a current inner engine.
images=$(docker image ls --format '{{.Repository}}:{{.Tag}}' didx/dind | tr '\n' ' ')
docker image inspect didx/dind:local >/dev/null 2>&1 || images="didx/dind:local $images"
docker image inspect didx/dind-busybox:local >/dev/null 2>&1 && images="$images didx/dind-busybox:local"
# shellcheck disable=SC2086
docker save $images -o "$payload/images.tar"

say "making the payload and results disks"
mkfs.ext4 -q -F -L didx-payload -d "$payload" "$run/payload.img" "$(($(du -sm "$payload" | cut -f1) * 12 / 10 + 64))M"
rm -rf "$payload"

# Acceleration: KVM where it can boot this kernel. Some hosts' /dev/kvm (a paravirtual
# hypervisor) stops at the first instruction it cannot emulate ("emulation failure"); a bare
# kernel boot with no root tells within seconds (it panics when it gets that far).
if [ "$accel" = auto ]; then
  accel=tcg
  if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then
    probe="$run/kvm-probe.log"
    qemu-system-x86_64 -accel kvm -cpu host -m 256 -smp 1 -display none -serial "file:$probe" -no-reboot \
      -kernel "$out/vmlinuz" -append "console=ttyS0 panic=-1" -nic none >"$run/kvm-probe.qemu" 2>&1 &
    qpid=$!
    for _ in $(seq 1 75); do
      if grep -q "emulation failure\|internal error" "$run/kvm-probe.qemu" 2>/dev/null; then break; fi
      if grep -q "Kernel panic\|VFS:" "$probe" 2>/dev/null; then accel=kvm; break; fi
      kill -0 "$qpid" 2>/dev/null || break
      sleep 0.2
    done
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  say "acceleration: $accel (probe)"
fi
if [ "$accel" = kvm ]; then
  machine=(-accel kvm -cpu host)
else
  machine=(-accel tcg,thread=multi,tb-size=1024 -cpu max)
fi

limit="${DIDX_VM_TIMEOUT:-$((total + 900))}"
say "booting ($accel, $cpus cpus, $mem; at most $limit s): kernel $(file -b "$out/vmlinuz" | grep -o 'version [^ ]*')"
# A boot under multi-threaded TCG can die in its first seconds: a vCPU runs a stale
# translation of code the kernel is patching (an int3 Oops in sched_clock_cpu, "Kernel
# panic ... in interrupt"; seen once in ten boots of this kernel). That is the emulator, not
# the tests, so such a boot is retried on fresh disks, at most twice, and said so. A panic
# after the guest's first line ("didx-vm:") is never retried.
for attempt in 1 2 3; do
  rm -f "$run/root.qcow2" "$run/results.img"
  truncate -s 256M "$run/results.img"
  qemu-img create -q -f qcow2 -b "$(realpath "$out/base.img")" -F raw "$run/root.qcow2"
  set +e
  timeout -k 10 "$limit" qemu-system-x86_64 "${machine[@]}" -smp "$cpus" -m "$mem" \
    -display none -serial stdio -monitor none -no-reboot -nic none \
    -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
    -append "console=ttyS0 root=/dev/vda rw panic=-1 quiet loglevel=3 systemd.show_status=0" \
    -drive "file=$run/root.qcow2,format=qcow2,if=virtio,cache=unsafe" \
    -drive "file=$run/payload.img,format=raw,if=virtio,readonly=on" \
    -drive "file=$run/results.img,format=raw,if=virtio" </dev/null | tee "$run/console.log"
  qrc=${PIPESTATUS[0]}
  set -e
  if [ "$attempt" -lt 3 ] && grep -q "Kernel panic" "$run/console.log" && ! grep -q "didx-vm:" "$run/console.log"; then
    cp "$run/console.log" "$run/console.panic$attempt.log"
    say "the kernel panicked while booting, before the guest started (an emulator flake, kept in $run/console.panic$attempt.log): booting again, attempt $((attempt + 1)) of 3"
    continue
  fi
  break
done
say "VM ended (qemu exit $qrc)"

tar -xf "$run/results.img" -C "$run/results" 2>/dev/null || true
if [ ! -s "$run/results/summary" ]; then
  # The guest never wrote the results disk (it hung, or the time ran out): take what it had
  # written so far from its root disk, read without mounting (debugfs, catastrophic mode).
  say "no results disk; recovering /results from the guest's root disk"
  rm -rf "$run/results"
  qemu-img convert -U -O raw "$run/root.qcow2" "$run/root.raw" 2>/dev/null &&
    debugfs -c -R "rdump /results $run" "$run/root.raw" >/dev/null 2>&1 || true
  rm -f "$run/root.raw"
  if [ ! -s "$run/results/summary" ]; then
    say "no results came back (see $run/console.log)"
    exit 1
  fi
  echo "(recovered: the run did not finish; the last command's log is partial)"
  failed_early=1
fi
echo "--- $(tr '\n' ';' <"$run/results/facts")"
failed="${failed_early:-0}"
while read -r name rc took; do
  line="$(grep '^test result:' "$run/results/$name.log" | tail -n 1 || true)"
  printf '%-12s exit %-3s %5s s  %s\n' "$name" "$rc" "$took" "$line"
  if [ "$rc" != 0 ]; then
    failed=1
    echo "--- $name (last 60 lines of $run/results/$name.log)"
    tail -n 60 "$run/results/$name.log"
  fi
done <"$run/results/summary"
left="$(cat "$run/results/left.containers" 2>/dev/null || echo '?') containers, $(cat "$run/results/left.volumes" 2>/dev/null || echo '?') volumes"
echo "left on the VM's engine: $left"
[ "$left" = "0 containers, 0 volumes" ] || failed=1
rm -f "$run/root.qcow2" "$run/payload.img"
exit "$failed"
