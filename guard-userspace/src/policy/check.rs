//! Warnings about a valid policy that would not do what it says on this
//! machine: a rule that names a path through a symlink. The kernel judges
//! real paths (bpf_d_path, the supervisor's held directories), so such a
//! rule would never match; the warning names the real path to write.
use std::path::{Component, Path, PathBuf};

use super::{NetTarget, Policy};

/// One warning per rule that names a path below (or at) a symlink, as
/// `FILE:LINE: ...`. Paths that do not exist here are not warned about.
pub fn path_warnings(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    for agent in &policy.agents {
        let delete = agent
            .delete
            .rules
            .iter()
            .map(|r| (r.prefix.as_str(), r.text.as_str(), r.line, "delete"));
        let unix = agent.connect.rules.iter().filter_map(|r| match &r.target {
            NetTarget::Unix { path } if path.starts_with('/') => {
                Some((path.as_str(), r.text.as_str(), r.line, "unix"))
            }
            _ => None,
        });
        for (path, text, line, what) in delete.chain(unix) {
            if let Some((link, real)) = through_symlink(Path::new(path)) {
                let extra = if what == "unix" {
                    " (where unix rules are matched on the address the agent writes, \
                     without BPF LSM, list both spellings)"
                } else {
                    ""
                };
                out.push(format!(
                    "{}:{line}: agent {:?}: {what} rule {text:?} names a path through the \
                     symlink {}; the kernel judges real paths, so it would never match: \
                     write {:?}{extra}",
                    policy.file,
                    agent.name,
                    link.display(),
                    real.display().to_string(),
                ));
            }
        }
    }
    out
}

/// The first symlink on `path` (itself included), and the real path it
/// leads to (as far as it exists, then the rest as written).
fn through_symlink(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut prefix = PathBuf::from("/");
    let components: Vec<Component<'_>> = path.components().collect();
    for (i, c) in components.iter().enumerate() {
        let Component::Normal(name) = c else {
            continue;
        };
        prefix.push(name);
        let meta = std::fs::symlink_metadata(&prefix).ok()?;
        if meta.file_type().is_symlink() {
            let mut real = std::fs::canonicalize(&prefix).ok()?;
            for rest in &components[i + 1..] {
                real.push(rest);
            }
            return Some((prefix, real));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_symlink_and_the_real_path() {
        let dir = std::env::temp_dir().join(format!("agent-guard-check-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("real/vault")).expect("mkdir");
        std::os::unix::fs::symlink(dir.join("real"), dir.join("link")).expect("symlink");
        let dir = std::fs::canonicalize(&dir).expect("canonical");
        let text = format!(
            r#"
[[agent]]
name = "a"
owner = "o"
purpose = "p"
cgroup = "x/a"

[agent.delete]
deny = ["{d}/link/vault", "{d}/real/vault"]
"#,
            d = dir.display()
        );
        let policy = super::super::parse("p.toml", &text).expect("valid");
        let warnings = path_warnings(&policy);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let w = &warnings[0];
        assert!(w.starts_with("p.toml:9: agent \"a\": delete rule"), "{w}");
        assert!(
            w.contains(&format!("symlink {}/link", dir.display())),
            "{w}"
        );
        assert!(
            w.contains(&format!("write \"{}/real/vault\"", dir.display())),
            "{w}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
