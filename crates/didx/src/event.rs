//! What a session, a sandbox's start and the pool report as they go: one [`Event`] type every
//! layer above the environment may use (a leaf: it names lower layers' events only).

use crate::env::Event as StartEvent;
use crate::error::Error;
use crate::images::Resolved;
use crate::ops::load::{LoadEvent, LoadReport};
use crate::ops::run::StepEvent;

/// Progress of a session (and of [`SandboxBuilder::start_with`]), in the order it happens.
///
/// [`SandboxBuilder::start_with`]: crate::SandboxBuilder::start_with
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Images were resolved with a fallback to the offline image or a failed pull.
    Images {
        /// What was chosen and why.
        resolved: &'a Resolved,
    },
    /// The images and the engine's facts are known; starting comes next.
    Resolved,
    /// An environment is about to be started (or, with `pooled`, claimed): the names a
    /// fresh start creates, so a caller can say what is left if it must give up on it.
    Starting {
        /// The environment id a fresh start uses.
        id: &'a str,
        /// Its server and client names.
        names: &'a [String; 2],
        /// True when a pooled environment is tried first.
        pooled: bool,
    },
    /// No pooled environment matched: a fresh one starts instead.
    PoolEmpty,
    /// A pooled environment was claimed: what tops the pool up again (also in the
    /// [`Report`](crate::session::Report)), said at once so a caller can start the refill while the run goes on.
    Claimed {
        /// The claimed environment's id.
        id: &'a str,
        /// The refill.
        refill: &'a crate::env::pool::Refill,
    },
    /// The environment's own start events.
    Start(StartEvent<'a>),
    /// A sandbox runs on a cluster ([`Session::run_on_cluster`](crate::session::Session::run_on_cluster)):
    /// started, or `claimed` from the pool there (whose refill then runs in this process; the
    /// session waits for it at its end).
    OnCluster {
        /// The sandbox's id (its Job is `didx-<id>`).
        id: &'a str,
        /// The namespace.
        namespace: &'a str,
        /// True when it was claimed from the pool on the cluster.
        claimed: bool,
    },
    /// The environment is ready and publishes these ports (`--publish`), as bound: the real
    /// host port where 0 was asked for. Said only when ports were asked for.
    Published {
        /// The ports.
        ports: &'a [crate::spec::Published],
    },
    /// A host tree entry was skipped (e.g. a socket).
    CopyWarning {
        /// What was skipped and why.
        warning: &'a str,
    },
    /// Every `copy` source is in the client.
    Copied {
        /// How many sources.
        sources: usize,
    },
    /// The image store's decisions and progress (`--store`).
    Store(crate::store::StoreEvent<'a>),
    /// Progress of seeding the inner engine.
    Load(LoadEvent<'a>),
    /// Seeding is done.
    Loaded {
        /// What was loaded or skipped.
        report: &'a LoadReport,
    },
    /// A command starts or ends.
    Step(StepEvent<'a>),
    /// The cancel token was noticed in `phase`: clean-up follows, as after a failure.
    Interrupted {
        /// Where the session was.
        phase: Phase,
    },
    /// didx itself failed after the start (a copy, a load, the engine going away): clean-up
    /// follows, as after a failure.
    Failed {
        /// What failed.
        error: &'a Error,
    },
    /// A `--cp-out` path was copied to this machine (after the commands, whatever their
    /// outcome).
    CopiedOut {
        /// The client's path.
        from: &'a str,
        /// Where it went here.
        to: &'a std::path::Path,
    },
    /// `--save` images of the inner engine were put into the host engine.
    Saved {
        /// What the host engine says it loaded.
        images: &'a [String],
    },
    /// The commands are over (ran, failed, or were interrupted).
    CommandsDone,
    /// The environment is about to be removed.
    Removing {
        /// Its id.
        id: &'a str,
        /// Its server and client names (the server's empty with `--engine host`).
        names: &'a [String; 2],
    },
    /// The environment's leases were closed (one the pool served): it ends itself within
    /// moments, the run not waiting for it.
    Ending {
        /// Its id.
        id: &'a str,
        /// Its server and client names.
        names: &'a [String; 2],
    },
    /// The environment was removed.
    Removed {
        /// Its server and client names (the server's empty with `--engine host`).
        names: &'a [String; 2],
    },
    /// The environment stays (by policy).
    Kept {
        /// Its id.
        id: &'a str,
        /// Its server and client names (the server's empty with `--engine host`).
        names: &'a [String; 2],
        /// When its TLS certificates expire (Unix seconds), when known.
        expires: Option<u64>,
    },
}

/// Where a session was when it noticed cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Copying or loading.
    Preparing,
    /// Running the commands.
    Commands,
    /// The start had just completed.
    Started,
}
