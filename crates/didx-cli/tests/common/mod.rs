//! Helpers for the integration tests: run the didx binary, find the environment it made, and
//! check that the engine holds nothing of it afterwards.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use didx::engine::Engine;
use didx::labels;

pub const BIN: &str = env!("CARGO_BIN_EXE_didx");

/// A cache dir shared by the tests of one binary, so only the first run on this engine pays
/// for the privileged→caps discovery (the fallback test uses its own).
pub fn cache_dir() -> String {
    let d = std::env::temp_dir().join("didx-test-cache");
    std::fs::create_dir_all(&d).unwrap();
    d.display().to_string()
}

pub fn didx_cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("DIDX_CACHE_DIR", cache_dir()).env_remove("DIDX_SERVER_IMAGE").env_remove("DIDX_CLIENT_IMAGE").stdin(Stdio::null());
    c
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The environment id didx reported (from the server's name), if it started one.
    pub fn env_id(&self) -> Option<String> {
        env_id_in(&self.stderr)
    }
    pub fn show(&self) -> String {
        format!("exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

pub fn env_id_in(text: &str) -> Option<String> {
    let i = text.find("dind_")?;
    let rest = &text[i + 5..];
    let id: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
    (rest[id.len()..].starts_with("_server_") || rest[id.len()..].starts_with("_client_")).then_some(id)
}

pub fn from_output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn didx(args: &[&str]) -> Run {
    from_output(didx_cmd(args).output().expect("run didx"))
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

pub async fn engine() -> Engine {
    Engine::connect(None).await.expect("engine")
}

/// Everything labelled with environment `id`: container, volume and network names.
pub async fn leftovers(id: Option<&str>) -> Vec<String> {
    let e = engine().await;
    let mut out: Vec<String> =
        e.containers(labels::filter(id)).await.unwrap().into_iter().map(|c| format!("container {:?}", c.names)).collect();
    out.extend(e.volumes(labels::filter(id)).await.unwrap().into_iter().map(|v| format!("volume {v}")));
    out.extend(e.networks(labels::filter(id)).await.unwrap().into_iter().map(|n| format!("network {n}")));
    out
}

/// Assert nothing of environment `id` is left on the engine.
pub fn assert_gone(id: &str) {
    let left = rt().block_on(leftovers(Some(id)));
    assert!(left.is_empty(), "environment {id} left: {left:?}");
}

/// Assert environment `id` is still there (both containers running), then remove it and
/// assert it is gone.
pub fn assert_running_then_remove(id: &str) {
    rt().block_on(async {
        let e = engine().await;
        let cs = e.containers(labels::filter(Some(id))).await.unwrap();
        assert_eq!(cs.len(), 2, "expected server and client of {id}");
        assert!(cs.iter().all(|c| c.state.map(|s| s.to_string()) == Some("running".into())), "{cs:?}");
        didx::env::remove(&e, id).await.unwrap();
    });
    assert_gone(id);
}

/// Runs `f`, then removes whatever environment the run reported, so a failing assertion does
/// not leak; returns the run.
pub fn with_cleanup(run: Run, f: impl FnOnce(&Run)) {
    let id = run.env_id();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&run)));
    if let (Err(_), Some(id)) = (&result, &id) {
        rt().block_on(async { didx::env::remove(&engine().await, id).await.ok() });
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

/// An environment spec as the binary's defaults make it on this engine (offline image), plus
/// `dockerd_opts`.
pub async fn spec(e: &Engine, dockerd_opts: Vec<String>) -> didx::env::EnvSpec {
    let info = e.info().await.unwrap();
    didx::env::EnvSpec {
        id: didx::env::EnvId::generate(),
        sv: didx::spec::Version::parse("--sv", "latest").unwrap(),
        cv: didx::spec::Version::parse("--cv", "latest").unwrap(),
        server_image: "didx/dind:local".into(),
        client_image: "didx/dind:local".into(),
        storage_driver: info.driver.unwrap_or_default(),
        dockerd_opts,
        isolation: didx::spec::IsolationMode::Auto,
        engine_id: info.id.unwrap_or_default(),
        ready_timeout: std::time::Duration::from_secs(60),
        volumes: vec![],
        lease: false,
    }
}
