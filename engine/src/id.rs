//! Identifiers of runs, steps and step instances.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of one run of a workflow: chosen with `--run-id` or generated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// Checks that `id` can name a run: it becomes a directory name, so only
    /// letters, digits, `-`, `_` and `.` are allowed, and it may not start with `.`.
    pub fn parse(id: &str) -> Result<Self, String> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(RunId(id.to_owned()))
        } else {
            Err(format!(
                "run id `{id}` is not valid: use 1 to 128 letters, digits, `-`, `_` or `.`, not starting with `.`"
            ))
        }
    }

    /// A fresh id: the workflow's name, the UTC time and a random suffix.
    /// It always starts with a letter or digit, so that the commands kpilot
    /// prints with it (`kpilot approve RUN STEP`) never read it as a flag.
    pub fn generate(workflow: &str) -> Self {
        let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
        let suffix: u16 = rand::random();
        let name: String = workflow
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(60)
            .collect();
        let name = name.trim_start_matches('-');
        if name.is_empty() {
            RunId(format!("run-{stamp}-{suffix:04x}"))
        } else {
            RunId(format!("{name}-{stamp}-{suffix:04x}"))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id of a step, as written in the workflow (`spec.steps[].id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    /// Checks the step id rule: lowercase letters, digits and `-`, starting
    /// with a letter or digit; a member of a group is `GROUP.MEMBER`, two such
    /// ids joined by a dot.
    pub fn parse(id: &str) -> Result<Self, String> {
        let part = |id: &str| {
            !id.is_empty()
                && id.len() <= 63
                && !id.starts_with('-')
                && id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        let ok = match id.split_once('.') {
            Some((group, member)) => part(group) && part(member),
            None => part(id),
        };
        if ok {
            Ok(StepId(id.to_owned()))
        } else {
            Err(format!(
                "`{id}` is not a valid step id: use 1 to 63 lowercase letters, digits and `-`, not starting with `-`"
            ))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of `member` of group `group`: `GROUP.MEMBER`.
    pub fn member(group: &StepId, member: &str) -> Result<Self, String> {
        StepId::parse(&format!("{}.{member}", group.0))
    }

    /// The group and the member's own id, for a member of a group.
    pub fn split_member(&self) -> Option<(&str, &str)> {
        self.0.split_once('.')
    }
}

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One execution target of a step: `global` for a step run once; a node's
/// name for a step fanned out over nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// The single instance of a step run by the global executor.
    pub fn global() -> Self {
        InstanceId("global".to_owned())
    }

    /// The instance for a named target, such as a node.
    pub fn named(name: impl Into<String>) -> Self {
        InstanceId(name.into())
    }

    /// The instance as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_start_with_a_letter_or_digit() {
        for name in ["-rf", "../x", "--", "", "ok-name", "é"] {
            let id = RunId::generate(name);
            assert!(
                id.as_str().starts_with(|c: char| c.is_ascii_alphanumeric()),
                "{name:?} gave {id}"
            );
            assert!(RunId::parse(id.as_str()).is_ok(), "{id}");
        }
    }
}
