//! `kpilot inspect` against the real API server: the cluster's version read
//! from it decides what applies, checks over cluster objects name them in
//! the report, and a cluster that cannot be read is exit 3, never a pass.

use std::net::TcpListener;

use super::{kp_with, kubeconfig, node, unique, Created};
use crate::inspect::{check, run_id};
use crate::util::Dir;

fn report(dir: &Dir, label: &str) -> String {
    let text = format!(
        r#"apiVersion: kpilot/v1
kind: Report
metadata: {{name: t}}
spec:
  select: {{labels: {{suite: inspect-{label}}}}}
---
apiVersion: kpilot/v1
kind: Check
metadata: {{name: t-nodes-ready}}
title: The test's nodes are Ready
category: cluster-resources/nodes
appliesTo: {{scenarios: [upgrade-pre], versions: ">=1.20"}}
params: [{{name: selector, default: "kpilot-test={label}"}}]
check:
  query: {{cluster: nodes, labelSelector: "{{{{params.selector}}}}"}}
  forEach: true
  minItems: 1
  expect: item.ready
  message: "node {{{{item.name}}}} is not Ready"
remediation: {{text: "Look at the kubelet.", url: "https://kubernetes.io/docs/concepts/architecture/nodes/"}}
---
apiVersion: kpilot/v1
kind: Check
metadata: {{name: t-old-clusters-only}}
title: Only for clusters before 1.20
category: components/control-plane
appliesTo: {{scenarios: [upgrade-pre], versions: "<1.20"}}
check: {{query: cluster.version, expect: "false"}}
remediation: {{text: "x", url: "https://kubernetes.io/releases/version-skew-policy/"}}
---
apiVersion: kpilot/v1
kind: Check
metadata: {{name: t-hop}}
title: The target is one minor ahead
category: components/control-plane
appliesTo: {{scenarios: [upgrade-pre]}}
check:
  query: cluster.version.gitVersion
  expect: "minor(params.to) - minor(data) == 1 && params.from == string(major(data)) + '.' + string(minor(data)) + '.' + string(patch(data))"
  message: "{{{{data}}}} → {{{{params.to}}}} is not one hop"
remediation: {{text: "Upgrade one minor at a time.", url: "https://kubernetes.io/releases/version-skew-policy/"}}
"#
    );
    dir.write("r.yaml", &text).display().to_string()
}

kptest!(
    inspect_reads_the_version_and_names_the_objects_it_found,
    |dir| {
        let label = unique("insp");
        let mut created = Created::default();
        let good = format!("{label}-a");
        let bad = format!("{label}-b");
        created.create(node(&good, &label, "v1.34.4", Some(true)));
        created.create(node(&bad, &label, "v1.34.4", Some(false)));
        report(&dir, &label);
        let version = super::kubectl(&["version", "-o", "json"], None);
        let version: serde_json::Value =
            serde_json::from_str(&version).expect("kubectl version JSON");
        let git = version["serverVersion"]["gitVersion"]
            .as_str()
            .expect("gitVersion")
            .to_owned();
        let minor: u64 = version["serverVersion"]["minor"]
            .as_str()
            .and_then(|m| m.trim_end_matches('+').parse().ok())
            .expect("minor");
        let next = format!("1.{}", minor + 1);
        // The kubeconfig by flag: the resume kpilot prints must name it too.
        let config = kubeconfig().display().to_string();
        let ran = dir
            .kp(&[
                "inspect",
                "--scenario",
                "upgrade",
                "--to",
                &next,
                "--report",
                "r.yaml",
                "-o",
                "json",
                "--kubeconfig",
                &config,
            ])
            .expect(1);
        let r: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON report");
        assert_eq!(r["cluster"]["version"], git.as_str());
        assert!(
            r["cluster"]["server"]
                .as_str()
                .is_some_and(|s| s.starts_with("https://127.0.0.1:")),
            "{r:#}"
        );
        assert_eq!(r["target"], next.as_str());
        let nodes = check(&r, "t-nodes-ready");
        assert_eq!(nodes["outcome"], "failed");
        let items = nodes["items"].as_array().expect("items");
        assert_eq!(items.len(), 1, "{items:?}");
        assert_eq!(
            items[0]["object"],
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "name": bad})
        );
        assert_eq!(items[0]["message"], format!("node {bad} is not Ready"));
        assert_eq!(check(&r, "t-hop")["outcome"], "passed", "{r:#}");
        assert!(
            r["checks"]
                .as_array()
                .expect("checks")
                .iter()
                .all(|c| c["id"] != "t-old-clusters-only"),
            "a check for clusters before 1.20 does not apply to {git}"
        );
        // Fixed, resumed as printed: the report passes.
        super::kubectl(&["delete", "node", &bad], None);
        let id = run_id(&ran.stderr);
        let printed =
            format!("`kpilot resume {id} --kubeconfig {config}` checks again what did not pass");
        assert!(ran.stderr.contains(&printed), "{}", ran.stderr);
        let resume: Vec<&str> = printed[1..printed.rfind('`').expect("quoted")]
            .split(' ')
            .skip(1)
            .collect();
        dir.kp(&resume).expect(0);
        let again = dir.kp(&["report", &id, "-o", "json"]).expect(0);
        let r: serde_json::Value = serde_json::from_str(&again.stdout).expect("JSON");
        assert_eq!(check(&r, "t-nodes-ready")["outcome"], "passed");
    }
);

kptest!(
    a_cluster_that_cannot_be_read_is_exit_3_and_says_what_to_do,
    |dir| {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr");
        let text = std::fs::read_to_string(kubeconfig()).expect("kubeconfig");
        let text: String = text
            .lines()
            .map(|line| match line.find("server: https://") {
                Some(at) => format!("{}server: https://{port}", &line[..at]),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let config = dir.write("kubeconfig", &text);
        let ran = kp_with(&dir, &["inspect", "--scenario", "patrol"], &config).expect(3);
        assert!(
            ran.stderr.contains("cannot read the cluster's version")
                && ran.stderr.contains("pass --no-cluster"),
            "{}",
            ran.stderr
        );
        assert!(ran.stdout.is_empty(), "no report: {}", ran.stdout);
    }
);

kptest!(
    an_annotation_the_user_names_is_read_for_removed_apis,
    |dir| {
        let mut created = Created::default();
        let ns = unique("insp-ann");
        created.create(
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        );
        let applied = serde_json::json!({"apiVersion": "rbac.authorization.k8s.io/v1beta1", "kind": "Role", "metadata": {"name": "reader", "namespace": ns}});
        created.create(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "reader", "namespace": ns, "annotations": {"example.com/applied": applied.to_string()}},
        "rules": [],
    }));
        dir.write(
        "r.yaml",
        &format!("apiVersion: kpilot/v1\nkind: Report\nmetadata: {{name: t}}\nspec:\n  select: {{ids: [removed-apis]}}\n  overrides: [{{check: removed-apis, params: {{namespace: {ns}}}}}]\n"),
    );
        let config = kubeconfig().display().to_string();
        let base = [
            "inspect",
            "--scenario",
            "upgrade",
            "--to",
            "1.22",
            "--report",
            "r.yaml",
            "-o",
            "json",
            "--kubeconfig",
            config.as_str(),
        ];
        let ran = dir.kp(&base).expect(0);
        let r: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
        assert_eq!(
            check(&r, "removed-apis")["outcome"],
            "passed",
            "an annotation nobody named is not read: {r:#}"
        );
        let mut with = base.to_vec();
        with.extend(["--annotation", "example.com/applied"]);
        let ran = dir.kp(&with).expect(1);
        let r: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
        let item = &check(&r, "removed-apis")["items"][0];
        assert_eq!(item["object"]["kind"], "Role", "{r:#}");
        assert_eq!(item["object"]["name"], "reader");
        assert_eq!(item["source"], "cluster");
        assert_eq!(item["replacement"], "rbac.authorization.k8s.io/v1");
    }
);
