//! A container's resource requests and limits, as `--server-requests` and its kin give them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::error::{Error, Result};

/// Resource requests and limits of one container (Kubernetes quantities, e.g. `500m`, `2Gi`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// `requests`, by resource name (`cpu`, `memory`, `ephemeral-storage`).
    pub requests: BTreeMap<String, String>,
    /// `limits`, by resource name.
    pub limits: BTreeMap<String, String>,
}

impl Resources {
    /// Parse `NAME=QUANTITY[,NAME=QUANTITY…]` (e.g. `cpu=500m,memory=1Gi`) for `what` (the
    /// option's name, for the error).
    pub fn parse_into(map: &mut BTreeMap<String, String>, what: &'static str, text: &str) -> Result<()> {
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let Some((name, q)) = part.split_once('=') else {
                return Err(Error::invalid(what, text, "expected NAME=QUANTITY[,NAME=QUANTITY…], e.g. cpu=500m,memory=1Gi"));
            };
            if !["cpu", "memory", "ephemeral-storage"].contains(&name) {
                return Err(Error::invalid(what, text, "the resources are cpu, memory and ephemeral-storage"));
            }
            if !is_quantity(q) {
                return Err(Error::invalid(what, text, "a quantity is a number with an optional suffix (500m, 2, 1.5, 512Mi, 2Gi, 1e3)"));
            }
            map.insert(name.to_string(), q.to_string());
        }
        Ok(())
    }

    /// As a container's `resources`: `None` when nothing is set.
    pub(crate) fn requirements(&self) -> Option<ResourceRequirements> {
        let q = |m: &BTreeMap<String, String>| {
            (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), Quantity(v.clone()))).collect::<BTreeMap<_, _>>())
        };
        (!self.requests.is_empty() || !self.limits.is_empty()).then(|| ResourceRequirements {
            requests: q(&self.requests),
            limits: q(&self.limits),
            ..Default::default()
        })
    }
}

/// Whether `s` is a Kubernetes quantity: a decimal number, then nothing, a binary suffix
/// (`Ki`…`Ei`), a decimal suffix (`n u m k M G T P E`) or an exponent (`e3`, `E-2`).
pub fn is_quantity(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let digits_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(digits_end);
    let mut parts = number.split('.');
    let (int, frac) = (parts.next().unwrap_or(""), parts.next());
    if parts.next().is_some() || (int.is_empty() && frac.is_none_or(str::is_empty)) {
        return false;
    }
    const SUFFIXES: [&str; 15] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "n", "u", "m", "k", "M", "G", "T", "P"];
    if SUFFIXES.contains(&suffix) || suffix == "E" {
        return true;
    }
    let exp = suffix.strip_prefix(['e', 'E']).map(|e| e.strip_prefix(['+', '-']).unwrap_or(e));
    exp.is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_lists_and_quantities_are_checked() {
        for bad in ["cpu", "cpu=", "gpu=1", "cpu=lots", "memory=1GB", "cpu=1..5"] {
            let e = Resources::parse_into(&mut BTreeMap::new(), "--server-limits value", bad).unwrap_err();
            assert!(e.is_usage(), "{bad}");
        }
        for (q, ok) in [
            ("1", true),
            ("500m", true),
            ("1.5", true),
            (".5", true),
            ("2Gi", true),
            ("1e3", true),
            ("1E-2", true),
            ("+1", true),
            ("", false),
            (".", false),
            ("1GB", false),
            ("Gi", false),
            ("1e", false),
        ] {
            assert_eq!(is_quantity(q), ok, "{q}");
        }
    }
}
