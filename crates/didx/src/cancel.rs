//! Cancellation: one token a caller (the CLI on a signal, a test on a timeout) sets, and every
//! long operation of the library notices — between steps, while waiting, and while streaming.

use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// A cancellation token. Clones share one state: cancelling any clone cancels all.
///
/// Operations that take one ([`SandboxBuilder::start_with`], [`Session::run`], [`pool::up`])
/// wind down when it is cancelled: a start removes what it created and returns
/// [`Error::Cancelled`]; a session cleans up as after a failure and reports it.
///
/// ```
/// let cancel = didx::Cancel::new();
/// let other = cancel.clone();
/// other.cancel();
/// assert!(cancel.is_cancelled());
/// ```
///
/// [`SandboxBuilder::start_with`]: crate::SandboxBuilder::start_with
/// [`Session::run`]: crate::session::Session::run
/// [`pool::up`]: crate::pool::up
#[derive(Debug, Clone, Default)]
pub struct Cancel(CancellationToken);

impl Cancel {
    /// A token not cancelled yet.
    pub fn new() -> Cancel {
        Cancel::default()
    }
    /// Request cancellation.
    pub fn cancel(&self) {
        self.0.cancel()
    }
    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
    /// Completes once cancellation is requested (at once if it already was).
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }
    pub(crate) fn check(&self) -> Result<()> {
        if self.is_cancelled() { Err(Error::Cancelled) } else { Ok(()) }
    }
}
