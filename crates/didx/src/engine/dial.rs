//! An inner engine reached through an exec stream: each connection is a `docker system
//! dial-stdio` run in the environment's client (whose docker CLI is wired to the inner engine
//! over mutual TLS), its attached stdin and stdout the connection — as the docker CLI reaches
//! an engine over SSH, and as buildx's Kubernetes driver reaches its builder through
//! `pods/exec`. Nothing is published and no port is reached: only the engine's exec API is
//! used. The Kubernetes backend's data path (a pod's exec stream instead of Docker's) is this
//! same transport; here it runs over the Docker engine's exec.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bytes::Bytes;
use futures_util::StreamExt;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::StreamReader;

use super::connect::Engine;
use crate::error::{Error, Result};

/// What runs in the client for each connection.
pub(crate) const DIAL: [&str; 3] = ["docker", "system", "dial-stdio"];

impl Engine {
    raw! {
        /// A client of the inner engine that `client` (an environment's client container) reaches:
        /// every connection a `docker system dial-stdio` exec in it (see this module). The
        /// handle's calls are bounded by the caller, as bollard's own are not.
        fn inner_over_exec(&self, client: &str) -> Result<Docker> {
            let (engine, container) = (self.clone(), client.to_string());
            docker_over(&format!("exec:{client}"), move || {
                let (engine, container) = (engine.clone(), container.clone());
                async move {
                    let argv: Vec<String> = DIAL.iter().map(|s| s.to_string()).collect();
                    let (_, output, input) = engine.attached_exec(&container, &argv, &[]).await.map_err(io::Error::other)?;
                    Ok(Duplex::new(Box::pin(StreamReader::new(stdout_bytes(output))), input))
                }
            })
        }
    }
}

/// A Docker client whose every connection is what `dial` opens (an exec's stdin and stdout: a
/// Docker exec here, a pod's exec on a cluster); `name` says where, in errors.
pub(crate) fn docker_over<F, Fut>(name: &str, dial: F) -> Result<Docker>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Duplex>> + Send + 'static,
{
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, super::ssh::Body>(Dialer(dial));
    let transport = move |req: bollard::BollardRequest| {
        let http = http.clone();
        async move { http.request(req).await.map_err(BollardError::from) }
    };
    Docker::connect_with_custom_transport(transport, Some("http://docker"), u64::MAX, bollard::API_DEFAULT_VERSION)
        .map_err(|source| Error::Unreachable { host: name.to_string(), source })
}

/// The hyper connector: each connection what its function dials.
#[derive(Clone)]
struct Dialer<F>(F);

impl<F, Fut> tower_service::Service<hyper::Uri> for Dialer<F>
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = io::Result<Duplex>> + Send + 'static,
{
    type Response = Duplex;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Duplex>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        Box::pin((self.0)())
    }
}

/// A Docker exec's output as bytes: its stdout (a stream without a TTY comes framed per
/// stream; its stderr is dial-stdio's own words, dropped).
type Bytestream = Pin<Box<dyn futures_util::Stream<Item = io::Result<Bytes>> + Send>>;

fn stdout_bytes(output: super::exec::OutputStream) -> Bytestream {
    Box::pin(output.filter_map(|item| async move {
        match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => Some(Ok(message)),
            Ok(_) => None,
            Err(e) => Some(Err(io::Error::other(e))),
        }
    }))
}

/// A connection's stream to read.
pub(crate) type Reading = Pin<Box<dyn AsyncRead + Send>>;
/// A connection's stream to write.
pub(crate) type Writing = Pin<Box<dyn AsyncWrite + Send>>;

/// One connection: a stream to read (an exec's stdout), one to write (its stdin).
pub(crate) struct Duplex {
    output: TokioIo<Pin<Box<dyn AsyncRead + Send>>>,
    input: TokioIo<Pin<Box<dyn AsyncWrite + Send>>>,
    /// What must live as long as the connection (a pod exec's stream task: dropped, it ends).
    _keep: Option<Box<dyn Send>>,
}

impl Duplex {
    /// The connection of `output` and `input`.
    pub(crate) fn new(output: Pin<Box<dyn AsyncRead + Send>>, input: Pin<Box<dyn AsyncWrite + Send>>) -> Duplex {
        Duplex { output: TokioIo::new(output), input: TokioIo::new(input), _keep: None }
    }

    /// The connection of `output` and `input`, keeping `keep` until it closes.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn keeping(output: Pin<Box<dyn AsyncRead + Send>>, input: Pin<Box<dyn AsyncWrite + Send>>, keep: Box<dyn Send>) -> Duplex {
        Duplex { _keep: Some(keep), ..Duplex::new(output, input) }
    }

    /// Its stream to read, its stream to write, and what must live as long as they are used.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn into_parts(self) -> (Reading, Writing, Option<Box<dyn Send>>) {
        (self.output.into_inner(), self.input.into_inner(), self._keep)
    }
}

impl hyper::rt::Read for Duplex {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: hyper::rt::ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().output).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Duplex {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().input).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().input).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().input).poll_shutdown(cx)
    }
}

impl Connection for Duplex {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
