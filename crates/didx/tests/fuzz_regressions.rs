//! Replays the committed fuzz regression corpus (fuzz/regressions/) through the same checks the
//! fuzz targets make, on every `cargo test`: no input may panic, every hand-made hostile
//! archive (fuzz/regressions/archive/hostile/) must be refused, and the others must pass.
//! No engine needed.

use std::path::{Path, PathBuf};

use didx::copy::validate::{Origin, Placement, validate_tar};

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
    out.sort();
    out
}

fn validate(data: &[u8]) -> didx::error::Result<Vec<String>> {
    let mut out = Vec::new();
    validate_tar(data, Placement { dir: "t".into(), rename_top: None }, Origin::Foreign, &mut out)?;
    let mut a = tar::Archive::new(&out[..]);
    Ok(a.entries().unwrap().map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap()).collect())
}

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions");

#[test]
fn hostile_archives_of_the_corpus_are_refused() {
    let hostile = files(&Path::new(ROOT).join("archive/hostile"));
    assert!(hostile.len() >= 20, "the hand-made hostile corpus is missing");
    for p in hostile {
        let e = validate(&std::fs::read(&p).unwrap()).expect_err(&p.display().to_string());
        assert!(e.to_string().contains("refused"), "{}: {e}", p.display());
    }
}

#[test]
fn other_archives_of_the_corpus_pass_under_the_target() {
    for p in files(&Path::new(ROOT).join("archive")) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let r = validate(&std::fs::read(&p).unwrap());
        // Hand-made benign ones must pass; finds of the fuzzer only must not panic.
        if !name.starts_with("crash-") {
            let paths = r.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(paths.iter().all(|p| p.starts_with("t/")), "{name}: {paths:?}");
        }
    }
}

#[test]
fn option_inputs_of_the_corpus_do_not_panic() {
    let cwd = Path::new("/nonexistent-didx-fuzz-cwd");
    for p in files(&Path::new(ROOT).join("options")) {
        let data = std::fs::read(&p).unwrap();
        let Some((&which, rest)) = data.split_first() else { continue };
        let s = String::from_utf8_lossy(rest);
        match which % 5 {
            0 => {
                if let Ok(spec) = didx::copy::CpSpec::parse(&s, cwd) {
                    assert!(spec.target.starts_with('/') && !spec.target.contains('\0'), "{}: {spec:?}", p.display());
                }
            }
            1 => drop(didx::spec::VolumeSpec::parse(&s, cwd)),
            2 => drop(didx::spec::Version::parse("--sv", &s)),
            3 => drop(didx::spec::parse_duration("--ready-timeout", &s)),
            _ => drop(didx::command::Step::parse(&s)),
        }
    }
}
