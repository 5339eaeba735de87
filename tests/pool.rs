//! The warm pool, end to end: `pool up`, `--pool` claims (never the same environment twice,
//! even to concurrent runs), refills, `pool down`. Pools are engine-wide, so these tests run
//! one at a time in their own binary and assert the engine holds no didx resource afterwards.

mod common;

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pool as `didx pool` lists it: (env id, state) per line.
fn pool_list() -> Vec<(String, String)> {
    let r = didx(&["pool"]);
    assert_eq!(r.code, 0, "{}", r.show());
    r.stdout
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[1].to_string(), f[4].to_string())
        })
        .collect()
}

fn ready_ids() -> HashSet<String> {
    pool_list().into_iter().filter(|(_, s)| s == "ready").map(|(id, _)| id).collect()
}

/// Wait (bounded) until `n` pooled environments are ready: refills run in the background.
fn wait_ready(n: usize) -> HashSet<String> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ids = ready_ids();
        if ids.len() >= n || Instant::now() > deadline {
            return ids;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Empty the pool, then assert nothing of didx is left: a claimed environment still there is a
/// leak to report, not to sweep. The refills a test's runs started may still be at work;
/// `pool down` takes their lock, so it waits for them first. After a failed test (`strict`
/// false) everything is swept, so the next test starts clean.
fn teardown(strict: bool) {
    let down = didx(&["pool", "down"]);
    let left = rt().block_on(leftovers(None));
    if !strict || !left.is_empty() {
        didx(&["--clean", "all"]);
    }
    if strict {
        assert_eq!(down.code, 0, "{}", down.show());
        assert!(left.is_empty(), "didx resources on the engine after pool down: {left:?}");
    }
}

fn guarded(f: impl FnOnce()) {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    teardown(result.is_ok());
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn concurrent_runs_never_share_a_pooled_environment_and_the_pool_refills() {
    let _g = serial();
    guarded(|| {
        let up = didx(&["pool", "up", "2"]);
        assert_eq!(up.code, 0, "{}", up.show());
        assert!(up.stderr.contains("2 ready"), "{}", up.show());
        let pooled = ready_ids();
        assert_eq!(pooled.len(), 2, "{pooled:?}");

        // Four runs at once for a pool of two: two claim one each, two start fresh ones.
        let children: Vec<_> = (0..4)
            .map(|_| {
                didx_cmd(&["--pool", "--clean", "anycase", "sh -c 'echo env=$DIDX_ENV'"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let runs: Vec<Run> = children.into_iter().map(|c| from_output(c.wait_with_output().unwrap())).collect();
        let mut used: Vec<String> = Vec::new();
        for r in &runs {
            assert_eq!(r.code, 0, "{}", r.show());
            let id = r.stdout.trim().strip_prefix("env=").expect("env line").to_string();
            assert_eq!(Some(&id), r.env_id().as_ref(), "{}", r.show());
            assert_gone(&id);
            used.push(id);
        }
        let distinct: HashSet<&String> = used.iter().collect();
        assert_eq!(distinct.len(), 4, "two runs got the same environment: {used:?}");
        let claimed = used.iter().filter(|id| pooled.contains(*id)).count();
        assert_eq!(claimed, 2, "pool {pooled:?}, runs {used:?}");
        let fresh = runs.iter().filter(|r| r.stderr.contains("starting a fresh one")).count();
        assert_eq!(fresh, 2, "{}", runs.iter().map(Run::show).collect::<Vec<_>>().join("\n"));

        // The background refills bring it back to two, all new.
        let refilled = wait_ready(2);
        assert_eq!(refilled.len(), 2, "{:?}", pool_list());
        assert!(refilled.iter().all(|id| !used.contains(id)), "a used environment is back in the pool: {refilled:?}");

        // A pooled run's environment is a complete one: its inner engine runs containers.
        let r = didx(&["--pool", "--clean", "anycase", "didx-busybox-image b", "run --rm b echo inner-ok"]);
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.contains("inner-ok"), "{}", r.show());
        assert!(refilled.contains(&r.env_id().unwrap()), "{}", r.show());
    });
}

#[test]
fn runs_with_other_server_options_do_not_take_from_the_pool() {
    let _g = serial();
    guarded(|| {
        let up = didx(&["pool", "up", "1"]);
        assert_eq!(up.code, 0, "{}", up.show());
        let before = ready_ids();
        let r = didx(&["--pool", "--dkropts", "--debug", "--clean", "anycase", "version"]);
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("starting a fresh one"), "{}", r.show());
        assert!(!before.contains(&r.env_id().unwrap()));
        assert_eq!(ready_ids(), before, "the pool changed");
        // `pool up` again with the same options finds it full.
        let again = didx(&["pool", "up", "1"]);
        assert!(again.stderr.contains("1 ready (1 already, 0 started now)"), "{}", again.show());
        // --clean rpt shows pooled environments too.
        let rpt = didx(&["--clean", "rpt"]);
        let id = before.iter().next().unwrap();
        assert!(rpt.stdout.lines().any(|l| l.starts_with(id.as_str()) && l.contains("pool")), "{}", rpt.show());
        // Client mounts are not part of the key: a run with -v claims it, with its mount.
        let r = didx(&["--pool", "-v", "/data", "--clean", "anycase", "sh -c 'touch /data/x && ls /certs/client'"]);
        assert_eq!(r.code, 0, "{}", r.show());
        assert_eq!(r.env_id().as_ref(), Some(id), "{}", r.show());
        assert!(r.stdout.contains("key.pem"), "{}", r.show());
        assert_gone(id);
    });
}

#[test]
fn bad_pool_sizes_are_usage_errors_that_create_nothing() {
    let _g = serial();
    guarded(|| {
        for args in [&["pool", "up", "0"][..], &["pool", "up", "many"], &["pool", "up"], &["pool", "up", "1", "--isolation", "x"]] {
            let r = didx(args);
            assert_eq!(r.code, 2, "{args:?}: {}", r.show());
            assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.show());
        }
        assert!(pool_list().is_empty());
    });
}

#[test]
fn an_interrupted_pool_up_removes_what_it_was_starting() {
    let _g = serial();
    guarded(|| {
        let child = didx_cmd(&["pool", "up", "2"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Well before an inner dockerd can answer (~0.7 s at best), well after start-up.
        std::thread::sleep(Duration::from_millis(400));
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let r = from_output(child.wait_with_output().unwrap());
        assert_eq!(r.code, 143, "{}", r.show());
        assert!(r.stderr.contains("interrupted"), "{}", r.show());
        let left = rt().block_on(leftovers(None));
        assert!(left.is_empty(), "an interrupted pool up left: {left:?}");
    });
}
