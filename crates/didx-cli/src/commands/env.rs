//! `didx env ID [--json]`: how a host tool reaches a running environment's inner engine.

use didx::Error;

use crate::engine::connect;
use crate::listing;
use crate::output;

/// `didx env ID [--json]`: the variables, as a line to `eval` or as JSON.
pub async fn env_vars(host: Option<&str>, id: &str, json: bool) -> anyhow::Result<u8> {
    // Said before trying to reach an engine elsewhere (the library checks again after
    // connecting, for an engine named by a docker context).
    if let Some(h) = host.map(str::to_string).or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
        && !didx::inventory::is_on_this_machine(&h)
    {
        return Err(Error::EndpointElsewhere { host: h }.into());
    }
    let engine = connect(host).await?;
    let access = didx::inventory::host_access(&engine, id).await?;
    output::out(&format!("{}\n", if json { listing::host_access_json(&access) } else { export_line(&access) }));
    Ok(0)
}

/// `export DOCKER_HOST='…' DOCKER_TLS_VERIFY=1 DOCKER_CERT_PATH='…'`, quoted for a POSIX shell.
fn export_line(access: &didx::inventory::HostAccess) -> String {
    let vars: Vec<String> = access
        .docker_env()
        .into_iter()
        .map(|(k, v)| if v == "1" { format!("{k}=1") } else { format!("{k}='{}'", v.replace('\'', r"'\''")) })
        .collect();
    format!("export {}", vars.join(" "))
}
