//! `didx pool` (list), `didx pool up N`, `didx pool down`: the warm pool of ready environments.

use std::time::Duration;

use didx::session::{Event, StartEvent};
use didx::spec::parse_duration;
use didx::{Cancel, Error, SandboxOptions};

use crate::cli::{EventFormat, PoolCmd};
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
            Some(PoolCmd::Down { events }) => {
                enable_events(events);
                PoolJob::Down
            }
            Some(PoolCmd::Up { n, idle_timeout, load, events, env }) => {
                enable_events(events);
                didx::pool::check_size(n)?;
                let idle = match idle_timeout.as_str() {
                    "0" => None,
                    d => Some(parse_duration("--idle-timeout value", d)?),
                };
                let b = load.iter().fold(builder(&env)?, |b, l| b.load(l));
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
            for (id, why) in &r.left {
                say(format!("left pooled environment {id}: {why}"));
            }
            crate::event_json::emit_fields(
                "pool_down",
                serde_json::json!({
                    "removed": r.removed,
                    "left": r.left.iter().map(|(id, why)| serde_json::json!({"env": id, "why": why})).collect::<Vec<_>>(),
                }),
            );
            say(format!(
                "removed {} pooled environment(s){}",
                r.removed.len(),
                if r.left.is_empty() { String::new() } else { format!(", left {}", r.left.len()) }
            ));
            Ok(0)
        }
        PoolJob::List => listing::pool(&engine).await,
    }
}
