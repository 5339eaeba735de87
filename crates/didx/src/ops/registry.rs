//! Registry credentials into a started client (`--registry-auth`; see [`crate::spec::RegistryAuth`]):
//! a docker config of the `auths` only, written through an exec's stdin into the client's
//! `/dev/shm` (a tmpfs: in no image layer, `docker diff` or commit) under umask 077, owned
//! by the user the COMMANDs run as, and `DOCKER_CONFIG` pointing there for every later exec.

use bytes::Bytes;

use crate::env::Environment;
use crate::error::{Error, Result};
use crate::ops::start::SandboxOptions;
use crate::registry::CONFIG_DIR;

impl SandboxOptions {
    /// Give the client its registry credentials, when asked for (nothing to do otherwise).
    pub(crate) async fn authorize(&self, env: &mut Environment) -> Result<()> {
        let Some(auth) = &self.registry_auth else { return Ok(()) };
        let mut shape = env.exec_as().clone();
        // The file goes in through stdin: no argument, label or log holds it. Owned by the
        // user the COMMANDs run as (`--user`), private to it.
        let script = format!(
            "umask 077 && rm -rf {CONFIG_DIR} && mkdir {CONFIG_DIR} && cat > {CONFIG_DIR}/config.json && \
             if [ -n \"$1\" ]; then chown -R \"$1\" {CONFIG_DIR}; fi"
        );
        let argv: Vec<String> = ["sh", "-c", &script, "sh", shape.user.as_deref().unwrap_or("")].iter().map(|s| s.to_string()).collect();
        let input = futures_util::stream::once(async move { Ok(Bytes::from(auth.config_json())) });
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = env.backend().exec_with_input(&env.client().id, &argv, Box::pin(input), &mut out, &mut err).await?;
        if code != 0 {
            return Err(Error::Io {
                what: format!("writing the registry credentials into the client's {CONFIG_DIR} (exit {code})"),
                source: std::io::Error::other(String::from_utf8_lossy(&err).trim().to_string()),
            });
        }
        shape.env.retain(|v| !v.starts_with("DOCKER_CONFIG="));
        shape.env.push(format!("DOCKER_CONFIG={CONFIG_DIR}"));
        env.set_exec_as(shape);
        Ok(())
    }
}
