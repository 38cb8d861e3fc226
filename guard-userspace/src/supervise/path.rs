//! Splitting the path an agent passed into "parent to open" and "entry to
//! delete", and the errnos the kernel gives for entries that are not names.
use super::Op;

/// Longest single component (NAME_MAX).
pub(super) const NAME_MAX: usize = 255;

/// The final component of a path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Last<'a> {
    Name(&'a [u8]),
    Dot,
    DotDot,
    /// The path is only slashes.
    Root,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) struct Split<'a> {
    /// Everything before the final component; empty means "the base
    /// directory itself" (cwd or dirfd).
    pub parent: &'a [u8],
    pub last: Last<'a>,
    /// The path ended in `/` (after the final component).
    pub trailing_slash: bool,
}

/// Splits a non-empty path; `None` for the empty path (ENOENT).
pub(super) fn split(raw: &[u8]) -> Option<Split<'_>> {
    if raw.is_empty() {
        return None;
    }
    let end = raw.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    if end == 0 {
        return Some(Split {
            parent: b"/",
            last: Last::Root,
            trailing_slash: false,
        });
    }
    let trimmed = &raw[..end];
    let (parent, name) = match trimmed.iter().rposition(|&b| b == b'/') {
        // Keep the slash so that "/x" has parent "/" rather than "".
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => (&trimmed[..0], trimmed),
    };
    let last = match name {
        b"." => Last::Dot,
        b".." => Last::DotDot,
        _ => Last::Name(name),
    };
    Some(Split {
        parent,
        last,
        trailing_slash: end < raw.len(),
    })
}

/// The final component to act on, or the errno the kernel returns after it
/// resolved the parent (`do_unlinkat`/`do_rmdir` on a non-normal last
/// component, or a name the filesystem rejects).
pub(super) fn final_name<'a>(last: &Last<'a>, op: Op) -> Result<&'a [u8], i32> {
    match (last, op) {
        (Last::Name(name), _) if name.len() > NAME_MAX => Err(libc::ENAMETOOLONG),
        (Last::Name(name), _) => Ok(name),
        (Last::Dot, Op::Rmdir) => Err(libc::EINVAL),
        (Last::DotDot, Op::Rmdir) => Err(libc::ENOTEMPTY),
        (Last::Root, Op::Rmdir) => Err(libc::EBUSY),
        // unlink of ".", ".." or "/".
        _ => Err(libc::EISDIR),
    }
}

/// rename's and link's answer for a final component that is not a name
/// ("." "..", "/"): `errno`, which do_renameat2 makes EBUSY (EEXIST for a
/// destination with RENAME_NOREPLACE) and do_linkat EEXIST.
pub(super) fn rename_name(last: &Last<'_>, busy: i32) -> Result<(), i32> {
    match last {
        Last::Name(_) => Ok(()),
        _ => Err(busy),
    }
}

/// `dir` (absolute, no trailing slash unless it is "/") joined with `name`.
pub(super) fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(dir.len() + 1 + name.len());
    out.extend_from_slice(dir);
    if !dir.ends_with(b"/") {
        out.push(b'/');
    }
    out.extend_from_slice(name);
    out
}

/// For `unlink("x/")`: the kernel never deletes, it reports what `x` is.
pub(super) fn unlink_with_trailing_slash(is_dir: bool) -> i32 {
    if is_dir { libc::EISDIR } else { libc::ENOTDIR }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(raw: &str) -> (String, String, bool) {
        let split = split(raw.as_bytes()).expect("non-empty");
        let last = match split.last {
            Last::Name(n) => String::from_utf8_lossy(n).into_owned(),
            Last::Dot => "<.>".into(),
            Last::DotDot => "<..>".into(),
            Last::Root => "<root>".into(),
        };
        (
            String::from_utf8_lossy(split.parent).into_owned(),
            last,
            split.trailing_slash,
        )
    }

    #[test]
    fn splits_parent_and_last() {
        let t = |p: &str, l: &str, slash| (p.to_owned(), l.to_owned(), slash);
        assert_eq!(s("file"), t("", "file", false));
        assert_eq!(s("/file"), t("/", "file", false));
        assert_eq!(s("a/b/c"), t("a/b/", "c", false));
        assert_eq!(s("a//b//"), t("a//", "b", true));
        assert_eq!(s("dir/."), t("dir/", "<.>", false));
        assert_eq!(s(".."), t("", "<..>", false));
        assert_eq!(s("a/../b"), t("a/../", "b", false));
        assert_eq!(s("///"), t("/", "<root>", false));
        assert!(split(b"").is_none());
    }

    #[test]
    fn errnos_for_special_names() {
        use Op::*;
        assert_eq!(final_name(&Last::Dot, Unlink), Err(libc::EISDIR));
        assert_eq!(final_name(&Last::Dot, Rmdir), Err(libc::EINVAL));
        assert_eq!(final_name(&Last::DotDot, Rmdir), Err(libc::ENOTEMPTY));
        assert_eq!(final_name(&Last::Root, Rmdir), Err(libc::EBUSY));
        assert_eq!(final_name(&Last::Root, Unlink), Err(libc::EISDIR));
        let long = [b'x'; 256];
        assert_eq!(
            final_name(&Last::Name(&long), Unlink),
            Err(libc::ENAMETOOLONG)
        );
        assert_eq!(
            final_name(&Last::Name(&long[..255]), Unlink),
            Ok(&long[..255])
        );
    }

    #[test]
    fn joins() {
        assert_eq!(join(b"/", b"x"), b"/x");
        assert_eq!(join(b"/a/b", b"x"), b"/a/b/x");
    }
}
