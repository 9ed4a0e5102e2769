//! The `kind: Patrol` file: its schedules, what each runs, and whom to tell.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::slots::Cron;

/// A Patrol file that cannot be used; every variant names the file, and
/// [`PatrolFileError::Invalid`] the field and what to write instead.
#[derive(Debug, thiserror::Error)]
pub enum PatrolFileError {
    /// The file cannot be read.
    #[error("{file}: cannot read the Patrol file: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A field is wrong.
    #[error("{file}: {field}: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// The field, like `spec.schedules[0] (workloads).cron`.
        field: String,
        /// What is wrong and what to write.
        message: String,
    },
}

/// A validated Patrol file.
#[derive(Debug, Clone)]
pub struct Patrol {
    /// The file, absolute.
    pub file: PathBuf,
    /// `metadata.name`: names its state, `STATE/patrols/NAME/`.
    pub name: String,
    /// Its schedules, in the file's order.
    pub schedules: Vec<Schedule>,
    /// Whom to tell when something is new or resolved.
    pub notify: Option<Notify>,
}

/// One schedule of a patrol.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name, unique in the patrol.
    pub name: String,
    /// When its slots are.
    pub cron: Cron,
    /// What each slot runs.
    pub target: Target,
    /// What a slot does while the previous run still goes.
    pub policy: Policy,
    /// A slot missed by more than this is recorded as missed, not run late.
    pub starting_deadline: Option<Duration>,
    /// How many runs (and their reports) are kept.
    pub history: u32,
}

/// What a slot runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A `kind: Report` file, run as `kpilot inspect --scenario patrol --report FILE`.
    Report(PathBuf),
    /// A workflow file with params, run as `kpilot run FILE -p NAME=VALUE`.
    Workflow {
        /// The file, absolute.
        file: PathBuf,
        /// Its params.
        params: Vec<(String, String)>,
    },
}

/// What a slot does while a run of the same schedule is still going, as a
/// Kubernetes CronJob's `concurrencyPolicy`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub enum Policy {
    /// The slot is recorded as skipped.
    #[default]
    Forbid,
    /// The running one is stopped and recorded as replaced; the new one starts.
    Replace,
    /// Both run.
    Allow,
}

/// Whom to tell about a patrol's new and resolved findings.
#[derive(Debug, Clone)]
pub struct Notify {
    /// A command given the notification JSON on stdin; a relative program
    /// path is relative to the Patrol file, and it runs in that directory.
    pub command: Vec<String>,
    /// A URL the same JSON is POSTed to.
    pub webhook: Option<String>,
    /// How many times a failing notifier is tried again.
    pub retries: u32,
    /// The Patrol file's directory.
    pub dir: PathBuf,
}

/// The history kept when the file says none.
pub const DEFAULT_HISTORY: u32 = 20;

/// The retries when the file says none.
pub const DEFAULT_RETRIES: u32 = 3;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPatrol {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RawSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    schedules: Vec<RawSchedule>,
    #[serde(default)]
    notify: Option<RawNotify>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSchedule {
    name: String,
    cron: String,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    report: Option<String>,
    #[serde(default)]
    workflow: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    concurrency_policy: Option<String>,
    #[serde(default)]
    starting_deadline: Option<String>,
    #[serde(default)]
    history: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    retries: Option<u32>,
}

/// Whether `name` is 1 to 63 of `[a-z0-9-]`, not starting or ending with `-`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

impl Patrol {
    /// Reads and validates a Patrol file.
    pub fn read(path: &Path) -> Result<Self, PatrolFileError> {
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let text = std::fs::read_to_string(path).map_err(|source| PatrolFileError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Validates a Patrol file's text; `file` is where it was read from
    /// (relative paths in it are relative to its directory).
    pub fn parse(file: &Path, text: &str) -> Result<Self, PatrolFileError> {
        let invalid = |field: &str, message: String| PatrolFileError::Invalid {
            file: file.to_owned(),
            field: field.to_owned(),
            message,
        };
        let raw: RawPatrol = serde_yaml::from_str(text).map_err(|e| {
            let location = e
                .location()
                .map(|l| format!("line {}", l.line()))
                .unwrap_or_else(|| "the file".into());
            invalid(
                &location,
                format!("{e}; a Patrol file is `apiVersion: kpilot/v1`, `kind: Patrol`, `metadata: {{name: NAME}}`, `spec: {{schedules: [...]}}` (docs/patrol.md)"),
            )
        })?;
        if raw.api_version != "kpilot/v1" {
            return Err(invalid(
                "apiVersion",
                format!(
                    "`{}` is not known; write `apiVersion: kpilot/v1`",
                    raw.api_version
                ),
            ));
        }
        if raw.kind != "Patrol" {
            return Err(invalid(
                "kind",
                format!("`{}` is not a Patrol; write `kind: Patrol`", raw.kind),
            ));
        }
        if !is_name(&raw.metadata.name) {
            return Err(invalid(
                "metadata.name",
                format!(
                    "`{}` is not a patrol name; use 1 to 63 lowercase letters, digits and `-` (it names the directory STATE/patrols/NAME/)",
                    raw.metadata.name
                ),
            ));
        }
        if raw.spec.schedules.is_empty() {
            return Err(invalid(
                "spec.schedules",
                "is empty; give at least one schedule: `- {name: checks, cron: \"*/15 * * * *\", report: report.yaml}`".into(),
            ));
        }
        let dir = file.parent().unwrap_or(Path::new("/")).to_owned();
        let mut schedules: Vec<Schedule> = Vec::new();
        for (i, s) in raw.spec.schedules.into_iter().enumerate() {
            let at = |field: &str| format!("spec.schedules[{i}] ({}).{field}", s.name);
            if !is_name(&s.name) {
                return Err(invalid(
                    &format!("spec.schedules[{i}].name"),
                    format!("`{}` is not a schedule name; use 1 to 63 lowercase letters, digits and `-`", s.name),
                ));
            }
            if schedules.iter().any(|o| o.name == s.name) {
                return Err(invalid(
                    &at("name"),
                    "another schedule has this name; give each schedule its own".into(),
                ));
            }
            let zone: chrono_tz::Tz = match &s.time_zone {
                None => chrono_tz::UTC,
                Some(z) => z.parse().map_err(|_| {
                    invalid(
                        &at("timeZone"),
                        format!("`{z}` is not a time zone; write an IANA name like Europe/Berlin or UTC"),
                    )
                })?,
            };
            let cron = Cron::parse(&s.cron, zone).map_err(|e| invalid(&at("cron"), e))?;
            let resolve = |p: &str| {
                let path = Path::new(p);
                if path.is_absolute() {
                    path.to_owned()
                } else {
                    dir.join(path)
                }
            };
            let exists = |field: &str, p: &Path, what: &str| {
                if p.is_file() {
                    Ok(())
                } else {
                    Err(invalid(
                        &at(field),
                        format!("{}: no such file; give the path of {what}, relative to the Patrol file", p.display()),
                    ))
                }
            };
            let target = match (&s.report, &s.workflow) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &at("report"),
                        "both `report` and `workflow` are given; a schedule runs one: keep one of them".into(),
                    ))
                }
                (None, None) => {
                    return Err(invalid(
                        &at("report"),
                        "neither `report` nor `workflow` is given; write `report: FILE` (a `kind: Report` file) or `workflow: FILE`".into(),
                    ))
                }
                (Some(r), None) => {
                    if !s.params.is_empty() {
                        return Err(invalid(
                            &at("params"),
                            "params are for a `workflow`; a report's checks take theirs from the Report file".into(),
                        ));
                    }
                    let path = resolve(r);
                    exists("report", &path, "a `kind: Report` file")?;
                    Target::Report(path)
                }
                (None, Some(w)) => {
                    let path = resolve(w);
                    exists("workflow", &path, "a workflow file")?;
                    let mut params = Vec::new();
                    for (name, value) in &s.params {
                        let value = match value {
                            serde_yaml::Value::String(v) => v.clone(),
                            serde_yaml::Value::Number(n) => n.to_string(),
                            serde_yaml::Value::Bool(b) => b.to_string(),
                            _ => {
                                return Err(invalid(
                                    &at(&format!("params.{name}")),
                                    "is not a string, number or boolean; write `NAME: VALUE`".into(),
                                ))
                            }
                        };
                        params.push((name.clone(), value));
                    }
                    Target::Workflow { file: path, params }
                }
            };
            let policy = match s.concurrency_policy.as_deref() {
                None | Some("Forbid") => Policy::Forbid,
                Some("Replace") => Policy::Replace,
                Some("Allow") => Policy::Allow,
                Some(other) => {
                    return Err(invalid(
                        &at("concurrencyPolicy"),
                        format!("`{other}` is not a policy; write Forbid, Replace or Allow"),
                    ))
                }
            };
            let starting_deadline = match &s.starting_deadline {
                None => None,
                Some(d) => Some(kpilot_engine::duration::parse_duration(d).map_err(|e| {
                    invalid(
                        &at("startingDeadline"),
                        format!("{e}; write a duration like 30s or 5m"),
                    )
                })?),
            };
            let history = s.history.unwrap_or(DEFAULT_HISTORY);
            if history == 0 {
                return Err(invalid(
                    &at("history"),
                    "0 would delete each run as it ends, and the next patrol could not be compared with it; write 1 or more".into(),
                ));
            }
            schedules.push(Schedule {
                name: s.name,
                cron,
                target,
                policy,
                starting_deadline,
                history,
            });
        }
        let notify = match raw.spec.notify {
            None => None,
            Some(n) => {
                let command = n.command.unwrap_or_default();
                if command.is_empty() && n.webhook.is_none() {
                    return Err(invalid(
                        "spec.notify",
                        "names no notifier; give `command: [PROGRAM, ARG...]` or `webhook: URL`, or remove `notify`".into(),
                    ));
                }
                if let Some(first) = command.first() {
                    if first.is_empty() {
                        return Err(invalid(
                            "spec.notify.command",
                            "its program is empty; write `command: [./notify.sh]`".into(),
                        ));
                    }
                }
                if let Some(url) = &n.webhook {
                    if !(url.starts_with("http://") || url.starts_with("https://"))
                        || reqwest::Url::parse(url).is_err()
                    {
                        return Err(invalid(
                            "spec.notify.webhook",
                            format!("`{url}` is not an http:// or https:// URL; write `webhook: https://hooks.example/kpilot`"),
                        ));
                    }
                }
                Some(Notify {
                    command,
                    webhook: n.webhook,
                    retries: n.retries.unwrap_or(DEFAULT_RETRIES),
                    dir,
                })
            }
        };
        Ok(Patrol {
            file: file.to_owned(),
            name: raw.metadata.name,
            schedules,
            notify,
        })
    }
}

impl Policy {
    /// Its name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Forbid => "Forbid",
            Policy::Replace => "Replace",
            Policy::Allow => "Allow",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Patrol, PatrolFileError> {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("r.yaml"), "x").expect("write");
        Patrol::parse(&dir.path().join("p.yaml"), text)
    }

    const HEAD: &str =
        "apiVersion: kpilot/v1\nkind: Patrol\nmetadata: {name: prod}\nspec:\n  schedules:\n";

    #[test]
    fn a_good_file_parses() {
        let p = parse(&format!("{HEAD}    - {{name: a, cron: \"*/2 * * * * *\", timeZone: Europe/Berlin, report: r.yaml, startingDeadline: 5m, history: 3}}\n")).expect("valid");
        assert_eq!(p.schedules[0].history, 3);
        assert_eq!(p.schedules[0].policy, Policy::Forbid);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                "cron: \"61 * * * *\", report: r.yaml",
                "spec.schedules[0] (a).cron",
            ),
            (
                "cron: \"* * * * *\", timeZone: Mars/Base, report: r.yaml",
                "spec.schedules[0] (a).timeZone",
            ),
            ("cron: \"* * * * *\"", "spec.schedules[0] (a).report"),
            (
                "cron: \"* * * * *\", report: r.yaml, workflow: r.yaml",
                "spec.schedules[0] (a).report",
            ),
            (
                "cron: \"* * * * *\", report: r.yaml, concurrencyPolicy: Never",
                "concurrencyPolicy",
            ),
            ("cron: \"* * * * *\", report: nope.yaml", "no such file"),
        ];
        for (fields, want) in cases {
            let e = parse(&format!("{HEAD}    - {{name: a, {fields}}}\n")).expect_err(fields);
            assert!(e.to_string().contains(want), "{fields}: {e}");
            assert!(e.to_string().contains("p.yaml"), "{e}");
        }
    }
}
