//! `didx pool` (list), `didx pool up N`, `didx pool down`: the warm pool of ready environments.

use std::time::Duration;

use didx::session::{Event, StartEvent};
use didx::spec::parse_duration;
use didx::{Cancel, Error, SandboxOptions};

use crate::cli::{BackendArg, EventFormat, PoolCmd};
use crate::engine::connect;
use crate::events::{say_images, say_start_event, say_store_event};
use crate::exit::EXIT_DIDX;
use crate::listing;
use crate::options::builder;
use crate::output::say;
use crate::signals::{Signals, cancelled_by_signal};

/// What `didx pool …` asks for, validated.
pub enum PoolJob {
    /// List the pool.
    List,
    /// Keep N ready, each ending itself after the idle timeout (none: wait forever).
    Up(usize, Option<Duration>, Box<SandboxOptions>),
    /// Empty the pool.
    Down,
    /// Keep N ready on a cluster.
    UpKube(usize, Duration, Box<SandboxOptions>, Box<KubeTarget>),
    /// Empty the pool on a cluster.
    DownKube(Box<KubeTarget>),
}

/// The cluster and namespace a pool on Kubernetes is kept in, and how its pods are made.
pub struct KubeTarget {
    context: Option<String>,
    namespace: Option<String>,
    kube: didx::kubernetes::KubeOptions,
}

impl KubeTarget {
    async fn connect(&self) -> anyhow::Result<didx::kubernetes::Cluster> {
        Ok(didx::kubernetes::Cluster::connect(self.context.as_deref(), self.namespace.as_deref()).await?)
    }
}

impl PoolJob {
    /// Validate `didx pool [CMD] [--json]` before the engine is touched.
    pub fn of(cmd: Option<PoolCmd>, json: bool) -> anyhow::Result<PoolJob> {
        if json && let Some(cmd) = &cmd {
            let verb = match cmd {
                PoolCmd::Up { .. } => "didx pool up",
                PoolCmd::Down { .. } => "didx pool down",
            };
            return Err(listing::json_alone(verb, "didx pool --json"));
        }
        Ok(match cmd {
            None => {
                listing::choose_json(json);
                PoolJob::List
            }
            Some(PoolCmd::Down { events, backend, kube_context, namespace }) => {
                enable_events(events);
                if backend == BackendArg::Kubernetes {
                    let kube = didx::kubernetes::KubeOptions::default();
                    return Ok(PoolJob::DownKube(Box::new(KubeTarget { context: kube_context, namespace, kube })));
                }
                if let Some(option) = [("--kube-context", kube_context.is_some()), ("--namespace", namespace.is_some())]
                    .into_iter()
                    .find_map(|(o, given)| given.then_some(o))
                {
                    return Err(
                        Error::Invalid { what: "option", value: option.into(), fix: "it applies to --backend kubernetes".into() }.into()
                    );
                }
                PoolJob::Down
            }
            Some(PoolCmd::Up { n, idle_timeout, load, events, env, backend, kube_context, k8s }) => {
                enable_events(events);
                didx::pool::check_size(n)?;
                let idle = match idle_timeout.as_str() {
                    "0" => None,
                    d => Some(parse_duration("--idle-timeout value", d)?),
                };
                let b = load.iter().fold(builder(&env)?, |b, l| b.load(l));
                if backend == BackendArg::Kubernetes {
                    let Some(idle) = idle else {
                        let fix = "a pooled pod cannot wait forever on a cluster (its Job has a deadline): give a duration, e.g. 30m";
                        return Err(Error::Invalid { what: "--idle-timeout", value: "0".into(), fix: fix.into() }.into());
                    };
                    if !load.is_empty() {
                        let fix = "the image store is not available on the kubernetes backend; load images at each run (--load)";
                        return Err(Error::Invalid { what: "--load", value: load.join(","), fix: fix.into() }.into());
                    }
                    let options = b.options()?;
                    let kube = crate::commands::k8s::kube_options(&k8s)?;
                    // What a pod cannot have, refused before any cluster.
                    didx::kubernetes::render(&options, &kube)?;
                    let target = KubeTarget { context: kube_context, namespace: k8s.namespace.clone(), kube };
                    return Ok(PoolJob::UpKube(n, idle, Box::new(options), Box::new(target)));
                }
                crate::commands::run::refuse_kube_only(kube_context.is_some(), &k8s)?;
                PoolJob::Up(n, idle, Box::new(b.options()?))
            }
        })
    }
}

/// `--events json`: the event lines on.
fn enable_events(format: Option<EventFormat>) {
    if format == Some(EventFormat::Json) {
        crate::event_json::enable();
    }
}

/// Run `cmd`, saying what it did; a signal meanwhile cancels it (the exit code is the signal's).
pub async fn pool(host: Option<&str>, cmd: PoolJob) -> anyhow::Result<u8> {
    match cmd {
        PoolJob::UpKube(n, idle, options, target) => return up_kube(n, idle, &options, &target).await,
        PoolJob::DownKube(target) => return down_kube(&target).await,
        _ => {}
    }
    let engine = connect(host).await?;
    let on = |e: &Event<'_>| {
        crate::event_json::emit(e);
        match e {
            Event::Images { resolved } => say_images(resolved),
            Event::Start(StartEvent::ServerStarted { name, .. }) => say(format!("dind server named: '{name}' started for the pool")),
            Event::Start(s) => say_start_event(s),
            Event::Store(s) => say_store_event(s),
            _ => {}
        }
    };
    let cancel = Cancel::new();
    match cmd {
        PoolJob::Up(n, idle, options) => {
            let mut signals = Signals::install()?;
            let up = didx::pool::up(&engine, &options, n, idle, &cancel, &on);
            let r = match cancelled_by_signal(up, &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => {
                    say("interrupted; removed the environments being started (ready ones stay in the pool)");
                    return Ok(sig.code());
                }
                (r, _) => r?,
            };
            for (id, why) in &r.removed {
                say(format!("removed pooled environment {id}: {why}"));
            }
            for id in &r.started {
                crate::event_json::emit_fields("pool_ready", serde_json::json!({ "env": id }));
                say(format!("pooled environment {id} ready"));
            }
            let failed: Vec<String> = r.failed.iter().map(ToString::to_string).collect();
            crate::event_json::emit_fields(
                "pool_up",
                serde_json::json!({
                    "key": r.key.to_string(), "existing": r.existing, "started": r.started, "starting": r.starting,
                    "removed": r.removed.iter().map(|(id, why)| serde_json::json!({"env": id, "why": why})).collect::<Vec<_>>(),
                    "failed": failed,
                }),
            );
            for f in &r.failed {
                say(format!("error: a pooled environment failed to start: {f}"));
            }
            say(format!(
                "pool {}: {} ready ({} already, {} started now{}{})",
                r.key,
                r.existing + r.started.len(),
                r.existing,
                r.started.len(),
                if r.starting == 0 { String::new() } else { format!(", {} starting by another filler", r.starting) },
                if r.failed.is_empty() { String::new() } else { format!(", {} failed", r.failed.len()) }
            ));
            Ok(if r.failed.is_empty() { 0 } else { EXIT_DIDX })
        }
        PoolJob::Down => {
            let mut signals = Signals::install()?;
            let down = didx::pool::down(&engine, &cancel, &on);
            let r = match cancelled_by_signal(down, &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => {
                    say("interrupted while waiting for the pool lock; nothing removed");
                    return Ok(sig.code());
                }
                (r, _) => r?,
            };
            say_down(&r.removed, &r.left, ("environment", "environment(s)"), "");
            Ok(0)
        }
        PoolJob::List => listing::pool(&engine).await,
        PoolJob::UpKube(..) | PoolJob::DownKube(_) => unreachable!("served above"),
    }
}

/// `didx pool up N --backend kubernetes`: held by this process until each is ready, then
/// released into the pool. A signal ends the process: those still starting end with it.
async fn up_kube(n: usize, idle: Duration, options: &SandboxOptions, target: &KubeTarget) -> anyhow::Result<u8> {
    let cluster = target.connect().await?;
    let r = didx::kubernetes::pool_up(&cluster, options, &target.kube, n, idle).await?;
    for id in &r.started {
        crate::event_json::emit_fields("pool_ready", serde_json::json!({ "env": id }));
        say(format!("pooled sandbox {id} ready (Job didx-{id} in namespace {})", cluster.namespace()));
    }
    let failed: Vec<String> = r.failed.iter().map(ToString::to_string).collect();
    crate::event_json::emit_fields(
        "pool_up",
        serde_json::json!({"key": r.key, "existing": r.existing, "started": r.started, "starting": 0, "removed": [], "failed": failed}),
    );
    for f in &failed {
        say(format!("error: a pooled sandbox failed to start: {f}"));
    }
    say(format!(
        "pool {} in namespace {}: {} ready or starting ({} already, {} started now{})",
        r.key,
        cluster.namespace(),
        r.existing + r.started.len(),
        r.existing,
        r.started.len(),
        if failed.is_empty() { String::new() } else { format!(", {} failed", failed.len()) }
    ));
    Ok(if failed.is_empty() { 0 } else { EXIT_DIDX })
}

/// `didx pool down --backend kubernetes`.
async fn down_kube(target: &KubeTarget) -> anyhow::Result<u8> {
    let cluster = target.connect().await?;
    let r = didx::kubernetes::pool_down(&cluster).await?;
    say_down(&r.removed, &r.left, ("sandbox", "sandbox(es)"), &format!(" in namespace {}", cluster.namespace()));
    Ok(0)
}

/// What a `pool down` did: each one left and why, the `pool_down` event, the count line.
fn say_down(removed: &[String], left: &[(String, String)], (noun, nouns): (&str, &str), place: &str) {
    for (id, why) in left {
        say(format!("left pooled {noun} {id}: {why}"));
    }
    crate::event_json::emit_fields(
        "pool_down",
        serde_json::json!({
            "removed": removed,
            "left": left.iter().map(|(id, why)| serde_json::json!({"env": id, "why": why})).collect::<Vec<_>>(),
        }),
    );
    let left = if left.is_empty() { String::new() } else { format!(", left {}", left.len()) };
    say(format!("removed {} pooled {nouns}{place}{left}", removed.len()));
}
