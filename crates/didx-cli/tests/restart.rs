//! The host engine restarted under a running didx: didx says once that the engine went away
//! and exits 125; afterwards no didx container is left (the engine's auto-removal) and the
//! next didx command removes the volumes the engine left.
//!
//! It restarts the engine, so it runs only where the test may do that: with
//! `DIDX_TEST_RESTART_ENGINE=1` (CI sets it; its engine is the one scripts/ensure-engine.sh
//! started). Elsewhere it says loudly that it did not run.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn allowed() -> bool {
    let ok = std::env::var("DIDX_TEST_RESTART_ENGINE").is_ok_and(|v| v == "1");
    if !ok {
        eprintln!("SKIPPED engine_restart: set DIDX_TEST_RESTART_ENGINE=1 to let this test restart the host engine");
    }
    ok
}

fn restart_engine() {
    let stopped = Command::new("pkill").args(["-TERM", "-x", "dockerd"]).status().unwrap();
    assert!(stopped.success(), "no dockerd to stop");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Command::new("pgrep").args(["-x", "dockerd"]).stdout(Stdio::null()).status().unwrap().success() {
        assert!(Instant::now() < deadline, "dockerd did not stop within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ensure-engine.sh");
    let up = Command::new("bash").arg(script).status().unwrap();
    assert!(up.success(), "scripts/ensure-engine.sh could not start the engine again");
}

#[test]
fn engine_restart_mid_run_leaves_nothing_and_says_so_once() {
    // Its `pool down`s only make the next didx command (their sweep) happen: an empty pool of
    // its own, so no other test's pool is emptied.
    let _pool = OwnPool::new("restart");
    if !allowed() {
        return;
    }
    let mut child = didx_cmd(&["--clean", "anycase", "sleep 300"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("[1/1] sleep 300") {
            break;
        }
    }
    let id = env_id_in(&seen).expect("an environment id");
    restart_engine();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(125), "{seen}{}", rest.join("\n"));
    let gone: Vec<&String> = rest.iter().filter(|l| l.contains("went away")).collect();
    assert_eq!(gone.len(), 1, "one line says the engine went away: {rest:?}");
    assert!(rest.iter().all(|l| !l.contains("clean-up of environment")), "no second error line: {rest:?}");

    // No container of it is left: the engine removed them (AutoRemove).
    let deadline = Instant::now() + Duration::from_secs(30);
    let containers = || rt().block_on(leftovers(Some(&id))).into_iter().filter(|l| l.starts_with("container")).collect::<Vec<_>>();
    while !containers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(containers(), Vec::<String>::new());
    // Its volumes, which the engine leaves, go with the next didx command once a minute old.
    let created = Instant::now();
    while !rt().block_on(leftovers(Some(&id))).is_empty() {
        assert!(created.elapsed() < Duration::from_secs(120), "left: {:?}", rt().block_on(leftovers(Some(&id))));
        std::thread::sleep(Duration::from_secs(5));
        let down = didx(&["pool", "down"]);
        assert_eq!(down.code, 0, "{}", down.show());
    }
    assert_gone(&id);
}
