//! What a user of the library writes: start a sandbox, use its engine from Rust and through its
//! client, tell bad input from a failed run, and leave nothing behind. Built against the
//! public API alone (no `internals`), so a change that breaks a user's program breaks CI.
//!
//!     cargo run -p didx-user-program     # needs an engine and `bash scripts/setup.sh`'s images

use didx::bollard::query_parameters::ListImagesOptions;
use didx::{Engine, Error, ExecOutput, Sandbox, StartFrom};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::main]
async fn main() -> Result<()> {
    let engine = Engine::connect_default().await?;
    let before = didx::inventory::list(&engine).await?;

    // Bad input: a usage error, before anything is created.
    let refused = Sandbox::builder().copy("no-colon-here").start(&engine).await;
    match refused {
        Err(e @ Error::Invalid { .. }) => assert!(e.is_usage(), "a bad --cp is a usage error: {e}"),
        Err(e) => return Err(format!("a bad copy spec failed as {e:?}, not as invalid input").into()),
        Ok(_) => return Err("a bad copy spec was accepted".into()),
    }

    // A sandbox: its inner engine from Rust, its client's docker CLI, then removal.
    let sb = Sandbox::builder().server_version("local").start_with(&engine, StartFrom::Fresh, &didx::Cancel::new(), &|_| {}).await?;
    let docker: didx::bollard::Docker = sb.docker().await?;
    let images = docker.list_images(None::<ListImagesOptions>).await?;
    assert!(images.is_empty(), "a fresh inner engine holds no images, this one {}", images.len());
    let out: ExecOutput = sb.exec(["docker", "version", "--format", "{{.Server.Version}}"]).await?;
    assert!(out.success(), "docker version in the client failed: {}", out.stderr_text());
    println!("didx-user-program: inner engine {} reached from Rust and from the client", out.stdout_text().trim());
    sb.rm().await?;

    // Dropping removes too.
    drop(Sandbox::builder().server_version("local").start(&engine).await?);

    let after = didx::inventory::list(&engine).await?;
    assert_eq!(before, after, "the engine holds something of didx's it did not hold before");
    println!("didx-user-program: the engine is as it was");
    Ok(())
}
