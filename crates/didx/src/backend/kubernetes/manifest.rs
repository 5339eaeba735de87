//! The Kubernetes objects one sandbox is made of, as pure code: a **Job** whose pod holds the
//! server (dockerd, its storage on an `emptyDir`) and the client beside it, and a **Secret**
//! owned by the Job holding the files didx places in them (the entrypoint and the
//! environment's certificates). Both are read off the same recipe as on Docker
//! (`backend/docker/recipe`): the server's and client's image, entrypoint, command and
//! variables, their labels and their files; what Docker does with host configuration, the pod
//! does with its own fields:
//!
//! - the server's privileges: `privileged` (isolation `auto` and `privileged`), every
//!   capability with seccomp and AppArmor unconfined (`caps`), or none at all under a runtime
//!   class that gives a container what dockerd needs (`--runtime-class`, e.g. sysbox);
//! - the name `docker` for the server (a host alias to the pod's loopback, which the
//!   containers share, as the client reaches it on Docker);
//! - reaping: the containers are held as on Docker (stdin open to one attach, the entrypoint
//!   ending its container when that attach ends or its beats stop), `activeDeadlineSeconds`
//!   bounds the pod whatever happens to didx, `ttlSecondsAfterFinished` lets the cluster
//!   delete the ended Job, and the Secret goes with the Job (its owner);
//! - nothing of the node: no host path, no host network, PID or IPC, no host port, no service
//!   account token.
//!
//! [`pod_security`] says which Pod Security Standard level a pod meets, so that `didx k8s
//! render` can say which namespaces admit it.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    AppArmorProfile, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HostAlias, KeyToPath, PodSpec, PodTemplateSpec,
    SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::archive::Entry;
use crate::backend::docker::recipe::{self, ClientFiles};
use crate::env::spec::{EnvSpec, PoolTag};
use crate::error::{Error, Result};
use crate::isolation::Isolation;
use crate::labels;
use crate::spec::IsolationMode;
use crate::tls::TlsMaterial;

pub use super::resources::{Resources, is_quantity};
pub use super::security::{PodSecurity, pod_security};

/// The server container's name in the pod.
pub const SERVER: &str = "server";
/// The client container's name in the pod.
pub const CLIENT: &str = "client";
/// The volume of the Secret's files.
const FILES_VOLUME: &str = "didx-files";
/// The volume of the inner engine's storage.
const DATA_VOLUME: &str = "docker-data";
/// What a rendered Secret says in place of its files' contents (made at each start, never
/// printed).
pub const PLACEHOLDER: &str = "(made by didx at the start: the entrypoint and this environment's certificates)";
/// What a rendered Secret's owner reference says in place of the Job's uid (known once the
/// Job is created; didx creates the Secret after it).
pub const OWNER_UID_PLACEHOLDER: &str = "00000000-0000-0000-0000-000000000000";

/// Where and how a sandbox runs on a cluster (`--namespace`, `--deadline`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeOptions {
    /// The namespace its objects are made in.
    pub namespace: String,
    /// `activeDeadlineSeconds`: the pod is ended this long after its start, whatever happens to
    /// didx (the backstop of its lease).
    pub deadline: Duration,
    /// `ttlSecondsAfterFinished`: the cluster deletes the ended Job (and its Secret) this long
    /// after it ended.
    pub ttl_after_finished: Duration,
    /// A runtime class that gives a container what dockerd needs (e.g. `sysbox-runc`): the
    /// server then runs with no extra privilege at all.
    pub runtime_class: Option<String>,
    /// The server's requests and limits.
    pub server_resources: Resources,
    /// The client's requests and limits.
    pub client_resources: Resources,
    /// A size limit for the inner engine's storage (`emptyDir.sizeLimit`), e.g. `20Gi`.
    pub storage_limit: Option<String>,
    /// How a run reaches the inner engine (no part of the objects).
    pub reach: super::way::KubeReach,
}

impl Default for KubeOptions {
    fn default() -> KubeOptions {
        KubeOptions {
            namespace: "default".into(),
            deadline: Duration::from_secs(3600),
            ttl_after_finished: Duration::from_secs(60),
            runtime_class: None,
            server_resources: Resources::default(),
            client_resources: Resources::default(),
            storage_limit: None,
            reach: super::way::KubeReach::Auto,
        }
    }
}

/// The objects of one sandbox, in the order they are created: the Job, then the Secret it
/// owns (the pod waits for its files until the Secret exists).
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// The Job (its pod: server and client).
    pub job: Job,
    /// The Secret of the pod's files.
    pub secret: Secret,
}

/// The files' contents in the Secret: the real ones (a start) or [`PLACEHOLDER`] (a render).
#[derive(Clone, Copy)]
pub enum Contents<'a> {
    /// This environment's certificates (and the entrypoint).
    Real(&'a TlsMaterial),
    /// Placeholders, for `didx k8s render`: the keys and modes as a start makes them.
    Placeholder(&'a TlsMaterial),
}

impl<'a> Contents<'a> {
    fn tls(&self) -> &'a TlsMaterial {
        match self {
            Contents::Real(t) | Contents::Placeholder(t) => t,
        }
    }
}

/// The Secret's key of a file the pod mounts at `/PATH` (`path` relative, as placed).
pub(crate) fn secret_key(path: &str) -> String {
    path.replace('/', "_")
}

/// The name of a sandbox's Job and Secret: `didx-<environment id>` (a DNS label).
pub fn object_name(spec: &EnvSpec) -> String {
    format!("didx-{}", spec.id.as_str())
}

/// The objects of the sandbox `spec` describes, made as `opts` says. Fails for what a pod
/// cannot be (see [`refuse_unsupported`]).
pub fn objects(spec: &EnvSpec, opts: &KubeOptions, contents: Contents<'_>) -> Result<Objects> {
    objects_of(spec, opts, contents, None)
}

/// [`objects`], for the warm pool when `pool` is given: labelled with its key (and name,
/// size and idle timeout, as on Docker), the server ending itself when nobody claims it within
/// the idle timeout and the client following it, its deadline that much longer.
pub(crate) fn objects_of(spec: &EnvSpec, opts: &KubeOptions, contents: Contents<'_>, pool: Option<&PoolTag>) -> Result<Objects> {
    refuse_unsupported(spec)?;
    let name = object_name(spec);
    let tls = contents.tls();
    let created = crate::util::now_secs();
    let server_name = spec.server_name();
    let server = recipe::Server { spec, name: &server_name, tls, created, pool, net: None };
    let client = recipe::Client {
        spec,
        server_name: &server_name,
        created,
        files: ClientFiles::Upload(tls),
        pool_key: pool.map(|p| p.key.as_str()),
        pool_name: pool.and_then(|p| p.name.as_deref()),
        engine_socket: None,
    };
    let deadline = opts.deadline + Duration::from_secs(pool.and_then(|p| p.idle_timeout).unwrap_or(0));
    let iso = match (&opts.runtime_class, spec.isolation) {
        (Some(_), _) => None,
        (None, IsolationMode::Caps) => Some(Isolation::Caps(vec!["ALL".into()])),
        (None, _) => Some(Isolation::Privileged),
    };
    let server_body = server.body(iso.as_ref().unwrap_or(&Isolation::Privileged));
    let client_body = client.body();
    let (labels, mut annotations) = split_labels(server.labels());
    // `--publish`: what a port-forward carries to this machine, read back by the run.
    if !spec.publish.is_empty() {
        annotations.insert(labels::PUBLISH.to_string(), spec.publish.iter().map(ToString::to_string).collect::<Vec<_>>().join(","));
    }

    // Every file of both members, one key each (the entrypoint is shared).
    let mut keys: BTreeMap<String, (u32, Vec<u8>)> = BTreeMap::new();
    let mut mounts_of = |files: Vec<Entry<'_>>| -> Vec<VolumeMount> {
        files
            .iter()
            .map(|f| {
                let key = secret_key(f.path);
                keys.insert(key.clone(), (f.mode, f.data.to_vec()));
                VolumeMount {
                    name: FILES_VOLUME.into(),
                    mount_path: format!("/{}", f.path),
                    sub_path: Some(key),
                    read_only: Some(true),
                    ..Default::default()
                }
            })
            .collect()
    };
    let server_files = mounts_of(server.files());
    let client_files = mounts_of(client.files());

    let held_env = |mut env: Vec<String>| {
        // Held as on Docker (see `recipe::held`): stdin open to one attach, watched by the
        // entrypoint, with beats (an attach through the API server may not close when a link
        // drops silently).
        env.extend(recipe::lease_env(true));
        env.push("DIDX_LEASE=stdin".into());
        env.into_iter()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| EnvVar { name: k.into(), value: Some(v.into()), ..Default::default() }))
            .collect::<Vec<_>>()
    };
    let command = |body: &bollard::models::ContainerCreateBody| body.entrypoint.clone().unwrap_or_default();
    let server_container = Container {
        name: SERVER.into(),
        image: server_body.image.clone(),
        command: Some(command(&server_body)),
        args: server_body.cmd.clone(),
        env: Some(held_env(server_body.env.clone().unwrap_or_default())),
        stdin: Some(true),
        stdin_once: Some(true),
        security_context: iso.as_ref().map(security_context),
        volume_mounts: Some(
            [vec![VolumeMount { name: DATA_VOLUME.into(), mount_path: "/var/lib/docker".into(), ..Default::default() }], server_files]
                .concat(),
        ),
        resources: opts.server_resources.requirements(),
        ports: (!spec.publish.is_empty()).then(|| {
            spec.publish
                .iter()
                .map(|p| ContainerPort { container_port: i32::from(p.env_port), protocol: Some("TCP".into()), ..Default::default() })
                .collect()
        }),
        ..Default::default()
    };
    let client_container = Container {
        name: CLIENT.into(),
        image: client_body.image.clone(),
        command: Some(command(&client_body)),
        args: client_body.cmd.clone().filter(|c| !c.is_empty()),
        env: Some(held_env(client_body.env.clone().unwrap_or_default())),
        stdin: Some(true),
        stdin_once: Some(true),
        volume_mounts: Some(client_files),
        resources: opts.client_resources.requirements(),
        ..Default::default()
    };
    let items = keys.iter().map(|(k, (mode, _))| KeyToPath { key: k.clone(), path: k.clone(), mode: Some(*mode as i32) }).collect();
    let pod = PodSpec {
        containers: vec![server_container, client_container],
        restart_policy: Some("Never".into()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        host_aliases: Some(vec![HostAlias { ip: "127.0.0.1".into(), hostnames: Some(vec![crate::tls::SERVER_NAME.into()]) }]),
        runtime_class_name: opts.runtime_class.clone(),
        termination_grace_period_seconds: Some(10),
        volumes: Some(vec![
            Volume {
                name: DATA_VOLUME.into(),
                empty_dir: Some(EmptyDirVolumeSource { size_limit: opts.storage_limit.clone().map(Quantity), ..Default::default() }),
                ..Default::default()
            },
            Volume {
                name: FILES_VOLUME.into(),
                secret: Some(SecretVolumeSource { secret_name: Some(name.clone()), items: Some(items), ..Default::default() }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(opts.namespace.clone()),
        labels: Some(labels.clone()),
        annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        ..Default::default()
    };
    let job = Job {
        metadata: meta(&name),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline.as_secs().max(1) as i64),
            ttl_seconds_after_finished: Some(opts.ttl_after_finished.as_secs() as i32),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels.clone()), ..Default::default() }),
                spec: Some(pod),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut secret_meta = meta(&name);
    secret_meta.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: name.clone(),
        uid: OWNER_UID_PLACEHOLDER.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }]);
    let secret = match contents {
        Contents::Real(_) => Secret {
            metadata: secret_meta,
            type_: Some("Opaque".into()),
            data: Some(keys.into_iter().map(|(k, (_, data))| (k, ByteString(data))).collect()),
            ..Default::default()
        },
        Contents::Placeholder(_) => Secret {
            metadata: secret_meta,
            type_: Some("Opaque".into()),
            string_data: Some(keys.into_keys().map(|k| (k, PLACEHOLDER.to_string())).collect()),
            ..Default::default()
        },
    };
    Ok(Objects { job, secret })
}

/// The server's security context for `iso`.
fn security_context(iso: &Isolation) -> SecurityContext {
    match iso {
        Isolation::Privileged => SecurityContext { privileged: Some(true), ..Default::default() },
        Isolation::Caps(caps) => SecurityContext {
            capabilities: Some(Capabilities { add: Some(caps.clone()), drop: None }),
            seccomp_profile: Some(SeccompProfile { type_: "Unconfined".into(), localhost_profile: None }),
            app_armor_profile: Some(AppArmorProfile { type_: "Unconfined".into(), localhost_profile: None }),
            allow_privilege_escalation: Some(true),
            ..Default::default()
        },
    }
}

/// What a pod cannot be: options that name the engine's host (its paths, networks, ports,
/// the image store's volume) or its engine (`--engine host`). A usage error, before anything
/// is made.
pub fn refuse_unsupported(spec: &EnvSpec) -> Result<()> {
    let refuse =
        |option: &'static str, value: String, why: &str| Err(Error::invalid(option, value, format!("{why} on the kubernetes backend")));
    if spec.engine_mode == crate::spec::EngineMode::Host {
        return refuse("--engine", "host".into(), "the engine didx uses cannot be shared with a pod");
    }
    if let Some(v) = spec.volumes.first() {
        return refuse("-v", v.target.clone(), "mounts of a Docker engine's host paths and volumes are not available");
    }
    if let Some(n) = &spec.network {
        return refuse("--network", n.clone(), "a Docker engine's network is not available (the pod is on the cluster's network)");
    }
    // A port is carried to this machine by a port-forward: TCP, to its loopback.
    if let Some(p) = spec.publish.iter().find(|p| p.proto != crate::publish::Proto::Tcp) {
        return refuse("--publish", p.to_string(), "only TCP ports can be forwarded (pods/portforward)");
    }
    if let Some(p) = spec.publish.iter().find(|p| !p.ip.is_loopback()) {
        return refuse("--publish", p.to_string(), "a port is forwarded to this machine's loopback only (give 127.0.0.1 or no address)");
    }
    if let Some(s) = &spec.store {
        return refuse("--store", s.volume.clone(), "the image store (a Docker engine's volume) is not available");
    }
    Ok(())
}

/// Labels as Kubernetes takes them: those whose value is a valid label value stay labels;
/// the others (the owner, `user@host pid N`) become annotations.
fn split_labels(all: std::collections::HashMap<String, String>) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    all.into_iter().partition(|(_, v)| is_label_value(v))
}

/// Whether `v` is a valid label value: at most 63 characters, alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric (or empty).
pub fn is_label_value(v: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    v.is_empty()
        || (v.len() <= 63
            && alnum(v.chars().next())
            && alnum(v.chars().last())
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::spec::StoreMount;

    fn spec() -> EnvSpec {
        EnvSpec {
            owner: "me@here pid 1".into(),
            server_image: "docker:26.1-dind".into(),
            client_image: "docker:26.1".into(),
            ..EnvSpec::example()
        }
    }

    fn tls() -> TlsMaterial {
        TlsMaterial::generate(&["dind_e1_server_latest"]).unwrap()
    }

    fn pod(o: &Objects) -> &PodSpec {
        o.job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    fn container<'a>(o: &'a Objects, name: &str) -> &'a Container {
        pod(o).containers.iter().find(|c| c.name == name).unwrap()
    }

    #[test]
    fn a_sandbox_is_a_job_that_ends_and_is_deleted_and_a_secret_it_owns() {
        let opts = KubeOptions {
            namespace: "ci".into(),
            deadline: Duration::from_secs(900),
            ttl_after_finished: Duration::from_secs(30),
            ..Default::default()
        };
        let tls = tls();
        let o = objects(&spec(), &opts, Contents::Placeholder(&tls)).unwrap();
        let job = o.job.spec.as_ref().unwrap();
        assert_eq!(job.active_deadline_seconds, Some(900));
        assert_eq!(job.ttl_seconds_after_finished, Some(30));
        assert_eq!(job.backoff_limit, Some(0), "a failed sandbox is not started again");
        assert_eq!(pod(&o).restart_policy.as_deref(), Some("Never"));
        assert_eq!(o.job.metadata.name.as_deref(), Some("didx-e1"));
        assert_eq!(o.job.metadata.namespace.as_deref(), Some("ci"));
        assert_eq!(o.secret.metadata.namespace.as_deref(), Some("ci"));
        // The Secret goes with its Job.
        let owner = &o.secret.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.name.as_str(), owner.api_version.as_str()), ("Job", "didx-e1", "batch/v1"));
        assert_eq!(owner.controller, Some(true));
        // A render shows no key or certificate.
        let rendered = serde_json::to_string(&o.secret).unwrap();
        assert!(!rendered.contains("PRIVATE KEY") && !rendered.contains("BEGIN CERTIFICATE"), "{rendered}");
        assert!(o.secret.string_data.as_ref().unwrap().values().all(|v| v == PLACEHOLDER));
    }

    #[test]
    fn labels_are_the_docker_labels_and_what_no_label_can_hold_is_an_annotation() {
        let tls = tls();
        let o = objects(&spec(), &KubeOptions::default(), Contents::Placeholder(&tls)).unwrap();
        for meta in [&o.job.metadata, &o.secret.metadata, o.job.spec.as_ref().unwrap().template.metadata.as_ref().unwrap()] {
            let labels = meta.labels.as_ref().unwrap();
            assert_eq!(labels.get(crate::labels::ENV).map(String::as_str), Some("e1"));
            assert_eq!(labels.get(crate::labels::MANAGED).map(String::as_str), Some("true"));
            assert!(labels.values().all(|v| is_label_value(v)), "{labels:?}");
        }
        let annotations = o.job.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations.get(crate::labels::OWNER).map(String::as_str), Some("me@here pid 1"));
        for (v, ok) in
            [("e1", true), ("", true), ("a.b-c_d", true), ("me@here pid 1", false), ("-a", false), ("a-", false), (&"x".repeat(64), false)]
        {
            assert_eq!(is_label_value(v), ok, "{v}");
        }
    }

    #[test]
    fn the_pod_takes_nothing_of_its_node() {
        let tls = tls();
        for iso in [IsolationMode::Auto, IsolationMode::Privileged, IsolationMode::Caps] {
            let o = objects(&EnvSpec { isolation: iso, ..spec() }, &KubeOptions::default(), Contents::Placeholder(&tls)).unwrap();
            let p = pod(&o);
            assert!(p.host_network.is_none() && p.host_pid.is_none() && p.host_ipc.is_none());
            assert!(p.volumes.iter().flatten().all(|v| v.host_path.is_none()));
            assert!(p.containers.iter().all(|c| c.ports.is_none()), "no host port");
            assert_eq!(p.automount_service_account_token, Some(false));
            // No engine socket goes in (the inner dockerd makes its own, in the server).
            let mounts = p.containers.iter().flat_map(|c| c.volume_mounts.iter().flatten());
            assert!(
                mounts.clone().all(|m| !m.mount_path.ends_with(".sock") && !m.mount_path.starts_with("/var/run")),
                "{:?}",
                mounts.collect::<Vec<_>>()
            );
            assert!(!serde_json::to_string(&o.job).unwrap().contains("hostPath"));
        }
    }

    #[test]
    fn the_server_s_privileges_follow_the_isolation_and_the_runtime_class() {
        let tls = tls();
        let sc = |iso, class: Option<&str>| {
            let opts = KubeOptions { runtime_class: class.map(String::from), ..Default::default() };
            let o = objects(&EnvSpec { isolation: iso, ..spec() }, &opts, Contents::Placeholder(&tls)).unwrap();
            assert!(container(&o, CLIENT).security_context.is_none(), "the client needs no privilege");
            (container(&o, SERVER).security_context.clone(), pod(&o).runtime_class_name.clone(), pod_security(pod(&o)))
        };
        let (s, class, level) = sc(IsolationMode::Auto, None);
        assert_eq!(s.unwrap().privileged, Some(true));
        assert_eq!((class, level), (None, PodSecurity::Privileged));
        let (s, _, level) = sc(IsolationMode::Privileged, None);
        assert_eq!((s.unwrap().privileged, level), (Some(true), PodSecurity::Privileged));
        let (s, _, level) = sc(IsolationMode::Caps, None);
        let s = s.unwrap();
        assert_eq!(s.privileged, None);
        assert_eq!(s.capabilities.unwrap().add, Some(vec!["ALL".to_string()]));
        assert_eq!(s.seccomp_profile.unwrap().type_, "Unconfined");
        assert_eq!(s.app_armor_profile.unwrap().type_, "Unconfined");
        assert_eq!(level, PodSecurity::Privileged, "every capability is more than baseline allows");
        let (s, class, level) = sc(IsolationMode::Auto, Some("sysbox-runc"));
        assert_eq!((s, class.as_deref(), level), (None, Some("sysbox-runc"), PodSecurity::Baseline));
    }

    #[test]
    fn each_member_mounts_its_own_files_with_their_modes_and_the_secret_holds_them_exactly() {
        let tls = tls();
        let s = spec();
        let o = objects(&s, &KubeOptions::default(), Contents::Real(&tls)).unwrap();
        let data = o.secret.data.as_ref().unwrap();
        let items = pod(&o).volumes.as_ref().unwrap().iter().find_map(|v| v.secret.as_ref()).unwrap().items.clone().unwrap();
        let mode = |key: &str| items.iter().find(|i| i.key == key).and_then(|i| i.mode);
        let mounted = |c: &str| -> Vec<String> {
            container(&o, c).volume_mounts.iter().flatten().filter(|m| m.name == FILES_VOLUME).map(|m| m.mount_path.clone()).collect()
        };
        assert_eq!(
            mounted(SERVER),
            ["/didx/entrypoint", "/didx/certs/server/ca.pem", "/didx/certs/server/cert.pem", "/didx/certs/server/key.pem"]
        );
        assert_eq!(mounted(CLIENT), ["/didx/entrypoint", "/certs/client/ca.pem", "/certs/client/cert.pem", "/certs/client/key.pem"]);
        assert_eq!(mode("didx_entrypoint"), Some(0o755));
        assert_eq!(mode("certs_client_key.pem"), Some(0o600));
        assert_eq!(mode("didx_certs_server_key.pem"), Some(0o600));
        assert_eq!(mode("certs_client_ca.pem"), Some(0o644));
        assert_eq!(data["didx_entrypoint"].0, recipe::ENTRYPOINT.as_bytes());
        assert_eq!(data["certs_client_key.pem"].0, tls.client_key_pem.as_bytes());
        assert_eq!(data["didx_certs_server_key.pem"].0, tls.server_key_pem.as_bytes());
        assert_eq!(items.len(), data.len());
        // The inner engine's storage is the pod's, bounded where asked.
        let opts = KubeOptions { storage_limit: Some("20Gi".into()), ..Default::default() };
        let o = objects(&s, &opts, Contents::Placeholder(&tls)).unwrap();
        let data_volume = pod(&o).volumes.as_ref().unwrap().iter().find(|v| v.name == DATA_VOLUME).unwrap();
        assert_eq!(data_volume.empty_dir.as_ref().unwrap().size_limit, Some(Quantity("20Gi".into())));
    }

    #[test]
    fn both_members_are_held_and_the_client_reaches_the_server_as_docker() {
        let tls = tls();
        let o = objects(&spec(), &KubeOptions::default(), Contents::Placeholder(&tls)).unwrap();
        for name in [SERVER, CLIENT] {
            let c = container(&o, name);
            assert_eq!((c.stdin, c.stdin_once), (Some(true), Some(true)), "{name}");
            let env: Vec<(String, String)> =
                c.env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
            assert!(env.contains(&("DIDX_LEASE".into(), "stdin".into())), "{name}: {env:?}");
            assert!(env.iter().any(|(k, v)| k == "DIDX_LEASE_BEAT" && !v.is_empty()), "{name}: {env:?}");
        }
        let client_env = container(&o, CLIENT).env.clone().unwrap();
        assert!(client_env.iter().any(|e| e.name == "DOCKER_HOST" && e.value.as_deref() == Some("tcp://docker:2376")));
        let alias = &pod(&o).host_aliases.as_ref().unwrap()[0];
        assert_eq!((alias.ip.as_str(), alias.hostnames.clone()), ("127.0.0.1", Some(vec!["docker".to_string()])));
        assert_eq!(container(&o, SERVER).image.as_deref(), Some("docker:26.1-dind"));
        assert_eq!(container(&o, CLIENT).image.as_deref(), Some("docker:26.1"));
    }

    #[test]
    fn resources_are_set_where_asked_and_quantities_are_checked() {
        let mut server = Resources::default();
        Resources::parse_into(&mut server.requests, "--server-requests value", "cpu=500m,memory=1Gi").unwrap();
        Resources::parse_into(&mut server.limits, "--server-limits value", "cpu=2,memory=4Gi,ephemeral-storage=20Gi").unwrap();
        let tls = tls();
        let o = objects(&spec(), &KubeOptions { server_resources: server, ..Default::default() }, Contents::Placeholder(&tls)).unwrap();
        let r = container(&o, SERVER).resources.clone().unwrap();
        assert_eq!(r.requests.unwrap()["memory"], Quantity("1Gi".into()));
        assert_eq!(r.limits.unwrap()["ephemeral-storage"], Quantity("20Gi".into()));
        assert!(container(&o, CLIENT).resources.is_none());
    }

    #[test]
    fn published_ports_are_the_server_s_container_ports_and_recorded_for_the_run_to_forward() {
        let specs = ["8080", "127.0.0.1:9000:9001"].map(|p| crate::publish::PublishSpec::parse(p).unwrap());
        let o = objects(&EnvSpec { publish: specs.to_vec(), ..spec() }, &KubeOptions::default(), Contents::Placeholder(&tls())).unwrap();
        let ports: Vec<(i32, Option<String>)> =
            container(&o, SERVER).ports.iter().flatten().map(|p| (p.container_port, p.protocol.clone())).collect();
        assert_eq!(ports, [(8080, Some("TCP".into())), (9001, Some("TCP".into()))]);
        assert!(container(&o, CLIENT).ports.is_none());
        let recorded = &o.job.metadata.annotations.as_ref().unwrap()[crate::labels::PUBLISH];
        let back: Vec<crate::publish::PublishSpec> = recorded.split(',').map(|p| crate::publish::PublishSpec::parse(p).unwrap()).collect();
        assert_eq!(back, specs);
        let none = objects(&spec(), &KubeOptions::default(), Contents::Placeholder(&tls())).unwrap();
        assert!(container(&none, SERVER).ports.is_none());
        assert!(none.job.metadata.annotations.as_ref().is_none_or(|a| !a.contains_key(crate::labels::PUBLISH)));
    }

    #[test]
    fn what_a_pod_cannot_be_is_a_usage_error() {
        let tls = tls();
        let store = StoreMount { volume: "didx-store-x".into(), engine: String::new(), seal: None };
        let network = EnvSpec { network: Some("ci-net".into()), ..spec() };
        let publish = EnvSpec { publish: vec![crate::publish::PublishSpec::parse("8080:80/udp").unwrap()], ..spec() };
        let anywhere = EnvSpec { publish: vec![crate::publish::PublishSpec::parse("0.0.0.0:8080:80").unwrap()], ..spec() };
        let volume = EnvSpec { volumes: vec![crate::spec::VolumeSpec::parse("/src:/work", std::path::Path::new("/")).unwrap()], ..spec() };
        let host = EnvSpec { engine_mode: crate::spec::EngineMode::Host, ..spec() };
        let stored = EnvSpec { store: Some(store), ..spec() };
        for (s, what) in [
            (network, "--network"),
            (publish, "--publish"),
            (anywhere, "--publish"),
            (volume, "-v"),
            (host, "--engine"),
            (stored, "--store"),
        ] {
            let e = objects(&s, &KubeOptions::default(), Contents::Placeholder(&tls)).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains(what) && e.to_string().contains("kubernetes backend"), "{e}");
        }
    }
}
