//! What a wait learns of a container, and the errors it ends with: its state (exited, started,
//! running, healthy) read from an inspect, what its polls saw, its last log lines.

use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum, HealthStatusEnum};

use super::condition::WaitFor;
use super::text::Recent;
use crate::engine::Engine;
use crate::error::Error;

/// How often a wait looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// How long one probe run in a container ([`WaitFor::Port`], [`WaitFor::Http`]) may take
/// before it counts as no answer (the wait then probes again).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many of a container's last log lines an error carries.
pub(super) const LAST_LINES: usize = 20;

/// The bound on reading a container's last log lines for an error.
const LOGS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a wait on a container that is not there fails.
pub(super) const GONE: &str = "the container is gone (removed, or never made)";

/// How the engine wrapper names a client it did not make, in its errors.
const CLIENT: &str = "the caller's engine client";

/// The engine wrapper around the caller's client: every call bounded and named.
pub(super) fn over(docker: &Docker) -> Engine {
    Engine::over_client(docker.clone(), CLIENT)
}

/// What a wait's polls last saw, kept where its timeout can read it.
#[derive(Default)]
pub(super) struct Seen {
    /// The last poll's finding, in words.
    pub(super) note: String,
    /// A log wait's last lines of output.
    pub(super) lines: Option<Recent>,
}

/// One poll's finding.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The condition holds.
    Met,
    /// Not yet: what was seen.
    Pending(String),
    /// It can never hold: why.
    Never(String),
}

/// The exit code of a container that has stopped (exited or dead), `None` while it has not.
pub(super) fn exit_code(inspect: &ContainerInspectResponse) -> Option<i64> {
    let state = inspect.state.as_ref()?;
    matches!(state.status, Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)).then(|| state.exit_code.unwrap_or(-1))
}

/// Whether the container has been started (whatever it is now): not just created.
pub(super) fn has_started(inspect: &ContainerInspectResponse) -> bool {
    !matches!(inspect.state.as_ref().and_then(|s| s.status), Some(ContainerStateStatusEnum::CREATED) | None)
}

/// Whether the container runs now (so that an exec can probe it).
pub(super) fn is_running(inspect: &ContainerInspectResponse) -> bool {
    inspect.state.as_ref().and_then(|s| s.status) == Some(ContainerStateStatusEnum::RUNNING)
}

/// The container's state in a word, for what a poll saw.
pub(super) fn status(inspect: &ContainerInspectResponse) -> String {
    match inspect.state.as_ref().and_then(|s| s.status) {
        Some(s) if s != ContainerStateStatusEnum::EMPTY => s.to_string(),
        _ => "in no state the engine names".to_string(),
    }
}

/// What the container's health says: `healthy` is met, `unhealthy` never will be, and neither
/// will a health without a check to run.
pub(super) fn health(inspect: &ContainerInspectResponse) -> Verdict {
    let health = inspect.state.as_ref().and_then(|s| s.health.as_ref());
    let last = health.and_then(|h| h.log.as_ref()).and_then(|log| log.last()).map(|r| {
        let said = r.output.as_deref().unwrap_or_default().trim();
        format!("exit {}{}{said}", r.exit_code.unwrap_or(-1), if said.is_empty() { "" } else { ": " })
    });
    let last = last.as_deref().unwrap_or("no check has finished");
    match health.and_then(|h| h.status) {
        Some(HealthStatusEnum::HEALTHY) => Verdict::Met,
        Some(HealthStatusEnum::UNHEALTHY) => Verdict::Never(format!(
            "its health check reported unhealthy ({} failures in a row); the last check said: {last}",
            health.and_then(|h| h.failing_streak).unwrap_or(0)
        )),
        Some(HealthStatusEnum::STARTING) => Verdict::Pending(format!("health starting; the last check said: {last}")),
        _ if !has_check(inspect) => Verdict::Never(
            "it has no health check (give it one: HEALTHCHECK in its image, or `healthcheck` in its create body)".to_string(),
        ),
        _ => Verdict::Pending("no health reported yet".to_string()),
    }
}

/// Whether the container has a health check to run (its own, or its image's).
fn has_check(inspect: &ContainerInspectResponse) -> bool {
    let test = inspect.config.as_ref().and_then(|c| c.healthcheck.as_ref()).and_then(|h| h.test.as_ref());
    test.and_then(|t| t.first()).is_some_and(|kind| kind != "NONE")
}

/// [`Error::WaitFailed`]: `what` cannot come, for `why`.
pub(super) fn failed(container: &str, what: &WaitFor, why: impl Into<String>) -> Error {
    Error::WaitFailed { container: container.to_string(), condition: what.to_string(), why: why.into() }
}

/// [`Error::ContainerExited`], with the container's last log lines.
pub(super) async fn exited(engine: &Engine, container: &str, what: &WaitFor, code: i64) -> Error {
    let logs = last_logs(engine, container).await;
    Error::ContainerExited { container: container.to_string(), condition: what.to_string(), code, logs }
}

/// [`Error::WaitTimedOut`], with what the polls last saw and the container's last log lines
/// (a log wait's own, or read now).
pub(super) async fn timed_out(engine: &Engine, container: &str, what: &WaitFor, after: Duration, seen: Seen) -> Error {
    let lines = match seen.lines {
        Some(recent) => recent.text(),
        None => last_logs(engine, container).await,
    };
    let note = if seen.note.is_empty() { "no poll finished" } else { &seen.note };
    let last_seen = format!("{note}; its last log lines:\n{lines}");
    Error::WaitTimedOut { container: container.to_string(), condition: what.to_string(), after, last_seen }
}

/// The container's last [`LAST_LINES`] log lines for an error, or why they could not be read.
pub(super) async fn last_logs(engine: &Engine, container: &str) -> String {
    match tokio::time::timeout(LOGS_TIMEOUT, engine.logs_tail(container, LAST_LINES)).await {
        Ok(Ok(text)) if text.trim().is_empty() => "(none)".to_string(),
        Ok(Ok(text)) => text.trim_end().to_string(),
        Ok(Err(e)) => format!("(unreadable: {e})"),
        Err(_) => format!("(unreadable: no answer within {} s)", LOGS_TIMEOUT.as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerState, Health, HealthConfig, HealthcheckResult};

    fn with_health(status: Option<HealthStatusEnum>, test: Option<&[&str]>, last: Option<(i64, &str)>) -> ContainerInspectResponse {
        let log = last.map(|(code, out)| vec![HealthcheckResult { exit_code: Some(code), output: Some(out.into()), ..Default::default() }]);
        ContainerInspectResponse {
            state: Some(ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                health: status.map(|s| Health { status: Some(s), failing_streak: Some(3), log }),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                healthcheck: test.map(|t| HealthConfig { test: Some(t.iter().map(|s| s.to_string()).collect()), ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn health_is_met_pending_or_never() {
        let check: &[&str] = &["CMD-SHELL", "test -f /ready"];
        assert_eq!(health(&with_health(Some(HealthStatusEnum::HEALTHY), Some(check), None)), Verdict::Met);
        assert_eq!(
            health(&with_health(Some(HealthStatusEnum::STARTING), Some(check), Some((1, "no file\n")))),
            Verdict::Pending("health starting; the last check said: exit 1: no file".into())
        );
        assert_eq!(
            health(&with_health(Some(HealthStatusEnum::UNHEALTHY), Some(check), Some((1, "")))),
            Verdict::Never("its health check reported unhealthy (3 failures in a row); the last check said: exit 1".into())
        );
        // No check (none at all, or turned off with NONE): it never becomes healthy.
        for test in [None, Some(&["NONE"][..])] {
            assert!(matches!(health(&with_health(None, test, None)), Verdict::Never(why) if why.contains("no health check")));
        }
        assert_eq!(health(&with_health(None, Some(check), None)), Verdict::Pending("no health reported yet".into()));
    }

    #[test]
    fn an_exit_is_told_from_a_stop_not_yet_made() {
        let state = |status, code| ContainerInspectResponse {
            state: Some(ContainerState { status: Some(status), exit_code: Some(code), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(exit_code(&state(ContainerStateStatusEnum::EXITED, 3)), Some(3));
        assert_eq!(exit_code(&state(ContainerStateStatusEnum::DEAD, 137)), Some(137));
        for s in [ContainerStateStatusEnum::RUNNING, ContainerStateStatusEnum::CREATED, ContainerStateStatusEnum::RESTARTING] {
            assert_eq!(exit_code(&state(s, 0)), None, "{s}");
        }
    }
}
