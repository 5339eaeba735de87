//! Mutual TLS material for one environment, made in-process: a CA, a server certificate for
//! the inner dockerd and a client certificate for the client container (and didx's probe).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};

use crate::error::Result;

/// The host name clients use for the inner engine, as with GitLab's `docker:dind` service.
pub const SERVER_NAME: &str = "docker";

/// PEM-encoded CA, server and client certificates and keys.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The environment's CA certificate.
    pub ca_pem: String,
    /// The server certificate (SANs: docker, localhost, 127.0.0.1, ::1 and `extra_names`).
    pub server_cert_pem: String,
    /// The server key.
    pub server_key_pem: String,
    /// The client certificate (clientAuth).
    pub client_cert_pem: String,
    /// The client key.
    pub client_key_pem: String,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsMaterial { .. }")
    }
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "didx");
    dn
}

impl TlsMaterial {
    /// Generate fresh material; `extra_names` are added to the server certificate's SANs.
    pub fn generate(extra_names: &[&str]) -> Result<Self> {
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = named("didx environment CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut names = vec![SERVER_NAME.to_string(), "localhost".to_string()];
        names.extend(extra_names.iter().map(|s| s.to_string()));
        let mut server_params = CertificateParams::new(names)?;
        server_params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        server_params.subject_alt_names.push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        server_params.distinguished_name = named(SERVER_NAME);
        server_params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;

        let mut client_params = CertificateParams::default();
        client_params.distinguished_name = named("didx client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &ca)?;

        Ok(TlsMaterial {
            ca_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio_rustls::rustls::{
        self, RootCertStore,
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
        client::danger::ServerCertVerifier, server::WebPkiClientVerifier,
    };

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn roots(pem: &str) -> Arc<RootCertStore> {
        let mut store = RootCertStore::empty();
        store.add(der(pem)).unwrap();
        Arc::new(store)
    }

    #[test]
    fn server_certificate_verifies_for_docker_and_loopback_only_under_its_own_ca() {
        let m = TlsMaterial::generate(&["dind_x_server_latest"]).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots(&m.ca_pem)).build().unwrap();
        let now = UnixTime::now();
        for name in ["docker", "localhost", "127.0.0.1", "dind_x_server_latest"] {
            let sn = ServerName::try_from(name).unwrap();
            verifier.verify_server_cert(&der(&m.server_cert_pem), &[], &sn, &[], now).unwrap();
        }
        let other = ServerName::try_from("example.com").unwrap();
        assert!(verifier.verify_server_cert(&der(&m.server_cert_pem), &[], &other, &[], now).is_err());
        // Another environment's CA does not vouch for this server.
        let m2 = TlsMaterial::generate(&[]).unwrap();
        let v2 = rustls::client::WebPkiServerVerifier::builder(roots(&m2.ca_pem)).build().unwrap();
        let sn = ServerName::try_from("docker").unwrap();
        assert!(v2.verify_server_cert(&der(&m.server_cert_pem), &[], &sn, &[], now).is_err());
    }

    #[test]
    fn client_certificate_is_accepted_only_by_its_own_ca() {
        let m = TlsMaterial::generate(&[]).unwrap();
        let m2 = TlsMaterial::generate(&[]).unwrap();
        let now = UnixTime::now();
        let ok = WebPkiClientVerifier::builder(roots(&m.ca_pem)).build().unwrap();
        ok.verify_client_cert(&der(&m.client_cert_pem), &[], now).unwrap();
        let other = WebPkiClientVerifier::builder(roots(&m2.ca_pem)).build().unwrap();
        assert!(other.verify_client_cert(&der(&m.client_cert_pem), &[], now).is_err());
        // The server certificate cannot be used as a client certificate.
        assert!(ok.verify_client_cert(&der(&m.server_cert_pem), &[], now).is_err());
    }

    #[test]
    fn keys_are_pem() {
        let m = TlsMaterial::generate(&[]).unwrap();
        assert!(m.server_key_pem.contains("PRIVATE KEY"));
        assert!(m.client_key_pem.contains("PRIVATE KEY"));
        assert_ne!(m.server_key_pem, m.client_key_pem);
    }
}
