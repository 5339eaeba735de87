//! Reaping without the host socket: a didx killed with SIGKILL in each phase leaves nothing
//! within 5 s (times DIDX_TEST_SLOWDOWN on slow lanes; polled by label), kept environments stay, pooled ones end on their idle timeout,
//! and no container of ours mounts the host engine's socket. Each test asserts the engine is
//! left as found.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The reaping allowance the issue sets.
const REAP: Duration = Duration::from_secs(5);

/// Spawn didx with stderr piped; return the child and, once `marker` appears on stderr, the
/// environment id it names.
fn spawn_until(args: &[&str], marker: &str) -> (Child, String, String) {
    let mut child = didx_cmd(args).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("spawn didx");
    let mut seen = String::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(marker) {
            let id = env_id_in(&seen).unwrap_or_else(|| panic!("no environment id before {marker:?}:\n{seen}"));
            // Keep draining stderr so didx never blocks on it.
            std::thread::spawn(move || for _ in lines {});
            return (child, id, seen);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("didx never said {marker:?}:\n{seen}");
}

fn sigkill(child: &mut Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

#[test]
fn sigkill_while_starting_leaves_nothing() {
    // The server runs, its dockerd has not answered yet.
    let (mut child, id, _) = spawn_until(&["--clean", "anycase", "true"], "successfully started (");
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
}

#[test]
fn sigkill_while_starting_an_environment_to_keep_leaves_nothing() {
    // Kept once ready (none, success), but held until then: a start cut short leaves nothing.
    for clean in ["none", "success"] {
        let (mut child, id, _) = spawn_until(&["--clean", clean, "true"], "successfully started (");
        sigkill(&mut child);
        gone_within(&id, scaled(REAP));
    }
}

#[test]
fn sigkill_during_a_command_leaves_nothing() {
    let (mut child, id, _) = spawn_until(&["--clean", "anycase", "sleep 60"], "[1/1] sleep 60");
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
}

#[test]
fn sigkill_under_failure_policy_counts_as_failure() {
    let (mut child, id, _) = spawn_until(&["--clean", "failure", "sleep 60"], "[1/1] sleep 60");
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
}

#[test]
fn sigkill_during_copy_and_load_leaves_nothing() {
    // A large copy from stdin keeps didx in its copy phase while it is killed.
    let dir = std::env::temp_dir().join(format!("didx-lease-cp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..64 {
        std::fs::write(dir.join(format!("f{i}")), vec![b'x'; 1 << 20]).unwrap();
    }
    let src = format!("{}:/data", dir.display());
    let (mut child, id, _) =
        spawn_until(&["--clean", "anycase", "--cp", &src, "--load", "didx/dind:local", "true"], "inner engine answered");
    std::thread::sleep(Duration::from_millis(150));
    sigkill(&mut child);
    std::fs::remove_dir_all(&dir).unwrap();
    gone_within(&id, scaled(REAP));
}

#[test]
fn sigkill_during_teardown_leaves_nothing() {
    // Killed as the removal begins.
    let (mut child, id, _) = spawn_until(&["--clean", "anycase", "true"], "[1/1] succeeded");
    std::thread::sleep(Duration::from_millis(20));
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
}

#[test]
fn sigkill_under_none_keeps_both() {
    let (mut child, id, _) = spawn_until(&["--clean", "none", "sleep 60"], "[1/1] sleep 60");
    sigkill(&mut child);
    std::thread::sleep(scaled(REAP) + Duration::from_secs(1));
    let left = rt().block_on(leftovers(Some(&id)));
    let containers = left.iter().filter(|l| l.starts_with("container")).count();
    rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
    assert_eq!(containers, 2, "a kept environment stays when its didx is killed: {left:?}");
    assert_gone(&id);
}

#[test]
fn no_container_of_ours_mounts_the_host_socket_or_any_host_path() {
    let (mut child, id, _) = spawn_until(&["--clean", "anycase", "sleep 60"], "[1/1] sleep 60");
    let e = rt().block_on(engine());
    let containers = rt().block_on(e.containers(didx::labels::filter(Some(&id)))).unwrap();
    assert_eq!(containers.len(), 2);
    for c in &containers {
        let inspect = rt().block_on(e.inspect(c.id.as_deref().unwrap())).unwrap();
        for m in inspect.mounts.unwrap_or_default() {
            assert_ne!(m.typ.as_deref(), Some("bind"), "{:?} binds a host path: {m:?}", c.names);
            assert!(!m.source.unwrap_or_default().contains("docker.sock"), "{:?} mounts the host socket", c.names);
        }
        let hc = inspect.host_config.unwrap();
        assert_eq!(hc.auto_remove, Some(true), "{:?} is not auto-removed", c.names);
        assert!(hc.binds.unwrap_or_default().is_empty());
    }
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
}

#[test]
fn sigkill_right_after_a_pool_claim_leaves_nothing() {
    let _pool = OwnPool::new("lease-claim");
    // A pool of its own (other dockerd options make another key), with no idle timeout.
    let opts = ["--dkropts", "--label=didx-test=lease-claim"];
    let up = didx(&["pool", "up", "1", "--idle-timeout", "0", opts[0], opts[1]]);
    assert_eq!(up.code, 0, "{}", up.show());
    let (mut child, id, _) = spawn_until(&["--pool", "--clean", "anycase", opts[0], opts[1], "sleep 60"], "[1/1] sleep 60");
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
    // The refill the claim asked for is a pool member of its own: empty the pool, then check.
    let deadline = Instant::now() + scaled(Duration::from_secs(90));
    loop {
        let down = didx(&["pool", "down"]);
        assert_eq!(down.code, 0, "{}", down.show());
        let listed = didx(&["pool", "--json"]);
        if listed.stdout.trim() == "[]" || Instant::now() > deadline {
            assert_eq!(listed.stdout.trim(), "[]", "{}", listed.show());
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn sigkill_of_pool_up_mid_fill_leaves_no_half_started_environment() {
    let _pool = OwnPool::new("lease-mid-fill");
    let opts = ["--dkropts", "--label=didx-test=lease-fill"];
    let (mut child, id, _) = spawn_until(&["pool", "up", "1", "--idle-timeout", "0", opts[0], opts[1]], "started for the pool");
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
}

#[test]
fn an_unclaimed_pooled_environment_ends_on_its_idle_timeout() {
    let _pool = OwnPool::new("lease-idle");
    let opts = ["--dkropts", "--label=didx-test=lease-idle"];
    let idle = scaled(Duration::from_secs(8));
    let idle_arg = format!("{}s", idle.as_secs());
    let up = didx(&["pool", "up", "1", "--events", "json", "--idle-timeout", &idle_arg, opts[0], opts[1]]);
    assert_eq!(up.code, 0, "{}", up.show());
    let id = up.pool_ready().pop().expect("an id");
    assert_eq!(rt().block_on(leftovers(Some(&id))).iter().filter(|l| l.starts_with("container")).count(), 2);
    // 8 s after its start plus the reaping allowance (the server's dockerd, then its client,
    // which follows it, then the engine's auto-removal).
    gone_within(&id, idle + scaled(REAP) + scaled(REAP));
}

#[test]
fn bad_idle_timeouts_are_usage_errors() {
    let r = didx(&["pool", "up", "1", "--idle-timeout", "soon"]);
    assert_eq!(r.code, 2, "{}", r.show());
    assert!(r.stderr.contains("--idle-timeout"), "{}", r.show());
}

#[test]
fn a_container_created_and_never_started_is_removed_by_the_run_s_helper() {
    // What a SIGKILL during a create request in flight leaves: a container of the environment
    // that never started, so no lease holds it. Made here by hand, with the environment's
    // label, while the run holds the environment; then the run is killed.
    let (mut child, id, _) = spawn_until(&["--clean", "anycase", "sleep 60"], "[1/1] sleep 60");
    create_never_started(&id);
    sigkill(&mut child);
    gone_within(&id, scaled(REAP));
}

#[test]
fn a_container_whose_create_lands_after_the_run_died_is_removed_by_the_run_s_helper() {
    // The same, but the create lands after the run died (a request in flight at the kill that
    // the engine completes a little later): after the helper's first look.
    let (mut child, id, _) = spawn_until(&["--clean", "anycase", "sleep 60"], "[1/1] sleep 60");
    sigkill(&mut child);
    std::thread::sleep(Duration::from_millis(400));
    create_never_started(&id);
    gone_within(&id, scaled(REAP));
}

/// Create (never start) a container labelled as a client of environment `id`, made now, so
/// that only the run's helper (not a concurrent run's sweep of old leftovers) removes it.
fn create_never_started(id: &str) {
    let orphan = format!("didx_test_never_started_{id}");
    rt().block_on(async {
        let mut labels = didx::labels::for_resource(id, didx::labels::Role::Client, now_secs());
        labels.insert("didx-test".into(), "never-started".into());
        let body = bollard::models::ContainerCreateBody {
            image: Some("didx/dind:local".into()),
            labels: Some(labels),
            host_config: Some(bollard::models::HostConfig { auto_remove: Some(true), ..Default::default() }),
            ..Default::default()
        };
        engine().await.create_container(&orphan, body).await.unwrap();
    });
}
