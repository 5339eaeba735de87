//! The options of a sandbox on a Kubernetes cluster (`--backend kubernetes`, `didx k8s
//! render`, `pool up --backend kubernetes`), as clap reads them; `commands/k8s.rs` turns them
//! into the library's `KubeOptions`.

use clap::{Args, Subcommand};

use crate::env_args::EnvArgs;

/// Where and how a sandbox runs on a cluster.
#[derive(Args, Debug, Clone)]
pub struct K8sArgs {
    /// The namespace of its objects [default: the kubeconfig context's, else default]
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// The pod is ended this long after its start whatever happens to didx
    /// (activeDeadlineSeconds; e.g. 30m, 2h)
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub deadline: String,
    /// The cluster deletes the ended Job and its Secret this long after it ended
    /// (ttlSecondsAfterFinished)
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub ttl: String,
    /// A runtime class that gives containers what dockerd needs (e.g. sysbox-runc): the
    /// server then runs unprivileged
    #[arg(long = "runtime-class", value_name = "NAME")]
    pub runtime_class: Option<String>,
    /// The server's resource requests: cpu=Q,memory=Q,ephemeral-storage=Q
    #[arg(long = "server-requests", value_name = "LIST")]
    pub server_requests: Option<String>,
    /// The server's resource limits (as --server-requests)
    #[arg(long = "server-limits", value_name = "LIST")]
    pub server_limits: Option<String>,
    /// The client's resource requests (as --server-requests)
    #[arg(long = "client-requests", value_name = "LIST")]
    pub client_requests: Option<String>,
    /// The client's resource limits (as --server-requests)
    #[arg(long = "client-limits", value_name = "LIST")]
    pub client_limits: Option<String>,
    /// A size limit for the inner engine's storage (its emptyDir), e.g. 20Gi
    #[arg(long = "storage-limit", value_name = "QUANTITY")]
    pub storage_limit: Option<String>,
    /// How the inner engine is reached: exec (docker system dial-stdio through pods/exec),
    /// port-forward (its TLS port through pods/portforward, mutual TLS), pod-ip (the pod's
    /// IP, mutual TLS: didx in the cluster); auto is pod-ip in a pod of the cluster, else exec
    #[arg(long = "kube-reach", default_value = "auto", value_name = "HOW")]
    pub kube_reach: String,
}

/// Which cluster sandbox `didx env` and `didx k8s env` reach, and how.
#[derive(Args, Debug, Clone)]
pub struct KubeEnvArgs {
    /// The kubeconfig context to use [default: its current context]
    #[arg(long = "kube-context", value_name = "NAME")]
    pub kube_context: Option<String>,
    /// The namespace [default: the context's, else default]
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,
    /// How the socket reaches the inner engine (as a run's --kube-reach): exec, port-forward,
    /// pod-ip; auto is pod-ip in a pod of the cluster, else exec
    #[arg(long = "kube-reach", default_value = "auto", value_name = "HOW")]
    pub kube_reach: String,
}

impl KubeEnvArgs {
    /// The first option given, of those only a cluster reads.
    pub fn given(&self) -> Option<&'static str> {
        [
            ("--kube-context", self.kube_context.is_some()),
            ("--namespace", self.namespace.is_some()),
            ("--kube-reach", self.kube_reach != "auto"),
        ]
        .into_iter()
        .find_map(|(o, given)| given.then_some(o))
    }
}

/// `didx k8s`: the verbs of sandboxes on a cluster.
#[derive(Subcommand, Debug)]
pub enum K8sCmd {
    /// Print the Kubernetes objects a sandbox with these options would be made of (a Job and
    /// the Secret it owns; YAML, or --json), for reading and `kubectl apply --dry-run=server`;
    /// says which Pod Security level its namespace must admit. Touches no cluster or engine
    Render {
        #[command(flatten)]
        k8s: Box<K8sArgs>,
        /// Print a JSON v1 List instead of YAML
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        env: Box<EnvArgs>,
    },
    /// List the sandboxes in a cluster's namespace (didx's Jobs): id, age, role, state,
    /// certificates' expiry, name
    Ls {
        /// The kubeconfig context to use [default: its current context]
        #[arg(long = "kube-context", value_name = "NAME")]
        kube_context: Option<String>,
        /// The namespace [default: the context's, else default]
        #[arg(long, value_name = "NAME")]
        namespace: Option<String>,
        /// Print the listing as JSON on stdout (the keys of didx ls --json)
        #[arg(long)]
        json: bool,
    },
    /// Print the variable that points a host docker client at the inner engine of a running
    /// sandbox on a cluster (eval "$(didx k8s env ID)"): DOCKER_HOST, a socket of this machine
    /// in a private directory, each connection carried by a pods/exec of dial-stdio in its
    /// client; held by a process of its own until the sandbox's pod ends
    Env {
        /// The sandbox's id (its Job is didx-ID)
        id: String,
        #[command(flatten)]
        kube: Box<KubeEnvArgs>,
        /// Print a JSON object instead (keys: the book, docs/src/reference/json.md)
        #[arg(long)]
        json: bool,
        /// Hold the socket here (what `didx k8s env` starts in a process of its own)
        #[arg(long, hide = true)]
        hold: bool,
    },
    /// Remove sandboxes from a cluster's namespace (their Jobs, with pods and Secrets): those
    /// kept (--clean none, success, failure; DIDX_KEEP), or --all of didx's there
    Rm {
        /// The sandboxes' ids (each Job is didx-ID)
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        ids: Vec<String>,
        /// Every didx sandbox in the namespace (the pool's too)
        #[arg(long)]
        all: bool,
        /// The kubeconfig context to use [default: its current context]
        #[arg(long = "kube-context", value_name = "NAME")]
        kube_context: Option<String>,
        /// The namespace [default: the context's, else default]
        #[arg(long, value_name = "NAME")]
        namespace: Option<String>,
    },
}
