//! `didx completions SHELL`: a shell completion script, generated from the clap definitions in
//! `cli.rs`, so it never drifts from `--help` (the options that take one of a few words
//! complete those words).

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

/// `didx completions SHELL`: the script on stdout.
pub fn completions(shell: Shell) -> u8 {
    output::out(&script(shell));
    0
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
    fn every_shell_completes_the_words_of_clean_isolation_and_engine() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell);
            for word in ["anycase", "failure", "rpt", "privileged", "caps", "dind"] {
                assert!(s.contains(word), "{shell:?} script lacks the value {word}");
            }
        }
    }
}
