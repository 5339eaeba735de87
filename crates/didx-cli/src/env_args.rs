//! The options that shape an environment (`EnvArgs`, shared by runs, `pool up` and `didx k8s
//! render`) as clap reads them; `options.rs` turns them into the library's builder.

use clap::{Args, ValueEnum};
use didx::spec::IsolationMode;

/// The options that shape an environment's server and name its client: shared by runs and by
/// 'pool up' (a pooled environment serves runs whose options match).
#[derive(Args, Debug, Clone)]
pub struct EnvArgs {
    /// Server version: 'latest' → docker:dind, X → docker:X-dind, X-dind → docker:X-dind.
    /// A comma-separated list (A,B) runs one environment per version, concurrently (a matrix)
    #[arg(long, default_value = "latest", value_name = "VER")]
    pub sv: String,
    /// Client version → docker:VER [default: the --sv value]; with a --sv list, a list of the
    /// same length (paired) or one value for all
    #[arg(long, value_name = "VER")]
    pub cv: Option<String>,
    /// Pull the server and client images even when present
    #[arg(short = 'p', long)]
    pub pull: bool,
    /// Server dockerd's storage driver [default: the host engine's]
    #[arg(short = 's', long = "storage-driver", value_name = "DRIVER")]
    pub storage_driver: Option<String>,
    /// More dockerd options, split like a shell would (repeatable), e.g. --dkropts "--debug"
    #[arg(long, value_name = "OPTS", allow_hyphen_values = true)]
    pub dkropts: Vec<String>,
    /// How the server gets dockerd's privileges: auto (privileged, else the caps profile),
    /// privileged (only), caps (only the capability profile)
    #[arg(long, value_enum, default_value_t = Isolation::Auto, value_name = "MODE")]
    pub isolation: Isolation,
    /// How long to wait for the inner engine to answer (e.g. 60, 90s, 2m)
    #[arg(long = "ready-timeout", default_value = "60s", value_name = "DURATION")]
    pub ready_timeout: String,
    /// Server image, overriding the --sv mapping
    #[arg(long = "server-image", env = "DIDX_SERVER_IMAGE", value_name = "IMAGE")]
    pub server_image: Option<String>,
    /// Client image, overriding the --cv mapping
    #[arg(long = "client-image", env = "DIDX_CLIENT_IMAGE", value_name = "IMAGE")]
    pub client_image: Option<String>,
    /// The range the inner engine's addresses come from: each environment gets its own /20 of
    /// it (default bridge and network pool), none overlapping another environment's or a host
    /// engine network; 'none' leaves them to dockerd
    #[arg(long = "address-range", env = "DIDX_ADDRESS_RANGE", default_value = "10.200.0.0/13", value_name = "CIDR")]
    pub address_range: String,
    /// The host engine's network the server joins instead of the default bridge (the inner
    /// engine takes its MTU)
    #[arg(long, value_name = "NETWORK")]
    pub network: Option<String>,
    /// Make a port of the environment reachable from the host: [IP:]HOSTPORT:ENVPORT[/udp],
    /// or ENVPORT (HOSTPORT 0 or omitted: a free port, reported); IP 127.0.0.1 unless given.
    /// An inner 'docker run -p ENVPORT:…' is then reachable at IP:HOSTPORT. Repeatable
    #[arg(long = "publish", value_name = "SPEC")]
    pub publish: Vec<String>,
    /// Use the image store of the inner engine's version: the server mounts it read-only and
    /// starts with its images; each --load image it lacks is put into it first (once, for
    /// every later sandbox). Inner overlay2 only (else --load loads as without, with a note).
    /// See 'didx store'. DIDX_STORE=1 turns it on for every run
    #[arg(long, env = "DIDX_STORE", value_parser = clap::builder::FalseyValueParser::new())]
    pub store: bool,
    /// Memory of each of server and client (the server's bounds every inner container): 512m, 2g
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPUs of each of server and client, e.g. 1.5
    #[arg(long, value_name = "N")]
    pub cpus: Option<String>,
    /// Processes of each of server and client (at least 16)
    #[arg(long = "pids-limit", value_name = "N")]
    pub pids_limit: Option<String>,
    /// A registry mirror for the inner engine's Docker Hub pulls (http:// or https://
    /// HOST[:PORT]). Repeatable
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// A registry the inner engine may reach over plain HTTP or an unverified certificate
    /// (HOST[:PORT] or a CIDR block). Repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure_registries: Vec<String>,
}

/// `--isolation`: how the server gets dockerd's privileges (the library's [`IsolationMode`]).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    // Privileged where the engine grants it, else the caps profile.
    Auto,
    // --privileged only; fail where refused.
    Privileged,
    // The explicit capability profile only.
    Caps,
}

impl From<Isolation> for IsolationMode {
    fn from(i: Isolation) -> IsolationMode {
        match i {
            Isolation::Auto => IsolationMode::Auto,
            Isolation::Privileged => IsolationMode::Privileged,
            Isolation::Caps => IsolationMode::Caps,
        }
    }
}
