//! The unit tests' fixtures: a spec, and the containers a pooled environment shows in a list.

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum as CState};

use crate::env::id::EnvId;
use crate::env::spec::EnvSpec;
use crate::labels;

pub(super) fn spec() -> EnvSpec {
    EnvSpec {
        id: EnvId::generate(),
        storage_driver: "overlay2".into(),
        ready_timeout: std::time::Duration::from_secs(60),
        ..EnvSpec::example()
    }
}

pub(super) fn summary(name: &str, env: &str, role: labels::Role, state: CState, extra: &[(&str, &str)]) -> ContainerSummary {
    let mut l = labels::for_resource(env, role, 1000);
    for (k, v) in extra {
        l.insert(k.to_string(), v.to_string());
    }
    ContainerSummary {
        id: Some(format!("id-{name}")),
        names: Some(vec![format!("/{name}")]),
        labels: Some(l),
        state: Some(state),
        ..Default::default()
    }
}

pub(super) fn server(env: &str, state: CState, filler: &str, deadline: u64) -> ContainerSummary {
    let deadline = deadline.to_string();
    let extra =
        [(labels::POOL, "k1"), (labels::POOL_SIZE, "3"), (labels::POOL_FILLER, filler), (labels::POOL_DEADLINE, deadline.as_str())];
    summary(&format!("dind_{env}_server_latest"), env, labels::Role::Server, state, &extra)
}

pub(super) fn client(name: &str, env: &str, state: CState) -> ContainerSummary {
    summary(name, env, labels::Role::Client, state, &[(labels::POOL, "k1")])
}
