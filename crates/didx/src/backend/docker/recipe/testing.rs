//! The unit tests' fixtures: a spec, its TLS material and pool tag, and reading a label.

use std::collections::HashMap;

use crate::env::spec::{EnvSpec, PoolTag};
use crate::spec::Version;
use crate::tls::TlsMaterial;

pub(super) fn spec() -> EnvSpec {
    EnvSpec {
        cv: Version::parse("--cv", "24.0").unwrap(),
        server_image: "server:img".into(),
        client_image: "client:img".into(),
        dockerd_opts: vec!["--debug".into(), "--storage-driver=overlay2".into()],
        owner: "me@here pid 1".into(),
        ..EnvSpec::example()
    }
}

pub(super) fn tls() -> TlsMaterial {
    TlsMaterial::generate(&["dind_e1_server_latest"]).unwrap()
}

pub(super) fn tag() -> PoolTag {
    PoolTag { key: "k1".into(), size: 3, filler: "h/l/1/t".into(), deadline: 999, idle_timeout: Some(1800), name: None }
}

pub(super) fn label<'m>(l: &'m HashMap<String, String>, k: &str) -> Option<&'m str> {
    l.get(k).map(String::as_str)
}
