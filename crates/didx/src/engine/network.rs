//! Networks: list (with labels or subnets) and remove.

use std::collections::HashMap;

use bollard::query_parameters as qp;

use super::call::{REMOVE_TIMEOUT, call, is_not_found, quick, within};
use super::connect::Engine;
use crate::error::Result;

impl Engine {
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
