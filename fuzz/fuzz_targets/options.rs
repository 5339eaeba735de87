//! The option parsers on arbitrary text: the first byte picks the parser. None may panic;
//! what they accept must hold their promises.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let cwd = Path::new("/nonexistent-didx-fuzz-cwd");
    match which % 5 {
        0 => {
            if let Ok(spec) = didx::copy::CpSpec::parse(s, cwd) {
                assert!(spec.target.starts_with('/') && !spec.target.contains('\0'), "{spec:?}");
            }
        }
        1 => {
            let _ = didx::spec::VolumeSpec::parse(s, cwd);
        }
        2 => {
            if let Ok(v) = didx::spec::Version::parse("--sv", s) {
                let shown = format!("{v:?}");
                assert!(!shown.contains('/') && !shown.contains(' '), "{shown}");
            }
        }
        3 => {
            let _ = didx::spec::parse_duration("--ready-timeout", s);
        }
        _ => {
            let _ = didx::command::Step::parse(s);
        }
    }
});
