//! Loading the `skb:kfree_skb` program, reading its events, and stopping it.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aya::maps::{MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::trace_point::TracePointLinkId;
use aya::programs::{ProgramError, TracePoint};
use aya::{Ebpf, EbpfError, EbpfLoader};
use chrono::{DateTime, Utc};
use kpilot_bpf_common::{
    CONFIG_GLOBAL, COUNTER_LOST, COUNTER_MATCHED, COUNTER_SEEN, COUNTER_STACK_ERRORS, COUNTERS_MAP,
    DropEvent, EVENT_HAS_DEV, EVENT_HAS_L3, EVENT_HAS_PORTS, EVENTS_MAP, FILTER_ADDR4,
    FILTER_ADDR6, FILTER_NETNS, FILTER_PORT, FILTER_REASON, KFREE_SKB_PROGRAM, OPTION_NO_STACKS,
    ProgramConfig, STACKS_MAP,
};

use crate::config::{DropFilter, TraceConfig};
use crate::error::{Result, TraceError};
use crate::kallsyms::Kallsyms;
use crate::kernel::{KernelInfo, KernelProbe};
use crate::reasons::DropReasons;
use crate::report::{
    Aggregator, DropReport, PacketDrop, ethertype_name, ip_protocol_name, tcp_flags_name,
};

/// The eBPF object built by build.rs from `ebpf/src/bin/kpilot-drops.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/kpilot-drops"));

/// The kernel-side counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Every `skb:kfree_skb` hit.
    pub seen: u64,
    /// Hits that passed the filters.
    pub matched: u64,
    /// Matched hits lost because the ring buffer was full.
    pub lost: u64,
    /// Matched hits without a recorded stack.
    pub stack_errors: u64,
}

/// A loaded and attached drop tracer.
///
/// [`crate::trace_drops`] is the simple way to use it; hold a `DropTracer` yourself to drive
/// the loop (a live table that refreshes, cancellation from another task):
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use kpilot_bpf::{DropTracer, TraceConfig};
///
/// let mut tracer = DropTracer::start(&TraceConfig::new(Duration::from_secs(5)))?;
/// let end = Instant::now() + Duration::from_secs(5);
/// while Instant::now() < end {
///     tracer.poll(Duration::from_millis(200), |drop| println!("{} {}", drop.reason, drop.location))?;
///     let so_far = tracer.report()?; // refresh a table from so_far.drops
///     # let _ = so_far;
/// }
/// let report = tracer.stop(|_| {})?;
/// println!("{}", report.to_table(true));
/// # Ok::<(), kpilot_bpf::TraceError>(())
/// ```
///
/// Dropping a `DropTracer` detaches and unloads the program.
pub struct DropTracer {
    ebpf: Ebpf,
    link: Option<TracePointLinkId>,
    ring: RingBuf<MapData>,
    stacks: StackTraceMap<MapData>,
    counters: PerCpuArray<MapData, u64>,
    probe: KernelProbe,
    kallsyms: Kallsyms,
    stack_cache: HashMap<u32, Arc<[String]>>,
    no_stack: Arc<[String]>,
    agg: Aggregator,
    filter: DropFilter,
    started_at: DateTime<Utc>,
    started: Instant,
    stopped: Option<Duration>,
    /// Add to `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) to get nanoseconds since the epoch.
    mono_to_unix_ns: i128,
    undecoded: u64,
}

impl std::fmt::Debug for DropTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DropTracer")
            .field("kernel", &self.probe.info)
            .field("filter", &self.filter)
            .field("received", &self.agg.received())
            .finish_non_exhaustive()
    }
}

fn is_eperm(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    // SAFETY: timespec is plain data; clock_gettime fills it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer; CLOCK_REALTIME and CLOCK_MONOTONIC always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// The program's configuration: the kernel layout plus the filter, checked.
pub fn program_config(
    layout: &ProgramConfig,
    reasons: &DropReasons,
    filter: &DropFilter,
) -> Result<ProgramConfig> {
    let mut cfg = *layout;
    if let Some(name) = &filter.reason {
        let value = reasons
            .value(name)
            .ok_or_else(|| TraceError::UnknownReason {
                name: name.clone(),
                known: reasons
                    .iter()
                    .map(|(_, n)| n)
                    .filter(|n| !n.is_empty())
                    .take(12)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        cfg.filter_flags |= FILTER_REASON;
        cfg.filter_reason = value;
    }
    if let Some(netns) = filter.netns {
        cfg.filter_netns = u32::try_from(netns).map_err(|_| {
            TraceError::InvalidConfig(format!(
                "netns {netns} is not a namespace inode (inodes are 32-bit)"
            ))
        })?;
        cfg.filter_flags |= FILTER_NETNS;
    }
    match filter.addr {
        Some(IpAddr::V4(a)) => {
            cfg.filter_flags |= FILTER_ADDR4;
            cfg.filter_addr[..4].copy_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                cfg.filter_flags |= FILTER_ADDR4;
                cfg.filter_addr[..4].copy_from_slice(&v4.octets());
            } else {
                cfg.filter_flags |= FILTER_ADDR6;
                cfg.filter_addr = a.octets();
            }
        }
        None => {}
    }
    if let Some(port) = filter.port {
        cfg.filter_flags |= FILTER_PORT;
        cfg.filter_port = port;
    }
    Ok(cfg)
}

fn load_error(source: EbpfError) -> TraceError {
    let denied = match &source {
        EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. }) => {
            is_eperm(io_error)
        }
        _ => false,
    };
    if denied {
        TraceError::PermissionDenied {
            what: "creating eBPF maps",
            source: Box::new(source),
        }
    } else {
        TraceError::Object { source }
    }
}

impl DropTracer {
    /// Reads the kernel's layout, loads the program with `config`'s filter and attaches it
    /// to `skb:kfree_skb`. Tracing runs from here until [`DropTracer::stop`] or drop;
    /// `config.duration` is not used (the caller decides when to stop).
    pub fn start(config: &TraceConfig) -> Result<DropTracer> {
        if OBJECT.is_empty() {
            return Err(TraceError::NotBuilt);
        }
        let ring = config.ring_bytes;
        if !ring.is_power_of_two() || ring < 4096 {
            return Err(TraceError::InvalidConfig(format!(
                "ring_bytes {ring} must be a power of two of at least 4096"
            )));
        }
        let probe = KernelProbe::read()?;
        let mut cfg = program_config(&probe.layout, &probe.reasons, &config.filter)?;
        if !config.stacks {
            cfg.options |= OPTION_NO_STACKS;
        }
        // One wake-up per 1/8 of the ring (at most 256 KiB, ~2,500 events); poll()'s timeout
        // delivers whatever is queued below that.
        cfg.wakeup_bytes = (ring / 8).min(256 << 10);
        let kallsyms = Kallsyms::load().map_err(|source| TraceError::Io {
            what: "reading /proc/kallsyms",
            source,
        })?;
        if kallsyms.is_empty() {
            tracing::warn!(
                "/proc/kallsyms shows no addresses (not root?): stacks stay unsymbolized"
            );
        }

        let mut ebpf = EbpfLoader::new()
            .override_global(CONFIG_GLOBAL, &cfg, true)
            .map_max_entries(EVENTS_MAP, ring)
            .load(OBJECT)
            .map_err(load_error)?;

        let prog = kfree_skb_program(&mut ebpf)?;
        prog.load().map_err(|source| match source {
            ProgramError::LoadError {
                ref io_error,
                ref verifier_log,
            } => {
                if is_eperm(io_error) {
                    TraceError::PermissionDenied {
                        what: "loading the eBPF program",
                        source: Box::new(source),
                    }
                } else {
                    TraceError::Verifier {
                        program: KFREE_SKB_PROGRAM,
                        log: verifier_log.to_string(),
                        source,
                    }
                }
            }
            source => TraceError::Program {
                what: "loading the eBPF program",
                source,
            },
        })?;

        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(TraceError::Missing(name))
        };
        let ring =
            RingBuf::try_from(take(&mut ebpf, EVENTS_MAP)?).map_err(|source| TraceError::Map {
                what: "opening the event ring buffer",
                source,
            })?;
        let stacks = StackTraceMap::try_from(take(&mut ebpf, STACKS_MAP)?).map_err(|source| {
            TraceError::Map {
                what: "opening the stack map",
                source,
            }
        })?;
        let counters = PerCpuArray::try_from(take(&mut ebpf, COUNTERS_MAP)?).map_err(|source| {
            TraceError::Map {
                what: "opening the counters",
                source,
            }
        })?;

        let mono_to_unix_ns = clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC);
        let started_at = Utc::now();
        let started = Instant::now();
        let prog = kfree_skb_program(&mut ebpf)?;
        let link = prog
            .attach("skb", "kfree_skb")
            .map_err(|source| TraceError::Program {
                what: "attaching to tracepoint skb:kfree_skb",
                source,
            })?;
        tracing::info!(
            kernel = %probe.info.release,
            reasons = probe.info.reasons,
            filter = ?config.filter,
            "tracing packet drops"
        );
        Ok(DropTracer {
            ebpf,
            link: Some(link),
            ring,
            stacks,
            counters,
            probe,
            kallsyms,
            stack_cache: HashMap::new(),
            no_stack: Arc::from(Vec::new()),
            agg: Aggregator::default(),
            filter: config.filter.clone(),
            started_at,
            started,
            stopped: None,
            mono_to_unix_ns,
            undecoded: 0,
        })
    }

    /// The kernel being traced.
    pub fn kernel(&self) -> &KernelInfo {
        &self.probe.info
    }

    /// The kernel's drop reasons.
    pub fn reasons(&self) -> &DropReasons {
        &self.probe.reasons
    }

    /// Waits up to `timeout` for drops, then hands every queued one to `on_drop` (and to
    /// the aggregate). Returns how many were handled.
    ///
    /// The kernel wakes the reader once per batch (1/8 of the ring buffer, at most 256 KiB)
    /// rather than per event, so under light traffic a drop is delivered when `timeout`
    /// runs out: keep it short (100 ms) for a live view.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut on_drop: impl FnMut(&PacketDrop),
    ) -> Result<usize> {
        let mut pfd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(TraceError::Io {
                    what: "waiting for drop events",
                    source: err,
                });
            }
        }
        Ok(self.drain(&mut on_drop))
    }

    fn drain(&mut self, on_drop: &mut dyn FnMut(&PacketDrop)) -> usize {
        let mut n = 0;
        loop {
            let event = {
                let Some(item) = self.ring.next() else {
                    break;
                };
                if item.len() < size_of::<DropEvent>() {
                    None
                } else {
                    // SAFETY: the record holds at least a DropEvent, which is plain data
                    // valid for any bytes; read_unaligned makes no alignment assumption.
                    Some(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DropEvent>()) })
                }
            };
            let Some(event) = event else {
                self.undecoded += 1;
                tracing::warn!("ring buffer record shorter than a DropEvent (build mismatch?)");
                continue;
            };
            let drop = self.decode(&event);
            self.agg.add(&drop);
            on_drop(&drop);
            n += 1;
        }
        n
    }

    fn stack(&mut self, stack_id: i32) -> Arc<[String]> {
        let Ok(id) = u32::try_from(stack_id) else {
            return Arc::clone(&self.no_stack);
        };
        if let Some(s) = self.stack_cache.get(&id) {
            return Arc::clone(s);
        }
        let frames: Arc<[String]> = match self.stacks.get(&id, 0) {
            Ok(trace) => trace
                .frames()
                .iter()
                .filter(|f| f.ip != 0)
                .map(|f| self.kallsyms.symbolize(f.ip))
                .collect(),
            Err(err) => {
                tracing::warn!(stack_id = id, %err, "reading a kernel stack");
                return Arc::clone(&self.no_stack);
            }
        };
        self.stack_cache.insert(id, Arc::clone(&frames));
        frames
    }

    fn decode(&mut self, ev: &DropEvent) -> PacketDrop {
        let unix_ns = i128::from(ev.timestamp_ns) + self.mono_to_unix_ns;
        let time = DateTime::from_timestamp_nanos(i64::try_from(unix_ns).unwrap_or(i64::MAX));
        let has_l3 = ev.flags & EVENT_HAS_L3 != 0;
        let has_ports = ev.flags & EVENT_HAS_PORTS != 0;
        let addr = |raw: &[u8; 16]| -> Option<IpAddr> {
            match (has_l3, ev.ip_version) {
                (true, 4) => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
                (true, 6) => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
                _ => None,
            }
        };
        let ifname = if ev.flags & EVENT_HAS_DEV != 0 {
            let end = ev.ifname.iter().position(|&b| b == 0).unwrap_or(16);
            let name = String::from_utf8_lossy(&ev.ifname[..end]).into_owned();
            (!name.is_empty()).then_some(name)
        } else {
            None
        };
        let protocol = if has_l3 {
            ip_protocol_name(ev.ip_version, ev.l4_proto)
        } else {
            ethertype_name(ev.l3_proto)
        };
        PacketDrop {
            time,
            reason: self.probe.reasons.name(ev.reason),
            reason_code: ev.reason,
            location: self.kallsyms.symbolize(ev.location),
            stack: self.stack(ev.stack_id),
            netns: u64::from(ev.netns),
            ifindex: ev.ifindex,
            ifname,
            protocol,
            src: addr(&ev.saddr),
            dst: addr(&ev.daddr),
            sport: has_ports.then_some(ev.sport),
            dport: has_ports.then_some(ev.dport),
            tcp_flags: (has_l3 && has_ports && ev.l4_proto == 6)
                .then(|| tcp_flags_name(ev.tcp_flags)),
        }
    }

    /// The kernel-side counters now.
    pub fn counters(&self) -> Result<Counters> {
        let read = |index: u32| -> Result<u64> {
            let values = self
                .counters
                .get(&index, 0)
                .map_err(|source| TraceError::Map {
                    what: "reading the counters",
                    source,
                })?;
            Ok(values.iter().sum())
        };
        Ok(Counters {
            seen: read(COUNTER_SEEN)?,
            matched: read(COUNTER_MATCHED)?,
            lost: read(COUNTER_LOST)?,
            stack_errors: read(COUNTER_STACK_ERRORS)?,
        })
    }

    /// Hits of `skb:kfree_skb` the kernel did not run the program for (it skips a tracing
    /// program nested in another on the same CPU), from `bpf_prog_info.recursion_misses`.
    fn missed(&self) -> u64 {
        let fd = self
            .ebpf
            .program(KFREE_SKB_PROGRAM)
            .and_then(|p| p.fd().ok())
            .map(|fd| recursion_misses(fd.as_fd()));
        match fd {
            Some(Ok(n)) => n,
            Some(Err(err)) => {
                tracing::debug!(%err, "reading recursion_misses");
                0
            }
            None => 0,
        }
    }

    /// The report so far: counts and groups of what has been received. While tracing,
    /// `total` may run ahead of `received + lost` by the events still queued.
    pub fn report(&self) -> Result<DropReport> {
        let c = self.counters()?;
        Ok(DropReport {
            kernel: self.probe.info.clone(),
            filter: self.filter.clone(),
            started_at: self.started_at,
            duration: self.stopped.unwrap_or_else(|| self.started.elapsed()),
            total: c.matched,
            received: self.agg.received(),
            lost: c.lost,
            missed: self.missed(),
            seen: c.seen,
            stack_errors: c.stack_errors,
            undecoded: self.undecoded,
            drops: self.agg.groups(),
        })
    }

    /// Detaches the program, hands the drops still queued to `on_drop`, and returns the
    /// final report (where `total = received + lost`).
    pub fn stop(mut self, mut on_drop: impl FnMut(&PacketDrop)) -> Result<DropReport> {
        if let Some(link) = self.link.take() {
            let prog: &mut TracePoint = self
                .ebpf
                .program_mut(KFREE_SKB_PROGRAM)
                .ok_or(TraceError::Missing("program kpilot_kfree_skb"))?
                .try_into()
                .map_err(|source| TraceError::Program {
                    what: "kpilot_kfree_skb is not a tracepoint program",
                    source,
                })?;
            prog.detach(link).map_err(|source| TraceError::Program {
                what: "detaching from skb:kfree_skb",
                source,
            })?;
        }
        self.stopped = Some(self.started.elapsed());
        // A program that started before the detach may still be writing: drain until quiet.
        while self.poll(Duration::from_millis(20), &mut on_drop)? > 0 {}
        self.report()
    }
}

/// `recursion_misses` of a loaded program: `BPF_OBJ_GET_INFO_BY_FD` into the UAPI
/// `struct bpf_prog_info`, where the field sits at byte 208 (a stable ABI; checked against
/// BTF in the tests).
fn recursion_misses(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    const RECURSION_MISSES_OFFSET: usize = 208;
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u64; 27];
    let attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).map_err(std::io::Error::other)?,
        info_len: size_of_val(&info) as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points at a buffer of info_len bytes that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            size_of::<InfoAttr>(),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let returned = attr.info_len as usize;
    if returned < RECURSION_MISSES_OFFSET + 8 {
        // Kernel older than 5.12: no such field.
        return Ok(0);
    }
    Ok(info[RECURSION_MISSES_OFFSET / 8])
}

/// The tracepoint program in the loaded object, looked up again after each
/// step that needs `ebpf` mutably (taking its maps).
fn kfree_skb_program(ebpf: &mut Ebpf) -> Result<&mut TracePoint, TraceError> {
    ebpf.program_mut(KFREE_SKB_PROGRAM)
        .ok_or(TraceError::Missing("program kpilot_kfree_skb"))?
        .try_into()
        .map_err(|source| TraceError::Program {
            what: "kpilot_kfree_skb is not a tracepoint program",
            source,
        })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::tracefs::Format;

    fn reasons() -> DropReasons {
        let fmt = Format::parse(
            Path::new("f"),
            "print fmt: \"%s\", __print_symbolic(REC->reason, { 3, \"NO_SOCKET\" }, { 12, \"NETFILTER_DROP\" })",
        );
        DropReasons::from_format(&fmt).unwrap()
    }

    #[test]
    fn filter_to_program_config() {
        let layout = ProgramConfig::zeroed();
        let cfg = program_config(&layout, &reasons(), &DropFilter::default()).unwrap();
        assert_eq!(cfg.filter_flags, 0);

        let f = DropFilter {
            netns: Some(4026531833),
            addr: Some("10.1.2.3".parse().unwrap()),
            port: Some(8080),
            reason: Some("netfilter_drop".into()),
        };
        let cfg = program_config(&layout, &reasons(), &f).unwrap();
        assert_eq!(
            cfg.filter_flags,
            FILTER_REASON | FILTER_NETNS | FILTER_ADDR4 | FILTER_PORT
        );
        assert_eq!(cfg.filter_reason, 12);
        assert_eq!(cfg.filter_netns, 4026531833);
        assert_eq!(&cfg.filter_addr[..4], &[10, 1, 2, 3]);
        assert_eq!(cfg.filter_port, 8080);

        let v6 = DropFilter {
            addr: Some("fd00::1".parse().unwrap()),
            ..Default::default()
        };
        let cfg = program_config(&layout, &reasons(), &v6).unwrap();
        assert_eq!(cfg.filter_flags, FILTER_ADDR6);
        assert_eq!(cfg.filter_addr[0], 0xfd);

        let bad = DropFilter {
            reason: Some("NOPE".into()),
            ..Default::default()
        };
        let err = program_config(&layout, &reasons(), &bad).unwrap_err();
        assert!(err.to_string().contains("NETFILTER_DROP"), "{err}");
        let bad = DropFilter {
            netns: Some(1 << 40),
            ..Default::default()
        };
        assert!(program_config(&layout, &reasons(), &bad).is_err());
    }

    #[test]
    fn tracer_can_move_to_a_blocking_thread() {
        fn send<T: Send + 'static>() {}
        send::<DropTracer>();
        send::<DropReport>();
        send::<PacketDrop>();
    }

    #[test]
    fn prog_info_offset_matches_btf() {
        if !crate::prereq::needs("prog_info_offset_matches_btf", &[crate::prereq::BTF]) {
            return;
        }
        let btf = crate::btf::Btf::from_kernel().expect("the kernel's BTF is readable");
        let m = btf
            .member_sized("bpf_prog_info", "recursion_misses", 8)
            .unwrap();
        assert_eq!(m.offset, 208);
    }
}
