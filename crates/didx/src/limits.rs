//! Resource limits of an environment's containers (`--memory`, `--cpus`, `--pids-limit`):
//! parsed as docker reads them, recorded and shown as one label value (pure).

use crate::error::{Error, Result};

/// Resource limits of each of an environment's containers, server and client alike
/// (`--memory`, `--cpus`, `--pids-limit`): the server's bound its dockerd and every inner
/// container, whose cgroups nest in its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Memory, bytes (the engine's `Memory`; swap as the engine's default allows).
    pub memory: Option<u64>,
    /// CPUs, in billionths (the engine's `NanoCpus`).
    pub nano_cpus: Option<u64>,
    /// Processes (the engine's `PidsLimit`).
    pub pids: Option<u64>,
}

impl Limits {
    /// Parse `--memory`: a size with an optional unit `b`, `k`, `m`, `g` (powers of 1024, as
    /// docker reads it), at least 6m (the engine's own minimum).
    pub fn parse_memory(value: &str) -> Result<u64> {
        let bad = || Error::invalid("--memory value", value, "a size of at least 6m, e.g. 512m or 2g");
        let v = value.trim().to_ascii_lowercase();
        let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => v.split_at(i),
            None => (v.as_str(), ""),
        };
        let unit = match unit.trim_end_matches('b') {
            _ if unit == "b" || unit.is_empty() => 1u64,
            "k" => 1 << 10,
            "m" => 1 << 20,
            "g" => 1 << 30,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let bytes = n.checked_mul(unit).ok_or_else(bad)?;
        if bytes < 6 << 20 { Err(bad()) } else { Ok(bytes) }
    }

    /// Parse `--cpus`: a positive number of CPUs, e.g. `1.5` (to a thousandth).
    pub fn parse_cpus(value: &str) -> Result<u64> {
        let bad = || Error::invalid("--cpus value", value, "a positive number of CPUs, e.g. 1.5");
        let cpus: f64 = value.trim().parse().map_err(|_| bad())?;
        if !cpus.is_finite() || !(0.001..=1_000_000.0).contains(&cpus) {
            return Err(bad());
        }
        Ok((cpus * 1000.0).round() as u64 * 1_000_000)
    }

    /// Parse `--pids-limit`: at least 16 processes (a dockerd and its shell need some).
    pub fn parse_pids(value: &str) -> Result<u64> {
        match value.trim().parse::<u64>() {
            Ok(n) if n >= 16 => Ok(n),
            _ => Err(Error::invalid("--pids-limit value", value, "a number of processes, at least 16, e.g. 512")),
        }
    }

    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// As `didx ls` shows them and the label records them: `memory=512m,cpus=1.5,pids=512`
    /// (what is set only); empty when nothing is.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.memory {
            parts.push(if m % (1 << 20) == 0 { format!("memory={}m", m >> 20) } else { format!("memory={m}") });
        }
        if let Some(c) = self.nano_cpus {
            parts.push(format!("cpus={}", c as f64 / 1e9));
        }
        if let Some(p) = self.pids {
            parts.push(format!("pids={p}"));
        }
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_as_docker_reads_them_and_label_back() {
        assert_eq!(Limits::parse_memory("512m").unwrap(), 512 << 20);
        assert_eq!(Limits::parse_memory("2G").unwrap(), 2 << 30);
        assert_eq!(Limits::parse_memory("7340032").unwrap(), 7 << 20);
        assert_eq!(Limits::parse_memory("8mb").unwrap(), 8 << 20);
        for bad in ["", "5m", "1t", "m", "-1m", "1.5g", "99999999999999g"] {
            assert!(Limits::parse_memory(bad).unwrap_err().is_usage(), "{bad:?}");
        }
        assert_eq!(Limits::parse_cpus("1.5").unwrap(), 1_500_000_000);
        assert_eq!(Limits::parse_cpus("0.25").unwrap(), 250_000_000);
        for bad in ["0", "-1", "x", "inf", "NaN"] {
            assert!(Limits::parse_cpus(bad).unwrap_err().is_usage(), "{bad:?}");
        }
        assert_eq!(Limits::parse_pids("512").unwrap(), 512);
        assert!(Limits::parse_pids("8").unwrap_err().is_usage());
        assert!(Limits::parse_pids("-1").unwrap_err().is_usage());
        let l = Limits { memory: Some(512 << 20), nano_cpus: Some(1_500_000_000), pids: Some(100) };
        assert_eq!(l.label(), "memory=512m,cpus=1.5,pids=100");
        assert!(Limits::default().is_empty() && Limits::default().label().is_empty());
    }
}
