//! Networks: create, connect a container (with aliases), list (with labels or subnets) and
//! remove.

use std::collections::HashMap;

use bollard::errors::Error as BollardError;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkCreateRequest};
use bollard::query_parameters as qp;

use super::call::{QUICK_TIMEOUT, REMOVE_TIMEOUT, call, is_not_found, quick, within};
use super::connect::Engine;
use crate::error::Result;

impl Engine {
    raw! {
        /// Create a bridge network `name` with `labels`; one of that name already there is fine
        /// (whoever made it). Engines before API 1.44 make a second network of the same name
        /// (names are then ambiguous), so the name is looked up first; two callers racing may
        /// still make two there.
        async fn create_network(&self, name: &str, labels: HashMap<String, String>) -> Result<()> {
            let inspect = self.docker.inspect_network(name, None::<qp::InspectNetworkOptions>);
            match within("inspect network", name, QUICK_TIMEOUT, inspect).await? {
                Ok(found) if found.name.as_deref() == Some(name) => return Ok(()),
                Ok(_) => {} // `name` is the start of another network's id
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(call("inspect network", name)(e)),
            }
            let body = NetworkCreateRequest { name: name.to_string(), driver: Some("bridge".into()), labels: Some(labels), ..Default::default() };
            match within("create network", name, QUICK_TIMEOUT, self.docker.create_network(body)).await? {
                Ok(_) => Ok(()),
                Err(BollardError::DockerResponseServerError { status_code: 409, .. }) => Ok(()),
                Err(e) => Err(call("create network", name)(e)),
            }
        }
    }

    raw! {
        /// Connect `container` to `network`, reachable there under `aliases` too (its name is
        /// always one).
        async fn connect_network(&self, network: &str, container: &str, aliases: &[String]) -> Result<()> {
            let endpoint = EndpointSettings { aliases: (!aliases.is_empty()).then(|| aliases.to_vec()), ..Default::default() };
            let body = NetworkConnectRequest { container: container.to_string(), endpoint_config: Some(endpoint) };
            quick("connect network", container, self.docker.connect_network(network, body)).await
        }
    }

    raw! {
        /// Names of networks matching `filters`.
        async fn networks(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<String>> {
            Ok(self.networks_labelled(filters).await?.into_iter().map(|(name, _)| name).collect())
        }
    }

    raw! {
        /// Networks matching `filters`, each with its labels.
        async fn networks_labelled(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<(String, HashMap<String, String>)>> {
            let opts = qp::ListNetworksOptions { filters: Some(filters) };
            let r = quick("list networks", "engine", self.docker.list_networks(Some(opts))).await?;
            Ok(r.into_iter().filter_map(|n| Some((n.name?, n.labels.unwrap_or_default()))).collect())
        }
    }

    raw! {
        /// The IPv4 and IPv6 subnets of every network of the engine (from each network's IPAM
        /// configuration).
        async fn network_subnets(&self) -> Result<Vec<String>> {
            let r = quick("list networks", "engine", self.docker.list_networks(None::<qp::ListNetworksOptions>)).await?;
            Ok(r.into_iter()
                .flat_map(|n| n.ipam.and_then(|i| i.config).unwrap_or_default())
                .filter_map(|c| c.subnet)
                .collect())
        }
    }

    raw! {
        /// Remove a network; already gone is fine.
        async fn remove_network(&self, name: &str) -> Result<()> {
            match within("remove network", name, REMOVE_TIMEOUT, self.docker.remove_network(name)).await? {
                Err(e) if !is_not_found(&e) => Err(call("remove network", name)(e)),
                _ => Ok(()),
            }
        }
    }
}
