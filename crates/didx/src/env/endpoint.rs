//! Reaching an environment's inner engine from the host: the loopback port its server publishes,
//! and the client certificate to present there.

use futures_util::StreamExt;

use super::certdir::ClientCerts;
use super::handle::Environment;
use crate::backend::docker::recipe::{PUBLISHED_IP, TLS_PORT, published_port};
use crate::error::{Error, Result};

/// Where the inner engine listens on the engine's host: 127.0.0.1 (loopback only) and a
/// port the engine chose. Reachable from the engine's host (a local engine), with the
/// sandbox's client certificate; the server certificate names
/// `127.0.0.1` and `localhost`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The address for a Docker client, `tcp://127.0.0.1:PORT`.
    pub host: String,
    /// The host port.
    pub port: u16,
}

/// The largest certificate archive read back (three PEM files are a few kilobytes).
const MAX_CERTS_ARCHIVE: usize = 1 << 20;

impl Environment {
    /// The host address of the inner engine's TLS port, published on [`PUBLISHED_IP`] only.
    /// [`Error::NoEndpoint`] for a server that publishes none (made by an older didx).
    pub async fn endpoint(&self) -> Result<Endpoint> {
        let server = self.inner_server()?;
        if self.backend.as_engine().is_none() {
            // On a cluster: a port-forward to the server's TLS port.
            let port = self.reach_port(TLS_PORT).await?;
            return Ok(Endpoint { host: format!("tcp://{PUBLISHED_IP}:{port}"), port });
        }
        let inspect = self.docker("an inner engine's published port")?.inspect(&server.id).await?;
        let ports = inspect.network_settings.as_ref().and_then(|n| n.ports.as_ref());
        let port = published_port(ports).ok_or_else(|| Error::NoEndpoint {
            server: server.name.clone(),
            ip: PUBLISHED_IP,
            port: TLS_PORT,
        })?;
        let port = self.reach_port(port).await?;
        Ok(Endpoint { host: format!("tcp://{PUBLISHED_IP}:{port}"), port })
    }

    /// The port on this machine's loopback that reaches `port` published on the engine
    /// machine's loopback: `port` itself for an engine on this machine; for an engine over
    /// SSH, a forward over its SSH connection (opened the first time, held as long as this
    /// handle: it ends with the run, the sandbox, or `didx env`'s holder); on a cluster, a
    /// port-forward to `port` of the pod, held the same way;
    /// [`Error::EndpointElsewhere`] for an engine on another machine reached otherwise.
    pub(crate) async fn reach_port(&self, port: u16) -> Result<u16> {
        self.reach_port_at(port, 0).await
    }

    /// [`reach_port`](Self::reach_port), a cluster's port-forward listening on `local` (0: a
    /// port the system picks).
    pub(crate) async fn reach_port_at(&self, port: u16, local: u16) -> Result<u16> {
        let mut forwards = self.forwards.lock().await;
        if let Some(f) = forwards.get(&port) {
            return Ok(f.local_addr().port());
        }
        if self.backend.as_engine().is_none() {
            // On a cluster: a port-forward to the pod (whose network the server's is).
            let server = self.inner_server()?.id.clone();
            let f = self.backend.forward(&server, port, local).await?.ok_or(Error::Unsupported {
                what: "reaching a port of the environment",
                backend: self.backend.kind(),
            })?;
            let local = f.local_addr().port();
            forwards.insert(port, f);
            return Ok(local);
        }
        let engine = self.docker("reaching a published port")?;
        match engine.forward(port).await? {
            // An engine on this machine: the port itself.
            None if super::reach::is_on_this_machine(engine.host()) => Ok(port),
            // An engine on another machine, not over SSH: the port is on that machine's
            // loopback, and this machine's port of the same number is something else.
            None => Err(Error::EndpointElsewhere { host: engine.host().to_string() }),
            Some(f) => {
                let local = f.local_addr().port();
                forwards.insert(port, f);
                Ok(local)
            }
        }
    }

    /// The client's `ca.pem`, `cert.pem` and `key.pem`, read back from the client container in
    /// one archive download (from where they really are: a pooled client's `/certs/client` is
    /// a link into its files volume).
    pub async fn client_certificates(&self) -> Result<ClientCerts> {
        let dir = self.client_cert_dir;
        let what = || format!("reading the client certificates of {} from {dir}", self.client.name);
        let mut tar = Vec::new();
        let mut stream = std::pin::pin!(self.backend.copy_out(&self.client.id, dir));
        while let Some(chunk) = stream.next().await {
            tar.extend_from_slice(&chunk?);
            if tar.len() > MAX_CERTS_ARCHIVE {
                let e = std::io::Error::new(std::io::ErrorKind::InvalidData, format!("archive larger than {MAX_CERTS_ARCHIVE} bytes"));
                return Err(Error::io(what(), e));
            }
        }
        certs_from_tar(&tar).map_err(|e| Error::io(what(), e))
    }
}

/// The three PEM files from an archive of the certificate directory (as the engine makes it:
/// entries under the directory's name), by file name.
fn certs_from_tar(tar: &[u8]) -> std::io::Result<ClientCerts> {
    use std::io::Read;
    let (mut ca, mut cert, mut key) = (None, None, None);
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let slot = match entry.path()?.file_name().and_then(|n| n.to_str()) {
            Some("ca.pem") => &mut ca,
            Some("cert.pem") => &mut cert,
            Some("key.pem") => &mut key,
            _ => continue,
        };
        let mut text = String::new();
        entry.read_to_string(&mut text)?;
        *slot = Some(text);
    }
    let missing = |name: &str| std::io::Error::new(std::io::ErrorKind::NotFound, format!("no {name} in the archive"));
    Ok(ClientCerts {
        ca_pem: ca.ok_or_else(|| missing("ca.pem"))?,
        cert_pem: cert.ok_or_else(|| missing("cert.pem"))?,
        key_pem: key.ok_or_else(|| missing("key.pem"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::{Entry, tar_of};

    #[test]
    fn certificates_are_read_by_name_and_all_three_are_required() {
        let tar = tar_of(&[
            Entry { path: "client/ca.pem", mode: 0o644, data: b"CA" },
            Entry { path: "client/cert.pem", mode: 0o644, data: b"CERT" },
            Entry { path: "client/key.pem", mode: 0o600, data: b"KEY" },
            Entry { path: "client/other.pem", mode: 0o644, data: b"X" },
        ])
        .unwrap();
        let c = certs_from_tar(&tar).unwrap();
        assert_eq!((c.ca_pem.as_str(), c.cert_pem.as_str(), c.key_pem.as_str()), ("CA", "CERT", "KEY"));
        let shown = format!("{c:?}");
        assert!(shown.contains("CERT") && !shown.contains("KEY\""), "{shown}");
        let partial = tar_of(&[Entry { path: "client/ca.pem", mode: 0o644, data: b"CA" }]).unwrap();
        let e = certs_from_tar(&partial).unwrap_err();
        assert!(e.to_string().contains("cert.pem"), "{e}");
    }
}
