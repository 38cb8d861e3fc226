//! Debian kernels for the QEMU tier: which package a `--kernel` argument
//! means, fetching it into a cache (never installing it on the host), and
//! what its configuration has built in.
use std::{
    cmp::Ordering,
    collections::{HashMap, HashSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{build, setup};

/// Debian's "cloud" flavour: a third of the generic image's size, and
/// virtio-fs is built in on 6.12. Both lines have BPF_LSM=y and BTF.
const FLAVOR: &str = "cloud-amd64";
/// The default kernel line (bookworm-security ships 6.12 next to 6.1).
pub const DEFAULT_LINE: &str = "6.12";
/// Every line `--all-kernels` boots, in order.
pub const ALL_LINES: &[&str] = &["6.12", "6.1"];
/// Written last into an extracted kernel, so an interrupted extraction is redone.
const COMPLETE_MARKER: &str = ".xtask-complete";

/// Where a kernel comes from.
pub enum Source {
    /// A Debian package name, fetched with `apt-get download`.
    Package(String),
    /// A local .deb file.
    Deb(PathBuf),
}

/// Turns a `--kernel` argument into a source: a package name, a .deb path,
/// or a version prefix such as "6.1" (the newest cloud image of that line).
pub fn resolve(spec: &str) -> Result<Source> {
    if spec.ends_with(".deb") {
        let path =
            fs::canonicalize(spec).with_context(|| format!("--kernel {spec}: no such .deb"))?;
        return Ok(Source::Deb(path));
    }
    if spec.starts_with("linux-image-") {
        return Ok(Source::Package(spec.to_owned()));
    }
    if !spec.is_empty() && spec.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return newest_package(spec).map(Source::Package);
    }
    bail!(
        "--kernel {spec}: expected a package (linux-image-...), a path to a .deb, or a version such as 6.12"
    )
}

/// The newest `linux-image-<prefix>...-cloud-amd64` in apt's lists. Versions
/// are compared, not names, so 6.1.0-10 beats 6.1.0-9 and "6.1" never
/// matches 6.12.
fn newest_package(prefix: &str) -> Result<String> {
    let mut found = search_packages(prefix);
    if found.is_empty() {
        // A fresh machine may never have run `apt-get update`.
        setup::run(Command::new("apt-get").args(["update", "-q"]))?;
        found = search_packages(prefix);
    }
    found
        .into_iter()
        .max_by(|a, b| compare_versions(&a.1, &b.1))
        .map(|(package, _)| package)
        .with_context(|| {
            format!("no package linux-image-{prefix}.*-{FLAVOR} in apt's lists (try `apt-cache search linux-image-{prefix}`)")
        })
}

/// (package, release) pairs of real images of one line; metapackages such as
/// linux-image-6.12-cloud-amd64 and -dbg/-unsigned variants are left out.
fn search_packages(prefix: &str) -> Vec<(String, String)> {
    let pattern = format!("^linux-image-{}", prefix.replace('.', "\\."));
    let Some(list) =
        setup::output(Command::new("apt-cache").args(["search", "--names-only", &pattern]))
    else {
        return Vec::new();
    };
    list.lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let release = name
                .strip_prefix("linux-image-")?
                .strip_suffix(&format!("-{FLAVOR}"))?;
            let rest = release.strip_prefix(prefix)?;
            (rest.starts_with('.') || rest.starts_with('-'))
                .then(|| (name.to_owned(), release.to_owned()))
        })
        .collect()
}

/// Compares version strings chunk by chunk: digit runs numerically, the rest
/// as text ("6.1.0-10" > "6.1.0-9", "6.12.117+deb12" > "6.12.99+deb12").
fn compare_versions(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[i - 1].is_ascii_digit() {
                out.push(&s[start..i]);
                start = i;
            }
        }
        out
    }
    for (x, y) in chunks(a).into_iter().zip(chunks(b)) {
        let numeric =
            x.bytes().all(|c| c.is_ascii_digit()) && y.bytes().all(|c| c.is_ascii_digit());
        let order = if numeric {
            let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
            x.len().cmp(&y.len()).then_with(|| x.cmp(y))
        } else {
            x.cmp(y)
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// An extracted kernel package.
pub struct Kernel {
    /// What was fetched: the package name or the .deb file name.
    pub package: String,
    /// The release, as `uname -r` prints it: 6.12.117+deb12-cloud-amd64.
    pub release: String,
    root: PathBuf,
    config: HashMap<String, String>,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root
            .join("boot")
            .join(format!("vmlinuz-{}", self.release))
    }

    /// The release without the flavour suffix, for log prefixes and folders.
    pub fn label(&self) -> &str {
        self.release
            .strip_suffix("-cloud-amd64")
            .or_else(|| self.release.strip_suffix("-amd64"))
            .unwrap_or(&self.release)
    }

    /// "y", "m", or None when the option is not set.
    pub fn config(&self, option: &str) -> Option<&str> {
        self.config.get(option).map(String::as_str)
    }

    /// The .ko files to insmod, dependencies first, for the named modules.
    /// Dependencies come from the modules.dep that `fetch` generated.
    pub fn modules_in_load_order(&self, names: &[&str]) -> Result<Vec<PathBuf>> {
        let dir = self.root.join("lib/modules").join(&self.release);
        let dep_file = dir.join("modules.dep");
        let text = fs::read_to_string(&dep_file)
            .with_context(|| format!("reading {}", dep_file.display()))?;
        // module name -> (path relative to `dir`, paths of its dependencies)
        let mut deps: HashMap<String, (&str, Vec<&str>)> = HashMap::new();
        for line in text.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            deps.insert(module_name(path), (path, rest.split_whitespace().collect()));
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in names {
            visit(&deps, &module_name(name), &mut seen, &mut order)
                .with_context(|| format!("resolving module {name} of {}", self.release))?;
        }
        Ok(order.into_iter().map(|p| dir.join(p)).collect())
    }
}

/// Depth-first post-order: every module after all of its dependencies.
fn visit<'a>(
    deps: &HashMap<String, (&'a str, Vec<&'a str>)>,
    name: &str,
    seen: &mut HashSet<String>,
    order: &mut Vec<&'a str>,
) -> Result<()> {
    if !seen.insert(name.to_owned()) {
        return Ok(());
    }
    let Some((path, needs)) = deps.get(name) else {
        bail!("module {name} is not in modules.dep");
    };
    for dep in needs {
        visit(deps, &module_name(dep), seen, order)?;
    }
    order.push(path);
    Ok(())
}

/// "kernel/fs/fuse/virtio-fs.ko.xz" -> "virtio_fs" (the kernel treats - and _ alike).
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

/// Unpacks a kernel into target/vm/kernels/<package>/ unless it is already
/// there, and generates its modules.dep (a .deb does not ship one; depmod
/// makes it at install time, which never happens here).
pub fn fetch(source: &Source) -> Result<Kernel> {
    let cache = build::workspace_root().join("target/vm/kernels");
    let (package, deb) = match source {
        Source::Package(name) => (name.clone(), None),
        Source::Deb(path) => {
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .with_context(|| format!("{}: not a usable file name", path.display()))?;
            (name.to_owned(), Some(path.clone()))
        }
    };
    let root = cache.join(&package);
    if !root.join(COMPLETE_MARKER).exists() {
        eprintln!("xtask: fetching kernel {package} into {}", root.display());
        if root.exists() {
            fs::remove_dir_all(&root)
                .with_context(|| format!("removing partial {}", root.display()))?;
        }
        let download = cache.join(format!(".download-{package}"));
        let deb = match deb {
            Some(deb) => deb,
            None => download_deb(&package, &download)?,
        };
        setup::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        let release = find_release(&root)?;
        if root.join("lib/modules").join(&release).is_dir() {
            setup::run(Command::new("depmod").arg("-b").arg(&root).arg(&release))?;
        }
        fs::write(root.join(COMPLETE_MARKER), b"")?;
        if download.exists() {
            fs::remove_dir_all(&download)
                .with_context(|| format!("removing {}", download.display()))?;
        }
    }
    let release = find_release(&root)?;
    let config_path = root.join("boot").join(format!("config-{release}"));
    let config = parse_config(&config_path)?;
    Ok(Kernel {
        package,
        release,
        root,
        config,
    })
}

fn download_deb(package: &str, dir: &Path) -> Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // The download folder belongs to root; without this apt warns that its
    // sandbox user cannot write there.
    setup::run(
        Command::new("apt-get")
            .args(["-q", "-o", "APT::Sandbox::User=root", "download", package])
            .current_dir(dir),
    )
    .with_context(|| format!("downloading {package} (is it in `apt-cache policy {package}`?)"))?;
    let mut debs = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"));
    debs.next().with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

/// The release is the suffix of the one boot/vmlinuz-* in the package.
fn find_release(root: &Path) -> Result<String> {
    let boot = root.join("boot");
    let mut releases: Vec<String> = fs::read_dir(&boot)
        .with_context(|| format!("{}: not a kernel image package (no boot/)", root.display()))?
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(str::to_owned)
        })
        .collect();
    match releases.len() {
        1 => Ok(releases.remove(0)),
        n => bail!("expected one vmlinuz-* in {}, found {n}", boot.display()),
    }
}

fn parse_config(path: &Path) -> Result<HashMap<String, String>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading kernel config {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("6.1.0-10", "6.1.0-9"), Ordering::Greater);
        assert_eq!(
            compare_versions("6.12.117+deb12", "6.12.99+deb12"),
            Ordering::Greater
        );
        assert_eq!(compare_versions("6.1.0-56", "6.1.0-56"), Ordering::Equal);
    }

    #[test]
    fn module_names_are_normalised() {
        assert_eq!(module_name("kernel/fs/fuse/virtiofs.ko.xz"), "virtiofs");
        assert_eq!(module_name("kernel/net/9p/9pnet_virtio.ko"), "9pnet_virtio");
        assert_eq!(module_name("virtio-pci"), "virtio_pci");
    }
}
