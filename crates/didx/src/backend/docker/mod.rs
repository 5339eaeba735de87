//! The Docker backend: an engine reached through its API (local socket, tcp+TLS, Podman's
//! compatible socket). The engine wrapper is the backend; a member is a container.
//!
//! How an environment is made here is `start.rs` (server, client, readiness, rollback) with
//! the `--engine host` reaper in `reaper.rs`; how environments are found, removed and swept by
//! their labels is `list.rs`.

mod list;
mod reaper;
pub(crate) mod recipe;
pub(crate) mod start;

pub(crate) use list::container_name;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{FutureExt, StreamExt};

use super::{Backend, MemberConfig, OnEvent, Placed, Reached, Sink, Swept};
use crate::cancel::Cancel;
use crate::engine::{Engine, ExecAs, Lease};
use crate::env::spec::EnvSpec;
use crate::env::summary::EnvSummary;
use crate::error::{Error, Result};
use crate::publish::{Published, all_bound};

impl Backend for Engine {
    fn kind(&self) -> &'static str {
        "docker"
    }

    fn location(&self) -> &str {
        self.host()
    }

    fn place<'a>(&'a self, spec: &'a EnvSpec, cancel: &'a Cancel, on: OnEvent<'a>) -> BoxFuture<'a, Result<Placed>> {
        start::place(self, spec, cancel, on).boxed()
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<EnvSummary>>> {
        list::list(self).boxed()
    }

    fn remove_env<'a>(&'a self, env: Option<&'a str>) -> BoxFuture<'a, Result<Vec<String>>> {
        self.remove_labelled_with(env).boxed()
    }

    fn sweep(&self) -> BoxFuture<'_, Result<Swept>> {
        list::sweep(self).boxed()
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
            })
        }
        .boxed()
    }

    fn labels<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<std::collections::HashMap<String, String>>> {
        async move { Ok(self.inspect(member).await?.config.and_then(|c| c.labels).unwrap_or_default()) }.boxed()
    }

    fn hold<'a>(&'a self, member: &'a str, argv: &'a [String]) -> BoxFuture<'a, Result<Lease>> {
        async move { self.lease(member, argv, &recipe::lease_env(self.beats())).await }.boxed()
    }

    fn remove_member<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<()>> {
        self.remove_container(member).boxed()
    }

    fn reach<'a>(&'a self, member: &'a str, port: u16, _local: u16) -> BoxFuture<'a, Result<Reached>> {
        async move {
            let inspect = self.inspect(member).await?;
            let ports = inspect.network_settings.as_ref().and_then(|n| n.ports.as_ref());
            let bound = recipe::loopback_binding(ports, port).ok_or_else(|| Error::NoEndpoint {
                server: inspect.name.as_deref().unwrap_or(member).trim_start_matches('/').to_string(),
                ip: recipe::PUBLISHED_IP,
                port,
            })?;
            match self.forward(bound).await? {
                // An engine on this machine: the port itself.
                None if crate::engine::is_on_this_machine(self.host()) => Ok(Reached { port: bound, forward: None }),
                // An engine on another machine, not over SSH: the port is on that machine's
                // loopback, and this machine's port of the same number is something else.
                None => Err(Error::EndpointElsewhere { host: self.host().to_string() }),
                Some(f) => Ok(Reached { port: f.local_addr().port(), forward: Some(f) }),
            }
        }
        .boxed()
    }

    fn published<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Vec<Published>>> {
        async move {
            let inspect = self.inspect(member).await?;
            Ok(all_bound(inspect.network_settings.as_ref().and_then(|n| n.ports.as_ref())))
        }
        .boxed()
    }

    fn as_engine(&self) -> Option<&Engine> {
        Some(self)
    }
}
