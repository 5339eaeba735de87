#!/usr/bin/env python3
"""Speed benchmark for didx, one run on one machine, against the floor (bench/floor.sh).

What it measures (median and min-max over RUNS runs, after one untimed warm-up run):
  1. ready time: invocation until the inner engine answers (didx's `ready` phase; the
     floor's `ready` phase);
  2. end to end: `didx --clean anycase version` wall time, and a 5-command session;
  3. teardown: last command's exit until nothing of the environment remains (didx's
     `removed - commands-done`), plain and with an inner container that ignores SIGTERM;
     after every didx run, no container/volume/network labelled io.didx.env=<ENVID> may
     remain (checked with the docker CLI; a leftover fails the benchmark);
  4. concurrency: wall time of 1, 2, 4, 8 `didx --clean anycase version` started at once;
  5. peak RSS of the didx process for a plain run (its VmHWM, read from /proc while it runs);
  6. the floor, A/B interleaved with didx (didx, floor, didx, floor...), ratio per pair;
  7. pooled runs (`didx --pool`), when the binary has `didx pool`, against the floor;
  8. both offline engine versions (ENGINES, default bookworm's 20.10.24 and trixie's
     26.1.5, i.e. didx/dind:20.10.24 and didx/dind:26.1.5): `didx --sv V --clean anycase
     version`, interleaved, at least 3 runs each even with --short: didx's ready phase and
     the inner engine's own answer time (its "answered over TLS after" line);
  9. where one environment's CPU goes (`didx --clean none version`, then its removal): the
     machine's busy time, split into the server container and the client container (their
     cgroups' CPU accounting: the inner dockerd, containerd and entrypoint; the docker CLI),
     the host's dockerd, containerd and shims (/proc), didx itself (its rusage: it and
     the children it waited for), and the rest (the kernel's namespace and mount work, runc, everything else);
     the removal's machine-wide cost beside it;
 10. the same, sampled whole: `perf record -a` over a `didx --clean anycase version` run and
     a second after it (the engine's and kernel's deferred work), each sample given to the
     process it landed in, grouped (host dockerd and containerd, shims, runc, the inner
     dockerd and containerd, iptables, the client's docker CLI, didx, the containers' shells
     and tools, kernel threads, the rest). Every busy sample lands in one group, so the
     groups add up to the sampled total; perf's own samples are left out. Without a working
     `perf` this part says so and is skipped;
 11. the image store's seeding ratio: bench/seed.sh --store (with --short here: --short),
     its output appended.
A headline table comes first: the figures issue 23 targets, side by side (didx/floor end to
end, pooled/floor, CPU per environment machine-wide and perf-sampled, N at once against one
and against the CPU bound, the store's seeding ratio). The stamp says the commit (and
whether the tree had uncommitted changes), the machine and the date.
It prints a Markdown table (measurements with targets and pass/fail marks) and a phase
table (median ms since invocation at each phase, for didx, didx --pool and the floor) on
stdout, writes them to bench/out/speed.md, and draws bench/out/speed.png with gnuplot
(skipped with a note when gnuplot is absent, unless BENCH_CHART=require).

didx's phases come from `--timings` (`didx: timing PHASE MS` on stderr). A binary without
`--timings` is still measured: its phases are then the arrival times of its status lines on
stderr (marked "stderr-observed"). A binary without `didx pool` skips the pooled part.

Targets are reported, not asserted. The exit status is non-zero only when a run fails (a
command exits non-zero, something is left behind, the chart fails when required).

Usage (from anywhere; it works from the repository root):
    python3 bench/speed.py            # RUNS (default 5) runs, concurrency 1 2 4 8
    python3 bench/speed.py --short    # CI: 1 run, no warm-up, concurrency 1 2
    python3 bench/speed.py --engines  # only part 8 (RUNS, at least 3, per engine version)
Environment: DIDX (binary, default ./target/release/didx, built when absent), RUNS,
FLOOR_ISOLATION (default: privileged if the engine allows it, else caps), FLOOR_IMAGE,
BENCH_CHART=require, ENGINES (comma-separated versions). Needs an engine, didx/dind:local and
each didx/dind:<ENGINE> (scripts/setup.sh builds them).
Python 3 standard library only.
"""

import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import engine_floor  # noqa: E402  (bench/engine_floor.py, beside this file)
OUT = ROOT / "bench" / "out"
FLOOR = ROOT / "bench" / "floor.sh"

VERSION = ["version"]
SESSION = ["version", "info", "ps -a", 'sh -c "echo hi"', "images"]
STUBBORN = ["didx-busybox-image busybox",
            r'run -d busybox sh -c "trap \"\" TERM; while :; do sleep 1; done"']

# Every phase either tool reports, in time order; "exit" is the process's exit (wall time).
# ("ending": a pooled run hands its environment to its lease instead of removing it.)
PHASES = ["connected", "resolved", "claimed", "server-started", "client-started", "ready",
          "commands-done", "ending", "removed", "exit"]
COLORS = ["#9e9e9e", "#bcaaa4", "#ffb74d", "#64b5f6", "#4db6ac", "#81c784", "#ba68c8",
          "#f06292", "#e57373", "#616161"]
# How soon an environment handed to its lease must be gone after its run exits (the book's
# promise): the pooled runs are checked against it, and the time is reported.
ENDING_WITHIN_S = 2.0

ENVID_RE = re.compile(r"dind_([a-z0-9]{10})_server_")
TIMING_RE = re.compile(r"^didx: timing (\S+) (\d+)\s*$")
ANSWERED_RE = re.compile(r"^didx: inner engine answered over TLS after ([0-9.]+) s")
ENGINES = [v for v in os.environ.get("ENGINES", "20.10.24,26.1.5").split(",") if v]
FLOOR_RE = re.compile(r"^floor-phase (\S+) (\d+)\s*$")
# Without --timings: the status line announcing each phase (the last match wins).
OBSERVED = [
    ("server-started", re.compile(r"^didx: dind server named: .* successfully started")),
    ("client-started", re.compile(r"^didx: dind client named: .* successfully started")),
    ("ready", re.compile(r"^didx: inner engine answered")),
    ("commands-done", re.compile(r"^didx: \[\d+/\d+\] (succeeded|failed)")),
    ("ending", re.compile(r"^didx: dind .* ends with its lease")),
    ("removed", re.compile(r"^didx: dind .* destroyed")),
]


def log(msg):
    print(f"speed: {msg}", file=sys.stderr, flush=True)


def docker(*args):
    """Runs the docker CLI; returns its stdout split into words (ids, names)."""
    r = subprocess.run(["docker", *args], capture_output=True, text=True)
    return r.stdout.split()


@dataclass
class Run:
    """One finished process: exit code, wall time, peak RSS, stderr lines with arrival times."""
    argv: list
    rc: int
    wall: float                       # ms, spawn to exit
    rss_kb: int                       # peak RSS (VmHWM), when watched; else 0
    lines: list                       # (ms since spawn, line)
    phases: dict = field(default_factory=dict)  # phase -> ms since invocation
    cpu: float = 0.0                  # s, its own and its waited-for children's
    gone_after: Optional[float] = None  # s, exit to nothing left, for one handed to its lease

    def tail(self, n=8):
        return "\n".join("    " + line for _, line in self.lines[-n:])


class Proc:
    """A running child whose stderr is read line by line, each line stamped on arrival; with
    watch_rss, its peak RSS read from /proc while it runs."""

    def __init__(self, argv, env=None, on_line=None, watch_rss=False):
        self.argv = argv
        self.lines = []
        self.hwm_kb = 0
        self.done = threading.Event()
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, errors="replace")
        self.reader = threading.Thread(target=self._read, args=(on_line,), daemon=True)
        self.reader.start()
        self.watcher = threading.Thread(target=self._watch_rss, daemon=True) if watch_rss else None
        if self.watcher:
            self.watcher.start()

    def _watch_rss(self):
        """VmHWM, the peak RSS of the process's own memory since its exec. (wait4's ru_maxrss
        is not it: exec records the replaced image's peak there, and the image a child of
        this script replaces is a copy of this Python process.) Peaks only grow, and a process
        does not grow while it exits, so the last reading before the exit is the peak."""
        path = f"/proc/{self.p.pid}/status"
        while not self.done.is_set():
            try:
                with open(path) as f:
                    hwm = next((int(l.split()[1]) for l in f if l.startswith("VmHWM:")), None)
            except OSError:
                hwm = None
            if hwm is None and self.hwm_kb:
                return  # exited (a zombie has no memory)
            self.hwm_kb = max(self.hwm_kb, hwm or 0)
            time.sleep(0.005)

    def _read(self, on_line):
        for line in self.p.stderr:
            self.lines.append(((time.monotonic() - self.t0) * 1000, line.rstrip("\n")))
            if on_line:
                on_line(line)

    def finish(self):
        """Waits for the exit (not for EOF: a detached grandchild may hold stderr open)."""
        _, status, usage = os.wait4(self.p.pid, 0)
        wall = (time.monotonic() - self.t0) * 1000
        self.done.set()
        self.p.returncode = os.waitstatus_to_exitcode(status)
        self.reader.join(timeout=3)
        if self.watcher:
            self.watcher.join(timeout=3)
        return Run(self.argv, self.p.returncode, wall, self.hwm_kb, list(self.lines),
                   cpu=usage.ru_utime + usage.ru_stime)


class Bench:
    """The measurements, what they created (for clean-up) and the failed runs."""

    def __init__(self, short):
        self.short = short
        self.engines_only = False
        self.runs = 1 if short else max(1, int(os.environ.get("RUNS", "5")))
        self.levels = [1, 2] if short else [1, 2, 4, 8]
        self.didx = os.environ.get("DIDX", "./target/release/didx")
        self.timings = False
        self.pool = None              # None: not probed; False: unsupported; True: supported
        self.pool_used = False
        self.pool_note = ""
        self.cpu_sampled_note = ""
        self.floor_isolation = None
        self.failures = []
        self.live = set()             # running Procs (for clean-up on interruption)
        self.envs_pending = set()     # ENVIDs seen and not yet verified gone
        self.floors_pending = set()   # floor.sh pids whose resources are not yet verified gone
        self.lock = threading.Lock()
        self.results = {}             # measurement name -> list of Run

    # -- processes ------------------------------------------------------------------------

    def spawn(self, argv, env=None, track=True, watch_rss=False):
        """Starts a child; with track, every ENVID it prints is removed at clean-up unless a
        check saw it gone (not for `didx pool`: pooled environments may be claimed by others)."""
        def on_line(line):
            m = ENVID_RE.search(line)
            if m:
                with self.lock:
                    self.envs_pending.add(m.group(1))
        proc = Proc(argv, env, on_line if track else None, watch_rss)
        self.live.add(proc)
        return proc

    def finish(self, proc):
        run = proc.finish()
        self.live.discard(proc)
        return run

    def fail(self, what, run=None):
        self.failures.append(what)
        log(f"FAIL: {what}" + (f"\n{run.tail()}" if run else ""))

    # -- didx -----------------------------------------------------------------------------

    def didx_argv(self, cmds, pool=False, sv=None):
        return ([self.didx] + (["--timings"] if self.timings else [])
                + (["--pool"] if pool else []) + (["--sv", sv] if sv else [])
                + ["--clean", "anycase"] + cmds)

    def check_didx(self, run, what):
        """Parses phases and the ENVID, checks the exit code and that nothing remains."""
        run.phases = didx_phases(run, self.timings)
        ids = {m.group(1) for _, line in run.lines for m in [ENVID_RE.search(line)] if m}
        ok = True
        if run.rc != 0:
            self.fail(f"{what}: exit code {run.rc}", run)
            ok = False
        if not ids:
            self.fail(f"{what}: no environment id (dind_<ENVID>_server_) in stderr", run)
            return False
        for envid in ids:
            left = env_leftovers(envid)
            if left and "ending" in run.phases:
                # Handed to its lease: gone within ENDING_WITHIN_S of the exit.
                t0 = time.monotonic()
                while left and time.monotonic() - t0 < ENDING_WITHIN_S:
                    time.sleep(0.05)
                    left = env_leftovers(envid)
                run.gone_after = time.monotonic() - t0
            if left:
                self.fail(f"{what}: env {envid} left behind: {', '.join(left)}", run)
                remove_env(envid)
                ok = False
            with self.lock:
                self.envs_pending.discard(envid)
        return ok

    def run_didx(self, what, cmds, pool=False, sv=None, watch_rss=False):
        run = self.finish(self.spawn(self.didx_argv(cmds, pool, sv), watch_rss=watch_rss))
        return run if self.check_didx(run, what) else None

    def run_batch(self, n):
        """n `didx --clean anycase version` started at once; wall time till all exited. Also
        records the machine-wide CPU time they cost (all processes, kernel included)."""
        cpu0, t0 = busy_seconds(), time.monotonic()
        procs = [self.spawn(self.didx_argv(VERSION)) for _ in range(n)]
        runs = [self.finish(p) for p in procs]
        wall = (time.monotonic() - t0) * 1000
        self.results.setdefault("cpu", {}).setdefault(n, []).append((busy_seconds() - cpu0) / n)
        ok = all([self.check_didx(r, f"concurrency {n}") for r in runs])
        return wall if ok else None

    def run_floor_batch(self, n):
        """n floors started at once: the same concurrency measure for the plain script."""
        t0 = time.monotonic()
        threads = [threading.Thread(target=lambda: results.append(self.run_floor(f"floor concurrency {n}")))
                   for _ in range(n)]
        results = []
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = (time.monotonic() - t0) * 1000
        return wall if all(results) and len(results) == n else None

    def pool_cmd(self, *args, unsupported_ok=False):
        """`didx pool ARGS`; exit 2 with unsupported_ok means the verb is unknown: no failure."""
        run = self.finish(self.spawn([self.didx, "pool", *args], track=False))
        if run.rc != 0 and not (unsupported_ok and run.rc == 2):
            self.fail(f"didx pool {' '.join(args)}: exit code {run.rc}", run)
        return run.rc

    # -- floor ----------------------------------------------------------------------------

    def run_floor(self, what):
        env = dict(os.environ, FLOOR_PHASES="1", FLOOR_ISOLATION=self.floor_isolation)
        proc = self.spawn(["bash", str(FLOOR)], env=env, track=False)
        self.floors_pending.add(proc.p.pid)
        run = self.finish(proc)
        for _, line in run.lines:
            m = FLOOR_RE.match(line)
            if m:
                name = "commands-done" if m.group(1) == "command-done" else m.group(1)
                run.phases[name] = float(m.group(2))
        run.phases["exit"] = run.wall
        ok = run.rc == 0
        if not ok:
            self.fail(f"{what}: exit code {run.rc}", run)
        left = floor_leftovers(proc.p.pid)
        if left:
            self.fail(f"{what}: left behind: {', '.join(left)}", run)
            remove_floor(proc.p.pid)
            ok = False
        self.floors_pending.discard(proc.p.pid)
        return run if ok else None

    # -- set-up ---------------------------------------------------------------------------

    def prepare(self):
        if not os.access(ROOT / self.didx, os.X_OK):
            if "DIDX" in os.environ:
                sys.exit(f"speed: DIDX={self.didx} is not an executable")
            log("building didx (cargo build --release --locked)")
            subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
        probe = lambda *a: subprocess.run([self.didx, *a], cwd=ROOT, capture_output=True).returncode
        # Both probes are side-effect free: clap answers them without touching the engine.
        self.timings = probe("--timings", "--help") == 0
        if probe("help", "pool") != 0:
            self.pool, self.pool_note = False, "pool: not supported by this binary"
        self.floor_isolation = os.environ.get("FLOOR_ISOLATION") or floor_isolation()

    def machine(self):
        mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
        cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                    if l.startswith("model name")), "?")
        fmt = "{{.ServerVersion}}|{{.Driver}}|{{.CgroupVersion}}|{{.CgroupDriver}}"
        info = subprocess.run(["docker", "info", "-f", fmt], capture_output=True, text=True)
        engine, driver, cgv, cgd = (info.stdout.strip().split("|") + ["?"] * 4)[:4]
        version = subprocess.run([self.didx, "--version"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip()
        parts = Path(ROOT / self.didx).resolve().parts
        profile = next((p for p in ("release", "debug") if p in parts), "unknown")
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip() or "?"
        # Figures from code that is not HEAD's say so.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        commit += " with uncommitted changes" if dirty else ""
        return [
            f"- machine: {os.cpu_count()} cores ({cpu}), {mem / 1048576:.1f} GiB RAM, "
            f"kernel {platform.release()}",
            f"- engine: {engine}, storage driver {driver}, cgroup v{cgv} ({cgd} driver)",
            f"- didx: {self.didx} ({version}, {profile} profile, commit {commit}); phases "
            + ("from --timings" if self.timings else
               "stderr-observed (this binary has no --timings)"),
            f"- floor: bench/floor.sh, isolation {self.floor_isolation}",
            f"- {self.runs} run(s) per measurement"
            + (", no warm-up" if self.engines_only
               else ", --short (no warm-up)" if self.short else ", after one warm-up run")
            + f", {time.strftime('%Y-%m-%d %H:%M %Z')}",
        ]

    # -- the measurements -----------------------------------------------------------------

    def measure(self):
        r = self.results
        if self.engines_only:
            r["engines"] = self.measure_engines()
            return
        if not self.short:
            log("warm-up: didx, floor")
            self.run_didx("warm-up didx", VERSION)
            self.run_floor("warm-up floor")
        r["didx"], r["floor"], r["pairs"] = [], [], []
        for i in range(self.runs):
            log(f"A/B {i + 1}/{self.runs}: didx --clean anycase version, then the floor")
            d = self.run_didx("didx version", VERSION, watch_rss=True)
            f = self.run_floor("floor")
            r["didx"] += [d] if d else []
            r["floor"] += [f] if f else []
            if d and f:
                r["pairs"].append(d.wall / f.wall)
        r["session"] = self.repeat("5-command session", SESSION)
        r["stubborn"] = self.repeat("SIGTERM-ignoring container", STUBBORN)
        r["batch"] = {}
        for n in self.levels:
            log(f"concurrency {n}: {self.runs} x {n} processes at once")
            r["batch"][n] = [w for w in (self.run_batch(n) for _ in range(self.runs)) if w]
        # The floor at the lowest and highest level, to tell the machine's limit from didx's.
        r["floor_batch"] = {}
        for n in (self.levels[0], self.levels[-1]):
            log(f"floor concurrency {n}: {self.runs} x {n} floors at once")
            r["floor_batch"][n] = [w for w in (self.run_floor_batch(n) for _ in range(self.runs)) if w]
        r["pool"] = self.measure_pool()
        r["engines"] = self.measure_engines()
        r["cpu_parts"] = self.measure_cpu_parts()
        r["cpu_sampled"] = self.measure_cpu_sampled()
        r["store"] = self.measure_store()
        r["engine_floor"] = self.measure_engine_floor()

    def measure_cpu_parts(self):
        """Part 9: one environment's CPU, by where it is spent; a dict of lists (seconds)."""
        parts = {}
        host = {"dockerd": pids_of("dockerd"), "containerd": pids_of("containerd")}
        for i in range(self.runs):
            log(f"CPU breakdown {i + 1}/{self.runs}: didx --clean none version, then removal")
            host0, busy0 = host_engine_cpu(host), busy_seconds()
            proc = self.spawn([self.didx, "--clean", "none", "version"])
            run = self.finish(proc)
            busy1, host1 = busy_seconds(), host_engine_cpu(host)
            ids = {m.group(1) for _, line in run.lines for m in [ENVID_RE.search(line)] if m}
            if run.rc != 0 or len(ids) != 1:
                self.fail("CPU breakdown: didx --clean none version", run)
                continue
            envid = ids.pop()
            members = container_cpu(envid)
            remove_env(envid)
            busy2 = busy_seconds()
            with self.lock:
                self.envs_pending.discard(envid)
            total = busy1 - busy0
            known = {"server container (inner dockerd, containerd, entrypoint)": members.get("server", 0.0),
                     "client container (docker CLI)": members.get("client", 0.0),
                     "host dockerd": host1[0] - host0[0],
                     "host containerd and shims": host1[1] - host0[1],
                     "didx (its rusage: it and the children it waited for)": run.cpu}
            for k, v in known.items():
                parts.setdefault(k, []).append(v)
            parts.setdefault("rest: total minus the parts (kernel, runc, others; below 0 when the exact cgroup counters exceed the tick-sampled total)", []).append(total - sum(known.values()))
            parts.setdefault("total, start and `version` (machine-wide)", []).append(total)
            parts.setdefault("removal (machine-wide, `docker rm -fv`)", []).append(busy2 - busy1)
        return parts

    def measure_cpu_sampled(self):
        """Part 10: one whole environment's CPU (start, `version`, removal), sampled by perf
        across the machine and grouped by process; a dict of lists (seconds), or None (with
        a note) without a working perf."""
        perf = shutil.which("perf")
        if not perf:
            self.cpu_sampled_note = "part 10 skipped: no `perf` on this machine (Debian: linux-perf)"
            log(self.cpu_sampled_note)
            return None
        host = {"dockerd": pids_of("dockerd"), "containerd": pids_of("containerd")}
        parts = {}
        for i in range(self.runs):
            log(f"CPU sampled {i + 1}/{self.runs}: perf record -a over didx --clean anycase version")
            data = f"/tmp/didx-bench-perf-{os.getpid()}.data"
            rec = subprocess.Popen([perf, "record", "-a", "-q", "-F", str(PERF_HZ), "-o", data],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(0.5)  # perf's own start, outside the window that counts
            if rec.poll() is not None:
                self.cpu_sampled_note = f"part 10 skipped: perf record failed: {rec.stderr.read().strip()[:200]}"
                log(self.cpu_sampled_note)
                return None
            t0 = time.monotonic()
            proc = self.spawn([self.didx, "--clean", "anycase", "version"])
            didx_pid = proc.p.pid
            run = self.finish(proc)
            time.sleep(1.0)
            window = time.monotonic() - t0
            rec.send_signal(signal.SIGINT)
            rec.wait()
            if run.rc != 0:
                self.fail("CPU sampled: didx --clean anycase version", run)
                continue
            script = subprocess.run([perf, "script", "-i", data, "-F", "time,pid,comm"],
                                    capture_output=True, text=True)
            os.unlink(data)
            groups = group_samples(script.stdout, host, didx_pid)
            for k, v in groups.items():
                parts.setdefault(k, []).append(v / PERF_HZ)
            parts.setdefault(f"window sampled (s of wall, {os.cpu_count()} cores)", []).append(window)
        return parts

    def measure_engine_floor(self):
        """Part 12: the engine's own CPU for the least a didx environment is, interleaved
        with didx's `--clean anycase version` measured the same way (busy CPU over the run and
        1 s after); a dict of lists (seconds) and the pairs' ratios."""
        out = {"floor": [], "didx": [], "pairs": []}
        prefix = f"didx-bench-ef-{os.getpid()}"
        for i in range(self.runs):
            log(f"engine floor {i + 1}/{self.runs}: bench/engine_floor.py's sandbox, then didx, CPU each")
            try:
                floor = engine_floor.measured(f"{prefix}-{i}")
            except (RuntimeError, OSError) as e:
                self.fail(f"engine floor: {e}")
                continue
            b0 = busy_seconds()
            run = self.finish(self.spawn(self.didx_argv(VERSION)))
            time.sleep(1.0)
            cpu = busy_seconds() - b0
            if not self.check_didx(run, "engine floor: didx"):
                continue
            out["floor"].append(floor)
            out["didx"].append(cpu)
            out["pairs"].append(cpu / floor)
        return out

    def measure_store(self):
        """Part 11: the image store's seeding ratio (bench/seed.sh's part 3, run here so that
        it is printed beside the rest): its output, and the ratio (None when not printed)."""
        log("store: bench/seed.sh --store" + (" --short" if self.short else ""))
        argv = ["bash", str(ROOT / "bench" / "seed.sh"), "--store"] + (["--short"] if self.short else [])
        done = subprocess.run(argv, cwd=ROOT, env={**os.environ, "DIDX": str(self.didx)},
                              capture_output=True, text=True)
        m = re.search(r"store/--load seeding ratio: (-?[0-9.]+)", done.stdout)
        if done.returncode != 0 or not m:
            self.fail(f"store: bench/seed.sh --store exited {done.returncode} without its ratio; "
                      f"its stdout ended: {done.stdout.strip().splitlines()[-3:]}; "
                      f"its stderr ended: {done.stderr.strip().splitlines()[-5:]}")
        return {"text": done.stdout, "ratio": float(m.group(1)) if m else None}

    def measure_engines(self):
        """Each offline engine version's start, interleaved (A, B, A, B...)."""
        found = {}
        for v in ENGINES:
            if docker("image", "inspect", "-f", "{{.Id}}", f"didx/dind:{v}"):
                found[v] = []
            else:
                self.fail(f"engine {v}: didx/dind:{v} is missing (scripts/setup.sh builds it; "
                          "trixie's: didx image build --suite trixie)")
        for i in range(max(3, self.runs)):
            for v in found:
                log(f"engine {v} {i + 1}/{max(3, self.runs)}: didx --sv {v} --clean anycase version")
                run = self.run_didx(f"engine {v}", VERSION, sv=v)
                if run:
                    run.answered = next((float(m.group(1)) * 1000 for _, line in run.lines
                                         for m in [ANSWERED_RE.match(line)] if m), None)
                    found[v].append(run)
        return found

    def repeat(self, what, cmds, pool=False):
        runs = []
        for i in range(self.runs):
            log(f"{what} {i + 1}/{self.runs}")
            run = self.run_didx(what, cmds, pool)
            runs += [run] if run else []
        return runs

    def measure_pool(self):
        if self.pool is False:
            log(self.pool_note)
            return []
        self.pool_used = True
        log("pool: didx pool up 1 (untimed)")
        rc = self.pool_cmd("up", "1", unsupported_ok=True)
        if rc == 2:
            self.pool, self.pool_note, self.pool_used = False, "pool: not supported by this binary", False
            log(self.pool_note)
            return []
        self.pool = True
        runs = []
        if rc != 0:
            return runs
        for i in range(self.runs):
            if i and self.pool_cmd("up", "1") != 0:    # wait for the background refill
                break
            log(f"pooled {i + 1}/{self.runs}: didx --pool --clean anycase version")
            run = self.run_didx("pooled version", VERSION, pool=True)
            runs += [run] if run else []
        self.pool_cmd("up", "1")      # let the last background refill finish before `down`
        if self.pool_cmd("down") == 0:
            self.pool_used = False
        return runs

    # -- clean-up -------------------------------------------------------------------------

    def cleanup(self):
        """Removes whatever the runs may have left: live children, environments, floors, pool."""
        for proc in list(self.live):
            if proc.p.poll() is None:
                proc.p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in list(self.live):
            try:
                proc.p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.p.kill()
                proc.p.wait()
        self.live.clear()
        for envid in sorted(self.envs_pending):
            if env_leftovers(envid):
                log(f"clean-up: removing environment {envid}")
                remove_env(envid)
        for pid in sorted(self.floors_pending):
            if floor_leftovers(pid):
                log(f"clean-up: removing floor-{pid}-*")
                remove_floor(pid)
        if engine_floor.mine(f"didx-bench-ef-{os.getpid()}-"):
            log("clean-up: removing the engine floor's containers")
            engine_floor.remove(f"didx-bench-ef-{os.getpid()}-")
        if self.pool_used:
            log("clean-up: didx pool down")
            subprocess.run([self.didx, "pool", "down"], cwd=ROOT, capture_output=True)


# -- helpers: phases, leftovers, isolation ----------------------------------------------------

def didx_phases(run, timings):
    """Phase -> ms since invocation: from `didx: timing` lines, else stderr arrival times."""
    phases = {}
    for ms, line in run.lines:
        if timings:
            m = TIMING_RE.match(line)
            if m:
                phases[m.group(1)] = float(m.group(2))
        else:
            for name, pattern in OBSERVED:
                if pattern.match(line):
                    phases[name] = ms
    phases["exit"] = run.wall
    return phases


PERF_HZ = 999

# Part 10's groups: the first that matches a sample's process (comm; host pids known).
SAMPLE_GROUPS = [
    ("host dockerd (API, networking)", lambda c, p, h, d: p in h["dockerd"]),
    ("host containerd", lambda c, p, h, d: p in h["containerd"]),
    ("didx", lambda c, p, h, d: p == d),
    ("containerd shims, and re-exec'd helpers (comm `exe`: a shim's start, dockerd's netns setup)", lambda c, p, h, d: c.startswith("containerd-shim") or c == "exe"),
    ("runc (create, start, exec, delete, init)", lambda c, p, h, d: c.startswith("runc")),
    ("inner dockerd", lambda c, p, h, d: c == "dockerd"),
    ("inner containerd", lambda c, p, h, d: c == "containerd"),
    ("iptables (the inner engine's, the host's for the published port)", lambda c, p, h, d: c.startswith(("iptables", "ip6tables", "xtables"))),
    ("docker CLI (the client's `version`, the entrypoints' checks)", lambda c, p, h, d: c == "docker"),
    ("docker-proxy (the published TLS port)", lambda c, p, h, d: c == "docker-proxy"),
    ("kernel threads (namespace and mount teardown, softirq, rcu)",
     lambda c, p, h, d: c.startswith(("kworker", "ksoftirqd", "rcu", "kdamond", "migration", "khugepaged", "jbd2", "kswapd", "kcompactd", "netns", "cpuhp"))),
    ("shells and tools in the containers (entrypoint, bootstrap, mount...)",
     lambda c, p, h, d: c in ("sh", "dash", "entrypoint", "mount", "umount", "awk", "mawk", "cat", "sleep", "mkdir", "rm", "mknod", "chmod", "check", "docker-init", "tini", "ip", "modprobe", "sed", "grep", "head", "kill", "readlink", "tr", "cut", "ls", "ln", "find", "stat")),
]


def pids_of(comm):
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if open(f"/proc/{entry}/comm").read().strip() == comm:
                    found.add(int(entry))
            except OSError:
                pass
    return found


def group_samples(script, host, didx_pid):
    """Sample counts by group from `perf script -F time,pid,comm` lines (`COMM PID TIME:`);
    idle (pid 0) and perf's own samples are left out, the unmatched are "rest"; "total" is
    every busy sample."""
    counts = {name: 0 for name, _ in SAMPLE_GROUPS}
    rest = {}
    total = 0
    for line in script.splitlines():
        m = re.match(r"\s*(.*?)\s+(\d+)\s+[\d.]+:\s*$", line)
        if not m:
            continue
        comm, pid = m.group(1), int(m.group(2))
        if pid == 0 or comm.startswith("perf"):
            continue
        total += 1
        for name, match in SAMPLE_GROUPS:
            if match(comm, pid, host, didx_pid):
                counts[name] += 1
                break
        else:
            rest[comm] = rest.get(comm, 0) + 1
    top = ", ".join(f"{c} {n * 1000 // PERF_HZ} ms" for c, n in sorted(rest.items(), key=lambda x: -x[1])[:4])
    counts[f"rest ({top or 'none'})"] = sum(rest.values())
    counts["total, busy samples (machine-wide)"] = total
    return counts


# CPU time the whole machine has spent busy, seconds: the engine floor's measure, shared.
busy_seconds = engine_floor.busy_seconds


def proc_cpu(pid, children=True):
    """A process's CPU seconds (/proc/PID/stat), with its waited-for children's unless told."""
    try:
        stat = open(f"/proc/{pid}/stat").read()
    except OSError:
        return 0.0
    f = stat.rsplit(")", 1)[1].split()
    return sum(int(x) for x in f[11:15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def host_engine_cpu(host):
    """CPU seconds of the host's dockerd, and of its containerd and shims (those alive now).
    dockerd and containerd with the children they reaped (dockerd's archive helpers, shim
    launchers); a shim without: its reaped children are runc and the processes exec'd in a
    container, whose time the container's cgroup counts already (runc outside it is "rest").
    `host`: the host engine's pids by comm ({"dockerd": {...}, "containerd": {...}}), so that
    an inner dockerd or containerd (same comm, seen from here too) is not counted twice."""
    dockerd = containerd = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            comm = open(f"/proc/{entry}/comm").read().strip()
        except OSError:
            continue
        if comm == "dockerd" and int(entry) in host["dockerd"]:
            dockerd += proc_cpu(entry)
        elif comm == "containerd" and int(entry) in host["containerd"]:
            containerd += proc_cpu(entry)
        elif comm.startswith("containerd-shim"):
            containerd += proc_cpu(entry, children=False)
    return dockerd, containerd


def container_cpu(envid):
    """CPU seconds of environment ENVID's containers by role (server, client), from their
    cgroups: cgroup v1's cpuacct (docker/ID) or v2's cpu.stat (system.slice/docker-ID.scope)."""
    out = {}
    listed = subprocess.run(["docker", "ps", "-a", "--no-trunc", "--filter", f"label=io.didx.env={envid}",
                             "--format", '{{.ID}} {{.Label "io.didx.role"}}'], capture_output=True, text=True)
    for line in listed.stdout.splitlines():
        cid, _, role = line.partition(" ")
        for path, scale in ((f"/sys/fs/cgroup/cpuacct/docker/{cid}/cpuacct.usage", 1e-9),
                            (f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/cpu.stat", 1e-6)):
            try:
                text = open(path).read()
            except OSError:
                continue
            if path.endswith("cpu.stat"):
                text = next((l.split()[1] for l in text.splitlines() if l.startswith("usage_usec")), "0")
            out[role] = out.get(role, 0.0) + int(text.strip()) * scale
            break
    return out


def env_leftovers(envid):
    f = f"label=io.didx.env={envid}"
    return ([f"container {c}" for c in docker("ps", "-aq", "--filter", f)]
            + [f"volume {v}" for v in docker("volume", "ls", "-q", "--filter", f)]
            + [f"network {n}" for n in docker("network", "ls", "-q", "--filter", f)])


def remove_env(envid):
    f = f"label=io.didx.env={envid}"
    for c in docker("ps", "-aq", "--filter", f):
        docker("rm", "-fv", c)
    for v in docker("volume", "ls", "-q", "--filter", f):
        docker("volume", "rm", "-f", v)
    for n in docker("network", "ls", "-q", "--filter", f):
        docker("network", "rm", n)


def floor_leftovers(pid):
    """floor.sh names everything floor-<its pid>-<random>[-server|-client]."""
    prefix = f"floor-{pid}-"
    mine = lambda names: [n for n in names if n.startswith(prefix)]
    return ([f"container {c}" for c in mine(docker("ps", "-a", "--filter", f"name={prefix}",
                                                    "--format", "{{.Names}}"))]
            + [f"volume {v}" for v in mine(docker("volume", "ls", "-q", "--filter",
                                                  f"name={prefix}"))]
            + [f"network {n}" for n in mine(docker("network", "ls", "--filter", f"name={prefix}",
                                                   "--format", "{{.Name}}"))])


def remove_floor(pid):
    """Containers first: they hold the volume and the network."""
    for kind, name in (item.split(" ", 1) for item in floor_leftovers(pid)):
        if kind == "container":
            docker("rm", "-fv", name)
        elif kind == "volume":
            docker("volume", "rm", "-f", name)
        else:
            docker("network", "rm", name)


def floor_isolation():
    """privileged if the engine starts a privileged container of the image, else caps.
    (--entrypoint: the image's entrypoint rejects any first argument but server/client.)"""
    name = f"didx-bench-probe-{os.getpid()}"
    r = subprocess.run(["docker", "run", "--rm", "--privileged", "--name", name,
                        "--entrypoint", "true", os.environ.get("FLOOR_IMAGE", "didx/dind:local")],
                       capture_output=True)
    docker("rm", "-f", name)
    return "privileged" if r.returncode == 0 else "caps"


# -- report -----------------------------------------------------------------------------------

def median_phases(runs):
    """Phase -> median ms over the runs that reported it, in time order."""
    names = [p for p in PHASES if any(p in r.phases for r in runs)]
    return {p: statistics.median(r.phases[p] for r in runs if p in r.phases) for p in names}


def row(name, values, unit="ms", target=None):
    """A table row: median, min-max, target, mark. target = (op, bound) with op '<' or '<='."""
    fmt = {"ms": lambda v: f"{v:.0f} ms", "MB": lambda v: f"{v:.1f} MB",
           "x": lambda v: f"{v:.2f}" if v >= 0.1 else f"{v:.3f}", "s": lambda v: f"{v:.2f} s"}[unit]
    tgt = "—" if target is None else f"{target[0]} {fmt(target[1])}"
    if not values:
        return [name, "n/a", "n/a", tgt, "n/a"]
    med = statistics.median(values)
    spread = f"{fmt(min(values))}–{fmt(max(values))}" if len(values) > 1 else "—"
    mark = "—"
    if target:
        ok = med < target[1] if target[0] == "<" else med <= target[1]
        mark = "✅ pass" if ok else "❌ miss"
    return [name, fmt(med), spread, tgt, mark]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def report(bench):
    r = bench.results
    if bench.engines_only:
        return report_engines(bench), []
    src = "" if bench.timings else " (stderr-observed)"
    span = lambda runs, a, b: [x.phases[b] - x.phases[a] for x in runs
                               if a in x.phases and b in x.phases]
    phase = lambda runs, p: [x.phases[p] for x in runs if p in x.phases]
    rows = [
        row("ready: didx" + src, phase(r["didx"], "ready")),
        row("ready: floor", phase(r["floor"], "ready")),
        row("e2e `version`: didx", [x.wall for x in r["didx"]]),
        row("e2e `version`: floor", [x.wall for x in r["floor"]]),
        row("e2e `version`: didx/floor, pair by pair", r["pairs"], "x", ("<=", 0.7)),
        row("e2e 5-command session: didx", [x.wall for x in r["session"]]),
        row("teardown: didx, plain" + src, span(r["didx"], "commands-done", "removed"),
            target=("<", 500)),
        row("teardown: didx, SIGTERM-ignoring container" + src,
            span(r["stubborn"], "commands-done", "removed"), target=("<", 500)),
        row("teardown: floor", span(r["floor"], "commands-done", "removed")),
    ]
    batch = r["batch"]
    for n in bench.levels:
        rows.append(row(f"concurrency: {n} × `version` at once, till all exit", batch[n]))
    top = bench.levels[-1]
    if batch[1] and batch[top]:
        ratio = [statistics.median(batch[top]) / statistics.median(batch[1])]
        rows.append(row(f"concurrency: ratio {top}/1 (medians)", ratio, "x",
                        ("<=", 2.5) if top == 8 else None))
    for n, walls in r["floor_batch"].items():
        rows.append(row(f"concurrency: {n} × floor at once, till all exit", walls))
    fb = r["floor_batch"]
    if fb.get(1) and fb.get(top):
        rows.append(row(f"concurrency: floor ratio {top}/1 (medians)",
                        [statistics.median(fb[top]) / statistics.median(fb[1])], "x"))
    cpu = r.get("cpu", {}).get(1, [])
    if cpu:
        cores = os.cpu_count() or 1
        rows.append(row("CPU time per environment, machine-wide (all processes, kernel too)",
                        [c * 1000 for c in cpu]))
        rows.append(row(f"CPU bound for {top} at once on {cores} cores: {top} × CPU / cores",
                        [top * c * 1000 / cores for c in cpu]))
    for n in bench.levels[1:]:
        at_n = r.get("cpu", {}).get(n, [])
        if at_n and batch.get(n):
            rows.append(row(f"CPU time per environment with {n} at once (machine-wide / {n})",
                            [c * 1000 for c in at_n]))
            rows.append(row(f"concurrency: {n} at once / the CPU they used ({n} × that CPU / cores)",
                            [statistics.median(batch[n]) / (n * statistics.median(at_n) * 1000 / (os.cpu_count() or 1))], "x"))
    ef = r.get("engine_floor") or {}
    if ef.get("floor"):
        rows.append(["**The engine's own floor** (part 12, bench/engine_floor.py; machine-wide busy CPU over the run and 1 s after)", "", "", "", ""])
        rows.append(row("CPU: the engine's own, server with dockerd + client + one exec + removal (API only: no CLI, TLS, port, lease)",
                        [v * 1000 for v in ef["floor"]]))
        rows.append(row("CPU: didx --clean anycase version, measured the same way", [v * 1000 for v in ef["didx"]]))
        rows.append(row("CPU: didx / the engine's own floor, pair by pair", ef["pairs"], "x"))
    rows.append(row("peak RSS: didx, plain run", [x.rss_kb / 1024 for x in r["didx"]], "MB",
                    ("<", 25)))
    parts = r.get("cpu_parts") or {}
    if parts:
        rows.append(["**CPU per environment, by where it goes** (ms; the parts add up to the machine-wide total)", "", "", "", ""])
        for name, values in parts.items():
            rows.append(row(f"CPU: {name}", [v * 1000 for v in values]))
    sampled = r.get("cpu_sampled") or {}
    if sampled:
        rows.append(["**CPU per environment, sampled by perf** (ms; start, `version`, removal and 1 s after; the groups add up to the total)", "", "", "", ""])
        for name, values in sampled.items():
            unit = "s" if name.startswith("window") else "ms"
            rows.append(row(f"CPU sampled: {name}", [v * (1 if unit == "s" else 1000) for v in values], unit))
    rows += engine_rows(bench)
    floor_med = statistics.median(x.wall for x in r["floor"]) if r["floor"] else None
    if bench.pool:
        rows.append(row("pooled e2e `version`: didx --pool", [x.wall for x in r["pool"]]))
        gone = [x.gone_after for x in r["pool"] if x.gone_after is not None]
        rows.append(row("pooled: environment gone after the run's exit (its lease)",
                        [g * 1000 for g in gone], "ms", ("<=", ENDING_WITHIN_S * 1000)))
        rows.append(row("pooled e2e: didx --pool / floor median",
                        [x.wall / floor_med for x in r["pool"]] if floor_med else [], "x",
                        ("<=", 0.2)))

    out = ["# didx speed", ""] + bench.machine() + [""]
    out += ["## Headline", ""] + table(["figure", "median", "min–max", "target", ""], headline(bench)) + [""]
    out += ["## All measurements", ""]
    out += table(["measurement", "median", "min–max", "target", ""], rows)
    out += ["", "didx/floor per pair: " + (", ".join(f"{x:.2f}" for x in r["pairs"]) or "n/a")]
    if bench.pool_note:
        out += ["", bench.pool_note]
    if bench.cpu_sampled_note:
        out += ["", bench.cpu_sampled_note]

    columns = [("didx" + src, r["didx"]), ("didx --pool", r["pool"]), ("floor", r["floor"])]
    columns = [(name, median_phases(runs)) for name, runs in columns if runs]
    names = [p for p in PHASES if any(p in m for _, m in columns)]
    out += ["", "Phases: median ms since invocation (`exit`: the process's exit)", ""]
    out += table(["phase"] + [name for name, _ in columns],
                 [[p] + [f"{m[p]:.0f}" if p in m else "" for _, m in columns] for p in names])
    store = r.get("store") or {}
    if store.get("text"):
        out += ["", "## The image store (bench/seed.sh --store)", "", store["text"].rstrip()]
    if bench.failures:
        out += ["", f"**{len(bench.failures)} failed run(s):**"] + [f"- {f}" for f in bench.failures]
    return "\n".join(out) + "\n", columns


def headline(bench):
    """The figures issue 23 sets targets on, side by side: didx/floor end to end, pooled/floor,
    CPU per environment (machine-wide; perf-sampled beside it), N at once against one and
    against the CPU bound, the store's seeding ratio."""
    r = bench.results
    rows = [row("e2e `version`: didx / floor, pair by pair", r["pairs"], "x", ("<=", 0.45))]
    floor_med = statistics.median(x.wall for x in r["floor"]) if r["floor"] else None
    if bench.pool and floor_med:
        rows.append(row("pooled e2e: didx --pool / floor median", [x.wall / floor_med for x in r["pool"]],
                        "x", ("<=", 0.10)))
    cpu = r.get("cpu", {}).get(1, [])
    rows.append(row("CPU per environment, machine-wide (/proc/stat)", [c * 1000 for c in cpu], "ms",
                    ("<=", 500)))
    sampled = next((v for k, v in (r.get("cpu_sampled") or {}).items() if k.startswith("total")), [])
    rows.append(row("CPU per environment, perf-sampled (part 10)", [v * 1000 for v in sampled], "ms",
                    ("<=", 500)))
    top, batch = bench.levels[-1], r["batch"]
    if batch.get(1) and batch.get(top):
        one = statistics.median(batch[1])
        rows.append(row(f"{top} at once / one (medians)", [statistics.median(batch[top]) / one], "x",
                        ("<=", 2.5) if top == 8 else None))
        if cpu:
            bound = top * statistics.median(cpu) * 1000 / (os.cpu_count() or 1)
            rows.append(row(f"{top} at once / its CPU bound ({top} × CPU per environment / cores)",
                            [statistics.median(batch[top]) / bound], "x", ("<=", 1.10)))
        at_top = r.get("cpu", {}).get(top, [])
        if at_top and top > 1:
            used = top * statistics.median(at_top) * 1000 / (os.cpu_count() or 1)
            rows.append(row(f"{top} at once / the CPU they used ({top} × their CPU per environment / cores)",
                            [statistics.median(batch[top]) / used], "x"))
    ef = r.get("engine_floor") or {}
    if ef.get("pairs"):
        rows.append(row("CPU per environment: didx / the engine's own floor of the design (part 12)", ef["pairs"], "x"))
    ratio = (r.get("store") or {}).get("ratio")
    rows.append(row("store seeding / --load seeding (bench/seed.sh --store)", [ratio] if ratio is not None else [],
                    "x", ("<=", 0.05)))
    return rows


def engine_rows(bench):
    """Per engine version: didx's ready phase and the inner engine's own answer time."""
    src = "" if bench.timings else " (stderr-observed)"
    rows = []
    for v, runs in bench.results.get("engines", {}).items():
        rows.append(row(f"engine {v} (didx/dind:{v}): ready" + src,
                        [x.phases["ready"] for x in runs if "ready" in x.phases]))
        rows.append(row(f"engine {v}: inner engine answered after",
                        [x.answered for x in runs if x.answered is not None]))
    return rows


def report_engines(bench):
    out = ["# didx speed: engine versions", ""] + bench.machine() + [""]
    out += table(["measurement", "median", "min–max", "target", ""], engine_rows(bench))
    if bench.failures:
        out += ["", f"**{len(bench.failures)} failed run(s):**"] + [f"- {f}" for f in bench.failures]
    return "\n".join(out) + "\n"


def chart(columns, runs, path):
    """Horizontal stacked bars of phase segments (each ends at the named phase), via gnuplot."""
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        return "gnuplot not found: chart skipped (apt-get install gnuplot-nox)"
    probe = subprocess.run([gnuplot, "-e", "set terminal pngcairo"], capture_output=True)
    term = "pngcairo size 1100,380 font ',10'" if probe.returncode == 0 else "png size 1100,380"
    longest = max(m["exit"] for _, m in columns)
    blocks, labels, plots = [], [], []
    for k, p in enumerate(PHASES):
        data = []
        for y, (_, m) in enumerate(reversed(columns)):
            if p not in m:
                continue
            before = [m[q] for q in PHASES[:k] if q in m]
            start = min(max(before, default=0.0), m[p])
            data.append(f"{(start + m[p]) / 2:.1f} {y} {start:.1f} {m[p]:.1f} {y - 0.3} {y + 0.3}")
            if m[p] - start > 0.045 * longest:
                labels.append(f'{(start + m[p]) / 2:.1f} {y} "{m[p] - start:.0f}"')
        if data:
            blocks.append(f"$p{k} << EOD\n" + "\n".join(data) + "\nEOD")
            plots.append(f"$p{k} using 1:2:3:4:5:6 with boxxyerror lc rgb '{COLORS[k]}' "
                         f"title '{p}'")
    totals = [f'{m["exit"]:.0f} {y} "{m["exit"]:.0f} ms"' for y, (_, m) in enumerate(reversed(columns))]
    ytics = ", ".join(f'"{name}" {y}' for y, (name, _) in enumerate(reversed(columns)))
    script = "\n".join([
        f"set terminal {term}", f"set output '{path}'",
        f"set title 'didx vs the floor: where the time goes (median of {runs} run(s); "
        "each segment ends at the named phase)'",
        "set xlabel 'ms since invocation'", f"set ytics nomirror ({ytics})",
        f"set yrange [-0.6:{len(columns) - 0.4}]", f"set xrange [0:{longest * 1.12:.0f}]",
        "set style fill solid 0.9 border rgb '#333333'", "set grid x",
        "set key outside right top title 'segment until'",
        *blocks,
        "$labels << EOD", *labels, "EOD",
        "$totals << EOD", *totals, "EOD",
        "plot " + ", \\\n  ".join(plots + [
            "$labels using 1:2:3 with labels font ',8' notitle",
            "$totals using 1:2:3 with labels left offset 0.6,0 notitle"]),
    ])
    r = subprocess.run([gnuplot], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"gnuplot failed: {r.stderr.strip()}")
    return None


# -- main -------------------------------------------------------------------------------------

def main():
    short = "--short" in sys.argv[1:]
    unknown = [a for a in sys.argv[1:] if a not in ("--short", "--engines")]
    if unknown:
        sys.exit(f"usage: {sys.argv[0]} [--short] [--engines]  (unknown: {' '.join(unknown)})")
    os.chdir(ROOT)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))
    bench = Bench(short)
    bench.engines_only = "--engines" in sys.argv[1:]
    try:
        bench.prepare()
        bench.measure()
        text, columns = report(bench)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / ("speed-engines.md" if bench.engines_only else "speed.md")).write_text(text)
        print(text, end="")
        try:
            note = (chart(columns, bench.runs, OUT / "speed.png") if columns
                    else None if bench.engines_only else "no data to chart")
        except RuntimeError as e:
            bench.fail(str(e))
            note = None
        if note:
            log(note)
            if os.environ.get("BENCH_CHART") == "require":
                bench.fail(f"chart required: {note}")
        else:
            log(f"wrote {OUT / 'speed-engines.md'}" if bench.engines_only
                else f"wrote {OUT / 'speed.md'} and {OUT / 'speed.png'}")
    except KeyboardInterrupt:
        log("interrupted")
        bench.failures.append("interrupted")
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # let the clean-up finish
        bench.cleanup()
    if bench.failures:
        log(f"{len(bench.failures)} failure(s); see above")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
