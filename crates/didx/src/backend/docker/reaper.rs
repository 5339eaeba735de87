//! The reaper of a `--engine host` environment: what removes the containers, volumes and
//! networks its client started when the didx process holding it dies without cleaning up.
//!
//! Its client drives the engine through a proxy in the didx process, and everything the client
//! creates is labelled with the environment ([`labels::Role::Started`]). Those carry no lease
//! (they are the client's programs, not didx's), so something that outlives didx must remove
//! them: a small container of the client's image (it has the docker CLI) with the engine's own
//! socket bound, held by didx from its start like the client ([`recipe::held`]). The client
//! already has root on that engine through the proxy, so the reaper adds no power. When its
//! lease ends without a `release` (didx gone, however), its entrypoint (`reap` mode) removes
//! everything labelled with the environment but itself, then ends, and the engine's
//! auto-removal takes it. A released lease (the environment kept) ends it with nothing removed;
//! a normal clean-up removes it with the rest, by label.

use bollard::models::{ContainerCreateBody, HostConfig};

use super::recipe::{self, ENTRYPOINT_PATH};
use crate::engine::{Engine, Lease};
use crate::env::spec::EnvSpec;
use crate::error::Result;
use crate::labels::{self, Role};

/// Where the engine's socket appears in the reaper.
const SOCKET_IN_REAPER: &str = "/var/run/docker.sock";

/// The reaper container's name, `dind_<id>_reaper`.
pub(super) fn name(spec: &EnvSpec) -> String {
    format!("dind_{}_reaper", spec.id)
}

/// The engine's socket path on the engine's machine, from its address (`unix://PATH`); `None`
/// for an engine reached otherwise (no socket to bind).
pub(super) fn socket_of(host: &str) -> Option<&str> {
    host.strip_prefix("unix://").filter(|p| p.starts_with('/'))
}

/// The reaper's create body (before [`recipe::held`]): the client's image running the
/// entrypoint's `reap` mode, the engine's socket at `socket` (a path on the engine's machine)
/// bound, no network, auto-removed, labelled with the environment.
pub(super) fn body(spec: &EnvSpec, socket: &str, created: u64) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(spec.client_image.clone()),
        entrypoint: Some(vec![ENTRYPOINT_PATH.to_string(), "reap".to_string()]),
        cmd: Some(vec![]),
        env: Some(vec![format!("DOCKER_HOST=unix://{SOCKET_IN_REAPER}"), format!("DIDX_ENV={}", spec.id)]),
        labels: Some(labels::for_resource(spec.id.as_str(), Role::Reaper, created)),
        host_config: Some(HostConfig {
            auto_remove: Some(true),
            binds: Some(vec![format!("{socket}:{SOCKET_IN_REAPER}")]),
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Create and start the reaper of `spec`'s environment, held from its start; `socket` is the
/// engine's socket as the engine's machine names it. Its lease comes back with its id.
pub(super) async fn start(engine: &Engine, spec: &EnvSpec, socket: &str, created: u64) -> Result<(String, Lease)> {
    let id = engine.create_container(&name(spec), recipe::held(body(spec, socket, created), engine.beats())).await?;
    engine.start(&id).await?;
    let lease = engine.attach_lease(&id, &recipe::handover(&[recipe::ENTRYPOINT_FILE])?).await?;
    Ok((id, lease))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_the_unix_path_of_the_engine_address() {
        assert_eq!(socket_of("unix:///var/run/docker.sock"), Some("/var/run/docker.sock"));
        assert_eq!(socket_of("tcp://h:2376"), None);
        assert_eq!(socket_of("unix://relative.sock"), None);
    }

    #[test]
    fn a_reaper_binds_the_engine_socket_has_no_network_and_is_labelled_and_held() {
        let spec =
            EnvSpec { storage_driver: "overlay2".into(), lease: true, engine_mode: crate::spec::EngineMode::Host, ..EnvSpec::example() };
        let b = recipe::held(body(&spec, "/run/host.sock", 7), false);
        let hc = b.host_config.as_ref().unwrap();
        assert_eq!(hc.binds.as_deref(), Some(&["/run/host.sock:/var/run/docker.sock".to_string()][..]));
        assert_eq!((hc.auto_remove, hc.network_mode.as_deref()), (Some(true), Some("none")));
        let l = b.labels.as_ref().unwrap();
        assert_eq!(l.get(labels::ROLE).map(String::as_str), Some("reaper"));
        assert_eq!(l.get(labels::ENV).map(String::as_str), Some(spec.id.as_str()));
        assert_eq!(l.get(labels::MANAGED).map(String::as_str), Some("true"));
        // Held: the bootstrap runs the entrypoint's reap mode once told "go".
        assert_eq!(b.cmd.as_deref(), Some(&[ENTRYPOINT_PATH.to_string(), "reap".to_string()][..]));
        assert_eq!(b.stdin_once, Some(true));
        let env = b.env.as_ref().unwrap();
        assert!(env.contains(&format!("DIDX_ENV={}", spec.id)) && env.contains(&"DIDX_LEASE=stdin".to_string()), "{env:?}");
        assert_eq!(b.image.as_deref(), Some("didx/dind:local"));
    }
}
