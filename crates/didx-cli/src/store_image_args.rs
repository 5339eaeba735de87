//! The subcommands of `didx store` and `didx image`, as clap reads them.

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum StoreCmd {
    /// Remove IMAGEs (tags or IDs) from every store holding them; with none, remove every
    /// store (its volume). A store a server uses is left (exit 125)
    Rm {
        /// Tags or IDs
        #[arg(value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove the stored images the host engine no longer has (by ID: a tag rebuilt since),
    /// and the stores that leaves empty
    Prune,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Build didx/dind:local from Debian's packages (no registry needed); another --suite
    /// makes didx/dind:<its engine version> only. Reuses an image built from the same recipe
    Build {
        /// Debian suite (trixie: docker.io 26.x, with docker-cli)
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// Debian mirror
        #[arg(long, env = "DIDX_MIRROR", default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Rebuild even when an image from the same recipe exists
        #[arg(long)]
        force: bool,
    },
}
