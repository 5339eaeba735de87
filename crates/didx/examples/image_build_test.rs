//! A complete integration test of a Docker image build, run in a throwaway engine: nothing
//! touches the host engine's images, and nothing is left behind.
//!
//! The build context (`examples/hello-context`) is copied into the sandbox's client, built
//! there by the docker CLI, then checked from Rust through the sandbox's own engine.
//!
//!     cargo test -p didx --example image_build_test     # as a test
//!     cargo run  -p didx --example image_build_test     # as a program
//!
//! Needs a Docker engine on this machine and didx's offline image (`didx image build`, or
//! `bash scripts/setup.sh` in this repository). No registry is used.

use didx::{Engine, Sandbox};

/// Any error: didx's own or the inner engine's (bollard's).
type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What a user's test does: start, act, check, remove.
async fn the_image_builds_and_carries_its_label() -> Result<()> {
    let engine = Engine::connect_default().await?;
    let sb = Sandbox::builder()
        .cwd(env!("CARGO_MANIFEST_DIR"))
        .copy("./examples/hello-context:/ctx") // same grammar as didx --cp
        .start(&engine)
        .await?;

    // Build with the docker CLI inside the sandbox's client...
    let build = sb.exec(["docker", "build", "-q", "-t", "hello:test", "/ctx"]).await?;
    assert!(build.success(), "build failed: {}", build.stderr_text());

    // ...and check the result from Rust, through the sandbox's own engine (mutual TLS).
    let docker = sb.docker().await?;
    let image = docker.inspect_image("hello:test").await?;
    let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
    assert_eq!(labels.get("org.example.tested-by").map(String::as_str), Some("didx"));

    // Explicit removal; dropping `sb` would remove it too (DIDX_KEEP=1 keeps it to look at).
    sb.rm().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    the_image_builds_and_carries_its_label().await?;
    println!("ok: hello:test built and checked in a throwaway engine");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread")]
    async fn the_image_builds_and_carries_its_label() {
        super::the_image_builds_and_carries_its_label().await.unwrap();
    }
}
