//! Waiting on the containers a test starts on a sandbox's *inner* engine, as testcontainers
//! users expect: for a log line, a TCP port listening, an HTTP status, the container's health
//! check, its exit, or a plain duration ([`WaitFor`], [`wait_for`], [`wait_for_all`]);
//! following a container's logs line by line ([`follow_logs`]); and a user network with
//! aliases, so that other inner containers reach one by name ([`create_network`],
//! [`connect_with_aliases`]).
//!
//! Every function takes a `&bollard::Docker` — [`Sandbox::docker`](crate::Sandbox::docker)'s,
//! or any engine's — and uses nothing but that engine's API.
//!
//! ```no_run
//! # async fn demo(sb: &didx::Sandbox) -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use didx::wait::{self, WaitFor};
//!
//! let docker = sb.docker().await?;
//! // … create and start a container named "web" on the inner engine with bollard …
//! wait::create_network(&docker, "backend").await?;
//! wait::connect_with_aliases(&docker, "backend", "web", &["api"]).await?; // others reach it as api
//! let logs = wait::follow_logs(&docker, "web", |line| eprintln!("web {}: {}", line.stream, line.text));
//! let ready = [WaitFor::log("listening"), WaitFor::http(8080, "/health")];
//! wait::wait_for_all(&docker, "web", &ready, Duration::from_secs(60)).await?;
//! // … the test …
//! logs.stop();
//! # Ok(()) }
//! ```
//!
//! # How a wait waits
//! A wait polls every [`POLL_INTERVAL`] until its condition holds or its timeout passes, then
//! fails with [`Error::WaitTimedOut`](crate::Error::WaitTimedOut), whose `last_seen` says what the last poll saw (a probe's
//! answer, the health check's last output, the container's last log lines). A log line is
//! looked for in the container's followed output (all of it, from its start: lines printed
//! before the wait count), not by polling. A wait fails at once, well before its deadline:
//! - with [`Error::ContainerExited`](crate::Error::ContainerExited) (the exit code and the last log lines) when the container
//!   exits while waiting for anything but its exit, or exits with another code than
//!   [`WaitFor::Exit`]'s;
//! - with [`Error::WaitFailed`](crate::Error::WaitFailed) when what it waits for cannot come: the container was removed,
//!   its health check said `unhealthy`, it has no health check, or its image lacks the tool a
//!   probe runs.
//!
//! # Where a port and HTTP are probed from
//! The caller is on the host, and an inner container's address is on the inner engine's
//! bridge inside the sandbox's server, which the host does not route to (on an engine of
//! another machine or on a cluster, nothing of the sandbox's network is near). What every
//! caller does reach is the inner engine's API. So [`WaitFor::Port`] and [`WaitFor::Http`] are
//! probed *inside the container's own network namespace*, by an exec in the container:
//! - a port: `cat /proc/net/tcp /proc/net/tcp6`, read here for a socket listening on that port
//!   (on any address, loopback included). No connection is made, so a server that serves one
//!   client is not disturbed; it tells *listening*, not *answering*.
//! - HTTP: `wget -S -O /dev/null http://127.0.0.1:PORT/PATH` (busybox's or GNU's), else `curl`,
//!   with proxies off; the status is the last response's (redirects are followed).
//!
//! Their limits: the image must have `cat` (a port) or `wget` or `curl` (HTTP) — scratch and
//! distroless images have none, and the wait then fails at once saying so; wait for its health
//! check ([`WaitFor::Healthy`], a test the engine runs in the container) or a log line instead.
//! A probe that hangs (a server that accepts and never answers) is given up after
//! [`PROBE_TIMEOUT`] and run again, its process left to end in the container. Whether the host
//! reaches the port is another question: publish it
//! ([`SandboxBuilder::publish`](crate::SandboxBuilder::publish)) and connect to it.

mod condition;
mod logs;
mod network;
mod poll;
mod probe;
mod state;
mod text;

pub use condition::{LogStream, WaitFor};
pub use logs::{LogFollower, follow_logs};
pub use network::{connect_with_aliases, create_network};
pub use poll::{wait_for, wait_for_all};
pub use state::{POLL_INTERVAL, PROBE_TIMEOUT};
pub use text::LogLine;
