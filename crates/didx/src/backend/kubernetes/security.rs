//! Which Pod Security Standard level a pod meets
//! (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>), from the pod's own
//! fields: what `didx k8s render` says a sandbox's namespace must admit.

use k8s_openapi::api::core::v1::PodSpec;

/// A Pod Security Standard level (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PodSecurity {
    /// The most restricted level.
    Restricted,
    /// Minimally restrictive: no known privilege escalation.
    Baseline,
    /// Unrestricted.
    Privileged,
}

impl PodSecurity {
    /// Its name, as the `pod-security.kubernetes.io/enforce` label takes it.
    pub fn name(self) -> &'static str {
        match self {
            PodSecurity::Restricted => "restricted",
            PodSecurity::Baseline => "baseline",
            PodSecurity::Privileged => "privileged",
        }
    }
}

/// The capabilities the baseline level allows to add.
const BASELINE_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The most restrictive Pod Security Standard level `pod` meets (the checks of the
/// standard's baseline and restricted levels that a pod's own fields decide).
pub fn pod_security(pod: &PodSpec) -> PodSecurity {
    let containers = || pod.containers.iter().chain(pod.init_containers.iter().flatten());
    let host_namespaces = pod.host_network == Some(true) || pod.host_pid == Some(true) || pod.host_ipc == Some(true);
    let host_paths = pod.volumes.iter().flatten().any(|v| v.host_path.is_some());
    let host_ports = containers().any(|c| c.ports.iter().flatten().any(|p| p.host_port.is_some_and(|p| p != 0)));
    let unconfined = |p: Option<&str>| p == Some("Unconfined");
    let pod_sc = pod.security_context.as_ref();
    let baseline_breach = host_namespaces
        || host_paths
        || host_ports
        || unconfined(pod_sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()))
        || unconfined(pod_sc.and_then(|s| s.app_armor_profile.as_ref()).map(|p| p.type_.as_str()))
        || containers().any(|c| {
            let sc = c.security_context.as_ref();
            sc.and_then(|s| s.privileged) == Some(true)
                || sc
                    .and_then(|s| s.capabilities.as_ref())
                    .and_then(|c| c.add.as_ref())
                    .is_some_and(|add| add.iter().any(|a| !BASELINE_CAPS.contains(&a.as_str())))
                || unconfined(sc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| p.type_.as_str()))
                || unconfined(sc.and_then(|s| s.app_armor_profile.as_ref()).map(|p| p.type_.as_str()))
                || sc.and_then(|s| s.proc_mount.as_deref()).is_some_and(|m| m != "Default")
        });
    if baseline_breach {
        return PodSecurity::Privileged;
    }
    let restricted_volumes = ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    let volumes_ok = pod.volumes.iter().flatten().all(|v| {
        let json = serde_json::to_value(v).unwrap_or_default();
        json.as_object().is_some_and(|o| o.keys().all(|k| k == "name" || restricted_volumes.contains(&k.as_str())))
    });
    let non_root = pod_sc.and_then(|s| s.run_as_non_root) == Some(true);
    let pod_seccomp =
        pod_sc.and_then(|s| s.seccomp_profile.as_ref()).is_some_and(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost");
    let restricted = volumes_ok
        && containers().all(|c| {
            let sc = c.security_context.as_ref();
            let caps = sc.and_then(|s| s.capabilities.as_ref());
            sc.and_then(|s| s.allow_privilege_escalation) == Some(false)
                && (non_root || sc.and_then(|s| s.run_as_non_root) == Some(true))
                && (pod_seccomp
                    || sc.and_then(|s| s.seccomp_profile.as_ref()).is_some_and(|p| p.type_ == "RuntimeDefault" || p.type_ == "Localhost"))
                && caps.and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|x| x == "ALL"))
                && caps.and_then(|c| c.add.as_ref()).is_none_or(|a| a.iter().all(|x| x == "NET_BIND_SERVICE"))
        });
    if restricted { PodSecurity::Restricted } else { PodSecurity::Baseline }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Capabilities, Container, SeccompProfile, SecurityContext, Volume};

    #[test]
    fn pod_security_levels_follow_the_standard() {
        let c = |sc: Option<SecurityContext>| Container { name: "c".into(), security_context: sc, ..Default::default() };
        let pod = |sc| PodSpec { containers: vec![c(sc)], ..Default::default() };
        let restricted = SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), add: Some(vec!["NET_BIND_SERVICE".into()]) }),
            ..Default::default()
        };
        assert_eq!(pod_security(&pod(Some(restricted.clone()))), PodSecurity::Restricted);
        assert_eq!(pod_security(&pod(None)), PodSecurity::Baseline);
        let with = |f: fn(&mut SecurityContext)| {
            let mut s = restricted.clone();
            f(&mut s);
            pod_security(&pod(Some(s)))
        };
        assert_eq!(with(|s| s.allow_privilege_escalation = None), PodSecurity::Baseline);
        assert_eq!(with(|s| s.capabilities.as_mut().unwrap().add = Some(vec!["CHOWN".into()])), PodSecurity::Baseline);
        assert_eq!(with(|s| s.capabilities.as_mut().unwrap().add = Some(vec!["SYS_ADMIN".into()])), PodSecurity::Privileged);
        assert_eq!(with(|s| s.privileged = Some(true)), PodSecurity::Privileged);
        assert_eq!(with(|s| s.proc_mount = Some("Unmasked".into())), PodSecurity::Privileged);
        assert_eq!(with(|s| s.seccomp_profile.as_mut().unwrap().type_ = "Unconfined".into()), PodSecurity::Privileged);
        let mut host = pod(Some(restricted.clone()));
        host.host_network = Some(true);
        assert_eq!(pod_security(&host), PodSecurity::Privileged);
        let mut host_path = pod(Some(restricted));
        host_path.volumes = Some(vec![Volume {
            name: "h".into(),
            host_path: Some(k8s_openapi::api::core::v1::HostPathVolumeSource { path: "/".into(), type_: None }),
            ..Default::default()
        }]);
        assert_eq!(pod_security(&host_path), PodSecurity::Privileged);
    }
}
