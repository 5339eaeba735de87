//! Small leaves every layer may use: the clock in whole seconds, random tokens, and the engine's
//! rule for names.

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// 10 random base-36 characters, unique across processes and hosts that share an engine:
/// environment ids and the names of scratch containers, volumes and files.
pub(crate) fn token() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 10];
    if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    }) {
        // Not expected on Linux; fall back to time and pid, still unique enough per host.
        tracing::warn!(error = %e, "no /dev/urandom; id from time and pid");
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ^ ((std::process::id() as u128) << 64);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (seed >> (i * 8)) as u8;
        }
    }
    bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

/// A name the engine accepts for a container or a volume (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), and
/// the shape of every name didx makes from one (environment ids, store prefixes, pool names).
pub(crate) fn is_engine_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_ten_base36_characters_and_differ() {
        let (a, b) = (super::token(), super::token());
        assert_eq!(a.len(), 10);
        assert!(a.bytes().all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()), "{a}");
        assert_ne!(a, b);
    }
}
