#!/usr/bin/env python3
"""The engine's own CPU for the least a didx environment is: the physical floor of the design.

One sandbox, done straight on the engine API (its unix socket; no docker CLI, no didx, no TLS,
no published port, no lease, nothing polled through the engine):
  - a server container of the server image running dockerd through the image's own entrypoint
    (the same nesting set-up as didx's: didx/dind images carry it at
    /usr/local/bin/didx-entrypoint), with didx's isolation (privileged, or every capability of
    the host's bounding set the engine knows with seccomp and AppArmor unconfined), a private
    cgroup namespace, its storage on an anonymous volume, auto-removed;
  - a client container of the same image joining the server's network namespace;
  - ready when the inner dockerd listens (read from here, in the server's /proc/PID/net/tcp);
  - one `docker version` exec in the client (over plain TCP on loopback);
  - both killed, and waited for until the engine has removed them and the volume.
Whatever a tool driving the engine adds to that (certificates, a lease, a port for the user),
the engine spends at least this much CPU per environment: host dockerd, containerd, shims and
runc, the kernel's namespace, mount and cgroup work, the inner dockerd and containerd.

    python3 bench/engine_floor.py [RUNS]     machine-wide CPU (ms) per sandbox, RUNS times

speed.py's part 12 runs it interleaved with didx. Environment: FLOOR_IMAGE (didx/dind:local),
FLOOR_ISOLATION (caps|privileged; default caps), DOCKER_SOCK (/var/run/docker.sock).
Python 3 standard library only.
"""

import http.client
import json
import os
import socket
import sys
import time
import urllib.parse

SOCK = os.environ.get("DOCKER_SOCK", "/var/run/docker.sock")
PORT = 2375
# Capability names by bit; the last three are left out as engine 20.10 rejects them (as
# bench/floor.sh does).
CAPS = ("CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE "
        "NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO "
        "SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME "
        "SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG "
        "WAKE_ALARM BLOCK_SUSPEND AUDIT_READ").split()


class _Unix(http.client.HTTPConnection):
    def __init__(self):
        super().__init__("localhost", timeout=60)

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(SOCK)


def call(method, path, body=None, ok=(200, 201, 204)):
    """One engine API call; its JSON answer (None when empty). Raises on an unexpected status."""
    conn = _Unix()
    try:
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    if r.status not in ok:
        raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
    return json.loads(data) if data else None


def isolation():
    if os.environ.get("FLOOR_ISOLATION", "caps") == "privileged":
        return {"Privileged": True}
    with open("/proc/self/status") as f:
        bnd = int(next(l.split()[1] for l in f if l.startswith("CapBnd:")), 16)
    return {"CapAdd": [n for i, n in enumerate(CAPS) if bnd >> i & 1],
            "SecurityOpt": ["seccomp=unconfined", "apparmor=unconfined"]}


def _listening(pid):
    """Whether something in PID's network namespace listens on PORT (IPv4)."""
    try:
        with open(f"/proc/{pid}/net/tcp") as f:
            rows = f.readlines()[1:]
    except OSError:
        return False
    return any(r.split()[1].endswith(f":{PORT:04X}") and r.split()[3] == "0A" for r in rows)


def mine(prefix):
    """Containers named PREFIX* (to wait for their removal, and to clean up)."""
    flt = urllib.parse.quote(json.dumps({"name": [prefix]}))
    return [c["Id"] for c in call("GET", f"/containers/json?all=1&filters={flt}")
            if any(n.lstrip("/").startswith(prefix) for n in c["Names"])]


def remove(prefix):
    for cid in mine(prefix):
        call("DELETE", f"/containers/{cid}?force=1&v=1", ok=(204, 404, 409))


def one(prefix, image=None):
    """One sandbox named PREFIX-s / PREFIX-c, start to gone. Returns the exec's exit code."""
    image = image or os.environ.get("FLOOR_IMAGE", "didx/dind:local")
    entry = "/usr/local/bin/didx-entrypoint"
    srv = call("POST", f"/containers/create?name={prefix}-s", {
        "Image": image, "Entrypoint": [entry, "server"],
        "Cmd": ["--host=unix:///var/run/docker.sock", f"--host=tcp://127.0.0.1:{PORT}", "--tls=false"],
        "HostConfig": {**isolation(), "CgroupnsMode": "private", "AutoRemove": True,
                       "Mounts": [{"Type": "volume", "Target": "/var/lib/docker"}]}})["Id"]
    call("POST", f"/containers/{srv}/start")
    cli = call("POST", f"/containers/create?name={prefix}-c", {
        "Image": image, "Entrypoint": [entry, "client"], "Env": [f"DOCKER_HOST=tcp://127.0.0.1:{PORT}"],
        "HostConfig": {"NetworkMode": f"container:{srv}", "AutoRemove": True}})["Id"]
    call("POST", f"/containers/{cli}/start")
    pid = call("GET", f"/containers/{srv}/json")["State"]["Pid"]
    deadline = time.monotonic() + 60
    while not _listening(pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{prefix}: the inner dockerd did not listen within 60 s")
        time.sleep(0.02)
    ex = call("POST", f"/containers/{cli}/exec",
              {"Cmd": ["docker", "version"], "AttachStdout": True, "AttachStderr": True})["Id"]
    conn = _Unix()
    try:
        conn.request("POST", f"/exec/{ex}/start", body=json.dumps({"Detach": False}),
                     headers={"Content-Type": "application/json"})
        conn.getresponse().read()
    finally:
        conn.close()
    code = call("GET", f"/exec/{ex}/json")["ExitCode"]
    for cid in (cli, srv):
        call("POST", f"/containers/{cid}/kill", ok=(204, 404, 409))
    deadline = time.monotonic() + 30
    while mine(prefix):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{prefix}: not removed within 30 s")
        time.sleep(0.05)
    return code


def busy_seconds():
    """CPU time the whole machine has spent busy (user, nice, system, irq, softirq), seconds."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def measured(prefix, settle=1.0):
    """One sandbox and SETTLE seconds after it (the engine's deferred work): machine-wide busy
    CPU seconds. Raises when the exec failed; removes what is left on any failure."""
    try:
        b0 = busy_seconds()
        code = one(prefix)
        time.sleep(settle)
        cpu = busy_seconds() - b0
    finally:
        remove(prefix)
    if code != 0:
        raise RuntimeError(f"{prefix}: `docker version` in the client exited {code}")
    return cpu


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    prefix = f"didx-bench-ef-{os.getpid()}"
    measured(f"{prefix}-warm")
    cpu = sorted(measured(f"{prefix}-{i}") * 1000 for i in range(runs))
    print(f"engine floor CPU per sandbox (ms): median {cpu[len(cpu) // 2]:.0f}, "
          f"min {cpu[0]:.0f}, max {cpu[-1]:.0f}, runs {runs}")


if __name__ == "__main__":
    main()
