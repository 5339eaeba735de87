//! The CLI as a good citizen: completion scripts and the man page from the clap definitions,
//! `--json` on the listings, and no colour escapes under NO_COLOR or off a terminal.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

/// Whether `program` can be run (found on PATH).
fn installed(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

/// Said on stderr so a skipped check is seen in the test output, not silently passed (written
/// to the stream itself: the test harness captures only `eprintln!`).
fn skip_loudly(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {why}");
}

#[test]
fn completions_for_each_shell_name_the_verbs_and_options_and_parse() {
    let dir = std::env::temp_dir().join(format!("didx-test-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (shell, check) in [("bash", ["bash", "-n"]), ("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])] {
        // No engine needed: a host that does not exist changes nothing. (-H after the verb: a
        // verb is a verb only as the first argument.)
        let r = didx(&["completions", shell, "-H", "unix:///nonexistent/didx.sock"]);
        assert_eq!(r.code, 0, "{shell}: {}", r.show());
        assert!(r.stderr.is_empty(), "{shell}: {}", r.show());
        for word in ["didx", "pool", "completions", "man", "clean", "json", "storage-driver", "cv-env"] {
            assert!(r.stdout.contains(word), "{shell} script lacks {word}");
        }
        if !installed(check[0]) {
            skip_loudly(&format!("{shell} completion syntax check"), &format!("{} is not installed", check[0]));
            continue;
        }
        let file = dir.join(format!("didx.{shell}"));
        std::fs::write(&file, &r.stdout).unwrap();
        let o = Command::new(check[0]).arg(check[1]).arg(&file).output().unwrap();
        assert!(o.status.success(), "{shell} rejects its script: {}", String::from_utf8_lossy(&o.stderr));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_man_page_is_roff_and_documents_the_options() {
    let r = didx(&["man", "-H", "unix:///nonexistent/didx.sock"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stdout.starts_with('.'), "not roff: {}", &r.stdout[..80.min(r.stdout.len())]);
    assert!(r.stdout.lines().any(|l| l.starts_with(".TH didx 1")), "no .TH line");
    for word in ["\\-\\-clean", "\\-\\-json", "\\-\\-pool", "completions", "Exit codes"] {
        assert!(r.stdout.contains(word), "man page lacks {word}");
    }
}

#[test]
fn a_bad_shell_or_a_misplaced_json_is_a_one_line_usage_error() {
    let cases: [&[&str]; 8] = [
        &["completions", "powershell"],
        &["--json"],
        &["--clean", "anycase", "--json", "version"],
        &["--clean", "all", "--json"],
        &["pool", "up", "1", "--json"],
        &["pool", "--json", "up", "1"],
        &["pool", "--json", "down"],
        &["store", "--json", "prune"],
    ];
    for args in cases {
        let r = didx(args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.show());
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.show());
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.show());
        assert!(r.env_id().is_none(), "{args:?} started something: {}", r.show());
    }
}

#[test]
fn the_engine_address_goes_anywhere_on_the_line_even_before_a_verb_with_subcommands() {
    let at = "unix:///nonexistent/didx.sock";
    let cases: [&[&str]; 6] = [
        &["-H", at, "pool", "up", "1"],
        &["pool", "-H", at, "up", "1"],
        &["pool", "up", "1", "-H", at],
        &["-H", at, "pool", "down"],
        &["-H", at, "store", "prune"],
        &["store", "-H", at, "rm", "x"],
    ];
    for args in cases {
        let r = didx(args);
        // Not a usage error: the address was taken, and the engine there is not.
        assert_ne!(r.code, 2, "{args:?}: {}", r.show());
        assert!(r.stderr.contains("cannot reach the Docker engine at unix:///nonexistent/didx.sock"), "{args:?}: {}", r.show());
    }
}

#[test]
fn clean_rpt_json_lists_an_environment_with_the_documented_keys() {
    let run = didx(&["--clean", "none", "true"]);
    with_cleanup(run, |run| {
        assert_eq!(run.code, 0, "{}", run.show());
        let id = run.env_id().expect("an environment id");
        let r = didx(&["--clean", "rpt", "--json"]);
        assert_eq!(r.code, 0, "{}", r.show());
        assert!(r.stderr.contains("environment(s)"), "the count line stays on stderr: {}", r.show());
        let all: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout));
        let envs = all.as_array().expect("an array");
        let env = envs.iter().find(|e| e["id"] == id.as_str()).unwrap_or_else(|| panic!("{id} not listed: {}", r.stdout));
        let keys: Vec<&str> = env.as_object().unwrap().keys().map(String::as_str).collect();
        for k in ["id", "created", "age_seconds", "pool", "certs_expire", "members"] {
            assert!(keys.contains(&k), "no {k} in {env}");
        }
        assert!(env["created"].is_u64() && env["age_seconds"].is_u64() && env["certs_expire"].is_u64(), "{env}");
        assert!(env["age_seconds"].as_u64().unwrap() < 3600, "{env}");
        assert!(env["pool"].is_null(), "not a pooled environment: {env}");
        let members = env["members"].as_array().expect("members");
        let roles: Vec<&str> = members.iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["server", "client"], "{env}");
        for m in members {
            assert_eq!(m["state"], "running", "{env}");
            assert!(m["name"].as_str().unwrap().starts_with(&format!("dind_{id}_")), "{env}");
        }
        rt().block_on(async { didx::env::remove(&engine().await, &id).await.unwrap() });
        assert_gone(&id);
    });
}

#[test]
fn pool_json_is_an_array_of_entries_with_the_documented_keys() {
    // Another user of the engine may have a pool up: whatever is listed must have the keys.
    let r = didx(&["pool", "--json"]);
    assert_eq!(r.code, 0, "{}", r.show());
    assert!(r.stderr.contains("pooled environment(s)"), "the count line stays on stderr: {}", r.show());
    let all: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout));
    for e in all.as_array().expect("an array") {
        for k in ["key", "id", "size", "created", "age_seconds", "state", "server"] {
            assert!(e.get(k).is_some(), "no {k} in {e}");
        }
    }
}

#[test]
fn no_color_means_no_escapes_in_help_and_usage_errors() {
    for args in [&["--help"][..], &["--bogus"], &["completions", "powershell"]] {
        let r = from_output(didx_cmd(args).env("NO_COLOR", "1").output().unwrap());
        assert!(!r.stdout.contains("\x1b[") && !r.stderr.contains("\x1b["), "{args:?}: {}", r.show());
    }
}

/// On a terminal (`script` gives one) help is coloured, unless NO_COLOR is set; the log lines
/// too. Off a terminal (a pipe) neither is, NO_COLOR or not.
#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let escapes = |cmd: &str, no_color: &str, tty: bool| -> bool {
        let line = format!("DIDX_CACHE_DIR={} {cmd}", cache_dir());
        let o = if tty {
            Command::new("script").args(["-qec", &line, "/dev/null"]).env("NO_COLOR", no_color).output().unwrap()
        } else {
            Command::new("sh").args(["-c", &format!("{line} 2>&1 | cat")]).env("NO_COLOR", no_color).output().unwrap()
        };
        String::from_utf8_lossy(&o.stdout).contains("\x1b[")
    };
    let help = format!("{BIN} --help");
    // Debug logging of the engine client: log lines on stderr.
    let logs = format!("DIDX_LOG=debug {BIN} --clean rpt");
    for cmd in [&help, &logs] {
        assert!(!escapes(cmd, "", false), "escapes into a pipe: {cmd}");
        assert!(!escapes(cmd, "1", false), "escapes into a pipe: {cmd}");
    }
    if !installed("script") {
        skip_loudly("colour on a terminal", "script (util-linux) is not installed");
        return;
    }
    for cmd in [&help, &logs] {
        assert!(escapes(cmd, "", true), "no colour on a terminal (the check would prove nothing): {cmd}");
        assert!(!escapes(cmd, "1", true), "escapes with NO_COLOR=1: {cmd}");
    }
}
