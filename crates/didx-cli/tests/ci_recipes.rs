//! The CI recipes of the book (docs/src/guides/ci/: a GitHub Actions workflow and a GitLab CI
//! job over the example project beside them), run here as their runners would run them: each
//! YAML file read, its shell steps run in order in a copy of the example project (the
//! checkout), with its variables, and the didx under test first on PATH. What cannot run here
//! is named and checked, not silently dropped: the `uses:` actions (checkout: the copy;
//! upload-artifact: its path must hold the report) and GitHub's "Install didx" step (this
//! build is the one installed). GitLab's `before_script` runs as written (didx is found, so it
//! installs nothing). The report must come out, the engine is left as found.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// The book's CI directory.
fn recipes() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/src/guides/ci")
}

fn read_yaml(name: &str) -> Value {
    let text = std::fs::read_to_string(recipes().join(name)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A fresh copy of the example project: what a checkout gives the job.
fn checkout(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("didx-ci-recipe-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("cp").arg("-a").arg(recipes().join("example")).arg(&dir).status().unwrap();
    assert!(status.success());
    dir
}

/// Runs `script` as the runner would (bash, stopping at the first failure) in `dir`, with
/// `vars` and this build's didx first on PATH; panics with its output when it fails.
fn step(dir: &Path, script: &str, vars: &[(String, String)]) {
    let bin = Path::new(env!("CARGO_BIN_EXE_didx")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = Command::new("bash")
        .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
        .current_dir(dir)
        .env("PATH", path)
        .envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the step failed ({}):\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The report the example's tests write: one test, passed.
fn assert_report(dir: &Path, path: &str) {
    let report = std::fs::read_to_string(dir.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(report.contains(r#"tests="1" failures="0""#) && report.contains("says hello"), "{report}");
}

#[test]
fn the_github_actions_and_gitlab_ci_recipes_run_their_steps_and_bring_the_report_out() {
    const APP: &str = "example-app:ci";
    assert!(
        rt().block_on(async { engine().await.image(APP).await.unwrap() }).is_none(),
        "{APP} is already on the engine: this test builds and removes its own"
    );
    let base = format!("didx-ci-recipe-base:{}", std::process::id());
    let _images = HostImages(vec![APP.to_string(), base.clone()]);
    rt().block_on(async { busybox_image(&engine().await, &base).await });
    let before = rt().block_on(leftovers(None));
    let cache = tempfile::tempdir().unwrap();

    // GitHub Actions: the job's env, then its steps.
    let workflow = read_yaml("github-actions.yml");
    let job = &workflow["jobs"]["docker-tests"];
    let dir = checkout("github");
    let mut vars: Vec<(String, String)> =
        job["env"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
    // A cache directory of this test's own (the recipe's /tmp/didx-cache is the runner's).
    vars.retain(|(k, _)| k != "DIDX_CACHE_DIR");
    vars.push(("DIDX_CACHE_DIR".into(), cache.path().display().to_string()));
    vars.push(("BASE".into(), base.clone()));
    let mut not_run = Vec::new();
    for s in job["steps"].as_array().expect("steps") {
        if let Some(action) = s["uses"].as_str() {
            not_run.push(action.split('@').next().unwrap().to_string());
            if action.starts_with("actions/upload-artifact") {
                assert_report(&dir, &format!("{}report.xml", s["with"]["path"].as_str().unwrap()));
            }
        } else if s["name"] == "Install didx" {
            not_run.push("Install didx".into());
        } else {
            step(&dir, s["run"].as_str().expect("a run step"), &vars);
        }
    }
    assert_eq!(not_run, ["actions/checkout", "Install didx", "actions/upload-artifact"], "the steps not run here");
    assert_report(&dir, "test-results/report.xml");
    std::fs::remove_dir_all(&dir).unwrap();
    rt().block_on(async { engine().await.remove_image(APP).await.unwrap() });

    // GitLab CI: its variables ($CI_PROJECT_DIR the checkout), before_script, script.
    let pipeline = read_yaml("gitlab-ci.yml");
    let job = &pipeline["docker-tests"];
    let dir = checkout("gitlab");
    let project = dir.display().to_string();
    let mut vars: Vec<(String, String)> = job["variables"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().replace("$CI_PROJECT_DIR", &project)))
        .collect();
    vars.push(("CI_PROJECT_DIR".into(), project.clone()));
    vars.push(("BASE".into(), base.clone()));
    for key in ["before_script", "script"] {
        for line in job[key].as_array().unwrap_or_else(|| panic!("{key}")) {
            step(&dir, line.as_str().unwrap(), &vars);
        }
    }
    for path in job["artifacts"]["paths"].as_array().unwrap() {
        assert!(dir.join(path.as_str().unwrap()).is_dir(), "artifact path {path}");
    }
    assert_report(&dir, job["artifacts"]["reports"]["junit"].as_str().unwrap());
    assert!(dir.join(".didx-cache").is_dir(), "the job's DIDX_CACHE_DIR was used");
    std::fs::remove_dir_all(&dir).unwrap();

    assert_eq!(rt().block_on(leftovers(None)), before, "the engine as found");
}
