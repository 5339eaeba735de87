//! The ways to a sandbox's inner engine on a cluster (`--kube-reach`); the streams themselves
//! are `reach.rs`'s.

use crate::error::{Error, Result};

/// How a sandbox's inner engine on a cluster is reached (`--kube-reach`). Whatever the way,
/// COMMANDs, copies and the hold go through `pods/exec` and `pods/attach`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KubeReach {
    /// [`PodIp`](Self::PodIp) when didx runs in the cluster (its configuration is the pod's
    /// in-cluster one), else [`Exec`](Self::Exec).
    #[default]
    Auto,
    /// Each connection a `docker system dial-stdio` run in the client through `pods/exec`
    /// (the API server carries the data).
    Exec,
    /// Each connection a `pods/portforward` stream to the server's TLS port, mutual TLS over
    /// it (for clusters whose policy refuses exec, not port-forward).
    PortForward,
    /// The pod's IP and the server's TLS port, mutual TLS (from inside the cluster: no API
    /// server on the data path).
    PodIp,
}

impl KubeReach {
    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            KubeReach::Auto => "auto",
            KubeReach::Exec => "exec",
            KubeReach::PortForward => "port-forward",
            KubeReach::PodIp => "pod-ip",
        }
    }

    /// The way `value` names; a usage error for anything else.
    pub fn parse(value: &str) -> Result<KubeReach> {
        [KubeReach::Auto, KubeReach::Exec, KubeReach::PortForward, KubeReach::PodIp]
            .into_iter()
            .find(|r| r.name() == value)
            .ok_or_else(|| Error::invalid("--kube-reach value", value, "one of auto, exec, port-forward, pod-ip"))
    }

    /// What it is for a didx `in_cluster` or not ([`Auto`](Self::Auto) decided; see
    /// [`Cluster::in_cluster`](super::cluster::Cluster::in_cluster)).
    pub fn on(self, in_cluster: bool) -> KubeReach {
        match self {
            KubeReach::Auto if in_cluster => KubeReach::PodIp,
            KubeReach::Auto => KubeReach::Exec,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_has_its_name_and_auto_is_the_pod_ip_inside_the_cluster_only() {
        for way in [KubeReach::Auto, KubeReach::Exec, KubeReach::PortForward, KubeReach::PodIp] {
            assert_eq!(KubeReach::parse(way.name()).unwrap(), way);
        }
        assert!(KubeReach::parse("ssh").unwrap_err().is_usage());
        assert_eq!((KubeReach::Auto.on(false), KubeReach::Auto.on(true)), (KubeReach::Exec, KubeReach::PodIp));
        assert_eq!(KubeReach::PortForward.on(true), KubeReach::PortForward);
    }
}
