//! The `didx` command: parses arguments, picks the verb (each in `commands/`), forks the
//! helpers a run needs while the process has one thread, runs the verb on an async runtime,
//! and maps its outcome to an exit code (the table in `exit.rs` and `--help`). All logic
//! lives in the `didx` library.
//!
//! Modules import downward only: main → commands/* → run, matrix, listing, options, events,
//! stream, helper, signals, engine → exit, output, cli. Nothing imports main.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{CommandFactory, FromArgMatches};

mod cli;
mod commands;
mod engine;
mod env_args;
mod event_json;
mod events;
mod exit;
mod helper;
mod k8s_args;
mod listing;
mod matrix;
mod options;
mod output;
mod run;
mod signals;
mod store_image_args;
mod stream;

use cli::{BackendArg, Cli, Verb};
use commands::pool::PoolJob;
use commands::run::Plan;
use commands::store::StoreJob;
use exit::{EXIT_DIDX, EXIT_USAGE, report};
use output::say;

fn main() -> ExitCode {
    output::STARTED.get_or_init(std::time::Instant::now);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DIDX_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal() && !cli::no_color())
        .init();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return ExitCode::from(code),
    };
    // Everything is checked before the engine is touched; a usage error creates nothing.
    let job = match Job::of(cli) {
        Ok(job) => job,
        Err(e) => return ExitCode::from(report(Err(e))),
    };
    // A run forks its helper now, while the process has one thread (a matrix, one per
    // version).
    let helpers = match &job {
        Job::Run(plan) => plan.fork_helpers(),
        _ => vec![],
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            say(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_DIDX);
        }
    };
    let code = runtime.block_on(async {
        report(match job {
            Job::Build { host, spec } => commands::image::build(host.as_deref(), spec).await,
            Job::Pool { host, cmd } => commands::pool::pool(host.as_deref(), cmd).await,
            Job::Ls { host } => commands::ls::ls(host.as_deref()).await,
            Job::Completions(shell) => Ok(commands::completions::completions(shell)),
            Job::Man => commands::man::man(),
            Job::K8sRender(r) => commands::k8s::print(&r),
            Job::K8sLs { context, namespace } => commands::k8s::ls(context.as_deref(), namespace.as_deref()).await,
            Job::K8sRm { ids, all, context, namespace } => commands::k8s::rm(&ids, all, context.as_deref(), namespace.as_deref()).await,
            Job::K8sEnv(env) => env.go().await,
            Job::Env { host, id, json, hold } => commands::env::env_vars(host.as_deref(), &id, json, hold).await,
            Job::Cp { host, cp } => commands::cp::go(host.as_deref(), cp).await,
            Job::Store { host, cmd } => commands::store::store(host.as_deref(), cmd).await,
            Job::Run(plan) => plan.go(helpers).await,
        })
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}

/// What the command line asks for, validated: the verb and what it needs.
enum Job {
    Build { host: Option<String>, spec: didx::image::BuildSpec },
    Pool { host: Option<String>, cmd: PoolJob },
    Ls { host: Option<String> },
    Completions(cli::Shell),
    Man,
    K8sRender(Box<commands::k8s::Render>),
    K8sEnv(commands::k8s::EnvJob),
    K8sLs { context: Option<String>, namespace: Option<String> },
    K8sRm { ids: Vec<String>, all: bool, context: Option<String>, namespace: Option<String> },
    Env { host: Option<String>, id: String, json: bool, hold: bool },
    Cp { host: Option<String>, cp: commands::cp::Cp },
    Store { host: Option<String>, cmd: StoreJob },
    Run(Box<Plan>),
}

impl Job {
    /// The verb's own validation, before anything is created.
    fn of(cli: Cli) -> anyhow::Result<Job> {
        let host = cli.host;
        Ok(match cli.verb {
            Some(Verb::Image(cmd)) => Job::Build { host, spec: commands::image::of(cmd) },
            Some(Verb::Completions { shell }) => Job::Completions(shell),
            Some(Verb::Man) => Job::Man,
            Some(Verb::K8s(cli::K8sCmd::Env { id, kube, json, hold })) => Job::K8sEnv(commands::k8s::EnvJob::of(id, &kube, json, hold)?),
            Some(Verb::K8s(cli::K8sCmd::Ls { kube_context, namespace, json })) => {
                commands::ls::of(json);
                Job::K8sLs { context: kube_context, namespace }
            }
            Some(Verb::K8s(cli::K8sCmd::Rm { ids, all, kube_context, namespace })) => {
                for id in &ids {
                    didx::kubernetes::check_id(id)?;
                }
                Job::K8sRm { ids, all, context: kube_context, namespace }
            }
            Some(Verb::K8s(cmd)) => Job::K8sRender(Box::new(commands::k8s::of(cmd)?)),
            Some(Verb::Ls { json }) => {
                commands::ls::of(json);
                Job::Ls { host }
            }
            Some(Verb::Env { id, json, hold, backend: BackendArg::Kubernetes, kube }) => {
                Job::K8sEnv(commands::k8s::EnvJob::on_cluster(host.is_some(), id, &kube, json, hold)?)
            }
            Some(Verb::Env { id, json, hold, backend: BackendArg::Docker, kube }) => {
                if let Some(option) = kube.given() {
                    return Err(didx::Error::Invalid {
                        what: "option",
                        value: option.into(),
                        fix: "it applies to --backend kubernetes".into(),
                    }
                    .into());
                }
                Job::Env { host, id, json, hold }
            }
            Some(Verb::Cp { src, dest }) => Job::Cp { host, cp: commands::cp::of(&src, &dest)? },
            Some(Verb::Store { cmd, json }) => Job::Store { host, cmd: StoreJob::of(cmd, json)? },
            Some(Verb::Pool { cmd, json }) => Job::Pool { host, cmd: PoolJob::of(cmd, json)? },
            None => Job::Run(Box::new(Plan::of(host, cli.run)?)),
        })
    }
}

/// The command line, or the exit code when it is help, a version, or a usage error (said).
fn parse() -> Result<Cli, u8> {
    let wants_help = std::env::args().skip(1).take_while(|a| a != "--").any(|a| a == "-h" || a == "--help");
    let mut cmd = Cli::command();
    if wants_help {
        let driver = host_driver();
        let text = match driver {
            Some(d) => format!("Server dockerd's storage driver [default: {d}, the host engine's]"),
            None => "Server dockerd's storage driver [default: the host engine's; engine not reachable now]".to_string(),
        };
        cmd = cmd.mut_arg("storage_driver", |a| a.help(text));
    }
    let verbs: Vec<String> = cmd.get_subcommands().map(|c| c.get_name().to_string()).chain(["help".to_string()]).collect();
    let matches = match cmd.try_get_matches_from(host_after_verb(std::env::args().collect(), &verbs)) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return Err(0);
        }
        Err(e) => {
            say(usage_line(&e));
            return Err(EXIT_USAGE);
        }
    };
    Cli::from_arg_matches(&matches).map_err(|e| {
        say(usage_line(&e));
        EXIT_USAGE
    })
}

/// The host engine's storage driver, for --help (as didx.sh shows it); quick or nothing.
fn host_driver() -> Option<String> {
    let host = host_flag(std::env::args());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    rt.block_on(async {
        let probe = async { engine::connect(host.as_deref()).await.ok()?.info().await.ok()?.driver };
        tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten()
    })
}

/// `didx -H ADDR VERB …` read as `didx VERB -H ADDR …`: clap stops recognising verbs once a
/// root option was given (so that a COMMAND named like a verb stays a COMMAND), but `-H` is
/// global and means the same either way.
fn host_after_verb(mut args: Vec<String>, verbs: &[String]) -> Vec<String> {
    let flag_len = match args.get(1).map(String::as_str) {
        Some("-H" | "--host") => 2,
        Some(a) if a.starts_with("--host=") || (a.starts_with("-H") && a.len() > 2) => 1,
        _ => return args,
    };
    if args.get(1 + flag_len).is_some_and(|v| verbs.contains(v)) {
        let flag: Vec<String> = args.drain(1..1 + flag_len).collect();
        let at = 2;
        args.splice(at..at, flag);
    }
    args
}

fn host_flag(args: impl Iterator<Item = String>) -> Option<String> {
    let args: Vec<String> = args.collect();
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "-H" || a == "--host" { args.get(i + 1).cloned() } else { a.strip_prefix("--host=").map(str::to_string) }
    })
}

/// clap's error as one line, with the fix: its first line plus a pointer to --help; for a
/// word not among an option's, the words (as the library words its own invalid values).
fn usage_line(e: &clap::Error) -> String {
    if let (ErrorKind::InvalidValue, Some(ContextValue::String(arg)), Some(ContextValue::String(value)), Some(ContextValue::Strings(words))) =
        (e.kind(), e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue), e.get(ContextKind::ValidValue))
        && !value.is_empty()
    {
        // "--clean <WHEN>" → --clean; "<SHELL>" → SHELL. (An empty value is clap's "a value is
        // required", said as clap says it.)
        let name = arg.split(' ').next().unwrap_or(arg).trim_matches(['<', '>']);
        return format!("error: invalid {name} value '{value}': expected one of {}", words.join(", "));
    }
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    // "the following required arguments were not provided:" names them on the next line.
    let first = match (first.strip_suffix(':'), lines.next()) {
        (Some(head), Some(what)) => format!("{head}: {what}"),
        _ => first.to_string(),
    };
    let tip = match e.kind() {
        ErrorKind::UnknownArgument => "; see didx --help (put '--' before a COMMAND that starts with '-')",
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return "a verb needs its subcommand, e.g. didx image build; to run 'docker image' as a COMMAND write didx -- image"
                .to_string();
        }
        _ => "; see didx --help",
    };
    format!("{first}{tip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_flag_forms() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert_eq!(host_flag(args(&["didx", "-H", "unix:///x"])), Some("unix:///x".into()));
        assert_eq!(host_flag(args(&["didx", "--host=tcp://h:1"])), Some("tcp://h:1".into()));
        assert_eq!(host_flag(args(&["didx", "version"])), None);
    }

    #[test]
    fn a_host_flag_before_a_verb_moves_after_it() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let verbs = v(&["pool", "image"]);
        assert_eq!(
            host_after_verb(v(&["didx", "-H", "unix:///s", "pool", "down"]), &verbs),
            v(&["didx", "pool", "-H", "unix:///s", "down"])
        );
        assert_eq!(host_after_verb(v(&["didx", "--host=unix:///s", "pool"]), &verbs), v(&["didx", "pool", "--host=unix:///s"]));
        // A COMMAND is left alone, as is anything after other options.
        assert_eq!(host_after_verb(v(&["didx", "-H", "unix:///s", "version"]), &verbs), v(&["didx", "-H", "unix:///s", "version"]));
        assert_eq!(host_after_verb(v(&["didx", "--clean", "none", "pool"]), &verbs), v(&["didx", "--clean", "none", "pool"]));
    }

    #[test]
    fn a_word_not_among_an_option_s_is_one_line_naming_them() {
        let line = |args: &[&str]| usage_line(&Cli::command().try_get_matches_from(args).unwrap_err());
        assert_eq!(
            line(&["didx", "--clean", "sometimes", "true"]),
            "error: invalid --clean value 'sometimes': expected one of none, success, failure, anycase, all, rpt"
        );
        assert_eq!(
            line(&["didx", "--isolation", "maybe"]),
            "error: invalid --isolation value 'maybe': expected one of auto, privileged, caps"
        );
        assert_eq!(line(&["didx", "--engine", "hots"]), "error: invalid --engine value 'hots': expected one of dind, host");
        assert_eq!(
            line(&["didx", "completions", "powershell"]),
            "error: invalid SHELL value 'powershell': expected one of bash, zsh, fish"
        );
        assert_eq!(line(&["didx", "--clean"]), "error: a value is required for '--clean <WHEN>' but none was supplied; see didx --help");
    }
}
