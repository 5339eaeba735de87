//! Waiting on a container ([`wait_for`], [`wait_for_all`]): one deadline, a poll every
//! [`POLL_INTERVAL`] of its state and the condition's probe, the error that says what was
//! last seen.

use std::time::Duration;

use bollard::Docker;
use tokio::time::Instant;

use super::condition::WaitFor;
use super::state::{GONE, POLL_INTERVAL, Seen, Verdict, exit_code, exited, failed, health, is_running, over, status, timed_out};
use super::{logs, probe};
use crate::engine::Engine;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// Wait until `container` (a name or id) on `docker`'s engine meets `what`, for `timeout` at
/// most, polling every [`POLL_INTERVAL`]. Fails with [`Error::WaitTimedOut`] (what was last
/// seen), [`Error::ContainerExited`] or [`Error::WaitFailed`] (at once), or the engine call
/// that failed. See the [module](super) doc for how each condition is probed.
///
/// ```no_run
/// # async fn demo(docker: &didx::bollard::Docker) -> didx::Result<()> {
/// use std::time::Duration;
/// use didx::wait::{WaitFor, wait_for};
///
/// wait_for(docker, "db", &WaitFor::log("ready to accept connections"), Duration::from_secs(30)).await?;
/// wait_for(docker, "migrations", &WaitFor::exit(0), Duration::from_secs(120)).await?;
/// # Ok(()) }
/// ```
pub async fn wait_for(docker: &Docker, container: &str, what: &WaitFor, timeout: Duration) -> Result<()> {
    wait_for_all(docker, container, std::slice::from_ref(what), timeout).await
}

/// Wait until `container` meets each of `all`, one after the other, all within `timeout` (one
/// deadline for the lot, as a container's start has). Fails as [`wait_for`] does, on the first
/// that is not met.
///
/// ```no_run
/// # async fn demo(docker: &didx::bollard::Docker) -> didx::Result<()> {
/// use didx::wait::{WaitFor, wait_for_all};
///
/// let ready = [WaitFor::port(5432), WaitFor::log_times("ready to accept connections", 2)];
/// wait_for_all(docker, "db", &ready, std::time::Duration::from_secs(60)).await?;
/// # Ok(()) }
/// ```
pub async fn wait_for_all(docker: &Docker, container: &str, all: &[WaitFor], timeout: Duration) -> Result<()> {
    all.iter().try_for_each(WaitFor::check)?;
    let engine = over(docker);
    let deadline = Instant::now() + timeout;
    for what in all {
        tracing::debug!(container, condition = %what, "waiting");
        let mut seen = Seen::default();
        let waited = tokio::time::timeout_at(deadline, until(&engine, container, what, &mut seen)).await;
        match waited {
            Ok(met) => met?,
            Err(_) => return Err(timed_out(&engine, container, what, timeout, seen).await),
        }
        tracing::debug!(container, condition = %what, "met");
    }
    Ok(())
}

/// What is polled for: a [`WaitFor`] but a log line (which is followed, not polled).
enum Polled<'a> {
    Exit(i64),
    Healthy,
    Duration(Duration),
    Port(u16),
    Http { port: u16, path: &'a str, status: u16 },
}

/// Wait for `what` with no deadline of its own (the caller's bounds it), noting in `seen`
/// what each poll saw.
async fn until(engine: &Engine, container: &str, what: &WaitFor, seen: &mut Seen) -> Result<()> {
    let polled = match what {
        WaitFor::Log { text, stream, times } => return logs::wait_log(engine, container, what, text, *stream, *times, seen).await,
        WaitFor::Exit { code } => Polled::Exit(*code),
        WaitFor::Healthy => Polled::Healthy,
        WaitFor::Duration { length } => Polled::Duration(*length),
        WaitFor::Port { port } => Polled::Port(*port),
        WaitFor::Http { port, path, status } => Polled::Http { port: *port, path, status: *status },
    };
    let started = Instant::now();
    let mut client = None;
    loop {
        let Some(inspect) = engine.inspect_if_exists(container).await? else {
            return Err(failed(container, what, GONE));
        };
        let verdict = match (exit_code(&inspect), &polled) {
            (Some(code), Polled::Exit(want)) if code == *want => Verdict::Met,
            (Some(code), _) => return Err(exited(engine, container, what, code).await),
            (None, Polled::Exit(_)) => Verdict::Pending(format!("the container is {}", status(&inspect))),
            (None, Polled::Healthy) => health(&inspect),
            (None, Polled::Duration(length)) if started.elapsed() >= *length => Verdict::Met,
            (None, Polled::Duration(length)) => Verdict::Pending(format!(
                "the container is {}; {:.1} s of {:.1} s passed",
                status(&inspect),
                started.elapsed().as_secs_f32(),
                length.as_secs_f32()
            )),
            (None, _) if !is_running(&inspect) => Verdict::Pending(format!("the container is {}", status(&inspect))),
            (None, Polled::Port(port)) => probe::port(engine, container, *port).await?,
            (None, Polled::Http { port, path, status }) => probe::http(engine, container, *port, path, *status, &mut client).await?,
        };
        match verdict {
            Verdict::Met => return Ok(()),
            Verdict::Pending(note) => seen.note = note,
            Verdict::Never(why) => return Err(failed(container, what, why)),
        }
        let pause = match polled {
            Polled::Duration(length) => length.saturating_sub(started.elapsed()).min(POLL_INTERVAL),
            _ => POLL_INTERVAL,
        };
        tokio::time::sleep(pause).await;
    }
}
