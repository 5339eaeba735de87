//! COMMAND arguments: how one argument becomes something to run, with didx.sh's rules.
//!
//! Each COMMAND is split into words as a POSIX shell would split it (quotes and backslashes,
//! no expansion). Then:
//! - first words `docker exec` → run on the host through `sh -c`, with the client's name in
//!   the `--cv-env` variable (didx.sh's custom-prefix form; `DOCKER_HOST` stays the outer
//!   engine's);
//! - starting with `host:` → the rest runs on the host through `sh -c` with `DOCKER_HOST`,
//!   `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH` pointing at the sandbox's inner engine;
//! - first word a docker subcommand, or starting with `-` → `docker` is put in front;
//! - anything else → run in the client as given.

use crate::error::{Error, Result};

/// The docker CLI subcommands (management and legacy forms, plus common plugins) that get
/// `docker` put in front, as the docker image's `docker-entrypoint.sh` does.
pub const DOCKER_SUBCOMMANDS: &[&str] = &[
    "attach",
    "build",
    "builder",
    "buildx",
    "checkpoint",
    "commit",
    "compose",
    "config",
    "container",
    "context",
    "cp",
    "create",
    "debug",
    "diff",
    "events",
    "exec",
    "export",
    "history",
    "image",
    "images",
    "import",
    "info",
    "init",
    "inspect",
    "kill",
    "load",
    "login",
    "logout",
    "logs",
    "manifest",
    "network",
    "node",
    "pause",
    "plugin",
    "port",
    "ps",
    "pull",
    "push",
    "rename",
    "restart",
    "rm",
    "rmi",
    "run",
    "save",
    "sbom",
    "scout",
    "search",
    "secret",
    "service",
    "stack",
    "start",
    "stats",
    "stop",
    "swarm",
    "system",
    "tag",
    "top",
    "trust",
    "unpause",
    "update",
    "version",
    "volume",
    "wait",
];

/// One COMMAND, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Run in the client container with this argv.
    Client(Vec<String>),
    /// Run on the host with `sh -c`.
    Host {
        /// The script given to `sh -c`.
        script: String,
        /// Which host form: what `DOCKER_HOST` points at.
        form: HostForm,
    },
}

/// The two host forms of a COMMAND.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostForm {
    /// didx.sh's `docker exec …`: `DOCKER_HOST` is the outer engine (so
    /// `docker exec $DIND_CLIENT_NAME …` reaches the client); the sandbox's endpoint is in
    /// `DIDX_DOCKER_HOST`, `DIDX_DOCKER_TLS_VERIFY`, `DIDX_DOCKER_CERT_PATH`.
    DockerExec,
    /// `host: SCRIPT`: `DOCKER_HOST`, `DOCKER_TLS_VERIFY`, `DOCKER_CERT_PATH` are the
    /// sandbox's inner engine (and the `DIDX_` copies too), so any host tool drives it.
    Sandbox,
}

/// The prefix of a COMMAND run on the host against the sandbox.
pub const HOST_PREFIX: &str = "host:";

impl Step {
    /// Classify one COMMAND argument.
    pub fn parse(arg: &str) -> Result<Step> {
        if let Some(script) = arg.trim_start().strip_prefix(HOST_PREFIX) {
            let script = script.trim_start();
            if script.trim().is_empty() {
                return Err(Error::invalid("COMMAND", arg, "'host:' needs a command after it, e.g. 'host: docker info'"));
            }
            // The shell reads it, but its quotes must balance here already (a usage error now,
            // not a shell error after the start).
            shell_words::split(script)
                .map_err(|e| Error::invalid("COMMAND", arg, format!("{e}: balance its quotes, e.g. 'host: sh -c \"exit 7\"'")))?;
            return Ok(Step::Host { script: script.to_string(), form: HostForm::Sandbox });
        }
        let words = shell_words::split(arg)
            .map_err(|e| Error::invalid("COMMAND", arg, format!("{e}: balance its quotes, e.g. 'sh -c \"exit 7\"'")))?;
        let Some(first) = words.first() else {
            return Err(Error::invalid("COMMAND", arg, "it is empty; give a program or a docker subcommand"));
        };
        if first == "docker" && words.get(1).map(String::as_str) == Some("exec") {
            return Ok(Step::Host { script: arg.to_string(), form: HostForm::DockerExec });
        }
        if first.starts_with('-') || DOCKER_SUBCOMMANDS.contains(&first.as_str()) {
            let mut argv = Vec::with_capacity(words.len() + 1);
            argv.push("docker".to_string());
            argv.extend(words);
            return Ok(Step::Client(argv));
        }
        Ok(Step::Client(words))
    }

    /// A short human form for status lines.
    pub fn display(&self) -> String {
        match self {
            Step::Client(argv) => shell_words::join(argv),
            Step::Host { script, .. } => format!("(host) {script}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(words: &[&str]) -> Step {
        Step::Client(words.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn docker_subcommands_get_docker_in_front() {
        assert_eq!(Step::parse("pull alpine").unwrap(), client(&["docker", "pull", "alpine"]));
        assert_eq!(Step::parse("images").unwrap(), client(&["docker", "images"]));
        assert_eq!(Step::parse("-D images").unwrap(), client(&["docker", "-D", "images"]));
        assert_eq!(Step::parse("run -dit --name c alpine sh").unwrap(), client(&["docker", "run", "-dit", "--name", "c", "alpine", "sh"]));
    }

    #[test]
    fn other_commands_run_as_given_with_posix_splitting() {
        assert_eq!(Step::parse(r#"sh -c "exit 7""#).unwrap(), client(&["sh", "-c", "exit 7"]));
        assert_eq!(Step::parse("/mount/x.sh a\\ b").unwrap(), client(&["/mount/x.sh", "a b"]));
        assert_eq!(Step::parse("docker images").unwrap(), client(&["docker", "images"]));
        // No expansion on the host: the client sees the dollar sign.
        assert_eq!(Step::parse("echo $HOME").unwrap(), client(&["echo", "$HOME"]));
    }

    #[test]
    fn docker_exec_runs_on_the_host() {
        let s = "docker exec $DIND_CLIENT_NAME docker images";
        let exec = |s: &str| Step::Host { script: s.to_string(), form: HostForm::DockerExec };
        assert_eq!(Step::parse(s).unwrap(), exec(s));
        assert_eq!(Step::parse("  docker   exec x ls").unwrap(), exec("  docker   exec x ls"));
    }

    #[test]
    fn host_prefix_runs_on_the_host_against_the_sandbox() {
        let host = |s: &str| Step::Host { script: s.to_string(), form: HostForm::Sandbox };
        assert_eq!(Step::parse("host: docker info").unwrap(), host("docker info"));
        assert_eq!(Step::parse("host:pytest -x").unwrap(), host("pytest -x"));
        assert_eq!(Step::parse("  host:  echo $HOME").unwrap(), host("echo $HOME"));
        assert_eq!(Step::parse("host: docker exec x ls").unwrap(), host("docker exec x ls"));
        // Only the exact prefix: a program named host, or a docker subcommand, stays what it was.
        assert_eq!(Step::parse("host x").unwrap(), client(&["host", "x"]));
        assert_eq!(Step::parse("hostname").unwrap(), client(&["hostname"]));
        assert_eq!(Step::parse("'host:' x").unwrap(), client(&["host:", "x"]));
        assert_eq!(Step::parse("host: x").unwrap().display(), "(host) x");
        for bad in ["host:", "host:   ", "host: sh -c 'unterminated"] {
            assert!(Step::parse(bad).unwrap_err().is_usage(), "{bad:?}");
        }
    }

    #[test]
    fn bad_commands_are_usage_errors() {
        for bad in ["", "   ", "sh -c 'unterminated"] {
            assert!(Step::parse(bad).unwrap_err().is_usage(), "{bad:?}");
        }
    }
}
