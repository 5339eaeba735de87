//! `didx k8s render`: the objects a sandbox on a Kubernetes cluster would be made of.

use didx::kubernetes::{KubeOptions, Rendered, Resources};
use didx::spec::parse_duration;

use crate::cli::{K8sArgs, K8sCmd};
use crate::output::{self, say};

/// What `didx k8s render` prints, made (and its options validated) before anything is printed.
pub struct Render {
    rendered: Rendered,
    json: bool,
}

/// Validate the command line and render.
pub fn of(cmd: K8sCmd) -> anyhow::Result<Render> {
    let K8sCmd::Render { k8s, json, env } = cmd;
    let kube = kube_options(&k8s)?;
    let options = crate::options::builder(&env)?.options()?;
    let rendered = didx::kubernetes::render(&options, &kube)?;
    Ok(Render { rendered, json })
}

fn kube_options(a: &K8sArgs) -> didx::Result<KubeOptions> {
    let mut server = Resources::default();
    let mut client = Resources::default();
    for (map, what, text) in [
        (&mut server.requests, "--server-requests value", &a.server_requests),
        (&mut server.limits, "--server-limits value", &a.server_limits),
        (&mut client.requests, "--client-requests value", &a.client_requests),
        (&mut client.limits, "--client-limits value", &a.client_limits),
    ] {
        if let Some(t) = text {
            Resources::parse_into(map, what, t)?;
        }
    }
    if let Some(q) = &a.storage_limit
        && !didx::kubernetes::is_quantity(q)
    {
        return Err(didx::Error::Invalid { what: "--storage-limit value", value: q.clone(), fix: "a quantity, e.g. 20Gi or 500Mi".into() });
    }
    Ok(KubeOptions {
        namespace: a.namespace.clone(),
        deadline: parse_duration("--deadline value", &a.deadline)?,
        ttl_after_finished: parse_duration("--ttl value", &a.ttl)?,
        runtime_class: a.runtime_class.clone(),
        server_resources: server,
        client_resources: client,
        storage_limit: a.storage_limit.clone(),
    })
}

/// Print the objects on stdout and the Pod Security level on stderr.
pub fn print(r: &Render) -> anyhow::Result<u8> {
    let text = if r.json { r.rendered.json()? + "\n" } else { r.rendered.yaml()? };
    output::out(&text);
    say(format!(
        "the pod needs a namespace admitting Pod Security level '{}' (pod-security.kubernetes.io/enforce)",
        r.rendered.pod_security.name()
    ));
    Ok(0)
}
