//! kpilot's eBPF network tracer: which packets the kernel drops, why, and where.
//!
//! Static checks (iptables rules, routes, sysctls) say what *should* happen to a packet;
//! this crate watches what does. It attaches a program to the `skb:kfree_skb` tracepoint
//! and reports, for every dropped packet:
//!
//! - the **drop reason** (`NETFILTER_DROP`, `NO_SOCKET`, `TCP_INVALID_SEQUENCE`, ...), named as
//!   the *running* kernel names it: the values are read from kernel BTF
//!   (`enum skb_drop_reason`) or tracefs at load time, never from a compiled-in table;
//! - the **kernel stack** and the **dropping function** (`location`), symbolized from
//!   `/proc/kallsyms`;
//! - the **network namespace** inode and the **interface** (index and name in that namespace);
//! - the **protocol and 5-tuple**, read from the packet's own headers, so forwarded traffic
//!   (which has no socket) is decoded too.
//!
//! Drops are aggregated by reason, location, namespace, interface and 5-tuple. Filters
//! (namespace, address, port, reason) are applied in the kernel. Events the kernel could not
//! hand over (ring buffer full) are counted as `lost`, never silently.
//!
//! This crate is the userspace loader (std, [aya](https://aya-rs.dev)); the program itself is
//! `kpilot-bpf-ebpf` (`no_std`, built by this crate's `build.rs`) and the event layout they
//! share is `kpilot-bpf-common`. It knows nothing of workflows or clusters: the `trace` step
//! and `kpilot trace drops` call [`trace_drops`] or drive a [`DropTracer`].
//!
//! # Requirements
//!
//! Root (or `CAP_BPF` + `CAP_PERFMON` + `CAP_SYS_ADMIN`), Linux 5.17 or later (drop reasons),
//! kernel BTF (`CONFIG_DEBUG_INFO_BTF=y`, `/sys/kernel/btf/vmlinux`) and tracefs (mounted on
//! demand at `/sys/kernel/tracing` if it is not).
//!
//! # Example
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! use std::time::Duration;
//! use kpilot_bpf::{DropFilter, TraceConfig, trace_drops_with};
//!
//! let config = TraceConfig::new(Duration::from_secs(5)).with_filter(DropFilter {
//!     reason: Some("NETFILTER_DROP".into()),
//!     ..Default::default()
//! });
//! let report = trace_drops_with(&config, |drop| {
//!     println!("{} at {} {:?} -> {:?}", drop.reason, drop.location, drop.src, drop.dst);
//!     ControlFlow::Continue(())
//! })?;
//! println!("{}", serde_json::to_string_pretty(&report).unwrap());
//! # Ok::<(), kpilot_bpf::TraceError>(())
//! ```
//!
//! In an async program, run the trace on a blocking thread
//! (`tokio::task::spawn_blocking`) and send each [`PacketDrop`] through a channel from the
//! callback; return [`ControlFlow::Break`] to stop early, or drive a [`DropTracer`] yourself.
#![deny(missing_docs)]

pub mod btf;
pub mod config;
pub mod error;
pub mod kallsyms;
pub mod kernel;
/// The tests' one check of what they need from the machine (shared with the
/// workspace's integration tests).
#[cfg(test)]
#[path = "../../tests/prereq.rs"]
mod prereq;
pub mod reasons;
pub mod report;
pub mod tracefs;
pub mod tracer;

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

pub use config::{DEFAULT_RING_BYTES, DropFilter, TraceConfig, netns_inode};
pub use error::{Result, TraceError};
pub use kernel::KernelInfo;
pub use reasons::{DropReasons, ReasonSource};
pub use report::{DropGroup, DropReport, PacketDrop};
pub use tracer::{Counters, DropTracer};

/// Traces drops for `config.duration` and returns the aggregated report.
pub fn trace_drops(config: &TraceConfig) -> Result<DropReport> {
    trace_drops_with(config, |_| ControlFlow::Continue(()))
}

/// Traces drops for `config.duration`, calling `on_drop` for each one as it arrives (for a
/// live view); `ControlFlow::Break` stops the trace early. Returns the aggregated report.
pub fn trace_drops_with(
    config: &TraceConfig,
    mut on_drop: impl FnMut(&PacketDrop) -> ControlFlow<()>,
) -> Result<DropReport> {
    let mut tracer = DropTracer::start(config)?;
    let deadline = Instant::now() + config.duration;
    let mut stopped = false;
    while !stopped {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let wait = (deadline - now).min(Duration::from_millis(100));
        tracer.poll(wait, |d| {
            if !stopped && on_drop(d).is_break() {
                stopped = true;
            }
        })?;
    }
    tracer.stop(|d| {
        if !stopped {
            let _ = on_drop(d);
        }
    })
}
