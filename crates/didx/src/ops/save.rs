//! `--save IMAGE`: images of the inner engine put into the host engine — the reverse of
//! `--load`. `docker save` runs in the client (so it works wherever COMMANDs do: an engine
//! here, over SSH, a cluster's pod) and its output is streamed into the host engine's load
//! (`POST /images/load`), never held in memory; all the images travel in one archive, so the
//! layers they share are sent once.

use tokio::io::AsyncWriteExt;

use crate::engine::Engine;
use crate::env::Environment;
use crate::error::{Error, Result};

/// How much of the archive may wait between the client's output and the host's load.
const BUFFER: usize = 1 << 20;

/// Put `images` of `env`'s inner engine into `engine` (the host's); the images it loaded.
pub(crate) async fn save(env: &Environment, engine: &Engine, images: &[String]) -> Result<Vec<String>> {
    for image in images {
        crate::spec::check_save_image(image)?;
    }
    let mut argv = vec!["docker".to_string(), "save".to_string()];
    argv.extend(images.iter().cloned());
    let (mut writer, reader) = tokio::io::duplex(BUFFER);
    let mut err = Vec::new();
    let produce = async {
        let code = env.exec(&argv, &mut writer, &mut err).await;
        // Its end is the archive's end (or the load's failure).
        writer.shutdown().await.ok();
        drop(writer);
        code
    };
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, 128 * 1024);
    let (code, loaded) = tokio::join!(produce, engine.load_images(stream));
    let code = code?;
    if code != 0 {
        let why = String::from_utf8_lossy(&err).trim().to_string();
        return Err(Error::io(
            format!("docker save {} in the client", images.join(" ")),
            std::io::Error::other(format!("exit {code}: {why}")),
        ));
    }
    loaded
}
