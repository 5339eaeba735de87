//! An environment's client: its labels, mounts and binds, the variables that point its docker
//! at the inner engine (or the host's), and the files placed in it.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};

use super::base::{CLIENT_CERT_PATH, ENTRYPOINT_FILE, ENTRYPOINT_PATH, TLS_PORT};
use crate::archive::Entry;
use crate::env::spec::EnvSpec;
use crate::labels::{self, Role};
use crate::spec::{VolumeSource, VolumeSpec};
use crate::tls::{self, TlsMaterial};

/// What a client container gets besides its image: the entrypoint and its certificates.
pub(crate) enum ClientFiles<'a> {
    /// Uploaded into the client when it is created.
    Upload(&'a TlsMaterial),
    /// Copied in from the client it replaces (a claim that adds mounts): nothing to upload
    /// from the recipe.
    Copied,
    /// The entrypoint only (`--engine host`: no certificates, the engine is the host's).
    EntrypointOnly,
}

/// An environment's client: fresh (its files uploaded), pooled or claimed (its files in the
/// pooled server's volume).
pub(crate) struct Client<'a> {
    /// The environment (its `volumes` are the client's mounts).
    pub spec: &'a EnvSpec,
    /// The server container's name, whose network namespace the client joins.
    pub server_name: &'a str,
    /// Unix time the client is created.
    pub created: u64,
    /// Where its entrypoint and certificates come from.
    pub files: ClientFiles<'a>,
    /// The pool key, for a client made for the warm pool (or replacing one at its claim): it
    /// is labelled with it and follows its server (ends when the server's dockerd stops
    /// listening; see the entrypoint).
    pub pool_key: Option<&'a str>,
    /// For a pooled client of a named pool (`DIDX_POOL_NAME`): the pool's name, a label as on
    /// its server, so each member says whose pool it is.
    pub pool_name: Option<&'a str>,
    /// With `--engine host`: the engine-API proxy's socket (a path on the engine's machine),
    /// bound at `/var/run/docker.sock`; the client then has no server (`server_name` unused).
    pub engine_socket: Option<&'a str>,
}

impl<'a> Client<'a> {
    /// The client container's labels.
    pub fn labels(&self) -> HashMap<String, String> {
        let mut l = labels::for_resource(self.spec.id.as_str(), Role::Client, self.created);
        l.insert(labels::VERSION.to_string(), self.spec.cv.as_str().to_string());
        if let Some(key) = self.pool_key {
            l.insert(labels::POOL.to_string(), key.to_string());
            if let Some(name) = self.pool_name {
                l.insert(labels::POOL_NAME.to_string(), name.to_string());
            }
        }
        // `--engine host`: no server to carry what `didx ls` shows, so the client does.
        if self.engine_socket.is_some() {
            l.insert(labels::ENGINE.to_string(), crate::spec::EngineMode::Host.as_str().to_string());
            l.insert(labels::POLICY.to_string(), self.spec.policy.clone());
            l.insert(labels::OWNER.to_string(), self.spec.owner.clone());
        }
        l
    }

    /// The client's create body.
    pub fn body(&self) -> ContainerCreateBody {
        let spec = self.spec;
        let mut binds: Vec<String> = spec.volumes.iter().filter_map(VolumeSpec::bind).collect();
        if let Some(socket) = self.engine_socket {
            binds.push(format!("{socket}:{}", crate::dood::CLIENT_SOCKET));
        }
        let mounts: Vec<Mount> = spec
            .volumes
            .iter()
            .filter(|v| v.source == VolumeSource::Anonymous)
            .map(|v| Mount {
                target: Some(v.target.clone()),
                typ: Some(MountType::VOLUME),
                read_only: v.mode.as_deref().map(|m| m.split(',').any(|o| o == "ro")),
                volume_options: Some(MountVolumeOptions {
                    labels: Some(labels::for_resource(spec.id.as_str(), Role::Client, self.created)),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect();
        let mut hc = HostConfig {
            auto_remove: Some(true),
            // `--engine host`: no server namespace to join; `--network` (else the default bridge).
            network_mode: match self.engine_socket {
                None => Some(format!("container:{}", self.server_name)),
                Some(_) => spec.network.clone(),
            },
            binds: (!binds.is_empty()).then_some(binds),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        super::base::limit(&mut hc, &spec.limits);
        ContainerCreateBody {
            image: Some(spec.client_image.clone()),
            entrypoint: Some(vec![ENTRYPOINT_PATH.to_string(), "client".to_string()]),
            cmd: Some(vec![]),
            env: Some(match self.engine_socket {
                None => self.inner_engine_env(),
                Some(_) => vec![
                    format!("DOCKER_HOST=unix://{}", crate::dood::CLIENT_SOCKET),
                    format!("DIDX_ENV={}", spec.id),
                    "DIDX_ENGINE=host".to_string(),
                ],
            }),
            labels: Some(self.labels()),
            host_config: Some(hc),
            ..Default::default()
        }
    }

    /// The variables that point the client's docker at its inner engine.
    fn inner_engine_env(&self) -> Vec<String> {
        vec![
            format!("DOCKER_HOST=tcp://{}:{TLS_PORT}", tls::SERVER_NAME),
            "DOCKER_TLS_VERIFY=1".to_string(),
            format!("DOCKER_CERT_PATH={CLIENT_CERT_PATH}"),
            "DOCKER_TLS_CERTDIR=/certs".to_string(),
            format!("DIDX_ENV={}", self.spec.id),
        ]
        .into_iter()
        // A pooled (or claimed) client follows its server: it ends when the server's
        // dockerd no longer listens (see the entrypoint).
        .chain(self.pool_key.map(|_| "DIDX_FOLLOW=1".to_string()))
        .collect()
    }

    /// The files uploaded at `/` before the client starts (none when copied from another).
    pub fn files(&self) -> Vec<Entry<'a>> {
        match self.files {
            ClientFiles::Copied => vec![],
            ClientFiles::EntrypointOnly => vec![ENTRYPOINT_FILE],
            ClientFiles::Upload(tls) => vec![
                ENTRYPOINT_FILE,
                Entry { path: "certs/client/ca.pem", mode: 0o644, data: tls.ca_pem.as_bytes() },
                Entry { path: "certs/client/cert.pem", mode: 0o644, data: tls.client_cert_pem.as_bytes() },
                Entry { path: "certs/client/key.pem", mode: 0o600, data: tls.client_key_pem.as_bytes() },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testing::{label, spec, tls};
    use super::*;
    use crate::backend::docker::recipe::ENTRYPOINT;

    #[test]
    fn a_fresh_client_joins_the_server_namespace_with_the_docker_env_and_gets_its_certificates_uploaded() {
        let mut s = spec();
        s.volumes =
            ["/cache", "/data:ro", "/tmp:/work:ro", "named:/n"].iter().map(|v| VolumeSpec::parse(v, Path::new("/")).unwrap()).collect();
        let tls = tls();
        let client = Client {
            spec: &s,
            server_name: "dind_e1_server_latest",
            created: 77,
            files: ClientFiles::Upload(&tls),
            pool_key: None,
            pool_name: None,
            engine_socket: None,
        };
        let body = client.body();
        assert_eq!(body.image.as_deref(), Some("client:img"));
        assert_eq!(body.entrypoint, Some(vec!["/didx/entrypoint".to_string(), "client".to_string()]));
        assert_eq!(body.cmd, Some(vec![]));
        assert_eq!(
            body.env.unwrap(),
            [
                "DOCKER_HOST=tcp://docker:2376",
                "DOCKER_TLS_VERIFY=1",
                "DOCKER_CERT_PATH=/certs/client",
                "DOCKER_TLS_CERTDIR=/certs",
                "DIDX_ENV=e1"
            ]
        );
        let l = body.labels.unwrap();
        assert_eq!(
            (label(&l, labels::ROLE), label(&l, labels::VERSION), label(&l, labels::CREATED)),
            (Some("client"), Some("24.0"), Some("77"))
        );
        assert_eq!(label(&l, labels::POOL), None);
        assert!(body.exposed_ports.is_none());
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:dind_e1_server_latest"));
        assert!(hc.port_bindings.is_none() && hc.privileged.is_none(), "the client publishes nothing and is not privileged");
        assert_eq!(hc.binds, Some(vec!["/tmp:/work:ro".to_string(), "named:/n".to_string()]));
        let mounts = hc.mounts.unwrap();
        assert_eq!(
            mounts.iter().map(|m| (m.target.as_deref().unwrap(), m.read_only)).collect::<Vec<_>>(),
            [("/cache", None), ("/data", Some(true))]
        );
        for m in &mounts {
            let vl = m.volume_options.as_ref().unwrap().labels.as_ref().unwrap();
            assert_eq!((label(vl, labels::ENV), label(vl, labels::ROLE)), (Some("e1"), Some("client")));
        }
        let files: Vec<_> = client.files().iter().map(|e| (e.path, e.mode, e.data)).collect();
        assert_eq!(
            files,
            [
                ("didx/entrypoint", 0o755, ENTRYPOINT.as_bytes()),
                ("certs/client/ca.pem", 0o644, tls.ca_pem.as_bytes()),
                ("certs/client/cert.pem", 0o644, tls.client_cert_pem.as_bytes()),
                ("certs/client/key.pem", 0o600, tls.client_key_pem.as_bytes()),
            ]
        );
        // Without -v: no binds or mounts at all.
        let bare = spec();
        let hc = Client {
            spec: &bare,
            server_name: "s",
            created: 1,
            files: ClientFiles::Upload(&tls),
            pool_key: None,
            pool_name: None,
            engine_socket: None,
        }
        .body()
        .host_config
        .unwrap();
        assert_eq!((hc.binds, hc.mounts), (None, None));
    }

    #[test]
    fn a_pooled_client_is_labelled_follows_its_server_and_a_claiming_one_gets_copies() {
        let mut s = spec();
        let tls = tls();
        let pooled = Client {
            spec: &s,
            server_name: "dind_e1_server_latest",
            created: 5,
            files: ClientFiles::Upload(&tls),
            pool_key: Some("k1"),
            pool_name: None,
            engine_socket: None,
        };
        assert_eq!(pooled.files().len(), 4, "its certificates uploaded, as a fresh client's");
        let body = pooled.body();
        assert_eq!(label(body.labels.as_ref().unwrap(), labels::POOL), Some("k1"));
        assert_eq!(label(body.labels.as_ref().unwrap(), labels::POOL_NAME), None, "the default pool");
        let named = Client {
            spec: &s,
            server_name: "x",
            created: 5,
            files: ClientFiles::Upload(&tls),
            pool_key: Some("k1"),
            pool_name: Some("ci-1"),
            engine_socket: None,
        };
        assert_eq!(label(&named.labels(), labels::POOL_NAME), Some("ci-1"), "a named pool's client says whose it is");
        let env = body.env.unwrap();
        assert!(env.contains(&"DIDX_FOLLOW=1".to_string()), "{env:?}");
        assert!(env.contains(&"DOCKER_CERT_PATH=/certs/client".to_string()), "{env:?}");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.auto_remove, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("container:dind_e1_server_latest"));
        assert_eq!(hc.mounts, None);
        // A fresh client does not follow (its own lease ends it).
        let fresh = Client {
            pool_key: None,
            pool_name: None,
            ..Client {
                spec: &s,
                server_name: "x",
                created: 5,
                files: ClientFiles::Upload(&tls),
                pool_key: None,
                pool_name: None,
                engine_socket: None,
            }
        };
        assert!(!fresh.body().env.unwrap().contains(&"DIDX_FOLLOW=1".to_string()));
        // Claimed with -v: the run's mounts; its files are copied from the client it replaces.
        s.volumes = vec![VolumeSpec::parse("/cache", Path::new("/")).unwrap()];
        let claiming = Client {
            spec: &s,
            server_name: "x",
            created: 6,
            files: ClientFiles::Copied,
            pool_key: Some("k1"),
            pool_name: None,
            engine_socket: None,
        };
        assert!(claiming.files().is_empty());
        let mounts = claiming.body().host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.iter().map(|m| m.target.as_deref().unwrap()).collect::<Vec<_>>(), ["/cache"]);
    }
}
