//! The library's events that more than one verb prints (a run, a matrix's runs, `pool up`,
//! `store rm|prune`): the start sequence's, the image store's, and the image resolution's.

use didx::session::StartEvent;
use didx::store::StoreEvent;

use crate::output::say;

/// Said once when `auto` isolation falls back to the caps profile.
const ISOLATION_FALLBACK: &str = "the engine refuses --privileged (runc: unable to apply caps); using the caps profile instead (remembered for this engine; see --isolation)";

/// The messages every start prints, whoever starts.
pub fn say_start_event(e: &StartEvent<'_>) {
    match e {
        StartEvent::IsolationFallback { .. } => say(ISOLATION_FALLBACK),
        StartEvent::CapabilitiesUnknown { names } => {
            say(format!("the engine does not know {}; the caps profile goes without them", names.join(", ")))
        }
        StartEvent::EngineHost { host } => say(format!(
            "WARNING: --engine host gives the client the engine at {host} itself: whatever runs in the client has root on that \
             engine's host. Use it only for code you trust."
        )),
        StartEvent::PoolLockWait { path } => {
            say(format!("waiting for the pool lock {} (another pool up or down holds it)", path.display()))
        }
        _ => {}
    }
}

/// The image store's messages (`--store`), whoever uses it.
pub fn say_store_event(e: &StoreEvent<'_>) {
    match e {
        StoreEvent::NotUsed { reason } => say(format!("the image store is not used: {reason}; --load loads into the sandbox as without")),
        StoreEvent::Waiting { store } => say(format!("waiting for another filler of the image store {store}")),
        StoreEvent::Filling { store, images } => say(format!("putting {} into the image store {store}", images.join(", "))),
        StoreEvent::Filled { store, images, elapsed } => {
            say(format!("put {} into the image store {store} in {:.2} s", images.join(", "), elapsed.as_secs_f64()))
        }
        StoreEvent::Using { store } => say(format!("the server mounts the image store {store} (read-only)")),
        StoreEvent::Refused { store, why } => say(format!(
            "WARNING: the image store {store} no longer matches its seal ({why}): no sandbox seeds from it until --store --load fills it anew"
        )),
        _ => {}
    }
}

/// Which images stand in for the ones asked for, and pulls that failed.
pub fn say_images(resolved: &didx::image::Resolved) {
    if !resolved.fell_back.is_empty() {
        let retry = match resolved.not_retried.iter().map(|(_, ago)| ago.as_secs()).max() {
            Some(ago) => format!(
                " (a pull failed {ago} s ago; not retried for {} min, --pull retries now)",
                didx::image::PULL_RETRY_AFTER.as_secs() / 60
            ),
            None => String::new(),
        };
        // One line: the mapped images, and what stands in for them.
        let mut used: Vec<&str> = Vec::new();
        for (_, u) in &resolved.fell_back {
            if !used.contains(&u.as_str()) {
                used.push(u);
            }
        }
        let mapped: Vec<&str> = resolved.fell_back.iter().map(|(m, _)| m.as_str()).collect();
        say(format!("{} not on the engine and cannot be pulled; using {}{retry}", mapped.join(" and "), used.join(" and ")));
    }
    for s in &resolved.stale {
        say(format!("warning: pull of {s} failed; using the copy on the engine"));
    }
}
