//! Connect rules: the entry grammar and the userspace matcher.
//!
//! Grammar: `ADDR[/PREFIX]:PORTS` (IPv4), `[ADDR[/PREFIX]]:PORTS` (IPv6,
//! brackets mandatory), `unix:/ABSOLUTE/PATH` (a path prefix). PORTS is `*`,
//! `N` or `LO-HI` with ports in 1..=65535. All addresses live in IPv6 space;
//! IPv4 is stored IPv4-mapped (::ffff:a.b.c.d, prefix 96 + N) exactly as the
//! kernel trie stores it.

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use guard_common::{V4_MAPPED_PREFIX_BITS, Verdict};

use super::{NetPolicy, NetRule, NetTarget, path};

/// [`V4_MAPPED_PREFIX_BITS`] as a prefix length.
const MAPPED_BITS: u8 = 96;
const _: () = assert!(MAPPED_BITS as u32 == V4_MAPPED_PREFIX_BITS);

/// Sort key giving precedence order: longest prefix, narrowest port range,
/// most severe verdict; the id only makes the order total and deterministic.
pub(super) type Rank = (Reverse<u8>, u16, Reverse<Verdict>, u32);

/// A connect rule known to be an IP rule, with its target's fields.
pub(super) struct IpRule<'a> {
    pub rule: &'a NetRule,
    pub addr: Ipv6Addr,
    pub prefix: u8,
    pub lo: u16,
    pub hi: u16,
}

impl IpRule<'_> {
    pub fn rank(&self) -> Rank {
        (
            Reverse(self.prefix),
            self.hi - self.lo,
            Reverse(self.rule.verdict),
            self.rule.id,
        )
    }
}

impl NetRule {
    /// The rule's IP fields, `None` for a unix rule.
    pub(super) fn ip(&self) -> Option<IpRule<'_>> {
        match self.target {
            NetTarget::Ip {
                addr,
                prefix,
                lo,
                hi,
                ..
            } => Some(IpRule {
                rule: self,
                addr,
                prefix,
                lo,
                hi,
            }),
            NetTarget::Unix { .. } => None,
        }
    }
}

impl NetPolicy {
    /// The verdict for a connect to `addr:port` and the rule that gave it
    /// (`None`: the default applied). IPv4 is matched as ::ffff:a.b.c.d, so
    /// an IPv4-mapped IPv6 address matches the IPv4 rules.
    pub fn evaluate(&self, addr: IpAddr, port: u16) -> (Verdict, Option<&NetRule>) {
        let a = to_v6(addr);
        let best = self
            .rules
            .iter()
            .filter_map(NetRule::ip)
            .filter(|r| covers(r.addr, r.prefix, a) && (r.lo..=r.hi).contains(&port))
            .min_by_key(IpRule::rank);
        match best {
            Some(r) => (r.rule.verdict, Some(r.rule)),
            None => (self.default, None),
        }
    }

    /// The verdict for a connect or datagram to a unix socket at `path`: an
    /// absolute filesystem path, or `@name` for an abstract socket.
    pub fn evaluate_unix(&self, path: &str) -> (Verdict, Option<&NetRule>) {
        let rules = self.rules.iter().filter_map(|r| match &r.target {
            NetTarget::Unix { path } => Some((path.as_str(), r.verdict, r.id, r)),
            NetTarget::Ip { .. } => None,
        });
        match path::best_prefix_match(path, rules) {
            Some(r) => (r.verdict, Some(r)),
            None => (self.default, None),
        }
    }
}

/// Checks an abstract socket name (after the '@'): matched by whole '/'
/// components, literally, so empty components could never match.
fn abstract_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty abstract socket name after \"unix:@\"".to_owned());
    }
    if name.contains('\0') {
        return Err(format!("abstract socket name {name:?} contains a NUL byte"));
    }
    if name.len() > ABSTRACT_MAX {
        return Err(format!(
            "abstract socket name is {} bytes long; the most is {ABSTRACT_MAX}",
            name.len()
        ));
    }
    if name.split('/').skip(1).any(str::is_empty) {
        return Err(format!(
            "abstract socket name {name:?} has an empty '/' component (doubled or trailing '/')"
        ));
    }
    Ok(())
}

/// The address as the kernel trie sees it.
pub(super) fn to_v6(addr: IpAddr) -> Ipv6Addr {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// `addr` with every bit past `prefix` cleared.
pub(super) fn mask(addr: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    match prefix {
        0 => Ipv6Addr::UNSPECIFIED,
        p if p >= 128 => addr,
        p => Ipv6Addr::from(bits & (u128::MAX << (128 - u32::from(p)))),
    }
}

/// Whether the network `net/prefix` (host bits already zero) holds `a`.
pub(super) fn covers(net: Ipv6Addr, prefix: u8, a: Ipv6Addr) -> bool {
    mask(a, prefix) == net
}

/// A prefix in the spelling a user would write it, for messages.
pub(super) fn prefix_display(addr: Ipv6Addr, prefix: u8) -> String {
    match addr.to_ipv4_mapped() {
        Some(v4) if prefix >= MAPPED_BITS => format!("{v4}/{}", prefix - MAPPED_BITS),
        _ => format!("[{addr}/{prefix}]"),
    }
}

const GRAMMAR: &str =
    "expected ADDR[/PREFIX]:PORTS, [IPV6ADDR[/PREFIX]]:PORTS, unix:/PATH or unix:@NAME";

/// Longest abstract socket name (sun_path less its leading NUL).
const ABSTRACT_MAX: usize = 107;

/// Parses one connect entry; the error is a message without a location.
pub(super) fn parse_target(text: &str) -> Result<NetTarget, String> {
    if let Some(p) = text.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("empty unix socket path after \"unix:\"".to_owned());
        }
        if let Some(name) = p.strip_prefix('@') {
            return abstract_name(name).map(|()| NetTarget::Unix { path: p.to_owned() });
        }
        let path = path::normalize_abs(p).map_err(|e| format!("unix socket {e}"))?;
        return Ok(NetTarget::Unix { path });
    }
    if let Some(rest) = text.strip_prefix('[') {
        return parse_v6(text, rest);
    }
    match text.matches(':').count() {
        1 => parse_v4(text),
        0 => {
            let (addr, _) = split_prefix(text);
            if addr.parse::<Ipv4Addr>().is_ok() {
                Err(format!(
                    "missing port in {text:?}; write \"{text}:*\" for any port"
                ))
            } else {
                Err(format!("cannot parse {text:?}: {GRAMMAR}"))
            }
        }
        _ => Err(format!(
            "IPv6 addresses must be in brackets, e.g. \"[2001:db8::/32]:443\" (got {text:?})"
        )),
    }
}

fn parse_v4(text: &str) -> Result<NetTarget, String> {
    let (net, ports) = text.split_once(':').unwrap_or((text, ""));
    let (addr_s, prefix_s) = split_prefix(net);
    let addr: Ipv4Addr = addr_s
        .parse()
        .map_err(|_| format!("invalid IPv4 address {addr_s:?} in {text:?}"))?;
    let prefix = parse_prefix(prefix_s, 32, text)?;
    let (lo, hi) = parse_ports(ports)?;
    let mapped = addr.to_ipv6_mapped();
    let v6_prefix = MAPPED_BITS + prefix;
    let masked = mask(mapped, v6_prefix);
    if masked != mapped {
        let fixed = masked.to_ipv4_mapped().unwrap_or(addr);
        return Err(format!(
            "host bits set in {net}; did you mean {fixed}/{prefix}?"
        ));
    }
    Ok(NetTarget::Ip {
        addr: masked,
        prefix: v6_prefix,
        lo,
        hi,
        v4: true,
    })
}

/// `rest` is the entry after its '['.
fn parse_v6(text: &str, rest: &str) -> Result<NetTarget, String> {
    let Some((net, after)) = rest.split_once(']') else {
        return Err(format!(
            "missing ']' in {text:?}; IPv6 entries look like \"[2001:db8::/32]:443\""
        ));
    };
    let Some(ports) = after.strip_prefix(':') else {
        return Err(format!(
            "missing \":PORTS\" after ']' in {text:?}; write \"[{net}]:*\" for any port"
        ));
    };
    let (addr_s, prefix_s) = split_prefix(net);
    if addr_s.parse::<Ipv4Addr>().is_ok() {
        return Err(format!(
            "IPv4 addresses are written without brackets: \"{net}:{ports}\""
        ));
    }
    let addr: Ipv6Addr = addr_s
        .parse()
        .map_err(|_| format!("invalid IPv6 address {addr_s:?} in {text:?}"))?;
    let prefix = parse_prefix(prefix_s, 128, text)?;
    let (lo, hi) = parse_ports(ports)?;
    let masked = mask(addr, prefix);
    if masked != addr {
        return Err(format!(
            "host bits set in {net}; did you mean [{masked}/{prefix}]?"
        ));
    }
    Ok(NetTarget::Ip {
        addr: masked,
        prefix,
        lo,
        hi,
        v4: false,
    })
}

fn split_prefix(net: &str) -> (&str, Option<&str>) {
    match net.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (net, None),
    }
}

/// No prefix means a single host (`max`).
fn parse_prefix(s: Option<&str>, max: u8, text: &str) -> Result<u8, String> {
    let Some(s) = s else { return Ok(max) };
    if s.is_empty() {
        return Err(format!("missing prefix length after '/' in {text:?}"));
    }
    match s.parse::<u8>() {
        Ok(p) if s.bytes().all(|b| b.is_ascii_digit()) && p <= max => Ok(p),
        _ => Err(format!(
            "invalid prefix length {s:?} in {text:?} (must be 0-{max})"
        )),
    }
}

/// `*`, `N` or `LO-HI`.
fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    match s {
        "" => Err("missing port after ':'; write \"*\" for any port".to_owned()),
        "*" => Ok((0, u16::MAX)),
        _ => match s.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (parse_port(lo)?, parse_port(hi)?);
                if lo > hi {
                    return Err(format!(
                        "port range {lo}-{hi} is upside down; did you mean {hi}-{lo}?"
                    ));
                }
                Ok((lo, hi))
            }
            None => parse_port(s).map(|p| (p, p)),
        },
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("invalid port {s:?} (expected 1-65535, LO-HI or *)"));
    }
    match s.parse::<u16>() {
        Ok(0) => Err(
            "port 0 is not a valid connect target (ports are 1-65535; use * for any port)"
                .to_owned(),
        ),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("port {s} is out of range (1-65535)")),
    }
}
