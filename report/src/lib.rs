//! kpilot's report: one model ([`Report`]) built from a run (of `kpilot
//! inspect`: its checks; of any other workflow: each step as a check), and
//! renderers ([`render`]) that read only that model.
//!
//! The report knows no cluster: it reads the run kept in the store (the
//! workflow the report builder wrote, whose annotations carry each check's
//! title, category, severity and remediation, and each step's recorded
//! outcome) and groups checks the way an operator reads them, by category,
//! abnormal first.

pub mod diff;
pub mod findings;
pub mod model;
pub mod render;

pub use model::{CheckResult, Item, ObjectRef, Outcome, Report, ReportError};
