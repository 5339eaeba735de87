//! didx: throwaway, fully encapsulated Docker engines on demand.
//!
//! An [`env::Environment`] is a Docker-in-Docker *server* container (its own dockerd and
//! storage, isolated from the host engine) plus a *client* container with the docker CLI wired
//! to it over mutual TLS. This crate holds all of didx's logic; the `didx` binary only parses
//! arguments, prints and maps errors to exit codes.
//!
//! ```no_run
//! # async fn demo() -> didx::error::Result<()> {
//! use didx::{engine::Engine, env::{Cancel, EnvId, EnvSpec, Environment}, spec::*};
//! let engine = Engine::connect(None).await?;
//! let info = engine.info().await?;
//! let spec = EnvSpec {
//!     id: EnvId::generate(),
//!     sv: Version::parse("--sv", "latest")?,
//!     cv: Version::parse("--cv", "latest")?,
//!     server_image: "didx/dind:local".into(),
//!     client_image: "didx/dind:local".into(),
//!     storage_driver: info.driver.unwrap_or_default(),
//!     dockerd_opts: vec![],
//!     isolation: IsolationMode::Auto,
//!     engine_id: info.id.unwrap_or_default(),
//!     ready_timeout: std::time::Duration::from_secs(60),
//!     volumes: vec![],
//! };
//! let env = Environment::start(&engine, &spec, &Cancel::default(), &|_| {}).await?;
//! let code = env.exec(&["docker".into(), "info".into()], &mut tokio::io::stdout(), &mut tokio::io::stderr()).await?;
//! env.rm().await?;
//! # let _ = code; Ok(()) }
//! ```
//!
//! For many short-lived environments, [`env::pool`] keeps some started ahead of time:
//! [`env::pool::up`] fills it, [`env::pool::claim`] takes one (atomically, across processes)
//! in tens of milliseconds.
#![deny(missing_docs)]

pub mod archive;
pub mod build;
pub mod cache;
pub mod command;
pub mod copy;
pub mod engine;
pub mod env;
pub mod error;
pub mod images;
pub mod isolation;
pub mod labels;
pub mod load;
pub mod ready;
pub mod run;
pub mod spec;
pub mod tls;
