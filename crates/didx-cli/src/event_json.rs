//! `--events json`: every library event of a run as one JSON object per line on stderr, for
//! programs (tests, benchmarks, CI scripts) that would otherwise read the prose. Each line is
//! `{"didx_event": KIND, "ms": MS, ...fields}`: `ms` since didx started; in a matrix, `"sv"`
//! names the version whose run said it. The prose lines stay; the event lines come first.
//! The kinds and their fields are documented in docs/src/reference/json.md.

use std::sync::atomic::{AtomicBool, Ordering};

use didx::session::{Event, LoadEvent, Phase, StartEvent, StepEvent};
use didx::store::StoreEvent;
use serde_json::{Value, json};

use crate::output::{PREFIX, STARTED, err};

static ON: AtomicBool = AtomicBool::new(false);

/// Turn the event lines on (`--events json`).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Write `e` as a JSON line, when the lines are on.
pub fn emit(e: &Event<'_>) {
    if let Some((kind, v)) = to_json(e) {
        emit_fields(kind, v);
    }
}

/// Write an event of the command's own (not the library's: a pool's summary) as a JSON line,
/// when the lines are on.
pub fn emit_fields(kind: &str, mut v: Value) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let ms = STARTED.get().map(|t| t.elapsed().as_millis() as u64).unwrap_or(0);
    v["ms"] = json!(ms);
    if let Ok(p) = PREFIX.try_with(Clone::clone) {
        let sv = p.trim().trim_start_matches('[').trim_end_matches(']').to_string();
        if !sv.is_empty() {
            v["sv"] = json!(sv);
        }
    }
    err(&line(kind, &v));
}

/// The event as its line: `didx_event` first (so a reader can tell an event line by its
/// start), then the other fields (an object).
fn line(kind: &str, fields: &Value) -> String {
    let kind = json!(kind);
    let rest = fields.to_string();
    match rest.strip_prefix('{').filter(|r| *r != "}") {
        Some(fields) => format!("{{\"didx_event\":{kind},{fields}\n"),
        None => format!("{{\"didx_event\":{kind}}}\n"),
    }
}

/// The kind and fields of one event (`None` for progress ticks, which would flood the stream).
pub fn to_json(e: &Event<'_>) -> Option<(&'static str, Value)> {
    Some(match e {
        Event::Images { resolved } => (
            "images",
            json!({
                "server": resolved.server, "client": resolved.client,
                "fell_back": resolved.fell_back.iter().map(|(m, u)| json!({"wanted": m, "used": u})).collect::<Vec<_>>(),
                "stale": resolved.stale,
            }),
        ),
        Event::Resolved => ("resolved", json!({})),
        Event::Starting { id, names, pooled } => ("starting", json!({"id": id, "server": names[0], "client": names[1], "pooled": pooled})),
        Event::PoolEmpty => ("pool_empty", json!({})),
        Event::OnCluster { id, namespace, claimed } => ("on_cluster", json!({"id": id, "namespace": namespace, "claimed": claimed})),
        Event::Claimed { id, refill } => ("claimed", json!({"id": id, "pool_size": refill.size()})),
        Event::Start(s) => match s {
            StartEvent::IsolationFallback { reason } => ("isolation_fallback", json!({"reason": reason})),
            StartEvent::CapabilitiesUnknown { names } => ("capabilities_unknown", json!({"names": names})),
            StartEvent::ServerStarted { name, image, isolation } => {
                ("server_started", json!({"name": name, "image": image, "isolation": isolation}))
            }
            StartEvent::ClientStarted { name, image } => ("client_started", json!({"name": name, "image": image})),
            StartEvent::Ready { elapsed } => ("ready", json!({"elapsed_ms": elapsed.as_millis() as u64})),
            StartEvent::EngineHost { host } => ("engine_host", json!({"host": host})),
            StartEvent::PoolLockWait { path } => ("pool_lock_wait", json!({"path": path.display().to_string()})),
            _ => return None,
        },
        Event::Published { ports } => (
            "published",
            json!({"ports": ports.iter().map(|p| json!({"ip": p.ip, "host_port": p.host_port, "env_port": p.env_port, "proto": p.proto.as_str()})).collect::<Vec<_>>()}),
        ),
        Event::CopyWarning { warning } => ("copy_warning", json!({"warning": warning})),
        Event::Copied { sources } => ("copied", json!({"sources": sources})),
        Event::Saved { images } => ("saved", json!({"images": images})),
        Event::CopiedOut { from, to } => ("copied_out", json!({"from": from, "to": to.display().to_string()})),
        Event::Store(s) => match s {
            StoreEvent::NotUsed { reason } => ("store_not_used", json!({"reason": reason})),
            StoreEvent::Waiting { store } => ("store_waiting", json!({"store": store})),
            StoreEvent::Filling { store, images } => ("store_filling", json!({"store": store, "images": images})),
            StoreEvent::Filled { store, images, elapsed } => {
                ("store_filled", json!({"store": store, "images": images, "elapsed_ms": elapsed.as_millis() as u64}))
            }
            StoreEvent::Using { store } => ("store_using", json!({"store": store})),
            StoreEvent::Refused { store, why } => ("store_refused", json!({"store": store, "why": why})),
            _ => return None,
        },
        Event::Load(LoadEvent::Skipped(name)) => ("load_skipped", json!({"image": name})),
        Event::Load(_) => return None,
        Event::Loaded { report } => ("loaded", json!({"loaded": report.loaded, "skipped": report.skipped})),
        Event::Step(StepEvent::Started { index, total, display }) => {
            ("step_started", json!({"index": index, "total": total, "command": display}))
        }
        Event::Step(StepEvent::Ended { index, total, code, elapsed }) => {
            ("step_ended", json!({"index": index, "total": total, "code": code, "elapsed_ms": elapsed.as_millis() as u64}))
        }
        Event::Step(_) => return None,
        Event::Interrupted { phase } => (
            "interrupted",
            json!({"phase": match phase { Phase::Preparing => "preparing", Phase::Commands => "commands", Phase::Started => "started", _ => "other" }}),
        ),
        Event::Failed { error } => ("failed", json!({"error": error.to_string()})),
        Event::CommandsDone => ("commands_done", json!({})),
        Event::Removing { id, names } => ("removing", json!({"id": id, "server": names[0], "client": names[1]})),
        Event::Removed { names } => ("removed", json!({"server": names[0], "client": names[1]})),
        Event::Ending { id, names } => ("ending", json!({"id": id, "server": names[0], "client": names[1]})),
        Event::Kept { id, names, expires } => ("kept", json!({"id": id, "server": names[0], "client": names[1], "expires": expires})),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_line_starts_with_its_kind_and_is_one_json_object() {
        let (k, v) = to_json(&Event::Starting { id: "abc", names: &["s".into(), "c".into()], pooled: false }).unwrap();
        let l = line(k, &v);
        assert!(l.starts_with("{\"didx_event\":\"starting\","), "{l}");
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1, "{l}");
        let back: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(back["didx_event"], "starting");
        assert_eq!(back["client"], "c");
        let (k, v) = to_json(&Event::Resolved).unwrap();
        assert_eq!(line(k, &v), "{\"didx_event\":\"resolved\"}\n");
    }
}
