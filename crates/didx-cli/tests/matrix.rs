//! The version matrix (`--sv A,B`) on the real engine, with two real engine versions offline:
//! Debian bookworm's docker.io 20.10.24 (`didx/dind:20.10.24`, made by `didx image build`) and
//! trixie's 26.1.5 (`didx/dind:26.1.5`, made by `didx image build --suite trixie`; scripts/setup.sh
//! runs both). Each test asserts that the engine holds nothing of its environments afterwards.

mod common;

use common::*;

const OLD: &str = "20.10.24";
const NEW: &str = "26.1.5";
/// Exits 0 on the 20.10 engine, 3 on any other: one version passes, the other fails.
const ONLY_20: &str = "sh -c 'case $(docker version --format {{.Server.Version}}) in 20.*) exit 0;; *) exit 3;; esac'";
const SERVER_VERSION: &str = "docker version --format '{{.Server.Version}}'";

/// Both engine images must be there: a missing one fails loudly with the command that makes it.
fn require_images() {
    rt().block_on(async {
        let e = engine().await;
        for (image, build) in
            [(format!("didx/dind:{OLD}"), "didx image build"), (format!("didx/dind:{NEW}"), "didx image build --suite trixie")]
        {
            assert!(
                e.image(&image).await.unwrap().is_some(),
                "{image} is missing; build it with: {build} (or bash scripts/setup.sh, which builds both)"
            );
        }
    });
}

/// The summary table's row for `version`: (result, exit code, env id).
fn row(stderr: &str, version: &str) -> (String, i32, String) {
    let line = stderr
        .lines()
        .find(|l| l.split_whitespace().next() == Some(version))
        .unwrap_or_else(|| panic!("no summary row for {version}:\n{stderr}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    // VERSION CLIENT RESULT EXIT DURATION s ENV
    (f[2].to_string(), f[3].parse().unwrap(), f[6].to_string())
}

/// Removes every environment the run named (on a failed assertion too), after `f`.
fn with_matrix_cleanup(r: Run, f: impl FnOnce(&Run)) {
    let ids: Vec<String> = r.stderr.split("dind_").skip(1).filter_map(|s| env_id_in(&format!("dind_{s}"))).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&r)));
    for id in &ids {
        rt().block_on(async { didx::env::remove(&engine().await, id).await.ok() });
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn two_engines_one_failing_give_its_code_and_the_summary() {
    require_images();
    let list = format!("{OLD},{NEW}");
    let r = didx(&["--sv", &list, "--clean", "anycase", SERVER_VERSION, ONLY_20]);
    with_matrix_cleanup(r, |r| {
        assert_eq!(r.code, 3, "the failing version's code: {}", r.show());
        // Each engine's own output, prefixed with its version.
        assert!(r.stdout.lines().any(|l| l.starts_with(&format!("[{OLD}] {OLD}"))), "{}", r.show());
        assert!(r.stdout.lines().any(|l| l.starts_with(&format!("[{NEW}] {NEW}"))), "{}", r.show());
        assert!(r.stdout.lines().all(|l| l.starts_with(&format!("[{OLD}] ")) || l.starts_with(&format!("[{NEW}] "))), "{}", r.show());
        // Status lines too: everything before the summary carries a prefix.
        let (before, summary) = r.stderr.split_once("didx: matrix: ").unwrap_or_else(|| panic!("no summary: {}", r.show()));
        assert!(before.lines().all(|l| l.starts_with(&format!("[{OLD}] ")) || l.starts_with(&format!("[{NEW}] "))), "{}", r.show());
        assert!(before.contains(&format!("[{NEW}] didx: [2/2] failed with exit code 3")), "{}", r.show());
        assert!(before.contains(&format!("using didx/dind:{NEW}")), "the versioned offline image stands in: {}", r.show());
        assert!(summary.starts_with("2 version(s), 1 ok, 1 not"), "{}", r.show());
        let (old, new) = (row(summary, OLD), row(summary, NEW));
        assert_eq!((old.0.as_str(), old.1), ("ok", 0), "{}", r.show());
        assert_eq!((new.0.as_str(), new.1), ("failed", 3), "{}", r.show());
        assert_ne!(old.2, new.2, "each version has its own environment");
        assert_gone(&old.2);
        assert_gone(&new.2);
    });
}

#[test]
fn the_first_failing_version_in_list_order_gives_the_code() {
    require_images();
    // Both fail: 26.1.5 with 3, then 20.10.24 with 4; 26.1.5 is listed first.
    let both_fail = "sh -c 'case $(docker version --format {{.Server.Version}}) in 20.*) exit 4;; *) exit 3;; esac'";
    let list = format!("{NEW},{OLD}");
    let r = didx(&["--sv", &list, "--clean", "anycase", both_fail]);
    with_matrix_cleanup(r, |r| {
        assert_eq!(r.code, 3, "{}", r.show());
        let (old, new) = (row(&r.stderr, OLD), row(&r.stderr, NEW));
        assert_eq!((new.0.as_str(), new.1, old.0.as_str(), old.1), ("failed", 3, "failed", 4), "{}", r.show());
        assert_gone(&old.2);
        assert_gone(&new.2);
    });
}

#[test]
fn json_summary_on_stdout_and_jobs_1_runs_one_at_a_time() {
    require_images();
    let list = format!("{OLD},{NEW}");
    let r = didx(&["--sv", &list, "--cv", &list, "--jobs", "1", "--json", "--clean", "anycase", SERVER_VERSION, ONLY_20]);
    with_matrix_cleanup(r, |r| {
        assert_eq!(r.code, 3, "{}", r.show());
        // stdout is the summary alone; the commands' output went to stderr, prefixed.
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.show()));
        let rows = v.as_array().unwrap();
        assert_eq!(rows.len(), 2, "{}", r.show());
        for (row, (sv, result, code)) in rows.iter().zip([(OLD, "ok", 0), (NEW, "failed", 3)]) {
            assert_eq!(row["server_version"], sv, "{row}");
            assert_eq!(row["client_version"], sv, "{row}");
            assert_eq!(row["result"], result, "{row}");
            assert_eq!(row["exit_code"], code, "{row}");
            assert!(row["duration_ms"].as_u64().unwrap() > 0, "{row}");
            assert_gone(row["env_id"].as_str().unwrap());
        }
        assert!(r.stderr.contains(&format!("[{NEW}] {NEW}")), "command output on stderr: {}", r.show());
        // One at a time: every line of the second version comes after the first's last.
        let lines: Vec<&str> = r.stderr.lines().collect();
        let last_old = lines.iter().rposition(|l| l.starts_with(&format!("[{OLD}] "))).unwrap();
        let first_new = lines.iter().position(|l| l.starts_with(&format!("[{NEW}] "))).unwrap();
        assert!(last_old < first_new, "--jobs 1 overlapped the versions: {}", r.show());
    });
}

#[test]
fn a_single_version_is_a_plain_run() {
    require_images();
    let r = didx(&["--sv", NEW, "--clean", "anycase", SERVER_VERSION]);
    with_cleanup(r, |r| {
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stdout.starts_with(NEW) && !r.stdout.contains('['), "no prefix: {}", r.show());
        assert!(!r.stderr.contains("matrix") && r.stderr.lines().all(|l| !l.starts_with('[')), "no summary: {}", r.show());
        assert!(r.stderr.contains(&format!("using didx/dind:{NEW}")), "{}", r.show());
        assert_gone(&r.env_id().unwrap());
    });
}

#[test]
fn bad_lists_are_usage_errors_before_anything_starts() {
    let list = format!("{OLD},{NEW}");
    for args in [
        vec!["--sv", "20.10.24,bad_one", "true"],
        vec!["--sv", "20.10.24,", "true"],
        vec!["--sv", "20.10.24,20.10.24", "true"],
        vec!["--sv", &list, "--cv", "1,2,3", "true"],
        vec!["--sv", &list, "--jobs", "0", "true"],
        vec!["--sv", &list, "--pool", "true"],
        vec!["--sv", &list, "--cp", "-:/x", "true"],
        vec!["--sv", &list, "--publish", "8080:80", "true"],
        vec!["--sv", &list, "--cp", "./no-such-file-didx:/x", "true"],
    ] {
        let mut all = vec!["--clean", "anycase"];
        all.extend(args);
        let r = didx(&all);
        assert_eq!(r.code, 2, "{all:?}: {}", r.show());
        assert!(r.env_id().is_none() && !r.stderr.contains("dind_"), "{all:?} started something: {}", r.show());
        assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.show());
    }
}

#[test]
fn the_trixie_engine_works_in_both_isolations() {
    require_images();
    // An inner docker 26 runs --privileged containers in the caps profile even where the host
    // engine refuses --privileged (an inner 20.10 fails them there; see check_isolations_with).
    check_isolations_with(&["--sv", NEW], "matrix-trixie", Some(true));
}

#[test]
fn a_signal_cancels_every_version_and_each_cleans_up() {
    require_images();
    let list = format!("{OLD},{NEW}");
    // --jobs 1: the first version is running `sleep 60` when SIGINT comes; the second never starts.
    let mut child = didx_cmd(&["--sv", &list, "--jobs", "1", "--clean", "anycase", "sleep 60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut err, &mut line).unwrap() > 0, "ended early: {seen}");
        seen.push_str(&line);
        if line.contains("[1/1] sleep 60") {
            break;
        }
    }
    // SAFETY: a plain kill(2) of the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::io::Read::read_to_string(&mut err, &mut seen).unwrap();
    let code = child.wait().unwrap().code();
    let r = Run { code: code.unwrap_or(-1), stdout: String::new(), stderr: seen };
    with_matrix_cleanup(r, |r| {
        assert_eq!(r.code, 130, "{}", r.show());
        assert!(r.stderr.contains(&format!("[{OLD}] didx: interrupted by SIGINT; cleaning up as a failure")), "{}", r.show());
        assert!(r.stderr.contains(&format!("[{NEW}] didx: not started: the matrix was interrupted by SIGINT")), "{}", r.show());
        let (old, new) = (row(&r.stderr, OLD), row(&r.stderr, NEW));
        assert_eq!((old.0.as_str(), old.1, new.0.as_str(), new.1), ("error", 130, "error", 130), "{}", r.show());
        assert_eq!(new.2, "-", "{}", r.show());
        assert_gone(&old.2);
    });
}
