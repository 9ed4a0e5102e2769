//! kpilot's check catalog: checks kept as data (`kind: Check` documents), and
//! the report builder that picks the checks that apply to a cluster and
//! composes them into an ordinary workflow.
//!
//! This crate knows no cluster and runs nothing. It reads check documents
//! ([`check`]), says which apply to a cluster's version, type and scenario
//! ([`applies`]), applies a user's `kind: Report` customisation ([`spec`]) and
//! writes the workflow that `kpilot inspect` runs ([`build`]). The checks
//! kpilot ships are embedded ([`shipped`]), so the binary needs no files
//! beside it.
//!
//! ```
//! use kpilot_catalog::{applies::{ClusterType, Scenario}, build, select, Catalog, Facts};
//!
//! let catalog = Catalog::shipped().expect("the shipped catalog parses");
//! let facts = Facts {
//!     scenario: Scenario::Patrol,
//!     cluster_version: Some(semver::Version::new(1, 34, 4)),
//!     target: None,
//!     cluster_type: ClusterType::SelfHosted,
//!     cluster: true,
//!     nodes: false,
//! };
//! let chosen = select::select(&catalog, &Default::default(), &facts).expect("selection");
//! assert!(chosen.checks.iter().all(|c| c.check.applies.scenarios.contains(&Scenario::Patrol)));
//! let workflow = build::workflow(&chosen, &facts, &build::Inputs::default());
//! assert!(workflow.contains("kind: Workflow"));
//! ```

pub mod applies;
pub mod build;
pub mod check;
pub mod select;
pub mod shipped;
pub mod spec;
pub mod upgrade;

pub use applies::Facts;
pub use check::{Catalog, CatalogCheck};
pub use spec::ReportSpec;

/// Why a catalog or report file cannot be used; each names the file, the
/// document or check, and what to change.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A file is not YAML, or a document of it is not a check or report.
    #[error("{file}: {message}")]
    File {
        /// The file, as given.
        file: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// A check document is wrong.
    #[error("{file}: check `{check}`: {message}")]
    Check {
        /// The file, as given.
        file: String,
        /// The check's `metadata.name`, or its position when it has none.
        check: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// Two checks have the same id.
    #[error("{file}: check `{check}` is defined twice (first in {first}); give one of them another `metadata.name`")]
    Duplicate {
        /// Where the second one is.
        file: String,
        /// The id.
        check: String,
        /// Where the first one is.
        first: String,
    },
    /// A report names a check, category or label that matches nothing.
    #[error("{file}: {message}")]
    Report {
        /// The report file.
        file: String,
        /// What it names, and what there is.
        message: String,
    },
}

/// The result of this crate's functions.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;
