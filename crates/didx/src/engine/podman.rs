//! What Podman's Docker-compatible API answers outside Docker's, read past here.

use std::collections::HashMap;
use std::io;

use bollard::models::ContainerSummary;
use bytes::Bytes;
use http_body_util::BodyExt;

use super::call::QUICK_TIMEOUT;
use super::connect::Engine;
use crate::error::{Error, Result};

impl Engine {
    raw! {
        /// The container list [`Engine::containers`] asks for, read without bollard's typed
        /// states: Podman 5.4 names a container in its internal `stopped` (ended, awaiting its
        /// clean-up) or `stopping` state in the list (podman#28359, fixed upstream by
        /// podman#28390), which fails bollard's whole answer; a container whose clean-up never
        /// comes (seen after a failed start) stays so, and would fail every list after it.
        /// Here the answer is read as JSON, those states become Docker's (`exited`, `running`),
        /// and it is read as Docker's list. Over a unix socket or SSH (Podman's transports).
        async fn containers_read_loosely(&self, filters: &HashMap<String, Vec<String>>) -> Result<Vec<ContainerSummary>> {
            let filters = serde_json::to_string(filters).map_err(|e| Error::io("encoding a container filter", e.into()))?;
            let path = format!("/containers/json?all=1&filters={}", percent_encoded(&filters));
            let body = tokio::time::timeout(QUICK_TIMEOUT, self.get(&path))
                .await
                .map_err(|_| Error::TimedOut { op: "list containers", target: "engine".into(), after: QUICK_TIMEOUT, idle: false })?
                .map_err(|e| Error::io("listing containers", e))?;
            let mut list: serde_json::Value = serde_json::from_slice(&body).map_err(|e| Error::io("reading the container list", e.into()))?;
            docker_states(&mut list);
            serde_json::from_value(list).map_err(|e| Error::io("reading the container list", e.into()))
        }
    }

    /// One GET of `path` on the engine, outside bollard: a connection of its own, over the
    /// engine's unix socket or its SSH master.
    async fn get(&self, path: &str) -> io::Result<Bytes> {
        if let Some(master) = self.ssh_master() {
            return get_over(master.dial()?, path).await;
        }
        match self.host().strip_prefix("unix://") {
            Some(socket) => get_over(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(socket).await?), path).await,
            None => Err(io::Error::new(io::ErrorKind::Unsupported, format!("a plain GET on {} (only over a unix socket or SSH)", self.host()))),
        }
    }
}

/// `GET path` over `io`, one request; the body of a 2xx answer, else an error with the answer.
async fn get_over<I>(io: I, path: &str) -> io::Result<Bytes>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(io::Error::other)?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "docker")
        .body(http_body_util::Empty::<Bytes>::new())
        .map_err(io::Error::other)?;
    let answer = async {
        let res = sender.send_request(req).await.map_err(io::Error::other)?;
        let status = res.status();
        let body = res.into_body().collect().await.map_err(io::Error::other)?.to_bytes();
        if status.is_success() { Ok(body) } else { Err(io::Error::other(format!("{status}: {}", String::from_utf8_lossy(&body).trim()))) }
    }
    .await;
    conn.abort();
    answer
}

/// Podman's internal container states in a list, as Docker names them (as Podman's own
/// inspect and later releases' list do): `stopped` is `exited`, `stopping` is `running`,
/// `configured` is `created`.
fn docker_states(list: &mut serde_json::Value) {
    for c in list.as_array_mut().into_iter().flatten() {
        if let Some(state) = c.get_mut("State") {
            let docker = match state.as_str() {
                Some("stopped") => "exited",
                Some("stopping") => "running",
                Some("configured") => "created",
                _ => continue,
            };
            *state = docker.into();
        }
    }
}

/// `s` with every byte but RFC 3986's unreserved ones percent-encoded (a query value).
fn percent_encoded(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_s_own_states_read_as_docker_s_and_the_rest_stays() {
        let mut list = serde_json::json!([
            {"Id": "a", "State": "stopped"},
            {"Id": "b", "State": "stopping"},
            {"Id": "c", "State": "configured"},
            {"Id": "d", "State": "running"},
            {"Id": "e", "State": "exited", "Labels": {"x": "\"State\":\"stopped\""}},
            {"Id": "f"}
        ]);
        docker_states(&mut list);
        let states: Vec<_> = list.as_array().unwrap().iter().map(|c| c.get("State").and_then(|s| s.as_str())).collect();
        assert_eq!(states, [Some("exited"), Some("running"), Some("created"), Some("running"), Some("exited"), None]);
        assert_eq!(list[4]["Labels"]["x"], "\"State\":\"stopped\"");
        let read: Vec<ContainerSummary> = serde_json::from_value(list).unwrap();
        assert_eq!(read.len(), 6);
    }

    #[test]
    fn a_filter_is_percent_encoded_as_a_query_value() {
        assert_eq!(percent_encoded(r#"{"label":["io.didx.env=a b"]}"#), "%7B%22label%22%3A%5B%22io.didx.env%3Da%20b%22%5D%7D");
        assert_eq!(percent_encoded("a-Z_0.9~"), "a-Z_0.9~");
    }
}
