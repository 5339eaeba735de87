//! The `didx` command: parses arguments, wires signals to the library's cancellation, prints
//! its events, and maps outcomes to exit codes. All logic lives in the `didx` library.
//!
//! Modules import downward only (nothing imports main): run and matrix share the helpers in
//! engine, options, events, stream and exit rather than reaching into main or each other.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};
use didx::image::{BuildEvent, BuildSpec};
use didx::session::{Event, StartEvent};
use didx::spec::{CleanPolicy, parse_duration};
use didx::{Cancel, Error, SandboxOptions};

mod cli;
mod completions;
mod engine;
mod events;
mod exit;
mod helper;
mod listing;
mod matrix;
mod options;
mod output;
mod run;
mod signals;
mod stream;

use cli::{Cli, ImageCmd, PoolCmd, StoreCmd, Verb};
use engine::connect;
use events::{say_images, say_start_event, say_store_event};
use exit::{EXIT_DIDX, EXIT_USAGE, report};
use helper::Helper;
use options::{builder, run_builder};
use output::say;
use run::RunJob;
use signals::{Signals, cancelled_by_signal};

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
    // A run that may claim from the pool or holds its environment forks its helper now, while
    // the process has one thread.
    let helper = match &job {
        Job::Run(run) if run.pooled || run.leased() => Helper::fork(run.host.clone(), run.options.clone()),
        _ => None,
    };
    let helpers = match &job {
        Job::Matrix(m) => m.fork_helpers(),
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
            Job::Build { host, spec } => image_build(host.as_deref(), spec).await,
            Job::Pool { host, cmd } => pool(host.as_deref(), cmd).await,
            Job::Report { host, clean } => inventory(host.as_deref(), clean).await,
            Job::Ls { host } => ls(host.as_deref()).await,
            Job::Completions(shell) => Ok(completions::completions(shell)),
            Job::Man => completions::man(),
            Job::Env { host, id, json } => env_vars(host.as_deref(), &id, json).await,
            Job::Store { host, cmd } => store(host.as_deref(), cmd).await,
            Job::Run(run) => run.go(helper).await,
            Job::Matrix(m) => m.go(helpers).await,
        })
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
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
        let probe = async { connect(host.as_deref()).await.ok()?.info().await.ok()?.driver };
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

/// clap's error as one line, with the fix: its first line plus a pointer to --help.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    // "the following required arguments were not provided:" names them on the next line.
    let first = match (first.strip_suffix(':'), lines.next()) {
        (Some(head), Some(what)) => format!("{head}: {what}"),
        _ => first.to_string(),
    };
    let tip = match e.kind() {
        clap::error::ErrorKind::UnknownArgument => "; see didx --help (put '--' before a COMMAND that starts with '-')",
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            return "a verb needs its subcommand, e.g. didx image build; to run 'docker image' as a COMMAND write didx -- image"
                .to_string();
        }
        _ => "; see didx --help",
    };
    format!("{first}{tip}")
}

/// What the command line asks for, validated.
enum Job {
    Build { host: Option<String>, spec: BuildSpec },
    Pool { host: Option<String>, cmd: PoolJob },
    Report { host: Option<String>, clean: CleanPolicy },
    Ls { host: Option<String> },
    Completions(cli::Shell),
    Man,
    Env { host: Option<String>, id: String, json: bool },
    Store { host: Option<String>, cmd: StoreJob },
    Run(Box<RunJob>),
    Matrix(Box<matrix::Matrix>),
}

enum StoreJob {
    List(bool),
    Rm(Vec<String>),
    Prune,
}

enum PoolJob {
    List,
    Up(usize, Option<Duration>, Box<SandboxOptions>),
    Down,
}

impl Job {
    fn of(cli: Cli) -> anyhow::Result<Job> {
        let host = cli.host;
        Ok(match cli.verb {
            Some(Verb::Image(ImageCmd::Build { suite, mirror, force })) => Job::Build { host, spec: BuildSpec { suite, mirror, force } },
            Some(Verb::Completions { shell }) => Job::Completions(shell),
            Some(Verb::Man) => Job::Man,
            Some(Verb::Ls { json }) => {
                listing::choose_json(json);
                Job::Ls { host }
            }
            Some(Verb::Env { id, json }) => Job::Env { host, id, json },
            Some(Verb::Store { cmd, json }) => {
                didx::store::prefix()?;
                Job::Store {
                    host,
                    cmd: match cmd {
                        None => StoreJob::List(json),
                        Some(StoreCmd::Rm { images }) => StoreJob::Rm(images),
                        Some(StoreCmd::Prune) => StoreJob::Prune,
                    },
                }
            }
            Some(Verb::Pool { cmd, json }) => Job::Pool {
                host,
                cmd: match cmd {
                    None => {
                        listing::choose_json(json);
                        PoolJob::List
                    }
                    Some(PoolCmd::Down) => PoolJob::Down,
                    Some(PoolCmd::Up { n, idle_timeout, load, env }) => {
                        didx::pool::check_size(n)?;
                        let idle = match idle_timeout.as_str() {
                            "0" => None,
                            d => Some(parse_duration("--idle-timeout value", d)?),
                        };
                        let b = load.iter().fold(builder(&env)?, |b, l| b.load(l));
                        PoolJob::Up(n, idle, Box::new(b.options()?))
                    }
                },
            },
            None => {
                listing::check_run(&cli.run)?;
                let clean: CleanPolicy = cli.run.clean.parse()?;
                if matches!(clean, CleanPolicy::All | CleanPolicy::Rpt) {
                    if !cli.run.commands.is_empty() {
                        return Err(Error::Invalid {
                            what: "--clean value",
                            value: cli.run.clean.clone(),
                            fix: format!("--clean {} runs no commands; drop the COMMANDs or use anycase", cli.run.clean),
                        }
                        .into());
                    }
                    // Validated as a run's options would be, though only the engine is used.
                    run_builder(&cli.run)?.options()?;
                    Job::Report { host, clean }
                } else if cli.run.is_matrix() {
                    Job::Matrix(Box::new(matrix::Matrix::of(host, cli.run, clean)?))
                } else {
                    matrix::jobs(&cli.run)?;
                    Job::Run(Box::new(RunJob::of(host, cli.run, clean)?))
                }
            }
        })
    }
}

async fn image_build(host: Option<&str>, spec: BuildSpec) -> anyhow::Result<u8> {
    let engine = connect(host).await?;
    let tty = std::io::stderr().is_terminal();
    let target = if didx::image::tags_local(&spec.suite) { didx::image::LOCAL_IMAGE } else { "didx/dind:<its docker.io version>" };
    say(format!("building {target} from Debian {} ({})", spec.suite, spec.mirror));
    let on = move |e: BuildEvent<'_>| match e {
        BuildEvent::Log(line) => output::err(&format!("  {line}\n")),
        BuildEvent::Streamed(n) if tty => output::err(&format!("\r  streamed {:.1} MB into the engine ", n as f64 / 1e6)),
        BuildEvent::Streamed(n) => output::err(&format!("  streamed {:.1} MB into the engine\n", n as f64 / 1e6)),
        _ => {}
    };
    let r = didx::image::build(&engine, &spec, &on).await?;
    if tty {
        output::err("\n");
    }
    let what = if r.reused { "reused (recipe unchanged; --force rebuilds)" } else { "built" };
    say(format!(
        "Debian {} image {what}: {} ({}), {:.0} MB, in {:.1} s",
        spec.suite,
        r.tags.join(", "),
        &r.id.trim_start_matches("sha256:")[..12.min(r.id.len())],
        r.size as f64 / 1e6,
        r.elapsed.as_secs_f64()
    ));
    Ok(0)
}

/// `didx store`, `didx store rm`, `didx store prune`.
async fn store(host: Option<&str>, cmd: StoreJob) -> anyhow::Result<u8> {
    let engine = connect(host).await?;
    let cancel = Cancel::new();
    let on = |e: didx::store::StoreEvent<'_>| say_store_event(&e);
    let removed = match cmd {
        StoreJob::List(json) => return listing::stores(&engine, json).await,
        StoreJob::Rm(images) => {
            let mut signals = Signals::install()?;
            match cancelled_by_signal(didx::store::remove(&engine, &images, &cancel, &on), &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => return Ok(sig.code()),
                (r, _) => r?,
            }
        }
        StoreJob::Prune => {
            let mut signals = Signals::install()?;
            match cancelled_by_signal(didx::store::prune(&engine, &cancel, &on), &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => return Ok(sig.code()),
                (r, _) => r?,
            }
        }
    };
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    for r in &removed {
        match r {
            didx::store::Removed::Store { store, kib } => say(format!("removed the image store {store} ({:.1} MB)", mb(*kib))),
            didx::store::Removed::Images { store, images, kib: (before, after) } => {
                say(format!("removed {} from the image store {store}: {:.1} MB -> {:.1} MB", images.join(", "), mb(*before), mb(*after)))
            }
            _ => {}
        }
    }
    if removed.is_empty() {
        say("nothing to remove");
    }
    Ok(0)
}

async fn pool(host: Option<&str>, cmd: PoolJob) -> anyhow::Result<u8> {
    let engine = connect(host).await?;
    let on = |e: &Event<'_>| match e {
        Event::Images { resolved } => say_images(resolved),
        Event::Start(StartEvent::ServerStarted { name, .. }) => say(format!("dind server named: '{name}' started for the pool")),
        Event::Start(s) => say_start_event(s),
        Event::Store(s) => say_store_event(s),
        _ => {}
    };
    let cancel = Cancel::new();
    match cmd {
        PoolJob::Up(n, idle, options) => {
            let mut signals = Signals::install()?;
            let up = didx::pool::up(&engine, &options, n, idle, &cancel, &on);
            let r = match cancelled_by_signal(up, &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => {
                    say("interrupted; removed the environments being started (ready ones stay in the pool)");
                    return Ok(sig.code());
                }
                (r, _) => r?,
            };
            for (id, why) in &r.removed {
                say(format!("removed pooled environment {id}: {why}"));
            }
            for id in &r.started {
                say(format!("pooled environment {id} ready"));
            }
            for f in &r.failed {
                say(format!("error: a pooled environment failed to start: {f}"));
            }
            say(format!(
                "pool {}: {} ready ({} already, {} started now{}{})",
                r.key,
                r.existing + r.started.len(),
                r.existing,
                r.started.len(),
                if r.starting == 0 { String::new() } else { format!(", {} starting by another filler", r.starting) },
                if r.failed.is_empty() { String::new() } else { format!(", {} failed", r.failed.len()) }
            ));
            Ok(if r.failed.is_empty() { 0 } else { EXIT_DIDX })
        }
        PoolJob::Down => {
            let mut signals = Signals::install()?;
            let down = didx::pool::down(&engine, &cancel, &on);
            let r = match cancelled_by_signal(down, &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => {
                    say("interrupted while waiting for the pool lock; nothing removed");
                    return Ok(sig.code());
                }
                (r, _) => r?,
            };
            for (id, why) in &r.left {
                say(format!("left pooled environment {id}: {why}"));
            }
            say(format!(
                "removed {} pooled environment(s){}",
                r.removed.len(),
                if r.left.is_empty() { String::new() } else { format!(", left {}", r.left.len()) }
            ));
            Ok(0)
        }
        PoolJob::List => listing::pool(&engine).await,
    }
}

/// `didx ls`.
async fn ls(host: Option<&str>) -> anyhow::Result<u8> {
    listing::ls(&connect(host).await?).await
}

/// `didx env ID [--json]`: how a host tool reaches a running environment's inner engine.
async fn env_vars(host: Option<&str>, id: &str, json: bool) -> anyhow::Result<u8> {
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

/// `--clean rpt` (list) and `--clean all` (remove everything didx made).
async fn inventory(host: Option<&str>, clean: CleanPolicy) -> anyhow::Result<u8> {
    let engine = connect(host).await?;
    if clean == CleanPolicy::All {
        let removed = didx::inventory::remove_all(&engine).await?;
        for name in &removed {
            say(format!("{name} terminated & destroyed"));
        }
        say(format!("removed {} container(s) and every didx volume and network", removed.len()));
        return Ok(0);
    }
    listing::environments(&engine).await
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
}
