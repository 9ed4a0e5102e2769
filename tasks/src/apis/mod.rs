//! Removed and deprecated Kubernetes APIs in manifests: the version table, the objects read from
//! files (YAML, JSON, `kind: List`, objects as a cluster returns them, Helm 3 release Secrets),
//! and what an upgrade to a target release does to each of them.
//!
//! Start with [`ApiVersionTable::builtin`], add a user's rows with
//! [`ApiVersionTable::merge`], read objects with [`scan_path`], then judge them with
//! [`classify`] for a target from [`parse_target`]. [`cluster::scan_cluster`] reads the same
//! objects from a cluster: last-applied annotations and Helm release Secrets.

pub mod cluster;
mod source;
mod table;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;

use semver::Version;
use serde::Serialize;

pub use source::{
    applied_type, scan_helm_secret, scan_path, scan_path_with, ManifestObject, Scan, ScanOptions,
    LAST_APPLIED,
};
pub use table::{ApiVersionRow, ApiVersionTable};

/// Everything that can go wrong reading a version table or a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A file or directory could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A version table is not YAML of the `deprecated-versions:` shape.
    #[error("{file}: not a table of API versions (`deprecated-versions: [{{version, kind, deprecated-in, removed-in, replacement-api, replacement-available-in, component}}]`): {source}")]
    TableSyntax {
        /// The table's file (`<built-in>` for the embedded one).
        file: String,
        /// The YAML error, with its line.
        #[source]
        source: serde_yaml::Error,
    },
    /// A row of a version table is unusable.
    #[error("{file}: row {row} ({version} {kind}): {problem}")]
    TableRow {
        /// The table's file.
        file: String,
        /// The row, counted from 1.
        row: usize,
        /// The row's `version`, as written.
        version: String,
        /// The row's `kind`, as written.
        kind: String,
        /// What is wrong and what to write instead.
        problem: String,
    },
    /// A document of a manifest file could not be read as an object.
    #[error("{}, document {document}: {problem}", file.display())]
    Document {
        /// The manifest file.
        file: PathBuf,
        /// The document within the file, counted from 1.
        document: usize,
        /// What is wrong.
        problem: String,
    },
    /// An object read from a cluster could not be judged.
    #[error("{object} ({origin}): {problem}")]
    Object {
        /// The object as the API server serves it (for a Helm release, its Secret); boxed, as
        /// every other error is small.
        object: Box<ObjectRef>,
        /// Where its manifest was to come from: `cluster`, or `helm:NAMESPACE/RELEASE`.
        origin: String,
        /// What is wrong.
        problem: String,
    },
    /// An upgrade target is not a release version.
    #[error("target {0:?} is not a Kubernetes release: write it as 1.16, 1.16.0 or v1.16.0")]
    Target(String),
}

/// A release such as `v1.16.0`; `v` is optional, and all three numbers are required.
pub(crate) fn parse_release(text: &str) -> Option<Version> {
    let bare = text.strip_prefix('v').unwrap_or(text);
    Version::parse(bare).ok()
}

/// The upgrade target: `1.16`, `1.16.0` or `v1.16.0` (a missing patch is `.0`).
pub fn parse_target(text: &str) -> Result<Version, ApiError> {
    let bare = text.trim().strip_prefix('v').unwrap_or(text.trim());
    let full = if bare.matches('.').count() == 1 {
        format!("{bare}.0")
    } else {
        bare.to_string()
    };
    Version::parse(&full).map_err(|_| ApiError::Target(text.to_string()))
}

/// Which object a finding is about, as its manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// The apiVersion that counts: the last-applied one when the object carries it.
    pub api_version: String,
    /// The object's kind.
    pub kind: String,
    /// The object's namespace; for a Helm release's objects without one, the release's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name (empty when the manifest gives none).
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// What the upgrade does to an object's API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The apiVersion is removed at or before the target: applying it will fail.
    Failed,
    /// The apiVersion is deprecated at or before the target but still served there.
    Warning,
}

/// One object whose API is deprecated or removed by the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// The object.
    pub object: ObjectRef,
    /// Where it came from: the file path, or `helm:NAMESPACE/RELEASE`.
    pub source: String,
    /// The file it was read from (for Helm, the release Secret's file).
    pub file: PathBuf,
    /// Failed or warning.
    pub outcome: Outcome,
    /// The apiVersion to use instead, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// The release that removes the apiVersion, when one does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed_in: Option<String>,
    /// The release that deprecated the apiVersion, when one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprecated_in: Option<String>,
    /// One line for a person, e.g. "Deployment default/x uses extensions/v1beta1, removed in
    /// v1.16.0; use apps/v1".
    pub message: String,
}

/// Judges `objects` for an upgrade to `target`: removed in a release ≤ target is
/// [`Outcome::Failed`]; deprecated in a release ≤ target but removed later or never is
/// [`Outcome::Warning`]; anything else gives no finding. Findings keep the objects' order.
pub fn classify(
    table: &ApiVersionTable,
    target: &Version,
    objects: &[ManifestObject],
) -> Vec<Finding> {
    objects
        .iter()
        .filter_map(|o| classify_one(table, target, o))
        .collect()
}

fn classify_one(table: &ApiVersionTable, target: &Version, o: &ManifestObject) -> Option<Finding> {
    let row = table.lookup(&o.object.api_version, &o.object.kind)?;
    let removed = row.removed_in.as_ref().filter(|r| *r <= target);
    let deprecated = row.deprecated_in.as_ref().filter(|d| *d <= target);
    let outcome = match (removed, deprecated) {
        (Some(_), _) => Outcome::Failed,
        (None, Some(_)) => Outcome::Warning,
        (None, None) => return None,
    };
    let show = |v: &Version| format!("v{v}");
    let removed_in = row.removed_in.as_ref().map(show);
    let deprecated_in = row.deprecated_in.as_ref().map(show);
    let what = match (outcome, &removed_in, &deprecated_in) {
        (Outcome::Failed, Some(r), _) => format!("removed in {r}"),
        (_, Some(r), Some(d)) => format!("deprecated in {d}, removed in {r}"),
        (_, None, Some(d)) => format!("deprecated in {d}"),
        _ => String::new(),
    };
    let advice = match &row.replacement_api {
        Some(r) => format!("use {r}"),
        None => "no replacement API".to_string(),
    };
    Some(Finding {
        message: format!(
            "{} uses {}, {what}; {advice}",
            o.object, o.object.api_version
        ),
        object: o.object.clone(),
        source: o.source.clone(),
        file: o.file.clone(),
        outcome,
        replacement: row.replacement_api.clone(),
        removed_in,
        deprecated_in,
    })
}
