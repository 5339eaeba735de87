//! The warm pool, end to end: `pool up`, `--pool` claims (never the same environment twice,
//! even to concurrent runs or to a client paused again), refills, `pool down` racing claims,
//! two fillers, stopped environments, the lock. Each test fills a pool of its own name
//! (`DIDX_POOL_NAME`, see `common::OwnPool`), so they run side by side, here and beside the other
//! test binaries (as cargo-nextest runs them); the one that drives the library in-process names
//! its pool in each call. Each checks (and, after a failure, sweeps) only its own pool and the
//! environments it saw, never everything.

mod common;

use std::collections::HashSet;
use std::io::BufRead;
use std::time::{Duration, Instant};

use common::*;
use didx::Cancel;
use didx::engine::Engine;
use didx::env::EnvId;
use didx::env::pool::{self, PoolState};
use didx::labels;

thread_local! {
    /// Every environment id this test saw (pool listings, runs), checked gone by its teardown.
    static SEEN: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn seen(id: &str) {
    SEEN.with(|s| s.borrow_mut().push(id.to_string()));
}

/// The pool as `didx pool` lists it: (env id, state) per line.
fn pool_list() -> Vec<(String, String)> {
    let r = didx(&["pool"]);
    assert_eq!(r.code, 0, "{}", r.show());
    let list = parse_pool_listing(&r.stdout);
    list.iter().for_each(|(id, _)| seen(id));
    list
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

/// Ids of environments with a pool-labelled container of pool `name` (`None`: the default
/// pool), any state.
async fn pooled_ids(e: &Engine, name: Option<&str>) -> HashSet<String> {
    let filter = std::collections::HashMap::from([("label".to_string(), vec![labels::POOL.to_string()])]);
    e.containers(filter)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.labels)
        .filter(|l| l.get(labels::POOL_NAME).map(String::as_str) == name)
        .filter_map(|l| l.get(labels::ENV).cloned())
        .collect()
}

/// Empty the pool, then assert nothing of it (nor of any environment the test saw) is left: a
/// claimed environment still there is a leak to report, not to sweep. After a failed test
/// (`strict` false) those are swept by id, so the next test starts clean; never `--clean all`,
/// which would take other tests' environments.
fn teardown(name: Option<&str>, strict: bool) {
    let down = didx(&["pool", "down"]);
    let seen_ids: Vec<String> = SEEN.with(|s| std::mem::take(&mut *s.borrow_mut()));
    let (pooled, left) = rt().block_on(async {
        let e = engine().await;
        let pooled = pooled_ids(&e, name).await;
        let mut left = Vec::new();
        for id in pooled.iter().chain(&seen_ids) {
            left.extend(leftovers(Some(id)).await);
        }
        if !strict || !left.is_empty() {
            for id in pooled.iter().chain(&seen_ids) {
                didx::env::remove(&e, id).await.ok();
            }
        }
        (pooled, left)
    });
    if strict {
        assert_eq!(down.code, 0, "{}", down.show());
        assert!(pooled.is_empty() && left.is_empty(), "after pool down: pooled {pooled:?}, left {left:?}\n{}", down.show());
    }
}

/// Run `f` with a pool of this test's own (named `tag`), then tear that pool down.
fn guarded(tag: &str, f: impl FnOnce(&OwnPool)) {
    let pool = OwnPool::new(tag);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&pool)));
    teardown(Some(&pool.name), result.is_ok());
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// A fresh cache directory of this test's own (its own pool lock), removed when dropped.
struct TempCache(std::path::PathBuf);

impl TempCache {
    fn new(tag: &str) -> TempCache {
        let d = std::env::temp_dir().join(format!("didx-test-pool-{tag}-{}", EnvId::generate()));
        private_dir(&d);
        TempCache(d)
    }
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = didx_cmd(args);
        c.env("DIDX_CACHE_DIR", &self.0);
        c
    }
}

impl Drop for TempCache {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// Ids a `pool up --events json` reported as started.
fn started_ids(r: &Run) -> Vec<String> {
    r.pool_ready()
}

/// Wait for a child, bounded: a child that does not end is killed and the test fails.
fn wait_bounded(mut child: std::process::Child, what: &str) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().ok();
            let r = from_output(child.wait_with_output().unwrap());
            panic!("{what} did not end within 60 s: {}", r.show());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    from_output(child.wait_with_output().unwrap())
}

#[test]
fn concurrent_runs_never_share_a_pooled_environment_and_the_pool_refills() {
    guarded("concurrent", |_| {
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
            seen(&id);
            assert_eq!(Some(&id), r.env_id().as_ref(), "{}", r.show());
            used.push(id);
        }
        let distinct: HashSet<&String> = used.iter().collect();
        assert_eq!(distinct.len(), 4, "two runs got the same environment: {used:?}");
        let claimed = used.iter().filter(|id| pooled.contains(*id)).count();
        assert_eq!(claimed, 2, "pool {pooled:?}, runs {used:?}");
        // The claimed ones end by their lease (the run did not wait), the fresh ones were
        // removed before their run returned.
        for (r, id) in runs.iter().zip(&used) {
            if pooled.contains(id) {
                assert!(r.stderr.contains("ends with its lease") && !r.stderr.contains("terminated & destroyed"), "{}", r.show());
                assert_ends(id);
            } else {
                assert!(r.stderr.contains("terminated & destroyed"), "{}", r.show());
                assert_gone(id);
            }
        }
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
    guarded("other-opts", |_| {
        let up = didx(&["pool", "up", "1"]);
        assert_eq!(up.code, 0, "{}", up.show());
        let before = ready_ids();
        let r = didx(&["--pool", "--dkropts", "--debug", "--clean", "anycase", "version"]);
        assert_eq!(r.code, 0, "{}", r.show());
        seen(&r.env_id().unwrap());
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
        assert_ends(id);
    });
}

#[test]
fn a_pooled_run_with_teardown_wait_removes_its_environment_before_it_returns() {
    guarded("teardown-wait", |_| {
        let up = didx(&["pool", "up", "1", "--events", "json"]);
        assert_eq!(up.code, 0, "{}", up.show());
        let pooled = up.pool_ready().pop().expect("a ready environment");
        let r = didx(&["--pool", "--clean", "anycase", "--teardown", "wait", "true"]);
        assert_eq!(r.code, 0, "{}", r.show());
        let id = r.env_id().expect("an environment");
        seen(&id);
        assert_eq!(id, pooled, "{}", r.show());
        assert!(r.stderr.contains("terminated & destroyed") && !r.stderr.contains("ends with its lease"), "{}", r.show());
        assert_gone(&id);
    });
}

#[test]
fn bad_pool_sizes_are_usage_errors_that_create_nothing() {
    guarded("bad-sizes", |_| {
        let over = (pool::MAX_SIZE + 1).to_string();
        for args in [
            &["pool", "up", "0"][..],
            &["pool", "up", "many"],
            &["pool", "up"],
            &["pool", "up", "1", "--isolation", "x"],
            &["pool", "up", over.as_str()],
        ] {
            let r = didx(args);
            assert_eq!(r.code, 2, "{args:?}: {}", r.show());
            assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.show());
        }
        let r = didx(&["pool", "up", &over]);
        assert!(r.stderr.contains(&format!("1 to {} (the maximum)", pool::MAX_SIZE)), "{}", r.show());
        assert!(pool_list().is_empty());
    });
}

#[test]
fn an_interrupted_pool_up_removes_what_it_was_starting() {
    guarded("interrupted", |_| {
        let child =
            didx_cmd(&["pool", "up", "2"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        // Signal it as soon as it has environments starting (an inner dockerd needs ~0.7 s at
        // best to answer).
        let mut child = child;
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut starting: Vec<String> = Vec::new();
        while starting.is_empty() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
            starting = pool_list().into_iter().filter(|(_, s)| s == "starting").map(|(id, _)| id).collect();
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let r = wait_bounded(child, "an interrupted pool up");
        assert_eq!(r.code, 143, "{}", r.show());
        assert!(r.stderr.contains("interrupted"), "{}", r.show());
        assert!(!starting.is_empty(), "never saw it starting: {}", r.show());
        // Those it was starting are gone, unless one got ready meanwhile (ready ones stay); none
        // is left starting. Other tests' environments on the engine are not looked at.
        let after = pool_list();
        assert!(after.iter().all(|(_, s)| s == "ready"), "{after:?}");
        let removed = starting.iter().filter(|id| !after.iter().any(|(a, _)| a == *id)).count();
        assert!(removed >= 1, "none of {starting:?} was removed: {after:?}");
        for id in starting.iter().filter(|id| !after.iter().any(|(a, _)| a == *id)) {
            assert_gone(id);
        }
    });
}

#[test]
fn a_claimed_environment_paused_again_is_never_claimed_again() {
    guarded("paused", |_| {
        let up = didx(&["pool", "up", "1"]);
        assert_eq!(up.code, 0, "{}", up.show());
        let pooled = ready_ids();
        assert_eq!(pooled.len(), 1, "{}", up.show());
        let first = didx(&["--pool", "--clean", "none", "version"]);
        let id = first.env_id().expect("env id");
        seen(&id);
        assert_eq!(first.code, 0, "{}", first.show());
        assert!(pooled.contains(&id), "the run did not claim the pooled one: {}", first.show());
        let client = format!("dind_{id}_client_latest");
        // Its client paused (as ready ones were by didx before pooled clients ran): it stays claimed.
        rt().block_on(async { engine().await.pause(&client).await.unwrap() });
        assert!(pool_list().contains(&(id.clone(), "claimed".to_string())), "{:?}", pool_list());
        // Twice: the second run may take the refill of the first, never the paused one.
        for _ in 0..2 {
            let r = didx(&["--pool", "--clean", "anycase", "version"]);
            let other = r.env_id().expect("env id");
            seen(&other);
            assert_eq!(r.code, 0, "{}", r.show());
            assert_ne!(other, id, "a claimed environment was claimed again: {}", r.show());
        }
        // Untouched: still paused under its run name.
        let state = rt().block_on(async { engine().await.inspect(&client).await.unwrap().state.unwrap().status });
        assert_eq!(state.map(|s| s.to_string()).as_deref(), Some("paused"));
        // Refills started by the runs: wait for them before pool down, then remove ours.
        assert_eq!(wait_ready(1).len(), 1, "{:?}", pool_list());
        rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
        assert_gone(&id);
    });
}

#[test]
fn pool_down_racing_claims_never_removes_a_claimed_environment() {
    guarded("racing", |pool| {
        let name = Some(pool.name.as_str());
        rt().block_on(async {
            let e = engine().await;
            let template = spec(&e, vec![]).await;
            let none = Cancel::default();
            let mut contended = 0;
            for round in 0..8 {
                let up = pool::up(&e, name, &template, 3, None, &none, &|_| {}).await.unwrap();
                assert!(up.failed.is_empty(), "{up:?}");
                let before: HashSet<String> = pool::entries(&e, name, None)
                    .await
                    .unwrap()
                    .into_iter()
                    .filter(|x| x.state == PoolState::Ready)
                    .map(|x| x.id)
                    .collect();
                before.iter().for_each(|id| seen(id));
                assert_eq!(before.len(), 3, "round {round}: {up:?}");
                // 1 to 3 claimers against one down, down first or last.
                let claimers = 1 + round % 3;
                let claim = || async {
                    let mut s = template.clone();
                    pool::claim(&e, name, &mut s, &none, &|_| {}).await.unwrap().map(|(env, _, _)| env)
                };
                // In odd rounds down first does what a claim does before it lists (the key), so
                // both list at about the same moment and race for the same clients.
                let down = async {
                    if round % 2 == 1 {
                        pool::key(&e, name, &template).await.unwrap();
                    }
                    pool::down(&e, name, &none, &|_| {}).await.unwrap()
                };
                let claims = futures_util::future::join_all((0..claimers).map(|_| claim()));
                let (down, claimed) = if round % 4 < 2 {
                    let (d, c) = tokio::join!(down, claims);
                    (d, c)
                } else {
                    let (c, d) = tokio::join!(claims, down);
                    (d, c)
                };
                let claimed: Vec<_> = claimed.into_iter().flatten().collect();
                let claimed_ids: HashSet<String> = claimed.iter().map(|env| env.id().to_string()).collect();
                let removed: HashSet<String> = down.removed.iter().cloned().collect();
                eprintln!("round {round}: {} claimed, down removed {} and left {:?}", claimed.len(), removed.len(), down.left);
                assert_eq!(claimed_ids.len(), claimed.len(), "round {round}: one environment claimed twice");
                if !claimed.is_empty() && !removed.is_empty() {
                    contended += 1;
                }
                assert!(claimed_ids.is_disjoint(&removed), "round {round}: claimed {claimed_ids:?} and removed {removed:?}");
                let accounted: HashSet<String> = claimed_ids.union(&removed).cloned().collect();
                assert_eq!(accounted, before, "round {round}: claimed {claimed_ids:?}, down {down:?}");
                assert!(down.left.iter().all(|(id, _)| claimed_ids.contains(id)), "round {round}: {down:?}");
                // Every claimed one survived down whole and works.
                for env in claimed {
                    let code =
                        env.exec(&["docker".into(), "version".into()], &mut tokio::io::sink(), &mut tokio::io::sink()).await.unwrap();
                    assert_eq!(code, 0, "round {round}: claimed {} does not answer", env.id());
                    let id = env.id().to_string();
                    env.rm().await.unwrap();
                    assert!(leftovers(Some(&id)).await.is_empty(), "{id}");
                }
                for id in &removed {
                    assert!(leftovers(Some(id)).await.is_empty(), "round {round}: removed {id} left {:?}", leftovers(Some(id)).await);
                }
                assert!(pooled_ids(&e, None).await.is_empty(), "round {round}");
            }
            assert!(contended > 0, "claims and down never shared a round: the race was not run");
        });
    });
}

#[test]
fn two_fillers_with_their_own_locks_never_remove_each_others_environments() {
    guarded("two-fillers", |_| {
        let (a_dir, b_dir) = (TempCache::new("a"), TempCache::new("b"));
        let piped =
            |mut c: std::process::Command| c.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let a = piped(a_dir.cmd(&["pool", "up", "2", "--events", "json"]));
        // B starts while A's environments are starting (or just ready): the moment it could
        // take them for its own dead ones. Both of A's must exist by then: B rightly counts
        // only the ones it sees (under load, A's second was once created after B counted, and
        // B started two, which is right, not a bug of B's).
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool_list().len() < 2 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let b = piped(b_dir.cmd(&["pool", "up", "3", "--events", "json"]));
        let (a, b) = (wait_bounded(a, "filler A"), wait_bounded(b, "filler B"));
        for r in [&a, &b] {
            assert_eq!(r.code, 0, "{}", r.show());
            let summary =
                r.events().into_iter().find(|e| e["didx_event"] == "pool_up").unwrap_or_else(|| panic!("no pool_up event: {}", r.show()));
            let none = |field: &str| summary[field].as_array().is_some_and(Vec::is_empty);
            assert!(none("removed") && none("failed"), "a filler removed or failed environments: {}", r.show());
        }
        let (a_ids, b_ids) = (started_ids(&a), started_ids(&b));
        assert_eq!(a_ids.len(), 2, "{}", a.show());
        assert_eq!(b_ids.len(), 1, "B counts A's two: {}", b.show());
        let union: HashSet<String> = a_ids.into_iter().chain(b_ids).collect();
        assert_eq!(ready_ids(), union, "{}\n{}", a.show(), b.show());
    });
}

#[test]
fn stopped_pooled_environments_are_removed_by_the_engine() {
    guarded("stopped", |_| {
        // What an engine restart does to them: the containers stop. Pooled servers and clients
        // are made with AutoRemove, so the engine removes them (and their volumes) then: no
        // stopped member is left for a later didx call to clear.
        let stop = |id: &str| {
            rt().block_on(async {
                let e = engine().await;
                for c in [format!("dind_{id}_server_latest"), format!("dind_{id}_pooled_latest")] {
                    e.stop(&c, Duration::ZERO).await.unwrap();
                }
            })
        };
        let up = didx(&["pool", "up", "1", "--events", "json"]);
        assert_eq!(up.code, 0, "{}", up.show());
        let old = started_ids(&up).pop().expect("started");
        stop(&old);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rt().block_on(leftovers(Some(&old))).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_gone(&old);
        assert_eq!(pool_list(), vec![]);
        let up = didx(&["pool", "up", "1", "--events", "json"]);
        assert_eq!(up.code, 0, "{}", up.show());
        let new = started_ids(&up).pop().expect("started");
        assert_eq!(ready_ids(), HashSet::from([new.clone()]));
        let down = didx(&["pool", "down"]);
        assert_eq!(down.code, 0, "{}", down.show());
        assert!(down.stderr.contains("removed 1 pooled environment(s)") && !down.stderr.contains("left"), "{}", down.show());
        assert_gone(&new);
    });
}

#[test]
fn pool_up_and_down_waiting_for_the_lock_answer_signals() {
    guarded("lock-signals", |pool| {
        let cache = TempCache::new("lock");
        // Held by this test, as a filler at work would.
        let held = std::fs::File::create(cache.0.join(format!("pool-{}.lock", pool.name))).unwrap();
        held.lock().unwrap();
        let cases = [
            (&["pool", "up", "1"][..], libc::SIGTERM, 143),
            (&["pool", "up", "1"], libc::SIGINT, 130),
            (&["pool", "up", "1"], libc::SIGHUP, 129),
            (&["pool", "down"], libc::SIGTERM, 143),
        ];
        for (args, sig, code) in cases {
            let mut child = cache.cmd(args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
            // Wait until it says it waits for the lock (its stderr, read in a thread).
            let stderr = child.stderr.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let mut all = String::new();
                for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("waiting for the pool lock") {
                        tx.send(()).ok();
                    }
                    all.push_str(&line);
                    all.push('\n');
                }
                all
            });
            let waiting = rx.recv_timeout(Duration::from_secs(60)).is_ok();
            unsafe { libc::kill(child.id() as i32, sig) };
            let r = wait_bounded(child, "a pool command waiting for the lock");
            let stderr = reader.join().unwrap();
            assert!(waiting, "{args:?} never said it waits for the lock: {stderr}");
            assert_eq!(r.code, code, "{args:?} signal {sig}: {stderr}");
            assert!(stderr.contains("interrupted"), "{stderr}");
            assert!(pool_list().is_empty(), "{args:?} created something");
        }
        drop(held);
    });
}

#[test]
fn a_symbolic_link_planted_as_the_lock_is_not_followed() {
    guarded("symlink", |pool| {
        let cache = TempCache::new("symlink");
        let target = cache.0.join("victim");
        std::fs::write(&target, "precious").unwrap();
        let lock = format!("pool-{}.lock", pool.name);
        std::os::unix::fs::symlink(&target, cache.0.join(&lock)).unwrap();
        for args in [&["pool", "up", "1"][..], &["pool", "down"]] {
            let r = from_output(cache.cmd(args).output().unwrap());
            assert_eq!(r.code, 125, "{args:?}: {}", r.show());
            assert!(r.stderr.contains(&lock) && r.stderr.contains("symbolic link"), "{}", r.show());
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
            assert!(pool_list().is_empty(), "{args:?} created something");
        }
    });
}

#[test]
fn pool_up_starts_at_most_a_few_at_a_time() {
    guarded("few-at-a-time", |pool| {
        let n = pool::MAX_STARTING + 2;
        let child = didx_cmd(&["pool", "up", &n.to_string(), "--events", "json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut child = child;
        // Sample the pool while it fills: never more than MAX_STARTING environments starting.
        let most = rt().block_on(async {
            let e = engine().await;
            let mut most = 0;
            while child.try_wait().unwrap().is_none() {
                let entries = pool::entries(&e, Some(&pool.name), None).await.unwrap();
                most = most.max(entries.iter().filter(|x| x.state == PoolState::Starting).count());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            most
        });
        let r = wait_bounded(child, "pool up");
        assert_eq!(r.code, 0, "{}", r.show());
        assert_eq!(started_ids(&r).len(), n, "{}", r.show());
        assert!((1..=pool::MAX_STARTING).contains(&most), "{most} starting at once (at most {})", pool::MAX_STARTING);
    });
}

#[test]
fn a_killed_filler_leaves_no_starting_environment_and_its_ready_ones_stay() {
    guarded("killed-filler", |_| {
        let mine = TempCache::new("mine");
        // A filler killed outright (no clean-up) while its environments are starting: each
        // is held by the filler from its start until ready (its lease), so it ends itself.
        // (Killed once it said a server started: `pool up` has no helper process, so a kill
        // while a create request is in flight leaves a never-started container for the next
        // didx command's sweep; see the book, docs/src/concepts/cleanup.md, "The run's helper".)
        let mut dead =
            mine.cmd(&["pool", "up", "1"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
        let mut lines = std::io::BufReader::new(dead.stderr.take().unwrap()).lines();
        let said = lines.by_ref().map_while(Result::ok).any(|l| l.contains("started for the pool"));
        assert!(said, "the filler never said a server started");
        std::thread::spawn(move || for _ in lines {});
        let starting: Vec<String> = pool_list().into_iter().filter(|(_, s)| s == "starting").map(|(id, _)| id).collect();
        unsafe { libc::kill(dead.id() as i32, libc::SIGKILL) };
        dead.wait().unwrap();
        assert!(!starting.is_empty(), "never saw a starting environment");
        let deadline = Instant::now() + Duration::from_secs(20);
        while pool_list().iter().any(|(_, s)| s == "starting") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let after = pool_list();
        assert!(after.iter().all(|(_, s)| s == "ready"), "half-started environments stayed: {after:?}");
        for id in starting.iter().filter(|id| !after.iter().any(|(n, _)| n == *id)) {
            assert_gone(id);
        }
        // Ready ones stay in the pool; the next filler of the same lock tops it up.
        let up = from_output(mine.cmd(&["pool", "up", "2", "--events", "json"]).output().unwrap());
        assert_eq!(up.code, 0, "{}", up.show());
        assert_eq!(ready_ids().len(), 2, "{}", up.show());
    });
}

/// The state `didx ls --json` (with `cache`) gives environment `id`.
fn ls_state(cache: &TempCache, id: &str) -> Option<String> {
    let r = from_output(cache.cmd(&["ls", "--json"]).output().unwrap());
    assert_eq!(r.code, 0, "{}", r.show());
    let all: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    all.as_array().unwrap().iter().find(|e| e["id"] == id).map(|e| e["state"].as_str().unwrap().to_string())
}

/// Wait (bounded) until every thread of process `pid` is stopped (state `T`).
fn wait_stopped(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let states: Vec<char> = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
            .filter_map(|stat| stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()))
            .collect();
        if !states.is_empty() && states.iter().all(|s| *s == 'T' || *s == 't') {
            return;
        }
        assert!(Instant::now() < deadline, "process {pid} not stopped within 10 s: thread states {states:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Wait (bounded) for a line of the helper's refill log (in `cache`) containing `what`.
fn refill_log_line(cache: &TempCache, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let log = std::fs::read_to_string(cache.0.join("pool-refill.log")).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains(what)) {
            return l.to_string();
        }
        assert!(Instant::now() < deadline, "no {what:?} in the refill log within 180 s: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `didx ls` tells a ready pooled environment (`ready`) from a claimed one (`running`); and a
/// refill queued by a claim before `pool down` does not repopulate the pool after `down`
/// returned. The refill is held at the bad moment: the pool lock is this test's while the
/// run claims (so the helper's refill waits for it), the helper is stopped (SIGSTOP) while
/// the lock goes to `pool down`, and continued once `down` returned.
#[test]
fn ls_shows_ready_and_claimed_and_a_refill_queued_before_pool_down_starts_nothing() {
    guarded("refill-race", |pool| {
        let cache = TempCache::new("race");
        let up = from_output(cache.cmd(&["pool", "up", "1", "--events", "json"]).output().unwrap());
        assert_eq!(up.code, 0, "{}", up.show());
        let pooled = started_ids(&up);
        assert_eq!(pooled.len(), 1, "{}", up.show());
        let id = pooled[0].clone();
        seen(&id);
        assert_eq!(ls_state(&cache, &id).as_deref(), Some("ready"), "an unclaimed pooled environment");

        let held = std::fs::OpenOptions::new().write(true).open(cache.0.join(format!("pool-{}.lock", pool.name))).unwrap();
        held.lock().unwrap();
        let run = from_output(cache.cmd(&["--pool", "--clean", "none", "true"]).output().unwrap());
        assert_eq!(run.code, 0, "{}", run.show());
        assert_eq!(run.env_id().as_ref(), Some(&id), "the run did not claim it: {}", run.show());
        assert_eq!(ls_state(&cache, &id).as_deref(), Some("running"), "a claimed environment");

        // The refill the claim queued, waiting for the lock: stopped, so `down` takes the lock.
        let line = refill_log_line(&cache, "refill: topping the pool up");
        let pid: i32 = line.rsplit("(pid ").next().and_then(|p| p.trim_end_matches(')').parse().ok()).expect("the helper's pid");
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "{line}");
        // Released only once every thread of the helper has stopped: a stop is delivered to
        // each thread as it next runs, and a thread polling the lock then could take it first.
        wait_stopped(pid);
        drop(held);
        let down = from_output(cache.cmd(&["pool", "down"]).output().unwrap());
        let continued = unsafe { libc::kill(pid, libc::SIGCONT) };
        assert_eq!(down.code, 0, "{}", down.show());
        assert_eq!(continued, 0);
        let outcome = refill_log_line(&cache, "refill: pool ");
        assert!(outcome.contains("brought down after this refill was queued; nothing started"), "{outcome}");
        // Nothing of the pool after `down` but the claimed one, which is the run's.
        let left: Vec<(String, String)> = pool_list().into_iter().filter(|(e, _)| *e != id).collect();
        assert!(left.is_empty(), "the refill repopulated the pool: {left:?}");
        assert_eq!(pool_list(), [(id.clone(), "claimed".to_string())]);
        rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
        assert_gone(&id);
    });
}
