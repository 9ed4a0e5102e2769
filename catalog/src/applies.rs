//! What a check applies to: scenarios, cluster types, and version ranges
//! over the cluster's version and the upgrade target.

use semver::{Version, VersionReq};

/// When a check runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scenario {
    /// Before an upgrade hop: nothing changes if one fails.
    UpgradePre,
    /// After an upgrade hop.
    UpgradePost,
    /// A routine inspection.
    Patrol,
}

impl Scenario {
    /// Every scenario, as ordered in listings.
    pub const ALL: [Scenario; 3] = [
        Scenario::UpgradePre,
        Scenario::UpgradePost,
        Scenario::Patrol,
    ];

    /// The name as written in YAML and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::UpgradePre => "upgrade-pre",
            Scenario::UpgradePost => "upgrade-post",
            Scenario::Patrol => "patrol",
        }
    }

    /// Parses a name; `upgrade` means `upgrade-pre`.
    pub fn parse(name: &str) -> Option<Scenario> {
        match name {
            "upgrade" | "upgrade-pre" => Some(Scenario::UpgradePre),
            "upgrade-post" => Some(Scenario::UpgradePost),
            "patrol" => Some(Scenario::Patrol),
            _ => None,
        }
    }

    /// The workflow phase of a check run in this scenario.
    pub fn phase(self) -> &'static str {
        match self {
            Scenario::UpgradePre => "pre-check",
            Scenario::UpgradePost => "post-check",
            Scenario::Patrol => "patrol",
        }
    }

    /// Whether the scenario is about an upgrade, so has a target.
    pub fn has_target(self) -> bool {
        !matches!(self, Scenario::Patrol)
    }
}

/// What kind of cluster it is: some checks only make sense for some.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClusterType {
    /// A cloud provider runs the control plane.
    Managed,
    /// The owner runs the control plane (kubeadm and the like).
    SelfHosted,
    /// No nodes of the user's: virtual nodes.
    Serverless,
    /// Nodes far from the control plane.
    Edge,
    /// GPU nodes.
    Gpu,
}

impl ClusterType {
    /// Every type.
    pub const ALL: [ClusterType; 5] = [
        ClusterType::Managed,
        ClusterType::SelfHosted,
        ClusterType::Serverless,
        ClusterType::Edge,
        ClusterType::Gpu,
    ];

    /// The name as written in YAML and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterType::Managed => "managed",
            ClusterType::SelfHosted => "self-hosted",
            ClusterType::Serverless => "serverless",
            ClusterType::Edge => "edge",
            ClusterType::Gpu => "gpu",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<ClusterType> {
        ClusterType::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The names, for messages.
    pub fn names() -> String {
        ClusterType::ALL.map(|t| t.as_str()).join(", ")
    }
}

/// A check's `appliesTo`.
#[derive(Debug, Clone)]
pub struct AppliesTo {
    /// The scenarios it runs in (at least one).
    pub scenarios: Vec<Scenario>,
    /// The cluster versions it applies to; all when unset.
    pub versions: Option<Range>,
    /// The upgrade targets it applies to; all when unset.
    pub targets: Option<Range>,
    /// The cluster types it applies to; all when empty.
    pub cluster_types: Vec<ClusterType>,
}

/// A semver range as written (`>=1.12, <1.16`).
#[derive(Debug, Clone)]
pub struct Range {
    /// As written.
    pub text: String,
    /// Parsed.
    pub req: VersionReq,
}

impl Range {
    /// Parses a range like `>=1.12, <1.16`.
    pub fn parse(text: &str) -> Result<Range, String> {
        VersionReq::parse(text)
            .map(|req| Range {
                text: text.to_owned(),
                req,
            })
            .map_err(|e| {
                format!("`{text}` is not a version range ({e}); write e.g. `>=1.12, <1.16`")
            })
    }
}

/// Parses a Kubernetes version as clusters report it (`v1.34.4`,
/// `1.16`, `v1.28.3-eks-4f4795d`, `v1.27.1+k3s1`) into the release it is,
/// without pre-release or build parts, so ranges match what a person means.
pub fn kube_version(text: &str) -> Option<Version> {
    let t = text.trim().trim_start_matches(['v', 'V']);
    let core = t.split(['-', '+']).next().unwrap_or("");
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    let patch = parts.next().map_or(Some(0), |p| p.parse().ok())?;
    if parts.next().is_some() {
        return None;
    }
    Some(Version::new(major, minor, patch))
}

/// What the report builder knows of the cluster and of what is asked.
#[derive(Debug, Clone)]
pub struct Facts {
    /// Upgrade (pre or post) or patrol.
    pub scenario: Scenario,
    /// The API server's version; unknown without a cluster.
    pub cluster_version: Option<Version>,
    /// The upgrade target (`--to`).
    pub target: Option<Version>,
    /// The cluster's type.
    pub cluster_type: ClusterType,
    /// Whether the cluster may be read (false with `--no-cluster`).
    pub cluster: bool,
    /// Whether node agents can be reached (an inventory was given, or the
    /// cluster lists the nodes).
    pub nodes: bool,
}

impl AppliesTo {
    /// Why the check does not apply to `facts`, or `None` when it does. An
    /// unknown version or target matches any range: with `--no-cluster`
    /// there is no version to compare.
    pub fn why_not(&self, facts: &Facts) -> Option<String> {
        if !self.scenarios.contains(&facts.scenario) {
            return Some(format!(
                "not a {} check (it is for {})",
                facts.scenario.as_str(),
                self.scenarios
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.cluster_types.is_empty() && !self.cluster_types.contains(&facts.cluster_type) {
            return Some(format!(
                "for {} clusters, and this one is {}",
                self.cluster_types
                    .iter()
                    .map(|t| t.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                facts.cluster_type.as_str()
            ));
        }
        if let (Some(range), Some(v)) = (&self.versions, &facts.cluster_version) {
            if !range.req.matches(v) {
                return Some(format!(
                    "for cluster versions {}, and this one is {v}",
                    range.text
                ));
            }
        }
        if let (Some(range), Some(v)) = (&self.targets, &facts.target) {
            if facts.scenario.has_target() && !range.req.matches(v) {
                return Some(format!("for targets {}, and the target is {v}", range.text));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_as_clusters_report_them() {
        for (text, want) in [
            ("v1.34.4", "1.34.4"),
            ("1.16", "1.16.0"),
            ("v1.28.3-eks-4f4795d", "1.28.3"),
            ("v1.27.1+k3s1", "1.27.1"),
            ("1", "1.0.0"),
        ] {
            assert_eq!(
                kube_version(text).map(|v| v.to_string()).as_deref(),
                Some(want),
                "{text}"
            );
        }
        for bad in ["", "latest", "1.x", "1.2.3.4"] {
            assert_eq!(kube_version(bad), None, "{bad}");
        }
    }

    fn facts(version: &str, target: Option<&str>, scenario: Scenario) -> Facts {
        Facts {
            scenario,
            cluster_version: kube_version(version),
            target: target.and_then(kube_version),
            cluster_type: ClusterType::SelfHosted,
            cluster: true,
            nodes: true,
        }
    }

    #[test]
    fn ranges_types_and_scenarios_decide() {
        let applies = AppliesTo {
            scenarios: vec![Scenario::UpgradePre],
            versions: Some(Range::parse(">=1.12, <1.16").expect("range")),
            targets: Some(Range::parse("<=1.16").expect("range")),
            cluster_types: vec![ClusterType::SelfHosted, ClusterType::Managed],
        };
        assert_eq!(
            applies.why_not(&facts("v1.12.10", Some("1.13"), Scenario::UpgradePre)),
            None
        );
        assert!(applies
            .why_not(&facts("v1.16.0", Some("1.17"), Scenario::UpgradePre))
            .is_some_and(|w| w.contains(">=1.12, <1.16")));
        assert!(applies
            .why_not(&facts("v1.12.0", Some("1.17"), Scenario::UpgradePre))
            .is_some_and(|w| w.contains("target is 1.17.0")));
        assert!(applies
            .why_not(&facts("v1.12.0", None, Scenario::Patrol))
            .is_some());
        let mut edge = facts("v1.12.0", Some("1.13"), Scenario::UpgradePre);
        edge.cluster_type = ClusterType::Edge;
        assert!(applies
            .why_not(&edge)
            .is_some_and(|w| w.contains("this one is edge")));
        let mut unknown = facts("", Some("1.13"), Scenario::UpgradePre);
        unknown.cluster_version = None;
        assert_eq!(
            applies.why_not(&unknown),
            None,
            "no cluster: no version to compare"
        );
        assert!(Range::parse("about 1.12").is_err());
    }
}
