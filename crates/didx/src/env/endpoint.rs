//! Reaching an environment's inner engine from the host: the loopback port its server publishes,
//! and the client certificate to present there.

use futures_util::StreamExt;

use super::certdir::ClientCerts;
use super::handle::Environment;
use crate::backend::docker::recipe::{PUBLISHED_IP, TLS_PORT};
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
    /// The address on this machine's loopback of the inner engine's TLS port: where its engine
    /// publishes it (on the engine's host, [`PUBLISHED_IP`] only), carried here by a forward for
    /// an engine over SSH or a cluster's pod ([`reach_port`](Self::reach_port)).
    /// [`Error::NoEndpoint`] for a server that publishes none (made by an older didx).
    pub async fn endpoint(&self) -> Result<Endpoint> {
        let port = self.reach_port(TLS_PORT).await?;
        Ok(Endpoint { host: format!("tcp://{PUBLISHED_IP}:{port}"), port })
    }

    /// The port on this machine's loopback that reaches TCP `port` of the server's network
    /// (see [`Backend::reach`](crate::backend::Backend::reach)); a forward it takes (over an
    /// engine's SSH connection, a cluster's port-forward) is opened the first time and held as
    /// long as this handle: it ends with the run, the sandbox, or `didx env`'s holder.
    pub(crate) async fn reach_port(&self, port: u16) -> Result<u16> {
        self.reach_port_at(port, 0).await
    }

    /// [`reach_port`](Self::reach_port), a forward listening on `local` (0: a port the system
    /// picks).
    pub(crate) async fn reach_port_at(&self, port: u16, local: u16) -> Result<u16> {
        self.reach_at(port, local).await.map(|(port, _)| port)
    }

    /// [`reach_port_at`](Self::reach_port_at), and whether a forward carries it.
    pub(super) async fn reach_at(&self, port: u16, local: u16) -> Result<(u16, bool)> {
        let mut forwards = self.forwards.lock().await;
        if let Some(f) = forwards.get(&port) {
            return Ok((f.local_addr().port(), true));
        }
        let server = self.inner_server()?;
        let reached = self.backend.reach(&server.id, port, local).await?;
        let forwarded = reached.forward.is_some();
        if let Some(f) = reached.forward {
            forwards.insert(port, f);
        }
        Ok((reached.port, forwarded))
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
