//! What to trace: for how long, and which drops to keep.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default ring buffer size: 4 MiB, about 43,000 events of 96 bytes (plus 8 of header each).
pub const DEFAULT_RING_BYTES: u32 = 4 << 20;

/// A trace: how long, which drops, and how much kernel memory to buffer events in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceConfig {
    /// How long to trace.
    pub duration: Duration,
    /// Which drops to report. All filters are applied in the kernel, before an event is sent
    /// to userspace, so `total`, `lost` and the group counts all refer to matching drops.
    pub filter: DropFilter,
    /// Ring buffer size in bytes: a power of two, at least one page. A larger buffer rides
    /// out longer bursts before events are lost (and counted as lost).
    pub ring_bytes: u32,
    /// Record the kernel stack of each drop. The stack walk is the costliest part of an
    /// event; turn it off to trace a flood at a higher rate (location is still reported).
    pub stacks: bool,
}

impl TraceConfig {
    /// A trace of `duration` with no filter.
    pub fn new(duration: Duration) -> Self {
        TraceConfig {
            duration,
            filter: DropFilter::default(),
            ring_bytes: DEFAULT_RING_BYTES,
            stacks: true,
        }
    }

    /// Sets the filter.
    pub fn with_filter(mut self, filter: DropFilter) -> Self {
        self.filter = filter;
        self
    }
}

impl Default for TraceConfig {
    fn default() -> Self {
        TraceConfig::new(Duration::from_secs(10))
    }
}

/// Which drops to keep; every field that is set must match (AND).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropFilter {
    /// Network namespace inode, as `stat -L -c %i /run/netns/NAME` or
    /// `readlink /proc/PID/ns/net` (`net:[INODE]`) shows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<u64>,
    /// Source or destination address of the packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<IpAddr>,
    /// Source or destination port (TCP, UDP, UDP-Lite, SCTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Drop reason name as the kernel spells it, e.g. `NETFILTER_DROP` or `NO_SOCKET`
    /// (case-insensitive, `SKB_DROP_REASON_` prefix optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl DropFilter {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self == &DropFilter::default()
    }
}

/// The inode of a network namespace file such as `/run/netns/NAME` or `/proc/PID/ns/net`,
/// for [`DropFilter::netns`].
pub fn netns_inode(path: impl AsRef<std::path::Path>) -> std::io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path)?.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_serde() {
        let f: DropFilter =
            serde_json::from_str(r#"{"addr":"10.0.0.2","port":80,"reason":"NO_SOCKET"}"#).unwrap();
        assert_eq!(f.port, Some(80));
        assert!(!f.is_empty());
        assert!(DropFilter::default().is_empty());
        assert_eq!(serde_json::to_string(&DropFilter::default()).unwrap(), "{}");
        assert!(serde_json::from_str::<DropFilter>(r#"{"prot":1}"#).is_err());
    }

    #[test]
    fn own_netns_inode() {
        let ino = netns_inode("/proc/self/ns/net").unwrap();
        let link = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_eq!(link.to_string_lossy(), format!("net:[{ino}]"));
    }
}
