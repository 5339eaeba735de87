//! The command line's environment options turned into the library's builder: the one place
//! they are read, for runs, matrices, `--clean rpt|all` and `pool up` alike. The builder
//! validates; nothing here re-checks strings.

use didx::spec::{UserSpec, parse_duration};
use didx::{Sandbox, SandboxBuilder};

use crate::cli::{EnvArgs, RunArgs};

/// The builder for the options shared by runs and `pool up`.
pub fn builder(a: &EnvArgs) -> didx::Result<SandboxBuilder> {
    let mut b = Sandbox::builder()
        .server_version(&a.sv)
        .pull(a.pull)
        .isolation(a.isolation.into())
        .ready_timeout(parse_duration("--ready-timeout value", &a.ready_timeout)?);
    if let Some(cv) = &a.cv {
        b = b.client_version(cv);
    }
    if let Some(d) = &a.storage_driver {
        b = b.storage_driver(d);
    }
    for o in &a.dkropts {
        b = b.dockerd_opts(o);
    }
    if let Some(i) = &a.server_image {
        b = b.server_image(i);
    }
    if let Some(i) = &a.client_image {
        b = b.client_image(i);
    }
    b = b.address_range(&a.address_range);
    if let Some(n) = &a.network {
        b = b.network(n);
    }
    for p in &a.publish {
        b = b.publish(p);
    }
    if let Some(m) = &a.memory {
        b = b.memory(m);
    }
    if let Some(c) = &a.cpus {
        b = b.cpus(c);
    }
    for url in &a.registry_mirrors {
        b = b.registry_mirror(url);
    }
    for host in &a.insecure_registries {
        b = b.insecure_registry(host);
    }
    if let Some(p) = &a.pids_limit {
        b = b.pids_limit(p);
    }
    Ok(b.store(a.store))
}

/// The builder for a run: the shared options, then what only a run has (mounts, copies,
/// loads, user, engine).
pub fn run_builder(a: &RunArgs) -> didx::Result<SandboxBuilder> {
    let mut b = builder(&a.env)?;
    for v in &a.volumes {
        b = b.volume(v);
    }
    for c in &a.cp {
        b = b.copy(c);
    }
    for l in &a.load {
        b = b.load(l);
    }
    if let Some(u) = &a.user {
        b = b.user(UserSpec::parse(u)?);
    }
    if a.registry_auth {
        b = b.registry_auth(didx::spec::RegistryAuth::from_host()?);
    }
    Ok(b.workdir_here(a.workdir_here).ssh_agent(a.ssh_agent).engine(a.engine.into()))
}
