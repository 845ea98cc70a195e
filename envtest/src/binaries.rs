//! Locating (and, when missing, building) the control-plane binaries.
//!
//! The pinned versions live in `envtest/versions.env`, the one file that the installer script,
//! this crate and the docs all read. Building is delegated to `envtest/install-binaries.sh`,
//! which honours `KUBEBUILDER_ASSETS`, keeps a versioned cache and holds a file lock, so that
//! several test binaries starting at once build only once.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::Error;

const VERSIONS_ENV: &str = include_str!("../versions.env");
/// The installer, embedded rather than found at the path it was built from: a test binary built
/// in one checkout (or a shared `CARGO_TARGET_DIR`) may run from another, or after the checkout
/// moved.
const INSTALLER_SCRIPT: &str = include_str!("../install-binaries.sh");
const INSTALLER: &str = "envtest/install-binaries.sh (the copy embedded in the envtest crate)";

/// The versions pinned in `envtest/versions.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    /// Kubernetes release of kube-apiserver, kube-controller-manager and kubectl (`v1.37.1`).
    pub kubernetes: String,
    /// etcd release (`v3.6.16`).
    pub etcd: String,
    /// kwok release (`v0.8.0`).
    pub kwok: String,
}

/// The pinned versions, parsed from the embedded `versions.env`.
pub fn versions() -> Versions {
    parse_versions(VERSIONS_ENV).expect("envtest/versions.env names all three versions")
}

fn parse_versions(text: &str) -> Option<Versions> {
    let get = |key: &str| {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('=').map(|v| v.trim().to_string()))
    };
    Some(Versions { kubernetes: get("KUBERNETES_VERSION")?, etcd: get("ETCD_VERSION")?, kwok: get("KWOK_VERSION")? })
}

/// A control-plane binary epslice's tests can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// etcd.
    Etcd,
    /// kube-apiserver.
    KubeApiserver,
    /// kube-controller-manager (the reference oracle, and the garbage collector).
    KubeControllerManager,
    /// kubectl matching the apiserver's minor version.
    Kubectl,
    /// kwok: fake Nodes and Pod lifecycle.
    Kwok,
}

impl Binary {
    /// The file name of the binary.
    pub fn file_name(self) -> &'static str {
        match self {
            Binary::Etcd => "etcd",
            Binary::KubeApiserver => "kube-apiserver",
            Binary::KubeControllerManager => "kube-controller-manager",
            Binary::Kubectl => "kubectl",
            Binary::Kwok => "kwok",
        }
    }
}

/// Returns the directory holding `wanted`, building the missing ones first.
///
/// With `KUBEBUILDER_ASSETS` set, that directory is used as is (and checked). Otherwise the
/// binaries come from the versioned cache, built from pinned Go modules when absent; progress of a
/// build is shown on stderr.
pub fn ensure(wanted: &[Binary]) -> Result<PathBuf, Error> {
    let names: Vec<&str> = wanted.iter().map(|b| b.file_name()).collect();
    let out = Command::new("bash")
        .arg("-c")
        .arg(INSTALLER_SCRIPT)
        .arg("install-binaries.sh")
        .args(&names)
        .env("EPSLICE_ENVTEST_VERSIONS", VERSIONS_ENV)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::Install(format!("cannot run {INSTALLER}: {e}")))?;
    if !out.status.success() {
        return Err(Error::Install(format!(
            "{INSTALLER} {} failed ({}); its error is printed above. Set KUBEBUILDER_ASSETS to a directory holding {} to use binaries you bring",
            names.join(" "),
            out.status,
            names.join(", ")
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
    if dir.is_empty() {
        return Err(Error::Install(format!("{INSTALLER} printed no directory")));
    }
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_file_parses() {
        let v = versions();
        assert!(v.kubernetes.starts_with("v1."), "{v:?}");
        assert!(v.etcd.starts_with("v3."), "{v:?}");
        assert!(v.kwok.starts_with("v0."), "{v:?}");
    }

    #[test]
    fn comments_and_missing_keys() {
        assert_eq!(parse_versions("# KUBERNETES_VERSION=v9\nETCD_VERSION=v3\nKWOK_VERSION=v0"), None);
        let v = parse_versions("KUBERNETES_VERSION=v1.2.3\nETCD_VERSION=v3.6.0\nKWOK_VERSION=v0.8.0\n").unwrap();
        assert_eq!(v.kubernetes, "v1.2.3");
        assert_eq!(v.etcd, "v3.6.0");
    }
}
