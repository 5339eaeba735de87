//! An image store's filler: the server image's dockerd on the store volume, with no network of
//! its own and no environment's labels.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, Mount, MountType};

use super::base::{ENTRYPOINT_PATH, STORE_PATH};
use crate::isolation::Isolation;
use crate::labels;

/// An image store's filler: the server image's dockerd with the store volume (read-write) as
/// its data root, no network of its own to make (no bridge, no iptables); it runs only while
/// the store is filled (see `crate::store`). Not an environment: labelled as the store's, never
/// with `io.didx.managed`.
pub(crate) struct Filler<'a> {
    /// The store volume.
    pub store: &'a str,
    /// Its prefix (the [`labels::STORE`] value).
    pub prefix: &'a str,
    /// The server image.
    pub image: &'a str,
    /// Unpublish the current snapshot before dockerd starts (a removal: no server may seed from
    /// a snapshot whose layers it deletes).
    pub drain: bool,
}

impl Filler<'_> {
    /// dockerd's arguments: the local socket only, the store's data root, overlay2.
    pub fn dockerd_args() -> Vec<String> {
        [
            "--host=unix:///var/run/docker.sock",
            "--data-root=/didx/store/root",
            "--storage-driver=overlay2",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The filler's create body with isolation `iso`.
    pub fn body(&self, iso: &Isolation) -> ContainerCreateBody {
        let mut hc = HostConfig {
            auto_remove: Some(true),
            mounts: Some(vec![Mount {
                target: Some(STORE_PATH.to_string()),
                source: Some(self.store.to_string()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
            ..Default::default()
        };
        iso.apply(&mut hc);
        ContainerCreateBody {
            image: Some(self.image.to_string()),
            entrypoint: Some(vec![ENTRYPOINT_PATH.to_string(), "store-fill".to_string()]),
            cmd: Some(Self::dockerd_args()),
            env: Some(
                [Some(format!("DIDX_STORE={STORE_PATH}")), self.drain.then(|| "DIDX_STORE_DRAIN=1".to_string())]
                    .into_iter()
                    .flatten()
                    .collect(),
            ),
            labels: Some(HashMap::from([
                (labels::STORE.to_string(), self.prefix.to_string()),
                (labels::STORE_ROLE.to_string(), "filler".to_string()),
            ])),
            host_config: Some(hc),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::label;
    use super::*;

    #[test]
    fn a_store_filler_runs_dockerd_on_the_store_and_is_no_environment() {
        let f = Filler { store: "st", prefix: "p", image: "didx/dind:local", drain: false };
        let body = f.body(&Isolation::Caps(vec!["SYS_ADMIN".into()]));
        assert_eq!(body.entrypoint, Some(vec!["/didx/entrypoint".to_string(), "store-fill".to_string()]));
        let cmd = body.cmd.unwrap();
        assert!(cmd.contains(&"--data-root=/didx/store/root".to_string()) && cmd.contains(&"--storage-driver=overlay2".to_string()));
        assert!(cmd.iter().all(|a| !a.starts_with("--host=tcp")), "no TLS listener: {cmd:?}");
        let l = body.labels.unwrap();
        assert_eq!((label(&l, labels::STORE), label(&l, labels::STORE_ROLE)), (Some("p"), Some("filler")));
        assert!(!l.contains_key(labels::MANAGED) && !l.contains_key(labels::ENV), "not an environment: {l:?}");
        let hc = body.host_config.unwrap();
        assert_eq!((hc.auto_remove, hc.cap_add), (Some(true), Some(vec!["SYS_ADMIN".to_string()])));
        let m = &hc.mounts.unwrap()[0];
        assert_eq!((m.source.as_deref(), m.target.as_deref(), m.read_only), (Some("st"), Some("/didx/store"), None));
        assert_eq!(body.env, Some(vec!["DIDX_STORE=/didx/store".to_string()]));
        let draining = Filler { drain: true, ..f }.body(&Isolation::Privileged);
        assert_eq!(draining.env, Some(vec!["DIDX_STORE=/didx/store".to_string(), "DIDX_STORE_DRAIN=1".to_string()]));
    }
}
