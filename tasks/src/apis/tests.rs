//! The detector against the peers' own fixtures (kubent's `fixtures/`, pluto's test assets),
//! read as they are from `../shared/peer-fixtures`, and unit tests of the table and the
//! boundaries of the judgement.

use std::path::{Path, PathBuf};

use super::*;

/// `<workspace root>/../shared/peer-fixtures`, or `$KPILOT_SHARED_DIR/peer-fixtures` for a
/// worktree that does not sit beside `shared/`. Missing fixtures fail the test: never a skip.
fn peer_fixtures() -> PathBuf {
    let shared = std::env::var_os("KPILOT_SHARED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let dir = shared.join("peer-fixtures").join("removed-apis");
    assert!(
        dir.is_dir(),
        "peer fixtures missing: {} is not a directory (put ../shared beside the repository, or set KPILOT_SHARED_DIR)",
        dir.display()
    );
    dir
}

fn fixture(name: &str) -> PathBuf {
    let p = peer_fixtures().join(name);
    assert!(p.is_file(), "fixture missing: {}", p.display());
    p
}

fn table() -> ApiVersionTable {
    ApiVersionTable::builtin().expect("the built-in table parses")
}

/// Findings for one fixture file at `target`, asserting the file read without errors.
fn judge(name: &str, target: &str) -> Vec<Finding> {
    judge_with(name, target, &ScanOptions::default())
}

fn judge_with(name: &str, target: &str, options: &ScanOptions) -> Vec<Finding> {
    let scan = scan_path_with(&fixture(name), options);
    assert!(scan.errors.is_empty(), "{name}: {:?}", scan.errors);
    assert!(!scan.objects.is_empty(), "{name}: no objects read");
    classify(&table(), &parse_target(target).unwrap(), &scan.objects)
}

fn one(name: &str, target: &str) -> Finding {
    let f = judge(name, target);
    assert_eq!(f.len(), 1, "{name} at {target}: {f:#?}");
    f.into_iter().next().unwrap()
}

#[track_caller]
fn assert_finding(
    f: &Finding,
    outcome: Outcome,
    (api_version, kind, namespace, name): (&str, &str, Option<&str>, &str),
    replacement: Option<&str>,
    removed_in: Option<&str>,
) {
    assert_eq!(f.outcome, outcome, "{f:#?}");
    assert_eq!(f.object.api_version, api_version, "{f:#?}");
    assert_eq!(f.object.kind, kind, "{f:#?}");
    assert_eq!(f.object.namespace.as_deref(), namespace, "{f:#?}");
    assert_eq!(f.object.name, name, "{f:#?}");
    assert_eq!(f.replacement.as_deref(), replacement, "{f:#?}");
    assert_eq!(f.removed_in.as_deref(), removed_in, "{f:#?}");
}

#[test]
fn v1beta1_deployments_fail_at_1_16_naming_the_object() {
    let f = one("deployment-v1beta1.yaml", "1.16");
    assert_finding(
        &f,
        Outcome::Failed,
        ("apps/v1beta1", "Deployment", None, "nginx-deployment-old"),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    assert_eq!(
        f.message,
        "Deployment nginx-deployment-old uses apps/v1beta1, removed in v1.16.0; use apps/v1"
    );
    assert_eq!(
        f.source,
        fixture("deployment-v1beta1.yaml").display().to_string()
    );
    assert_eq!(f.file, fixture("deployment-v1beta1.yaml"));

    let f = one("deployment-v1beta1-labels.yaml", "1.16");
    assert_finding(
        &f,
        Outcome::Failed,
        ("apps/v1beta1", "Deployment", None, "nginx-deployment-old"),
        Some("apps/v1"),
        Some("v1.16.0"),
    );

    let f = one("pluto-deployment-extensions-v1beta1.yaml", "1.16");
    assert_finding(
        &f,
        Outcome::Failed,
        ("extensions/v1beta1", "Deployment", None, "utilities"),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    let f = one("pluto-finder-deployment-extensions-v1beta1.yaml", "v1.16.0");
    assert_finding(
        &f,
        Outcome::Failed,
        (
            "extensions/v1beta1",
            "Deployment",
            Some("yaml-namespace"),
            "utilities",
        ),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    assert_eq!(
        f.message,
        "Deployment yaml-namespace/utilities uses extensions/v1beta1, removed in v1.16.0; use apps/v1"
    );
}

#[test]
fn json_fixtures_parse_and_fail_at_1_16() {
    let f = one("deployment-v1beta1.json", "1.16");
    assert_finding(
        &f,
        Outcome::Failed,
        (
            "extensions/v1beta1",
            "Deployment",
            Some("default"),
            "nginx-deployment-old",
        ),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    let f = one("pluto-finder-deployment-extensions-v1beta1.json", "1.16");
    assert_finding(
        &f,
        Outcome::Failed,
        (
            "extensions/v1beta1",
            "Deployment",
            Some("json-namespace"),
            "utilities",
        ),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
}

#[test]
fn multi_document_file_gives_a_failed_deployment_and_a_warning_ingress_at_1_16() {
    let f = judge("deployment-v1beta1-and-ingress-v1beta1.yaml", "1.16");
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_finding(
        &f[0],
        Outcome::Failed,
        ("apps/v1beta1", "Deployment", None, "nginx-deployment-old"),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    assert_finding(
        &f[1],
        Outcome::Warning,
        ("extensions/v1beta1", "Ingress", None, "test-ingress"),
        Some("networking.k8s.io/v1"),
        Some("v1.22.0"),
    );
    assert_eq!(f[1].deprecated_in.as_deref(), Some("v1.14.0"));
    assert_eq!(
        f[1].message,
        "Ingress test-ingress uses extensions/v1beta1, deprecated in v1.14.0, removed in v1.22.0; use networking.k8s.io/v1"
    );
    // At 1.22 the Ingress is gone too.
    let f = judge("deployment-v1beta1-and-ingress-v1beta1.yaml", "1.22");
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(f.iter().all(|f| f.outcome == Outcome::Failed), "{f:#?}");
}

#[test]
fn objects_read_back_from_a_cluster_are_judged_by_their_last_applied_annotation() {
    let f = one("fake-deployment-v1beta1-with-annotation.yaml", "1.16");
    assert_finding(
        &f,
        Outcome::Failed,
        (
            "apps/v1beta1",
            "Deployment",
            Some("default"),
            "nginx-deployment-old",
        ),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    let f = one("fake-ingress-v1beta1-with-annotation.yaml", "1.16");
    assert_finding(
        &f,
        Outcome::Warning,
        (
            "extensions/v1beta1",
            "Ingress",
            Some("default"),
            "test-ingress",
        ),
        Some("networking.k8s.io/v1"),
        Some("v1.22.0"),
    );
    let f = one("fake-ingress-v1beta1-with-annotation.yaml", "1.22");
    assert_eq!(f.outcome, Outcome::Failed);

    // No annotation: its own apiVersion (apps/v1) counts, and that is fine at any target.
    assert!(judge("fake-deployment-v1beta1-no-annotation.yaml", "1.16").is_empty());
    assert!(judge("fake-deployment-v1beta1-no-annotation.yaml", "1.32").is_empty());
}

#[test]
fn another_tools_annotation_counts_only_when_named() {
    // kapp keeps the original in its own annotation; by default only kubectl's is read.
    assert!(judge("fake-deployment-v1beta1-with-kapp-annotation.yaml", "1.16").is_empty());
    let options = ScanOptions {
        extra_annotations: vec!["kapp.k14s.io/original".to_string()],
    };
    let f = judge_with(
        "fake-deployment-v1beta1-with-kapp-annotation.yaml",
        "1.16",
        &options,
    );
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_finding(
        &f[0],
        Outcome::Failed,
        (
            "apps/v1beta1",
            "Deployment",
            Some("default"),
            "nginx-deployment-old",
        ),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
}

#[test]
fn helm_release_secrets_name_the_release_and_its_namespace() {
    // The release JSON says release `test` in namespace `demo2` (the Secret's metadata says
    // default); Helm's record is what counts.
    let f = one("pluto-helm3-secret.json", "1.16");
    assert_finding(
        &f,
        Outcome::Failed,
        (
            "extensions/v1beta1",
            "Deployment",
            Some("demo2"),
            "test-helm3chart-v1beta1",
        ),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    assert_eq!(f.source, "helm:demo2/test");
    assert_eq!(f.file, fixture("pluto-helm3-secret.json"));

    let f = one("pluto-helm3-secret_duplicate_name.json", "1.16");
    assert_eq!(f.source, "helm:default/test");
    assert_eq!(f.object.namespace.as_deref(), Some("default"));
    assert_eq!(f.object.name, "test-helm3chart-v1beta1");

    // demo2: a policy/v1beta1 PDB and an autoscaling/v2beta1 HPA, deprecated in 1.21 and 1.22,
    // removed in 1.25; its Service and apps/v1 Deployment are fine.
    assert!(judge("pluto-helm3-secret-demo2.json", "1.16").is_empty());
    let f = judge("pluto-helm3-secret-demo2.json", "1.22");
    assert_eq!(f.len(), 2, "{f:#?}");
    assert!(f.iter().all(|f| f.outcome == Outcome::Warning), "{f:#?}");
    let f = judge("pluto-helm3-secret-demo2.json", "1.25");
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_finding(
        &f[0],
        Outcome::Failed,
        (
            "policy/v1beta1",
            "PodDisruptionBudget",
            Some("demo2"),
            "demo2-basic-demo",
        ),
        Some("policy/v1"),
        Some("v1.25.0"),
    );
    assert_finding(
        &f[1],
        Outcome::Failed,
        (
            "autoscaling/v2beta1",
            "HorizontalPodAutoscaler",
            Some("demo2"),
            "demo2-basic-demo",
        ),
        Some("autoscaling/v2"),
        Some("v1.25.0"),
    );
    assert!(f.iter().all(|f| f.source == "helm:demo2/demo2"), "{f:#?}");
}

#[test]
fn kind_list_items_are_judged_one_by_one() {
    let scan = scan_path(&fixture(
        "pluto-list-deployment-deprecated-and-non-deprecated.yaml",
    ));
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(scan.objects.len(), 2, "{:#?}", scan.objects);
    let f = one(
        "pluto-list-deployment-deprecated-and-non-deprecated.yaml",
        "1.16",
    );
    assert_finding(
        &f,
        Outcome::Failed,
        ("extensions/v1beta1", "Deployment", None, "utilities"),
        Some("apps/v1"),
        Some("v1.16.0"),
    );
    assert!(judge("pluto-list-deployment-non-deprecated.yaml", "1.16").is_empty());
}

#[test]
fn current_apis_give_nothing() {
    assert!(judge("pluto-deployment-apps-v1.yaml", "1.16").is_empty());
    assert!(judge("pluto-deployment-apps-v1.yaml", "1.32").is_empty());
}

#[test]
fn later_targets_fail_what_they_removed() {
    // (fixture, target, apiVersion, kind, replacement, removed in): each fails at its
    // removal release, is only a warning (or nothing) one release before.
    let cases = [
        (
            "ingress-v1beta1.yaml",
            "1.22",
            "extensions/v1beta1",
            "Ingress",
            Some("networking.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "ingressclass-v1beta1.yaml",
            "1.22",
            "networking.k8s.io/v1beta1",
            "IngressClass",
            Some("networking.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "customresourcedefinition-v1beta1.yaml",
            "1.22",
            "apiextensions.k8s.io/v1beta1",
            "CustomResourceDefinition",
            Some("apiextensions.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "apiservice-v1beta1.yaml",
            "1.22",
            "apiregistration.k8s.io/v1beta1",
            "APIService",
            Some("apiregistration.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "mutatingwebhookconfiguration-v1beta1.yaml",
            "1.22",
            "admissionregistration.k8s.io/v1beta1",
            "MutatingWebhookConfiguration",
            Some("admissionregistration.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "validatingwebhookconfiguration-v1beta1.yaml",
            "1.22",
            "admissionregistration.k8s.io/v1beta1",
            "ValidatingWebhookConfiguration",
            Some("admissionregistration.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "certificatesigningrequest-v1beta1.yaml",
            "1.22",
            "certificates.k8s.io/v1beta1",
            "CertificateSigningRequest",
            Some("certificates.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "clusterrole-v1beta1.yaml",
            "1.22",
            "rbac.authorization.k8s.io/v1beta1",
            "ClusterRole",
            Some("rbac.authorization.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "clusterrolebinding-v1beta1.yaml",
            "1.22",
            "rbac.authorization.k8s.io/v1beta1",
            "ClusterRoleBinding",
            Some("rbac.authorization.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "role-v1beta1.yaml",
            "1.22",
            "rbac.authorization.k8s.io/v1beta1",
            "Role",
            Some("rbac.authorization.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "rolebinding-v1beta1.yaml",
            "1.22",
            "rbac.authorization.k8s.io/v1beta1",
            "RoleBinding",
            Some("rbac.authorization.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "lease-v1beta1.yaml",
            "1.22",
            "coordination.k8s.io/v1beta1",
            "Lease",
            Some("coordination.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "priorityclass-v1beta1.yaml",
            "1.22",
            "scheduling.k8s.io/v1beta1",
            "PriorityClass",
            Some("scheduling.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "csidriver-v1beta1.yaml",
            "1.22",
            "storage.k8s.io/v1beta1",
            "CSIDriver",
            Some("storage.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "csinode-v1beta1.yaml",
            "1.22",
            "storage.k8s.io/v1beta1",
            "CSINode",
            Some("storage.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "storageclass-v1beta1.yaml",
            "1.22",
            "storage.k8s.io/v1beta1",
            "StorageClass",
            Some("storage.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "volumeattachment-v1beta1.yaml",
            "1.22",
            "storage.k8s.io/v1beta1",
            "VolumeAttachment",
            Some("storage.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "tokenreview-v1beta1.yaml",
            "1.22",
            "authentication.k8s.io/v1beta1",
            "TokenReview",
            Some("authentication.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "fake-tokenReview-deprecated.yaml",
            "1.22",
            "authentication.k8s.io/v1beta1",
            "TokenReview",
            Some("authentication.k8s.io/v1"),
            "v1.22.0",
        ),
        (
            "cronjob-v1beta1.yaml",
            "1.25",
            "batch/v1beta1",
            "CronJob",
            Some("batch/v1"),
            "v1.25.0",
        ),
        (
            "endpointslice-v1beta1.yaml",
            "1.25",
            "discovery.k8s.io/v1beta1",
            "EndpointSlice",
            Some("discovery.k8s.io/v1"),
            "v1.25.0",
        ),
        (
            "poddisruptionbudget-v1beta1.yaml",
            "1.25",
            "policy/v1beta1",
            "PodDisruptionBudget",
            Some("policy/v1"),
            "v1.25.0",
        ),
        (
            "podsecuritypolicy-v1beta1.yaml",
            "1.25",
            "policy/v1beta1",
            "PodSecurityPolicy",
            None,
            "v1.25.0",
        ),
        (
            "runtimeclass-v1beta1.yaml",
            "1.25",
            "node.k8s.io/v1beta1",
            "RuntimeClass",
            Some("node.k8s.io/v1"),
            "v1.25.0",
        ),
        (
            "autoscaler-v2beta1.yaml",
            "1.25",
            "autoscaling/v2beta1",
            "HorizontalPodAutoscaler",
            Some("autoscaling/v2"),
            "v1.25.0",
        ),
        (
            "autoscaler-v2beta2.yaml",
            "1.26",
            "autoscaling/v2beta2",
            "HorizontalPodAutoscaler",
            Some("autoscaling/v2"),
            "v1.26.0",
        ),
        (
            "csistoragecapacity-v1beta1.yaml",
            "1.27",
            "storage.k8s.io/v1beta1",
            "CSIStorageCapacity",
            Some("storage.k8s.io/v1"),
            "v1.27.0",
        ),
        (
            "flowschema-v1beta1.yaml",
            "1.29",
            "flowcontrol.apiserver.k8s.io/v1beta1",
            "FlowSchema",
            Some("flowcontrol.apiserver.k8s.io/v1beta3"),
            "v1.29.0",
        ),
        (
            "flowschema-v1beta2.yaml",
            "1.29",
            "flowcontrol.apiserver.k8s.io/v1beta2",
            "FlowSchema",
            Some("flowcontrol.apiserver.k8s.io/v1beta3"),
            "v1.29.0",
        ),
        (
            "flowschema-v1beta3.yaml",
            "1.32",
            "flowcontrol.apiserver.k8s.io/v1beta3",
            "FlowSchema",
            Some("flowcontrol.apiserver.k8s.io/v1"),
            "v1.32.0",
        ),
        (
            "prioritylevelconfiguration-v1beta1.yaml",
            "1.29",
            "flowcontrol.apiserver.k8s.io/v1beta1",
            "PriorityLevelConfiguration",
            Some("flowcontrol.apiserver.k8s.io/v1beta3"),
            "v1.29.0",
        ),
        (
            "prioritylevelconfiguration-v1beta2.yaml",
            "1.29",
            "flowcontrol.apiserver.k8s.io/v1beta2",
            "PriorityLevelConfiguration",
            Some("flowcontrol.apiserver.k8s.io/v1beta3"),
            "v1.29.0",
        ),
        (
            "prioritylevelconfiguration-v1beta3.yaml",
            "1.32",
            "flowcontrol.apiserver.k8s.io/v1beta3",
            "PriorityLevelConfiguration",
            Some("flowcontrol.apiserver.k8s.io/v1"),
            "v1.32.0",
        ),
    ];
    for (file, target, api_version, kind, replacement, removed_in) in cases {
        let f = one(file, target);
        assert_eq!(f.outcome, Outcome::Failed, "{file} at {target}: {f:#?}");
        assert_eq!(f.object.api_version, api_version, "{file}");
        assert_eq!(f.object.kind, kind, "{file}");
        assert_eq!(f.replacement.as_deref(), replacement, "{file}");
        assert_eq!(f.removed_in.as_deref(), Some(removed_in), "{file}");
        // One minor release earlier it is still served.
        let before = parse_target(target).unwrap();
        let before = format!("{}.{}", before.major, before.minor - 1);
        assert!(
            judge(file, &before)
                .iter()
                .all(|f| f.outcome == Outcome::Warning),
            "{file} at {before}"
        );
    }
}

#[test]
fn access_reviews_are_not_in_plutos_table_so_not_flagged() {
    // kubent flags authorization.k8s.io/v1beta1 reviews at 1.22; pluto's table, kpilot's
    // default, has no rows for them. A user's table can add them.
    for file in [
        "subjectaccessreview-v1beta1.yaml",
        "selfsubjectaccessreview-v1beta1.yaml",
        "localsubjectaccessreview-v1beta1.yaml",
    ] {
        assert!(judge(file, "1.22").is_empty(), "{file}");
    }
}

#[test]
fn a_row_with_an_empty_kind_covers_every_kind_of_its_api_version() {
    let t = ApiVersionTable::parse(
        "deprecated-versions:\n  - version: a.io/v1alpha1\n    kind: \"\"\n    deprecated-in: v1.5.0\n    removed-in: v1.6.0\n    replacement-api: a.io/v1\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(
        outcome_at(&t, "a.io/v1alpha1", "Anything", "1.6"),
        Some(Outcome::Failed)
    );
    assert_eq!(outcome_at(&t, "a.io/v1", "Anything", "1.6"), None);
}

#[test]
fn crd_rows_from_a_users_table_are_used() {
    // cert-manager's Issuer is not in kpilot's (Kubernetes-only) table; pluto's full table,
    // merged as a user's, has it.
    assert!(judge("issuer-v1alpha2.yaml", "1.16").is_empty());
    let mut t = table();
    t.merge(ApiVersionTable::from_file(&peer_fixtures().join("../pluto-versions.yaml")).unwrap());
    let scan = scan_path(&fixture("issuer-v1alpha2.yaml"));
    let f = classify(&t, &parse_target("v1.6.0").unwrap(), &scan.objects);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_finding(
        &f[0],
        Outcome::Failed,
        (
            "cert-manager.io/v1alpha2",
            "Issuer",
            Some("sandbox"),
            "selfsigned-issuer",
        ),
        Some("cert-manager.io/v1"),
        Some("v1.6.0"),
    );
}

#[test]
fn the_whole_fixture_directory_reads_without_errors() {
    let scan = scan_path(&peer_fixtures());
    assert!(scan.errors.is_empty(), "{:#?}", scan.errors);
    // Every file gives at least one object (the Helm Secrets give their manifests' objects).
    let files: std::collections::BTreeSet<_> =
        scan.objects.iter().map(|o| o.file.clone()).collect();
    let on_disk = std::fs::read_dir(peer_fixtures()).unwrap().count();
    assert_eq!(files.len(), on_disk, "files without objects");
    assert!(scan.objects.iter().any(|o| o.source == "helm:demo2/demo2"));
}

// ---- unit tests: the table ----

const ROW: &str = "deprecated-versions:
  - version: extensions/v1beta1
    kind: Deployment
    deprecated-in: v1.9.0
    removed-in: v1.16.0
    replacement-api: apps/v1
    replacement-available-in: v1.9.0
    component: k8s
";

#[test]
fn builtin_table_has_only_kubernetes_rows() {
    let t = table();
    assert!(t.rows().len() > 80, "{}", t.rows().len());
    assert!(t.rows().iter().all(|r| r.component == "k8s"));
    let r = t.lookup("extensions/v1beta1", "ReplicaSet").unwrap();
    assert_eq!(r.deprecated_in, None, "empty deprecated-in means never");
    assert_eq!(r.removed_in, parse_release("v1.16.0"));
}

#[test]
fn a_bad_row_is_an_error_naming_the_file_and_the_row() {
    let text = format!(
        "{ROW}  - version: batch/v1beta1\n    kind: CronJob\n    deprecated-in: v1.21.0\n    removed-in: 1.25\n"
    );
    let err = ApiVersionTable::parse(&text, "mine.yaml")
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "mine.yaml: row 2 (batch/v1beta1 CronJob): removed-in \"1.25\" is not a release: write it as v1.16.0, or \"\" for never"
    );
    let err = ApiVersionTable::parse("deprecated-versions:\n  - kind: Foo\n", "mine.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("mine.yaml: row 1 ( Foo): `version` is required"),
        "{err}"
    );
    let err = ApiVersionTable::parse(
        "deprecated-versions:\n  - version: a/v1\n    kind: A\n    removed: v1.2.0\n",
        "mine.yaml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("mine.yaml: not a table of API versions"),
        "{err}"
    );
    assert!(err.contains("unknown field `removed`"), "{err}");
}

#[test]
fn a_conflicting_repeat_is_an_error_and_an_identical_one_is_dropped() {
    let same = format!("{ROW}{}", ROW.trim_start_matches("deprecated-versions:\n"));
    assert_eq!(
        ApiVersionTable::parse(&same, "t.yaml")
            .unwrap()
            .rows()
            .len(),
        1
    );
    let other = format!(
        "{ROW}{}",
        ROW.trim_start_matches("deprecated-versions:\n")
            .replace("v1.16.0", "v1.17.0")
    );
    let err = ApiVersionTable::parse(&other, "t.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "t.yaml: row 2 (extensions/v1beta1 Deployment): same version and kind as row 1"
        ),
        "{err}"
    );
}

#[test]
fn a_users_row_replaces_the_default_with_the_same_version_and_kind() {
    let mut t = table();
    let n = t.rows().len();
    let user = ApiVersionTable::parse(
        "deprecated-versions:
  - version: extensions/v1beta1
    kind: Deployment
    deprecated-in: v1.9.0
    removed-in: v1.18.0
    replacement-api: apps/v1
  - version: example.com/v1alpha1
    kind: Widget
    deprecated-in: v1.20.0
    removed-in: \"\"
    replacement-api: example.com/v1
",
        "user.yaml",
    )
    .unwrap();
    t.merge(user);
    assert_eq!(t.rows().len(), n + 1);
    assert_eq!(
        t.lookup("extensions/v1beta1", "Deployment")
            .unwrap()
            .removed_in,
        parse_release("v1.18.0")
    );
    let widget = t.lookup("example.com/v1alpha1", "Widget").unwrap();
    assert_eq!(widget.removed_in, None, "empty removed-in means never");
}

// ---- unit tests: the judgement ----

fn object(api_version: &str, kind: &str) -> ManifestObject {
    ManifestObject {
        object: ObjectRef {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: Some("default".to_string()),
            name: "x".to_string(),
        },
        source: "x.yaml".to_string(),
        file: PathBuf::from("x.yaml"),
        document: 1,
    }
}

fn outcome_at(
    table: &ApiVersionTable,
    api_version: &str,
    kind: &str,
    target: &str,
) -> Option<Outcome> {
    let f = classify(
        table,
        &parse_target(target).unwrap(),
        &[object(api_version, kind)],
    );
    f.first().map(|f| f.outcome)
}

#[test]
fn removed_exactly_at_the_target_fails_and_deprecated_at_the_target_warns() {
    let t = table();
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Deployment", "1.15"),
        Some(Outcome::Warning)
    );
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Deployment", "1.16"),
        Some(Outcome::Failed)
    );
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Deployment", "1.16.3"),
        Some(Outcome::Failed)
    );
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Ingress", "1.13"),
        None
    );
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Ingress", "v1.14.0"),
        Some(Outcome::Warning)
    );
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Ingress", "1.21.9"),
        Some(Outcome::Warning)
    );
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Ingress", "1.22"),
        Some(Outcome::Failed)
    );
    // Never deprecated, removed in 1.16: nothing until then.
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "ReplicaSet", "1.15"),
        None
    );
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "ReplicaSet", "1.16"),
        Some(Outcome::Failed)
    );
    // Not in the table.
    assert_eq!(outcome_at(&t, "apps/v1", "Deployment", "1.40"), None);
}

#[test]
fn the_issue_s_1_16_list_fails_and_its_ingress_warns() {
    let t = table();
    for kind in [
        "Deployment",
        "DaemonSet",
        "ReplicaSet",
        "NetworkPolicy",
        "PodSecurityPolicy",
    ] {
        assert_eq!(
            outcome_at(&t, "extensions/v1beta1", kind, "1.16"),
            Some(Outcome::Failed),
            "{kind}"
        );
    }
    assert_eq!(
        outcome_at(&t, "extensions/v1beta1", "Ingress", "1.16"),
        Some(Outcome::Warning)
    );
}

#[test]
fn a_warning_without_removal_or_replacement_says_so() {
    let t = ApiVersionTable::parse(
        "deprecated-versions:\n  - version: a.io/v1\n    kind: A\n    deprecated-in: v1.20.0\n",
        "t.yaml",
    )
    .unwrap();
    let f = classify(
        &t,
        &parse_target("1.30").unwrap(),
        &[object("a.io/v1", "A")],
    );
    assert_eq!(f[0].outcome, Outcome::Warning);
    assert_eq!(
        f[0].message,
        "A default/x uses a.io/v1, deprecated in v1.20.0; no replacement API"
    );
}

#[test]
fn targets_accept_minor_and_full_versions_and_reject_others() {
    assert_eq!(
        parse_target("1.16").unwrap(),
        semver::Version::new(1, 16, 0)
    );
    assert_eq!(
        parse_target("v1.16.2").unwrap(),
        semver::Version::new(1, 16, 2)
    );
    for bad in ["1", "one.two", "", "v1.16.x"] {
        let err = parse_target(bad).unwrap_err().to_string();
        assert!(err.contains("write it as 1.16, 1.16.0 or v1.16.0"), "{err}");
    }
}

// ---- unit tests: sources ----

#[test]
fn unreadable_documents_are_all_reported_with_file_and_document_and_good_ones_still_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(
        dir.path().join("a.yaml"),
        "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: a}\n---\nkey: [unclosed\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("sub/b.json"), "{\"apiVersion\": ").unwrap();
    std::fs::write(
        dir.path().join("sub/c.yml"),
        "# not a Kubernetes object\nfoo: bar\n---\napiVersion: apps/v1beta2\nkind: Deployment\nmetadata: {name: c, namespace: n}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("sub/notes.txt"), "apiVersion: [").unwrap();
    std::fs::write(
        dir.path().join("sub/d.yaml"),
        "apiVersion: v1\nkind: Secret\ntype: helm.sh/release.v1\nmetadata: {name: sh.helm.release.v1.r.v1}\ndata: {release: \"!!\"}\n",
    )
    .unwrap();
    let scan = scan_path(dir.path());
    let errors: Vec<String> = scan.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let a = dir.path().join("a.yaml").display().to_string();
    let b = dir.path().join("sub/b.json").display().to_string();
    let d = dir.path().join("sub/d.yaml").display().to_string();
    assert!(
        errors[0].starts_with(&format!("{a}, document 2: not YAML or JSON")),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with(&format!("{b}, document 1: not YAML or JSON")),
        "{errors:#?}"
    );
    assert!(
        errors[2].starts_with(&format!("{d}, document 1: Helm release Secret sh.helm.release.v1.r.v1: data.release is not base64")),
        "{errors:#?}"
    );
    let names: Vec<&str> = scan
        .objects
        .iter()
        .map(|o| o.object.name.as_str())
        .collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(scan.objects[1].document, 2);
    let f = classify(&table(), &parse_target("1.16").unwrap(), &scan.objects);
    assert_eq!(f.len(), 2);
}

#[test]
fn a_missing_path_is_an_error_naming_it() {
    let scan = scan_path(Path::new("/nonexistent/manifests"));
    assert_eq!(scan.errors.len(), 1);
    assert!(scan.errors[0]
        .to_string()
        .starts_with("/nonexistent/manifests: cannot read"));
}

#[test]
fn a_helm_release_secret_inside_a_list_and_an_uncompressed_release_are_read() {
    use base64::Engine;
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD;
    let release = serde_json::json!({
        "name": "web",
        "namespace": "shop",
        "manifest": "---\napiVersion: extensions/v1beta1\nkind: DaemonSet\nmetadata:\n  name: agent\n---\napiVersion: batch/v1beta1\nkind: CronJob\nmetadata:\n  name: nightly\n  namespace: jobs\n",
    })
    .to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(release.as_bytes()).unwrap();
    let gzipped = b64.encode(b64.encode(gz.finish().unwrap()));
    let plain = b64.encode(b64.encode(release.as_bytes()));
    let secret = |name: &str, data: &str| {
        format!(
            "- apiVersion: v1\n  kind: Secret\n  type: helm.sh/release.v1\n  metadata: {{name: {name}, namespace: other}}\n  data: {{release: {data}}}\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: List\nitems:\n{}{}",
            secret("gz", &gzipped),
            secret("plain", &plain)
        ),
    )
    .unwrap();
    let scan = scan_path(&file);
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let f = classify(&table(), &parse_target("1.25").unwrap(), &scan.objects);
    let seen: Vec<(&str, Option<&str>, &str, Outcome)> = f
        .iter()
        .map(|f| {
            (
                f.source.as_str(),
                f.object.namespace.as_deref(),
                f.object.name.as_str(),
                f.outcome,
            )
        })
        .collect();
    let expected = [
        ("helm:shop/web", Some("shop"), "agent", Outcome::Failed),
        ("helm:shop/web", Some("jobs"), "nightly", Outcome::Failed),
    ];
    assert_eq!(seen, [expected, expected].concat());
    assert!(f.iter().all(|f| f.file == file));
}

#[test]
fn items_of_a_typed_list_take_the_lists_api_version_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("raw.json");
    std::fs::write(
        &file,
        r#"{"apiVersion": "extensions/v1beta1", "kind": "DaemonSetList",
            "items": [{"metadata": {"name": "agent", "namespace": "kube-system"}}]}"#,
    )
    .unwrap();
    let scan = scan_path(&file);
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    let f = classify(&table(), &parse_target("1.16").unwrap(), &scan.objects);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(
        f[0].message,
        "DaemonSet kube-system/agent uses extensions/v1beta1, removed in v1.16.0; use apps/v1"
    );
}

#[test]
fn a_finding_serialises_with_the_report_field_names() {
    let f = one("pluto-helm3-secret.json", "1.16");
    let json = serde_json::to_value(&f).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "object": {
                "apiVersion": "extensions/v1beta1",
                "kind": "Deployment",
                "namespace": "demo2",
                "name": "test-helm3chart-v1beta1",
            },
            "source": "helm:demo2/test",
            "file": fixture("pluto-helm3-secret.json"),
            "outcome": "failed",
            "replacement": "apps/v1",
            "removedIn": "v1.16.0",
            "deprecatedIn": "v1.9.0",
            "message": "Deployment demo2/test-helm3chart-v1beta1 uses extensions/v1beta1, removed in v1.16.0; use apps/v1",
        })
    );
}

#[test]
fn an_annotation_naming_another_kind_is_not_about_the_object() {
    // The Deployment controller copies a Deployment's annotations (kapp's among them) to its
    // ReplicaSets; the ReplicaSet's own apiVersion is what counts for it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rs.yaml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-6556dcfb57\n  namespace: shop\n  annotations:\n    kapp.k14s.io/original: '{\"apiVersion\": \"apps/v1beta2\", \"kind\": \"Deployment\"}'\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    kapp.k14s.io/original: '{\"apiVersion\": \"apps/v1beta2\", \"kind\": \"Deployment\"}'\n",
    )
    .unwrap();
    let options = ScanOptions {
        extra_annotations: vec!["kapp.k14s.io/original".to_string()],
    };
    let scan = scan_path_with(&file, &options);
    assert!(scan.errors.is_empty(), "{:?}", scan.errors);
    assert_eq!(scan.objects[0].object.api_version, "apps/v1");
    assert_eq!(scan.objects[0].object.kind, "ReplicaSet");
    let f = classify(&table(), &parse_target("1.16").unwrap(), &scan.objects);
    assert_eq!(f.len(), 1, "{f:#?}");
    assert_eq!(f[0].object.name, "web");
    assert_eq!(f[0].object.api_version, "apps/v1beta2");
}
