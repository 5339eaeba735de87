//! The `didx` command: parses arguments, prints, and maps outcomes to exit codes. All logic
//! lives in the library.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

mod cli;
mod completions;
mod listing;
use cli::{Cli, EnvArgs, ImageCmd, PoolCmd, RunArgs, Verb};
use didx::build::{BuildEvent, BuildSpec};
use didx::command::Step;
use didx::copy::{CpSource, CpSpec};
use didx::engine::Engine;
use didx::env::{Cancel, EnvId, EnvSpec, Environment, Event};
use didx::error::Error;
use didx::images::{self, Wanted};
use didx::load::LoadEvent;
use didx::run::{StepEvent, run_steps};
use didx::spec::{CleanPolicy, EnvVarName, IsolationMode, Version, VolumeSpec, parse_duration};
use tokio::signal::unix::{SignalKind, signal};

const EXIT_USAGE: u8 = 2;
/// Said once when `auto` isolation falls back to the caps profile.
const ISOLATION_FALLBACK: &str = "the engine refuses --privileged (runc: unable to apply caps); using the caps profile instead (remembered for this engine; see --isolation)";
const EXIT_DIDX: u8 = 125;
const EXIT_SIGHUP: u8 = 129;
const EXIT_SIGINT: u8 = 130;
const EXIT_SIGTERM: u8 = 143;

/// Validated run options: nothing downstream re-checks strings.
struct RunPlan {
    env: EnvPlan,
    volumes: Vec<VolumeSpec>,
    copies: Vec<CpSpec>,
    loads: Vec<String>,
    clean: CleanPolicy,
    cv_env: EnvVarName,
    /// `--pool`: the options of the refill (`pool up N` with the same server options).
    refill: Option<Vec<String>>,
    steps: Vec<Step>,
    timings: bool,
}

/// Validated [`EnvArgs`].
struct EnvPlan {
    sv: Version,
    cv: Version,
    pull: bool,
    storage_driver: Option<String>,
    dockerd_opts: Vec<String>,
    isolation: IsolationMode,
    ready_timeout: Duration,
    server_image: Wanted,
    client_image: Wanted,
}

impl EnvPlan {
    fn from_args(a: &EnvArgs) -> Result<EnvPlan, Error> {
        let sv = Version::parse("--sv value", &a.sv)?;
        let cv = match &a.cv {
            Some(cv) => Version::parse("--cv value", cv)?,
            None => sv.clone(),
        };
        let mut dockerd_opts = Vec::new();
        for o in &a.dkropts {
            dockerd_opts.extend(shell_words::split(o).map_err(|e| Error::Invalid {
                what: "--dkropts value",
                value: o.clone(),
                fix: format!("{e}: balance its quotes"),
            })?);
        }
        let wanted = |explicit: &Option<String>, mapped: String| match explicit {
            Some(i) if !i.is_empty() => Wanted { image: i.clone(), explicit: true },
            _ => Wanted { image: mapped, explicit: false },
        };
        Ok(EnvPlan {
            server_image: wanted(&a.server_image, sv.server_image()),
            client_image: wanted(&a.client_image, cv.client_image()),
            sv,
            cv,
            pull: a.pull,
            storage_driver: a.storage_driver.clone().filter(|s| !s.is_empty()),
            dockerd_opts,
            isolation: a.isolation.parse()?,
            ready_timeout: parse_duration("--ready-timeout value", &a.ready_timeout)?,
        })
    }

    /// The environment spec: the engine's storage driver and ID, images resolved (pulled or
    /// fallen back to the offline image, said once).
    async fn spec(self, engine: &Engine, volumes: Vec<VolumeSpec>) -> Result<EnvSpec, Error> {
        let info = engine.info().await?;
        let resolved = images::resolve(engine, &self.server_image, &self.client_image, self.pull).await?;
        if !resolved.fell_back.is_empty() {
            let retry = match resolved.not_retried.iter().map(|(_, ago)| ago.as_secs()).max() {
                Some(ago) => format!(
                    " (a pull failed {ago} s ago; not retried for {} min, --pull retries now)",
                    images::PULL_RETRY_AFTER.as_secs() / 60
                ),
                None => String::new(),
            };
            say(format!(
                "{} not on the engine and cannot be pulled; using {}{retry}",
                resolved.fell_back.join(" and "),
                images::LOCAL_IMAGE
            ));
        }
        for s in &resolved.stale {
            say(format!("warning: pull of {s} failed; using the copy on the engine"));
        }
        Ok(EnvSpec {
            id: EnvId::generate(),
            sv: self.sv,
            cv: self.cv,
            server_image: resolved.server,
            client_image: resolved.client,
            storage_driver: self.storage_driver.or(info.driver).unwrap_or_default(),
            dockerd_opts: self.dockerd_opts,
            isolation: self.isolation,
            engine_id: info.id.unwrap_or_default(),
            ready_timeout: self.ready_timeout,
            volumes,
        })
    }
}

impl RunPlan {
    fn from_args(a: RunArgs) -> Result<RunPlan, Error> {
        let env = EnvPlan::from_args(&a.env)?;
        let refill = a.pool.then(|| refill_args(&a.env));
        let cwd = std::env::current_dir().map_err(|e| Error::Io { what: "reading the current directory".into(), source: e })?;
        let volumes: Vec<VolumeSpec> = a.volumes.iter().map(|v| VolumeSpec::parse(v, &cwd)).collect::<Result<_, _>>()?;
        for (i, v) in volumes.iter().enumerate() {
            if volumes[..i].iter().any(|w| w.target.trim_end_matches('/') == v.target.trim_end_matches('/')) {
                return Err(Error::Invalid {
                    what: "-v target",
                    value: v.target.clone(),
                    fix: "it is mounted twice; keep one -v per client path (a bind already gives --cp a place to copy into)".into(),
                });
            }
        }
        let copies: Vec<CpSpec> = a.cp.iter().map(|c| CpSpec::parse(c, &cwd)).collect::<Result<_, _>>()?;
        if copies.iter().filter(|c| c.source == CpSource::Stdin).count() > 1 {
            return Err(Error::Invalid {
                what: "--cp spec",
                value: "-".into(),
                fix: "stdin can feed one --cp only; put the files in one tar stream".into(),
            });
        }
        let clean: CleanPolicy = a.clean.parse()?;
        if matches!(clean, CleanPolicy::All | CleanPolicy::Rpt) && !a.commands.is_empty() {
            return Err(Error::Invalid {
                what: "--clean value",
                value: a.clean.clone(),
                fix: format!("--clean {} runs no commands; drop the COMMANDs or use anycase", a.clean),
            });
        }
        Ok(RunPlan {
            env,
            volumes,
            copies,
            loads: a.load,
            clean,
            cv_env: EnvVarName::parse(&a.cv_env)?,
            refill,
            steps: a.commands.iter().map(|c| Step::parse(c)).collect::<Result<_, _>>()?,
            timings: a.timings,
        })
    }
}

/// A status line on stderr.
fn say(msg: impl std::fmt::Display) {
    output::err(&format!("didx: {msg}\n"));
}

/// Every user-facing write goes through here. A stream whose write fails (a closed pipe:
/// `didx … | head -1`) is written to no more and didx carries on: clean-up by policy, the
/// commands' exit code. (`println!` would panic on it.)
mod output {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};

    static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
    static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

    fn put(closed: &AtomicBool, mut w: impl Write, text: &str) {
        if !closed.load(Ordering::Relaxed) && w.write_all(text.as_bytes()).and_then(|()| w.flush()).is_err() {
            closed.store(true, Ordering::Relaxed);
        }
    }

    /// `text` to stdout, as is.
    pub fn out(text: &str) {
        put(&STDOUT_CLOSED, std::io::stdout().lock(), text)
    }

    /// `text` to stderr, as is.
    pub fn err(text: &str) {
        put(&STDERR_CLOSED, std::io::stderr().lock(), text)
    }
}

/// When didx started, for --timings.
static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// `--timings`: one line per phase, milliseconds since didx started.
#[derive(Clone, Copy)]
struct Timings(bool);

impl Timings {
    fn mark(self, phase: &str) {
        if self.0 {
            let ms = STARTED.get().map(|t| t.elapsed().as_millis()).unwrap_or(0);
            say(format!("timing {phase} {ms}"));
        }
    }
}

fn main() -> ExitCode {
    STARTED.get_or_init(std::time::Instant::now);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DIDX_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .without_time()
        .with_ansi(std::io::stderr().is_terminal() && !cli::no_color())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            say(format!("cannot start the async runtime: {e}"));
            return ExitCode::from(EXIT_DIDX);
        }
    };
    let code = runtime.block_on(async_main());
    runtime.shutdown_timeout(Duration::from_millis(100));
    ExitCode::from(code)
}

/// The host engine's storage driver, for --help (as didx.sh shows it); quick or nothing.
async fn host_driver() -> Option<String> {
    let host = host_flag(std::env::args());
    let probe = async { Engine::connect(host.as_deref()).await.ok()?.info().await.ok()?.driver };
    tokio::time::timeout(Duration::from_secs(2), probe).await.ok().flatten()
}

fn host_flag(args: impl Iterator<Item = String>) -> Option<String> {
    let args: Vec<String> = args.collect();
    args.iter().enumerate().find_map(|(i, a)| {
        if a == "-H" || a == "--host" { args.get(i + 1).cloned() } else { a.strip_prefix("--host=").map(str::to_string) }
    })
}

async fn async_main() -> u8 {
    let wants_help = std::env::args().skip(1).take_while(|a| a != "--").any(|a| a == "-h" || a == "--help");
    let mut cmd = Cli::command();
    if wants_help {
        let driver = host_driver().await;
        let text = match driver {
            Some(d) => format!("Server dockerd's storage driver [default: {d}, the host engine's]"),
            None => "Server dockerd's storage driver [default: the host engine's; engine not reachable now]".to_string(),
        };
        cmd = cmd.mut_arg("storage_driver", |a| a.help(text));
    }
    let matches = match cmd.try_get_matches() {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return 0;
        }
        Err(e) => {
            say(usage_line(&e));
            return EXIT_USAGE;
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            say(usage_line(&e));
            return EXIT_USAGE;
        }
    };
    match cli.verb {
        Some(Verb::Image(ImageCmd::Build { suite, mirror, force })) => {
            report(image_build(cli.host.as_deref(), BuildSpec { suite, mirror, force }).await)
        }
        Some(Verb::Pool { cmd, json }) => {
            listing::choose_json(json);
            report(pool(cli.host.as_deref(), cmd).await)
        }
        Some(Verb::Completions { shell }) => completions::completions(shell),
        Some(Verb::Man) => report(completions::man()),
        None => {
            if let Err(e) = listing::check_run(&cli.run) {
                return report(Err(e));
            }
            let plan = match RunPlan::from_args(cli.run) {
                Ok(p) => p,
                Err(e) => return report(Err(e)),
            };
            report(run(cli.host.as_deref(), plan).await)
        }
    }
}

/// clap's error as one line, with the fix: its first line plus a pointer to --help.
fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("invalid arguments");
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

fn report(r: Result<u8, Error>) -> u8 {
    match r {
        Ok(code) => code,
        Err(e) => {
            say(format!("error: {e}"));
            if e.is_usage() { EXIT_USAGE } else { EXIT_DIDX }
        }
    }
}

async fn image_build(host: Option<&str>, spec: BuildSpec) -> Result<u8, Error> {
    let engine = Engine::connect(host).await?;
    let tty = std::io::stderr().is_terminal();
    say(format!("building {} from Debian {} ({})", images::LOCAL_IMAGE, spec.suite, spec.mirror));
    let on = move |e: BuildEvent<'_>| match e {
        BuildEvent::Log(line) => output::err(&format!("  {line}\n")),
        BuildEvent::Streamed(n) if tty => output::err(&format!("\r  streamed {:.1} MB into the engine ", n as f64 / 1e6)),
        BuildEvent::Streamed(n) => output::err(&format!("  streamed {:.1} MB into the engine\n", n as f64 / 1e6)),
        _ => {}
    };
    let r = didx::build::build(&engine, &spec, &on).await?;
    if tty {
        output::err("\n");
    }
    let what = if r.reused { "reused (recipe unchanged; --force rebuilds)" } else { "built" };
    say(format!(
        "{} {what}: {} ({}), {:.0} MB, in {:.1} s",
        images::LOCAL_IMAGE,
        r.tags.join(", "),
        &r.id.trim_start_matches("sha256:")[..12.min(r.id.len())],
        r.size as f64 / 1e6,
        r.elapsed.as_secs_f64()
    ));
    Ok(0)
}

/// `YYYY-MM-DD HH:MM` of a Unix time, in UTC.
fn utc_date(t: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t as i64) {
        Ok(d) => format!("{}-{:02}-{:02} {:02}:{:02}", d.year(), d.month() as u8, d.day(), d.hour(), d.minute()),
        Err(_) => format!("@{t}"),
    }
}

/// The options of a detached `didx pool up N` that refills the pool for `env`'s options.
fn refill_args(env: &EnvArgs) -> Vec<String> {
    let mut args: Vec<String> = vec!["--sv".into(), env.sv.clone()];
    if let Some(cv) = &env.cv {
        args.extend(["--cv".into(), cv.clone()]);
    }
    if let Some(d) = &env.storage_driver {
        args.extend(["--storage-driver".into(), d.clone()]);
    }
    for o in &env.dkropts {
        args.push(format!("--dkropts={o}"));
    }
    args.extend(["--isolation".into(), env.isolation.clone(), "--ready-timeout".into(), env.ready_timeout.clone()]);
    for (flag, v) in [("--server-image", &env.server_image), ("--client-image", &env.client_image)] {
        if let Some(i) = v {
            args.extend([flag.into(), i.clone()]);
        }
    }
    args
}

/// Start `didx [-H HOST] pool up SIZE OPTIONS` detached (own process group, no terminal,
/// output appended to pool-refill.log in the cache directory) so the run never waits for it.
fn refill(host: Option<&str>, size: usize, options: &[String]) {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            say(format!("warning: cannot refill the pool ({e})"));
            return;
        }
    };
    let log =
        didx::cache::open_append("pool-refill.log").map_err(|e| say(format!("warning: the pool refill's output is discarded ({e})"))).ok();
    let (out, err) = match log.and_then(|f| Some((f.try_clone().ok()?, f))) {
        Some((a, b)) => (std::process::Stdio::from(a), std::process::Stdio::from(b)),
        None => (std::process::Stdio::null(), std::process::Stdio::null()),
    };
    let mut args: Vec<String> = host.map(|h| vec!["-H".to_string(), h.to_string()]).unwrap_or_default();
    args.extend(["pool".to_string(), "up".to_string(), size.to_string()]);
    args.extend_from_slice(options);
    let spawned =
        std::process::Command::new(exe).args(&args).stdin(std::process::Stdio::null()).stdout(out).stderr(err).process_group(0).spawn();
    if let Err(e) = spawned {
        say(format!("warning: cannot refill the pool ({e})"));
    }
}

async fn pool(host: Option<&str>, cmd: Option<PoolCmd>) -> Result<u8, Error> {
    use didx::env::pool;
    // Validate before touching the engine.
    let up = match &cmd {
        Some(PoolCmd::Up { n, env }) => {
            if *n == 0 || *n > pool::MAX_SIZE {
                return Err(Error::Invalid {
                    what: "pool size",
                    value: n.to_string(),
                    fix: format!("give 1 to {} (the maximum); didx pool down empties the pool", pool::MAX_SIZE),
                });
            }
            Some((*n, EnvPlan::from_args(env)?))
        }
        _ => None,
    };
    let engine = Engine::connect(host).await?;
    let on = |e: Event<'_>| match e {
        Event::IsolationFallback { .. } => say(ISOLATION_FALLBACK),
        Event::PoolLockWait { path } => say(format!("waiting for the pool lock {} (another pool up or down holds it)", path.display())),
        _ => {}
    };
    let cancel = Cancel::default();
    match (cmd, up) {
        (Some(PoolCmd::Up { .. }), Some((n, plan))) => {
            let spec = plan.spec(&engine, vec![]).await?;
            let mut signals = Signals::install()?;
            let up = pool::up(&engine, &spec, n, &cancel, &on);
            let r = match cancelled_by_signal(up, &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => {
                    say("interrupted; removed the environments being started (ready ones stay in the pool)");
                    return Ok(sig_code(sig));
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
        (Some(PoolCmd::Down), _) => {
            let mut signals = Signals::install()?;
            let down = pool::down(&engine, &cancel, &on);
            let r = match cancelled_by_signal(down, &cancel, &mut signals).await {
                (Err(Error::Cancelled), Some(sig)) => {
                    say("interrupted while waiting for the pool lock; nothing removed");
                    return Ok(sig_code(sig));
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
        _ => listing::pool(&engine).await,
    }
}

/// Which signal arrived.
#[derive(Clone, Copy)]
enum Sig {
    Int,
    Term,
    /// The terminal closed (or an ssh session dropped): handled as SIGTERM is.
    Hup,
}

impl Sig {
    fn name(self) -> &'static str {
        match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
            Sig::Hup => "SIGHUP",
        }
    }
}

/// The signals that stop didx (SIGINT, SIGTERM, SIGHUP), installed together; every place
/// that stops on a signal takes them from here.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        let one =
            |kind: SignalKind, name: &str| signal(kind).map_err(|e| Error::Io { what: format!("installing a {name} handler"), source: e });
        Ok(Signals {
            int: one(SignalKind::interrupt(), "SIGINT")?,
            term: one(SignalKind::terminate(), "SIGTERM")?,
            hup: one(SignalKind::hangup(), "SIGHUP")?,
        })
    }

    /// The next signal (cancel-safe: a signal that arrives while nobody waits is kept).
    async fn recv(&mut self) -> Sig {
        tokio::select! {
            _ = self.int.recv() => Sig::Int,
            _ = self.term.recv() => Sig::Term,
            _ = self.hup.recv() => Sig::Hup,
        }
    }
}

/// Run `work` to its end; a signal meanwhile sets `cancel` (so `work` winds down and returns
/// what it undid) and is returned beside the outcome.
async fn cancelled_by_signal<T>(work: impl Future<Output = T>, cancel: &Cancel, signals: &mut Signals) -> (T, Option<Sig>) {
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => (r, None),
        sig = signals.recv() => {
            cancel.cancel();
            (work.await, Some(sig))
        }
    }
}

async fn run(host: Option<&str>, plan: RunPlan) -> Result<u8, Error> {
    let timings = Timings(plan.timings);
    let engine = Engine::connect(host).await?;
    timings.mark("connected");
    match plan.clean {
        CleanPolicy::Rpt => return listing::environments(&engine).await,
        CleanPolicy::All => {
            let removed = didx::env::remove_all(&engine).await?;
            for name in &removed {
                say(format!("{name} terminated & destroyed"));
            }
            say(format!("removed {} container(s) and every didx volume and network", removed.len()));
            return Ok(0);
        }
        _ => {}
    }

    // Every source must exist before anything starts.
    didx::copy::check_sources(&engine, &plan.copies).await?;
    let seeds = didx::load::check(&engine, &plan.loads).await?;
    let refill_args = plan.refill.clone();
    let mut spec = plan.env.spec(&engine, plan.volumes).await?;
    timings.mark("resolved");

    let mut signals = Signals::install()?;
    // What a fresh start creates, for when its roll-back is cut short (a pool claim may take
    // another environment: `didx --clean rpt` shows it).
    let starting = (spec.id.to_string(), [spec.server_name(), spec.client_name()]);

    let on_event = |e: Event<'_>| match e {
        Event::IsolationFallback { .. } => say(ISOLATION_FALLBACK),
        Event::ServerStarted { name, image, isolation } => {
            timings.mark("server-started");
            say(format!("dind server named: '{name}' successfully started ({image}, {isolation} isolation)"))
        }
        Event::ClientStarted { name, image } => {
            timings.mark(if refill_args.is_some() { "claimed" } else { "client-started" });
            say(format!("dind client named: '{name}' successfully started ({image})"))
        }
        Event::Ready { elapsed } => {
            timings.mark("ready");
            say(format!("inner engine answered over TLS after {:.2} s", elapsed.as_secs_f64()))
        }
        _ => {}
    };
    let cancel = Cancel::default();
    let start = async {
        if let Some(args) = &refill_args {
            if let Some((env, size)) = didx::env::pool::claim(&engine, &mut spec, &cancel, &on_event).await? {
                refill(host, size, args);
                return Ok(env);
            }
            say(
                "no pooled environment for these options is left; starting a fresh one (didx pool up N, with the same options, keeps some ready)",
            );
        }
        Environment::start(&engine, &spec, &cancel, &on_event).await
    };
    tokio::pin!(start);
    let mut got: Option<Sig> = None;
    let env = tokio::select! {
        r = &mut start => r,
        s = signals.recv() => {
            got = Some(s);
            cancel.cancel();
            tokio::select! {
                r = &mut start => r,
                again = signals.recv() => {
                    let (id, names) = &starting;
                    if refill_args.is_some() {
                        say(format!("roll-back cut short by {}; what is left shows in: didx --clean rpt", again.name()));
                    } else {
                        left_behind(engine.host(), again, id, names);
                    }
                    return Ok(sig_code(again));
                }
            }
        }
    };
    let env = match env {
        Ok(env) => env,
        Err(Error::Cancelled) => {
            say(format!("interrupted by {} while starting; removed what was created", got.unwrap_or(Sig::Int).name()));
            return Ok(sig_code(got.unwrap_or(Sig::Int)));
        }
        Err(e) => return Err(e),
    };
    if let Some(s) = got {
        // The signal arrived as the start completed.
        return finish(env, timings, plan.clean, false, sig_code(s), &mut signals).await;
    }

    // Files and images in, before the commands; an interruption here is a failure too.
    let prepare = async {
        if !plan.copies.is_empty() {
            for warning in didx::copy::copy_all(&engine, &env.client().id, env.id().as_str(), &plan.copies).await? {
                say(warning);
            }
            say(format!("copied {} source(s) into the client", plan.copies.len()));
        }
        if !seeds.is_empty() {
            let tty = std::io::stderr().is_terminal();
            let last_line = std::sync::Mutex::new(std::time::Instant::now());
            let on_load = |e: LoadEvent<'_>| match e {
                LoadEvent::Skipped(name) => say(format!("{name} already in the inner engine (same ID); not loaded")),
                LoadEvent::Progress { sent, total, elapsed } => {
                    let rate = sent as f64 / 1e6 / elapsed.as_secs_f64().max(1e-3);
                    let line = format!("seeding {:.1}/{:.1} MB, {rate:.0} MB/s", sent as f64 / 1e6, total as f64 / 1e6);
                    if tty {
                        output::err(&format!("\rdidx: {line}   "));
                    } else if let Ok(mut last) = last_line.lock()
                        && last.elapsed() >= Duration::from_secs(5)
                    {
                        *last = std::time::Instant::now();
                        say(line);
                    }
                }
                _ => {}
            };
            let r = didx::load::load(&env, &seeds, &on_load).await?;
            if tty {
                output::err("\n");
            }
            if !r.loaded.is_empty() {
                say(format!(
                    "loaded {} into the inner engine: {:.1} MB in {:.2} s ({:.0} MB/s)",
                    r.loaded.join(", "),
                    r.bytes as f64 / 1e6,
                    r.elapsed.as_secs_f64(),
                    r.bytes as f64 / 1e6 / r.elapsed.as_secs_f64().max(1e-3)
                ));
            }
        }
        Ok::<(), Error>(())
    };
    let prepared = tokio::select! {
        r = prepare => r,
        s = signals.recv() => {
            say(format!("interrupted by {} while copying; cleaning up as a failure (--clean {})", s.name(), plan.clean.as_str()));
            return finish(env, timings, plan.clean, false, sig_code(s), &mut signals).await;
        }
    };
    if let Err(e) = prepared {
        say(format!("error: {e}"));
        return finish(env, timings, plan.clean, false, EXIT_DIDX, &mut signals).await;
    }

    let on_step = |e: StepEvent<'_>| match e {
        StepEvent::Started { index, total, display } => say(format!("[{index}/{total}] {display}")),
        StepEvent::Ended { index, total, code: 0, elapsed } => {
            say(format!("[{index}/{total}] succeeded in {:.2} s", elapsed.as_secs_f64()))
        }
        StepEvent::Ended { index, total, code, elapsed } => say(format!(
            "[{index}/{total}] failed with exit code {code} after {:.2} s{}",
            elapsed.as_secs_f64(),
            if index < total { format!("; skipping the remaining {}", total - index) } else { String::new() }
        )),
        _ => {}
    };
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let outcome = tokio::select! {
        r = run_steps(&env, &plan.steps, &plan.cv_env, &mut stdout, &mut stderr, &on_step) => r,
        s = signals.recv() => {
            say(format!("interrupted by {}; cleaning up as a failure (--clean {})", s.name(), plan.clean.as_str()));
            return finish(env, timings, plan.clean, false, sig_code(s), &mut signals).await;
        }
    };
    match outcome {
        Ok(o) => {
            let code = match o.failed {
                None => 0,
                Some((_, c)) if (1..=255).contains(&c) => c as u8,
                Some(_) => EXIT_DIDX,
            };
            finish(env, timings, plan.clean, o.succeeded(), code, &mut signals).await
        }
        Err(e) => {
            // didx failed while running commands (e.g. the engine went away): a failure.
            say(format!("error: {e}"));
            finish(env, timings, plan.clean, false, EXIT_DIDX, &mut signals).await
        }
    }
}

fn sig_code(s: Sig) -> u8 {
    match s {
        Sig::Int => EXIT_SIGINT,
        Sig::Term => EXIT_SIGTERM,
        Sig::Hup => EXIT_SIGHUP,
    }
}

/// The docker CLI command that removes environment `id` (containers `names`, then every
/// volume with its label), for the engine at `host`.
fn removal_command(host: &str, id: &str, names: &[String]) -> String {
    let docker = if host == didx::engine::DEFAULT_HOST {
        "docker".to_string()
    } else {
        let env = didx::engine::cli_env_for(host);
        let mut d = String::from("docker");
        for (k, v) in &env {
            match k.as_str() {
                "DOCKER_HOST" => d.push_str(&format!(" -H {}", shell_words::quote(v))),
                "DOCKER_TLS_VERIFY" => d.push_str(" --tlsverify"),
                _ => {}
            }
        }
        d
    };
    let label = format!("label={}={id}", didx::labels::ENV);
    format!("{docker} rm -fv {}; {docker} volume ls -q --filter {label} | xargs -r {docker} volume rm", names.join(" "))
}

/// Said when a second signal cuts a teardown short: what is left and how to remove it.
fn left_behind(host: &str, sig: Sig, id: &str, names: &[String]) {
    say(format!(
        "clean-up cut short by {}; left on the engine: {} and the volumes labelled {}={id}",
        sig.name(),
        names.join(", "),
        didx::labels::ENV
    ));
    say(format!("remove them with: {}", removal_command(host, id, names)));
}

/// Remove or keep `env` by `clean` and the outcome; `code` stands whatever the removal does.
/// A signal during the removal cuts it short: what is left is said, with the command that
/// removes it, and the exit code becomes the signal's.
async fn finish(
    env: Environment,
    timings: Timings,
    clean: CleanPolicy,
    succeeded: bool,
    code: u8,
    signals: &mut Signals,
) -> Result<u8, Error> {
    timings.mark("commands-done");
    let server = env.server().name.clone();
    let client = env.client().name.clone();
    if clean.removes(succeeded) {
        let id = env.id().to_string();
        let host = env.engine().host().to_string();
        let names = [server.clone(), client.clone()];
        tokio::select! {
            r = env.rm() => match r {
                Ok(()) => {
                    timings.mark("removed");
                    say(format!("dind server named: '{server}' terminated & destroyed"));
                    say(format!("dind client named: '{client}' terminated & destroyed"));
                }
                // The commands' outcome stands; the failure is said, with what removes the rest.
                Err(e) => say(format!(
                    "error: clean-up of environment {id} failed: {e} (the exit code stays the commands'; remove what is left with: {})",
                    removal_command(&host, &id, &names)
                )),
            },
            s = signals.recv() => {
                left_behind(&host, s, &id, &names);
                return Ok(sig_code(s));
            }
        }
    } else {
        let id = env.id().to_string();
        let expires = match env.certificates_expire().await {
            Ok(Some(t)) => format!("; its TLS certificates expire on {} UTC", utc_date(t)),
            _ => String::new(),
        };
        env.keep();
        say(format!("dind server named: '{server}' remains running{expires}"));
        say(format!(
            "dind client named: '{client}' remains running (attach: docker exec -it {client} sh; env {id}; remove all: didx --clean all)"
        ));
    }
    Ok(code)
}
