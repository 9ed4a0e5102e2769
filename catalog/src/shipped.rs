//! The catalog kpilot ships, embedded: every `kind: Check` file in
//! `workflows/catalog/` (the build script lists them).

include!(concat!(env!("OUT_DIR"), "/shipped.rs"));
