//! Agent expiry: when an agent's `expires` has passed, and what `policy
//! check` warns about ahead of it.
use std::time::{Duration, SystemTime};

use super::{Agent, Policy};

/// `policy check` warns this long before an agent expires.
pub const WARN_AHEAD: Duration = Duration::from_secs(7 * 24 * 3600);

impl Agent {
    /// Whether the agent's `expires` is at or before `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|at| at <= now)
    }

    /// `expires` as RFC 3339 in UTC, for messages and listings.
    pub fn expires_text(&self) -> Option<String> {
        self.expires.map(rfc3339)
    }
}

pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// One line per agent that has expired or expires within [`WARN_AHEAD`]
/// of `now`, as `FILE:LINE: warning: ...`.
pub fn warnings(policy: &Policy, now: SystemTime) -> Vec<String> {
    policy
        .agents
        .iter()
        .filter_map(|a| {
            let at = a.expires?;
            let when = rfc3339(at);
            let text = match at.duration_since(now) {
                Err(_) | Ok(Duration::ZERO) => format!(
                    "agent {:?} expired at {when}: it can start no run, and a daemon freezes it",
                    a.name
                ),
                Ok(left) if left <= WARN_AHEAD => format!(
                    "agent {:?} expires at {when}, in {}: extend or remove `expires` to keep it",
                    a.name,
                    humantime::format_duration(Duration::from_secs(left.as_secs()))
                ),
                Ok(_) => return None,
            };
            Some(format!("{}:{}: warning: {text}", policy.file, a.line))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(expires: &[&str]) -> Policy {
        let mut text = String::new();
        for (i, e) in expires.iter().enumerate() {
            text.push_str(&format!(
                "[[agent]]\nname = \"a{i}\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"t/a{i}\"\n\
                 expires = \"{e}\"\n\n"
            ));
        }
        super::super::parse("p.toml", &text).expect("valid policy")
    }

    #[test]
    fn expired_soon_and_later() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let p = policy(&[
            "2027-01-15T08:00:00Z",      // 1_800_000_000 is 2027-01-15T08:00:00Z
            "2027-01-20T08:00:00+00:00", // 5 days ahead
            "2027-01-25T10:00:00+02:00", // 10 days ahead
        ]);
        assert!(p.agents[0].expired(now));
        assert!(!p.agents[1].expired(now));
        let w = warnings(&p, now);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("p.toml:1: warning: agent \"a0\" expired at 2027-01-15T08:00:00Z"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with(
                "p.toml:8: warning: agent \"a1\" expires at 2027-01-20T08:00:00Z, in 5days"
            ),
            "{w:?}"
        );
        assert_eq!(
            p.agents[2].expires_text().as_deref(),
            Some("2027-01-25T08:00:00Z")
        );
    }

    #[test]
    fn a_bad_time_points_at_its_value() {
        let text = "[[agent]]\nname = \"a\"\nowner = \"o\"\npurpose = \"p\"\ncgroup = \"t/a\"\n\
                    expires = \"next tuesday\"\n";
        let err = super::super::parse("p.toml", text).expect_err("bad expires");
        assert_eq!((err.line(), err.col()), (Some(6), Some(11)), "{err}");
        assert!(err.message().contains("RFC 3339"), "{err}");
        let zoneless = text.replace("next tuesday", "2027-01-01T00:00:00");
        assert!(
            super::super::parse("p.toml", &zoneless).is_err(),
            "a time without zone is ambiguous"
        );
    }
}
