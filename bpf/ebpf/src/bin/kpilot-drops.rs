//! `skb:kfree_skb` tracepoint program: one [`DropEvent`] per dropped packet.
//!
//! Every offset it uses (tracepoint record fields, `struct sk_buff`, `struct net_device`,
//! `struct sock`, `struct net`) comes from the loader in the read-only global
//! `KPILOT_CONFIG`, read from the running kernel's tracefs and BTF: nothing here assumes a
//! kernel's layout. Packet fields come from the packet's own headers (`skb->head +
//! skb->network_header`), not from a socket, so forwarded traffic is decoded too.
//!
//! Counters (per CPU): every hit, hits that passed the filters, hits lost because the ring
//! buffer was full, and hits without a stack. `matched = received + lost` by construction.
#![no_std]
#![no_main]

use aya_ebpf::{
    Global,
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_probe_read_kernel_buf},
    macros::{map, tracepoint},
    maps::{PerCpuArray, RingBuf, StackTrace},
    programs::{TracePointContext, tracing::StackIdContext as _},
};
use kpilot_bpf_common::{
    COUNTER_LOST, COUNTER_MATCHED, COUNTER_SEEN, COUNTER_STACK_ERRORS, COUNTERS_LEN, DropEvent,
    EVENT_HAS_DEV, EVENT_HAS_L3, EVENT_HAS_PORTS, EVENT_NETNS_FROM_SK, FILTER_ADDR4, FILTER_ADDR6,
    FILTER_NETNS, FILTER_PORT, FILTER_REASON, LAYOUT_HAS_SK, OPTION_NO_STACKS, ProgramConfig,
};

/// Dual MIT/GPL: `bpf_probe_read_kernel` and `bpf_get_stackid` are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Filled by the loader (`EbpfLoader::override_global`) before loading.
#[unsafe(no_mangle)]
static KPILOT_CONFIG: Global<ProgramConfig> = Global::new(ProgramConfig::zeroed());

/// Events to userspace. The loader sets the size (`map_max_entries`).
#[map(name = "KPILOT_EVENTS")]
static KPILOT_EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Kernel stacks, by id (`bpf_get_stackid`).
#[map(name = "KPILOT_STACKS")]
static KPILOT_STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// `COUNTER_*` counters.
#[map(name = "KPILOT_COUNTERS")]
static KPILOT_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;
/// `skb->network_header` value meaning "not set" (`(u16)~0U`).
const HEADER_UNSET: u16 = 0xffff;

#[repr(C)]
#[derive(Clone, Copy)]
#[allow(dead_code, reason = "mirrors the wire header; not every field is read")]
struct Ipv4Hdr {
    version_ihl: u8,
    tos: u8,
    tot_len: u16,
    id: u16,
    frag_off: u16,
    ttl: u8,
    protocol: u8,
    check: u16,
    saddr: [u8; 4],
    daddr: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
#[allow(dead_code, reason = "mirrors the wire header; not every field is read")]
struct Ipv6Hdr {
    vtc_flow: [u8; 4],
    payload_len: u16,
    nexthdr: u8,
    hop_limit: u8,
    saddr: [u8; 16],
    daddr: [u8; 16],
}

/// The first bytes of a TCP header (UDP and SCTP share the port fields).
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(dead_code, reason = "mirrors the wire header; not every field is read")]
struct L4Ports {
    sport: [u8; 2],
    dport: [u8; 2],
    seq: [u8; 4],
    ack: [u8; 4],
    doff: u8,
    flags: u8,
}

#[tracepoint]
pub fn kpilot_kfree_skb(ctx: TracePointContext) -> u32 {
    count(COUNTER_SEEN);
    let _ = on_kfree_skb(&ctx);
    0
}

#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = KPILOT_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot; only this CPU writes it while the program runs.
        unsafe { *counter += 1 };
    }
}

/// Reads a `T` at a kernel address.
#[inline(always)]
fn read<T: Copy>(addr: u64) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel faults safely on a bad address and returns an error.
    unsafe { bpf_probe_read_kernel(addr as *const T) }
}

#[inline(always)]
fn on_kfree_skb(ctx: &TracePointContext) -> Result<(), i32> {
    let cfg = KPILOT_CONFIG.load();
    // SAFETY: the offsets are the tracepoint's own (from its tracefs format file), so each
    // read is of the field's size within the record.
    let reason: u32 = unsafe { ctx.read_at(cfg.tp_reason as usize)? };
    if cfg.filter_flags & FILTER_REASON != 0 && reason != cfg.filter_reason {
        return Ok(());
    }
    // SAFETY: as above.
    let skb: u64 = unsafe { ctx.read_at(cfg.tp_skbaddr as usize)? };
    // SAFETY: as above.
    let location: u64 = unsafe { ctx.read_at(cfg.tp_location as usize)? };
    // SAFETY: as above.
    let protocol: u16 = unsafe { ctx.read_at::<u16>(cfg.tp_protocol as usize)? };

    let mut ev = DropEvent::zeroed();
    ev.reason = reason;
    ev.location = location;
    // The tracepoint stores ntohs(skb->protocol): already host order.
    ev.l3_proto = protocol;

    // Device, and the namespace it lives in.
    let dev: u64 = read(skb + cfg.skb_dev as u64).unwrap_or(0);
    if dev != 0 {
        ev.flags |= EVENT_HAS_DEV;
        ev.ifindex = read::<u32>(dev + cfg.dev_ifindex as u64).unwrap_or(0);
        // SAFETY: reads at most 16 bytes into the event's own buffer.
        let _ = unsafe {
            bpf_probe_read_kernel_buf((dev + cfg.dev_name as u64) as *const u8, &mut ev.ifname)
        };
        let net: u64 = read(dev + cfg.dev_net as u64).unwrap_or(0);
        if net != 0 {
            ev.netns = read::<u32>(net + cfg.net_ns_inum as u64).unwrap_or(0);
        }
    }
    if ev.netns == 0 && cfg.layout_flags & LAYOUT_HAS_SK != 0 {
        let sk: u64 = read(skb + cfg.skb_sk as u64).unwrap_or(0);
        if sk != 0 {
            let net: u64 = read(sk + cfg.sk_net as u64).unwrap_or(0);
            if net != 0 {
                ev.netns = read::<u32>(net + cfg.net_ns_inum as u64).unwrap_or(0);
                ev.flags |= EVENT_NETNS_FROM_SK;
            }
        }
    }
    if cfg.filter_flags & FILTER_NETNS != 0 && ev.netns != cfg.filter_netns {
        return Ok(());
    }

    parse_headers(&cfg, skb, &mut ev);

    if cfg.filter_flags & (FILTER_ADDR4 | FILTER_ADDR6) != 0 && !addr_matches(&cfg, &ev) {
        return Ok(());
    }
    if cfg.filter_flags & FILTER_PORT != 0
        && (ev.flags & EVENT_HAS_PORTS == 0
            || (ev.sport != cfg.filter_port && ev.dport != cfg.filter_port))
    {
        return Ok(());
    }

    count(COUNTER_MATCHED);
    ev.stack_id = if cfg.options & OPTION_NO_STACKS != 0 {
        -1
    } else {
        match ctx.get_stackid(&KPILOT_STACKS, 0) {
            Ok(id) => id as i32,
            Err(err) => {
                count(COUNTER_STACK_ERRORS);
                if err < 0 { err } else { -err }
            }
        }
    };
    // SAFETY: a helper with no arguments.
    ev.timestamp_ns = unsafe { bpf_ktime_get_ns() };
    // Wake the reader per batch, not per event (see ProgramConfig::wakeup_bytes).
    let wakeup = if KPILOT_EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= cfg.wakeup_bytes as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if KPILOT_EVENTS
        .output::<DropEvent>(&ev, wakeup as u64)
        .is_err()
    {
        count(COUNTER_LOST);
    }
    Ok(())
}

#[inline(always)]
fn addr_matches(cfg: &ProgramConfig, ev: &DropEvent) -> bool {
    if ev.flags & EVENT_HAS_L3 == 0 {
        return false;
    }
    if cfg.filter_flags & FILTER_ADDR4 != 0 {
        if ev.ip_version != 4 {
            return false;
        }
        let want = &cfg.filter_addr;
        let s = &ev.saddr;
        let d = &ev.daddr;
        return (s[0] == want[0] && s[1] == want[1] && s[2] == want[2] && s[3] == want[3])
            || (d[0] == want[0] && d[1] == want[1] && d[2] == want[2] && d[3] == want[3]);
    }
    if ev.ip_version != 6 {
        return false;
    }
    let want = u128::from_ne_bytes(cfg.filter_addr);
    u128::from_ne_bytes(ev.saddr) == want || u128::from_ne_bytes(ev.daddr) == want
}

/// Reads the IP and transport headers from the packet data. Leaves the event's L3/L4
/// fields unset when the network header is not set yet or the packet is not IP.
#[inline(always)]
fn parse_headers(cfg: &ProgramConfig, skb: u64, ev: &mut DropEvent) {
    let Ok(head) = read::<u64>(skb + cfg.skb_head as u64) else {
        return;
    };
    let Ok(nh_off) = read::<u16>(skb + cfg.skb_network_header as u64) else {
        return;
    };
    if head == 0 || nh_off == HEADER_UNSET {
        return;
    }
    let nh = head + nh_off as u64;

    let mut version = match ev.l3_proto {
        ETH_P_IP => 4,
        ETH_P_IPV6 => 6,
        _ => 0,
    };
    if version == 0 && ev.l3_proto == 0 {
        // Some paths drop before skb->protocol is set: trust the header's version nibble.
        if let Ok(first) = read::<u8>(nh) {
            version = first >> 4;
        }
    }

    let (l4_proto, th) = if version == 4 {
        let Ok(ip) = read::<Ipv4Hdr>(nh) else {
            return;
        };
        if ip.version_ihl >> 4 != 4 {
            return;
        }
        ev.ip_version = 4;
        ev.l4_proto = ip.protocol;
        ev.saddr[..4].copy_from_slice(&ip.saddr);
        ev.daddr[..4].copy_from_slice(&ip.daddr);
        ev.flags |= EVENT_HAS_L3;
        // Only the first fragment carries the transport header.
        if u16::from_be(ip.frag_off) & 0x1fff != 0 {
            return;
        }
        (ip.protocol, nh + ((ip.version_ihl & 0x0f) as u64) * 4)
    } else if version == 6 {
        let Ok(ip) = read::<Ipv6Hdr>(nh) else {
            return;
        };
        if ip.vtc_flow[0] >> 4 != 6 {
            return;
        }
        ev.ip_version = 6;
        ev.saddr = ip.saddr;
        ev.daddr = ip.daddr;
        ev.flags |= EVENT_HAS_L3;
        let mut next = ip.nexthdr;
        let mut off = nh + 40;
        // Skip up to four extension headers (hop-by-hop, routing, fragment, dest options).
        let mut i = 0;
        while i < 4 {
            match next {
                0 | 43 | 60 => {
                    let Ok(ext) = read::<[u8; 2]>(off) else {
                        return;
                    };
                    next = ext[0];
                    off += (ext[1] as u64 + 1) * 8;
                }
                44 => {
                    let Ok(frag) = read::<[u8; 4]>(off) else {
                        return;
                    };
                    ev.l4_proto = frag[0];
                    if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                        return;
                    }
                    next = frag[0];
                    off += 8;
                }
                _ => break,
            }
            i += 1;
        }
        ev.l4_proto = next;
        (next, off)
    } else {
        return;
    };

    match l4_proto {
        IPPROTO_TCP => {
            let Ok(l4) = read::<L4Ports>(th) else {
                return;
            };
            ev.sport = u16::from_be_bytes(l4.sport);
            ev.dport = u16::from_be_bytes(l4.dport);
            ev.tcp_flags = l4.flags;
            ev.flags |= EVENT_HAS_PORTS;
        }
        IPPROTO_UDP | IPPROTO_UDPLITE | IPPROTO_SCTP => {
            let Ok(ports) = read::<[u8; 4]>(th) else {
                return;
            };
            ev.sport = u16::from_be_bytes([ports[0], ports[1]]);
            ev.dport = u16::from_be_bytes([ports[2], ports[3]]);
            ev.flags |= EVENT_HAS_PORTS;
        }
        _ => {}
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
