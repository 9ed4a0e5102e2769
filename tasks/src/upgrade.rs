//! The plan of an upgrade, for `kpilot plan upgrade`: the hops (one minor
//! version each, [`kpilot_catalog::upgrade`]), and for each hop the APIs its
//! release removes (the removed-API table of [`crate::apis`]) and the addon
//! versions it needs.

use kpilot_catalog::upgrade::{hops_as, Addons, Hop, PlanError};
use serde::Serialize;

use crate::apis::{ApiError, ApiVersionTable};

/// Why there is no plan.
#[derive(Debug, thiserror::Error)]
pub enum UpgradePlanError {
    /// The versions do not make a plan (bad input).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The built-in removed-API table does not parse (a bug of kpilot's build).
    #[error(transparent)]
    Table(#[from] ApiError),
}

impl UpgradePlanError {
    /// Whether the person can fix it by giving other versions.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            UpgradePlanError::Plan(PlanError::Version { .. } | PlanError::Range(_))
        )
    }
}

/// An API version of a kind that a hop's release no longer serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RemovedApi {
    /// The apiVersion, like `extensions/v1beta1`.
    pub api_version: String,
    /// The kind, like `Deployment`; empty: every kind of it.
    pub kind: String,
    /// What to write instead, when there is something.
    pub replacement: Option<String>,
    /// The release that removes it, like `1.16.0`.
    pub removed_in: String,
}

/// One hop of the plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HopPlan {
    /// Where it starts.
    pub from: String,
    /// Where it ends.
    pub to: String,
    /// The APIs removed in its target's minor release.
    pub removed_apis: Vec<RemovedApi>,
    /// The addon versions kubeadm pins for its target.
    pub addons: Addons,
    /// The hop, for the workflow builder.
    #[serde(skip)]
    pub hop: Hop,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePlan {
    /// Where it starts: `--from`, or the cluster's version.
    pub from: String,
    /// Where it ends: `--to`.
    pub to: String,
    /// The hops, in order.
    pub hops: Vec<HopPlan>,
}

impl UpgradePlan {
    /// The hops, as the workflow builder takes them.
    pub fn hops(&self) -> Vec<Hop> {
        self.hops.iter().map(|h| h.hop.clone()).collect()
    }
}

/// Plans the upgrade from `from` to `to`; `from_flag` names where `from` came
/// from in errors (`--from`, `the cluster's version`).
pub fn plan(
    from: &str,
    from_flag: &'static str,
    to: &str,
) -> Result<UpgradePlan, UpgradePlanError> {
    let hops = hops_as(from, from_flag, to)?;
    let table = ApiVersionTable::builtin()?;
    let hops: Vec<HopPlan> = hops
        .into_iter()
        .map(|hop| {
            let target = kpilot_catalog::applies::kube_version(&hop.to)
                .unwrap_or_else(|| semver::Version::new(0, 0, 0));
            let removed_apis = table
                .removed_in(target.major, target.minor)
                .into_iter()
                .map(|row| RemovedApi {
                    api_version: row.version.clone(),
                    kind: row.kind.clone(),
                    replacement: row.replacement_api.clone(),
                    removed_in: row
                        .removed_in
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                })
                .collect();
            HopPlan {
                from: hop.from.clone(),
                to: hop.to.clone(),
                removed_apis,
                addons: hop.addons.clone(),
                hop,
            }
        })
        .collect();
    Ok(UpgradePlan {
        from: hops.first().map(|h| h.from.clone()).unwrap_or_default(),
        to: hops.last().map(|h| h.to.clone()).unwrap_or_default(),
        hops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_to_1_16_names_what_1_16_removed() {
        let p = plan("1.12", "--from", "1.16").expect("plan");
        assert_eq!(p.hops.len(), 4);
        let removed: Vec<String> = p.hops[3]
            .removed_apis
            .iter()
            .map(|r| format!("{} {}", r.api_version, r.kind))
            .collect();
        for want in [
            "extensions/v1beta1 Deployment",
            "extensions/v1beta1 DaemonSet",
            "extensions/v1beta1 NetworkPolicy",
            "apps/v1beta1 Deployment",
            "apps/v1beta2 DaemonSet",
        ] {
            assert!(removed.iter().any(|r| r == want), "{want} in {removed:?}");
        }
        assert!(p.hops[0]
            .removed_apis
            .iter()
            .all(|r| r.removed_in.starts_with("1.13")));
        let e = plan("1.16", "--from", "1.12").expect_err("backwards");
        assert!(e.is_input(), "{e}");
    }
}
