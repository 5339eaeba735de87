//! What an environment's start reports as it goes.

use std::time::Duration;

/// Progress of an environment's start, for the caller to report.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// `auto` isolation found `--privileged` refused and switched to the caps profile.
    IsolationFallback {
        /// The engine's refusal.
        reason: &'a str,
    },
    /// The caps profile goes without these capabilities (`CAP_` names), which the engine said
    /// it does not know (an engine older than the kernel).
    CapabilitiesUnknown {
        /// Their names, `CAP_` included.
        names: &'a [String],
    },
    /// The server container is running.
    ServerStarted {
        /// Its name.
        name: &'a str,
        /// Its image.
        image: &'a str,
        /// The isolation used.
        isolation: &'a str,
    },
    /// The client container is running.
    ClientStarted {
        /// Its name.
        name: &'a str,
        /// Its image.
        image: &'a str,
    },
    /// The inner engine answered over TLS.
    Ready {
        /// Time since start was called.
        elapsed: Duration,
    },
    /// The environment is in place (its members running; with a server, its engine
    /// answering). `held`: whether this process still holds it. A start that keeps its
    /// environment held it until now and has released it: from here it stays whatever ends
    /// this process.
    Placed {
        /// Whether this process holds the environment.
        held: bool,
    },
    /// `--engine host`: the client is about to get the engine didx uses, i.e. root on its
    /// host. Said once per environment, before anything is created.
    EngineHost {
        /// The engine's address.
        host: &'a str,
    },
    /// `pool up`/`pool down` waits for the pool lock another process holds.
    PoolLockWait {
        /// The lock file.
        path: &'a std::path::Path,
    },
}
