//! Files into and out of a container as tar archives (the calls `docker cp` makes): upload,
//! download and stat.

use bollard::query_parameters as qp;
use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};

use super::call::{IDLE_TIMEOUT, Progress, QUICK_TIMEOUT, call, idle_bounded, idle_error, is_not_found, within};
use super::connect::Engine;
use crate::error::Result;

impl Engine {
    raw! {
        /// Extract a (small: held in memory) tar archive at `path` in a container.
        async fn upload(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<()> {
            // As docker cp: never replace a directory with a non-directory (a host directory
            // mounted in the client would be deleted).
            let opts =
                qp::UploadToContainerOptions { path: path.to_string(), no_overwrite_dir_non_dir: Some("true".into()), ..Default::default() };
            let upload = self.docker.upload_to_container(container, Some(opts), bollard::body_full(tar.into()));
            within("upload to container", container, IDLE_TIMEOUT, upload).await?.map_err(call("upload to container", container))
        }
    }

    raw! {
        /// A tar stream of `path` in a container (a file or a directory, as `docker cp` reads it).
        fn download<'a>(&'a self, container: &'a str, path: &str) -> impl Stream<Item = Result<Bytes>> + Send + 'a {
            let opts = qp::DownloadFromContainerOptions { path: path.to_string() };
            let stream =
                self.docker.download_from_container(container, Some(opts)).map_err(move |e| call("download from container", container)(e));
            idle_bounded("download from container", container.to_string(), IDLE_TIMEOUT, stream)
        }
    }

    raw! {
        /// Whether `path` exists in a container and is a directory (`None` when absent).
        async fn stat_is_dir(&self, container: &str, path: &str) -> Result<Option<bool>> {
            let opts = qp::ContainerArchiveInfoOptions { path: path.to_string() };
            match within("stat in container", container, QUICK_TIMEOUT, self.docker.get_container_archive_info(container, Some(opts))).await? {
                // Go's os.ModeDir is the top bit.
                Ok(stat) => Ok(Some(stat.file_mode & (1 << 31) != 0)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(call("stat in container", container)(e)),
            }
        }
    }

    raw! {
        /// Extract a tar stream at `path` in a container, without holding it in memory.
        async fn upload_stream(
            &self,
            container: &str,
            path: &str,
            tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        ) -> Result<()> {
            // As docker cp: never replace a directory with a non-directory (a host directory
            // mounted in the client would be deleted).
            let opts =
                qp::UploadToContainerOptions { path: path.to_string(), no_overwrite_dir_non_dir: Some("true".into()), ..Default::default() };
            let progress = Progress::new();
            let upload = self.docker.upload_to_container(container, Some(opts), bollard::body_try_stream(progress.watch(tar)));
            tokio::select! {
                r = upload => r.map_err(call("upload to container", container)),
                _ = progress.stalled() => Err(idle_error("upload to container", container)),
            }
        }
    }
}
