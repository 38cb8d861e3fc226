//! Path prefixes (delete rules and unix socket rules) and cgroup paths.
//!
//! Prefixes match whole components: "/srv/data" covers "/srv/data" and
//! "/srv/data/x" but not "/srv/database"; "/" covers every absolute path.

use std::cmp::Reverse;

use guard_common::{MAX_CGROUP_LEVEL, Verdict};

use super::{PathPolicy, PathRule};

impl PathPolicy {
    /// The verdict for deleting `path` and the rule that gave it (`None`: the
    /// default applied). `path` should be absolute, as the kernel reports it;
    /// '.' and '..' in it are resolved lexically, and a relative path matches
    /// no rule.
    pub fn evaluate(&self, path: &str) -> (Verdict, Option<&PathRule>) {
        let rules = self
            .rules
            .iter()
            .map(|r| (r.prefix.as_str(), r.verdict, r.id, r));
        match best_prefix_match(path, rules) {
            Some(r) => (r.verdict, Some(r)),
            None => (self.default, None),
        }
    }
}

impl PathPolicy {
    /// The verdict for moving `path` (a rename's source, or an exchanged
    /// destination) when it is a directory: everything below it moves
    /// too, so the strictest rule strictly below it counts when it is
    /// stricter than `path`'s own. Ties keep the own rule, then the lowest
    /// id, as the kernel's SUBTREE_RULES map does.
    pub fn evaluate_subtree(&self, path: &str) -> (Verdict, Option<&PathRule>) {
        let own = self.evaluate(path);
        let Some(dir) = resolve(path) else {
            return own;
        };
        let below = self
            .rules
            .iter()
            .filter(|r| r.verdict > Verdict::Allow)
            .filter(|r| {
                let c: Vec<&str> = r.prefix.split('/').filter(|c| !c.is_empty()).collect();
                c.len() > dir.len() && c[..dir.len()] == dir[..]
            })
            .min_by_key(|r| (Reverse(r.verdict), r.id));
        match below {
            Some(r) if r.verdict > own.0 => (r.verdict, Some(r)),
            _ => own,
        }
    }
}

/// Normalizes an absolute path prefix from the policy file; the error is a
/// message without a location.
pub(super) fn normalize_abs(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("path is empty".to_owned());
    }
    if text.contains('\0') {
        return Err(format!("path {text:?} contains a NUL byte"));
    }
    if !text.starts_with('/') {
        return Err(format!(
            "path {text:?} is not absolute (must start with '/')"
        ));
    }
    let mut out = String::with_capacity(text.len());
    for c in text.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(format!(
                "path {text:?} has a {c:?} component; write the path without it"
            ));
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    // The kernel matches on the first PATH_KEY_BYTES of "<path>/"; a longer
    // prefix could never match there.
    let limit = guard_common::PATH_KEY_BYTES - 1;
    if out.len() > limit {
        return Err(format!(
            "path prefix is {} bytes long; the kernel matches at most {limit}",
            out.len()
        ));
    }
    Ok(out)
}

/// Components of a path the kernel reported, with '.' and '..' resolved
/// lexically; `None` if it is not absolute. An abstract unix socket name
/// (`@name`) is split literally, as the kernel's key holds it.
fn resolve(path: &str) -> Option<Vec<&str>> {
    if path.starts_with('@') {
        return Some(path.split('/').collect());
    }
    if !path.starts_with('/') {
        return None;
    }
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    Some(out)
}

/// The most specific rule whose prefix covers `path`: most components, then
/// deny > ask > allow, then the lowest id.
pub(super) fn best_prefix_match<'r, T>(
    path: &str,
    rules: impl Iterator<Item = (&'r str, Verdict, u32, &'r T)>,
) -> Option<&'r T> {
    let target = resolve(path)?;
    // Abstract unix names ("@...") and paths never match each other.
    let abstract_name = path.starts_with('@');
    rules
        .filter(|(prefix, ..)| prefix.starts_with('@') == abstract_name)
        .filter_map(|(prefix, verdict, id, item)| {
            let mut depth = 0usize;
            for c in prefix.split('/').filter(|c| !c.is_empty()) {
                if target.get(depth) != Some(&c) {
                    return None;
                }
                depth += 1;
            }
            Some(((Reverse(depth), Reverse(verdict), id), item))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, item)| item)
}

/// Validates an agent's cgroup path (relative to the cgroup2 mount).
pub(super) fn validate_cgroup(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("cgroup path is empty".to_owned());
    }
    if text.contains('\0') {
        return Err(format!("cgroup path {text:?} contains a NUL byte"));
    }
    if let Some(rel) = text.strip_prefix('/') {
        return Err(format!(
            "cgroup path {text:?} must be relative to the cgroup2 mount; write {:?}",
            rel.trim_start_matches('/')
        ));
    }
    let mut depth = 0u32;
    for c in text.split('/') {
        match c {
            "" => {
                return Err(format!(
                    "cgroup path {text:?} has an empty component (doubled or trailing '/')"
                ));
            }
            "." | ".." => {
                return Err(format!("cgroup path {text:?} has a {c:?} component"));
            }
            _ => depth += 1,
        }
    }
    if depth > MAX_CGROUP_LEVEL {
        return Err(format!(
            "cgroup path {text:?} is {depth} levels deep; the most is {MAX_CGROUP_LEVEL}"
        ));
    }
    Ok(())
}

/// Whether two validated cgroup paths are equal or one contains the other,
/// compared by components ("a/b" and "a/bc" do not overlap).
pub(super) fn cgroups_overlap(a: &str, b: &str) -> bool {
    a.split('/').zip(b.split('/')).all(|(x, y)| x == y)
}
