#!/usr/bin/env python3
"""Stress benchmark for didx's reaping (issue 10): N runs at K-way concurrency, killed at random.

Each run is one case, chosen with a seeded RNG (--seed, printed):
  ok    didx --clean anycase true                          expect 0
  fail  didx --clean anycase "sh -c 'exit 3'"              expect 3
  term  didx --clean anycase "sleep 30", SIGTERM at a random moment   expect 143 (-15 when
        the signal lands before didx's handlers exist, 0 when the run had already ended)
  int   the same with SIGINT                               expect 130 (or -2, or 0)
  kill  the same with SIGKILL                              expect -9 (or 0)
The random moment of term, int and kill is, by a seeded coin: 0-3 s after spawn (on a busy
machine mostly during start), or 0-1 s after the command started (so the command phase is
always covered however slow starts get); kill also has a third anchor, 0-0.15 s after its
command (then `true`) ended, to land in the teardown.
  cp    didx --clean anycase --cp TREE:/in --load IMAGE "sleep 30", SIGKILL a random 0-0.4 s
        after the inner engine answered, so it lands during the copy, the load or just after
        expect -9 (or 0)
(TREE: a small temporary directory; IMAGE: a tiny busybox image imported on the host at start
from the busybox in didx/dind:local, removed at the end.) Each didx runs in its own process
group and is signalled as a group (as a CI runner cancelling a job does). For the signalled
cases the phase the signal landed in is recorded (start; ready, which in cp spans the copy and
load; command; teardown; or after the exit) from the status lines didx had printed.

After all runs end, the engine is polled for didx resources (containers, volumes, networks
labelled io.didx.managed) for up to --grace seconds (default 10; the reaping allowance is
5 s per run). A leak is a resource that did not exist when the stress run started, is not
pooled (its environment has no io.didx.pool label), and belongs to an environment of this
run: every run uses a tag of didx/dind:local made for this run (didx-stress/dind:<pid>) as
its server and client image, so even a run killed before it printed its environment id is
attributed by its containers' image; volumes and networks by their environment id. New
resources of other environments (someone else on the same engine) are listed, not counted,
and left alone. Leaks are listed by name with the case of the run that made them, then
removed (by the ids found), so the engine is left as found; the image tag and the busybox
image are removed too.

It prints (stdout, and bench/out/stress.md) the machine, counts per case with every exit-code
mismatch, runs per minute, wall time, per-case duration median and min-max, where the
signals landed, and the leaks; every run goes to bench/out/stress.csv. Exit status: 0 when
every exit code matched and nothing leaked, 1 otherwise (a leak is reported, not hidden; a
container created and never started is named as such).
Interrupted (SIGINT, SIGTERM), it starts no more runs, sends the live ones SIGTERM (their
codes then count as term's), waits for them, checks and removes leaks as usual, exits 130.

Usage (from anywhere; it works from the repository root):
    python3 bench/stress.py                  # N=1000 runs, K=8 at once
    python3 bench/stress.py --short          # CI: 24 runs, 4 at once
    python3 bench/stress.py -n 100 -k 8 --seed 7 --cases ok,kill --grace 10
Environment: DIDX (binary, default ./target/release/didx, built when absent). Needs an engine
and didx/dind:local (scripts/setup.sh). Python 3 standard library only.
"""

import argparse
import csv
import io
import os
import platform
import queue
import random
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
BASE_IMAGE = "didx/dind:local"

CASES = ["ok", "fail", "term", "int", "kill", "cp"]
SIGNALS = {"term": signal.SIGTERM, "int": signal.SIGINT, "kill": signal.SIGKILL,
           "cp": signal.SIGKILL}
EXPECTED = {"ok": {0}, "fail": {3}, "term": {143, -15, 0}, "int": {130, -2, 0},
            "kill": {-9, 0}, "cp": {-9, 0}}
# Where a signal is aimed: anchor -> (the status line it counts from, or None for the spawn;
# the window in s after it, the signal landing uniformly in [0, window)).
ANCHORS = {
    "spawn": (None, 3.0),
    "ready": (re.compile(r"^didx: inner engine answered"), 0.4),    # cp: the copy and load
    "command": (re.compile(r"^didx: \[1/\d+\] (?!succeeded in|failed with)"), 1.0),
    "teardown": (re.compile(r"^didx: \[\d+/\d+\] (succeeded in|failed with)"), 0.15),
}
CASE_ANCHORS = {"term": ["spawn", "command"], "int": ["spawn", "command"],
                "kill": ["spawn", "command", "teardown"], "cp": ["ready"]}
RUN_TIMEOUT = 120.0        # s: a run still alive then is killed and counted as hung

ENVID_RE = re.compile(r"dind_([a-z0-9]{10})_(?:server|client)_")
# The phase a run is in: the furthest of these its status lines so far show;
# "ready" spans the inner engine's answer up to the first command (the copy and load in cp).
PHASE_LINES = [
    ("start", re.compile(r"^didx: ")),
    ("ready", re.compile(r"^didx: inner engine answered")),
    ("command", re.compile(r"^didx: \[\d+/\d+\] ")),
    ("teardown", re.compile(r"^didx: (\[\d+/\d+\] (succeeded|failed)|interrupted by|.* destroyed)")),
]


def log(msg):
    print(f"stress: {msg}", file=sys.stderr, flush=True)


def docker(*args, check=False, input=None):
    """Runs the docker CLI; returns its stdout as lines."""
    r = subprocess.run(["docker", *args], capture_output=True, input=input,
                       text=input is None or isinstance(input, str))
    if check and r.returncode != 0:
        err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode(errors="replace")
        raise RuntimeError(f"docker {' '.join(args[:2])}: {err.strip()}")
    out = r.stdout if isinstance(r.stdout, str) else r.stdout.decode(errors="replace")
    return [line for line in out.splitlines() if line.strip()]


@dataclass
class Run:
    """One didx run: what it was, what it gave, and what it printed."""
    index: int
    case: str
    anchor: str = ""                  # what the signal's delay counts from (ANCHORS)
    delay: float = 0.0                # s after the anchor
    rc: int = None
    wall: float = 0.0                 # ms, spawn to exit
    phase: str = ""                   # where the signal landed; "" when none was sent
    hung: bool = False
    interrupted: bool = False         # the script, interrupted, sent it SIGTERM
    lines: list = field(default_factory=list)
    envs: set = field(default_factory=set)

    @property
    def ok(self):
        expected = EXPECTED[self.case] | (EXPECTED["term"] if self.interrupted else set())
        return not self.hung and self.rc in expected


# -- the engine's didx resources -------------------------------------------------------------

@dataclass(frozen=True)
class Resource:
    kind: str                         # container | volume | network
    id: str
    name: str
    env: str
    pooled: bool
    image: str = ""
    state: str = ""                   # a container's: running, created (never started), …


def didx_resources(containers_only=False):
    """Every container, volume and network labelled io.didx.managed, with its environment."""
    fmt = '{{.Label "io.didx.env"}}|{{.Label "io.didx.pool"}}'
    found = []
    for line in docker("ps", "-a", "--no-trunc", "--filter", "label=io.didx.managed",
                       "--format", "{{.ID}}|{{.Names}}|{{.Image}}|{{.State}}|" + fmt):
        cid, name, image, state, env, pool = (line.split("|") + [""] * 6)[:6]
        found.append(Resource("container", cid, name, env, bool(pool), image, state))
    if containers_only:
        return found
    for line in docker("volume", "ls", "--filter", "label=io.didx.managed",
                       "--format", "{{.Name}}|" + fmt):
        name, env, pool = (line.split("|") + [""] * 3)[:3]
        found.append(Resource("volume", name, name, env, bool(pool)))
    for line in docker("network", "ls", "--no-trunc", "--filter", "label=io.didx.managed",
                       "--format", "{{.ID}}|{{.Name}}|" + fmt):
        nid, name, env, pool = (line.split("|") + [""] * 4)[:4]
        found.append(Resource("network", nid, name, env, bool(pool)))
    return found


def remove(resources):
    """Containers first (they hold the volumes and networks); by id; returns what failed."""
    failed = []
    order = {"container": 0, "volume": 1, "network": 2}
    for r in sorted(resources, key=lambda r: order[r.kind]):
        args = {"container": ["rm", "-fv", r.id], "volume": ["volume", "rm", "-f", r.id],
                "network": ["network", "rm", r.id]}[r.kind]
        p = subprocess.run(["docker", *args], capture_output=True, text=True)
        if p.returncode != 0 and "No such" not in p.stderr and "not found" not in p.stderr:
            failed.append(f"{r.kind} {r.name}: {p.stderr.strip()}")
    return failed


# -- the stress run --------------------------------------------------------------------------

class Stress:
    def __init__(self, args):
        self.args = args
        self.didx = os.environ.get("DIDX", "./target/release/didx")
        self.tag = f"didx-stress/dind:{os.getpid()}"
        self.busybox = f"didx-stress-bb:{os.getpid()}"
        self.tree = None
        self.made_tag = self.made_busybox = False
        self.baseline = set()          # (kind, id) of didx resources before the run
        self.ours = set()              # environment ids of this run's didx processes
        self.lock = threading.Lock()
        self.live = {}                 # pid -> Popen, for an interrupted script
        self.stop = threading.Event()
        self.runs = []
        self.wall = 0.0
        self.leaks = []                # Resource
        self.foreign = []              # new resources of environments not ours
        self.cleanup_failures = []

    # -- set-up and tear-down -----------------------------------------------------------------

    def prepare(self):
        if not os.access(ROOT / self.didx, os.X_OK):
            if "DIDX" in os.environ:
                sys.exit(f"stress: DIDX={self.didx} is not an executable")
            log("building didx (cargo build --release --locked)")
            subprocess.run(["cargo", "build", "--release", "--locked"], cwd=ROOT, check=True)
        if not docker("image", "ls", "-q", BASE_IMAGE):
            sys.exit(f"stress: {BASE_IMAGE} is missing (bash scripts/setup.sh builds it)")
        docker("tag", BASE_IMAGE, self.tag, check=True)
        self.made_tag = True
        if "cp" in self.args.cases:
            self.import_busybox()
            self.tree = tempfile.mkdtemp(prefix="didx-stress-")
            for i in range(8):
                sub = Path(self.tree, f"d{i % 3}")
                sub.mkdir(exist_ok=True)
                (sub / f"f{i}.txt").write_text(f"file {i}\n" * 64)

    def import_busybox(self):
        """A tiny image on the host: the busybox of didx/dind:local, a few applet links."""
        reader = f"didx-stress-reader-{os.getpid()}"
        docker("create", "--name", reader, BASE_IMAGE, check=True)
        try:
            raw = subprocess.run(["docker", "cp", f"{reader}:/usr/bin/busybox", "-"],
                                 capture_output=True, check=True).stdout
        finally:
            docker("rm", "-f", reader)
        with tarfile.open(fileobj=io.BytesIO(raw)) as t:
            member = next(m for m in t.getmembers() if m.isfile())
            binary = t.extractfile(member).read()
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo("bin/busybox")
            info.size, info.mode = len(binary), 0o755
            t.addfile(info, io.BytesIO(binary))
            for applet in ("sh", "true", "cat", "ls", "sleep"):
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                t.addfile(link)
        docker("import", "--change", "ENV PATH=/bin", "-", self.busybox,
               input=buf.getvalue(), check=True)
        self.made_busybox = True

    def teardown(self):
        if self.tree:
            subprocess.run(["rm", "-rf", self.tree])
        for image, made in ((self.busybox, self.made_busybox), (self.tag, self.made_tag)):
            if made:
                p = subprocess.run(["docker", "rmi", image], capture_output=True, text=True)
                if p.returncode != 0:
                    self.cleanup_failures.append(f"image {image}: {p.stderr.strip()}")

    # -- one run ----------------------------------------------------------------------------

    def argv(self, run):
        case = run.case
        cmd = ["true"] if case == "ok" or run.anchor == "teardown" else \
            ["sh -c 'exit 3'"] if case == "fail" else ["sleep 30"]
        extra = ["--cp", f"{self.tree}:/in", "--load", self.busybox] if case == "cp" else []
        return [self.didx, "--clean", "anycase", *extra, *cmd]

    def execute(self, run):
        env = dict(os.environ, DIDX_SERVER_IMAGE=self.tag, DIDX_CLIENT_IMAGE=self.tag)
        pattern = ANCHORS[run.anchor][0] if run.anchor else None
        anchored = threading.Event()
        t0 = time.monotonic()
        p = subprocess.Popen(self.argv(run), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             errors="replace", process_group=0)
        with self.lock:
            self.live[p.pid] = (p, run)

        def read():
            for line in p.stderr:
                line = line.rstrip("\n")
                run.lines.append(line)
                m = ENVID_RE.search(line)
                if m and m.group(1) not in run.envs:
                    run.envs.add(m.group(1))
                    with self.lock:
                        self.ours.add(m.group(1))
                if pattern and pattern.search(line):
                    anchored.set()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()

        sig = SIGNALS.get(run.case)
        if sig is not None:
            # Until the anchor's line (or the exit: then the signal comes too late).
            while pattern and not anchored.wait(0.02) and p.poll() is None:
                if time.monotonic() - t0 > RUN_TIMEOUT:
                    break
            try:
                p.wait(timeout=run.delay)     # not reaped yet: the pid is still this didx's
                run.phase = "after exit"
            except subprocess.TimeoutExpired:
                run.phase = self.phase_of(run.lines)
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    run.phase = "after exit"
        try:
            p.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            run.hung = True
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        run.wall = (time.monotonic() - t0) * 1000
        run.rc = p.returncode
        reader.join(timeout=3)
        with self.lock:
            self.live.pop(p.pid, None)

    @staticmethod
    def phase_of(lines):
        """The furthest phase any printed line shows (a later generic line does not undo it)."""
        rank = 0
        for line in list(lines):
            rank = max([rank] + [i for i, (_, pattern) in enumerate(PHASE_LINES) if pattern.search(line)])
        return PHASE_LINES[rank][0]

    # -- all runs ----------------------------------------------------------------------------

    def plan(self):
        rng = random.Random(self.args.seed)
        plan = []
        for i in range(self.args.n):
            case = rng.choice(self.args.cases)
            run = Run(i, case)
            if case in SIGNALS:
                run.anchor = rng.choice(CASE_ANCHORS[case])
                run.delay = rng.uniform(0, ANCHORS[run.anchor][1])
            plan.append(run)
        return plan

    def watch(self):
        """Attributes environments to this run by their containers' image, every second."""
        while not self.stop.wait(1.0):
            self.attribute()

    def attribute(self):
        for r in didx_resources(containers_only=True):
            if r.image == self.tag and r.env:
                with self.lock:
                    self.ours.add(r.env)

    def run_all(self):
        """Runs the plan on K workers; returns True when the script was interrupted (the live
        runs then got SIGTERM and were waited for, so their clean-up ran)."""
        self.baseline = {(r.kind, r.id) for r in didx_resources()}
        work = queue.Queue()
        for run in self.plan():
            work.put(run)
        done = []

        def worker():
            while not self.stop.is_set():
                try:
                    run = work.get_nowait()
                except queue.Empty:
                    return
                self.execute(run)
                with self.lock:
                    done.append(run)
                    n = len(done)
                if n % max(1, self.args.n // 20) == 0 or not run.ok:
                    note = "" if run.ok else f"  MISMATCH: {run.case} exit {run.rc}" + (" (hung)" if run.hung else "")
                    log(f"{n}/{self.args.n} done{note}")

        watcher = threading.Thread(target=self.watch, daemon=True)
        watcher.start()
        t0 = time.monotonic()
        workers = [threading.Thread(target=worker, daemon=True) for _ in range(self.args.k)]
        for w in workers:
            w.start()
        interrupted = False
        try:
            for w in workers:
                while w.is_alive():
                    w.join(timeout=0.5)
        except KeyboardInterrupt:
            interrupted = True
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            log("interrupted: no more runs; the live ones get SIGTERM and are waited for")
            self.stop.set()
            with self.lock:
                live = list(self.live.values())
            for p, run in live:
                run.interrupted = True
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for w in workers:
                w.join()
        self.wall = time.monotonic() - t0
        self.stop.set()
        self.attribute()
        self.runs = sorted(done, key=lambda r: r.index)
        return interrupted

    def check_leaks(self):
        """Polls for new, unpooled resources of this run's environments; then removes them."""
        deadline = time.monotonic() + self.args.grace
        t0 = time.monotonic()
        while True:
            new = [r for r in didx_resources() if (r.kind, r.id) not in self.baseline]
            pooled = {r.env for r in new if r.pooled}
            new = [r for r in new if r.env not in pooled]
            for r in new:
                if r.kind == "container" and r.image == self.tag and r.env:
                    self.ours.add(r.env)
            leaks = [r for r in new if r.env in self.ours]
            if not leaks or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        self.leaks = leaks
        self.foreign = [r for r in new if r.env not in self.ours]
        self.leak_wait = time.monotonic() - t0
        if leaks:
            log(f"{len(leaks)} resource(s) left after {self.leak_wait:.1f} s; removing them")
            self.cleanup_failures += remove(leaks)


# -- report ----------------------------------------------------------------------------------

def machine(didx):
    mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    fmt = "{{.ServerVersion}}|{{.Driver}}|{{.CgroupVersion}}|{{.CgroupDriver}}"
    info = subprocess.run(["docker", "info", "-f", fmt], capture_output=True, text=True)
    engine, driver, cgv, cgd = (info.stdout.strip().split("|") + ["?"] * 4)[:4]
    version = subprocess.run([didx, "--version"], cwd=ROOT, capture_output=True,
                             text=True).stdout.strip()
    parts = Path(ROOT / didx).resolve().parts
    profile = next((p for p in ("release", "debug") if p in parts), "unknown")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip() or "?"
    return [
        f"- machine: {os.cpu_count()} cores ({cpu}), {mem / 1048576:.1f} GiB RAM, "
        f"kernel {platform.release()}",
        f"- engine: {engine}, storage driver {driver}, cgroup v{cgv} ({cgd} driver)",
        f"- didx: {didx} ({version}, {profile} profile, commit {commit})",
    ]


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def codes(values):
    return ", ".join(f"{c}×{n}" if n > 1 else str(c)
                     for c, n in sorted(((c, values.count(c)) for c in set(values)),
                                        key=lambda x: (x[0] < 0, abs(x[0]))))


def report(s):
    a = s.args
    runs = s.runs
    env_case = {e: r for r in runs for e in r.envs}
    leaked_envs = {r.env for r in s.leaks}
    out = ["# didx stress", ""] + machine(s.didx) + [
        f"- {len(runs)} of {a.n} runs at {a.k} at once, seed {a.seed}, cases {','.join(a.cases)}"
        + (" (--short)" if a.short else "") + f", {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
    ]
    rows = []
    for case in a.cases:
        rs = [r for r in runs if r.case == case]
        if not rs:
            continue
        walls = [r.wall for r in rs]
        bad = [r for r in rs if not r.ok]
        leaky = {r.index for r in rs for e in r.envs if e in leaked_envs}
        cut = sum(1 for r in rs if r.interrupted)
        rows.append([case + (f" ({cut} cut short by the interruption)" if cut else ""), len(rs), " / ".join(sorted(str(c) for c in EXPECTED[case])),
                     codes([r.rc for r in rs]), len(bad),
                     f"{statistics.median(walls):.0f} ms",
                     f"{min(walls):.0f}–{max(walls):.0f} ms" if len(rs) > 1 else "—",
                     len(leaky)])
    out += table(["case", "runs", "expected", "exit codes", "mismatches", "duration median",
                  "min–max", "runs with leaks"], rows)
    minutes = s.wall / 60
    out += ["", f"Wall time {s.wall:.1f} s; {len(runs) / minutes if minutes else 0:.1f} runs per minute."]

    signalled = [r for r in runs if r.phase]
    if signalled:
        phases = ["start", "ready", "command", "teardown", "after exit"]
        out += ["", "Where the signals landed (the furthest status line didx had printed):", ""]
        out += table(["case"] + phases,
                     [[c] + [sum(1 for r in signalled if r.case == c and r.phase == p) for p in phases]
                      for c in a.cases if any(r.case == c for r in signalled)])

    bad = [r for r in runs if not r.ok]
    if bad:
        out += ["", f"**{len(bad)} exit-code mismatch(es):**"]
        for r in bad:
            what = f"hung, killed after {RUN_TIMEOUT:.0f} s" if r.hung else f"exit {r.rc}"
            tail = " | ".join(r.lines[-3:])
            out.append(f"- run {r.index} ({r.case}, {signal_at(r)}, {r.phase or 'no signal'}): "
                       f"{what}, expected {' or '.join(str(c) for c in sorted(EXPECTED[r.case]))}; "
                       f"stderr: {tail}")

    out += ["", f"Leaks (after waiting up to {a.grace:.0f} s; target 0): {len(s.leaks)} resource(s) "
            f"of {len(leaked_envs)} environment(s)"]
    for env in sorted(leaked_envs):
        r = env_case.get(env)
        who = f"run {r.index} ({r.case}, {r.phase or 'no signal'}, exit {r.rc})" if r else \
            "a run killed before it printed its environment id (found by image)"
        names = ", ".join(f"{x.kind} {x.name}" + (" (created, never started)" if x.state == "created" else "")
                          for x in s.leaks if x.env == env)
        out.append(f"- {env}: {who}: {names}")
    if s.leaks:
        out.append("(removed by the script afterwards)")
    if s.foreign:
        out += ["", f"Not counted: {len(s.foreign)} new resource(s) of environments this run did "
                "not start (someone else on this engine), left alone: "
                + ", ".join(f"{x.kind} {x.name}" for x in s.foreign)]
    if s.cleanup_failures:
        out += ["", "**Clean-up failures:**"] + [f"- {f}" for f in s.cleanup_failures]
    return "\n".join(out) + "\n"


def signal_at(r):
    return f"signal {r.delay:.2f} s after {r.anchor}" if r.anchor else "no signal"


def write_csv(s, path):
    leaked_envs = {r.env for r in s.leaks}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["index", "case", "signal_anchor", "signal_delay_s", "signal_phase", "exit_code", "expected",
                    "ok", "hung", "interrupted", "wall_ms", "env", "leaked"])
        for r in s.runs:
            w.writerow([r.index, r.case, r.anchor, f"{r.delay:.3f}" if r.anchor else "",
                        r.phase, r.rc, " ".join(str(c) for c in sorted(EXPECTED[r.case])),
                        int(r.ok), int(r.hung), int(r.interrupted), f"{r.wall:.0f}", " ".join(sorted(r.envs)),
                        int(any(e in leaked_envs for e in r.envs))])


# -- main ------------------------------------------------------------------------------------

def parse_args():
    ap = argparse.ArgumentParser(description="didx stress: N runs at K at once, killed at "
                                 "random; checks exit codes and leaks.")
    ap.add_argument("-n", type=int, default=None, help="runs (default 1000; --short: 24)")
    ap.add_argument("-k", type=int, default=None, help="at once (default 8; --short: 4)")
    ap.add_argument("--seed", type=int, default=None, help="RNG seed (default: random, printed)")
    ap.add_argument("--short", action="store_true", help="CI: 24 runs, 4 at once")
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated subset of {','.join(CASES)} (default: all)")
    ap.add_argument("--grace", type=float, default=10.0,
                    help="seconds to wait for reaping after the last run (default 10)")
    a = ap.parse_args()
    a.n = a.n if a.n is not None else (24 if a.short else 1000)
    a.k = a.k if a.k is not None else (4 if a.short else 8)
    a.seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1 << 31)
    a.cases = [c for c in a.cases.split(",") if c]
    unknown = [c for c in a.cases if c not in CASES]
    if unknown or not a.cases or a.n < 1 or a.k < 1:
        ap.error(f"bad --cases/-n/-k (unknown cases: {','.join(unknown) or 'none'})")
    return a


def main():
    args = parse_args()
    os.chdir(ROOT)

    def on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    s = Stress(args)
    log(f"seed {args.seed}: {args.n} runs, {args.k} at once, cases {','.join(args.cases)}")
    try:
        s.prepare()
        interrupted = s.run_all()
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # let the check and clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        s.check_leaks()
        text = report(s)
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "stress.md").write_text(text)
        write_csv(s, OUT / "stress.csv")
        print(text, end="")
        log(f"wrote {OUT / 'stress.md'} and {OUT / 'stress.csv'}")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        s.teardown()
    if interrupted:
        return 130
    bad = sum(1 for r in s.runs if not r.ok)
    if bad or s.leaks or s.cleanup_failures:
        log(f"FAIL: {bad} exit-code mismatch(es), {len(s.leaks)} leaked resource(s)"
            + (f", {len(s.cleanup_failures)} clean-up failure(s)" if s.cleanup_failures else ""))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
