//! The upgrade checks of `workflows/catalog/upgrade.yaml`, each run alone on the test
//! cluster: its problem seeded in a namespace (or on nodes) of the test's own, the check
//! seen failing on exactly that object, then the problem fixed and the check passing.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{kp, kubeconfig, kubectl, node, root, unique, wait_ready, Created};
use crate::util::Dir;

/// What one check said about the cluster.
#[derive(Debug)]
struct Outcome {
    outcome: String,
    message: String,
    /// Each failing item: the object (or node) it names, and its message.
    items: Vec<(String, String)>,
    /// The check as the JSON report has it.
    check: Value,
}

impl Outcome {
    /// The object the report's first failing item names.
    fn object(&self) -> &Value {
        &self.check["items"][0]["object"]
    }

    /// The message of the one failing item that names `name`; panics unless it is the
    /// only failing item.
    #[track_caller]
    fn only_item(&self, name: &str) -> &str {
        assert_eq!(
            self.items.len(),
            1,
            "expected one failing item, {name}: {self:#?}"
        );
        let (item, message) = &self.items[0];
        assert!(
            item == name || message.contains(name),
            "the failing item is not {name}: {self:#?}"
        );
        message
    }
}

/// The API server's version, as the run param `from` has it.
fn server_version() -> String {
    let out = kubectl(&["version", "-o", "json"], None);
    let v: Value = serde_json::from_str(&out).expect("kubectl version is JSON");
    v["serverVersion"]["gitVersion"]
        .as_str()
        .expect("gitVersion")
        .to_owned()
}

/// The scenario catalog check `id` runs in: upgrade-pre when it is one of its scenarios,
/// else its first.
fn scenario(id: &str) -> String {
    let path = root().join("workflows/catalog/upgrade.yaml");
    let text = std::fs::read_to_string(&path).expect("the catalog");
    let doc = text
        .split("\n---\n")
        .find(|doc| doc.contains(&format!("\n  name: {id}\n")))
        .unwrap_or_else(|| panic!("no check {id} in {}", path.display()));
    let line = doc
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("scenarios: ["))
        .expect("appliesTo.scenarios");
    let scenarios: Vec<&str> = line
        .trim_end_matches(']')
        .split(',')
        .map(str::trim)
        .collect();
    if scenarios.contains(&"upgrade-pre") {
        "upgrade-pre".into()
    } else {
        scenarios[0].to_owned()
    }
}

/// Runs catalog check `id` alone, through `kpilot inspect --to to` and a Report that
/// selects it and overrides its `params`; what the JSON report says of it.
fn run_check(dir: &Dir, id: &str, to: &str, params: &[(&str, &str)]) -> Outcome {
    run_in(dir, id, &scenario(id), Some(to), params)
}

/// Runs catalog check `id` alone in `scenario`, with `--to` when `to` is given.
fn run_in(
    dir: &Dir,
    id: &str,
    scenario: &str,
    to: Option<&str>,
    params: &[(&str, &str)],
) -> Outcome {
    let overrides: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    // JSON is YAML: the Report as the test means it, without quoting surprises.
    let report = json!({
        "apiVersion": "kpilot/v1",
        "kind": "Report",
        "metadata": {"name": "t"},
        "spec": {
            "clusterType": "self-hosted",
            "select": {"ids": [id]},
            "overrides": [{"check": id, "params": overrides}],
        },
    });
    let file = dir.write(&format!("{id}.report.yaml"), &report.to_string());
    let file = file.display().to_string();
    let config = kubeconfig().display().to_string();
    let mut args = vec!["inspect", "--scenario", scenario];
    if let Some(to) = to {
        args.extend(["--to", to]);
    }
    args.extend(["--report", &file, "-o", "json", "--kubeconfig", &config]);
    let ran = kp(dir, &args);
    assert!(
        [0, 1, 3].contains(&ran.code),
        "kpilot inspect: exit {}\n{}\n{}",
        ran.code,
        ran.stdout,
        ran.stderr
    );
    let r: Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}): {}\n{}",
            ran.stdout, ran.stderr
        )
    });
    let checks = r["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "one check selected: {r:#}");
    let c = &checks[0];
    assert_eq!(c["id"], id, "{r:#}");
    let outcome = c["outcome"].as_str().unwrap_or("none").to_owned();
    // Exit 1 means a check failed, 3 that it could not read its data.
    let code = match outcome.as_str() {
        "failed" => 1,
        "error" => 3,
        _ => 0,
    };
    assert_eq!(ran.code, code, "{outcome}: {r:#}\n{}", ran.stderr);
    assert!(
        c["remediation"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://")),
        "{r:#}"
    );
    let items = c["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            let name = i["object"]["name"]
                .as_str()
                .or(i["node"].as_str())
                .unwrap_or_default();
            (
                name.to_owned(),
                i["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Outcome {
        outcome,
        message: c["message"].as_str().unwrap_or_default().to_owned(),
        items,
        check: c.clone(),
    }
}

/// Runs the check until its outcome is `want` (the controllers and KWOK take a moment to
/// catch up with a change), for at most a minute; panics with the last outcome.
#[track_caller]
fn eventually(dir: &Dir, id: &str, to: &str, params: &[(&str, &str)], want: &str) -> Outcome {
    let started = Instant::now();
    loop {
        let out = run_check(dir, id, to, params);
        if out.outcome == want {
            return out;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{id} is not {want} after 60s: {out:#?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A namespace of the test's own, deleted with `created`.
fn namespace(created: &mut Created, tag: &str) -> String {
    let name = unique(tag);
    created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
    name
}

/// A KWOK node (kept Ready, runs the pods scheduled to it) labelled `kpilot-test=label`.
fn kwok_node(created: &mut Created, label: &str) -> String {
    let name = unique("node");
    created.create(node(&name, label, "v1.34.4", None));
    wait_ready(&name);
    name
}

/// A pod template's spec that only nodes labelled `kpilot-test=label` take.
fn pinned(label: &str, image: &str) -> Value {
    json!({
        "nodeSelector": {"kpilot-test": label},
        "containers": [{"name": "main", "image": image}],
    })
}

fn daemonset(ns: &str, name: &str, image: &str, label: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pinned(label, image)},
        },
    })
}

fn deployment(ns: &str, name: &str, replicas: u32, image: &str, label: &str) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pinned(label, image)},
        },
    })
}

fn pod(ns: &str, name: &str, labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": spec,
    })
}

/// `1.N`, `N` being the API server's minor version plus the argument.
fn minors() -> impl Fn(i64) -> String {
    let from = server_version();
    let minor: u64 = from
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("a minor version");
    move |delta: i64| format!("1.{}", i64::try_from(minor).expect("minor") + delta)
}

kptest!(one_minor_hop_fails_a_two_minor_target, |dir| {
    let from = server_version();
    let at = minors();
    let out = run_check(&dir, "one-minor-hop", &at(2), &[]);
    assert_eq!(out.outcome, "failed", "{out:#?}");
    assert!(
        out.message.contains(&format!(
            "the API server is at {from} and the target {} is 2 minor versions ahead",
            at(2)
        )),
        "{out:#?}"
    );
    let out = run_check(&dir, "one-minor-hop", &at(-1), &[]);
    assert_eq!(out.outcome, "failed", "{out:#?}");
    assert!(out.message.contains("older than it"), "{out:#?}");
    let out = run_check(&dir, "one-minor-hop", &at(1), &[]);
    assert_eq!(out.outcome, "passed", "{out:#?}");
    // The server's own minor: a patch upgrade.
    let out = run_check(&dir, "one-minor-hop", &at(0), &[]);
    assert_eq!(out.outcome, "passed", "{out:#?}");
});

kptest!(
    nodes_ready_names_the_notready_node_until_it_is_ready,
    |dir| {
        let label = unique("ready");
        let mut created = Created::default();
        kwok_node(&mut created, &label);
        let down = unique("down");
        created.create(node(&down, &label, "v1.34.4", Some(false)));
        let selector = format!("kpilot-test={label}");
        let params = [("nodeSelector", selector.as_str())];

        let out = run_check(&dir, "nodes-ready", "1.35", &params);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        let message = out.only_item(&down);
        assert_eq!(
            out.object(),
            &json!({"apiVersion": "v1", "kind": "Node", "name": down})
        );
        assert!(
            message.contains("KubeletNotReady: PLEG is not healthy"),
            "{message}"
        );

        // Its kubelet reports Ready again.
        let patch = json!({"status": {"conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "kubelet is posting ready status",
        }]}})
        .to_string();
        kubectl(
            &[
                "patch",
                "node",
                &down,
                "--subresource=status",
                "--type=strategic",
                "-p",
                &patch,
            ],
            None,
        );
        eventually(&dir, "nodes-ready", "1.35", &params, "passed");
    }
);

kptest!(kubelet_skew_names_a_kubelet_four_minors_behind, |dir| {
    let label = unique("kskew");
    let mut created = Created::default();
    let (current, old) = (unique("current"), unique("old"));
    created.create(node(&current, &label, "v1.34.4", Some(true)));
    created.create(node(&old, &label, "v1.31.2", Some(true)));
    let selector = format!("kpilot-test={label}");
    let params = [("nodeSelector", selector.as_str())];

    // 1.31 is three minors behind 1.34: allowed; four behind 1.35: not.
    let out = run_check(&dir, "kubelet-skew", "1.34", &params);
    assert_eq!(out.outcome, "passed", "{out:#?}");
    let out = run_check(&dir, "kubelet-skew", "1.35", &params);
    assert_eq!(out.outcome, "failed", "{out:#?}");
    let message = out.only_item(&old);
    assert_eq!(
        out.object(),
        &json!({"apiVersion": "v1", "kind": "Node", "name": old})
    );
    assert!(
        message.contains("kubelet v1.31.2, which is too old for the target 1.35"),
        "{message}"
    );

    let patch = json!({"status": {"nodeInfo": {"kubeletVersion": "v1.34.4"}}}).to_string();
    kubectl(
        &[
            "patch",
            "node",
            &old,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
    let out = run_check(&dir, "kubelet-skew", "1.35", &params);
    assert_eq!(out.outcome, "passed", "{out:#?}");
});

kptest!(kube_proxy_skew_names_the_old_worker_daemonset, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "proxy");
    let nowhere = unique("nowhere");
    created.create(daemonset(
        &ns,
        "kube-proxy-master",
        "registry.k8s.io/kube-proxy:v1.34.4",
        &nowhere,
    ));
    created.create(daemonset(
        &ns,
        "kube-proxy-worker",
        "registry.k8s.io/kube-proxy:v1.31.2",
        &nowhere,
    ));
    // Not a kube-proxy: its old version is none of this check's business.
    created.create(daemonset(
        &ns,
        "logger",
        "fluent/fluent-bit:v1.2.0",
        &nowhere,
    ));
    let params = [("namespace", ns.as_str())];

    let out = run_check(&dir, "kube-proxy-skew", "1.35", &params);
    assert_eq!(out.outcome, "failed", "{out:#?}");
    let message = out.only_item("kube-proxy-worker");
    assert_eq!(
        out.object(),
        &json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "namespace": ns, "name": "kube-proxy-worker"})
    );
    assert!(
        message.contains(&format!(
            "DaemonSet {ns}/kube-proxy-worker runs kube-proxy v1.31.2, which is too old for the target 1.35"
        )),
        "{message}"
    );

    kubectl(
        &[
            "-n",
            &ns,
            "set",
            "image",
            "daemonset/kube-proxy-worker",
            "main=registry.k8s.io/kube-proxy:v1.34.4",
        ],
        None,
    );
    let out = run_check(&dir, "kube-proxy-skew", "1.35", &params);
    assert_eq!(out.outcome, "passed", "{out:#?}");
});

kptest!(control_plane_skew_names_a_scheduler_a_minor_behind, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "cp");
    let nowhere = unique("nowhere");
    let from = server_version();
    // The run param `from` is the version without its `v`.
    let bare = from.trim_start_matches('v');
    let component = |name: &str, image: &str| {
        pod(
            &ns,
            name,
            json!({"component": name, "tier": "control-plane"}),
            pinned(&nowhere, image),
        )
    };
    created.create(component(
        "kube-controller-manager",
        &format!("registry.k8s.io/kube-controller-manager:{from}"),
    ));
    created.create(component(
        "kube-scheduler",
        "registry.k8s.io/kube-scheduler:v1.33.7",
    ));
    let params = [("namespace", ns.as_str())];

    let out = run_check(&dir, "control-plane-skew", "1.35", &params);
    assert_eq!(out.outcome, "failed", "{out:#?}");
    let message = out.only_item("kube-scheduler");
    assert_eq!(
        out.object(),
        &json!({"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": "kube-scheduler"})
    );
    assert!(
        message.contains(&format!(
            "pod {ns}/kube-scheduler (kube-scheduler) runs registry.k8s.io/kube-scheduler:v1.33.7, not the API server's minor version {bare}"
        )),
        "{message}"
    );

    let image = format!("main=registry.k8s.io/kube-scheduler:{from}");
    kubectl(
        &["-n", &ns, "set", "image", "pod/kube-scheduler", &image],
        None,
    );
    let out = run_check(&dir, "control-plane-skew", "1.35", &params);
    assert_eq!(out.outcome, "passed", "{out:#?}");
});

kptest!(cni_healthy_fails_an_old_cni_until_it_is_upgraded, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "cni");
    let label = unique("cni");
    kwok_node(&mut created, &label);
    created.create(daemonset(
        &ns,
        "calico-node",
        "docker.io/calico/node:v3.20.6",
        &label,
    ));
    let params = [("namespace", ns.as_str()), ("minVersion", "3.26.0")];

    // Once KWOK runs its pod, the DaemonSet is healthy but too old.
    let out = eventually(&dir, "cni-healthy", "1.35", &params, "failed");
    let started = Instant::now();
    let mut out = out;
    while out.message.contains("pods ready") && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        out = run_check(&dir, "cni-healthy", "1.35", &params);
    }
    assert!(
        out.message.contains(&format!(
            "DaemonSet {ns}/calico-node is at v3.20.6, below 3.26.0, which the target 1.35 needs"
        )),
        "{out:#?}"
    );

    kubectl(
        &[
            "-n",
            &ns,
            "set",
            "image",
            "daemonset/calico-node",
            "main=docker.io/calico/node:v3.28.2",
        ],
        None,
    );
    eventually(&dir, "cni-healthy", "1.35", &params, "passed");
});

kptest!(
    coredns_healthy_fails_an_unavailable_then_old_coredns,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "dns");
        let label = unique("dns");
        created.create(deployment(
            &ns,
            "coredns",
            2,
            "registry.k8s.io/coredns/coredns:v1.8.0",
            &label,
        ));
        let params = [("namespace", ns.as_str())];

        // No node takes its pods yet.
        let out = run_check(&dir, "coredns-healthy", "1.35", &params);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        assert!(
            out.message.contains(&format!(
                "CoreDNS ({ns}/coredns): 0 of 2 replicas available"
            )),
            "{out:#?}"
        );

        kwok_node(&mut created, &label);
        // 1.35 is past kubeadm's table: availability is enough.
        eventually(&dir, "coredns-healthy", "1.35", &params, "passed");
        // kubeadm installed CoreDNS 1.8.4 with 1.22.
        let out = run_check(&dir, "coredns-healthy", "1.22", &params);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        assert!(
        out.message.contains(&format!(
            "CoreDNS ({ns}/coredns) is at v1.8.0, below 1.8.4, the version kubeadm installs with 1.22"
        )),
        "{out:#?}"
    );
        let strict = [("namespace", ns.as_str()), ("minVersion", "1.11.3")];
        let out = run_check(&dir, "coredns-healthy", "1.35", &strict);
        assert_eq!(out.outcome, "failed", "{out:#?}");

        kubectl(
            &[
                "-n",
                &ns,
                "set",
                "image",
                "deployment/coredns",
                "main=registry.k8s.io/coredns/coredns:v1.12.1",
            ],
            None,
        );
        eventually(&dir, "coredns-healthy", "1.35", &strict, "passed");
        eventually(&dir, "coredns-healthy", "1.22", &params, "passed");
        // A patrol has no target: availability, and minVersion when given.
        let out = run_in(&dir, "coredns-healthy", "patrol", None, &params);
        assert_eq!(out.outcome, "passed", "{out:#?}");
        let newer = [("namespace", ns.as_str()), ("minVersion", "1.13.0")];
        let out = run_in(&dir, "coredns-healthy", "patrol", None, &newer);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        assert!(
            out.message.contains(&format!(
                "CoreDNS ({ns}/coredns) is at v1.12.1, below 1.13.0"
            )),
            "{out:#?}"
        );
    }
);

kptest!(pdb_allows_disruption_names_a_budget_at_its_minimum, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "pdb");
    let label = unique("pdb");
    kwok_node(&mut created, &label);
    created.create(deployment(&ns, "web", 1, "nginx:1.27", &label));
    created.create(json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
    }));
    let params = [("namespace", ns.as_str())];

    let out = eventually(&dir, "pdb-allows-disruption", "1.35", &params, "failed");
    let message = out.only_item("web");
    assert_eq!(
        out.object(),
        &json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "namespace": ns, "name": "web"})
    );
    assert!(
        message.contains(&format!(
            "PodDisruptionBudget {ns}/web allows no disruption (1 healthy of 1 pods, 1 required)"
        )),
        "{message}"
    );

    kubectl(
        &["-n", &ns, "scale", "deployment/web", "--replicas=2"],
        None,
    );
    eventually(&dir, "pdb-allows-disruption", "1.35", &params, "passed");
});

kptest!(
    webhooks_have_endpoints_names_a_fail_closed_webhook_with_no_backend,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "hook");
        let label = unique("hook");
        let config = unique("hook");
        created.create(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hook", "namespace": ns},
            "spec": {"selector": {"app": "hook"}, "ports": [{"port": 443, "targetPort": 8443}]},
        }));
        // It only ever sees ConfigMaps created in the test's namespace, so that its being
        // down never refuses another test's request.
        created.create(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": config},
        "webhooks": [{
            "name": "check.kpilot.test",
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "clientConfig": {"service": {"namespace": ns, "name": "hook", "port": 443}},
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}],
        }],
    }));
        let params = [("namespace", ns.as_str())];

        let out = run_check(&dir, "webhooks-have-endpoints", "1.35", &params);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        let message = out.only_item(&config);
        assert_eq!(
            out.object(),
            &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration", "name": config})
        );
        assert!(
        message.contains(&format!(
            "ValidatingWebhookConfiguration {config}: webhook check.kpilot.test (failurePolicy Fail) calls service {ns}/hook, which has no ready endpoints"
        )),
        "{message}"
    );

        kwok_node(&mut created, &label);
        created.create(pod(
            &ns,
            "hook",
            json!({"app": "hook"}),
            pinned(&label, "hook:1"),
        ));
        eventually(&dir, "webhooks-have-endpoints", "1.35", &params, "passed");
    }
);

/// The date `days` from today (UTC): year, month, day.
fn days_from_today(days: i64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    // Howard Hinnant's civil_from_days.
    let z = i64::try_from(now / 86_400).expect("days") + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        i32::try_from(year).expect("year"),
        u8::try_from(month).expect("month"),
        u8::try_from(day).expect("day"),
    )
}

/// A TLS server on loopback presenting a certificate for `localhost` that lapses at the
/// start of the day 11 days from now; its address.
fn tls_server() -> String {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kpilot-test-apiserver");
    let (y, m, d) = days_from_today(-1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = days_from_today(11);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("cert");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocols")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server config");
    let config = std::sync::Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(mut conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut stream = stream;
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            while conn.is_handshaking() {
                if conn.complete_io(&mut stream).is_err() {
                    break;
                }
            }
            let _ = conn.complete_io(&mut stream);
        }
    });
    format!("localhost:{}", address.port())
}

kptest!(
    apiserver_certificate_fails_a_certificate_ten_days_from_expiry,
    |dir| {
        let address = tls_server();
        let params = [("address", address.as_str())];
        let out = run_check(&dir, "apiserver-certificate", "1.35", &params);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        assert!(
            out.message.contains(&format!(
                "the certificate {address} serves (CN=kpilot-test-apiserver) expires on"
            )),
            "{out:#?}"
        );
        // Between 10 and 11 days are left; whole days round down.
        assert!(
            out.message.contains(": 10 days left, fewer than 30")
                || out.message.contains(": 11 days left, fewer than 30"),
            "{out:#?}"
        );

        // The test cluster's own API server has years left.
        let out = run_check(&dir, "apiserver-certificate", "1.35", &[]);
        assert_eq!(out.outcome, "passed", "{out:#?}");

        // Nothing listening: the check could not look, which is never a pass.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port");
        let closed = format!("127.0.0.1:{}", closed.port());
        let params = [("address", closed.as_str())];
        let out = run_check(&dir, "apiserver-certificate", "1.35", &params);
        assert_eq!(out.outcome, "error", "{out:#?}");
        assert!(
            out.message.contains(&format!("cannot connect to {closed}")),
            "{out:#?}"
        );
    }
);

kptest!(single_replica_deployments_warns_until_scaled, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "single");
    let nowhere = unique("nowhere");
    created.create(deployment(&ns, "alone", 1, "nginx:1.27", &nowhere));
    created.create(deployment(&ns, "pair", 2, "nginx:1.27", &nowhere));
    let params = [("namespace", ns.as_str())];

    let out = run_check(&dir, "single-replica-deployments", "1.35", &params);
    assert_eq!(out.outcome, "warning", "{out:#?}");
    let message = out.only_item("alone");
    assert_eq!(
        out.object(),
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": "alone"})
    );
    assert!(
        message.contains(&format!("Deployment {ns}/alone has one replica")),
        "{message}"
    );

    kubectl(
        &["-n", &ns, "scale", "deployment/alone", "--replicas=2"],
        None,
    );
    let out = run_check(&dir, "single-replica-deployments", "1.35", &params);
    assert_eq!(out.outcome, "passed", "{out:#?}");
});

kptest!(
    apiserver_version_is_target_compares_minor_or_whole_version,
    |dir| {
        let from = server_version();
        let out = run_check(&dir, "apiserver-version-is-target", "1.35", &[]);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        assert!(
            out.message
                .contains(&format!("the API server is at {from}, not the target 1.35")),
            "{out:#?}"
        );
        let minor = from
            .trim_start_matches('v')
            .rsplit_once('.')
            .expect("x.y.z")
            .0;
        let out = run_check(&dir, "apiserver-version-is-target", minor, &[]);
        assert_eq!(out.outcome, "passed", "{out:#?}");
        // inspect passes the target's minor: a patch release of it is the same target.
        let out = run_check(&dir, "apiserver-version-is-target", &from, &[]);
        assert_eq!(out.outcome, "passed", "{out:#?}");
    }
);

kptest!(system_pods_ready_names_a_pending_pod_until_it_runs, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "sys");
    let label = unique("sys");
    created.create(pod(
        &ns,
        "agent",
        json!({"app": "agent"}),
        pinned(&label, "agent:1"),
    ));
    let params = [("namespace", ns.as_str())];

    let out = eventually(&dir, "system-pods-ready", "1.35", &params, "failed");
    let message = out.only_item("agent");
    assert_eq!(
        out.object(),
        &json!({"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": "agent"})
    );
    assert!(
        message.contains(&format!("pod {ns}/agent is not Ready (phase Pending")),
        "{message}"
    );

    kwok_node(&mut created, &label);
    eventually(&dir, "system-pods-ready", "1.35", &params, "passed");
});

kptest!(
    deployments_available_names_a_deployment_with_no_room,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "avail");
        let label = unique("avail");
        created.create(deployment(&ns, "web", 2, "nginx:1.27", &label));
        let params = [("namespace", ns.as_str())];

        let out = run_check(&dir, "deployments-available", "1.35", &params);
        assert_eq!(out.outcome, "failed", "{out:#?}");
        let message = out.only_item("web");
        assert_eq!(
            out.object(),
            &json!({"apiVersion": "apps/v1", "kind": "Deployment", "namespace": ns, "name": "web"})
        );
        assert!(
            message.contains(&format!(
                "Deployment {ns}/web has 0 of 2 replicas available"
            )),
            "{message}"
        );

        kwok_node(&mut created, &label);
        eventually(&dir, "deployments-available", "1.35", &params, "passed");
    }
);

kptest!(
    services_have_endpoints_warns_a_service_selecting_nothing,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "svc");
        let label = unique("svc");
        let service = |name: &str, selector: Option<Value>| {
            let mut spec = json!({"ports": [{"port": 80}]});
            if let Some(s) = selector {
                spec["selector"] = s;
            }
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            })
        };
        created.create(service("web", Some(json!({"app": "web"}))));
        // Its endpoints are someone's to manage by hand.
        created.create(service("manual", None));
        let params = [("namespace", ns.as_str())];

        let out = run_check(&dir, "services-have-endpoints", "1.35", &params);
        assert_eq!(out.outcome, "warning", "{out:#?}");
        let message = out.only_item("web");
        assert_eq!(
            out.object(),
            &json!({"apiVersion": "v1", "kind": "Service", "namespace": ns, "name": "web"})
        );
        assert!(
            message.contains(&format!("Service {ns}/web selects no ready pod")),
            "{message}"
        );

        kwok_node(&mut created, &label);
        created.create(pod(
            &ns,
            "web",
            json!({"app": "web"}),
            pinned(&label, "nginx:1.27"),
        ));
        eventually(&dir, "services-have-endpoints", "1.35", &params, "passed");
    }
);
