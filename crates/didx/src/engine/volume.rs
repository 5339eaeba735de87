//! Volumes: list, create, inspect and remove.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::query_parameters as qp;

use super::call::{QUICK_TIMEOUT, REMOVE_TIMEOUT, call, is_not_found, quick, within};
use super::connect::Engine;
use crate::error::Result;

impl Engine {
    raw! {
        /// Names of volumes matching `filters`.
        async fn volumes(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<String>> {
            Ok(self.volumes_labelled(filters).await?.into_iter().map(|(name, _)| name).collect())
        }
    }

    raw! {
        /// Volumes matching `filters`, each with its labels.
        async fn volumes_labelled(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<(String, HashMap<String, String>)>> {
            let opts = qp::ListVolumesOptions { filters: Some(filters) };
            let r = quick("list volumes", "engine", self.docker.list_volumes(Some(opts))).await?;
            Ok(r.volumes.unwrap_or_default().into_iter().map(|v| (v.name, v.labels)).collect())
        }
    }

    raw! {
        /// Create a named volume with `labels` (the engine returns the existing one unchanged when
        /// the name is taken).
        async fn create_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<()> {
            let req = bollard::models::VolumeCreateRequest { name: Some(name.to_string()), labels: Some(labels), ..Default::default() };
            quick("create volume", name, self.docker.create_volume(req)).await.map(|_| ())
        }
    }

    raw! {
        /// Create a named volume with `driver` (the engine's default when `None`), its `options`
        /// and `labels`: what the engine would make implicitly for a container's volume source,
        /// labelled (the engine returns the existing one unchanged when the name is taken).
        async fn create_volume_with(
            &self,
            name: &str,
            driver: Option<&str>,
            options: HashMap<String, String>,
            labels: HashMap<String, String>,
        ) -> Result<()> {
            let req = bollard::models::VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: driver.map(str::to_string),
                driver_opts: (!options.is_empty()).then_some(options),
                labels: Some(labels),
                ..Default::default()
            };
            quick("create volume", name, self.docker.create_volume(req)).await.map(|_| ())
        }
    }

    raw! {
        /// A volume's labels and creation time (as the engine writes it); `None` when there is no
        /// such volume.
        async fn volume(&self, name: &str) -> Result<Option<(HashMap<String, String>, String)>> {
            match within("inspect volume", name, QUICK_TIMEOUT, self.docker.inspect_volume(name)).await? {
                Ok(v) => Ok(Some((v.labels, v.created_at.map(|t| serde_json::to_value(t).ok().map(|v| v.to_string()).unwrap_or_default()).unwrap_or_default()))),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(call("inspect volume", name)(e)),
            }
        }
    }

    raw! {
        /// Remove a volume; already gone is fine.
        async fn remove_volume(&self, name: &str) -> Result<()> {
            // "in use" while the container holding it is being removed (by us, or by the engine's
            // auto-removal of a container that ended itself): that removal takes the volume too,
            // or frees it in a moment. Asked again for a few seconds before it counts.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let remove = self.docker.remove_volume(name, Some(qp::RemoveVolumeOptions { force: true }));
                match within("remove volume", name, REMOVE_TIMEOUT, remove).await? {
                    Err(BollardError::DockerResponseServerError { status_code: 409, .. }) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) if !is_not_found(&e) => return Err(call("remove volume", name)(e)),
                    _ => return Ok(()),
                }
            }
        }
    }
}
