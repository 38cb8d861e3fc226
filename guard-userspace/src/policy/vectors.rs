//! Expected results for the policy in `vectors.toml`.
//!
//! Self-contained (only `guard_common` and this directory), so the privileged
//! kernel tests can `#[path]`-include this file and run the same rows through
//! the real programs.

use guard_common::Verdict::{self, Allow, Ask, Deny};

/// The policy the vectors are written against.
pub const POLICY: &str = include_str!("vectors.toml");
/// The file name to parse [`POLICY`] under.
pub const POLICY_FILE: &str = "vectors.toml";

/// A connect to `addr:port` by `agent`.
#[derive(Clone, Copy, Debug)]
pub struct NetVector {
    pub agent: &'static str,
    /// Parses as `std::net::IpAddr`.
    pub addr: &'static str,
    pub port: u16,
    pub verdict: Verdict,
    /// The deciding entry as written, `None` when the default applied.
    pub rule: Option<&'static str>,
}

/// A connect to a unix socket, or a delete, of `path` by `agent`.
#[derive(Clone, Copy, Debug)]
pub struct PathVector {
    pub agent: &'static str,
    pub path: &'static str,
    pub verdict: Verdict,
    /// The deciding entry as written, `None` when the default applied.
    pub rule: Option<&'static str>,
}

const fn net(
    agent: &'static str,
    addr: &'static str,
    port: u16,
    verdict: Verdict,
    rule: Option<&'static str>,
) -> NetVector {
    NetVector {
        agent,
        addr,
        port,
        verdict,
        rule,
    }
}

const fn path(
    agent: &'static str,
    path: &'static str,
    verdict: Verdict,
    rule: Option<&'static str>,
) -> PathVector {
    PathVector {
        agent,
        path,
        verdict,
        rule,
    }
}

// One row per line reads as a table.
#[rustfmt::skip]
pub const NET_VECTORS: &[NetVector] = &[
    // The /16 deny wins for 10.1/16 even on the port the /8 allows.
    net("v-nested", "10.1.2.3", 443, Deny, Some("10.1.0.0/16:*")),
    net("v-nested", "10.2.3.4", 443, Allow, Some("10.0.0.0/8:443")),
    net("v-nested", "10.2.3.4", 80, Ask, None),
    net("v-nested", "11.0.0.1", 443, Ask, None),
    net("v-nested", "::ffff:10.2.3.4", 443, Allow, Some("10.0.0.0/8:443")),
    net("v-nested", "::ffff:10.1.2.3", 443, Deny, Some("10.1.0.0/16:*")),
    net("v-nested", "2001:db8::1", 443, Ask, None),
    // /24 -> /16 -> /8 -> default.
    net("v-fallback", "10.1.2.3", 400, Ask, Some("10.1.2.0/24:400")),
    net("v-fallback", "10.1.2.3", 300, Deny, Some("10.1.0.0/16:300")),
    net("v-fallback", "10.1.2.3", 150, Allow, Some("10.0.0.0/8:100-200")),
    net("v-fallback", "10.1.2.3", 500, Allow, None),
    net("v-fallback", "10.1.9.9", 400, Allow, None),
    net("v-fallback", "10.1.9.9", 300, Deny, Some("10.1.0.0/16:300")),
    net("v-fallback", "10.9.9.9", 300, Allow, None),
    net("v-fallback", "10.9.9.9", 100, Allow, Some("10.0.0.0/8:100-200")),
    net("v-fallback", "10.9.9.9", 200, Allow, Some("10.0.0.0/8:100-200")),
    net("v-fallback", "10.9.9.9", 201, Allow, None),
    // One prefix, three widths.
    net("v-width", "192.168.1.1", 443, Allow, Some("192.168.0.0/16:443")),
    net("v-width", "192.168.1.1", 80, Deny, Some("192.168.0.0/16:1-1024")),
    net("v-width", "192.168.1.1", 1024, Deny, Some("192.168.0.0/16:1-1024")),
    net("v-width", "192.168.1.1", 1025, Ask, Some("192.168.0.0/16:*")),
    net("v-width", "192.169.0.1", 443, Deny, None),
    // Exact ties.
    net("v-tie", "192.0.2.7", 443, Deny, Some("192.0.2.0/24:443")),
    net("v-tie", "192.0.2.7", 80, Ask, Some("192.0.2.0/24:80")),
    net("v-tie", "192.0.2.7", 22, Allow, None),
    net("v-tie", "203.0.113.1", 8443, Deny, Some("[::ffff:0.0.0.0/96]:8443")),
    net("v-tie", "::ffff:203.0.113.1", 8443, Deny, Some("[::ffff:0.0.0.0/96]:8443")),
    net("v-tie", "2001:db8::1", 8443, Allow, None),
    // /0 in each family; an IPv4 /0 is ::ffff:0:0/96, longer than ::/0.
    net("v-zero", "8.8.8.8", 53, Ask, Some("0.0.0.0/0:*")),
    net("v-zero", "::ffff:8.8.8.8", 53, Ask, Some("0.0.0.0/0:*")),
    net("v-zero", "2001:4860:4860::8888", 53, Deny, Some("[::/0]:*")),
    net("v-zero", "::1", 22, Allow, Some("[::1]:*")),
    net("v-zero", "127.0.0.1", 22, Allow, Some("127.0.0.1:*")),
    net("v-zero", "0.0.0.0", 1, Ask, Some("0.0.0.0/0:*")),
    net("v-zero", "255.255.255.255", 65535, Ask, Some("0.0.0.0/0:*")),
    // IPv6.
    net("v-six", "2001:db8::5", 443, Allow, Some("[2001:db8::/32]:443")),
    net("v-six", "2001:db8:1::5", 443, Deny, Some("[2001:db8:1::/48]:*")),
    net("v-six", "2001:db8::1", 80, Ask, Some("[2001:db8::1]:80")),
    net("v-six", "2001:db8::1", 443, Allow, Some("[2001:db8::/32]:443")),
    net("v-six", "2001:db8::2", 80, Deny, None),
    net("v-six", "2001:db9::1", 443, Deny, None),
    net("v-six", "10.0.0.1", 443, Deny, None),
    // IPv4-mapped both ways.
    net("v-mapped", "::ffff:10.1.1.1", 443, Allow, Some("10.0.0.0/8:443")),
    net("v-mapped", "10.1.1.1", 443, Allow, Some("10.0.0.0/8:443")),
    net("v-mapped", "172.16.5.5", 80, Deny, Some("[::ffff:172.16.0.0/108]:*")),
    net("v-mapped", "::ffff:172.31.0.1", 80, Deny, Some("[::ffff:172.16.0.0/108]:*")),
    net("v-mapped", "172.32.0.1", 80, Ask, None),
    net("v-mapped", "10.1.1.1", 80, Ask, None),
    net("v-mapped", "10.1.1.1", 443, Allow, Some("10.0.0.0/8:443")),
    // Hosts.
    net("v-hosts", "127.0.0.1", 8080, Allow, Some("127.0.0.1:8080")),
    net("v-hosts", "127.0.0.1", 8081, Deny, Some("127.0.0.0/8:*")),
    net("v-hosts", "127.0.0.2", 8080, Deny, Some("127.0.0.0/8:*")),
    net("v-hosts", "::1", 8080, Allow, Some("[::1]:8080")),
    net("v-hosts", "::1", 22, Deny, Some("[::1]:1-1024")),
    net("v-hosts", "::1", 8081, Allow, None),
    net("v-hosts", "::2", 22, Allow, None),
    // No IP rules: another agent's trie entries must not leak in.
    net("v-unix", "10.1.2.3", 443, Ask, None),
    net("v-unix", "::1", 22, Ask, None),
];

// One row per line reads as a table.
#[rustfmt::skip]
pub const UNIX_VECTORS: &[PathVector] = &[
    path("v-unix", "/run/postgresql/.s.PGSQL.5432", Allow, Some("unix:/run/postgresql/")),
    path("v-unix", "/run/postgresql/admin.sock", Deny, Some("unix:/run/postgresql/admin.sock")),
    path("v-unix", "/run/postgresql2/x.sock", Deny, Some("unix:/")),
    path("v-unix", "/tmp/x.sock", Deny, Some("unix:/")),
    // Abstract names match only unix:@ rules, by whole '/' components.
    path("v-unix", "@abstract", Ask, None),
    path("v-unix", "@dbus-guard", Deny, Some("unix:@dbus-guard")),
    path("v-unix", "@dbus-guard/x", Deny, Some("unix:@dbus-guard")),
    path("v-unix", "@dbus-guardian", Ask, None),
    // An agent without unix rules.
    path("v-nested", "/run/postgresql/.s.PGSQL.5432", Ask, None),
];

/// Moving a directory (a rename's source): the stricter of its own rule
/// and the strictest rule below it (ties: its own, then the lowest id).
#[rustfmt::skip]
pub const SUBTREE_VECTORS: &[PathVector] = &[
    path("v-paths", "/", Deny, Some("/etc")),
    path("v-paths", "/srv", Deny, Some("/srv")),
    path("v-paths", "/srv/scratch", Allow, Some("/srv/scratch/")),
    path("v-paths", "/srv/data", Ask, Some("/srv/data")),
    path("v-paths", "/tmp", Allow, Some("/tmp")),
    path("v-root", "/", Deny, Some("/")),
    path("v-root", "/tmp", Allow, Some("/tmp")),
    path("v-root", "/y", Deny, Some("/")),
];

// One row per line reads as a table.
#[rustfmt::skip]
pub const PATH_VECTORS: &[PathVector] = &[
    path("v-paths", "/srv/data/x", Ask, Some("/srv/data")),
    path("v-paths", "/srv/data", Ask, Some("/srv/data")),
    path("v-paths", "/srv/database", Deny, Some("/srv")),
    path("v-paths", "/srv", Deny, Some("/srv")),
    path("v-paths", "/srv/scratch/a/b", Allow, Some("/srv/scratch/")),
    path("v-paths", "/srv/scratchpad", Deny, Some("/srv")),
    path("v-paths", "/etc", Deny, Some("/etc")),
    path("v-paths", "/etc/passwd", Deny, Some("/etc")),
    path("v-paths", "/etcetera", Ask, None),
    path("v-paths", "/tmp//x", Allow, Some("/tmp")),
    path("v-paths", "/tmp/../etc/shadow", Deny, Some("/etc")),
    path("v-paths", "/", Ask, None),
    path("v-paths", "tmp/x", Ask, None),
    path("v-root", "/anything", Deny, Some("/")),
    path("v-root", "/", Deny, Some("/")),
    path("v-root", "/tmp/a", Allow, Some("/tmp")),
    path("v-root", "/x", Deny, Some("/x")),
    path("v-root", "/x/y", Deny, Some("/x")),
    path("v-root", "/xy", Deny, Some("/")),
    // An agent without delete rules: the table default ("deny").
    path("v-nested", "/tmp/x", Deny, None),
];
