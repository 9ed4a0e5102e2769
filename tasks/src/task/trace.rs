//! `trace`: packet drops traced with eBPF for a duration, judged by a CEL expectation.
//!
//! ```yaml
//! - id: no-firewall-drops
//!   phase: post-check
//!   trace:
//!     duration: 10s
//!     filter: {netns: /run/netns/x, addr: 10.244.1.5, port: 8080, reason: NETFILTER_DROP}
//!     expect: "!drops.exists(d, d.reason == 'NETFILTER_DROP' && d.dst.startsWith('10.244.'))"
//!     stacks: true
//! ```
//!
//! The tracer ([`kpilot_bpf::DropTracer`]) runs on a blocking thread for the duration and is
//! stopped as soon as the step's future is dropped (timeout, cancellation). The step's output
//! is the [`DropReport`] as JSON; `expect` sees its groups as `drops` and the whole report as
//! `report`. Tracing changes nothing on the node, so the kind is idempotent.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kpilot_bpf::report::tuple;
use kpilot_bpf::{DropFilter, DropGroup, DropReport, DropTracer, TraceConfig, TraceError};
use kpilot_engine::task::OUTPUT_TAIL;
use kpilot_engine::{ParseContext, Task, TaskContext, TaskKind, TaskOutput};
use kpilot_expr::{Expr, Scope};
use tokio::sync::mpsc;

/// The `trace` kind.
#[derive(Debug, Clone, Copy)]
pub struct TraceKind;

/// The longest trace a step may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// The duration of a trace that names none.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// How many groups the step's output keeps (the expectation sees them all).
pub const OUTPUT_GROUPS: usize = 200;

/// How often the blocking loop looks at the cancel flag, at the latest.
const POLL: Duration = Duration::from_millis(100);

/// What `expect` sees: the drop groups and the whole report.
pub const EXPECT_VARIABLES: [&str; 2] = ["drops", "report"];

/// How many of the offending groups a failure names.
const NAMED_GROUPS: usize = 3;

/// A network namespace, as a step or a flag names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSpec {
    /// An inode, as `stat -L -c %i` or `net:[INODE]` shows it.
    Inode(u64),
    /// A namespace file such as `/run/netns/NAME` or `/proc/PID/ns/net`, read where the
    /// trace runs (on the node, for a per-node step).
    Path(PathBuf),
}

impl NetnsSpec {
    /// Parses `4026532246`, `net:[4026532246]` or an absolute path.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let digits = text
            .strip_prefix("net:[")
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return match digits.parse::<u64>() {
                Ok(n) if n > 0 && u32::try_from(n).is_ok() => Ok(NetnsSpec::Inode(n)),
                _ => Err(format!(
                    "`{text}` is not a namespace inode (a number from 1 to {})",
                    u32::MAX
                )),
            };
        }
        if text.starts_with('/') {
            return Ok(NetnsSpec::Path(PathBuf::from(text)));
        }
        Err(format!(
            "`{text}` is neither a namespace inode nor an absolute path; write /run/netns/NAME, \
             /proc/PID/ns/net or the inode that `stat -L -c %i` prints"
        ))
    }

    /// The namespace's inode, reading the file for a path.
    pub fn inode(&self) -> Result<u64, String> {
        match self {
            NetnsSpec::Inode(n) => Ok(*n),
            NetnsSpec::Path(p) => kpilot_bpf::netns_inode(p)
                .map_err(|e| format!("cannot read network namespace {}: {e}", p.display())),
        }
    }
}

/// A parsed `trace` body.
#[derive(Debug)]
pub struct Trace {
    duration: Duration,
    netns: Option<NetnsSpec>,
    /// The filter without `netns`, which is resolved when the step runs.
    filter: DropFilter,
    stacks: bool,
    expect: Option<Expr>,
}

const HINT: &str = "write `trace: {duration: 10s, filter: {netns: /run/netns/NAME, addr: IP, port: N, reason: NETFILTER_DROP}, expect: \"size(drops) == 0\", stacks: true}`";

fn yaml_str<'a>(v: &'a serde_yaml::Value, field: &str, what: &str) -> Result<&'a str, String> {
    v.as_str()
        .ok_or_else(|| format!("`trace.{field}` must be a string ({what})"))
}

fn parse_filter(v: &serde_yaml::Value) -> Result<(Option<NetnsSpec>, DropFilter), String> {
    let serde_yaml::Value::Mapping(m) = v else {
        return Err(format!(
            "`trace.filter` must be a mapping of netns, addr, port and reason; {HINT}"
        ));
    };
    let mut netns = None;
    let mut filter = DropFilter::default();
    for (key, value) in m {
        match key.as_str() {
            Some("netns") => {
                let text =
                    match value {
                        serde_yaml::Value::Number(n) => n.to_string(),
                        serde_yaml::Value::String(s) => s.clone(),
                        _ => return Err(
                            "`trace.filter.netns` must be a path like /run/netns/NAME or an inode"
                                .into(),
                        ),
                    };
                netns = Some(
                    NetnsSpec::parse(&text).map_err(|e| format!("`trace.filter.netns`: {e}"))?,
                );
            }
            Some("addr") => {
                let text = yaml_str(value, "filter.addr", "one IP address")?;
                let addr: IpAddr = text.trim().parse().map_err(|_| {
                    format!(
                        "`trace.filter.addr`: `{text}` is not an IP address; write one address \
                         like 10.244.1.5 or fd00::1"
                    )
                })?;
                filter.addr = Some(addr);
            }
            Some("port") => {
                let port = value
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        format!(
                            "`trace.filter.port`: {} is not a port; write a number from 1 to 65535",
                            serde_yaml::to_string(value).unwrap_or_default().trim_end()
                        )
                    })?;
                filter.port = Some(port);
            }
            Some("reason") => {
                let text = yaml_str(value, "filter.reason", "a drop reason like NETFILTER_DROP")?;
                let ok = !text.is_empty()
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
                if !ok {
                    return Err(format!(
                        "`trace.filter.reason`: `{text}` is not a drop reason; write the kernel's \
                         name, like NETFILTER_DROP or NO_SOCKET"
                    ));
                }
                filter.reason = Some(text.to_owned());
            }
            _ => {
                return Err(format!(
                    "unknown key {} in `trace.filter`; the keys are netns, addr, port and reason",
                    key_text(key)
                ))
            }
        }
    }
    Ok((netns, filter))
}

fn key_text(key: &serde_yaml::Value) -> String {
    match key.as_str() {
        Some(s) => format!("`{s}`"),
        None => "a key that is not text".to_owned(),
    }
}

impl TaskKind for TraceKind {
    fn name(&self) -> &'static str {
        "trace"
    }

    fn idempotent_by_default(&self) -> bool {
        // Tracing only watches: running it again after a crash changes nothing.
        true
    }

    fn parse(
        &self,
        body: &serde_yaml::Value,
        _ctx: &ParseContext<'_>,
    ) -> Result<Arc<dyn Task>, String> {
        let serde_yaml::Value::Mapping(m) = body else {
            return Err(format!("`trace` must be a mapping; {HINT}"));
        };
        let mut trace = Trace {
            duration: DEFAULT_DURATION,
            netns: None,
            filter: DropFilter::default(),
            stacks: true,
            expect: None,
        };
        for (key, value) in m {
            match key.as_str() {
                Some("duration") => {
                    let text = match value {
                        serde_yaml::Value::String(s) => s.clone(),
                        _ => {
                            return Err(
                                "`trace.duration` must be a duration like 10s or 2m".to_owned()
                            )
                        }
                    };
                    let d = kpilot_engine::duration::parse_duration(&text)
                        .map_err(|e| format!("`trace.duration`: {e}"))?;
                    if d.is_zero() || d > MAX_DURATION {
                        return Err(format!(
                            "`trace.duration`: {text} is out of range; trace for more than 0s and \
                             at most 1h"
                        ));
                    }
                    trace.duration = d;
                }
                Some("filter") => {
                    let (netns, filter) = parse_filter(value)?;
                    trace.netns = netns;
                    trace.filter = filter;
                }
                Some("expect") => {
                    let text = yaml_str(value, "expect", "a CEL expression")?;
                    let expr = Expr::compile(text, &EXPECT_VARIABLES).map_err(|e| {
                        format!(
                            "`trace.expect`: {e}; it sees `drops` (the drop groups) and \
                             `report`, e.g. `!drops.exists(d, d.reason == 'NETFILTER_DROP')`"
                        )
                    })?;
                    trace.expect = Some(expr);
                }
                Some("stacks") => {
                    trace.stacks = value
                        .as_bool()
                        .ok_or("`trace.stacks` must be true or false")?;
                }
                _ => {
                    return Err(format!(
                        "unknown key {} in `trace`; the keys are duration, filter, expect and \
                         stacks",
                        key_text(key)
                    ))
                }
            }
        }
        Ok(Arc::new(trace))
    }
}

#[async_trait]
impl Task for Trace {
    async fn run(&self, _ctx: &TaskContext) -> TaskOutput {
        let mut filter = self.filter.clone();
        if let Some(ns) = &self.netns {
            match ns.inode() {
                Ok(inode) => filter.netns = Some(inode),
                Err(e) => return TaskOutput::failed(format!("`trace.filter.netns`: {e}")),
            }
        }
        let config = TraceConfig {
            duration: self.duration,
            filter,
            ring_bytes: kpilot_bpf::DEFAULT_RING_BYTES,
            stacks: self.stacks,
        };
        // Dropping this future drops the LiveTrace, which stops the tracer thread.
        match LiveTrace::start(config, None).finish().await {
            Ok(report) => judge(&report, self.expect.as_ref(), self.stacks),
            Err(e) => TaskOutput::failed(format!("tracing packet drops: {}", e.explain())),
        }
    }
}

/// Decides a step from its report: the expectation, the table, the output JSON.
pub fn judge(report: &DropReport, expect: Option<&Expr>, stacks: bool) -> TaskOutput {
    let json = match serde_json::to_value(report) {
        Ok(j) => j,
        Err(e) => return TaskOutput::failed(format!("cannot encode the drop report: {e}")),
    };
    let lost = lost_note(report);
    let mut stderr = String::new();
    if let Some(note) = &lost {
        let _ = writeln!(stderr, "warning: {note}");
    }
    let failure = expect.and_then(|expr| {
        let drops = &json["drops"];
        match expr.eval_bool(&Scope::with(&[("drops", drops), ("report", &json)])) {
            Ok(true) => None,
            Ok(false) => Some(format!(
                "expectation `{}` is false; {}",
                expr.source(),
                offenders(report, &json, expr)
            )),
            Err(e) => Some(format!("`trace.expect` could not be evaluated: {e}")),
        }
    });
    let failure = match (failure, &lost) {
        (Some(f), Some(note)) => Some(format!("{f}; {note}")),
        (f, _) => f,
    };
    let mut output = json;
    if report.drops.len() > OUTPUT_GROUPS {
        if let Some(groups) = output["drops"].as_array_mut() {
            groups.truncate(OUTPUT_GROUPS);
        }
        output["omitted_groups"] = serde_json::json!(report.drops.len() - OUTPUT_GROUPS);
    }
    TaskOutput {
        internal: false,
        failure,
        exit_code: None,
        stdout: head(report.to_table(stacks), OUTPUT_TAIL),
        stderr: stderr.into_bytes(),
        output: Some(output),
    }
}

/// A sentence on lost and missed drops, when there were any.
pub fn lost_note(report: &DropReport) -> Option<String> {
    let mut parts = Vec::new();
    if report.lost > 0 {
        parts.push(format!(
            "{} matching drops were lost (the ring buffer was full) and are in no group",
            report.lost
        ));
    }
    if report.missed > 0 {
        parts.push(format!(
            "{} drops were missed (another tracing program ran on the CPU)",
            report.missed
        ));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// One line for a group: reason, location, namespace, interface, protocol, tuple, count.
pub fn group_line(g: &DropGroup) -> String {
    format!(
        "{} at {} in netns {} ({}) {} {} x{}",
        g.reason,
        g.location,
        g.netns,
        g.ifname.as_deref().unwrap_or("-"),
        g.protocol,
        tuple(g.src, g.sport, g.dst, g.dport),
        g.count
    )
}

/// The groups that make the expectation false on their own (most frequent first), or
/// simply the most frequent when none does alone.
fn offenders(report: &DropReport, json: &serde_json::Value, expr: &Expr) -> String {
    let groups = json["drops"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let mut named: Vec<&DropGroup> = Vec::new();
    for (g, gj) in report.drops.iter().zip(groups) {
        let alone = serde_json::Value::Array(vec![gj.clone()]);
        if expr.eval_bool(&Scope::with(&[("drops", &alone), ("report", json)])) == Ok(false) {
            named.push(g);
            if named.len() == NAMED_GROUPS {
                break;
            }
        }
    }
    let what = if named.is_empty() {
        named = report.drops.iter().take(NAMED_GROUPS).collect();
        "top drops"
    } else {
        "offending drops"
    };
    let mut out = format!(
        "{} drops matched in {} groups",
        report.total,
        report.drops.len()
    );
    if !named.is_empty() {
        let lines: Vec<String> = named.iter().map(|g| group_line(g)).collect();
        let _ = write!(out, "; {what}: {}", lines.join("; "));
    }
    out
}

/// The first `max` bytes of `text` at most, cut after a line (or, for one long
/// line, before a character: never inside one), with a note of what was left out.
fn head(text: String, max: usize) -> Vec<u8> {
    if text.len() <= max {
        return text.into_bytes();
    }
    let within = &text[..char_floor(&text, max)];
    let cut = within.rfind('\n').map_or(within.len(), |i| i + 1);
    let mut out = text[..cut].to_owned();
    let _ = writeln!(
        out,
        "... {} more bytes: the step's output has every group",
        text.len() - cut
    );
    out.into_bytes()
}

/// The largest char boundary of `text` at or before byte `at` (what the
/// unstable `str::floor_char_boundary` does).
fn char_floor(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    // A UTF-8 character is at most 4 bytes: a boundary is at most 3 back.
    (at.saturating_sub(3)..=at)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// Why a trace could not run.
#[derive(Debug, thiserror::Error)]
pub enum TraceTaskError {
    /// The tracer failed to start or to read its events.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The blocking thread that ran the tracer panicked or was cancelled.
    #[error("the tracing thread ended without a report: {0}")]
    Thread(#[source] tokio::task::JoinError),
}

impl TraceTaskError {
    /// Whether the machine cannot trace at all (privileges, kernel features, build), as
    /// opposed to a failure while tracing.
    pub fn is_unavailable(&self) -> bool {
        match self {
            TraceTaskError::Trace(e) => {
                e.is_permission_denied()
                    || matches!(
                        e,
                        TraceError::NoDropReasons { .. }
                            | TraceError::NotBuilt
                            | TraceError::Btf(_)
                            | TraceError::Tracefs(_)
                    )
            }
            TraceTaskError::Thread(_) => false,
        }
    }

    /// Whether the request itself is wrong (an unknown reason, a bad filter).
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            TraceTaskError::Trace(TraceError::UnknownReason { .. } | TraceError::InvalidConfig(_))
        )
    }

    /// The error, with what to do about missing privileges.
    pub fn explain(&self) -> String {
        let said = matches!(
            self,
            TraceTaskError::Trace(TraceError::PermissionDenied { .. })
        );
        let denied = matches!(self, TraceTaskError::Trace(e) if e.is_permission_denied());
        if !said && (denied || (self.is_unavailable() && !running_as_root())) {
            format!("{self} (kpilot trace needs root, or CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN)")
        } else {
            self.to_string()
        }
    }
}

/// Whether this process runs with effective user id 0 (from `/proc/self/status`).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// A trace running on a blocking thread. Dropping it stops the tracer within 100 ms.
#[derive(Debug)]
pub struct LiveTrace {
    cancel: Arc<AtomicBool>,
    snapshots: mpsc::Receiver<DropReport>,
    handle: Option<tokio::task::JoinHandle<Result<DropReport, TraceError>>>,
}

impl LiveTrace {
    /// Starts tracing for `config.duration` on a blocking thread; with `every`, a report
    /// so far is offered every `every` (see [`LiveTrace::snapshot`]).
    pub fn start(config: TraceConfig, every: Option<Duration>) -> LiveTrace {
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, snapshots) = mpsc::channel(1);
        let flag = Arc::clone(&cancel);
        let handle = tokio::task::spawn_blocking(move || trace_until(&config, &flag, every, &tx));
        LiveTrace {
            cancel,
            snapshots,
            handle: Some(handle),
        }
    }

    /// Ends the trace early; [`LiveTrace::finish`] still returns the report.
    pub fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// The next report so far, or `None` once the trace has ended.
    pub async fn snapshot(&mut self) -> Option<DropReport> {
        self.snapshots.recv().await
    }

    /// Waits for the end of the trace and returns its report.
    pub async fn finish(mut self) -> Result<DropReport, TraceTaskError> {
        let Some(handle) = self.handle.take() else {
            unreachable!("finish consumes the LiveTrace")
        };
        match handle.await {
            Ok(result) => Ok(result?),
            Err(e) => Err(TraceTaskError::Thread(e)),
        }
    }
}

impl Drop for LiveTrace {
    fn drop(&mut self) {
        // After finish this is a no-op; otherwise (a timeout dropped the step) the blocking
        // loop sees it at its next poll and detaches the program.
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The blocking loop: start, poll until the deadline or the cancel flag, stop.
fn trace_until(
    config: &TraceConfig,
    cancel: &AtomicBool,
    every: Option<Duration>,
    snapshots: &mpsc::Sender<DropReport>,
) -> Result<DropReport, TraceError> {
    let mut tracer = DropTracer::start(config)?;
    let started = Instant::now();
    let deadline = started + config.duration;
    let mut next = every.map(|e| started + e);
    while !cancel.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        let mut wait = (deadline - now).min(POLL);
        if let Some(at) = next {
            wait = wait.min(at.saturating_duration_since(now));
        }
        tracer.poll(wait, |_| {})?;
        if let (Some(at), Some(every)) = (next, every) {
            if Instant::now() >= at {
                // A slow reader misses a snapshot rather than slowing the trace.
                let _ = snapshots.try_send(tracer.report()?);
                next = Some(at + every);
            }
        }
    }
    tracer.stop(|_| {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_cut_on_a_char_boundary_however_long_its_text() {
        // Interface names and other text of 2, 3 and 4 bytes a character,
        // the cut falling at every byte of them.
        for c in ['é', '网', '🦀'] {
            let name: String = std::iter::repeat_n(c, 9).collect();
            let text = format!("NO_SOCKET at tcp_v4_rcv ({name}) x3\n{name}{name}\n");
            for max in 1..text.len() {
                let out = String::from_utf8(head(text.clone(), max)).expect("UTF-8");
                let (kept, note) = out.split_once("... ").expect("a note");
                assert!(text.starts_with(kept), "{max}: {kept:?}");
                assert!(kept.len() <= max, "{max}: kept {} bytes", kept.len());
                assert!(note.contains("more bytes"), "{note}");
                if text.as_bytes()[..max].contains(&b'\n') {
                    assert!(kept.ends_with('\n'), "cut after a line: {kept:?}");
                }
            }
        }
        assert_eq!(head("short\n".to_owned(), 100), b"short\n");
        assert_eq!(char_floor("aé", 2), 1);
        assert_eq!(char_floor("aé", 3), 3);
    }

    fn parse(yaml: &str) -> Result<Arc<dyn Task>, String> {
        let body: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
        TraceKind.parse(
            &body,
            &ParseContext {
                step_id: "t",
                params: &[],
            },
        )
    }

    #[test]
    fn parses_every_field() {
        parse(
            "{duration: 3s, filter: {netns: /run/netns/x, addr: 10.0.0.2, port: 80, \
             reason: NETFILTER_DROP}, expect: \"size(drops) == 0\", stacks: false}",
        )
        .expect("valid");
        parse("{filter: {netns: 4026532246}}").expect("inode");
        parse("{filter: {netns: 'net:[4026532246]'}}").expect("net:[inode]");
        parse("{}").expect("defaults");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("{duration: soon}", "trace.duration"),
            ("{duration: 0s}", "trace.duration"),
            ("{duration: 2h}", "trace.duration"),
            ("{expect: 'drops.exists(d, '}", "trace.expect"),
            ("{filter: {prot: 1}}", "`prot` in `trace.filter`"),
            ("{filter: {addr: 10.0.0.300}}", "trace.filter.addr"),
            ("{filter: {port: 70000}}", "trace.filter.port"),
            ("{filter: {port: 0}}", "trace.filter.port"),
            ("{filter: {netns: x}}", "trace.filter.netns"),
            ("{filter: {netns: 99999999999}}", "trace.filter.netns"),
            ("{filter: {reason: 'no such'}}", "trace.filter.reason"),
            ("{stacks: maybe}", "trace.stacks"),
            ("{durations: 1s}", "`durations` in `trace`"),
            ("[1]", "`trace` must be a mapping"),
        ];
        for (yaml, want) in cases {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.contains(want), "{yaml}: {err}");
        }
    }

    fn report(groups: Vec<DropGroup>, lost: u64) -> DropReport {
        let received: u64 = groups.iter().map(|g| g.count).sum();
        serde_json::from_value(serde_json::json!({
            "kernel": {"release": "6.18", "machine": "x86_64", "reasons_source": "btf",
                       "reasons": 130, "tracefs": "/sys/kernel/tracing"},
            "filter": {}, "started_at": "2026-11-25T14:37:29Z", "duration_secs": 1.0,
            "total": received + lost, "received": received, "lost": lost, "missed": 0,
            "seen": 100, "stack_errors": 0, "undecoded": 0,
            "drops": groups,
        }))
        .expect("report")
    }

    fn group(reason: &str, dst: &str, count: u64) -> DropGroup {
        serde_json::from_value(serde_json::json!({
            "reason": reason, "reason_code": 12, "location": "nft_do_chain+0x3e8",
            "stack": ["nft_do_chain+0x3e8", "nf_hook_slow+0x43"], "netns": 4026532246u64,
            "ifindex": 2, "ifname": "vb", "protocol": "tcp", "src": "10.231.0.1",
            "dst": dst, "sport": 40000, "dport": 8080, "count": count,
            "first_seen": "2026-11-25T14:37:29Z", "last_seen": "2026-11-25T14:37:30Z",
        }))
        .expect("group")
    }

    #[test]
    fn the_expectation_decides_and_names_offenders() {
        let expr = Expr::compile(
            "!drops.exists(d, d.reason == 'NETFILTER_DROP' && d.dst.startsWith('10.244.'))",
            &EXPECT_VARIABLES,
        )
        .expect("compiles");
        let r = report(
            vec![
                group("NO_SOCKET", "10.244.0.9", 9),
                group("NETFILTER_DROP", "10.244.0.7", 3),
                group("NETFILTER_DROP", "10.9.0.1", 2),
            ],
            0,
        );
        let out = judge(&r, Some(&expr), true);
        let failure = out.failure.expect("fails");
        assert!(
            failure.contains("offending drops: NETFILTER_DROP at nft_do_chain+0x3e8 in netns 4026532246 (vb) tcp 10.231.0.1:40000 -> 10.244.0.7:8080 x3"),
            "{failure}"
        );
        assert!(!failure.contains("NO_SOCKET"), "{failure}");
        let output = out.output.expect("output");
        assert_eq!(output["drops"][1]["reason"], "NETFILTER_DROP");
        assert!(String::from_utf8_lossy(&out.stdout).contains("nf_hook_slow+0x43"));

        let ok = report(vec![group("NO_SOCKET", "10.244.0.9", 1)], 0);
        assert_eq!(judge(&ok, Some(&expr), true).failure, None);
        let size = Expr::compile(
            "size(drops.filter(d, d.reason == 'NETFILTER_DROP')) == 0",
            &EXPECT_VARIABLES,
        )
        .expect("compiles");
        assert_eq!(judge(&ok, Some(&size), false).failure, None);
        assert!(judge(&r, Some(&size), false).failure.is_some());
        assert_eq!(judge(&r, None, false).failure, None);
    }

    #[test]
    fn lost_events_are_never_silent() {
        let expr = Expr::compile("size(drops) == 0", &EXPECT_VARIABLES).expect("compiles");
        let r = report(vec![group("NETFILTER_DROP", "10.0.0.1", 1)], 7);
        let out = judge(&r, Some(&expr), true);
        let failure = out.failure.expect("fails");
        assert!(failure.contains("7 matching drops were lost"), "{failure}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("7 matching drops were lost"));
        assert_eq!(out.output.expect("output")["lost"], 7);
        let passing = Expr::compile("report.lost > 0", &EXPECT_VARIABLES).expect("compiles");
        let out = judge(&r, Some(&passing), true);
        assert_eq!(out.failure, None);
        assert!(String::from_utf8_lossy(&out.stderr).contains("lost"));
    }

    #[test]
    fn a_non_boolean_expectation_fails_the_step() {
        let expr = Expr::compile("size(drops)", &EXPECT_VARIABLES).expect("compiles");
        let out = judge(&report(vec![], 0), Some(&expr), true);
        assert!(out.failure.expect("fails").contains("trace.expect"));
    }

    #[test]
    fn large_reports_keep_the_top_groups() {
        let groups = (0..OUTPUT_GROUPS + 5)
            .map(|i| group("NO_SOCKET", &format!("10.0.{}.{}", i / 250, i % 250), 1))
            .collect();
        let out = judge(&report(groups, 0), None, true);
        let output = out.output.expect("output");
        assert_eq!(
            output["drops"].as_array().map(Vec::len),
            Some(OUTPUT_GROUPS)
        );
        assert_eq!(output["omitted_groups"], 5);
    }

    #[test]
    fn netns_specs() {
        assert_eq!(NetnsSpec::parse("42"), Ok(NetnsSpec::Inode(42)));
        assert_eq!(NetnsSpec::parse("net:[42]"), Ok(NetnsSpec::Inode(42)));
        assert_eq!(
            NetnsSpec::parse("/run/netns/a"),
            Ok(NetnsSpec::Path("/run/netns/a".into()))
        );
        assert!(NetnsSpec::parse("0").is_err());
        assert!(NetnsSpec::parse("a").is_err());
        let own = NetnsSpec::parse("/proc/self/ns/net")
            .and_then(|s| s.inode())
            .expect("own netns");
        assert!(own > 0);
        assert!(NetnsSpec::parse("/nonexistent")
            .and_then(|s| s.inode())
            .is_err());
    }
}
