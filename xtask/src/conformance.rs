//! The published OCSF and ECS definitions the privileged suite checks
//! every event against, from registry packages this project did not
//! write: `ocsf-json-schema` (PyPI: schema.ocsf.io's exports of each OCSF
//! version, and a JSON Schema generator for them) and `@elastic/ecs`
//! (npm: Elastic's ecs_flat field definitions). `setup` installs them
//! under target/conformance; `prepare` writes the definitions for the
//! versions the built daemon declares (`agent-guard events versions`).
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{build::workspace_root, setup};

const OCSF_PACKAGE: &str = "ocsf-json-schema";
const OCSF_PACKAGE_VERSION: &str = "1.2.0";
const ECS_PACKAGE: &str = "@elastic/ecs";
const ECS_PACKAGE_VERSION: &str = "9.4.0";

/// Where the packages and the definitions live (never committed).
pub fn dir() -> PathBuf {
    workspace_root().join("target/conformance")
}

fn python() -> PathBuf {
    dir().join("venv/bin/python")
}

fn ecs_package() -> PathBuf {
    dir().join("npm/node_modules").join(ECS_PACKAGE)
}

/// Installs both packages at their pinned versions, if missing.
pub fn install() -> Result<()> {
    let dir = dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if !python().exists() {
        eprintln!("setup: creating a Python venv for {OCSF_PACKAGE}");
        let venv = dir.join("venv");
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        if !made {
            // Debian's python3 keeps venv in a package of its own.
            setup::apt_install(&["python3-venv"])?;
            setup::run(
                Command::new("/usr/bin/python3")
                    .args(["-m", "venv"])
                    .arg(&venv),
            )?;
        }
    }
    let installed = setup::output(Command::new(python()).args([
        "-c",
        &format!("import importlib.metadata as m; print(m.version({OCSF_PACKAGE:?}))"),
    ]));
    if installed.as_deref().map(str::trim) != Some(OCSF_PACKAGE_VERSION) {
        eprintln!("setup: installing {OCSF_PACKAGE} {OCSF_PACKAGE_VERSION} (PyPI)");
        setup::run(Command::new(python()).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &format!("{OCSF_PACKAGE}=={OCSF_PACKAGE_VERSION}"),
        ]))?;
    }
    let manifest = std::fs::read_to_string(ecs_package().join("package.json")).unwrap_or_default();
    let has_ecs = serde_json::from_str::<serde_json::Value>(&manifest)
        .is_ok_and(|m| m["version"] == ECS_PACKAGE_VERSION);
    if !has_ecs {
        if setup::output(Command::new("npm").arg("--version")).is_none() {
            setup::apt_install(&["npm"])?;
        }
        eprintln!("setup: installing {ECS_PACKAGE} {ECS_PACKAGE_VERSION} (npm)");
        setup::run(
            Command::new("npm")
                .args([
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--no-save",
                    "--prefix",
                ])
                .arg(dir.join("npm"))
                .arg(format!("{ECS_PACKAGE}@{ECS_PACKAGE_VERSION}")),
        )?;
    }
    Ok(())
}

/// Writes the definitions for the versions `daemon` declares; returns the
/// directory the tests read (`AGENT_GUARD_CONFORMANCE`).
pub fn prepare(daemon: &Path) -> Result<PathBuf> {
    let out = setup::output(Command::new(daemon).args(["events", "versions"]))
        .context("asking the daemon which OCSF and ECS versions it writes")?;
    let versions: serde_json::Value =
        serde_json::from_str(&out).context("`agent-guard events versions` is not JSON")?;
    let ocsf = versions["ocsf"]["version"]
        .as_str()
        .context("no OCSF version")?;
    let profiles: Vec<&str> = versions["ocsf"]["profiles"]
        .as_array()
        .context("no OCSF profiles")?
        .iter()
        .filter_map(serde_json::Value::as_str)
        .collect();
    let profiles = profiles.join(",");
    let dir = dir();
    let ocsf_dir = dir.join("ocsf").join(ocsf).join(&profiles);
    if !ocsf_dir.join("DONE").exists() {
        eprintln!("xtask: writing OCSF {ocsf} ({profiles}) schemas from {OCSF_PACKAGE}");
        setup::run(
            Command::new(python())
                .arg(workspace_root().join("xtask/conformance/ocsf_schemas.py"))
                .args([ocsf, &profiles])
                .arg(&ocsf_dir),
        )?;
    }
    let ecs = versions["ecs"]["version"]
        .as_str()
        .context("no ECS version")?;
    let ecs_file = dir.join("ecs").join(format!("{ecs}.json"));
    if !ecs_file.exists() {
        let fields = setup::output(
            Command::new("node")
                .arg(workspace_root().join("xtask/conformance/ecs_fields.js"))
                .arg(ecs_package()),
        )
        .with_context(|| format!("reading ECS field definitions from {ECS_PACKAGE}"))?;
        let carried: serde_json::Value =
            serde_json::from_str(&fields).context("ECS field definitions are not JSON")?;
        if carried["version"] != ecs {
            bail!(
                "the daemon writes ECS {ecs}, but {ECS_PACKAGE} {ECS_PACKAGE_VERSION} defines ECS {}",
                carried["version"]
            );
        }
        std::fs::create_dir_all(dir.join("ecs"))?;
        std::fs::write(&ecs_file, fields)
            .with_context(|| format!("writing {}", ecs_file.display()))?;
    }
    Ok(dir)
}
