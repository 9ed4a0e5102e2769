//! Real-kernel tests of the drop tracer: two network namespaces joined by a veth pair, real
//! nftables / iptables rules, real TCP and UDP traffic, and bpftrace as an independent
//! counter of the same tracepoint.
//!
//! They need root (they load eBPF programs and create namespaces), `ip`, `nft`,
//! `iptables-legacy` and `bpftrace` (`scripts/install-bpf-deps`); a test whose
//! prerequisite is missing fails, naming it, unless `KPILOT_ALLOW_SKIP=1`
//! (`tests/prereq.rs`, shared with the root package's tests).

use std::io::{BufRead as _, BufReader, Read as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kpilot_bpf::{DropFilter, DropReport, DropTracer, TraceConfig, TraceError, netns_inode};

#[path = "../../tests/prereq.rs"]
mod prereq;

use prereq::{BPFTRACE, IP, IPTABLES_LEGACY, NFT, ROOT, needs};

fn run(cmd: &[&str]) {
    run_stdin(cmd, "");
}

fn run_stdin(cmd: &[&str], stdin: &str) {
    let mut child = Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-bpf-deps)"));
    {
        use std::io::Write as _;
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(stdin.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces `<name>-a` (10.231.N.1) and `<name>-b` (10.231.N.2) joined by veth `va` /
/// `vb`. Deleted on drop, also when the test panics.
struct NetnsPair {
    a: String,
    b: String,
    ip_a: Ipv4Addr,
    ip_b: Ipv4Addr,
}

impl NetnsPair {
    fn new() -> NetnsPair {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("kpt{}-{n}", std::process::id());
        let pair = NetnsPair {
            a: format!("{base}-a"),
            b: format!("{base}-b"),
            ip_a: Ipv4Addr::new(10, 231, n as u8, 1),
            ip_b: Ipv4Addr::new(10, 231, n as u8, 2),
        };
        // The guard exists before the first namespace does, so a failure below cleans up.
        run(&["ip", "netns", "add", &pair.a]);
        run(&["ip", "netns", "add", &pair.b]);
        run(&[
            "ip", "link", "add", "va", "netns", &pair.a, "type", "veth", "peer", "name", "vb",
            "netns", &pair.b,
        ]);
        for (ns, dev, ip) in [(&pair.a, "va", pair.ip_a), (&pair.b, "vb", pair.ip_b)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    fn inode_b(&self) -> u64 {
        netns_inode(format!("/run/netns/{}", self.b)).expect("netns inode")
    }

    fn nft_b(&self, ruleset: &str) {
        run_stdin(&["ip", "netns", "exec", &self.b, "nft", "-f", "-"], ruleset);
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has joined namespace `ns` (setns affects only that thread;
/// sockets it creates stay in `ns`).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open netns");
        // SAFETY: a valid namespace fd; CLONE_NEWNET changes this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread panicked")
}

/// `count` TCP connection attempts from namespace `ns`, each given up after 300 ms: well
/// before the first SYN retransmission (1 s), so each attempt sends exactly one SYN.
fn syns(ns: &str, to: SocketAddr, count: usize) -> Vec<std::io::Result<()>> {
    in_netns(ns, move || {
        (0..count)
            .map(|_| TcpStream::connect_timeout(&to, Duration::from_millis(300)).map(drop))
            .collect()
    })
}

fn start(filter: DropFilter) -> DropTracer {
    let config = TraceConfig::new(Duration::from_secs(60)).with_filter(filter);
    match DropTracer::start(&config) {
        Ok(t) => t,
        Err(e) => panic!("starting the tracer: {e}"),
    }
}

fn stop(tracer: DropTracer) -> DropReport {
    let report = tracer.stop(|_| {}).expect("stopping the tracer");
    eprintln!("{}", report.to_table(true));
    assert_eq!(
        report.total,
        report.received + report.lost,
        "kernel count = received + lost"
    );
    assert_eq!(report.lost, 0, "nothing lost at this rate");
    assert_eq!(report.undecoded, 0);
    report
}

/// bpftrace counting the same tracepoint, as an independent witness.
struct Bpftrace {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Bpftrace {
    /// Starts bpftrace and waits until its probes are attached.
    fn start(program: &str) -> Bpftrace {
        let mut child = Command::new("bpftrace")
            .args(["-B", "none", "-e", program])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bpftrace not found: run scripts/install-bpf-deps");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.trim() == "ready" => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("bpftrace did not start: {err}");
                }
            }
        }
        Bpftrace { child, lines }
    }

    /// Stops bpftrace (SIGINT makes it print its maps) and returns map `@name`'s value.
    fn stop(mut self, name: &str) -> u64 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait bpftrace");
        let prefix = format!("@{name}: ");
        let mut value = 0;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            if let Some(v) = line.trim().strip_prefix(&prefix) {
                value = v.trim().parse().expect("bpftrace count");
            }
        }
        assert!(
            status.success() || status.code().is_none(),
            "bpftrace: {status}"
        );
        value
    }
}

#[test]
fn netfilter_drop_is_named_with_stack_tuple_netns_and_matches_bpftrace() {
    if !needs(
        "netfilter_drop_is_named_with_stack_tuple_netns_and_matches_bpftrace",
        &[ROOT, IP, NFT, BPFTRACE],
    ) {
        return;
    }
    let pair = NetnsPair::new();
    pair.nft_b(
        "table inet kpilot_test {
           chain input { type filter hook input priority 0; policy accept;
                         tcp dport 8080 counter drop; }
         }",
    );
    let netns_b = pair.inode_b();
    // The inode the library reads is the one `stat -L` shows.
    let stat = Command::new("stat")
        .args(["-L", "-c", "%i", &format!("/run/netns/{}", pair.b)])
        .output()
        .expect("stat");
    assert_eq!(
        String::from_utf8_lossy(&stat.stdout).trim(),
        netns_b.to_string()
    );

    let tracer = start(DropFilter {
        netns: Some(netns_b),
        reason: Some("NETFILTER_DROP".into()),
        ..Default::default()
    });
    let reason = tracer
        .reasons()
        .value("NETFILTER_DROP")
        .expect("kernel names NETFILTER_DROP");
    let witness = Bpftrace::start(&format!(
        "BEGIN {{ printf(\"ready\\n\"); }}
         tracepoint:skb:kfree_skb
           /args->reason == {reason} &&
            ((struct sk_buff *)args->skbaddr)->dev->nd_net.net->ns.inum == {netns_b}/
         {{ @drops = count(); }}"
    ));

    const SYNS: usize = 5;
    let results = syns(&pair.a, SocketAddr::new(pair.ip_b.into(), 8080), SYNS);
    assert!(
        results.iter().all(|r| r.is_err()),
        "the rule drops every SYN"
    );
    std::thread::sleep(Duration::from_millis(300));

    let bpftrace_count = witness.stop("drops");
    eprintln!("bpftrace counted {bpftrace_count}");
    let report = stop(tracer);

    assert!(report.total >= SYNS as u64, "one drop per SYN at least");
    assert_eq!(
        report.total, bpftrace_count,
        "kpilot and bpftrace count the same drops in the same window"
    );
    let groups: Vec<_> = report.by_reason("NETFILTER_DROP").collect();
    assert_eq!(groups.len(), SYNS, "one group per connection (source port)");
    for g in groups {
        assert_eq!(g.netns, netns_b);
        assert_eq!(g.protocol, "tcp");
        assert_eq!(g.src, Some(IpAddr::V4(pair.ip_a)));
        assert_eq!(g.dst, Some(IpAddr::V4(pair.ip_b)));
        assert_eq!(g.dport, Some(8080));
        assert!(g.sport.is_some_and(|p| p >= 1024));
        assert_eq!(g.ifname.as_deref(), Some("vb"));
        assert!(g.ifindex > 0);
        assert!(
            g.stack
                .iter()
                .any(|f| f.starts_with("nft_do_chain") || f.starts_with("ipt_do_table")),
            "stack names the netfilter chain: {:?}",
            g.stack
        );
        assert!(
            g.location.starts_with("nft_do_chain") || g.location.starts_with("nf_hook_slow"),
            "location {}",
            g.location
        );
        assert!(g.first_seen <= g.last_seen);
        assert!(g.first_seen >= report.started_at);
    }
}

#[test]
fn without_the_rule_the_same_traffic_is_not_dropped_by_netfilter() {
    if !needs(
        "without_the_rule_the_same_traffic_is_not_dropped_by_netfilter",
        &[ROOT, IP],
    ) {
        return;
    }
    let pair = NetnsPair::new();
    let listen = SocketAddr::new(pair.ip_b.into(), 8080);
    let listener = in_netns(&pair.b, move || {
        TcpListener::bind(listen).expect("bind in b")
    });
    let tracer = start(DropFilter {
        netns: Some(pair.inode_b()),
        ..Default::default()
    });
    let results = syns(&pair.a, listen, 5);
    std::thread::sleep(Duration::from_millis(300));
    let report = stop(tracer);
    drop(listener);
    assert!(
        results.iter().all(|r| r.is_ok()),
        "connections succeed: {results:?}"
    );
    assert_eq!(report.count_reason("NETFILTER_DROP"), 0);
}

#[test]
fn closed_port_is_no_socket() {
    if !needs("closed_port_is_no_socket", &[ROOT, IP]) {
        return;
    }
    let pair = NetnsPair::new();
    let tracer = start(DropFilter {
        netns: Some(pair.inode_b()),
        port: Some(9),
        ..Default::default()
    });
    let results = syns(&pair.a, SocketAddr::new(pair.ip_b.into(), 9), 3);
    assert!(results.iter().all(|r| {
        r.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
    }));
    std::thread::sleep(Duration::from_millis(200));
    let report = stop(tracer);
    assert_eq!(report.count_reason("NO_SOCKET"), 3, "one NO_SOCKET per SYN");
    assert_eq!(report.received, 3, "the port filter keeps only these");
    for g in report.by_reason("NO_SOCKET") {
        assert_eq!(
            (g.src, g.dst),
            (Some(pair.ip_a.into()), Some(pair.ip_b.into()))
        );
        assert_eq!(g.dport, Some(9));
        assert!(g.location.starts_with("tcp_v4_rcv"), "{}", g.location);
    }
}

#[test]
fn udp_filters_by_address_and_reason_and_iptables_legacy_drop_is_located() {
    if !needs(
        "udp_filters_by_address_and_reason_and_iptables_legacy_drop_is_located",
        &[ROOT, IP, IPTABLES_LEGACY],
    ) {
        return;
    }
    let pair = NetnsPair::new();
    // Outgoing UDP to port 7000 dropped by a legacy iptables rule in namespace a: the drop
    // happens on the way out, before the packet has a device, so the namespace comes from
    // the socket; ipt_do_table has returned by then, and nf_hook_slow frees the packet.
    run(&[
        "ip",
        "netns",
        "exec",
        &pair.a,
        "iptables-legacy",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        "7000",
        "-j",
        "DROP",
    ]);
    let netns_a = netns_inode(format!("/run/netns/{}", pair.a)).expect("inode");
    let tracer = start(DropFilter {
        addr: Some(pair.ip_b.into()),
        reason: Some("netfilter_drop".into()),
        ..Default::default()
    });
    let (to_drop, to_closed) = (
        SocketAddr::new(pair.ip_b.into(), 7000),
        SocketAddr::new(pair.ip_b.into(), 7001),
    );
    in_netns(&pair.a, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for _ in 0..4 {
            // Dropped by iptables: sendto reports EPERM, which is fine.
            let _ = sock.send_to(b"dropped", to_drop);
            // NO_SOCKET in b: excluded by the reason filter.
            let _ = sock.send_to(b"closed", to_closed);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let report = stop(tracer);
    assert_eq!(report.received, 4, "only NETFILTER_DROP to {}", pair.ip_b);
    for g in &report.drops {
        assert_eq!(g.reason, "NETFILTER_DROP");
        assert_eq!(g.protocol, "udp");
        assert_eq!(g.dport, Some(7000));
        assert_eq!(g.netns, netns_a);
        assert!(g.location.starts_with("nf_hook_slow"), "{}", g.location);
        assert!(
            g.stack.iter().any(|f| f.starts_with("__ip_local_out")),
            "{:?}",
            g.stack
        );
    }
}

#[test]
fn unknown_reason_is_rejected_with_the_kernels_names() {
    if !needs("unknown_reason_is_rejected_with_the_kernels_names", &[ROOT]) {
        return;
    }
    let config = TraceConfig::new(Duration::from_secs(1)).with_filter(DropFilter {
        reason: Some("NO_SUCH_REASON".into()),
        ..Default::default()
    });
    match DropTracer::start(&config) {
        Err(TraceError::UnknownReason { name, known }) => {
            assert_eq!(name, "NO_SUCH_REASON");
            assert!(known.contains("NO_SOCKET"), "{known}");
        }
        other => panic!("expected UnknownReason, got {other:?}"),
    }
}

#[test]
fn report_round_trips_through_json() {
    if !needs("report_round_trips_through_json", &[ROOT, IP]) {
        return;
    }
    let pair = NetnsPair::new();
    // A trace long enough, and traffic twice, so that a loaded machine that is slow to
    // attach the program still sees drops to round-trip.
    let config = TraceConfig::new(Duration::from_millis(4000)).with_filter(DropFilter {
        netns: Some(pair.inode_b()),
        ..Default::default()
    });
    let to = SocketAddr::new(pair.ip_b.into(), 9);
    let a = pair.a.clone();
    let traffic = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut sent = syns(&a, to, 2);
        std::thread::sleep(Duration::from_millis(1500));
        sent.extend(syns(&a, to, 2));
        sent
    });
    let mut live = 0;
    let report = kpilot_bpf::trace_drops_with(&config, |_| {
        live += 1;
        std::ops::ControlFlow::Continue(())
    })
    .expect("trace");
    traffic.join().expect("traffic");
    assert_eq!(live, report.received, "every drop reached the callback");
    assert!(report.received >= 2);
    let json = serde_json::to_string(&report).expect("json");
    let back: DropReport = serde_json::from_str(&json).expect("parse back");
    assert_eq!(back.drops, report.drops);
    assert_eq!(
        (back.total, back.lost, back.received),
        (report.total, report.lost, report.received)
    );
    assert!(back.duration.abs_diff(report.duration) < Duration::from_micros(1));
    let v: serde_json::Value = serde_json::from_str(&json).expect("value");
    for key in ["drops", "total", "lost", "duration_secs", "kernel"] {
        assert!(v.get(key).is_some(), "{key} in {json}");
    }
}

#[test]
fn lost_events_are_counted_when_the_ring_is_full() {
    if !needs(
        "lost_events_are_counted_when_the_ring_is_full",
        &[ROOT, IP, NFT],
    ) {
        return;
    }
    let pair = NetnsPair::new();
    pair.nft_b(
        "table inet kpilot_test {
           chain input { type filter hook input priority 0; policy accept;
                         udp dport 7000 counter drop; }
         }",
    );
    // The smallest ring (one page, about 39 events), and nobody reading it during the burst.
    let mut config = TraceConfig::new(Duration::from_secs(60)).with_filter(DropFilter {
        netns: Some(pair.inode_b()),
        reason: Some("NETFILTER_DROP".into()),
        ..Default::default()
    });
    config.ring_bytes = 4096;
    let tracer = DropTracer::start(&config).expect("start");
    let to = SocketAddr::new(pair.ip_b.into(), 7000);
    in_netns(&pair.a, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
        for _ in 0..1000 {
            let _ = sock.send_to(b"burst", to);
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let report = tracer.stop(|_| {}).expect("stop");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pair.b,
            "nft",
            "list",
            "chain",
            "inet",
            "kpilot_test",
            "input",
        ])
        .output()
        .expect("nft list");
    let text = String::from_utf8_lossy(&out.stdout);
    let nft: u64 = text
        .split("counter packets ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("nft counter");
    eprintln!(
        "nft {nft}, total {}, received {}, lost {}",
        report.total, report.received, report.lost
    );
    assert!(nft > 100, "the burst reached the rule");
    assert_eq!(
        report.total, nft,
        "the kernel-side count matches nft's counter"
    );
    assert!(report.lost > 0, "a one-page ring overflows");
    assert_eq!(
        report.received + report.lost,
        report.total,
        "lost events are counted"
    );
    assert_eq!(
        report.drops.iter().map(|g| g.count).sum::<u64>(),
        report.received
    );
}
