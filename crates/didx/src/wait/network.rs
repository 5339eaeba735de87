//! A user network on an engine (a sandbox's inner one, as a rule) and containers joined to it
//! under aliases, so that the other containers on it reach one by name: the engine's DNS
//! answers names on user networks, never on the default bridge.

use std::collections::HashMap;

use bollard::Docker;

use super::state::over;
use crate::error::Result;

/// Create a bridge network `name` on `docker`'s engine, labelled `io.didx.wait=network` (not
/// `io.didx.managed`: didx's clean-up of an engine leaves it; on a sandbox's inner engine it
/// goes with the sandbox). One of that name already there is fine, whoever made it.
///
/// ```no_run
/// # async fn demo(docker: &didx::bollard::Docker) -> didx::Result<()> {
/// didx::wait::create_network(docker, "backend").await?;
/// didx::wait::connect_with_aliases(docker, "backend", "postgres-1", &["db"]).await?;
/// // Any container on "backend" now reaches postgres-1 as `db` (and as `postgres-1`).
/// # Ok(()) }
/// ```
pub async fn create_network(docker: &Docker, name: &str) -> Result<()> {
    let labels = HashMap::from([(crate::labels::WAIT.to_string(), "network".to_string())]);
    over(docker).create_network(name, labels).await
}

/// Connect `container` (created or running) to `network`, where other containers reach it by
/// each of `aliases` as well as by its name. To start a container on a network under aliases
/// instead, give its create body `networking_config` with the aliases in its endpoint.
pub async fn connect_with_aliases<S: AsRef<str>>(docker: &Docker, network: &str, container: &str, aliases: &[S]) -> Result<()> {
    let aliases: Vec<String> = aliases.iter().map(|a| a.as_ref().to_string()).collect();
    over(docker).connect_network(network, container, &aliases).await
}
