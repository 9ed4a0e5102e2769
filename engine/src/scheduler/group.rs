//! Rolling groups: a sequence (a sub-DAG) of member steps run on each node,
//! at most `maxUnavailable` nodes at a time, stopping once more than
//! `maxFailures` nodes failed.
//!
//! The group is a fanned-out step like any other (`fan_out.rs`): one
//! instance per node, rolled over by its limits. Starting a node's instance
//! runs nothing itself; it lets that node's members start as their needs on
//! the same node are met. Every member is a step of its own in the plan
//! (`GROUP.MEMBER`) with one instance per node, so each node's progress
//! through cordon, drain, upgrade, wait and uncordon is a record in the
//! store, and a resume after kill -9 goes on from the member each node was
//! at. A node's instance of the group ends when all its members ended: it
//! failed if one of them failed, and holds its place among the unavailable
//! nodes while one of them waits, interrupted, for a person.

use std::sync::Arc;

use chrono::Utc;

use super::Scheduler;
use crate::plan::{GroupRole, Need};
use crate::state::{EventKind, SkipCause, StepRecord, StepState};
use crate::workflow::NeedOn;

impl Scheduler<'_> {
    /// The group's node list is known: every member gets the same nodes,
    /// recorded now so that a resume rolls over the same ones.
    pub(super) fn group_nodes_known(&mut self, g: usize) {
        let instances: Vec<_> = self.fans[g]
            .as_ref()
            .map(|f| f.nodes.iter().map(|n| n.instance.clone()).collect())
            .unwrap_or_default();
        let members = self.plan.steps[g].members().to_vec();
        for m in members {
            let fan = self.fans[m].get_or_insert_with(super::fan_out::Fan::default);
            fan.nodes.clear();
            for instance in &instances {
                fan.add(instance.clone(), StepRecord::pending());
            }
            for k in 0..instances.len() {
                self.set_node(m, k, StepRecord::pending(), false);
            }
        }
    }

    /// Node `k` of group `g` starts: its members whose needs are met queue up.
    pub(super) fn start_group_node(&mut self, g: usize, k: usize) {
        let Some(fan) = self.fans[g].as_mut() else {
            return;
        };
        let mut r = fan.nodes[k].record.clone();
        r.state = StepState::Running;
        r.started_at.get_or_insert_with(Utc::now);
        r.ended_at = None;
        r.reason = Some("rolling its steps on this node".into());
        self.set_node(g, k, r, true);
        self.advance_group_node(g, k);
    }

    /// Whether `need` of a member is met on node `k`, once final.
    fn member_need(&self, need: &Need, k: usize) -> Option<bool> {
        let state = self.fans[need.step].as_ref()?.nodes.get(k)?.record.state;
        if !state.is_final() {
            return None;
        }
        Some(match need.on {
            NeedOn::Success => state == StepState::Succeeded,
            NeedOn::Failure => state == StepState::Failed,
            NeedOn::Always => true,
        })
    }

    /// Decides what node `k` of group `g` does next: members whose needs on
    /// the node are met queue for a slot, those whose needs cannot be met
    /// are skipped, and once nothing more can happen on the node its
    /// instance of the group ends.
    pub(super) fn advance_group_node(&mut self, g: usize, k: usize) {
        let plan = Arc::clone(&self.plan);
        let members = plan.steps[g].members();
        loop {
            let mut changed = false;
            // A member running, waiting for its retry, or queued for a slot.
            let mut active = false;
            for &m in members {
                let Some(node) = self.fans[m].as_ref().and_then(|f| f.nodes.get(k)) else {
                    continue;
                };
                let state = node.record.state;
                if state.is_final() || state == StepState::Interrupted {
                    continue;
                }
                if state != StepState::Pending || node.queued {
                    active = true;
                    continue;
                }
                let Some(GroupRole::Member { needs, .. }) = &plan.steps[m].group else {
                    continue;
                };
                let verdicts: Vec<(usize, Option<bool>)> = needs
                    .iter()
                    .map(|n| (n.step, self.member_need(n, k)))
                    .collect();
                if verdicts.iter().any(|(_, v)| v.is_none()) {
                    continue;
                }
                if let Some((unmet, _)) = verdicts.iter().find(|(_, v)| *v == Some(false)) {
                    let need = &plan.steps[*unmet].id;
                    let need_state = self.fans[*unmet]
                        .as_ref()
                        .map_or(StepState::Pending, |f| f.nodes[k].record.state);
                    let mut r = node.record.clone();
                    r.state = StepState::Skipped;
                    r.reason = Some(format!(
                        "its need on `{need}` was not met on this node (`{need}` {})",
                        need_state.as_str()
                    ));
                    r.skip = Some(SkipCause::Need { step: need.clone() });
                    r.ended_at = Some(Utc::now());
                    self.set_node(m, k, r, true);
                    changed = true;
                    continue;
                }
                if let Some(fan) = self.fans[m].as_mut() {
                    fan.nodes[k].queued = true;
                }
                self.member_ready.push_back((m, k));
                active = true;
            }
            if changed {
                continue;
            }
            // Nothing runs on the node and nothing more can start: members
            // left pending wait on one interrupted, for a person.
            if !active {
                self.group_node_ended(g, k);
            }
            return;
        }
    }

    /// Starts one attempt of member `m` on node `k` (its slot is free).
    pub(super) fn start_member(&mut self, m: usize, k: usize) {
        if self.records[m].state == StepState::Pending {
            let mut r = self.records[m].clone();
            r.state = StepState::Running;
            r.started_at.get_or_insert_with(Utc::now);
            r.reason = Some("running on the group's nodes".into());
            self.set(m, r, false);
        }
        let Some(fan) = self.fans[m].as_mut() else {
            return;
        };
        fan.nodes[k].queued = false;
        fan.running += 1;
        self.start_node_attempt(m, k);
    }

    /// Nothing more happens on node `k` of group `g` in this drive: its
    /// instance sums up its members.
    fn group_node_ended(&mut self, g: usize, k: usize) {
        let plan = Arc::clone(&self.plan);
        let mut failed = Vec::new();
        let mut interrupted = Vec::new();
        for &m in plan.steps[g].members() {
            let Some(node) = self.fans[m].as_ref().and_then(|f| f.nodes.get(k)) else {
                continue;
            };
            let short = plan.steps[m]
                .id
                .split_member()
                .map_or(plan.steps[m].id.as_str(), |(_, s)| s)
                .to_owned();
            match node.record.state {
                StepState::Failed => failed.push(match &node.record.reason {
                    Some(reason) => format!("{short} failed: {reason}"),
                    None => format!("{short} failed"),
                }),
                StepState::Interrupted => interrupted.push(short),
                _ => {}
            }
        }
        let Some(fan) = self.fans[g].as_mut() else {
            return;
        };
        fan.running = fan.running.saturating_sub(1);
        let mut r = fan.nodes[k].record.clone();
        if !interrupted.is_empty() {
            fan.held += 1;
            r.state = StepState::Interrupted;
            r.reason = Some(format!(
                "{} interrupted on this node; check the node, then retry or skip {}",
                interrupted.join(", "),
                if interrupted.len() == 1 { "it" } else { "them" }
            ));
            self.set_node(g, k, r, true);
        } else if !failed.is_empty() {
            r.state = StepState::Failed;
            r.reason = Some(failed.join("; "));
            r.ended_at = Some(Utc::now());
            self.set_node(g, k, r, true);
            self.node_failed(g);
        } else {
            r.state = StepState::Succeeded;
            r.reason = None;
            r.ended_at = Some(Utc::now());
            self.set_node(g, k, r, true);
        }
        self.maybe_finish_fan(g);
    }

    /// Members of a group's nodes that will not start (the group stopped
    /// after too many failures) are skipped with it.
    pub(super) fn skip_group_node(&mut self, g: usize, k: usize, reason: &str) {
        let plan = Arc::clone(&self.plan);
        for &m in plan.steps[g].members() {
            let Some(node) = self.fans[m].as_ref().and_then(|f| f.nodes.get(k)) else {
                continue;
            };
            if node.record.state != StepState::Pending {
                continue;
            }
            let mut r = node.record.clone();
            r.state = StepState::Skipped;
            r.reason = Some(reason.to_owned());
            r.ended_at = Some(Utc::now());
            self.set_node(m, k, r, true);
        }
    }

    /// The group ended its drive: each member's own record sums up its nodes.
    pub(super) fn finish_members(&mut self, g: usize) {
        let plan = Arc::clone(&self.plan);
        for &m in plan.steps[g].members() {
            let Some(fan) = self.fans[m].as_ref() else {
                continue;
            };
            let total = fan.nodes.len();
            let failed = fan.named(StepState::Failed);
            let interrupted = fan.named(StepState::Interrupted);
            let succeeded = fan.named(StepState::Succeeded).len();
            let waiting = fan
                .nodes
                .iter()
                .filter(|n| matches!(n.record.state, StepState::Pending | StepState::Running))
                .count();
            let mut r = self.records[m].clone();
            if !interrupted.is_empty() {
                r.state = StepState::Interrupted;
                r.reason = Some(format!(
                    "{} of {total} nodes interrupted ({}); check them, then retry or skip the step",
                    interrupted.len(),
                    interrupted.join(", ")
                ));
                self.set(m, r, true);
                continue;
            }
            if waiting > 0 {
                r.state = StepState::Pending;
                r.reason = Some(format!("{waiting} of {total} nodes not done yet"));
                self.set(m, r, true);
                continue;
            }
            r.ended_at = Some(Utc::now());
            if failed.is_empty() {
                r.state = StepState::Succeeded;
                r.reason = Some(format!("{succeeded} of {total} nodes succeeded"));
            } else {
                r.state = StepState::Failed;
                r.reason = Some(format!(
                    "{} of {total} nodes failed: {}",
                    failed.len(),
                    failed.join("; ")
                ));
            }
            self.set(m, r, true);
        }
    }

    /// On resume: each member's nodes follow the resume policy of a
    /// fanned-out step (running ones re-run if idempotent, else held as
    /// interrupted unless decided; failed and skipped ones run again); a
    /// person's `--skip` of a member vouches for its nodes that did not end
    /// well; each node's instance of the group starts over where its members
    /// left it.
    pub(super) fn prepare_resume_group(
        &mut self,
        g: usize,
        retry: &[bool],
        skip: &mut [Option<String>],
    ) {
        let plan = Arc::clone(&self.plan);
        let members = plan.steps[g].members().to_vec();
        for &m in &members {
            if let Some(reason) = skip[m].take() {
                self.change.events.push(EventKind::Vouched {
                    step: plan.steps[m].id.clone(),
                    reason: reason.clone(),
                });
                let count = self.fans[m].as_ref().map_or(0, |f| f.nodes.len());
                for k in 0..count {
                    let Some(node) = self.fans[m].as_ref().map(|f| &f.nodes[k]) else {
                        break;
                    };
                    if !matches!(
                        node.record.state,
                        StepState::Interrupted | StepState::Failed | StepState::Running
                    ) {
                        continue;
                    }
                    let mut r = node.record.clone();
                    r.state = StepState::Succeeded;
                    r.reason = Some(format!("vouched: {reason}"));
                    r.ended_at = Some(Utc::now());
                    self.set_node(m, k, r, true);
                }
            } else {
                self.prepare_resume_nodes(m, retry[g] || retry[m], None);
            }
            if retry[m] {
                self.change.events.push(EventKind::Retried {
                    step: plan.steps[m].id.clone(),
                });
            }
            let mut r = self.records[m].clone();
            if r.state != StepState::Pending {
                r.state = StepState::Pending;
                r.reason = None;
                r.ended_at = None;
                self.set(m, r, true);
            }
        }
        let count = self.fans[g].as_ref().map_or(0, |f| f.nodes.len());
        for k in 0..count {
            let states: Vec<StepState> = members
                .iter()
                .filter_map(|&m| self.fans[m].as_ref().and_then(|f| f.nodes.get(k)))
                .map(|n| n.record.state)
                .collect();
            let next = if states.contains(&StepState::Interrupted) {
                StepState::Interrupted
            } else if states
                .iter()
                .all(|s| *s == StepState::Succeeded || *s == StepState::Skipped)
                && !states.is_empty()
                && self.fans[g]
                    .as_ref()
                    .is_some_and(|f| f.nodes[k].record.state == StepState::Succeeded)
            {
                StepState::Succeeded
            } else {
                StepState::Pending
            };
            let Some(node) = self.fans[g].as_ref().map(|f| &f.nodes[k]) else {
                break;
            };
            if node.record.state == next {
                continue;
            }
            let mut r = node.record.clone();
            r.state = next;
            if next == StepState::Pending {
                r.reason = None;
                r.ended_at = None;
            }
            self.set_node(g, k, r, true);
        }
    }
}
