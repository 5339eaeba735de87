//! Mutual TLS material for one environment, made in-process: a CA, a server certificate for
//! the inner dockerd and a client certificate for the client container (and didx's probe).

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Result;

/// How long an environment's certificates are valid from when they are made. Environments are
/// throwaway; one kept longer says when its certificates expire (`--clean rpt`, the "remains
/// running" line) and is replaced by starting a new one.
pub const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// How far before now certificates are already valid, for clocks that disagree (a remote engine,
/// a VM whose clock lags).
pub const CLOCK_SKEW: Duration = Duration::from_secs(24 * 3600);

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
    /// When every certificate of the set expires (Unix seconds).
    pub expires: u64,
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
        Self::generate_at(extra_names, SystemTime::now())
    }

    /// [`TlsMaterial::generate`] as if made at `now`: valid from `now - CLOCK_SKEW` to
    /// `now + VALIDITY`.
    pub fn generate_at(extra_names: &[&str], now: SystemTime) -> Result<Self> {
        let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let not_before = secs.saturating_sub(CLOCK_SKEW.as_secs());
        let expires = secs + VALIDITY.as_secs();
        // Out of range only for a clock past the year 9999.
        let at = |s: u64| time::OffsetDateTime::from_unix_timestamp(s as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let (from, until) = (at(not_before), at(expires));
        let validity = |p: &mut CertificateParams| {
            p.not_before = from;
            p.not_after = until;
        };
        let mut ca_params = CertificateParams::default();
        validity(&mut ca_params);
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
        validity(&mut server_params);
        let server_key = KeyPair::generate()?;
        let server_cert = server_params.signed_by(&server_key, &ca)?;

        let mut client_params = CertificateParams::default();
        client_params.distinguished_name = named("didx client");
        client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut client_params);
        let client_key = KeyPair::generate()?;
        let client_cert = client_params.signed_by(&client_key, &ca)?;

        Ok(TlsMaterial {
            ca_pem: ca.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
            expires,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio_rustls::rustls::{
        self, RootCertStore,
        client::danger::ServerCertVerifier,
        pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
        server::WebPkiClientVerifier,
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
    fn server_certificate_names_the_published_loopback_address() {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let m = TlsMaterial::generate(&["dind_x_server_latest"]).unwrap();
        let der = der(&m.server_cert_pem);
        let (_, cert) = X509Certificate::from_der(&der).unwrap();
        let sans = cert.subject_alternative_name().unwrap().unwrap();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for n in &sans.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns.push(d.to_string()),
                GeneralName::IPAddress(ip) => ips.push(ip.to_vec()),
                other => panic!("unexpected SAN {other:?}"),
            }
        }
        assert_eq!(dns, ["docker", "localhost", "dind_x_server_latest"]);
        assert_eq!(ips, [vec![127, 0, 0, 1], std::net::Ipv6Addr::LOCALHOST.octets().to_vec()]);
        // And a TLS client connecting to the published address verifies it, not a neighbour's.
        let verifier = rustls::client::WebPkiServerVerifier::builder(roots(&m.ca_pem)).build().unwrap();
        for (name, ok) in [("127.0.0.1", true), ("localhost", true), ("::1", true), ("127.0.0.2", false), ("10.0.0.1", false)] {
            let sn = ServerName::try_from(name).unwrap();
            assert_eq!(verifier.verify_server_cert(&der, &[], &sn, &[], UnixTime::now()).is_ok(), ok, "{name}");
        }
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
    fn certificates_are_valid_for_a_bounded_time_with_a_skew_margin() {
        let made = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let m = TlsMaterial::generate_at(&[], made).unwrap();
        assert_eq!(m.expires, 1_800_000_000 + VALIDITY.as_secs());
        let at = |d: i64| UnixTime::since_unix_epoch(Duration::from_secs((1_800_000_000i64 + d) as u64));
        let server = rustls::client::WebPkiServerVerifier::builder(roots(&m.ca_pem)).build().unwrap();
        let client = WebPkiClientVerifier::builder(roots(&m.ca_pem)).build().unwrap();
        let sn = ServerName::try_from("docker").unwrap();
        let day = 24 * 3600;
        // Valid now, a little before now (a lagging clock) and until just before the expiry.
        for t in [0, -day / 2, VALIDITY.as_secs() as i64 - 60] {
            server.verify_server_cert(&der(&m.server_cert_pem), &[], &sn, &[], at(t)).unwrap();
            client.verify_client_cert(&der(&m.client_cert_pem), &[], at(t)).unwrap();
        }
        // Not before the skew margin, not after the expiry (the CA neither).
        for t in [-2 * day, VALIDITY.as_secs() as i64 + 60] {
            assert!(server.verify_server_cert(&der(&m.server_cert_pem), &[], &sn, &[], at(t)).is_err(), "{t}");
            assert!(client.verify_client_cert(&der(&m.client_cert_pem), &[], at(t)).is_err(), "{t}");
        }
    }

    #[test]
    fn keys_are_pem() {
        let m = TlsMaterial::generate(&[]).unwrap();
        assert!(m.server_key_pem.contains("PRIVATE KEY"));
        assert!(m.client_key_pem.contains("PRIVATE KEY"));
        assert_ne!(m.server_key_pem, m.client_key_pem);
    }
}
