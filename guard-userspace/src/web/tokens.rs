//! Web access tokens: a root-only file of `user:token` lines. Tokens are
//! kept only as SHA-256 digests and compared as such, so the comparison
//! leaks nothing useful about a token through its timing.
use std::path::Path;

use anyhow::{Result, bail};
use sha2::{Digest as _, Sha256};

use crate::rootfile;

/// Shortest token accepted: guessing must be hopeless.
const MIN_TOKEN_LEN: usize = 16;

pub struct Tokens {
    users: Vec<(String, [u8; 32])>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn load(path: &Path) -> Result<Self> {
        let text = rootfile::read(path)?;
        Self::parse(&path.display().to_string(), &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let mut users: Vec<(String, [u8; 32])> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, token)) = line.split_once(':') else {
                bail!("{file}:{}: expected `user:token`", n + 1);
            };
            let (user, token) = (user.trim(), token.trim());
            if user.is_empty()
                || !user
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._@-+".contains(&b))
            {
                bail!(
                    "{file}:{}: user {user:?} must be non-empty, from A-Z a-z 0-9 . _ @ - +",
                    n + 1
                );
            }
            if token.len() < MIN_TOKEN_LEN {
                bail!(
                    "{file}:{}: the token of {user} is shorter than {MIN_TOKEN_LEN} characters \
                     (make one with: head -c 32 /dev/urandom | base64)",
                    n + 1
                );
            }
            let d = digest(token);
            if users.iter().any(|(_, other)| *other == d) {
                bail!("{file}:{}: the token of {user} is used twice", n + 1);
            }
            users.push((user.to_owned(), d));
        }
        if users.is_empty() {
            bail!("{file} has no `user:token` line");
        }
        Ok(Self { users })
    }

    /// The user a presented token belongs to.
    pub fn user(&self, token: &str) -> Option<&str> {
        let d = digest(token);
        self.users
            .iter()
            .find(|(_, known)| *known == d)
            .map(|(u, _)| u.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_by_token() {
        let t = Tokens::parse(
            "t",
            "# on-call\nalice: aaaaaaaaaaaaaaaaaaaa\nbob:bbbbbbbbbbbbbbbbbbbb\n",
        )
        .expect("parses");
        assert_eq!(t.user("aaaaaaaaaaaaaaaaaaaa"), Some("alice"));
        assert_eq!(t.user("bbbbbbbbbbbbbbbbbbbb"), Some("bob"));
        assert_eq!(t.user("cccccccccccccccccccc"), None);
        assert_eq!(t.user(""), None);
    }

    #[test]
    fn bad_files() {
        for (text, needle) in [
            ("", "no `user:token`"),
            ("alice\n", "t:1: expected `user:token`"),
            ("alice:short\n", "shorter than"),
            (" :aaaaaaaaaaaaaaaaaaaa\n", "must be non-empty"),
            (
                "a:aaaaaaaaaaaaaaaaaaaa\nb:aaaaaaaaaaaaaaaaaaaa\n",
                "t:2: the token of b is used twice",
            ),
        ] {
            let err = Tokens::parse("t", text)
                .err()
                .expect("rejected")
                .to_string();
            assert!(err.contains(needle), "{err:?} lacks {needle:?}");
        }
    }
}
