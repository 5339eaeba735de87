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
    /// Connected, but the server's certificate is not the environment's (its CA does not sign
    /// it): another server answers at that address here.
    Stranger(String),
    /// Connected, but TLS or HTTP failed.
    Failed(String),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Refused => f.write_str("connection refused"),
            ProbeError::Unreachable(e) => write!(f, "unreachable: {e}"),
            ProbeError::Stranger(e) | ProbeError::Failed(e) => f.write_str(e),
        }
    }
}

/// Whether a failed handshake says the server's certificate is not one this environment's CA
/// signed (rather than a connection cut mid-handshake while dockerd starts).
fn stranger(e: &std::io::Error) -> bool {
    let tls = e.get_ref().and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>());
    matches!(tls, Some(tokio_rustls::rustls::Error::InvalidCertificate(_)))
}

/// A TLS client of one environment's inner engine: its client certificate presented, the
/// server's verified against its CA under the name [`SERVER_NAME`] (see [`handshake`]).
pub(crate) fn connector(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<TlsConnector, String> {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?;
    roots.add(ca).map_err(|e| e.to_string())?;
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| e.to_string())?;
    let config =
        ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(vec![cert], key).map_err(|e| e.to_string())?;
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Mutual TLS with an inner engine over `stream` (any connection to its TLS port), its
/// certificate verified under the name [`SERVER_NAME`] (whatever address was dialled).
pub(crate) async fn handshake<S>(connector: &TlsConnector, stream: S) -> std::io::Result<tokio_rustls::client::TlsStream<S>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    connector.connect(ServerName::try_from(SERVER_NAME).expect("static name is valid"), stream).await
}

/// A TLS client for one environment's inner engine.
#[derive(Clone)]
pub struct Prober {
    connector: TlsConnector,
}

impl Prober {
    /// Build a prober from the environment's material.
    pub fn new(tls: &TlsMaterial) -> Result<Prober, String> {
        Ok(Prober { connector: connector(&tls.ca_pem, &tls.client_cert_pem, &tls.client_key_pem)? })
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
        let mut tls = handshake(&self.connector, tcp).await.map_err(|e| {
            let said = format!("TLS handshake: {e}");
            if stranger(&e) { ProbeError::Stranger(said) } else { ProbeError::Failed(said) }
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_rustls::rustls::ServerConfig;

    /// A TLS server on loopback with `tls`'s server certificate that answers one `/_ping`.
    async fn server(tls: &TlsMaterial) -> SocketAddr {
        let cert = CertificateDer::from_pem_slice(tls.server_cert_pem.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(tls.server_key_pem.as_bytes()).unwrap();
        let config = ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert], key).unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut s) = acceptor.accept(tcp).await else { continue };
                let mut buf = [0u8; 512];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK").await;
                let _ = s.shutdown().await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_server_of_another_environment_at_the_address_is_a_stranger_and_its_own_answers() {
        let ours = TlsMaterial::generate(&["s"]).unwrap();
        let theirs = TlsMaterial::generate(&["s"]).unwrap();
        let prober = Prober::new(&ours).unwrap();
        let t = Duration::from_secs(5);
        match prober.ping(server(&theirs).await, t).await {
            Err(ProbeError::Stranger(said)) => assert!(said.contains("TLS handshake"), "{said}"),
            other => panic!("another environment's server: {other:?}"),
        }
        prober.ping(server(&ours).await, t).await.unwrap();
    }
}
