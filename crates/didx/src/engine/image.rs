//! Images: inspect, list, pull, import, tag, commit, export and remove.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ImageInspect, ImageSummary};
use bollard::query_parameters as qp;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};

use super::call::{EXPORT_FIRST_BYTE_TIMEOUT, Progress, QUICK_TIMEOUT, REMOVE_TIMEOUT, call, idle_bounded, idle_error, is_not_found, quick, within};
use super::connect::Engine;
use crate::error::{Error, Result};

impl Engine {
    raw! {
        /// Inspect an image; `None` when absent.
        async fn image(&self, name: &str) -> Result<Option<ImageInspect>> {
            match within("inspect image", name, QUICK_TIMEOUT, self.docker.inspect_image(name)).await? {
                Ok(i) => Ok(Some(i)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(call("inspect image", name)(e)),
            }
        }
    }

    raw! {
        /// Images (tagged or not) matching `filters`, e.g. `label=KEY=VALUE`.
        async fn images(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<ImageSummary>> {
            let opts = qp::ListImagesOptions { all: false, filters: Some(filters), ..Default::default() };
            quick("list images", "engine", self.docker.list_images(Some(opts))).await
        }
    }

    raw! {
        /// Pull `image`, giving up when the registry sends nothing for `idle`.
        async fn pull(&self, image: &str, idle: Duration) -> Result<()> {
            let (repo, tag) = split_reference(image);
            let opts = qp::CreateImageOptions { from_image: Some(repo.to_string()), tag: Some(tag.to_string()), ..Default::default() };
            let mut stream = self.docker.create_image(Some(opts), None, None);
            loop {
                match tokio::time::timeout(idle, stream.next()).await {
                    Ok(Some(Ok(_))) => {}
                    Ok(Some(Err(e))) => return Err(call("pull image", image)(e)),
                    Ok(None) => return Ok(()),
                    Err(_) => return Err(Error::TimedOut { op: "pull image", target: image.to_string(), after: idle, idle: true }),
                }
            }
        }
    }

    raw! {
        /// Import a root filesystem tar stream as `repo:tag`, applying Dockerfile `changes`.
        async fn import(
            &self,
            rootfs: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
            repo: &str,
            tag: &str,
            changes: Vec<String>,
        ) -> Result<()> {
            let opts = qp::CreateImageOptions {
                from_src: Some("-".to_string()),
                repo: Some(repo.to_string()),
                tag: Some(tag.to_string()),
                changes,
                ..Default::default()
            };
            let target = format!("{repo}:{tag}");
            // Progress: the engine taking the archive, then its answer's lines.
            let progress = Progress::new();
            let body = bollard::body_try_stream(progress.watch(rootfs));
            let mut stream = self.docker.create_image(Some(opts), Some(body), None);
            let consume = async {
                while let Some(item) = stream.next().await {
                    progress.moved();
                    item.map_err(call("import image", &target))?;
                }
                Ok(())
            };
            tokio::select! {
                r = consume => r,
                _ = progress.stalled() => Err(idle_error("import image", &target)),
            }
        }
    }

    raw! {
        /// Tag `image` as `repo:tag`.
        async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
            let opts = qp::TagImageOptions { repo: Some(repo.to_string()), tag: Some(tag.to_string()) };
            quick("tag image", image, self.docker.tag_image(image, Some(opts))).await
        }
    }

    raw! {
        /// Commit a container's changes as image `repo:tag`; returns the image id.
        #[cfg(feature = "internals")]
        async fn commit(&self, container: &str, repo: &str, tag: &str) -> Result<String> {
            let opts = qp::CommitContainerOptions {
                container: Some(container.to_string()),
                repo: Some(repo.to_string()),
                tag: Some(tag.to_string()),
                pause: true,
                ..Default::default()
            };
            let commit = self.docker.commit_container(opts, bollard::models::ContainerConfig::default());
            let r = within("commit container", container, super::call::COMMIT_TIMEOUT, commit).await?.map_err(call("commit container", container))?;
            Ok(r.id)
        }
    }

    raw! {
        /// Remove an image (not forced: an image in use stays); already gone is fine.
        async fn remove_image(&self, image: &str) -> Result<()> {
            let remove = self.docker.remove_image(image, None::<qp::RemoveImageOptions>, None);
            match within("remove image", image, REMOVE_TIMEOUT, remove).await? {
                Err(e) if !is_not_found(&e) => Err(call("remove image", image)(e)),
                _ => Ok(()),
            }
        }
    }

    raw! {
        /// Load a `docker save` tar stream into this engine (`docker load`); the images it
        /// says it loaded.
        async fn load_images(&self, tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Result<Vec<String>> {
            let mut answers = self.docker.import_image_stream(qp::ImportImageOptions { quiet: true, ..Default::default() }, tar, None);
            let mut loaded = Vec::new();
            while let Some(info) = answers.next().await {
                let info = info.map_err(call("load images", "a docker save stream"))?;
                if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                    return Err(Error::io("loading images", std::io::Error::other(detail)));
                }
                let said = info.stream.unwrap_or_default();
                if let Some(name) = said.trim().strip_prefix("Loaded image: ").or_else(|| said.trim().strip_prefix("Loaded image ID: ")) {
                    loaded.push(name.to_string());
                }
            }
            Ok(loaded)
        }
    }

    raw! {
        /// One tar stream (`docker save` format) of the named images.
        fn export_images<'a>(&'a self, names: &'a [&'a str]) -> impl Stream<Item = Result<Bytes>> + Send + 'a {
            let target = names.first().copied().unwrap_or("");
            let stream = self.docker.export_images(names).map_err(move |e| call("export images", target)(e));
            idle_bounded("export images", target.to_string(), EXPORT_FIRST_BYTE_TIMEOUT, stream)
        }
    }
}

/// Split `repo[:tag]` (a registry port's colon is not a tag) into repo and tag (`latest`).
pub fn split_reference(image: &str) -> (&str, &str) {
    match image.rfind(':') {
        Some(i) if !image[i + 1..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_colon_only() {
        assert_eq!(split_reference("docker:dind"), ("docker", "dind"));
        assert_eq!(split_reference("alpine"), ("alpine", "latest"));
        assert_eq!(split_reference("reg:5000/x/y"), ("reg:5000/x/y", "latest"));
        assert_eq!(split_reference("reg:5000/x/y:1.2"), ("reg:5000/x/y", "1.2"));
    }
}
