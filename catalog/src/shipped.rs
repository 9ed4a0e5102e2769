//! The catalog kpilot ships, embedded: every `kind: Check` file in
//! `workflows/catalog/` (the build script lists them), and the driver
//! scripts in `workflows/catalog/drivers/` that shipped checks run.

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));
