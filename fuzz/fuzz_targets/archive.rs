//! The `--cp` validator on arbitrary bytes: it must never panic, and whatever it lets through
//! must re-read as an archive of only files, directories and links placed under the target.
#![no_main]

use didx::copy::validate::{Origin, Placement, validate_tar};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let place = Placement { dir: "t".into(), rename_top: None };
    let mut out = Vec::new();
    if validate_tar(data, place, Origin::Foreign, &mut out).is_err() {
        return;
    }
    let mut a = tar::Archive::new(&out[..]);
    for e in a.entries().expect("validated output re-reads") {
        let e = e.expect("validated entry re-reads");
        let path = String::from_utf8(e.path_bytes().into_owned()).expect("UTF-8 path");
        assert!(path.starts_with("t/") && !path.split('/').any(|p| p == ".." || p == "." || p.is_empty()), "{path:?}");
        let t = e.header().entry_type();
        assert!(t.is_file() || t.is_dir() || t.is_symlink() || t.is_hard_link(), "{t:?}");
        assert_eq!(e.header().mode().unwrap() & 0o6000, 0, "setuid/setgid let through");
        if t.is_hard_link() {
            let l = String::from_utf8(e.link_name_bytes().unwrap().into_owned()).unwrap();
            assert!(l.starts_with("t/") && !l.split('/').any(|p| p == ".."), "{l:?}");
        }
    }
});
