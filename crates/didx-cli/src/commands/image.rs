//! `didx image build`: the offline server/client image from Debian's packages.

use std::io::IsTerminal;

use didx::image::{BuildEvent, BuildSpec};

use crate::cli::ImageCmd;
use crate::engine::connect;
use crate::output::{self, say};

/// What `didx image …` asks for.
pub fn of(cmd: ImageCmd) -> BuildSpec {
    match cmd {
        ImageCmd::Build { suite, mirror, force } => BuildSpec { suite, mirror, force },
    }
}

/// `didx image build`: build (or reuse) the image, saying how it went.
pub async fn build(host: Option<&str>, spec: BuildSpec) -> anyhow::Result<u8> {
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
