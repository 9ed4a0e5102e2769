//! The daemon's metrics, in the Prometheus text exposition format (0.0.4),
//! served on `/metrics` after the report families.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The histogram's bucket bounds, in seconds: a patrol takes seconds to
/// a few minutes.
pub const DURATION_BUCKETS: [f64; 10] =
    [1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// What one schedule's patrols did since the daemon started.
#[derive(Debug, Clone, Default)]
pub struct ScheduleMetrics {
    /// Runs by how they ended.
    pub runs: BTreeMap<&'static str, u64>,
    /// Durations: the count at or below each of [`DURATION_BUCKETS`].
    pub buckets: [u64; DURATION_BUCKETS.len()],
    /// Every duration's count.
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
    /// When a patrol last passed (Unix seconds).
    pub last_success: Option<f64>,
    /// Slots recorded as missed.
    pub missed: u64,
    /// Slots recorded as skipped.
    pub skipped: u64,
    /// Notifier calls that failed after their retries.
    pub notifier_failures: u64,
}

impl ScheduleMetrics {
    /// Counts a run that ended as `outcome` after `seconds`.
    pub fn observe(&mut self, outcome: &'static str, seconds: f64) {
        *self.runs.entry(outcome).or_default() += 1;
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// A label value, escaped as the text format wants.
pub fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A counter family: its name, its help, and how to read it.
type Counter = (&'static str, &'static str, fn(&ScheduleMetrics) -> u64);

/// The daemon's families for `patrol`, whose schedules are `schedules`.
pub fn render(patrol: &str, schedules: &BTreeMap<String, ScheduleMetrics>) -> String {
    let mut out = String::new();
    let labels = |s: &str| format!("patrol=\"{}\",schedule=\"{}\"", escape(patrol), escape(s));
    let mut family = |name: &str, kind: &str, help: &str, rows: &mut dyn FnMut(&mut String)| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        rows(&mut out);
    };
    family(
        "kpilot_patrol_duration_seconds",
        "histogram",
        "How long a patrol's run took, from its start to its end.",
        &mut |out| {
            for (s, m) in schedules {
                for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "kpilot_patrol_duration_seconds_bucket{{{},le=\"{bound}\"}} {}",
                        labels(s),
                        m.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "kpilot_patrol_duration_seconds_bucket{{{},le=\"+Inf\"}} {}",
                    labels(s),
                    m.count
                );
                let _ = writeln!(
                    out,
                    "kpilot_patrol_duration_seconds_sum{{{}}} {}",
                    labels(s),
                    m.sum
                );
                let _ = writeln!(
                    out,
                    "kpilot_patrol_duration_seconds_count{{{}}} {}",
                    labels(s),
                    m.count
                );
            }
        },
    );
    family(
        "kpilot_patrol_last_success_timestamp_seconds",
        "gauge",
        "When a patrol of the schedule last passed (Unix time).",
        &mut |out| {
            for (s, m) in schedules {
                if let Some(t) = m.last_success {
                    let _ = writeln!(
                        out,
                        "kpilot_patrol_last_success_timestamp_seconds{{{}}} {t}",
                        labels(s)
                    );
                }
            }
        },
    );
    family(
        "kpilot_patrol_runs_total",
        "counter",
        "Patrol runs by how they ended: passed, failed, blocked, error, interrupted, replaced.",
        &mut |out| {
            for (s, m) in schedules {
                for (outcome, n) in &m.runs {
                    let _ = writeln!(
                        out,
                        "kpilot_patrol_runs_total{{{},outcome=\"{outcome}\"}} {n}",
                        labels(s)
                    );
                }
            }
        },
    );
    let counters: [Counter; 3] = [
        (
            "kpilot_patrol_slots_missed_total",
            "Slots recorded as missed: no daemon ran, or later than startingDeadline.",
            |m| m.missed,
        ),
        (
            "kpilot_patrol_slots_skipped_total",
            "Slots recorded as skipped: concurrencyPolicy Forbid while the previous run went on.",
            |m| m.skipped,
        ),
        (
            "kpilot_notifier_failures_total",
            "Notifier calls that still failed after their retries.",
            |m| m.notifier_failures,
        ),
    ];
    for (name, help, get) in counters {
        family(name, "counter", help, &mut |out| {
            for (s, m) in schedules {
                let _ = writeln!(out, "{name}{{{}}} {}", labels(s), get(m));
            }
        });
    }
    out
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    patrol: String,
    shared: std::sync::Arc<std::sync::Mutex<crate::daemon::Shared>>,
) -> std::io::Result<()> {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let shared = std::sync::Arc::clone(&shared);
            let patrol = patrol.clone();
            async move {
                let body = match shared.lock() {
                    Ok(shared) => exposition(&patrol, &shared),
                    Err(_) => String::new(),
                };
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    axum::serve(listener, app).await
}

/// The whole `/metrics` page: the report families of each schedule's last
/// patrol, then the daemon's.
pub fn exposition(patrol: &str, shared: &crate::daemon::Shared) -> String {
    let mut body = String::new();
    let reports: Vec<(Vec<(String, String)>, &kpilot_report::Report)> = shared
        .reports
        .iter()
        .map(|(schedule, report)| {
            (
                vec![
                    ("patrol".to_owned(), patrol.to_owned()),
                    ("schedule".to_owned(), schedule.clone()),
                ],
                report,
            )
        })
        .collect();
    body.push_str(&kpilot_report::render::prometheus::render(&reports));
    body.push_str(&render(patrol, &shared.schedules));
    body
}
