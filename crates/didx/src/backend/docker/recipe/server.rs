//! An environment's server: its labels, storage and store mounts, dockerd's arguments, the
//! published TLS port, its variables and the files placed in it.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig, HostConfigCgroupnsModeEnum, Mount, MountType, MountVolumeOptions, PortBinding};

use super::base::{ENTRYPOINT_FILE, ENTRYPOINT_PATH, PUBLISHED_IP, SERVER_CERT_DIR, STORE_PATH, TLS_PORT, tls_port_key};
use crate::archive::Entry;
use crate::env::spec::{EnvSpec, PoolTag};
use crate::isolation::Isolation;
use crate::labels::{self, Role};
use crate::net::Block;
use crate::tls::{self, TlsMaterial};

/// A check run in a ready server on a rootless engine (see `start::check_inner_runs`): the
/// inner engine starts one container, made on the spot (the inner engine has no image, and
/// nothing can be pulled) from the server's `docker-init` (tini, a static program every
/// engine package ships: no library to carry), else from its `/bin/true` and the libraries
/// `ldd` lists; with no network; then removes it and its image. Exit 0 when the container ran;
/// otherwise the inner engine's words on stderr.
pub const INNER_CHECK: &str = r#"set -u
t=$(mktemp -d) || exit 1
trap 'rm -rf "$t"' EXIT
mkdir -p "$t/r/bin" || exit 1
if p=$(command -v docker-init); then
	cp -L "$p" "$t/r/bin/check" || exit 1
	set -- /bin/check --version
else
	for f in /bin/true $(ldd /bin/true 2>/dev/null); do
		case "$f" in /*) ;; *) continue ;; esac
		mkdir -p "$t/r$(dirname "$f")" && cp -L "$f" "$t/r$f" || exit 1
	done
	set -- /bin/true
fi
img=didx-inner-check:$$
tar -C "$t/r" -c . | docker import - "$img" >/dev/null || exit 1
rc=0
docker run --rm --network none "$img" "$@" >/dev/null 2>"$t/err" || rc=$?
docker rmi -f "$img" >/dev/null 2>&1
[ "$rc" = 0 ] || { cat "$t/err" >&2; exit "$rc"; }
"#;

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

/// An environment's server: what it is, from which the recipe derives its container.
#[derive(Clone, Copy)]
pub(crate) struct Server<'a> {
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
        if !self.spec.limits.is_empty() {
            l.insert(labels::LIMITS.to_string(), self.spec.limits.label());
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
        super::base::limit(&mut hc, &self.spec.limits);
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
            ENTRYPOINT_FILE,
            Entry { path: "didx/certs/server/ca.pem", mode: 0o644, data: tls.ca_pem.as_bytes() },
            Entry { path: "didx/certs/server/cert.pem", mode: 0o644, data: tls.server_cert_pem.as_bytes() },
            Entry { path: "didx/certs/server/key.pem", mode: 0o600, data: tls.server_key_pem.as_bytes() },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{label, spec, tag, tls};
    use super::*;
    use crate::backend::docker::recipe::ENTRYPOINT;

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
        s.store = Some(crate::env::spec::StoreMount {
            volume: "didx-store-20.10.24_dfsg1-overlay2".into(),
            engine: "Docker version 20.10.24+dfsg1, build 5d6db84".into(),
            seal: Some(crate::env::Seal { snapshot: "snap-2".into(), digest: "ab".repeat(32) }),
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
}
