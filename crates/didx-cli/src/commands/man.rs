//! `didx man`: the man page, generated from the clap definitions in `cli.rs`, so it never
//! drifts from `--help`.

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::output;

/// The man page, section 1, in roff.
pub fn man_page() -> Result<String, std::io::Error> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `didx man`: the page on stdout.
pub fn man() -> anyhow::Result<u8> {
    let page = man_page().context("rendering the man page")?;
    output::out(&page);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_man_page_is_roff_and_names_the_options() {
        let page = man_page().unwrap();
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{}", &page[..80.min(page.len())]);
        assert!(page.contains(".TH didx 1"), "no .TH line");
        assert!(page.contains("\\-\\-clean"));
    }
}
