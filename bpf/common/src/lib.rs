//! Types shared by kpilot's eBPF drop tracer (`kpilot-bpf-ebpf`, in the kernel) and its
//! userspace loader (`kpilot-bpf`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding, so both sides agree on
//! the layout byte for byte. Nothing here knows a kernel's struct layout or drop-reason
//! values: the loader reads those from the running kernel and hands them to the program in
//! [`ProgramConfig`].
//!
//! With the `user` feature the types implement `aya::Pod`, which the loader needs to pass
//! [`ProgramConfig`] as a global and to read [`DropEvent`]s from the ring buffer.
#![no_std]
#![deny(missing_docs)]

/// Name of the read-only global the loader fills with a [`ProgramConfig`].
pub const CONFIG_GLOBAL: &str = "KPILOT_CONFIG";
/// Name of the ring buffer map carrying [`DropEvent`]s to userspace.
pub const EVENTS_MAP: &str = "KPILOT_EVENTS";
/// Name of the stack trace map (`bpf_get_stackid`).
pub const STACKS_MAP: &str = "KPILOT_STACKS";
/// Name of the per-CPU `u64` array of counters, indexed by the `COUNTER_*` constants.
pub const COUNTERS_MAP: &str = "KPILOT_COUNTERS";
/// Name of the tracepoint program (`skb:kfree_skb`).
pub const KFREE_SKB_PROGRAM: &str = "kpilot_kfree_skb";

/// Counter: every `skb:kfree_skb` hit, before any filter.
pub const COUNTER_SEEN: u32 = 0;
/// Counter: hits that passed every filter (= events submitted + events lost).
pub const COUNTER_MATCHED: u32 = 1;
/// Counter: matched hits that could not be handed to userspace (ring buffer full).
pub const COUNTER_LOST: u32 = 2;
/// Counter: matched hits whose kernel stack could not be recorded.
pub const COUNTER_STACK_ERRORS: u32 = 3;
/// Number of counters in [`COUNTERS_MAP`].
pub const COUNTERS_LEN: u32 = 4;

/// [`ProgramConfig::filter_flags`]: only drops with `reason == filter_reason`.
pub const FILTER_REASON: u32 = 1 << 0;
/// [`ProgramConfig::filter_flags`]: only drops in network namespace `filter_netns`.
pub const FILTER_NETNS: u32 = 1 << 1;
/// [`ProgramConfig::filter_flags`]: only IPv4 packets from or to `filter_addr[..4]`.
pub const FILTER_ADDR4: u32 = 1 << 2;
/// [`ProgramConfig::filter_flags`]: only IPv6 packets from or to `filter_addr`.
pub const FILTER_ADDR6: u32 = 1 << 3;
/// [`ProgramConfig::filter_flags`]: only TCP/UDP/SCTP packets from or to `filter_port`.
pub const FILTER_PORT: u32 = 1 << 4;

/// [`ProgramConfig::layout_flags`]: `skb_sk`, `sk_net` are valid; when the device gives
/// no namespace, the socket's is used.
pub const LAYOUT_HAS_SK: u32 = 1 << 0;

/// [`ProgramConfig::options`]: do not record kernel stacks (saves the stack walk, the
/// costliest part of an event).
pub const OPTION_NO_STACKS: u32 = 1 << 0;

/// What the loader tells the program before it is loaded: where to find the fields it reads
/// (tracepoint record offsets from tracefs, kernel struct offsets from kernel BTF) and which
/// drops to keep. All offsets are in bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramConfig {
    /// Offset of `skbaddr` (`void *`) in the tracepoint record.
    pub tp_skbaddr: u32,
    /// Offset of `location` (`void *`, the caller of `kfree_skb_reason`) in the record.
    pub tp_location: u32,
    /// Offset of `protocol` (`unsigned short`, `ntohs(skb->protocol)`) in the record.
    pub tp_protocol: u32,
    /// Offset of `reason` (`enum skb_drop_reason`, 4 bytes) in the record.
    pub tp_reason: u32,
    /// `struct sk_buff`: `head` (`unsigned char *`).
    pub skb_head: u32,
    /// `struct sk_buff`: `network_header` (`__u16`, offset from `head`).
    pub skb_network_header: u32,
    /// `struct sk_buff`: `dev` (`struct net_device *`).
    pub skb_dev: u32,
    /// `struct sk_buff`: `sk` (`struct sock *`).
    pub skb_sk: u32,
    /// `struct net_device`: `ifindex` (`int`).
    pub dev_ifindex: u32,
    /// `struct net_device`: `nd_net.net` (`struct net *`).
    pub dev_net: u32,
    /// `struct net_device`: `name` (`char[16]`).
    pub dev_name: u32,
    /// `struct sock`: `__sk_common.skc_net.net` (`struct net *`).
    pub sk_net: u32,
    /// `struct net`: `ns.inum` (`unsigned int`, the namespace's inode number).
    pub net_ns_inum: u32,
    /// `LAYOUT_*` bits.
    pub layout_flags: u32,
    /// `OPTION_*` bits.
    pub options: u32,
    /// Wake the reader only once this many bytes are queued in the ring buffer (0: on
    /// every event). The reader polls with a timeout anyway, so a quiet trace is still
    /// delivered promptly, and a flood costs one wake-up per batch instead of per event.
    pub wakeup_bytes: u32,
    /// `FILTER_*` bits: which of the filters below apply.
    pub filter_flags: u32,
    /// Keep only this drop reason value (as the running kernel numbers it).
    pub filter_reason: u32,
    /// Keep only this network namespace inode.
    pub filter_netns: u32,
    /// Keep only packets with this source or destination port (host order).
    pub filter_port: u16,
    /// Padding; zero.
    pub _pad: u16,
    /// Keep only packets with this source or destination address (IPv4 in the first 4 bytes).
    pub filter_addr: [u8; 16],
}

/// [`DropEvent::flags`]: an IPv4 or IPv6 header was read; addresses and `l4_proto` are valid.
pub const EVENT_HAS_L3: u8 = 1 << 0;
/// [`DropEvent::flags`]: a TCP/UDP/SCTP header was read; ports are valid.
pub const EVENT_HAS_PORTS: u8 = 1 << 1;
/// [`DropEvent::flags`]: the packet had a device (`ifindex`, `ifname` valid).
pub const EVENT_HAS_DEV: u8 = 1 << 2;
/// [`DropEvent::flags`]: the namespace came from the socket, not the device.
pub const EVENT_NETNS_FROM_SK: u8 = 1 << 3;

impl ProgramConfig {
    /// A configuration with every field zero (no filter).
    pub const fn zeroed() -> Self {
        Self {
            tp_skbaddr: 0,
            tp_location: 0,
            tp_protocol: 0,
            tp_reason: 0,
            skb_head: 0,
            skb_network_header: 0,
            skb_dev: 0,
            skb_sk: 0,
            dev_ifindex: 0,
            dev_net: 0,
            dev_name: 0,
            sk_net: 0,
            net_ns_inum: 0,
            layout_flags: 0,
            options: 0,
            wakeup_bytes: 0,
            filter_flags: 0,
            filter_reason: 0,
            filter_netns: 0,
            filter_port: 0,
            _pad: 0,
            filter_addr: [0; 16],
        }
    }
}

/// One dropped packet, as the program sends it to userspace.
///
/// 96 bytes, no implicit padding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// `bpf_ktime_get_ns()` at the drop (CLOCK_MONOTONIC).
    pub timestamp_ns: u64,
    /// Kernel address of the code that freed the packet (`location`).
    pub location: u64,
    /// Drop reason value as numbered by the running kernel.
    pub reason: u32,
    /// Id in the stack trace map, or a negative errno when the stack was not recorded.
    pub stack_id: i32,
    /// Network namespace inode (0 when unknown).
    pub netns: u32,
    /// Interface index of `skb->dev` in its namespace (0 when none).
    pub ifindex: u32,
    /// EtherType of the packet (`skb->protocol`), host order.
    pub l3_proto: u16,
    /// IP protocol (6 TCP, 17 UDP, 1 ICMP, ...) when `EVENT_HAS_L3`.
    pub l4_proto: u8,
    /// `EVENT_*` bits.
    pub flags: u8,
    /// Source port, host order, when `EVENT_HAS_PORTS`.
    pub sport: u16,
    /// Destination port, host order, when `EVENT_HAS_PORTS`.
    pub dport: u16,
    /// TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10) for TCP.
    pub tcp_flags: u8,
    /// IP version (4 or 6) when `EVENT_HAS_L3`, else 0.
    pub ip_version: u8,
    /// Padding; zero.
    pub _pad: [u8; 6],
    /// Source address: IPv4 in the first 4 bytes, or IPv6.
    pub saddr: [u8; 16],
    /// Destination address: IPv4 in the first 4 bytes, or IPv6.
    pub daddr: [u8; 16],
    /// `skb->dev->name`, NUL-padded, read at the drop (the name in the device's namespace).
    pub ifname: [u8; 16],
}

impl DropEvent {
    /// An event with every field zero.
    pub const fn zeroed() -> Self {
        Self {
            timestamp_ns: 0,
            location: 0,
            reason: 0,
            stack_id: 0,
            netns: 0,
            ifindex: 0,
            l3_proto: 0,
            l4_proto: 0,
            flags: 0,
            sport: 0,
            dport: 0,
            tcp_flags: 0,
            ip_version: 0,
            _pad: [0; 6],
            saddr: [0; 16],
            daddr: [0; 16],
            ifname: [0; 16],
        }
    }
}

// Both layouts are part of the contract between the two sides: fail the build if they move.
const _: () = assert!(core::mem::size_of::<DropEvent>() == 96);
const _: () = assert!(core::mem::size_of::<ProgramConfig>() == 96);

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is valid and there are no padding bytes.
    unsafe impl aya::Pod for super::DropEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ProgramConfig {}
}
