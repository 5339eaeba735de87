//! The Docker backend: an engine reached through its API (local socket, tcp+TLS, Podman's
//! compatible socket). The engine wrapper is the backend; a member is a container.

use bytes::Bytes;
use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use super::{Backend, MemberConfig, Sink};
use crate::engine::{Engine, ExecAs, Lease};
use crate::error::Result;
use crate::labels;

impl Backend for Engine {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn location(&self) -> &str {
        self.host()
    }

    fn exec<'a>(
        &'a self,
        member: &'a str,
        argv: &'a [String],
        how: &'a ExecAs,
        out: Sink<'a>,
        err: Sink<'a>,
    ) -> BoxFuture<'a, Result<i64>> {
        self.exec_as(member, argv, how, out, err).boxed()
    }

    fn exec_with_input<'a>(
        &'a self,
        member: &'a str,
        argv: &'a [String],
        input: BoxStream<'a, Result<Bytes>>,
        out: Sink<'a>,
        err: Sink<'a>,
    ) -> BoxFuture<'a, Result<i64>> {
        Engine::exec_with_input(self, member, argv, input, out, err).boxed()
    }

    fn copy_in<'a>(&'a self, member: &'a str, dir: &'a str, tar: BoxStream<'static, std::io::Result<Bytes>>) -> BoxFuture<'a, Result<()>> {
        self.upload_stream(member, dir, tar).boxed()
    }

    fn copy_out<'a>(&'a self, member: &'a str, path: &'a str) -> BoxStream<'a, Result<Bytes>> {
        self.download(member, path).boxed()
    }

    fn is_dir<'a>(&'a self, member: &'a str, path: &'a str) -> BoxFuture<'a, Result<Option<bool>>> {
        self.stat_is_dir(member, path).boxed()
    }

    fn config<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<MemberConfig>> {
        async move {
            let config = self.inspect(member).await?.config.unwrap_or_default();
            Ok(MemberConfig {
                env: config.env.unwrap_or_default(),
                user: config.user.unwrap_or_default(),
                working_dir: config.working_dir.unwrap_or_default(),
                labels: config.labels.unwrap_or_default(),
            })
        }
        .boxed()
    }

    fn hold<'a>(&'a self, member: &'a str, argv: &'a [String]) -> BoxFuture<'a, Result<Lease>> {
        self.lease(member, argv).boxed()
    }

    fn remove_member<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<()>> {
        self.remove_container(member).boxed()
    }

    fn remove_labelled<'a>(&'a self, env: &'a str) -> BoxFuture<'a, Result<()>> {
        self.remove_labelled_with(Some(env)).map(|r| r.map(|_| ())).boxed()
    }

    fn as_engine(&self) -> Option<&Engine> {
        Some(self)
    }
}

impl Engine {
    /// Remove every container, volume and network labelled with environment `env` (every one
    /// didx manages when `None`), containers first; the removed containers' names.
    pub(crate) async fn remove_labelled_with(&self, env: Option<&str>) -> Result<Vec<String>> {
        let containers = self.containers(labels::filter(env)).await?;
        let names: Vec<String> = containers.iter().map(container_name).collect();
        let ids: Vec<String> = containers.into_iter().filter_map(|c| c.id).collect();
        for r in join_all(ids.iter().map(|c| self.remove_container(c))).await {
            r?;
        }
        let (volumes, networks) = tokio::join!(self.volumes(labels::filter(env)), self.networks(labels::filter(env)));
        let (volumes, networks) = (volumes?, networks?);
        let removals = join_all(volumes.iter().map(|v| self.remove_volume(v)));
        let (vs, ns) = tokio::join!(removals, join_all(networks.iter().map(|n| self.remove_network(n))));
        for r in vs.into_iter().chain(ns) {
            r?;
        }
        Ok(names)
    }
}

/// A listed container's name, without the engine's leading `/`.
pub(crate) fn container_name(c: &bollard::models::ContainerSummary) -> String {
    c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default()
}
