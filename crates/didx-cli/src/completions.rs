//! `didx completions SHELL` and `didx man`: a shell completion script and the man page, both
//! generated from the clap definitions in `cli.rs`, so they never drift from `--help`.

use clap::CommandFactory;

use crate::cli::{Cli, Shell};
use crate::output;

/// The completion script for `shell`, for the command named `didx`.
pub fn script(shell: Shell) -> String {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "didx", &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// The man page, section 1, in roff.
pub fn man_page() -> Result<String, std::io::Error> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `didx completions SHELL`: the script on stdout.
pub fn completions(shell: Shell) -> u8 {
    output::out(&script(shell));
    0
}

/// `didx man`: the page on stdout.
pub fn man() -> anyhow::Result<u8> {
    use anyhow::Context;
    let page = man_page().context("rendering the man page")?;
    output::out(&page);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_naming_the_verbs_and_options() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            for word in ["didx", "pool", "completions", "clean", "json", "storage-driver"] {
                assert!(s.contains(word), "{shell:?} script lacks {word}");
            }
            // The shell names after `completions` (clap_complete's fish script has no positionals).
            if shell != Shell::Fish {
                assert!(s.contains("bash zsh fish") || s.contains(r"bash\:"), "{shell:?} script lacks the shell names");
            }
        }
    }

    #[test]
    fn the_man_page_is_roff_and_names_the_options() {
        let page = man_page().unwrap();
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{}", &page[..80.min(page.len())]);
        assert!(page.contains(".TH didx 1"), "no .TH line");
        assert!(page.contains("\\-\\-clean"));
    }
}
