//! The `--cp` validator's CPU time on a large archive: 100 000 entries of which 20 000 are
//! symbolic links, paths 6 deep (each entry's ancestors are looked up in the link set, so the
//! cost is O(entries x depth), not O(entries x links)). Prints the median and min-max of RUNS
//! runs (default 7) of CPU time (user + system, getrusage) and the machine.
//!   cargo run --release -p didx --features internals --example validate_bench  (or bash bench/validate.sh)

use didx::copy::validate::craft::{end, simple};
use didx::copy::validate::{Origin, Placement, validate_tar};

fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn archive() -> (Vec<u8>, usize, usize) {
    let (mut a, mut entries, mut links) = (Vec::new(), 0, 0);
    // 1 000 directories a/bN/c/d/e, each with 79 files and 20 links (relative and absolute).
    for d in 0..1000 {
        let dir = format!("a{}/b{d}/c/d/e", d % 10);
        simple(&mut a, &format!("{dir}/"), b'5', "", b"");
        entries += 1;
        for f in 0..79 {
            simple(&mut a, &format!("{dir}/f{f}"), b'0', "", b"data\n");
            entries += 1;
        }
        for l in 0..20 {
            let target = if l % 2 == 0 { format!("../e/f{l}") } else { "/usr/bin/env".to_string() };
            simple(&mut a, &format!("{dir}/l{l}"), b'2', &target, b"");
            entries += 1;
            links += 1;
        }
    }
    (end(a), entries, links)
}

fn main() {
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(7);
    let (data, entries, links) = archive();
    let mut times = Vec::new();
    for _ in 0..runs {
        let t0 = cpu_seconds();
        let r = validate_tar(&data[..], Placement { dir: "t".into(), rename_top: None }, Origin::Foreign, std::io::sink()).unwrap();
        times.push(cpu_seconds() - t0);
        assert_eq!(r.entries as usize, entries);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    println!("machine: {cpu}, {cores} cores available");
    println!("archive: {entries} entries, {links} symbolic links, {:.1} MB", data.len() as f64 / 1e6);
    println!("validate CPU time over {runs} runs: median {:.3} s, min {:.3} s, max {:.3} s", times[runs / 2], times[0], times[runs - 1]);
}
