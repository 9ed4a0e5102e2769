//! Decoded drops, their aggregation, and the report a trace ends with.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::DropFilter;
use crate::kernel::KernelInfo;

/// One dropped packet, decoded and symbolized: what the live callback receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketDrop {
    /// When the kernel dropped it.
    pub time: DateTime<Utc>,
    /// Drop reason, as the running kernel names it (e.g. `NETFILTER_DROP`).
    pub reason: String,
    /// The reason's numeric value on this kernel.
    pub reason_code: u32,
    /// The code that freed the packet (`kfree_skb`'s caller), e.g. `nf_hook_slow+0x9c`.
    pub location: String,
    /// The kernel stack at the drop, innermost first, symbolized (`function+0xoff`).
    /// Empty when the stack could not be recorded (see [`DropReport::stack_errors`]).
    pub stack: Arc<[String]>,
    /// Network namespace inode (0 when the packet had neither device nor socket).
    pub netns: u64,
    /// Interface index in that namespace (0 when the packet had no device).
    pub ifindex: u32,
    /// Interface name in that namespace, read at the drop.
    pub ifname: Option<String>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `ipv4/<n>`, `arp`, `ethertype/0x....`, ...
    pub protocol: String,
    /// Source address, when the packet had an IP header.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Source port (TCP, UDP, UDP-Lite, SCTP).
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// TCP flags, e.g. `SYN` or `ACK|PSH`, for TCP.
    pub tcp_flags: Option<String>,
}

/// Drops that share reason, location, namespace, interface and 5-tuple, counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropGroup {
    /// Drop reason name.
    pub reason: String,
    /// Drop reason value on this kernel.
    pub reason_code: u32,
    /// The code that freed the packets.
    pub location: String,
    /// The kernel stack of the first drop of the group.
    pub stack: Arc<[String]>,
    /// Network namespace inode.
    pub netns: u64,
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub ifname: Option<String>,
    /// Protocol, as in [`PacketDrop::protocol`].
    pub protocol: String,
    /// Source address.
    pub src: Option<IpAddr>,
    /// Destination address.
    pub dst: Option<IpAddr>,
    /// Source port.
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// Number of packets.
    pub count: u64,
    /// First drop.
    pub first_seen: DateTime<Utc>,
    /// Last drop.
    pub last_seen: DateTime<Utc>,
}

/// The result of a trace.
///
/// Counts: `total` is what the kernel counted as matching the filter;
/// `total = received + lost` once the trace has stopped. The group counts add up to
/// `received`. `missed` drops were never seen by the program at all (the kernel skips a
/// tracing program that would run nested on a CPU where one is already running).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropReport {
    /// The kernel traced.
    pub kernel: KernelInfo,
    /// The filter applied.
    pub filter: DropFilter,
    /// When tracing started.
    pub started_at: DateTime<Utc>,
    /// How long it traced, in seconds.
    #[serde(rename = "duration_secs", with = "secs")]
    pub duration: Duration,
    /// Drops that matched the filter, counted in the kernel.
    pub total: u64,
    /// Drops received and decoded in userspace (the sum of the group counts).
    pub received: u64,
    /// Matching drops the kernel could not hand over because the ring buffer was full.
    pub lost: u64,
    /// `skb:kfree_skb` hits the program skipped (recursion on a CPU; kernel 5.12+).
    pub missed: u64,
    /// Every `skb:kfree_skb` hit, matching or not.
    pub seen: u64,
    /// Matching drops whose kernel stack could not be recorded (stack map full or hash
    /// collision); they are still counted, with an empty stack.
    pub stack_errors: u64,
    /// Ring buffer records that could not be decoded (a build mismatch; should be 0).
    pub undecoded: u64,
    /// The groups, most frequent first.
    pub drops: Vec<DropGroup>,
}

/// A `Duration` as fractional seconds in JSON.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize as _, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct GroupKey {
    reason_code: u32,
    location: String,
    netns: u64,
    ifindex: u32,
    protocol: String,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    sport: Option<u16>,
    dport: Option<u16>,
}

/// Groups drops as they arrive.
#[derive(Debug, Default, Clone)]
pub struct Aggregator {
    groups: HashMap<GroupKey, DropGroup>,
    received: u64,
}

impl Aggregator {
    /// Counts one drop.
    pub fn add(&mut self, d: &PacketDrop) {
        self.received += 1;
        let key = GroupKey {
            reason_code: d.reason_code,
            location: d.location.clone(),
            netns: d.netns,
            ifindex: d.ifindex,
            protocol: d.protocol.clone(),
            src: d.src,
            dst: d.dst,
            sport: d.sport,
            dport: d.dport,
        };
        self.groups
            .entry(key)
            .and_modify(|g| {
                g.count += 1;
                g.first_seen = g.first_seen.min(d.time);
                g.last_seen = g.last_seen.max(d.time);
            })
            .or_insert_with(|| DropGroup {
                reason: d.reason.clone(),
                reason_code: d.reason_code,
                location: d.location.clone(),
                stack: Arc::clone(&d.stack),
                netns: d.netns,
                ifindex: d.ifindex,
                ifname: d.ifname.clone(),
                protocol: d.protocol.clone(),
                src: d.src,
                dst: d.dst,
                sport: d.sport,
                dport: d.dport,
                count: 1,
                first_seen: d.time,
                last_seen: d.time,
            });
    }

    /// Drops counted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The groups, most frequent first (ties: earliest first).
    pub fn groups(&self) -> Vec<DropGroup> {
        let mut groups: Vec<DropGroup> = self.groups.values().cloned().collect();
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_seen.cmp(&b.first_seen))
                .then(a.reason.cmp(&b.reason))
        });
        groups
    }
}

impl DropReport {
    /// Groups matching a reason name.
    pub fn by_reason<'a>(&'a self, reason: &'a str) -> impl Iterator<Item = &'a DropGroup> + 'a {
        self.drops.iter().filter(move |g| g.reason == reason)
    }

    /// Total count of the groups with this reason.
    pub fn count_reason(&self, reason: &str) -> u64 {
        self.by_reason(reason).map(|g| g.count).sum()
    }

    /// A plain-text table for a terminal: one line per group, then its stack, indented.
    pub fn to_table(&self, with_stacks: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kernel {} ({} drop reasons from {:?}); {:.1}s: {} drops matched, {} received, {} lost, {} missed, {} stack errors",
            self.kernel.release,
            self.kernel.reasons,
            self.kernel.reasons_source,
            self.duration.as_secs_f64(),
            self.total,
            self.received,
            self.lost,
            self.missed,
            self.stack_errors,
        );
        let _ = writeln!(
            out,
            "{:>7}  {:<22} {:<28} {:<12} {:<10} {:<7} SRC -> DST",
            "COUNT", "REASON", "LOCATION", "NETNS", "IFACE", "PROTO"
        );
        for g in &self.drops {
            let _ = writeln!(
                out,
                "{:>7}  {:<22} {:<28} {:<12} {:<10} {:<7} {}",
                g.count,
                g.reason,
                g.location,
                g.netns,
                g.ifname.as_deref().unwrap_or("-"),
                g.protocol,
                tuple(g.src, g.sport, g.dst, g.dport),
            );
            if with_stacks {
                for frame in g.stack.iter() {
                    let _ = writeln!(out, "{:>9}{frame}", "");
                }
            }
        }
        out
    }
}

/// `10.0.0.1:5555 -> 10.0.0.2:80`, `[fd00::1]:5555 -> ...`, or `-`.
pub fn tuple(
    src: Option<IpAddr>,
    sport: Option<u16>,
    dst: Option<IpAddr>,
    dport: Option<u16>,
) -> String {
    fn end(a: Option<IpAddr>, p: Option<u16>) -> String {
        match (a, p) {
            (Some(IpAddr::V6(a)), Some(p)) => format!("[{a}]:{p}"),
            (Some(a), Some(p)) => format!("{a}:{p}"),
            (Some(a), None) => a.to_string(),
            (None, _) => "?".to_owned(),
        }
    }
    if src.is_none() && dst.is_none() {
        return "-".to_owned();
    }
    format!("{} -> {}", end(src, sport), end(dst, dport))
}

/// Name of an IP protocol number.
pub fn ip_protocol_name(ip_version: u8, proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        2 => "igmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        47 => "gre".into(),
        50 => "esp".into(),
        58 => "icmpv6".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        other => format!("ipv{ip_version}/{other}"),
    }
}

/// Name of an EtherType for packets without a decoded IP header.
pub fn ethertype_name(ethertype: u16) -> String {
    match ethertype {
        0 => "unknown".into(),
        0x0800 => "ipv4".into(),
        0x0806 => "arp".into(),
        0x86dd => "ipv6".into(),
        0x8100 => "vlan".into(),
        0x88cc => "lldp".into(),
        other => format!("ethertype/{other:#06x}"),
    }
}

/// `SYN`, `SYN|ACK`, ... from the TCP flags byte.
pub fn tcp_flags_name(flags: u8) -> String {
    const NAMES: [(u8, &str); 8] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x01, "FIN"),
        (0x04, "RST"),
        (0x08, "PSH"),
        (0x20, "URG"),
        (0x40, "ECE"),
        (0x80, "CWR"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join("|")
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn drop_at(secs: i64, sport: u16) -> PacketDrop {
        PacketDrop {
            time: DateTime::from_timestamp(secs, 0).unwrap(),
            reason: "NETFILTER_DROP".into(),
            reason_code: 12,
            location: "nf_hook_slow+0x9c".into(),
            stack: Arc::from(vec!["nf_hook_slow+0x9c".to_owned()]),
            netns: 4026532000,
            ifindex: 2,
            ifname: Some("veth1".into()),
            protocol: "tcp".into(),
            src: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            dst: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            sport: Some(sport),
            dport: Some(80),
            tcp_flags: Some("SYN".into()),
        }
    }

    #[test]
    fn aggregates_by_tuple() {
        let mut agg = Aggregator::default();
        agg.add(&drop_at(10, 1000));
        agg.add(&drop_at(12, 1000));
        agg.add(&drop_at(11, 1000));
        agg.add(&drop_at(5, 2000));
        let groups = agg.groups();
        assert_eq!(agg.received(), 4);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].count, 3);
        assert_eq!(groups[0].first_seen.timestamp(), 10);
        assert_eq!(groups[0].last_seen.timestamp(), 12);
        assert_eq!(groups[1].sport, Some(2000));
    }

    #[test]
    fn names() {
        assert_eq!(tcp_flags_name(0x12), "SYN|ACK");
        assert_eq!(tcp_flags_name(0), "-");
        assert_eq!(ip_protocol_name(4, 6), "tcp");
        assert_eq!(ip_protocol_name(6, 99), "ipv6/99");
        assert_eq!(ethertype_name(0x0806), "arp");
        assert_eq!(ethertype_name(0x1234), "ethertype/0x1234");
        assert_eq!(
            tuple(
                Some("fd00::1".parse().unwrap()),
                Some(1),
                Some("fd00::2".parse().unwrap()),
                Some(2)
            ),
            "[fd00::1]:1 -> [fd00::2]:2"
        );
        assert_eq!(tuple(None, None, None, None), "-");
    }
}
