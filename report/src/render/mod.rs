//! Renderers: each reads only the [`crate::Report`] model.
//!
//! - [`json`]: the documented JSON (`docs/reports.md`), `schemaVersion` 1.
//! - [`text`]: the console an operator reads, per category, abnormal first.

pub mod json;
pub mod text;
