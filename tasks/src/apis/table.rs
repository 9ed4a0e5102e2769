//! The table of API versions, in pluto's `versions.yaml` format.

use std::path::Path;

use semver::Version;
use serde::Deserialize;

use super::{parse_release, ApiError};

/// kpilot's default table: the Kubernetes rows of pluto's public table.
const BUILTIN: &str = include_str!("../../../workflows/catalog/api-versions.yaml");

/// One API version of one kind: when it was deprecated, when removed, and what replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionRow {
    /// The apiVersion, e.g. `extensions/v1beta1`.
    pub version: String,
    /// The kind, e.g. `Deployment`; empty: every kind of `version`.
    pub kind: String,
    /// The release that deprecated it; `None`: never.
    pub deprecated_in: Option<Version>,
    /// The release that removed it; `None`: never.
    pub removed_in: Option<Version>,
    /// The apiVersion to use instead; `None`: there is none.
    pub replacement_api: Option<String>,
    /// The release from which the replacement is served.
    pub replacement_available_in: Option<Version>,
    /// Whose API it is (`k8s`, `cert-manager`, …).
    pub component: String,
}

/// A table of API versions; at most one row per (version, kind).
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable {
    rows: Vec<ApiVersionRow>,
}

// The file's shape, with pluto's column names; empty strings are kept so that a row can be
// checked and reported with its own words.
#[derive(Deserialize)]
struct RawTable {
    #[serde(rename = "deprecated-versions")]
    deprecated_versions: Vec<RawRow>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RawRow {
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    deprecated_in: String,
    #[serde(default)]
    removed_in: String,
    #[serde(default)]
    replacement_api: String,
    #[serde(default)]
    replacement_available_in: String,
    #[serde(default)]
    component: String,
}

impl ApiVersionTable {
    /// kpilot's default table (`workflows/catalog/api-versions.yaml`, built in).
    pub fn builtin() -> Result<Self, ApiError> {
        Self::parse(BUILTIN, "<built-in api-versions.yaml>")
    }

    /// A table read from a file of pluto's `versions.yaml` format.
    pub fn from_file(path: &Path) -> Result<Self, ApiError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// A table from `text`; `file` names it in errors. Rows are checked one by one: a missing
    /// version, a release that is not `v1.16.0`-style, or a second row for the same
    /// version and kind is an error naming the file and the row.
    pub fn parse(text: &str, file: &str) -> Result<Self, ApiError> {
        let raw: RawTable = serde_yaml::from_str(text).map_err(|source| ApiError::TableSyntax {
            file: file.to_string(),
            source,
        })?;
        Self::from_rows(raw.deprecated_versions, file)
    }

    /// Like [`ApiVersionTable::parse`], but `text` (YAML or JSON) may also be the bare list of
    /// rows, as `kpilot inspect` passes a user's rows on.
    pub fn parse_rows(text: &str, file: &str) -> Result<Self, ApiError> {
        let syntax = |source| ApiError::TableSyntax {
            file: file.to_string(),
            source,
        };
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(syntax)?;
        match value {
            serde_yaml::Value::Null => Ok(ApiVersionTable::default()),
            // Parsed again from the text, so that an error keeps its line.
            serde_yaml::Value::Sequence(_) => {
                Self::from_rows(serde_yaml::from_str(text).map_err(syntax)?, file)
            }
            _ => Self::parse(text, file),
        }
    }

    fn from_rows(rows: Vec<RawRow>, file: &str) -> Result<Self, ApiError> {
        let mut table = ApiVersionTable::default();
        // The file's row number of each kept row, for the error about a conflicting repeat.
        let mut numbers = Vec::new();
        for (i, r) in rows.into_iter().enumerate() {
            let bad = |problem: String| ApiError::TableRow {
                file: file.to_string(),
                row: i + 1,
                version: r.version.clone(),
                kind: r.kind.clone(),
                problem,
            };
            if r.version.trim().is_empty() {
                return Err(bad(
                    "`version` is required (e.g. version: extensions/v1beta1, kind: Deployment)"
                        .to_string(),
                ));
            }
            let release = |field: &str, value: &str| -> Result<Option<Version>, ApiError> {
                if value.trim().is_empty() {
                    return Ok(None);
                }
                parse_release(value.trim()).map(Some).ok_or_else(|| {
                    bad(format!(
                        "{field} {value:?} is not a release: write it as v1.16.0, or \"\" for never"
                    ))
                })
            };
            let row = ApiVersionRow {
                deprecated_in: release("deprecated-in", &r.deprecated_in)?,
                removed_in: release("removed-in", &r.removed_in)?,
                replacement_available_in: release(
                    "replacement-available-in",
                    &r.replacement_available_in,
                )?,
                replacement_api: Some(r.replacement_api.trim().to_string())
                    .filter(|s| !s.is_empty()),
                version: r.version.trim().to_string(),
                kind: r.kind.trim().to_string(),
                component: r.component.trim().to_string(),
            };
            // pluto's own table repeats a row word for word; only a disagreement is ambiguous.
            match table
                .rows
                .iter()
                .position(|x| x.version == row.version && x.kind == row.kind)
            {
                Some(first) if table.rows[first] == row => {}
                Some(first) => {
                    return Err(bad(format!(
                        "same version and kind as row {} but different releases or replacement; keep one of them",
                        numbers[first]
                    )))
                }
                None => {
                    table.rows.push(row);
                    numbers.push(i + 1);
                }
            }
        }
        Ok(table)
    }

    /// Adds `extra`'s rows; a row of `extra` replaces this table's row with the same version and
    /// kind (a user's table corrects or extends the default).
    pub fn merge(&mut self, extra: ApiVersionTable) {
        for row in extra.rows {
            match self
                .rows
                .iter_mut()
                .find(|x| x.version == row.version && x.kind == row.kind)
            {
                Some(existing) => *existing = row,
                None => self.rows.push(row),
            }
        }
    }

    /// The row for `api_version` and `kind`, if the table has one; else the row for
    /// `api_version` with an empty kind (pluto's istio rows: every kind of that apiVersion).
    pub fn lookup(&self, api_version: &str, kind: &str) -> Option<&ApiVersionRow> {
        let row = |k: &str| {
            self.rows
                .iter()
                .find(|r| r.version == api_version && r.kind == k)
        };
        row(kind).or_else(|| row(""))
    }

    /// The rows removed in release `major.minor` (any patch), in the table's order: what an
    /// upgrade hop to that minor takes away.
    pub fn removed_in(&self, major: u64, minor: u64) -> Vec<&ApiVersionRow> {
        self.rows
            .iter()
            .filter(|r| {
                r.removed_in
                    .as_ref()
                    .is_some_and(|v| v.major == major && v.minor == minor)
            })
            .collect()
    }

    /// Every row, in the table's order.
    pub fn rows(&self) -> &[ApiVersionRow] {
        &self.rows
    }
}
