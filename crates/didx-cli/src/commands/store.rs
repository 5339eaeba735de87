//! `didx store`, `didx store rm [IMAGE…]`, `didx store prune`: the image stores (`--store`).

use didx::store::{Removed, StoreEvent};
use didx::{Cancel, Error};

use crate::cli::StoreCmd;
use crate::engine::connect;
use crate::events::say_store_event;
use crate::listing;
use crate::output::say;
use crate::signals::{Signals, cancelled_by_signal};

/// What `didx store …` asks for.
pub enum StoreJob {
    /// List the stores (as JSON with `--json`).
    List(bool),
    /// Remove these images from every store (none: every store).
    Rm(Vec<String>),
    /// Remove the stored images the host engine no longer has.
    Prune,
}

impl StoreJob {
    /// Validate `didx store [CMD] [--json]`: the store's name prefix must be readable first.
    pub fn of(cmd: Option<StoreCmd>, json: bool) -> anyhow::Result<StoreJob> {
        didx::store::prefix()?;
        if json && let Some(cmd) = &cmd {
            let verb = match cmd {
                StoreCmd::Rm { .. } => "didx store rm",
                StoreCmd::Prune => "didx store prune",
            };
            return Err(listing::json_alone(verb, "didx store --json"));
        }
        Ok(match cmd {
            None => StoreJob::List(json),
            Some(StoreCmd::Rm { images }) => StoreJob::Rm(images),
            Some(StoreCmd::Prune) => StoreJob::Prune,
        })
    }
}

/// Run `cmd`; a signal during a removal cancels it (the exit code is the signal's).
pub async fn store(host: Option<&str>, cmd: StoreJob) -> anyhow::Result<u8> {
    let engine = connect(host).await?;
    let cancel = Cancel::new();
    let on = |e: StoreEvent<'_>| say_store_event(&e);
    let removed = match cmd {
        StoreJob::List(json) => return listing::stores(&engine, json).await,
        StoreJob::Rm(images) => {
            let mut signals = Signals::install()?;
            match cancelled_by_signal(didx::store::remove(&engine, &images, &cancel, &on), &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => return Ok(sig.code()),
                (r, _) => r?,
            }
        }
        StoreJob::Prune => {
            let mut signals = Signals::install()?;
            match cancelled_by_signal(didx::store::prune(&engine, &cancel, &on), &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => return Ok(sig.code()),
                (r, _) => r?,
            }
        }
    };
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    for r in &removed {
        match r {
            Removed::Store { store, kib } => say(format!("removed the image store {store} ({:.1} MB)", mb(*kib))),
            Removed::Images { store, images, kib: (before, after) } => {
                say(format!("removed {} from the image store {store}: {:.1} MB -> {:.1} MB", images.join(", "), mb(*before), mb(*after)))
            }
            _ => {}
        }
    }
    if removed.is_empty() {
        say("nothing to remove");
    }
    Ok(0)
}
