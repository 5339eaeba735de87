//! The signals that stop didx (SIGINT, SIGTERM, SIGHUP), installed together, and their exit
//! codes. The library knows nothing of signals: the command turns the first one into a
//! cancellation and a second one into cutting a clean-up short.

use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM};

/// Which signal arrived.
#[derive(Clone, Copy, Debug)]
pub enum Sig {
    /// Ctrl-C.
    Int,
    /// A polite stop (CI cancelling a job).
    Term,
    /// The terminal closed (or an ssh session dropped): handled as SIGTERM is.
    Hup,
}

impl Sig {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
            Sig::Hup => "SIGHUP",
        }
    }
    /// The exit code of a run it stopped.
    pub fn code(self) -> u8 {
        match self {
            Sig::Int => EXIT_SIGINT,
            Sig::Term => EXIT_SIGTERM,
            Sig::Hup => EXIT_SIGHUP,
        }
    }
}

/// The three handlers; every place that stops on a signal takes them from here.
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers.
    pub fn install() -> anyhow::Result<Signals> {
        use anyhow::Context;
        let one = |kind: SignalKind, name: &str| signal(kind).with_context(|| format!("installing a {name} handler"));
        Ok(Signals {
            int: one(SignalKind::interrupt(), "SIGINT")?,
            term: one(SignalKind::terminate(), "SIGTERM")?,
            hup: one(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal (cancel-safe: a signal that arrives while nobody waits is kept).
    pub async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Int,
            _ = self.term.recv() => Sig::Term,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
}

/// Where a run takes its signals from: its own handlers, or a matrix that installs one set
/// for all its runs and forwards each signal to every run (so a run never takes the matrix's
/// own reaction to a signal for a second signal, and a run that starts late still sees it).
pub enum Source {
    /// The run's own handlers.
    Own(Signals),
    /// Forwarded by a matrix.
    Fed(tokio::sync::broadcast::Receiver<Sig>),
}

impl Source {
    /// The next signal.
    pub async fn recv(&mut self) -> Sig {
        match self {
            Source::Own(s) => s.recv().await,
            Source::Fed(r) => loop {
                match r.recv().await {
                    Ok(sig) => return sig,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending().await,
                }
            },
        }
    }
}

/// Run `work` to its end; a signal meanwhile cancels `cancel` (so `work` winds down and
/// returns what it undid) and is returned beside the outcome.
pub async fn cancelled_by_signal<T>(work: impl Future<Output = T>, cancel: &didx::Cancel, signals: &mut Signals) -> (T, Option<Sig>) {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => (r, None),
        sig = signals.recv() => {
            cancel.cancel();
            (work.await, Some(sig))
        }
    }
}
