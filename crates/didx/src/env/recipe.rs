//! The environment's recipe: what its server and client containers are made of (labels,
//! mounts, dockerd's arguments, the published port, the client's environment, the files placed
//! in them) as pure code, with no engine and no I/O. `env` and `env::pool` only sequence
//! engine calls over it; another backend (e.g. Kubernetes pods) would read the same recipe.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, Mount, MountType, MountVolumeOptions, PortBinding, PortMap};

use super::spec::EnvSpec;
use super::spec::PoolTag;
use crate::archive::Entry;
use crate::isolation::Isolation;
use crate::labels::{self, Role};
use crate::net::Block;
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
/// served. 2: the TLS port published on [`PUBLISHED_IP`]. 3: servers and clients auto-removed
/// and leased, pooled clients running and following their server, no shared files volume. 4:
/// servers in a private cgroup namespace; the caps profile allows every device.
pub(super) const VERSION: u32 = 4;
const SERVER_CERT_DIR: &str = "/didx/certs/server";
/// Where a server with `--store` (read-only) and a store's filler (read-write) mount the store.
pub const STORE_PATH: &str = "/didx/store";

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

/// dockerd's arguments: both listeners, mutual TLS, the inner addresses of the environment's
/// block, then the storage driver and `--dkropts` in the order given (so a later option can
/// override an earlier one).
pub(super) fn dockerd_args(spec: &EnvSpec, net: Option<Block>) -> Vec<String> {
    let mut args = vec![
        "--host=unix:///var/run/docker.sock".to_string(),
        format!("--host=tcp://0.0.0.0:{TLS_PORT}"),
        "--tlsverify".to_string(),
        format!("--tlscacert={SERVER_CERT_DIR}/ca.pem"),
        format!("--tlscert={SERVER_CERT_DIR}/cert.pem"),
        format!("--tlskey={SERVER_CERT_DIR}/key.pem"),
    ];
    args.extend(net.into_iter().flat_map(Block::dockerd_args));
    if !spec.storage_driver.is_empty() {
        args.push(format!("--storage-driver={}", spec.storage_driver));
    }
    args.extend(spec.dockerd_opts.iter().cloned());
    args
}

/// PID 1 of a container held from its start: wait for "go" on stdin (didx started it, then
/// attached to it, then put the entrypoint in place), then run the entrypoint with the
/// container's command, stdin still attached. End of input first (didx gone before "go"), or
/// no "go" within [`GO_WITHIN_SECS`] (didx gone before it attached): exit, and the engine's
/// auto-removal takes the container. (PID 1 ignores signals it does not trap, hence the
/// trap; the line is read in a child so that waiting for it answers the trap.)
pub(crate) const BOOTSTRAP: &str = concat!(
    r#"trap 'exit 0' TERM; (sleep "$DIDX_GO_WITHIN"; kill -TERM 1) & w=$!; exec 3<&0; "#,
    r#"(IFS= read -r go <&3; [ "$go" = go ]) & r=$!; "#,
    r#"if wait "$r"; then kill "$w" 2>/dev/null; exec 3<&-; exec "$@"; fi; exit 0"#
);

/// How long a held container waits for "go" before it ends itself: the longest a container
/// started by a didx that died before attaching to it stays.
pub(super) const GO_WITHIN_SECS: u64 = 15;

/// `body` made to be held by its didx from its start: stdin open to one attach (closed when
/// that attach ends), PID 1 the [`BOOTSTRAP`] running the body's entrypoint and command, and
/// `DIDX_LEASE=stdin` so the entrypoint keeps watching stdin.
pub(crate) fn held(mut body: ContainerCreateBody) -> ContainerCreateBody {
    let mut argv = body.entrypoint.take().unwrap_or_default();
    argv.extend(body.cmd.take().unwrap_or_default());
    body.entrypoint = Some(vec!["/bin/sh".to_string(), "-c".to_string(), BOOTSTRAP.to_string(), "didx-bootstrap".to_string()]);
    body.cmd = Some(argv);
    body.open_stdin = Some(true);
    body.stdin_once = Some(true);
    body.attach_stdin = Some(true);
    body.env.get_or_insert_with(Vec::new).extend(["DIDX_LEASE=stdin".to_string(), format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}")]);
    body
}

/// An environment's server: what it is, from which the recipe derives its container.
#[derive(Clone, Copy)]
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
    /// The block of the address range its inner engine takes its addresses from (claimed
    /// when the server is created; `None` when `--dkropts` chose them).
    pub net: Option<Block>,
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
        if let Some(b) = self.net {
            l.insert(labels::NET.to_string(), b.to_string());
        }
        l.insert(labels::POLICY.to_string(), self.spec.policy.clone());
        l.insert(labels::OWNER.to_string(), self.spec.owner.clone());
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
        // `--store`: the image store, read-only; the entrypoint seeds dockerd's storage from it.
        if let Some(store) = &self.spec.store {
            mounts.push(Mount {
                target: Some(STORE_PATH.to_string()),
                source: Some(store.volume.clone()),
                typ: Some(MountType::VOLUME),
                read_only: Some(true),
                ..Default::default()
            });
        }
        mounts
    }

    /// The server's create body with isolation `iso` (which the caller may change and ask
    /// again, as the engine refuses privileges or capabilities).
    pub fn body(&self, iso: &Isolation) -> ContainerCreateBody {
        let published = vec![PortBinding { host_ip: Some(PUBLISHED_IP.to_string()), host_port: Some(String::new()) }];
        let mut port_bindings = HashMap::from([(tls_port_key(), Some(published))]);
        // `--publish`: in the server's network namespace, where the inner engine's `-p` binds.
        port_bindings.extend(self.spec.publish.iter().map(|p| (p.port_key(), Some(vec![p.binding()]))));
        let mut exposed_ports = vec![tls_port_key()];
        exposed_ports.extend(self.spec.publish.iter().map(|p| p.port_key()));
        let mut hc = HostConfig {
            // The engine removes it (and its anonymous volumes) once it stops: when its lease
            // ends it, its idle timeout passes, or its engine restarts.
            auto_remove: Some(true),
            mounts: Some(self.mounts()),
            extra_hosts: Some(vec![format!("{}:127.0.0.1", tls::SERVER_NAME)]),
            port_bindings: Some(port_bindings),
            // Its own cgroup namespace whatever the engine's default (private on cgroup v2,
            // host on v1, or as configured): the entrypoint moves every process it sees in
            // the root cgroup, which must be the container's, never the host's.
            cgroupns_mode: Some(HostConfigCgroupnsModeEnum::PRIVATE),
            // `--network`: the engine network it joins instead of the default bridge.
            network_mode: self.spec.network.clone(),
            ..Default::default()
        };
        iso.apply(&mut hc);
        ContainerCreateBody {
            image: Some(self.spec.server_image.clone()),
            entrypoint: Some(vec![ENTRYPOINT_PATH.to_string(), "server".to_string()]),
            cmd: Some(dockerd_args(self.spec, self.net)),
            env: self.env(),
            exposed_ports: Some(exposed_ports),
            labels: Some(self.labels()),
            host_config: Some(hc),
            ..Default::default()
        }
    }

    /// The server's variables: a pooled one's idle timeout, the store's path with `--store`.
    fn env(&self) -> Option<Vec<String>> {
        let mut env: Vec<String> = self.pool.and_then(|p| p.idle_timeout).map(|t| format!("DIDX_IDLE_TIMEOUT={t}")).into_iter().collect();
        if let Some(store) = &self.spec.store {
            env.push(format!("DIDX_STORE={STORE_PATH}"));
            if !store.engine.is_empty() {
                env.push(format!("DIDX_STORE_ENGINE={}", store.engine));
            }
            if let Some(seal) = &store.seal {
                env.push(format!("DIDX_STORE_SNAPSHOT={}", seal.snapshot));
                env.push(format!("DIDX_STORE_SEAL={}", seal.digest));
            }
        }
        (!env.is_empty()).then_some(env)
    }

    /// The files uploaded at `/` before the server starts: the entrypoint and the server's
    /// certificates.
    pub fn files(&self) -> Vec<Entry<'a>> {
        let tls = self.tls;
        vec![
            Entry { path: "didx/entrypoint", mode: 0o755, data: ENTRYPOINT.as_bytes() },
            Entry { path: "didx/certs/server/ca.pem", mode: 0o644, data: tls.ca_pem.as_bytes() },
            Entry { path: "didx/certs/server/cert.pem", mode: 0o644, data: tls.server_cert_pem.as_bytes() },
            Entry { path: "didx/certs/server/key.pem", mode: 0o600, data: tls.server_key_pem.as_bytes() },
        ]
    }
}

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
            env: Some([Some(format!("DIDX_STORE={STORE_PATH}")), self.drain.then(|| "DIDX_STORE_DRAIN=1".to_string())].into_iter().flatten().collect()),
            labels: Some(HashMap::from([
                (labels::STORE.to_string(), self.prefix.to_string()),
                (labels::STORE_ROLE.to_string(), "filler".to_string()),
            ])),
            host_config: Some(hc),
            ..Default::default()
        }
    }
}

/// What a client container gets besides its image: the entrypoint and its certificates.
pub(super) enum ClientFiles<'a> {
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
pub(super) struct Client<'a> {
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
        let hc = HostConfig {
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
            ClientFiles::EntrypointOnly => vec![Entry { path: "didx/entrypoint", mode: 0o755, data: ENTRYPOINT.as_bytes() }],
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
        let args = dockerd_args(&s, Block::parse("10.200.16.0/20"));
        assert_eq!(
            args,
            [
                "--host=unix:///var/run/docker.sock",
                "--host=tcp://0.0.0.0:2376",
                "--tlsverify",
                "--tlscacert=/didx/certs/server/ca.pem",
                "--tlscert=/didx/certs/server/cert.pem",
                "--tlskey=/didx/certs/server/key.pem",
                "--bip=10.200.16.1/24",
                "--default-address-pool=base=10.200.24.0/21,size=24",
                "--storage-driver=vfs",
                "--debug",
                "--storage-driver=overlay2",
            ]
        );
        s.storage_driver.clear();
        s.dockerd_opts.clear();
        assert!(dockerd_args(&s, None).iter().all(|a| !a.starts_with("--storage-driver")));
        assert_eq!(dockerd_args(&s, None).len(), 6);
    }

    #[test]
    fn a_fresh_server_is_labelled_publishes_its_tls_port_on_loopback_and_keeps_its_storage_in_a_labelled_volume() {
        let (s, tls) = (spec(), tls());
        let server = Server { spec: &s, name: "dind_e1_server_latest", tls: &tls, created: 1234, pool: None, net: None };
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
        assert_eq!(body.cmd, Some(dockerd_args(&s, None)));
        assert_eq!(label(&l, labels::NET), None);
        assert_eq!((label(&l, labels::POLICY), label(&l, labels::OWNER)), (Some("anycase"), Some("me@here pid 1")));
        let claimed = Server { net: Block::parse("10.200.32.0/20"), ..server }.body(&Isolation::Privileged);
        assert_eq!(label(claimed.labels.as_ref().unwrap(), labels::NET), Some("10.200.32.0/20"));
        assert!(claimed.cmd.unwrap().contains(&"--bip=10.200.32.1/24".to_string()));
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
    fn a_server_with_the_store_mounts_it_read_only_and_is_told_where() {
        let (mut s, tls) = (spec(), tls());
        s.store = Some(super::super::spec::StoreMount {
            volume: "didx-store-20.10.24_dfsg1-overlay2".into(),
            engine: "Docker version 20.10.24+dfsg1, build 5d6db84".into(),
            seal: Some(crate::store::Seal { snapshot: "snap-2".into(), digest: "ab".repeat(32) }),
        });
        let body = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None, net: None }.body(&Isolation::Privileged);
        assert_eq!(
            body.env,
            Some(vec![
                "DIDX_STORE=/didx/store".to_string(),
                "DIDX_STORE_ENGINE=Docker version 20.10.24+dfsg1, build 5d6db84".to_string(),
                "DIDX_STORE_SNAPSHOT=snap-2".to_string(),
                format!("DIDX_STORE_SEAL={}", "ab".repeat(32)),
            ])
        );
        let mounts = body.host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].source.as_deref(), Some("didx-store-20.10.24_dfsg1-overlay2"));
        assert_eq!((mounts[1].target.as_deref(), mounts[1].read_only), (Some("/didx/store"), Some(true)));
        assert_eq!(mounts[1].volume_options, None, "the named store, not a labelled anonymous volume");
    }

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

    #[test]
    fn the_caps_isolation_replaces_privileged() {
        let (s, tls) = (spec(), tls());
        let server = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None, net: None };
        let hc = server.body(&Isolation::Caps(vec!["SYS_ADMIN".into()])).host_config.unwrap();
        assert_eq!(hc.privileged, None);
        assert_eq!(hc.cap_add, Some(vec!["SYS_ADMIN".to_string()]));
        assert_eq!(hc.device_cgroup_rules, Some(vec!["a *:* rwm".to_string()]));
        assert!(hc.port_bindings.is_some() && hc.mounts.is_some(), "isolation changes nothing else");
    }

    #[test]
    fn servers_get_their_own_cgroup_namespace_whatever_the_engine_default() {
        let (s, tls) = (spec(), tls());
        let server = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None, net: None };
        for iso in [Isolation::Privileged, Isolation::Caps(vec![])] {
            let hc = server.body(&iso).host_config.unwrap();
            assert_eq!(hc.cgroupns_mode, Some(HostConfigCgroupnsModeEnum::PRIVATE), "{iso:?}");
        }
    }

    #[test]
    fn a_pooled_server_carries_the_pool_labels_and_ends_itself_when_idle() {
        let (s, tls, tag) = (spec(), tls(), tag());
        let fresh = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None, net: None };
        let pooled = Server { pool: Some(&tag), ..Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None, net: None } };
        let l = pooled.labels();
        assert_eq!(label(&l, labels::POOL), Some("k1"));
        assert_eq!(label(&l, labels::POOL_SIZE), Some("3"));
        assert_eq!(label(&l, labels::POOL_FILLER), Some("h/l/1/t"));
        assert_eq!(label(&l, labels::POOL_DEADLINE), Some("999"));
        assert_eq!(label(&l, labels::POOL_IDLE), Some("1800"));
        let mut rest = l.clone();
        rest.retain(|k, _| !k.starts_with(labels::POOL));
        assert_eq!(rest, fresh.labels(), "otherwise the same labels");
        let body = pooled.body(&Isolation::Privileged);
        assert_eq!(body.env, Some(vec!["DIDX_IDLE_TIMEOUT=1800".to_string()]));
        assert_eq!(fresh.body(&Isolation::Privileged).env, None);
        let hc = body.host_config.unwrap();
        assert_eq!(hc.auto_remove, Some(true));
        let mounts = hc.mounts.unwrap();
        let targets: Vec<_> = mounts.iter().map(|m| m.target.as_deref().unwrap()).collect();
        assert_eq!(targets, ["/var/lib/docker"], "no volume shared with the client");
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
        assert_eq!(files(&pooled), fresh_files);
    }

    #[test]
    fn a_fresh_client_joins_the_server_namespace_with_the_docker_env_and_gets_its_certificates_uploaded() {
        let mut s = spec();
        s.volumes =
            ["/cache", "/data:ro", "/tmp:/work:ro", "named:/n"].iter().map(|v| VolumeSpec::parse(v, Path::new("/")).unwrap()).collect();
        let tls = tls();
        let client = Client { spec: &s, server_name: "dind_e1_server_latest", created: 77, files: ClientFiles::Upload(&tls), pool_key: None, engine_socket: None };
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
        let hc = Client { spec: &bare, server_name: "s", created: 1, files: ClientFiles::Upload(&tls), pool_key: None, engine_socket: None }.body().host_config.unwrap();
        assert_eq!((hc.binds, hc.mounts), (None, None));
    }

    #[test]
    fn a_pooled_client_is_labelled_follows_its_server_and_a_claiming_one_gets_copies() {
        let mut s = spec();
        let tls = tls();
        let pooled = Client { spec: &s, server_name: "dind_e1_server_latest", created: 5, files: ClientFiles::Upload(&tls), pool_key: Some("k1"), engine_socket: None };
        assert_eq!(pooled.files().len(), 4, "its certificates uploaded, as a fresh client's");
        let body = pooled.body();
        assert_eq!(label(body.labels.as_ref().unwrap(), labels::POOL), Some("k1"));
        let env = body.env.unwrap();
        assert!(env.contains(&"DIDX_FOLLOW=1".to_string()), "{env:?}");
        assert!(env.contains(&"DOCKER_CERT_PATH=/certs/client".to_string()), "{env:?}");
        let hc = body.host_config.unwrap();
        assert_eq!(hc.auto_remove, Some(true));
        assert_eq!(hc.network_mode.as_deref(), Some("container:dind_e1_server_latest"));
        assert_eq!(hc.mounts, None);
        // A fresh client does not follow (its own lease ends it).
        let fresh = Client { pool_key: None, ..Client { spec: &s, server_name: "x", created: 5, files: ClientFiles::Upload(&tls), pool_key: None, engine_socket: None } };
        assert!(!fresh.body().env.unwrap().contains(&"DIDX_FOLLOW=1".to_string()));
        // Claimed with -v: the run's mounts; its files are copied from the client it replaces.
        s.volumes = vec![VolumeSpec::parse("/cache", Path::new("/")).unwrap()];
        let claiming = Client { spec: &s, server_name: "x", created: 6, files: ClientFiles::Copied, pool_key: Some("k1"), engine_socket: None };
        assert!(claiming.files().is_empty());
        let mounts = claiming.body().host_config.unwrap().mounts.unwrap();
        assert_eq!(mounts.iter().map(|m| m.target.as_deref().unwrap()).collect::<Vec<_>>(), ["/cache"]);
    }

    #[test]
    fn a_held_container_boots_through_stdin_into_the_same_entrypoint_and_command() {
        let (s, tls) = (spec(), tls());
        let plain = Server { spec: &s, name: "n", tls: &tls, created: 1, pool: None, net: None }.body(&Isolation::Privileged);
        let h = held(plain.clone());
        assert_eq!(h.entrypoint.as_deref().unwrap()[..2], ["/bin/sh".to_string(), "-c".to_string()]);
        assert_eq!(h.entrypoint.as_deref().unwrap()[2], BOOTSTRAP);
        let mut argv = plain.entrypoint.clone().unwrap();
        argv.extend(plain.cmd.clone().unwrap());
        assert_eq!(h.cmd, Some(argv), "the bootstrap execs the plain entrypoint and command");
        assert_eq!((h.open_stdin, h.stdin_once, h.attach_stdin), (Some(true), Some(true), Some(true)));
        assert_eq!(h.env, Some(vec!["DIDX_LEASE=stdin".to_string(), format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}")]));
        assert_eq!((h.labels, h.host_config.map(|c| c.auto_remove)), (plain.labels, Some(Some(true))));
        let c = held(Client { spec: &s, server_name: "n", created: 1, files: ClientFiles::Upload(&tls), pool_key: None, engine_socket: None }.body());
        assert!(c.env.unwrap().ends_with(&["DIDX_LEASE=stdin".to_string(), format!("DIDX_GO_WITHIN={GO_WITHIN_SECS}")]));
        // The script: waits for "go" (bounded), exits quietly on anything else or on end of input.
        assert!(BOOTSTRAP.contains("IFS= read -r go <&3; [ \"$go\" = go ]") && BOOTSTRAP.contains("exec \"$@\""));
        assert!(BOOTSTRAP.contains("sleep \"$DIDX_GO_WITHIN\"; kill -TERM 1"));
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
