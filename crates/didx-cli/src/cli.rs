//! The command line, as clap reads it: options and verbs as typed, the options that take one
//! of a few words as enums (so --help and the completions list them). `options.rs` and the
//! verbs under `commands/` turn them into the library's validated types.

use clap::{Args, ColorChoice, Parser, Subcommand, ValueEnum};
use didx::spec::{CleanPolicy, EngineMode, Teardown};

pub use crate::env_args::EnvArgs;
pub use crate::k8s_args::{K8sArgs, K8sCmd, KubeEnvArgs};
pub use crate::store_image_args::{ImageCmd, StoreCmd};

pub const AFTER_HELP: &str = "\
COMMAND: each argument is one command, split into words as a POSIX shell splits it (no
expansion on the host). A command whose first word is a docker subcommand, or that starts
with '-', gets 'docker' in front; one starting with 'docker exec' runs on the host through
sh, with $DIND_CLIENT_NAME (see --cv-env) holding the client's name and $DOCKER_HOST the
engine didx uses; one starting with 'host:' runs the rest on the host through sh with
DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH pointing at the sandbox's inner engine
(e.g. 'host: docker-compose up -d'; both host forms also get them as DIDX_DOCKER_HOST,
DIDX_DOCKER_TLS_VERIFY, DIDX_DOCKER_CERT_PATH); anything else runs in the client as given.
The first failing command stops the rest.

Verbs: a first argument that is exactly a verb name ('image', 'pool', 'ls', 'env', 'cp', 'store',
'k8s', 'completions', 'man')
is a didx verb, not a COMMAND (-H may come before it, other options after it). Put '--' before the
COMMANDs to force the COMMAND reading (e.g. didx -- image ls, didx -- env), and before a
COMMAND that starts with '-' (e.g. didx -- '-D info').
  didx image build    build the offline server/client image didx/dind:local
                      (--suite trixie: trixie's engine, tagged didx/dind:<its version> only)
  didx pool up N      keep N ready environments (same server options as the runs)
  didx pool           list the pool;  didx pool down  empty it
  didx ls             list every didx environment (state, versions, images, age, policy,
                      owner, address block, published ports, endpoint)
  didx --pool ...     run in a pooled environment (then removed; the pool refills)
  didx env ID         print 'export DOCKER_HOST=… DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=…'
                      for a running environment: eval \"$(didx env ID)\" (--json too)
  didx cp ID:PATH HOST_PATH   copy out of a running environment's client (HOST_PATH ID:PATH: in)
  didx store          list the image stores (--store): images, disk use, users
  didx store rm [IMAGE...]  remove images from the stores (none: every store)
  didx store prune    remove stored images the host engine no longer has
  didx completions SHELL  print a completion script for bash, zsh or fish
  didx man            print the man page (roff)
Listings (didx ls, didx --clean rpt, didx pool) print a table, or JSON on stdout with --json.

Matrix: --sv A,B (and --cv C,D, paired, or one value for all) runs the same -v/--cp/--load/
COMMANDs in one environment per version, concurrently (--jobs N at most at once). Every line
of each is prefixed [VER]; a summary table (version, result, exit code, duration) ends on
stderr, or with --json a JSON array on stdout (command output then goes to stderr). Exit code:
the first failing version's (list order), else 0. --pool and --cp - are refused with a list.
NO_COLOR (set, not empty) turns colour off; so does output that is not a terminal.

Exit codes:
  0    every command succeeded (or nothing to run)
  N    the first failing command's own exit code
  2    usage error (bad option or value); nothing was created
  125  didx itself failed (engine unreachable, image missing, start failure)
  129  interrupted by SIGHUP (terminal closed); 130 by SIGINT; 143 by SIGTERM (clean-up ran
       by --clean, as a failure; a second signal cuts a hung clean-up short and says what is
       left and how to remove it)
A closed stdout or stderr (didx ... | head -1) is not a failure: didx stops writing there,
the commands run on, and the exit code is theirs. A clean-up that fails after the commands
ran is reported on one line; the exit code stays the commands'.";

/// Execute commands in an encapsulated Docker-in-Docker server and client.
#[derive(Parser, Debug)]
#[command(name = "didx", version, after_help = AFTER_HELP, args_conflicts_with_subcommands = true, color = color_choice())]
pub struct Cli {
    #[command(subcommand)]
    pub verb: Option<Verb>,
    #[command(flatten)]
    pub run: RunArgs,
    /// Docker engine to use (unix:///path, tcp://host:port or ssh://[user@]host[:port])
    /// [default: $DOCKER_HOST, else the current docker context's, else
    /// unix:///var/run/docker.sock]; tcp uses TLS when DOCKER_TLS_VERIFY is set; ssh runs the
    /// system ssh ($DIDX_SSH) and `docker system dial-stdio` there
    #[arg(short = 'H', long = "host", global = true, value_name = "ADDR")]
    pub host: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub env: EnvArgs,
    /// Mount into the client: [SOURCE:]ABS_CLIENT_PATH[:MODE], SOURCE an absolute or ./relative
    /// host path or a volume name; no SOURCE makes an anonymous volume (removed by --clean)
    #[arg(short = 'v', long = "volume", value_name = "SPEC")]
    pub volumes: Vec<String>,
    /// Copy into the client before the commands: SOURCE:ABS_CLIENT_PATH, SOURCE a host path
    /// (/abs or ./rel), '-' (a tar stream on stdin), CONTAINER:/path or IMAGE[:TAG]::/path;
    /// a target ending in '/' is a directory to copy into. Repeatable, applied left to right,
    /// after -v
    #[arg(long = "cp", value_name = "SRC:DEST", allow_hyphen_values = true)]
    pub cp: Vec<String>,
    /// Copy out of the client after the commands (succeeded or failed): ABS_CLIENT_PATH:HOST_PATH
    /// (HOST_PATH ending in '/' or a directory: into it; CLIENT_PATH/. : its contents)
    #[arg(long = "cp-out", value_name = "SRC:DEST")]
    pub cp_out: Vec<String>,
    /// After the commands, when all succeeded: put IMAGE of the inner engine into the host
    /// engine (the reverse of --load). Repeatable
    #[arg(long = "save", value_name = "IMAGE")]
    pub save: Vec<String>,
    /// Give the client's docker your registry credentials (DOCKER_AUTH_CONFIG, else the host's
    /// docker config; auths only): a private copy in its tmpfs, in no image, label or log
    #[arg(long = "registry-auth")]
    pub registry_auth: bool,
    /// Seed the inner engine with an image from the host engine before the commands
    /// (skipped when already there with the same ID). Repeatable
    #[arg(long = "load", value_name = "IMAGE")]
    pub load: Vec<String>,
    /// After the commands: none leaves this environment running; success, failure, anycase
    /// remove it by outcome; all removes every didx environment; rpt lists them (both run no
    /// commands)
    #[arg(long, value_enum, default_value_t = Clean::None, value_name = "WHEN")]
    pub clean: Clean,
    /// Host variable holding the client's container name, for 'docker exec $VAR …' commands
    #[arg(long = "cv-env", default_value = "DIND_CLIENT_NAME", value_name = "NAME")]
    pub cv_env: String,
    /// How a removal by --clean ends the environment: wait removes it before didx exits; lease
    /// closes its leases and exits at once, the engine removing it within 2 s (needs --clean
    /// anycase or failure). [default: lease for an environment the pool served, else wait]
    #[arg(long, value_enum, value_name = "HOW")]
    pub teardown: Option<TeardownArg>,
    /// Take a ready environment from the warm pool (see 'didx pool up'), started with the same
    /// server options; a background refill replaces it. Starts a fresh one if none is ready
    #[arg(long)]
    pub pool: bool,
    /// With --clean rpt: print the listing as JSON on stdout (keys: the book, docs/src/reference/json.md);
    /// with a --sv list: the matrix summary as JSON on stdout (command output goes to stderr)
    #[arg(long)]
    pub json: bool,
    /// With a --sv list: run at most N environments at once [default: all]
    #[arg(long, value_name = "N")]
    pub jobs: Option<String>,
    /// Print "didx: timing PHASE MS" lines (milliseconds since didx started) on stderr, for
    /// seeing where the time goes (bench/speed.py reads them)
    #[arg(long)]
    pub timings: bool,
    /// Also write every event of the run as one JSON object per line on stderr
    /// ({"didx_event": KIND, "ms": MS, ...}), for programs that follow a run
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub events: Option<EventFormat>,
    /// Mount the current directory at /work in the client and run every COMMAND there (a
    /// -v targeting /work is then refused)
    #[arg(long = "workdir-here")]
    pub workdir_here: bool,
    /// Run COMMANDs in the client as this user: host (the user running didx: uid, gid, every
    /// supplementary gid, a passwd entry so whoami and ~ work) or UID[:GID]
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// Forward the host's ssh agent: its socket ($SSH_AUTH_SOCK) is mounted in the client and
    /// SSH_AUTH_SOCK set there for the COMMANDs
    #[arg(long = "ssh-agent")]
    pub ssh_agent: bool,
    /// Which engine the client's docker talks to: dind (its own inner engine, the default) or
    /// host (the engine didx uses, Docker-outside-of-Docker: no server; the client gets root
    /// on the host; its bind sources are translated to host paths and what it creates is
    /// removed with it)
    #[arg(long, value_enum, default_value_t = ClientEngine::Dind, value_name = "ENGINE")]
    pub engine: ClientEngine,
    /// Where the environment runs: docker (the engine of -H / DOCKER_HOST / the docker
    /// context) or kubernetes (a Job of a cluster's namespace; the kubeconfig's current
    /// context or --kube-context, else the in-cluster configuration)
    #[arg(long, value_enum, default_value_t = BackendArg::Docker, value_name = "NAME")]
    pub backend: BackendArg,
    /// With --backend kubernetes: the kubeconfig context to use (KUBECONFIG, else
    /// ~/.kube/config) [default: its current context]
    #[arg(long = "kube-context", value_name = "NAME", help_heading = "Kubernetes backend")]
    pub kube_context: Option<String>,
    #[command(flatten, next_help_heading = "Kubernetes backend")]
    pub k8s: K8sArgs,
    /// Commands to run in the client (see below)
    #[arg(value_name = "COMMAND")]
    pub commands: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum Verb {
    /// Manage didx's images
    #[command(subcommand)]
    Image(ImageCmd),
    /// The warm pool of ready environments; alone, lists it
    // Not `args_conflicts_with_subcommands`: clap counts a global -H given before `pool` as
    // this command's own and refuses every subcommand with it. `PoolJob::of` refuses --json
    // with a subcommand instead.
    Pool {
        #[command(subcommand)]
        cmd: Option<PoolCmd>,
        /// Print the listing as JSON on stdout (keys: the book, docs/src/reference/json.md)
        #[arg(long)]
        json: bool,
    },
    /// List every didx environment on the engine: id, state, versions, images, age, policy,
    /// owner, inner address block, published ports, engine endpoint
    Ls {
        /// Print the listing as JSON on stdout (keys: the book, docs/src/reference/json.md)
        #[arg(long)]
        json: bool,
    },
    /// Print the variables that point a host docker client at a running environment's inner
    /// engine: export DOCKER_HOST=… DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH=… (eval "$(didx env ID)")
    Env {
        /// The environment id (the <id> of dind_<id>_server_<ver>), or its server's or
        /// client's container name
        #[arg(value_name = "ID")]
        id: String,
        /// Print a JSON object instead (keys: the book, docs/src/reference/json.md)
        #[arg(long)]
        json: bool,
        /// (internal) hold the forwards of an engine over SSH until the environment ends
        #[arg(long, hide = true)]
        hold: bool,
        /// Where: docker (the engine of -H) or kubernetes (a sandbox of a cluster's namespace:
        /// a socket of this machine's, held until its pod ends, as didx k8s env)
        #[arg(long, value_enum, default_value_t = BackendArg::Docker, value_name = "NAME")]
        backend: BackendArg,
        #[command(flatten, next_help_heading = "Kubernetes backend")]
        kube: Box<KubeEnvArgs>,
    },
    /// Copy between a running environment's client and this machine, as docker cp does:
    /// ID:ABS_PATH HOST_PATH (out) or HOST_PATH ID:ABS_PATH (in); ID the environment id or a
    /// container name of it. Out: nothing is written outside HOST_PATH, whatever the archive
    /// holds
    Cp {
        /// ID:ABS_PATH, or a host path
        #[arg(value_name = "SRC")]
        src: String,
        /// A host path, or ID:ABS_PATH
        #[arg(value_name = "DEST")]
        dest: String,
    },
    /// The image store (--store): alone, lists each store, its images and disk use
    // See `Pool`: `StoreJob::of` refuses --json with a subcommand.
    Store {
        #[command(subcommand)]
        cmd: Option<StoreCmd>,
        /// Print the listing as JSON on stdout (keys: the book, docs/src/reference/json.md)
        #[arg(long)]
        json: bool,
    },
    /// Sandboxes on a Kubernetes cluster: the objects a run would create (render), those
    /// there (ls), a host docker client at a running one (env); runs are didx --backend
    /// kubernetes
    #[command(subcommand)]
    K8s(K8sCmd),
    /// Print a shell completion script to stdout
    Completions {
        /// The shell to complete didx in
        #[arg(value_name = "SHELL")]
        shell: Shell,
    },
    /// Print didx's man page (roff) to stdout, e.g. didx man > /usr/local/share/man/man1/didx.1
    Man,
}

/// `--events`: how a run's events are written for programs.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventFormat {
    /// One JSON object per line on stderr
    Json,
}

/// The shells `didx completions` writes for.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// Install as /etc/bash_completion.d/didx (bash-completion)
    Bash,
    /// Install as _didx in a directory on $fpath
    Zsh,
    /// Install as ~/.config/fish/completions/didx.fish
    Fish,
}

/// `--backend`: where environments run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendArg {
    Docker,
    Kubernetes,
}

/// `--clean`: what to remove after the commands. The words are the library's
/// [`CleanPolicy`] values, spelled as it spells them.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clean {
    // Plain comments, not doc comments: a described value would turn all of --help into the
    // long layout.
    // Leave the environment running.
    None,
    // Remove it when every command succeeded.
    Success,
    // Remove it when a command failed (or didx was interrupted).
    Failure,
    // Always remove it.
    Anycase,
    // Remove every didx environment on the engine; runs no commands.
    All,
    // List every didx environment on the engine; runs no commands.
    Rpt,
}

impl From<Clean> for CleanPolicy {
    fn from(c: Clean) -> CleanPolicy {
        match c {
            Clean::None => CleanPolicy::None,
            Clean::Success => CleanPolicy::Success,
            Clean::Failure => CleanPolicy::Failure,
            Clean::Anycase => CleanPolicy::Anycase,
            Clean::All => CleanPolicy::All,
            Clean::Rpt => CleanPolicy::Rpt,
        }
    }
}

/// `--teardown`: how a removal ends the environment (the library's [`Teardown`]).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeardownArg {
    // Remove it before didx exits.
    Wait,
    // Close its leases and exit; the engine removes it within 2 s.
    Lease,
}

impl From<TeardownArg> for Teardown {
    fn from(t: TeardownArg) -> Teardown {
        match t {
            TeardownArg::Wait => Teardown::Wait,
            TeardownArg::Lease => Teardown::Lease,
        }
    }
}

/// `--engine`: which engine the client's docker talks to (the library's [`EngineMode`]).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientEngine {
    // Its own inner engine in a server container.
    Dind,
    // The engine didx uses (Docker-outside-of-Docker).
    Host,
}

impl From<ClientEngine> for EngineMode {
    fn from(e: ClientEngine) -> EngineMode {
        match e {
            ClientEngine::Dind => EngineMode::Dind,
            ClientEngine::Host => EngineMode::Host,
        }
    }
}

impl RunArgs {
    /// Whether the run is a version matrix: `--sv` holds a comma-separated list.
    pub fn is_matrix(&self) -> bool {
        self.env.sv.contains(',')
    }
}

/// clap's colours: never when NO_COLOR is set and not empty (<https://no-color.org>); else
/// only on a terminal (clap checks each stream).
pub fn color_choice() -> ColorChoice {
    if no_color() { ColorChoice::Never } else { ColorChoice::Auto }
}

/// NO_COLOR is set and not empty.
pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

#[derive(Subcommand, Debug)]
pub enum PoolCmd {
    /// Keep N ready environments for runs with the same server options (tops up to N, at
    /// most 4 starting at a time, and waits until they answer)
    Up {
        /// How many, 1 to 32
        #[arg(value_name = "N")]
        n: usize,
        /// A pooled environment nobody claims within this long ends itself and the engine
        /// removes it (e.g. 90s, 30m, 2h; 0 = wait for a claim forever)
        #[arg(long = "idle-timeout", default_value = "30m", value_name = "DURATION")]
        idle_timeout: String,
        /// With --store: put IMAGE into the image store first, so every pooled environment
        /// starts with it (skipped when the store holds its ID). Repeatable
        #[arg(long = "load", value_name = "IMAGE")]
        load: Vec<String>,
        /// Also write every event as one JSON object per line on stderr (the run's kinds, and
        /// pool_ready per environment and pool_up at the end)
        #[arg(long, value_enum, value_name = "FORMAT")]
        events: Option<EventFormat>,
        #[command(flatten)]
        env: Box<EnvArgs>,
        /// Where: docker (the engine of -H) or kubernetes (Jobs of a namespace, for --pool runs)
        #[arg(long, value_enum, default_value_t = BackendArg::Docker, value_name = "NAME")]
        backend: BackendArg,
        /// With --backend kubernetes: the kubeconfig context [default: its current context]
        #[arg(long = "kube-context", value_name = "NAME", help_heading = "Kubernetes backend")]
        kube_context: Option<String>,
        #[command(flatten, next_help_heading = "Kubernetes backend")]
        k8s: Box<K8sArgs>,
    },
    /// Remove every pooled environment not claimed by a run (starting ones only when their
    /// filler is provably gone); says what it left and why
    Down {
        /// Also write what was removed and left as one JSON object (pool_down) on stderr
        #[arg(long, value_enum, value_name = "FORMAT")]
        events: Option<EventFormat>,
        /// Where: docker (the engine of -H) or kubernetes (a cluster's namespace)
        #[arg(long, value_enum, default_value_t = BackendArg::Docker, value_name = "NAME")]
        backend: BackendArg,
        /// With --backend kubernetes: the kubeconfig context [default: its current context]
        #[arg(long = "kube-context", value_name = "NAME", help_heading = "Kubernetes backend")]
        kube_context: Option<String>,
        /// With --backend kubernetes: the namespace [default: the context's, else default]
        #[arg(long, value_name = "NAME", help_heading = "Kubernetes backend")]
        namespace: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use didx::spec::IsolationMode;

    use super::*;
    use crate::env_args::Isolation;

    /// Every word clap accepts is one the library reads as the same value, and every word the
    /// library reads, clap accepts: the accepted spellings are the library's.
    fn same_words<A: ValueEnum + Copy + Into<L>, L: std::str::FromStr + PartialEq + std::fmt::Debug>(library: &[&str]) {
        let words: Vec<String> = A::value_variants().iter().map(|v| v.to_possible_value().unwrap().get_name().to_string()).collect();
        assert_eq!(words, library);
        for v in A::value_variants() {
            let word = v.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(word.parse::<L>().ok(), Some((*v).into()), "{word}");
        }
    }

    #[test]
    fn the_option_words_are_the_library_s() {
        same_words::<Clean, CleanPolicy>(&["none", "success", "failure", "anycase", "all", "rpt"]);
        same_words::<Isolation, IsolationMode>(&["auto", "privileged", "caps"]);
        same_words::<ClientEngine, EngineMode>(&["dind", "host"]);
        same_words::<TeardownArg, Teardown>(&["wait", "lease"]);
    }

    #[test]
    fn the_defaults_are_the_library_s() {
        let cli = Cli::try_parse_from(["didx", "true"]).unwrap();
        assert_eq!(CleanPolicy::from(cli.run.clean), CleanPolicy::None);
        assert_eq!(IsolationMode::from(cli.run.env.isolation), IsolationMode::default());
        assert_eq!(EngineMode::from(cli.run.engine), EngineMode::default());
    }
}
