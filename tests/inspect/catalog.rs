//! The shipped catalog: `kpilot catalog` lists and validates it, it covers
//! every category and scenario, and docs/checks.md shows it as it is.

use crate::util::Dir;

fn root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn listing(dir: &Dir, args: &[&str]) -> Vec<serde_json::Value> {
    let mut full = vec!["catalog", "-o", "json"];
    full.extend_from_slice(args);
    let ran = dir.kp(&full).expect(0);
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).expect("JSON");
    v["checks"].as_array().expect("checks").clone()
}

kptest!(the_catalog_covers_every_category_and_scenario, |dir| {
    let all = listing(&dir, &[]);
    assert!(
        all.len() >= 30,
        "the catalog has {} checks, fewer than 30",
        all.len()
    );
    let categories = [
        "cluster-resources/apiserver-lb",
        "cluster-resources/network",
        "cluster-resources/nodes",
        "cluster-resources/cloud",
        "components/control-plane",
        "components/etcd",
        "components/kube-proxy",
        "components/cni",
        "components/coredns",
        "components/addons",
        "workloads/apis",
        "workloads/availability",
        "workloads/security",
    ];
    for category in categories {
        assert!(
            all.iter().any(|c| c["category"] == category),
            "no check in {category}"
        );
    }
    for scenario in ["upgrade-pre", "upgrade-post", "patrol"] {
        let some = listing(&dir, &["--scenario", scenario]);
        assert!(!some.is_empty(), "no {scenario} check");
        assert!(some.iter().all(|c| c["scenarios"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == scenario))));
    }
    for c in &all {
        assert!(
            c["remediation"]["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://")),
            "{} has no documentation link",
            c["id"]
        );
        assert!(
            !c["remediation"]["text"].as_str().unwrap_or("").is_empty(),
            "{} has no remediation",
            c["id"]
        );
    }
    let managed_only = listing(&dir, &["--cluster-type", "edge"]);
    assert!(managed_only.iter().all(|c| c["clusterTypes"]
        .as_array()
        .is_some_and(|t| t.is_empty() || t.iter().any(|x| x == "edge"))));
    let text = dir.kp(&["catalog"]).expect(0);
    assert!(
        text.stdout.lines().all(|l| l.chars().count() <= 100),
        "{}",
        text.stdout
    );
});

kptest!(docs_checks_md_shows_the_catalog_as_it_is, |dir| {
    let generated = dir.kp(&["catalog", "-o", "markdown"]).expect(0).stdout;
    let docs = std::fs::read_to_string(root().join("docs/checks.md")).expect("docs/checks.md");
    let begin = "<!-- catalog:begin (kpilot catalog -o markdown) -->\n";
    let end = "<!-- catalog:end -->";
    let from = docs
        .find(begin)
        .expect("docs/checks.md has the catalog:begin marker")
        + begin.len();
    let to = docs
        .find(end)
        .expect("docs/checks.md has the catalog:end marker");
    assert!(
        docs[from..to] == generated,
        "the catalog section of docs/checks.md is stale: replace what is between the markers with the output of `kpilot catalog -o markdown`"
    );
});

kptest!(
    a_reports_own_check_that_is_wrong_is_refused_by_catalog,
    |dir| {
        dir.write(
            "r.yaml",
            &super::OWN.replace("expect: item.healthy", "expect: \"item.healthy &&\""),
        );
        let ran = dir.kp(&["catalog", "--report", "r.yaml"]).expect(2);
        assert!(ran.stderr.contains("pods-healthy"), "{}", ran.stderr);
        dir.write("ok.yaml", super::OWN);
        let listed = listing(&dir, &["--report", "ok.yaml", "--scenario", "patrol"]);
        assert!(listed
            .iter()
            .any(|c| c["id"] == "pods-healthy" && c["file"] == "ok.yaml"));
    }
);
