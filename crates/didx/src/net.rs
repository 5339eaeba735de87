//! The inner engines' addresses: each environment's dockerd gets its own block of an address
//! range (`--address-range`, default [`DEFAULT_RANGE`]) for its default bridge (`--bip`) and
//! the networks it creates (`--default-address-pool`), so that no two live environments share
//! an inner subnet and none overlaps a network of the host engine. Pure logic here; the claim
//! against the engine is in `env::claim_block`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The range blocks are taken from unless told otherwise.
pub const DEFAULT_RANGE: &str = "10.200.0.0/13";
/// Each environment's block: a /20 (4096 addresses).
pub const BLOCK_PREFIX: u8 = 20;
/// The size of each network an inner engine creates from its pool (a /24).
pub const POOL_NETWORK_PREFIX: u8 = 24;
/// dockerd options that choose inner addresses themselves: given in `--dkropts`, didx leaves
/// the inner addresses to them and claims no block.
pub const ADDRESS_OPTIONS: &[&str] = &["--bip", "--default-address-pool", "--fixed-cidr"];

/// An IPv4 network, `ADDR/PREFIX`, its address aligned to the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    base: u32,
    prefix: u8,
}

impl Cidr {
    /// The network of `addr/prefix` (host bits cleared).
    fn containing(addr: u32, prefix: u8) -> Cidr {
        Cidr { base: addr & mask(prefix), prefix }
    }

    /// Parse `A.B.C.D/N`; `None` for anything else (an IPv6 network, a bare address).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = s.split_once('/')?;
        let addr: Ipv4Addr = addr.parse().ok()?;
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
        Some(Cidr::containing(u32::from(addr), prefix))
    }

    /// Whether the two networks share an address.
    pub fn overlaps(self, other: Cidr) -> bool {
        let p = self.prefix.min(other.prefix);
        self.base & mask(p) == other.base & mask(p)
    }

    /// Its first address.
    pub fn base(self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// Its prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) }
}

/// Where environments' blocks come from (`--address-range`): an IPv4 network of at least one
/// block (/20 or larger), written with its network address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressRange(Cidr);

impl AddressRange {
    /// Parse `A.B.C.D/N`, N at most `BLOCK_PREFIX`, host bits zero.
    pub fn parse(s: &str) -> Result<AddressRange> {
        let fix = format!("give an IPv4 network of /{BLOCK_PREFIX} or larger, e.g. {DEFAULT_RANGE}");
        let Some(c) = Cidr::parse(s) else {
            return Err(Error::invalid("--address-range", s, format!("not an IPv4 network ADDR/PREFIX: {fix}")));
        };
        if c.prefix > BLOCK_PREFIX {
            return Err(Error::invalid("--address-range", s, format!("smaller than one environment's block (/{BLOCK_PREFIX}): {fix}")));
        }
        if c.to_string() != s {
            return Err(Error::invalid("--address-range", s, format!("host bits are set: write its network address, {c}")));
        }
        Ok(AddressRange(c))
    }

    /// The default, `DEFAULT_RANGE`.
    pub fn default_range() -> AddressRange {
        AddressRange::parse(DEFAULT_RANGE).expect("the default range parses")
    }

    /// The network.
    pub fn cidr(self) -> Cidr {
        self.0
    }

    /// Every block of the range, in address order.
    pub fn blocks(self) -> impl Iterator<Item = Block> {
        let count = 1u32 << (BLOCK_PREFIX - self.0.prefix);
        let step = 1u32 << (32 - BLOCK_PREFIX);
        (0..count).map(move |i| Block(Cidr { base: self.0.base + i * step, prefix: BLOCK_PREFIX }))
    }
}

impl fmt::Display for AddressRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for AddressRange {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        AddressRange::parse(s)
    }
}

/// One environment's /20: its first /24 is the inner default bridge (`--bip`, gateway `.1`),
/// its upper /21 the pool of eight /24s the inner engine creates networks from (compose
/// projects, `docker network create`); the rest is left free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block(Cidr);

impl Block {
    /// Parse a block as written in its label (`A.B.C.D/20`).
    pub fn parse(s: &str) -> Option<Block> {
        Cidr::parse(s).filter(|c| c.prefix == BLOCK_PREFIX && c.to_string() == s).map(Block)
    }

    /// The whole block.
    pub fn cidr(self) -> Cidr {
        self.0
    }

    /// The inner default bridge, `--bip` (its gateway address with the prefix).
    pub fn bip(self) -> String {
        format!("{}/{POOL_NETWORK_PREFIX}", Ipv4Addr::from(self.0.base + 1))
    }

    /// The inner engine's network pool, `base=…/21,size=24`.
    pub fn pool(self) -> String {
        let upper = Cidr { base: self.0.base + (1 << (32 - BLOCK_PREFIX - 1)), prefix: BLOCK_PREFIX + 1 };
        format!("base={upper},size={POOL_NETWORK_PREFIX}")
    }

    /// dockerd's arguments for this block.
    pub fn dockerd_args(self) -> [String; 2] {
        [format!("--bip={}", self.bip()), format!("--default-address-pool={}", self.pool())]
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether dockerd options choose inner addresses themselves (see [`ADDRESS_OPTIONS`]).
pub fn chooses_addresses(dockerd_opts: &[String]) -> bool {
    dockerd_opts.iter().any(|o| ADDRESS_OPTIONS.iter().any(|a| o == a || o.starts_with(&format!("{a}="))))
}

/// The blocks of `range` free of `taken` (other environments' blocks and the host engine's
/// networks, any overlap counts), in address order.
pub fn free_blocks(range: AddressRange, taken: &[Cidr]) -> Vec<Block> {
    range.blocks().filter(|b| !taken.iter().any(|t| t.overlaps(b.0))).collect()
}

/// An index below `len`, spread by `seed` (an environment's random id) and `attempt`.
pub fn pick(seed: &str, attempt: usize, len: usize) -> usize {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(format!("{seed}/{attempt}").as_bytes());
    (u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % len.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_only_as_aligned_ipv4_networks_of_a_block_or_more() {
        assert_eq!(AddressRange::parse("10.200.0.0/13").unwrap().to_string(), "10.200.0.0/13");
        assert_eq!(AddressRange::parse("10.250.0.0/20").unwrap().blocks().count(), 1);
        assert_eq!(AddressRange::default_range().blocks().count(), 128);
        for (bad, says) in [
            ("10.200.0.0/21", "smaller than"),
            ("10.200.0.1/13", "host bits"),
            ("10.200.0.0", "not an IPv4"),
            ("fd00::/8", "not an IPv4"),
            ("10.200.0.0/33", "not an IPv4"),
            ("ten/8", "not an IPv4"),
        ] {
            let e = AddressRange::parse(bad).unwrap_err();
            assert!(e.is_usage() && e.to_string().contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_block_splits_into_bridge_and_pool_without_overlap() {
        let b = Block::parse("10.200.16.0/20").unwrap();
        assert_eq!(b.dockerd_args(), ["--bip=10.200.16.1/24".to_string(), "--default-address-pool=base=10.200.24.0/21,size=24".to_string()]);
        let bridge = Cidr::parse("10.200.16.0/24").unwrap();
        let pool = Cidr::parse("10.200.24.0/21").unwrap();
        assert!(!bridge.overlaps(pool) && b.cidr().overlaps(bridge) && b.cidr().overlaps(pool));
        assert!(Block::parse("10.200.16.0/24").is_none() && Block::parse("10.200.16.1/20").is_none());
    }

    #[test]
    fn overlap_is_symmetric_and_counts_containment() {
        let c = |s| Cidr::parse(s).unwrap();
        assert!(c("10.0.0.0/8").overlaps(c("10.200.16.0/20")));
        assert!(c("10.200.16.0/20").overlaps(c("10.0.0.0/8")));
        assert!(!c("10.200.16.0/20").overlaps(c("10.200.32.0/20")));
        assert!(c("0.0.0.0/0").overlaps(c("192.168.1.0/24")));
    }

    #[test]
    fn free_blocks_skip_what_others_hold_and_host_networks() {
        let range = AddressRange::parse("10.200.0.0/18").unwrap(); // 4 blocks
        let taken = [Cidr::parse("10.200.0.0/20").unwrap(), Cidr::parse("10.200.40.7/24").unwrap()];
        let free: Vec<String> = free_blocks(range, &taken).iter().map(ToString::to_string).collect();
        assert_eq!(free, ["10.200.16.0/20", "10.200.48.0/20"]);
        assert!(free_blocks(range, &[Cidr::parse("10.0.0.0/8").unwrap()]).is_empty());
    }

    #[test]
    fn address_options_in_dkropts_turn_the_claim_off() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(chooses_addresses(&o(&["--debug", "--bip=10.1.0.1/24"])));
        assert!(chooses_addresses(&o(&["--default-address-pool", "base=10.9.0.0/16,size=24"])));
        assert!(!chooses_addresses(&o(&["--debug", "--bipx=1"])));
    }

    #[test]
    fn picks_stay_in_bounds() {
        assert!((0..50).all(|i| pick(&format!("id{i}"), i, 7) < 7));
        assert_eq!(pick("x", 0, 0), 0);
    }
}
