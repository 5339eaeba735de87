//! The readiness probe: an HTTPS `GET /_ping` to the inner engine, with the environment's
//! client certificate, verifying the server certificate against the environment's CA under the
//! name `docker`. "Ready" means this answered `200 OK`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};

use crate::tls::{SERVER_NAME, TlsMaterial};

/// Why one probe did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing listens yet (connection refused): the normal state while dockerd starts.
    Refused,
    /// The address could not be reached at all (no route, timeout): probing from here may be
    /// impossible.
    Unreachable(String),
    /// Connected, but TLS or HTTP failed.
    Failed(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Refused => f.write_str("connection refused"),
            ProbeError::Unreachable(e) => write!(f, "unreachable: {e}"),
            ProbeError::Failed(e) => f.write_str(e),
        }
    }
}

/// A TLS client for one environment's inner engine.
#[derive(Clone)]
pub struct Prober {
    connector: TlsConnector,
}

impl Prober {
    /// Build a prober from the environment's material.
    pub fn new(tls: &TlsMaterial) -> Result<Prober, String> {
        let mut roots = RootCertStore::empty();
        let ca = CertificateDer::from_pem_slice(tls.ca_pem.as_bytes()).map_err(|e| e.to_string())?;
        roots.add(ca).map_err(|e| e.to_string())?;
        let cert = CertificateDer::from_pem_slice(tls.client_cert_pem.as_bytes()).map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::from_pem_slice(tls.client_key_pem.as_bytes()).map_err(|e| e.to_string())?;
        let config =
            ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(vec![cert], key).map_err(|e| e.to_string())?;
        Ok(Prober { connector: TlsConnector::from(Arc::new(config)) })
    }

    /// One `GET /_ping` to `addr`, bounded by `timeout`.
    pub async fn ping(&self, addr: SocketAddr, timeout: Duration) -> Result<(), ProbeError> {
        match tokio::time::timeout(timeout, self.ping_inner(addr)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Unreachable(format!("no answer from {addr} within {timeout:?}"))),
        }
    }

    async fn ping_inner(&self, addr: SocketAddr) -> Result<(), ProbeError> {
        let tcp = match TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(ProbeError::Refused),
            Err(e) => return Err(ProbeError::Unreachable(e.to_string())),
        };
        tcp.set_nodelay(true).ok();
        let name = ServerName::try_from(SERVER_NAME).expect("static name is valid");
        let mut tls = self.connector.connect(name, tcp).await.map_err(|e| ProbeError::Failed(format!("TLS handshake: {e}")))?;
        let req = format!("GET /_ping HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).await.map_err(|e| ProbeError::Failed(e.to_string()))?;
        let mut buf = vec![0u8; 512];
        let n = tls.read(&mut buf).await.map_err(|e| ProbeError::Failed(e.to_string()))?;
        let head = String::from_utf8_lossy(&buf[..n]);
        if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(ProbeError::Failed(head.lines().next().unwrap_or("empty answer").to_string()))
        }
    }
}
