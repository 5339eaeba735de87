//! The inner engine from the host, as a library user reaches it: `Environment::endpoint` (the
//! server's TLS port, published on 127.0.0.1 only) and `Environment::client_certificates`, fed
//! to bollard's own TLS client with certificate verification on; for a fresh environment and
//! for one claimed from the pool. Each test leaves the engine as it found it.

mod common;

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use common::*;
use didx::Cancel;
use didx::env::{ClientCerts, EnvId, Environment, pool};

/// A private (0700) directory holding `ca.pem`, `cert.pem` and `key.pem` (0600), removed on drop.
struct CertDir(PathBuf);

impl CertDir {
    fn new(tag: &str, certs: &ClientCerts, ca_pem: &str) -> CertDir {
        let dir = std::env::temp_dir().join(format!("didx-endpoint-{tag}-{}", EnvId::generate()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        for (name, text) in [("ca.pem", ca_pem), ("cert.pem", certs.cert_pem.as_str()), ("key.pem", certs.key_pem.as_str())] {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(dir.join(name)).unwrap();
            std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        }
        CertDir(dir)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for CertDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

async fn connect(host: &str, dir: &CertDir) -> Result<bollard::Docker, bollard::errors::Error> {
    let key: &Path = &dir.file("key.pem");
    bollard::Docker::connect_with_ssl(host, key, &dir.file("cert.pem"), &dir.file("ca.pem"), 60, bollard::API_DEFAULT_VERSION)?
        .negotiate_version()
        .await
}

/// The endpoint answers with the environment's certificates (verification on) and refuses a
/// client that trusts another CA.
async fn assert_reachable(env: &Environment) {
    let ep = env.endpoint().await.expect("endpoint");
    assert_eq!(ep.host, format!("tcp://127.0.0.1:{}", ep.port));
    let certs = env.client_certificates().await.expect("client certificates");
    assert!(certs.key_pem.contains("PRIVATE KEY") && certs.cert_pem.contains("CERTIFICATE") && certs.ca_pem.contains("CERTIFICATE"));
    assert!(!format!("{certs:?}").contains(&certs.key_pem), "Debug shows the key");

    let good = CertDir::new("good", &certs, &certs.ca_pem);
    let docker = connect(&ep.host, &good).await.expect("connect with the environment's certificates");
    docker.ping().await.expect("ping");
    let version = docker.version().await.expect("version");
    assert!(version.version.is_some_and(|v| !v.is_empty()));

    let other = didx::tls::TlsMaterial::generate(&[]).unwrap();
    let wrong = CertDir::new("wrong", &certs, &other.ca_pem);
    let refused = match connect(&ep.host, &wrong).await {
        Err(e) => format!("{e:?}"),
        Ok(d) => format!("{:?}", d.ping().await.expect_err("a client trusting another CA was served")),
    };
    // Refused for the certificate, not for anything else about the connection.
    assert!(refused.contains("InvalidCertificate"), "{refused}");
}

/// [`assert_reachable`], then remove the environment whatever it found.
async fn checked_then_removed(env: Environment) {
    use futures_util::FutureExt;
    let checked = std::panic::AssertUnwindSafe(assert_reachable(&env)).catch_unwind().await;
    env.rm().await.expect("rm");
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn a_fresh_environment_is_reachable_from_the_host_with_its_client_certificate() {
    let id = rt().block_on(async {
        let engine = engine().await;
        let spec = spec(&engine, vec![]).await;
        let id = spec.id.to_string();
        let env = Environment::start(&engine, &spec, &Cancel::default(), &|_| {}).await.expect("start");
        checked_then_removed(env).await;
        id
    });
    assert_gone(&id);
}

#[test]
fn a_claimed_pooled_environment_is_reachable_from_the_host_with_its_client_certificate() {
    // A dockerd option of its own gives this test a pool key of its own: it claims only what it
    // filled, and no other test claims that.
    let label = format!("--label=didx.test.endpoint={}", EnvId::generate());
    let id = rt().block_on(async {
        let engine = engine().await;
        let template = spec(&engine, vec![label]).await;
        // And a pool of its own, which no other test's `pool down` empties.
        let name = format!("t{}-endpoint", std::process::id());
        let up = pool::up(&engine, Some(&name), &template, 1, None, &Cancel::default(), &|_| {}).await.expect("pool up");
        assert_eq!(up.started.len(), 1, "{up:?}");
        let mut run = template.clone();
        let claimed = pool::claim(&engine, Some(&name), &mut run, &Cancel::default(), &|_| {}).await;
        let (env, _, _) = match claimed {
            Ok(Some(c)) => c,
            other => {
                didx::env::remove(&engine, &up.started[0]).await.unwrap();
                panic!("claim: {other:?}");
            }
        };
        assert_eq!(env.id().as_str(), up.started[0]);
        checked_then_removed(env).await;
        up.started[0].clone()
    });
    assert_gone(&id);
}
