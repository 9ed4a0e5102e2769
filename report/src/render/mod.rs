//! Renderers: each reads only the [`crate::Report`] model (or, for
//! `kpilot report diff`, a [`crate::findings::Comparison`] of two).
//!
//! - [`json`]: the documented JSON (`docs/reports.md`), `schemaVersion` 1.
//! - [`text`]: the console an operator reads, per category, abnormal first.
//! - [`html`]: one self-contained page, in the look of an operations console.
//! - [`junit`]: JUnit XML, a testsuite per category, a testcase per item.
//! - [`prometheus`]: the text exposition format, for a textfile collector
//!   and `/metrics`.
//! - [`comparison`]: new, resolved and persisting findings, as text or JSON.

pub mod comparison;
pub mod html;
pub mod json;
pub mod junit;
pub mod prometheus;
pub mod text;
