//! Resource limits (`--memory`, `--cpus`, `--pids-limit`) on each of server and client, each
//! exceeded in the test: forks past the pids limit fail in the client; an inner container that
//! fills a tmpfs past the server's memory limit is killed (its cgroup nests in the server's);
//! a busy loop in the client past its CPUs is throttled (the cgroup's own count). Shown by
//! `didx ls`; bad values are usage lines. The engine is left as found.

mod common;

use common::*;

/// What `docker ARGS` prints (stdout and stderr), for a look at a server from here.
fn docker_out(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The number after `key` in a cgroup's `cpu.stat`.
fn stat(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse().ok())
}

#[test]
fn limits_bound_each_container_and_are_enforced_when_exceeded() {
    let image = format!("didx-limits:{}", std::process::id());
    let _made = HostImages(vec![image.clone()]);
    rt().block_on(async { busybox_image_with(&engine().await, &image, &["sh", "head", "tr"]).await });
    // Past the pids limit: forks fail in the client.
    let forks = "sh -c 'for i in $(seq 100); do sleep 30 & done; wait'";
    // Past the memory limit: a shell in an inner container holds 400 MB in a variable (its
    // memory cgroup nests in the server's 256 MB; the engine's default swap limit, twice the
    // memory, would not hold it either): the biggest process there, it is the one killed, 137.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hog.sh"), "x=$(head -c 400000000 /dev/zero | tr '\\0' a)\necho survived ${#x}\n").unwrap();
    let script = format!("{}:/work/", dir.path().join("hog.sh").display());
    let hog = format!("sh -c 'docker run --rm -i {image} sh < /work/hog.sh; echo inner-exit=$?'");
    // Past the CPUs: two seconds of a busy loop in the client, then its cgroup's throttling.
    let busy = "sh -c 'end=$(( $(date +%s) + 2 )); while [ $(date +%s) -lt $end ]; do :; done; \
                cat /sys/fs/cgroup/cpu/cpu.stat 2>/dev/null || cat /sys/fs/cgroup/cpu.stat'";
    // (The CPU bound in a sandbox of its own: the others' work would crawl under it.)
    let r = didx(&["--clean", "anycase", "--cpus", "0.5", busy]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert_gone(&r.env_id().unwrap());
    let throttled = stat(&r.stdout, "nr_throttled ").unwrap_or_else(|| panic!("no cpu.stat: {}", r.show()));
    assert!(throttled > 0, "a busy loop past 0.5 CPUs was never throttled: {}", r.show());

    // After it, the inner engine still answers: the OOM killer took the hog, not dockerd.
    let alive = "docker info --format engine-alive";
    let r = didx(&["--clean", "none", "--memory", "256m", "--pids-limit", "64", "--load", &image, "--cp", &script, &hog, alive]);
    let id = r.env_id().unwrap_or_else(|| panic!("{}", r.show()));
    with_cleanup(r, |r| {
        let server = format!("dind_{id}_server_latest");
        let log = || docker_out(&["logs", "--tail", "30", &server]);
        assert_eq!(r.code, 0, "{}\nserver's log:\n{}", r.show(), log());
        assert!(
            r.stdout.contains("inner-exit=137") && r.stdout.contains("engine-alive"),
            "the inner container outgrew the server's memory and was not the one killed: {}\nserver's log:\n{}",
            r.show(),
            log()
        );
        // The server's dockerd (and containerd with it) is less likely than an inner container
        // to be the OOM killer's choice where it may lower its score (privileged: the VM lane);
        // the caps profile cannot (no CAP_SYS_RESOURCE) and stays at 0, said here.
        let adj = docker_out(&["exec", &server, "sh", "-c", "cat /proc/$(cat /run/didx/dockerd.pid)/oom_score_adj"]);
        if r.stderr.contains("privileged isolation") {
            assert_eq!(adj.trim(), "-500", "dockerd's oom_score_adj in a privileged server");
        } else {
            assert_eq!(adj.trim(), "0", "dockerd's oom_score_adj without CAP_SYS_RESOURCE");
            eprintln!("limits: not privileged here: the server's dockerd keeps oom_score_adj 0 (no CAP_SYS_RESOURCE)");
        }
        // Listed with them.
        let ls = didx(&["ls", "--json"]);
        let all: serde_json::Value = serde_json::from_str(&ls.stdout).expect("JSON");
        let e = all.as_array().unwrap().iter().find(|e| e["id"] == id.as_str()).unwrap_or_else(|| panic!("{}", ls.stdout));
        assert_eq!(e["limits"], "memory=256m,pids=64", "{e}");
        // The pids limit, from a run of its own in the same client (`didx cp` has one; here a
        // docker exec, as a user would): forks past 64 fail.
        let client = format!("dind_{id}_client_latest");
        let out = std::process::Command::new("docker").args(["exec", &client, "sh", "-c", forks]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.to_lowercase().contains("fork"), "forks past the pids limit: {:?} {err}", out.status);
    });
    assert_running_then_remove(&id);

    // Bad values: one usage line each, nothing started.
    for (option, value) in [("--memory", "5m"), ("--cpus", "0"), ("--pids-limit", "8"), ("--memory", "lots")] {
        let r = didx(&["--clean", "anycase", option, value, "true"]);
        assert_eq!(r.code, 2, "{option} {value}: {}", r.show());
        assert_eq!(r.stderr.trim().lines().count(), 1, "{}", r.show());
        assert!(r.stderr.contains(option) && r.env_id().is_none(), "{}", r.show());
    }
}
