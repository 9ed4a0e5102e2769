//! `kpilot plan upgrade --kubeconfig`: the hops start at the version the
//! shared test cluster's API server reports.

use super::{kubeconfig, kubectl};
use crate::inspect::plan::{assert_hops, printed_command, run_printed};

kptest!(plan_upgrade_starts_at_the_clusters_version, |dir| {
    let raw = kubectl(&["get", "--raw", "/version"], None);
    let v: serde_json::Value = serde_json::from_str(&raw).expect("/version is JSON");
    let minor: u64 = v["minor"]
        .as_str()
        .and_then(|m| m.trim_end_matches('+').parse().ok())
        .expect("a minor version");
    let git = v["gitVersion"].as_str().expect("gitVersion");
    let from = git.trim_start_matches('v').to_owned();
    let to = format!("1.{}", minor + 2);
    let kc = kubeconfig().display().to_string();

    let ran = dir
        .kp(&[
            "plan",
            "upgrade",
            "--kubeconfig",
            &kc,
            "--to",
            &to,
            "-o",
            "json",
        ])
        .expect(0);
    let plan: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    assert_eq!(plan["from"], from.as_str(), "{plan:#}");
    let hops: Vec<(String, String)> = plan["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            (
                h["from"].as_str().unwrap_or("").to_owned(),
                h["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let next = format!("1.{}", minor + 1);
    assert_eq!(
        hops,
        [(from.clone(), next.clone()), (next.clone(), to.clone())]
    );

    // The text names the hops and a command that writes their workflow from the same cluster.
    let ran = dir
        .kp(&["plan", "upgrade", "--kubeconfig", &kc, "--to", &to])
        .expect(0);
    assert!(
        ran.stdout
            .contains(&format!("Upgrade from {from} to {to}: 2 hops")),
        "{}",
        ran.stdout
    );
    let command = printed_command(&ran.stdout);
    assert_eq!(
        command,
        format!(
            "kpilot plan upgrade --kubeconfig {kc} --to {to} -o yaml > upgrade-{from}-to-{to}.yaml"
        )
    );
    run_printed(&dir, &command).expect(0);
    let workflow: serde_yaml::Value =
        serde_yaml::from_str(&dir.read(&format!("upgrade-{from}-to-{to}.yaml"))).expect("YAML");
    assert_hops(&workflow, &[&next.replace('.', "-"), &to.replace('.', "-")]);
    assert!(
        workflow["metadata"]["annotations"]["kpilot.io/cluster-server"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://127.0.0.1:")),
        "{:?}",
        workflow["metadata"]
    );
});
