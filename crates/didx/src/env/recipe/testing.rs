//! The unit tests' fixtures: a spec, its TLS material and pool tag, and reading a label.

use std::collections::HashMap;
use std::time::Duration;

use crate::env::id::EnvId;
use crate::env::spec::{EnvSpec, PoolTag};
use crate::spec::{IsolationMode, Version};
use crate::tls::TlsMaterial;

pub(super) fn spec() -> EnvSpec {
    EnvSpec {
        id: EnvId("e1".into()),
        sv: Version::parse("--sv", "latest").unwrap(),
        cv: Version::parse("--cv", "24.0").unwrap(),
        server_image: "server:img".into(),
        client_image: "client:img".into(),
        storage_driver: "vfs".into(),
        dockerd_opts: vec!["--debug".into(), "--storage-driver=overlay2".into()],
        isolation: IsolationMode::Auto,
        engine_id: String::new(),
        ready_timeout: Duration::from_secs(1),
        volumes: vec![],
        publish: vec![],
        lease: false,
        address_range: None,
        network: None,
        policy: "anycase".into(),
        owner: "me@here pid 1".into(),
        engine_mode: Default::default(),
        store: None,
    }
}

pub(super) fn tls() -> TlsMaterial {
    TlsMaterial::generate(&["dind_e1_server_latest"]).unwrap()
}

pub(super) fn tag() -> PoolTag {
    PoolTag { key: "k1".into(), size: 3, filler: "h/l/1/t".into(), deadline: 999, idle_timeout: Some(1800) }
}

pub(super) fn label<'m>(l: &'m HashMap<String, String>, k: &str) -> Option<&'m str> {
    l.get(k).map(String::as_str)
}
