//! The environment's recipe: what its server and client containers are made of (labels,
//! mounts, dockerd's arguments, the published port, the client's environment, the files placed
//! in them) as pure code, with no engine and no I/O. `env` and `env::pool` only sequence
//! engine calls over it; another backend (e.g. Kubernetes pods) would read the same recipe.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions, PortBinding, PortMap};

use super::EnvSpec;
use super::pool::PoolTag;
use crate::archive::Entry;
use crate::isolation::Isolation;
use crate::labels::{self, Role};
use crate::spec::{VolumeSource, VolumeSpec};
use crate::tls::{self, TlsMaterial};

/// The entrypoint script placed at [`ENTRYPOINT_PATH`] in every container didx creates.
pub const ENTRYPOINT: &str = include_str!("../../../../image/entrypoint.sh");
/// Where the entrypoint is placed.
pub const ENTRYPOINT_PATH: &str = "/didx/entrypoint";
/// Port of the inner engine's TLS listener.
pub const TLS_PORT: u16 = 2376;
/// Where the client finds its certificates (docker:dind's convention).
pub const CLIENT_CERT_PATH: &str = "/certs/client";
/// The host address the server's TLS port is published on (never all addresses).
pub const PUBLISHED_IP: &str = "127.0.0.1";
/// The recipe's revision, part of the pool key: bumped whenever servers are made differently in
/// a way that matters to whoever claims one, so an environment pooled by an older didx is never
/// served. 2: the TLS port published on [`PUBLISHED_IP`].
pub(super) const VERSION: u32 = 3;
/// Where a pooled server mounts the volume holding its future client's files.
pub(super) const CLIENT_FILES_DIR: &str = "/didx-client";
/// Where a pooled (then claimed) client mounts that volume: its entrypoint and certificates
/// are there, and the entrypoint links [`CLIENT_CERT_PATH`] to [`POOLED_CLIENT_CERT_PATH`].
const POOLED_CLIENT_DIR: &str = "/didx";
/// Where a pooled client's certificates really are (see `client()` in image/entrypoint.sh).
pub(super) const POOLED_CLIENT_CERT_PATH: &str = "/didx/certs/client";
const SERVER_CERT_DIR: &str = "/didx/certs/server";

/// The engine's key for the TLS port, `2376/tcp`.
fn tls_port_key() -> String {
    format!("{TLS_PORT}/tcp")
}

/// The host port the engine chose for the server's TLS port on [`PUBLISHED_IP`], from the
/// server's inspected `NetworkSettings.Ports`; `None` when it publishes none there.
pub(super) fn published_port(ports: Option<&PortMap>) -> Option<u16> {
    ports?
        .get(&tls_port_key())?
        .as_ref()?
        .iter()
        .filter(|b| b.host_ip.as_deref() == Some(PUBLISHED_IP))
        .find_map(|b| b.host_port.as_deref().and_then(|p| p.parse().ok()).filter(|p| *p != 0))
}

/// dockerd's arguments: both listeners, mutual TLS, then the storage driver and `--dkropts` in
/// the order given (so a later option can override an earlier one).
pub(super) fn dockerd_args(spec: &EnvSpec) -> Vec<String> {
    let mut args = vec![
        "--host=unix:///var/run/docker.sock".to_string(),
        format!("--host=tcp://0.0.0.0:{TLS_PORT}"),
        "--tlsverify".to_string(),
        format!("--tlscacert={SERVER_CERT_DIR}/ca.pem"),
        format!("--tlscert={SERVER_CERT_DIR}/cert.pem"),
        format!("--tlskey={SERVER_CERT_DIR}/key.pem"),
    ];
    if !spec.storage_driver.is_empty() {
        args.push(format!("--storage-driver={}", spec.storage_driver));
    }
    args.extend(spec.dockerd_opts.iter().cloned());
    args
}

/// An environment's server: what it is, from which the recipe derives its container.
pub(super) struct Server<'a> {
    /// The environment.
    pub spec: &'a EnvSpec,
    /// The container's name.
    pub name: &'a str,
    /// The environment's TLS material.
    pub tls: &'a TlsMaterial,
    /// Unix time the environment was created.
    pub created: u64,
    /// The pool's tag, for a server started for the warm pool.
    pub pool: Option<&'a PoolTag>,
}

impl<'a> Server<'a> {
    /// The server container's labels.
    pub fn labels(&self) -> HashMap<String, String> {
        let mut l = labels::for_resource(self.spec.id.as_str(), Role::Server, self.created);
        l.insert(labels::VERSION.to_string(), self.spec.sv.as_str().to_string());
        l.insert(labels::EXPIRES.to_string(), self.tls.expires.to_string());
        if let Some(p) = self.pool {
            l.extend(p.labels());
        }
        l
    }

    /// Its labelled anonymous volumes: dockerd's storage, and for a pooled server the one
    /// holding its future client's files.
    fn mounts(&self) -> Vec<Mount> {
        let volume_at = |target: &str| Mount {
            target: Some(target.to_string()),
            typ: Some(MountType::VOLUME),
            volume_options: Some(MountVolumeOptions {
                labels: Some(labels::for_resource(self.spec.id.as_str(), Role::Data, self.created)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut mounts = vec![volume_at("/var/lib/docker")];
        if self.pool.is_some() {
            mounts.push(volume_at(CLIENT_FILES_DIR));
        }
        mounts
    }

    /// The server's create body with isolation `iso` (which the caller may change and ask
    /// again, as the engine refuses privileges or capabilities).
    pub fn body(&self, iso: &Isolation) -> ContainerCreateBody {
        let published = vec![PortBinding { host_ip: Some(PUBLISHED_IP.to_string()), host_port: Some(String::new()) }];
        let mut hc = HostConfig {
            // The engine removes it (and its anonymous volumes) once it stops: when its lease
            // ends it, its idle timeout passes, or its engine restarts.
            auto_remove: Some(true),
            mounts: Some(self.mounts()),
            extra_hosts: Some(vec![format!("{}:127.0.0.1", tls::SERVER_NAME)]),
            port_bindings: Some(HashMap::from([(tls_port_key(), Some(published))])),
            ..Default::default()
        };
        iso.apply(&mut hc);
        ContainerCreateBody {
            image: Some(self.spec.server_image.clone()),
            entrypoint: Some(vec![ENTRYPOINT_PATH.to_string(), "server".to_string()]),
            cmd: Some(dockerd_args(self.spec)),
            env: self.pool.and_then(|p| p.idle_timeout).map(|t| vec![format!("DIDX_IDLE_TIMEOUT={t}")]),
            exposed_ports: Some(vec![tls_port_key()]),
            labels: Some(self.labels()),
            host_config: Some(hc),
            ..Default::default()
        }
    }

    /// The files uploaded at `/` before the server starts: the entrypoint and the server's
    /// certificates, and for a pooled server its future client's files too.
    pub fn files(&self) -> Vec<Entry<'a>> {
        let tls = self.tls;
        let mut files = vec![
            Entry { path: "didx/entrypoint", mode: 0o755, data: ENTRYPOINT.as_bytes() },
            Entry { path: "didx/certs/server/ca.pem", mode: 0o644, data: tls.ca_pem.as_bytes() },
            Entry { path: "didx/certs/server/cert.pem", mode: 0o644, data: tls.server_cert_pem.as_bytes() },
            Entry { path: "didx/certs/server/key.pem", mode: 0o600, data: tls.server_key_pem.as_bytes() },
        ];
        if self.pool.is_some() {
            // The future client's files, in the volume its claimer mounts at /didx.
            files.extend([
                Entry { path: "didx-client/entrypoint", mode: 0o755, data: ENTRYPOINT.as_bytes() },
                Entry { path: "didx-client/certs/client/ca.pem", mode: 0o644, data: tls.ca_pem.as_bytes() },
                Entry { path: "didx-client/certs/client/cert.pem", mode: 0o644, data: tls.client_cert_pem.as_bytes() },
                Entry { path: "didx-client/certs/client/key.pem", mode: 0o600, data: tls.client_key_pem.as_bytes() },
            ]);
        }
        files
    }
}

/// What a client container gets besides its image: the entrypoint and its certificates.
pub(super) enum ClientFiles<'a> {
    /// Uploaded into the client when it is created.
    Upload(&'a TlsMaterial),
    /// Already in a volume a pooled server filled ([`CLIENT_FILES_DIR`] there), mounted at
    /// `/didx`: nothing to upload when a run claims the environment. The entrypoint links
    /// `/certs/client` to the certificates in it.
    Volume {
        /// The volume's name.
        name: String,
        /// The pool key, labelled on the client.
        pool_key: String,
    },
}

impl ClientFiles<'_> {
    /// The directory of the client's `ca.pem`, `cert.pem` and `key.pem` (not a symbolic link).
    pub fn cert_dir(&self) -> &'static str {
        match self {
            ClientFiles::Upload(_) => CLIENT_CERT_PATH,
            ClientFiles::Volume { .. } => POOLED_CLIENT_CERT_PATH,
        }
    }
}

/// An environment's client: fresh (its files uploaded), pooled or claimed (its files in the
/// pooled server's volume).
pub(super) struct Client<'a> {
    /// The environment (its `volumes` are the client's mounts).
    pub spec: &'a EnvSpec,
    /// The server container's name, whose network namespace the client joins.
    pub server_name: &'a str,
    /// Unix time the client is created.
    pub created: u64,
    /// Where its entrypoint and certificates come from.
    pub files: ClientFiles<'a>,
}

impl<'a> Client<'a> {
    /// The client container's labels.
    pub fn labels(&self) -> HashMap<String, String> {
        let mut l = labels::for_resource(self.spec.id.as_str(), Role::Client, self.created);
        l.insert(labels::VERSION.to_string(), self.spec.cv.as_str().to_string());
        if let ClientFiles::Volume { pool_key, .. } = &self.files {
            l.insert(labels::POOL.to_string(), pool_key.clone());
        }
        l
    }

    /// The client's create body.
    pub fn body(&self) -> ContainerCreateBody {
        let spec = self.spec;
        let binds: Vec<String> = spec.volumes.iter().filter_map(VolumeSpec::bind).collect();
        let mut mounts: Vec<Mount> = spec
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
        if let ClientFiles::Volume { name: volume, .. } = &self.files {
            mounts.push(Mount {
                target: Some(POOLED_CLIENT_DIR.to_string()),
                source: Some(volume.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            });
        }
        let hc = HostConfig {
            auto_remove: Some(true),
            network_mode: Some(format!("container:{}", self.server_name)),
            binds: (!binds.is_empty()).then_some(binds),
            mounts: (!mounts.is_empty()).then_some(mounts),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(spec.client_image.clone()),
            entrypoint: Some(vec![ENTRYPOINT_PATH.to_string(), "client".to_string()]),
            cmd: Some(vec![]),
            env: Some(vec![
                format!("DOCKER_HOST=tcp://{}:{TLS_PORT}", tls::SERVER_NAME),
                "DOCKER_TLS_VERIFY=1".to_string(),
                format!("DOCKER_CERT_PATH={CLIENT_CERT_PATH}"),
                "DOCKER_TLS_CERTDIR=/certs".to_string(),
                format!("DIDX_ENV={}", spec.id),
            ]
            .into_iter()
            // A pooled (or claimed) client follows its server: it ends when the server's
            // dockerd no longer listens (see the entrypoint).
            .chain(matches!(self.files, ClientFiles::Volume { .. }).then(|| "DIDX_FOLLOW=1".to_string()))
            .collect()),
            labels: Some(self.labels()),
            host_config: Some(hc),
            ..Default::default()
        }
    }

    /// The files uploaded at `/` before the client starts (none when they are in a volume).
    pub fn files(&self) -> Vec<Entry<'a>> {
        match self.files {
            ClientFiles::Volume { .. } => vec![],
            ClientFiles::Upload(tls) => vec![
                Entry { path: "didx/entrypoint", mode: 0o755, data: ENTRYPOINT.as_bytes() },
                Entry { path: "certs/client/ca.pem", mode: 0o644, data: tls.ca_pem.as_bytes() },
                Entry { path: "certs/client/cert.pem", mode: 0o644, data: tls.client_cert_pem.as_bytes() },
                Entry { path: "certs/client/key.pem", mode: 0o600, data: tls.client_key_pem.as_bytes() },
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::EnvId;
    use crate::spec::{IsolationMode, Version};
    use std::path::Path;
    use std::time::Duration;

    fn spec() -> EnvSpec {
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
            lease: false,
        }
    }

    fn tls() -> TlsMaterial {
        TlsMaterial::generate(&["dind_e1_server_latest"]).unwrap()
    }

    fn tag() -> PoolTag {
        PoolTag { key: "k1".into(), size: 3, filler: "h/l/1/t".into(), deadline: 999, idle_timeout: Some(1800) }
    }

    fn label<'m>(l: &'m HashMap<String, String>, k: &str) -> Option<&'m str> {
        l.get(k).map(String::as_str)
    }

    #[test]
    fn dockerd_listens_on_both_sockets_with_tls_then_takes_the_driver_and_dkropts_in_order() {
        let mut s = spec();
        let args = dockerd_args(&s);
        assert_eq!(
            args,
            [
                "--host=unix:///var/run/docker.sock",
                "--host=tcp://0.0.0.0:2376",
                "--tlsverify",
                "--tlscacert=/didx/certs/server/ca.pem",
                "--tlscert=/didx/certs/server/cert.pem",
                "--tlskey=/didx/certs/server/key.pem",
                "--storage-driver=vfs",
                "--debug",
                "--storage-driver=overlay2",
            ]
        );
        s.storage_driver.clear();
        s.dockerd_opts.clear();
        assert!(dockerd_args(&s).iter().all(|a| !a.starts_with("--storage-driver")));
        assert_eq!(dockerd_args(&s).len(), 6);
    }

    #[test]
    fn a_fresh_server_is_labelled_publishes_its_tls_port_on_loopback_and_keeps_its_storage_in_a_labelled_volume() {
        let (s, tls) = (spec(), tls());
        let server = Server { spec: &s, name: "dind_e1_server_latest", tls: &tls, created: 1234, pool: None };
        let body = server.body(&Isolation::Privileged);
        let l = body.labels.clone().unwrap();
        assert_eq!(label(&l, labels::MANAGED), Some("true"));
        assert_eq!(label(&l, labels::ENV), Some("e1"));
        assert_eq!(label(&l, labels::ROLE), Some("server"));
        assert_eq!(label(&l, labels::CREATED), Some("1234"));
        assert_eq!(label(&l, labels::VERSION), Some("latest"));
        assert_eq!(label(&l, labels::EXPIRES), Some(tls.expires.to_string().as_str()));
        assert!(l.keys().all(|k| !k.starts_with(labels::POOL)), "no pool labels: {l:?}");
        assert_eq!(body.image.as_deref(), Some("server:img"));
        assert_eq!(body.entrypoint, Some(vec!["/didx/entrypoint".to_string(), "server".to_string()]));
        assert_eq!(body.cmd, Some(dockerd_args(&s)));
        assert_eq!(body.exposed_ports, Some(vec!["2376/tcp".to_string()]));
        let hc = body.host_config.unwrap();
        assert_eq!(hc.privileged, Some(true));
        assert_eq!(hc.extra_hosts, Some(vec!["docker:127.0.0.1".to_string()]));
        let bindings = hc.port_bindings.unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(
            bindings["2376/tcp"],
            Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
            "loopback only, a port the engine chooses"
        );
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].target.as_deref(), Some("/var/lib/docker"));
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[0].source, None, "anonymous");
        let vl = mounts[0].volume_options.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!((label(vl, labels::ENV), label(vl, labels::ROLE), label(vl, labels::CREATED)), (Some("e1"), Some("data"), Some("1234")));
        assert_eq!(label(vl, labels::MANAGED), Some("true"));
    }

    #[test]
    fn the_caps_isolation_replaces_privileged() {
        let (s, tls) = (spec(), tls());
        let server = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None };
        let hc = server.body(&Isolation::Caps(vec!["SYS_ADMIN".into()])).host_config.unwrap();
        assert_eq!(hc.privileged, None);
        assert_eq!(hc.cap_add, Some(vec!["SYS_ADMIN".to_string()]));
        assert!(hc.port_bindings.is_some() && hc.mounts.is_some(), "isolation changes nothing else");
    }

    #[test]
    fn a_pooled_server_carries_the_pool_labels_and_its_future_clients_files() {
        let (s, tls, tag) = (spec(), tls(), tag());
        let fresh = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None };
        let pooled = Server { pool: Some(&tag), ..Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None } };
        let l = pooled.labels();
        assert_eq!(label(&l, labels::POOL), Some("k1"));
        assert_eq!(label(&l, labels::POOL_SIZE), Some("3"));
        assert_eq!(label(&l, labels::POOL_FILLER), Some("h/l/1/t"));
        assert_eq!(label(&l, labels::POOL_DEADLINE), Some("999"));
        let mut rest = l.clone();
        rest.retain(|k, _| !k.starts_with(labels::POOL));
        assert_eq!(rest, fresh.labels(), "otherwise the same labels");
        let mounts = pooled.body(&Isolation::Privileged).host_config.unwrap().mounts.unwrap();
        let targets: Vec<_> = mounts.iter().map(|m| m.target.as_deref().unwrap()).collect();
        assert_eq!(targets, ["/var/lib/docker", CLIENT_FILES_DIR]);
        assert!(mounts.iter().all(|m| m.volume_options.as_ref().unwrap().labels.as_ref().unwrap()[labels::ROLE] == "data"));

        let files = |srv: &Server| srv.files().iter().map(|e| (e.path.to_string(), e.mode, e.data.to_vec())).collect::<Vec<_>>();
        let fresh_files = files(&fresh);
        assert_eq!(
            fresh_files.iter().map(|(p, m, _)| (p.as_str(), *m)).collect::<Vec<_>>(),
            [
                ("didx/entrypoint", 0o755),
                ("didx/certs/server/ca.pem", 0o644),
                ("didx/certs/server/cert.pem", 0o644),
                ("didx/certs/server/key.pem", 0o600),
            ]
        );
        assert_eq!(fresh_files[0].2, ENTRYPOINT.as_bytes());
        assert_eq!(fresh_files[3].2, tls.server_key_pem.as_bytes());
        let pooled_files = files(&pooled);
        assert_eq!(&pooled_files[..4], &fresh_files[..]);
        assert_eq!(
            pooled_files[4..].iter().map(|(p, m, _)| (p.as_str(), *m)).collect::<Vec<_>>(),
            [
                ("didx-client/entrypoint", 0o755),
                ("didx-client/certs/client/ca.pem", 0o644),
                ("didx-client/certs/client/cert.pem", 0o644),
                ("didx-client/certs/client/key.pem", 0o600),
            ]
        );
        assert_eq!(pooled_files[7].2, tls.client_key_pem.as_bytes(), "the client's key, not the server's");
        // Where the entrypoint expects them once the volume is mounted at /didx in the client.
        assert!(ENTRYPOINT.contains(&format!("ln -s {POOLED_CLIENT_CERT_PATH} {CLIENT_CERT_PATH}")));
    }

    #[test]
    fn a_fresh_client_joins_the_server_namespace_with_the_docker_env_and_gets_its_certificates_uploaded() {
        let mut s = spec();
        s.volumes =
            ["/cache", "/data:ro", "/tmp:/work:ro", "named:/n"].iter().map(|v| VolumeSpec::parse(v, Path::new("/")).unwrap()).collect();
        let tls = tls();
        let client = Client { spec: &s, server_name: "dind_e1_server_latest", created: 77, files: ClientFiles::Upload(&tls) };
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
        assert_eq!(client.files.cert_dir(), CLIENT_CERT_PATH);
        // Without -v: no binds or mounts at all.
        let bare = spec();
        let hc = Client { spec: &bare, server_name: "s", created: 1, files: ClientFiles::Upload(&tls) }.body().host_config.unwrap();
        assert_eq!((hc.binds, hc.mounts), (None, None));
    }

    #[test]
    fn a_pooled_or_claimed_client_mounts_the_files_volume_instead_of_uploading() {
        let mut s = spec();
        fn volume(s: &EnvSpec) -> Client<'_> {
            Client {
                spec: s,
                server_name: "dind_e1_server_latest",
                created: 5,
                files: ClientFiles::Volume { name: "vol1".into(), pool_key: "k1".into() },
            }
        }
        let pooled = volume(&s);
        assert!(pooled.files().is_empty());
        assert_eq!(pooled.files.cert_dir(), POOLED_CLIENT_CERT_PATH);
        let body = pooled.body();
        assert_eq!(label(body.labels.as_ref().unwrap(), labels::POOL), Some("k1"));
        let env = body.env.unwrap();
        assert!(env.contains(&"DOCKER_CERT_PATH=/certs/client".to_string()), "the entrypoint links it: {env:?}");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.network_mode.as_deref(), Some("container:dind_e1_server_latest"));
        let mounts = hc.mounts.unwrap();
        assert_eq!(mounts.len(), 1);
        assert_eq!((mounts[0].target.as_deref(), mounts[0].source.as_deref()), (Some("/didx"), Some("vol1")));
        assert!(mounts[0].volume_options.is_none(), "the server's volume, already labelled");
        // Claimed with -v: the run's mounts, then the files volume.
        s.volumes = vec![VolumeSpec::parse("/cache", Path::new("/")).unwrap()];
        let mounts = volume(&s).body().host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.iter().map(|m| m.target.as_deref().unwrap()).collect::<Vec<_>>(), ["/cache", "/didx"]);
    }

    #[test]
    fn the_published_port_is_the_loopback_binding_of_the_tls_port() {
        let b = |ip: &str, port: &str| PortBinding { host_ip: Some(ip.into()), host_port: Some(port.into()) };
        let map = |k: &str, v: Option<Vec<PortBinding>>| PortMap::from([(k.to_string(), v)]);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("127.0.0.1", "32768")])))), Some(32768));
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("0.0.0.0", "1"), b("::", "2"), b("127.0.0.1", "3")])))), Some(3));
        // Absent, not published (an older didx), elsewhere only, another port, not yet chosen.
        assert_eq!(published_port(None), None);
        assert_eq!(published_port(Some(&PortMap::new())), None);
        assert_eq!(published_port(Some(&map("2376/tcp", None))), None);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("0.0.0.0", "32768")])))), None);
        assert_eq!(published_port(Some(&map("2375/tcp", Some(vec![b("127.0.0.1", "32768")])))), None);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("127.0.0.1", "")])))), None);
        assert_eq!(published_port(Some(&map("2376/tcp", Some(vec![b("127.0.0.1", "0")])))), None);
    }
}
