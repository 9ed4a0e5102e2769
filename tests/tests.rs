//! kpilot's integration tests: the real binary, real processes, a fresh state
//! directory for each test.

#[macro_use]
mod util;

mod agent;
mod cluster;
mod engine;
mod inspect;
mod patrol;
mod report;
mod trace;
