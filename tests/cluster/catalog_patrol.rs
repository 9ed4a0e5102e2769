//! The patrol checks of the catalog that read the Kubernetes API
//! (`workflows/catalog/patrol-*.yaml`): each test seeds the problem on the
//! test cluster in a namespace (or on nodes, volumes, bindings) of its own,
//! runs that one check with its params scoped to what it made, sees it fail
//! naming the object, fixes the object and sees the check pass.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{kp, kubeconfig, kubectl, node, unique, wait_ready, Created};
use crate::util::Dir;

/// What one check said.
#[derive(Debug)]
struct Outcome {
    /// kpilot's exit code.
    code: i32,
    /// `passed`, `warning`, `failed` or `error`.
    outcome: String,
    /// The failing items: the object they name (`Kind namespace/name`, or
    /// `Kind name` when cluster-scoped) and the item's message.
    items: Vec<(String, String)>,
    /// Everything, for assertion messages.
    raw: String,
}

impl Outcome {
    /// The message of the one failing item, which must name `object`.
    #[track_caller]
    fn only(&self, object: &str) -> &str {
        assert_eq!(self.items.len(), 1, "{self:#?}");
        assert_eq!(self.items[0].0, object, "{self:#?}");
        &self.items[0].1
    }

    #[track_caller]
    fn expect(&self, code: i32, outcome: &str) -> &Self {
        assert_eq!(
            (self.code, self.outcome.as_str()),
            (code, outcome),
            "{}",
            self.raw
        );
        self
    }

    #[track_caller]
    fn passed(&self) {
        self.expect(0, "passed");
        assert!(self.items.is_empty(), "{self:#?}");
    }
}

/// Runs catalog check `id` alone through `kpilot inspect --scenario patrol`,
/// with a `kind: Report` that selects it and sets `params` over its
/// defaults, and reads its entry in the JSON report.
fn check(dir: &Dir, id: &str, params: &[(&str, &str)]) -> Outcome {
    let params: serde_json::Map<String, Value> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    // JSON is YAML: the Report as one JSON document.
    let report = json!({
        "apiVersion": "kpilot/v1",
        "kind": "Report",
        "metadata": {"name": "t"},
        "spec": {
            "clusterType": "self-hosted",
            "select": {"ids": [id]},
            "overrides": [{"check": id, "params": params}],
        },
    });
    let file = format!("{}.yaml", unique("report"));
    dir.write(&file, &report.to_string());
    let kubeconfig = kubeconfig().display().to_string();
    let ran = kp(
        dir,
        &[
            "inspect",
            "--scenario",
            "patrol",
            "--report",
            &file,
            "-o",
            "json",
            "--kubeconfig",
            &kubeconfig,
        ],
    );
    let raw = format!("{}\n--- stderr\n{}", ran.stdout, ran.stderr);
    let json: Value = serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|e| panic!("inspect -o json printed no JSON ({e}): {raw}"));
    let checks = json["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 1, "{raw}");
    let entry = &checks[0];
    assert_eq!(entry["id"], id, "{raw}");
    // Every catalog check says what to do, with a link to the Kubernetes documentation.
    assert!(
        entry["remediation"]["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://kubernetes.io/docs/"))
            && entry["remediation"]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty()),
        "{raw}"
    );
    let items = entry["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i["outcome"] != "passed")
                .map(|i| {
                    let object = &i["object"];
                    let name = object["name"].as_str().unwrap_or_default();
                    let kind = object["kind"].as_str().unwrap_or_default();
                    let object = match object["namespace"].as_str() {
                        Some(ns) => format!("{kind} {ns}/{name}"),
                        None => format!("{kind} {name}"),
                    };
                    (object, i["message"].as_str().unwrap_or_default().to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    Outcome {
        code: ran.code,
        outcome: entry["outcome"].as_str().unwrap_or_default().to_owned(),
        items,
        raw,
    }
}

/// Waits until `done` holds, for at most a minute.
#[track_caller]
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not after 60s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A namespace of the test's own, deleted (with all in it) when `created`
/// is dropped, whose `default` ServiceAccount exists (pods need it).
fn namespace(created: &mut Created, tag: &str) -> String {
    let ns = unique(tag);
    created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
    wait_for(&format!("ServiceAccount {ns}/default"), || {
        kubectl(&["get", "serviceaccounts", "-n", &ns, "-o", "name"], None)
            .contains("serviceaccount/default")
    });
    ns
}

/// Creates every object in one kubectl call (namespaced objects go with
/// their namespace).
fn create_all(objects: Vec<Value>) {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    kubectl(&["create", "-f", "-"], Some(&list.to_string()));
}

/// A pod the scheduler leaves alone (a scheduling gate), so no kubelet or
/// KWOK ever changes it: its spec and status are what the test writes.
fn pod(ns: &str, name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["schedulingGates"] = json!([{"name": "kpilot.dev/hold"}]);
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    })
}

/// A container with an image that is pinned and resources that are set.
fn container(name: &str) -> Value {
    json!({
        "name": name,
        "image": "registry.k8s.io/pause:3.10",
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "16Mi"}},
    })
}

/// A Node no KWOK manages, labelled `kpilot-test=label`, with these
/// conditions besides Ready.
fn sick_node(name: &str, label: &str, conditions: &[(&str, &str, &str)]) -> Value {
    let mut node = node(name, label, "v1.34.4", Some(true));
    let list = node["status"]["conditions"]
        .as_array_mut()
        .expect("conditions");
    for (kind, status, message) in conditions {
        list.push(json!({"type": kind, "status": status, "reason": format!("{kind}Test"), "message": message}));
    }
    node
}

/// Sets node conditions through the status subresource, as the kubelet or
/// node-problem-detector does.
fn set_conditions(name: &str, conditions: &[(&str, &str)]) {
    let list: Vec<Value> = conditions
        .iter()
        .map(|(kind, status)| json!({"type": kind, "status": status, "reason": format!("{kind}Test"), "message": "fixed"}))
        .collect();
    let patch = json!({"status": {"conditions": list}}).to_string();
    kubectl(
        &["patch", "node", name, "--subresource=status", "-p", &patch],
        None,
    );
}

kptest!(nodes_pressure_names_the_node_under_disk_pressure, |dir| {
    let label = unique("pressure");
    let (sick, fine) = (format!("{label}-sick"), format!("{label}-fine"));
    let mut created = Created::default();
    created.create(sick_node(
        &sick,
        &label,
        &[
            ("DiskPressure", "True", "kubelet has disk pressure"),
            ("MemoryPressure", "False", "kubelet has sufficient memory"),
        ],
    ));
    created.create(sick_node(
        &fine,
        &label,
        &[("DiskPressure", "False", "kubelet has no disk pressure")],
    ));
    let selector = format!("kpilot-test={label}");
    let params = [("labelSelector", selector.as_str())];

    let out = check(&dir, "nodes-pressure", &params);
    let message = out.expect(1, "failed").only(&format!("Node {sick}"));
    assert!(
        message.contains("reports DiskPressure (kubelet has disk pressure)")
            && !message.contains("MemoryPressure"),
        "{message}"
    );

    set_conditions(&sick, &[("DiskPressure", "False")]);
    check(&dir, "nodes-pressure", &params).passed();
});

kptest!(
    nodes_kernel_problems_names_deadlock_and_readonly_fs,
    |dir| {
        let label = unique("kernel");
        let (hung, ro) = (format!("{label}-hung"), format!("{label}-ro"));
        let mut created = Created::default();
        created.create(sick_node(
            &hung,
            &label,
            &[(
                "KernelDeadlock",
                "True",
                "task docker:7 blocked for more than 120 seconds.",
            )],
        ));
        created.create(sick_node(
            &ro,
            &label,
            &[
                ("ReadonlyFilesystem", "True", "remounted read-only"),
                ("KernelDeadlock", "False", "kernel has no deadlock"),
            ],
        ));
        let selector = format!("kpilot-test={label}");
        let params = [("labelSelector", selector.as_str())];

        let out = check(&dir, "nodes-kernel-problems", &params);
        out.expect(1, "failed");
        assert_eq!(out.items.len(), 2, "{out:#?}");
        let by = |n: &str| {
            out.items
                .iter()
                .find(|(o, _)| *o == format!("Node {n}"))
                .map(|(_, m)| m.clone())
                .unwrap_or_else(|| panic!("{n} not named: {out:#?}"))
        };
        assert!(
        by(&hung).contains(
            "KernelDeadlock KernelDeadlockTest (task docker:7 blocked for more than 120 seconds.)"
        ),
        "{out:#?}"
    );
        assert!(
            by(&ro).ends_with(
                "reports ReadonlyFilesystem ReadonlyFilesystemTest (remounted read-only)"
            ),
            "{out:#?}"
        );

        set_conditions(&hung, &[("KernelDeadlock", "False")]);
        set_conditions(&ro, &[("ReadonlyFilesystem", "False")]);
        check(&dir, "nodes-kernel-problems", &params).passed();
    }
);

kptest!(nodes_cordoned_warns_until_uncordoned, |dir| {
    let label = unique("cordon");
    let (kwok, other) = (format!("{label}-kwok"), format!("{label}-other"));
    let mut created = Created::default();
    created.create(node(&kwok, &label, "v1.34.4", None));
    created.create(node(&other, &label, "v1.34.4", None));
    wait_ready(&kwok);
    kubectl(&["cordon", &kwok], None);
    let selector = format!("kpilot-test={label}");
    let params = [("labelSelector", selector.as_str())];

    let out = check(&dir, "nodes-cordoned", &params);
    let message = out.expect(0, "warning").only(&format!("Node {kwok}"));
    assert!(message.contains("is cordoned"), "{message}");

    kubectl(&["uncordon", &kwok], None);
    check(&dir, "nodes-cordoned", &params).passed();
});

kptest!(privileged_containers_names_the_privileged_pod, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "priv");
    let mut privileged = container("tool");
    privileged["securityContext"] = json!({"privileged": true});
    create_all(vec![
        pod(
            &ns,
            "root",
            json!({"containers": [container("app"), privileged]}),
        ),
        pod(
            &ns,
            "plain",
            json!({"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10", "securityContext": {"privileged": false}}]}),
        ),
    ]);
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "privileged-containers", &params);
    let message = out.expect(1, "failed").only(&format!("Pod {ns}/root"));
    assert!(
        message.contains("runs privileged container(s) tool:"),
        "{message}"
    );
    // A namespace listed as a system one may run them.
    check(
        &dir,
        "privileged-containers",
        &[
            ("namespace", &ns),
            ("excludeNamespaces", &format!("kube-system,{ns}")),
        ],
    )
    .passed();

    // securityContext cannot change on a pod: the fix is a new pod.
    kubectl(&["delete", "pod", "root", "-n", &ns, "--wait=false"], None);
    wait_for("pod root deleted", || {
        !kubectl(&["get", "pods", "-n", &ns, "-o", "name"], None).contains("pod/root")
    });
    check(&dir, "privileged-containers", &params).passed();
});

kptest!(host_namespaces_warns_of_host_network_and_pid, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "hostns");
    create_all(vec![
        pod(
            &ns,
            "agent",
            json!({"hostNetwork": true, "hostPID": true, "containers": [container("app")]}),
        ),
        pod(
            &ns,
            "app",
            json!({"hostNetwork": false, "containers": [container("app")]}),
        ),
    ]);
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "host-namespaces", &params);
    let message = out.expect(0, "warning").only(&format!("Pod {ns}/agent"));
    assert!(message.contains("sets hostNetwork, hostPID:"), "{message}");

    kubectl(&["delete", "pod", "agent", "-n", &ns, "--wait=false"], None);
    wait_for("pod agent deleted", || {
        !kubectl(&["get", "pods", "-n", &ns, "-o", "name"], None).contains("pod/agent")
    });
    check(&dir, "host-namespaces", &params).passed();
});

kptest!(
    cluster_admin_bindings_names_users_service_accounts_and_everyone,
    |dir| {
        let label = unique("admin");
        let mut created = Created::default();
        let binding = |name: &str, subjects: Value| {
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": name, "labels": {"kpilot-test": label}},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": subjects,
            })
        };
        let masters = json!({"kind": "Group", "name": "system:masters", "apiGroup": "rbac.authorization.k8s.io"});
        let (wide, system, everyone) = (
            format!("{label}-wide"),
            format!("{label}-system"),
            format!("{label}-everyone"),
        );
        created.create(binding(
            &everyone,
            json!([{"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"}]),
        ));
        created.create(binding(
        &wide,
        json!([masters, {"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}, {"kind": "ServiceAccount", "name": "ci", "namespace": "builds"}]),
    ));
        created.create(binding(&system, json!([masters])));
        let selector = format!("kpilot-test={label}");
        let params = [("labelSelector", selector.as_str())];

        let out = check(&dir, "cluster-admin-bindings", &params);
        out.expect(0, "warning");
        let mut items = out.items.clone();
        items.sort();
        assert_eq!(
            items,
            [
                (
                    format!("ClusterRoleBinding {everyone}"),
                    format!("ClusterRoleBinding {everyone} gives cluster-admin to Group system:authenticated")
                ),
                (
                    format!("ClusterRoleBinding {wide}"),
                    format!("ClusterRoleBinding {wide} gives cluster-admin to User alice, ServiceAccount builds/ci")
                ),
            ],
            "{out:#?}"
        );
        kubectl(&["delete", "clusterrolebinding", &everyone], None);
        // Subjects a person allowed pass.
        check(
            &dir,
            "cluster-admin-bindings",
            &[
                ("labelSelector", &selector),
                ("allowedSubjects", "alice, builds/ci"),
            ],
        )
        .passed();

        let patch = json!([{"op": "replace", "path": "/subjects", "value": [masters]}]).to_string();
        kubectl(
            &[
                "patch",
                "clusterrolebinding",
                &wide,
                "--type=json",
                "-p",
                &patch,
            ],
            None,
        );
        check(&dir, "cluster-admin-bindings", &params).passed();
    }
);

kptest!(apiserver_flags_names_the_missing_flag, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "apiflags");
    let apiserver = |name: &str, flags: &[&str]| {
        let mut command = vec!["kube-apiserver", "--secure-port=6443"];
        command.extend(flags);
        let mut p = pod(
            &ns,
            name,
            json!({"containers": [{"name": "kube-apiserver", "image": "registry.k8s.io/kube-apiserver:v1.34.4", "command": command}]}),
        );
        p["metadata"]["labels"] = json!({"component": "kube-apiserver", "tier": "control-plane"});
        p
    };
    create_all(vec![apiserver(
        "kube-apiserver-cp1",
        &["--anonymous-auth=false"],
    )]);
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "apiserver-flags", &params);
    let message = out
        .expect(1, "failed")
        .only(&format!("Pod {ns}/kube-apiserver-cp1"));
    assert!(
        message.ends_with("runs without --profiling=false"),
        "{message}"
    );

    // A static pod's command changes when its manifest does: the kubelet makes a new pod.
    kubectl(
        &[
            "delete",
            "pod",
            "kube-apiserver-cp1",
            "-n",
            &ns,
            "--wait=false",
        ],
        None,
    );
    create_all(vec![apiserver(
        "kube-apiserver-cp2",
        &["--anonymous-auth=false", "--profiling=false"],
    )]);
    wait_for("pod kube-apiserver-cp1 deleted", || {
        !kubectl(&["get", "pods", "-n", &ns, "-o", "name"], None).contains("cp1")
    });
    check(&dir, "apiserver-flags", &params).passed();
});

kptest!(image_tags_names_latest_and_untagged_images, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "tags");
    let mut latest = container("web");
    latest["image"] = json!("nginx:latest");
    let mut untagged = container("setup");
    untagged["image"] = json!("localhost:5000/busybox");
    let mut digest = container("app");
    digest["image"] = json!("registry.k8s.io/pause@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a");
    create_all(vec![
        pod(
            &ns,
            "web",
            json!({"initContainers": [untagged], "containers": [latest, container("pause")]}),
        ),
        pod(&ns, "pinned", json!({"containers": [digest]})),
    ]);
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "image-tags", &params);
    let message = out.expect(0, "warning").only(&format!("Pod {ns}/web"));
    assert!(
        message.contains("runs web (nginx:latest), setup (localhost:5000/busybox):"),
        "{message}"
    );

    // A pod's images may change in place.
    let patch = json!({"spec": {
        "containers": [{"name": "web", "image": "nginx:1.27.3"}],
        "initContainers": [{"name": "setup", "image": "localhost:5000/busybox:1.36"}],
    }})
    .to_string();
    kubectl(&["patch", "pod", "web", "-n", &ns, "-p", &patch], None);
    check(&dir, "image-tags", &params).passed();
});

kptest!(image_registries_names_images_from_other_registries, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "registry");
    let mut hub = container("web");
    hub["image"] = json!("nginx:1.27.3");
    create_all(vec![
        pod(&ns, "web", json!({"containers": [container("pause"), hub]})),
        pod(&ns, "ok", json!({"containers": [container("app")]})),
    ]);
    // No list of registries: any is allowed.
    check(&dir, "image-registries", &[("namespace", &ns)]).passed();

    let params = [
        ("namespace", ns.as_str()),
        ("allowedRegistries", "registry.k8s.io, mirror.example.com"),
    ];
    let out = check(&dir, "image-registries", &params);
    let message = out.expect(1, "failed").only(&format!("Pod {ns}/web"));
    assert!(
        message.contains("runs web (nginx:1.27.3) from a registry not in"),
        "{message}"
    );

    let patch =
        json!({"spec": {"containers": [{"name": "web", "image": "mirror.example.com/library/nginx:1.27.3"}]}})
            .to_string();
    kubectl(&["patch", "pod", "web", "-n", &ns, "-p", &patch], None);
    check(&dir, "image-registries", &params).passed();
});

kptest!(
    container_resources_names_the_container_without_them,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "resources");
        let mut bare = container("sidecar");
        bare["resources"] = json!({"requests": {"cpu": "10m"}});
        create_all(vec![
            pod(
                &ns,
                "greedy",
                json!({"containers": [container("app"), bare]}),
            ),
            pod(&ns, "sized", json!({"containers": [container("app")]})),
        ]);
        let params = [("namespace", ns.as_str())];

        let out = check(&dir, "container-resources", &params);
        let message = out.expect(0, "warning").only(&format!("Pod {ns}/greedy"));
        assert!(
            message.ends_with("container sidecar sets no requests.memory, limits.memory"),
            "{message}"
        );

        kubectl(
            &["delete", "pod", "greedy", "-n", &ns, "--wait=false"],
            None,
        );
        wait_for("pod greedy deleted", || {
            !kubectl(&["get", "pods", "-n", &ns, "-o", "name"], None).contains("pod/greedy")
        });
        check(&dir, "container-resources", &params).passed();
    }
);

/// `kubectl get KIND NAME -o jsonpath=PATH`.
fn get(kind: &str, name: &str, ns: Option<&str>, path: &str) -> String {
    let jsonpath = format!("jsonpath={path}");
    let mut args = vec!["get", kind, name, "-o", jsonpath.as_str()];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    kubectl(&args, None).trim().to_owned()
}

/// A PersistentVolume no plugin can provision or delete (NFS), labelled
/// `kpilot-test=label`.
fn volume(name: &str, label: &str, class: &str, reclaim: &str, claim: Option<Value>) -> Value {
    let mut pv = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"kpilot-test": label}},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": reclaim,
            "storageClassName": class,
            "nfs": {"server": "127.0.0.1", "path": "/kpilot-test"},
        },
    });
    if let Some(claim) = claim {
        pv["spec"]["claimRef"] = claim;
    }
    pv
}

kptest!(
    pvcs_bound_names_the_pending_claim_until_a_volume_binds,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "pvc");
        let class = unique("no-such-class");
        create_all(vec![json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": ns},
            "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        })]);
        wait_for("PVC data Pending", || {
            get("pvc", "data", Some(&ns), "{.status.phase}") == "Pending"
        });
        let params = [("namespace", ns.as_str())];

        let out = check(&dir, "pvcs-bound", &params);
        let message = out
            .expect(0, "warning")
            .only(&format!("PersistentVolumeClaim {ns}/data"));
        assert!(
            message.contains(&format!("is Pending (storage class {class})")),
            "{message}"
        );

        // The fix: a volume of that class for it.
        let pv = unique("pv");
        created.create(volume(
            &pv,
            &pv,
            &class,
            "Retain",
            Some(json!({"namespace": ns, "name": "data"})),
        ));
        wait_for("PVC data Bound", || {
            get("pvc", "data", Some(&ns), "{.status.phase}") == "Bound"
        });
        check(&dir, "pvcs-bound", &params).passed();
    }
);

kptest!(
    pvs_failed_names_the_volume_that_could_not_be_deleted,
    |dir| {
        let label = unique("pv");
        let (failed, spare) = (format!("{label}-failed"), format!("{label}-spare"));
        let mut created = Created::default();
        // Bound to a claim that is gone: the controller reclaims it, finds no
        // plugin that deletes NFS volumes, and marks it Failed.
        created.create(volume(
        &failed,
        &label,
        "",
        "Delete",
        Some(json!({"namespace": "default", "name": "gone", "uid": "00000000-0000-0000-0000-00000000dead"})),
    ));
        created.create(volume(&spare, &label, "", "Retain", None));
        wait_for("PV Failed", || {
            get("pv", &failed, None, "{.status.phase}") == "Failed"
        });
        let selector = format!("kpilot-test={label}");
        let params = [("labelSelector", selector.as_str())];

        let out = check(&dir, "pvs-failed", &params);
        let message = out
            .expect(1, "failed")
            .only(&format!("PersistentVolume {failed}"));
        assert!(
            message.contains("is Failed: ")
                && message.contains("no deletable volume plugin matched"),
            "{message}"
        );

        kubectl(&["delete", "pv", &failed, "--wait=true"], None);
        check(&dir, "pvs-failed", &params).passed();
    }
);

/// Writes a pod's container statuses, as a kubelet does.
fn set_status(ns: &str, pod: &str, statuses: Value) {
    let patch = json!({"status": {"containerStatuses": statuses}}).to_string();
    kubectl(
        &[
            "patch",
            "pod",
            pod,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
}

fn status(name: &str, restarts: u32, state: Value) -> Value {
    json!({
        "name": name, "image": "registry.k8s.io/pause:3.10", "imageID": "",
        "ready": state.get("running").is_some(), "started": state.get("running").is_some(),
        "restartCount": restarts, "state": state,
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}},
    })
}

kptest!(pods_crashlooping_names_the_container_in_backoff, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "crash");
    create_all(vec![
        pod(
            &ns,
            "api",
            json!({"containers": [container("app"), container("proxy")]}),
        ),
        pod(&ns, "steady", json!({"containers": [container("app")]})),
    ]);
    let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    let backoff = json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s restarting failed container"}});
    set_status(
        &ns,
        "api",
        json!([
            status("app", 12, backoff),
            status("proxy", 0, running.clone())
        ]),
    );
    set_status(&ns, "steady", json!([status("app", 0, running.clone())]));
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "pods-crashlooping", &params);
    let message = out.expect(1, "failed").only(&format!("Pod {ns}/api"));
    assert!(
        message.ends_with("container app is in CrashLoopBackOff after 12 restarts"),
        "{message}"
    );

    set_status(
        &ns,
        "api",
        json!([
            status("app", 13, running.clone()),
            status("proxy", 0, running)
        ]),
    );
    check(&dir, "pods-crashlooping", &params).passed();
});

kptest!(pods_restarting_names_the_container_over_the_limit, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "restarts");
    create_all(vec![
        pod(&ns, "flaky", json!({"containers": [container("app")]})),
        pod(&ns, "calm", json!({"containers": [container("app")]})),
    ]);
    let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    set_status(&ns, "flaky", json!([status("app", 9, running.clone())]));
    set_status(&ns, "calm", json!([status("app", 5, running)]));
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "pods-restarting", &params);
    let message = out.expect(0, "warning").only(&format!("Pod {ns}/flaky"));
    assert!(
        message.contains("container app restarted 9 times (more than 5)"),
        "{message}"
    );
    // The limit is a param.
    check(
        &dir,
        "pods-restarting",
        &[("namespace", &ns), ("maxRestarts", "9")],
    )
    .passed();

    // Restart counts only reset with a new pod.
    kubectl(&["delete", "pod", "flaky", "-n", &ns, "--wait=false"], None);
    wait_for("pod flaky deleted", || {
        !kubectl(&["get", "pods", "-n", &ns, "-o", "name"], None).contains("pod/flaky")
    });
    check(&dir, "pods-restarting", &params).passed();
});

kptest!(pods_unschedulable_names_the_pod_until_a_node_fits, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "sched");
    let label = unique("fits");
    create_all(vec![json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "waiting", "namespace": ns},
        "spec": {"nodeSelector": {"kpilot-test": label}, "containers": [container("app")]},
    })]);
    wait_for("pod waiting Unschedulable", || {
        get(
            "pod",
            "waiting",
            Some(&ns),
            "{.status.conditions[?(@.type==\"PodScheduled\")].reason}",
        ) == "Unschedulable"
    });
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "pods-unschedulable", &params);
    let message = out.expect(0, "warning").only(&format!("Pod {ns}/waiting"));
    // The scheduler's own words, which depend on the other nodes of the cluster.
    assert!(
        message.contains("cannot be scheduled: 0/")
            || message.contains("cannot be scheduled: no nodes available"),
        "{message}"
    );

    // The fix: a node it selects (KWOK runs the pod).
    let fits = format!("{label}-node");
    created.create(node(&fits, &label, "v1.34.4", None));
    wait_for("pod waiting scheduled", || {
        get("pod", "waiting", Some(&ns), "{.spec.nodeName}") == fits
    });
    check(&dir, "pods-unschedulable", &params).passed();
});

kptest!(jobs_failed_names_the_job_past_its_deadline, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "jobs");
    let job = |name: &str, spec: Value| {
        let mut job = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "backoffLimit": 0,
                "template": {"spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"kpilot-test": "no-such-node"},
                    "containers": [container("app")],
                }},
            },
        });
        for (k, v) in spec.as_object().expect("spec") {
            job["spec"][k] = v.clone();
        }
        job
    };
    create_all(vec![
        job("backup", json!({"activeDeadlineSeconds": 1})),
        job("later", json!({"suspend": true})),
    ]);
    wait_for("Job backup Failed", || {
        get(
            "job",
            "backup",
            Some(&ns),
            "{.status.conditions[?(@.type==\"Failed\")].status}",
        ) == "True"
    });
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "jobs-failed", &params);
    let message = out.expect(0, "warning").only(&format!("Job {ns}/backup"));
    assert!(
        message
            .contains("failed: DeadlineExceeded (Job was active longer than specified deadline)"),
        "{message}"
    );

    kubectl(&["delete", "job", "backup", "-n", &ns, "--wait=true"], None);
    check(&dir, "jobs-failed", &params).passed();
});

/// Waits until the pod `name` of `ns` is gone.
fn wait_deleted(ns: &str, name: &str) {
    wait_for(&format!("pod {ns}/{name} deleted"), || {
        !kubectl(&["get", "pods", "-n", ns, "-o", "name"], None)
            .lines()
            .any(|l| l == format!("pod/{name}"))
    });
}

kptest!(
    added_capabilities_names_net_admin_not_the_baseline_ones,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "caps");
        let mut admin = container("vpn");
        admin["securityContext"] =
            json!({"capabilities": {"add": ["NET_BIND_SERVICE", "NET_ADMIN", "CAP_SYS_ADMIN"]}});
        let mut baseline = container("web");
        baseline["securityContext"] =
            json!({"capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]}});
        create_all(vec![
            pod(&ns, "vpn", json!({"containers": [container("app"), admin]})),
            pod(&ns, "web", json!({"containers": [baseline]})),
        ]);
        let params = [("namespace", ns.as_str())];

        let out = check(&dir, "added-capabilities", &params);
        let message = out.expect(0, "warning").only(&format!("Pod {ns}/vpn"));
        assert!(
            message.ends_with("adds NET_ADMIN, CAP_SYS_ADMIN to container vpn"),
            "{message}"
        );

        kubectl(&["delete", "pod", "vpn", "-n", &ns, "--wait=false"], None);
        wait_deleted(&ns, "vpn");
        check(&dir, "added-capabilities", &params).passed();
    }
);

kptest!(hostpath_volumes_names_the_pod_mounting_the_node, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "hostpath");
    create_all(vec![
        pod(
            &ns,
            "logs",
            json!({
                "volumes": [{"name": "varlog", "hostPath": {"path": "/var/log"}}, {"name": "tmp", "emptyDir": {}}],
                "containers": [container("app")],
            }),
        ),
        pod(
            &ns,
            "cache",
            json!({"volumes": [{"name": "tmp", "emptyDir": {}}], "containers": [container("app")]}),
        ),
    ]);
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "hostpath-volumes", &params);
    let message = out.expect(0, "warning").only(&format!("Pod {ns}/logs"));
    assert!(
        message.contains("mounts varlog (hostPath /var/log) from the node"),
        "{message}"
    );

    kubectl(&["delete", "pod", "logs", "-n", &ns, "--wait=false"], None);
    wait_deleted(&ns, "logs");
    check(&dir, "hostpath-volumes", &params).passed();
});

kptest!(pods_evicted_names_the_evicted_pod, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "evicted");
    create_all(vec![
        pod(&ns, "evicted", json!({"containers": [container("app")]})),
        pod(&ns, "crashed", json!({"containers": [container("app")]})),
    ]);
    // What the kubelet writes when it evicts a pod, and when one simply fails.
    let fail = |name: &str, reason: Option<&str>| {
        let mut status =
            json!({"phase": "Failed", "message": "The node was low on resource: memory."});
        if let Some(reason) = reason {
            status["reason"] = json!(reason);
        }
        let patch = json!({"status": status}).to_string();
        kubectl(
            &[
                "patch",
                "pod",
                name,
                "-n",
                &ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        );
    };
    fail("evicted", Some("Evicted"));
    fail("crashed", None);
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "pods-evicted", &params);
    let message = out.expect(0, "warning").only(&format!("Pod {ns}/evicted"));
    assert!(
        message.ends_with("was evicted from its node: The node was low on resource: memory."),
        "{message}"
    );

    kubectl(
        &["delete", "pod", "evicted", "-n", &ns, "--wait=false"],
        None,
    );
    wait_deleted(&ns, "evicted");
    check(&dir, "pods-evicted", &params).passed();
});

kptest!(
    daemonsets_ready_names_the_daemonset_until_its_node_runs_it,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "ds");
        let label = unique("ds");
        // A node that says it is Ready but that no kubelet (nor KWOK) serves:
        // the DaemonSet's pod is bound to it and never starts.
        let silent = format!("{label}-silent");
        let mut dead = node(&silent, &label, "v1.34.4", Some(true));
        let room = json!({"cpu": "4", "memory": "8Gi", "pods": "110"});
        dead["status"]["capacity"] = room.clone();
        dead["status"]["allocatable"] = room;
        created.create(dead);
        create_all(vec![json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "agent", "namespace": ns},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"nodeSelector": {"kpilot-test": label}, "containers": [container("app")]},
                },
            },
        })]);
        wait_for("DaemonSet agent wants 1 pod", || {
            get(
                "daemonset",
                "agent",
                Some(&ns),
                "{.status.desiredNumberScheduled}",
            ) == "1"
        });
        let params = [("namespace", ns.as_str())];

        let out = check(&dir, "daemonsets-ready", &params);
        let message = out
            .expect(1, "failed")
            .only(&format!("DaemonSet {ns}/agent"));
        assert!(message.ends_with("has 0 of 1 pods ready"), "{message}");

        // The node's kubelet comes back and starts the pod (written here as a kubelet writes it).
        let bound = || {
            kubectl(
                &[
                    "get",
                    "pods",
                    "-n",
                    &ns,
                    "-l",
                    "app=agent",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
                ],
                None,
            )
            .lines()
            .find_map(|l| l.strip_suffix(&format!(" {silent}")).map(str::to_owned))
        };
        wait_for("the DaemonSet's pod bound to its node", || {
            bound().is_some()
        });
        let pod = bound().unwrap_or_default();
        let now = "2026-01-01T00:00:00Z";
        let ready = json!({"status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
            "containerStatuses": [status("app", 0, json!({"running": {"startedAt": now}}))],
        }})
        .to_string();
        kubectl(
            &[
                "patch",
                "pod",
                &pod,
                "-n",
                &ns,
                "--subresource=status",
                "-p",
                &ready,
            ],
            None,
        );
        wait_for("DaemonSet agent ready", || {
            get("daemonset", "agent", Some(&ns), "{.status.numberReady}") == "1"
        });
        check(&dir, "daemonsets-ready", &params).passed();
    }
);

kptest!(
    services_lb_pending_names_the_service_without_an_address,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "lb");
        let service = |name: &str, kind: &str| {
            json!({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"type": kind, "selector": {"app": name}, "ports": [{"port": 443, "targetPort": 8443}]},
            })
        };
        create_all(vec![
            service("public", "LoadBalancer"),
            service("internal", "ClusterIP"),
        ]);
        let params = [("namespace", ns.as_str())];

        let out = check(&dir, "services-lb-pending", &params);
        let message = out
            .expect(1, "failed")
            .only(&format!("Service {ns}/public"));
        assert!(
            message.contains("has no load balancer address"),
            "{message}"
        );

        // What a cloud controller writes once the load balancer exists.
        let patch =
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.10"}]}}}).to_string();
        kubectl(
            &[
                "patch",
                "service",
                "public",
                "-n",
                &ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        );
        check(&dir, "services-lb-pending", &params).passed();
    }
);

/// Removes the finalizers of a ConfigMap when dropped, so that a failing
/// test leaves no namespace stuck on the shared cluster.
struct Unfinalize {
    namespace: String,
    name: String,
}

impl Drop for Unfinalize {
    fn drop(&mut self) {
        let _ = std::process::Command::new(super::kubectl_path())
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args([
                "patch",
                "configmap",
                &self.name,
                "-n",
                &self.namespace,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ])
            .output();
    }
}

kptest!(
    namespaces_stuck_terminating_names_the_finalizer_left,
    |dir| {
        let label = unique("nsdel");
        let (stuck, alive) = (format!("{label}-stuck"), format!("{label}-alive"));
        let mut created = Created::default();
        for ns in [&stuck, &alive] {
            created.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": {"kpilot-test": label}}}));
        }
        let _unfinalize = Unfinalize {
            namespace: stuck.clone(),
            name: "held".into(),
        };
        create_all(vec![json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "held", "namespace": stuck, "finalizers": ["kpilot.dev/hold"]},
        })]);
        kubectl(&["delete", "namespace", &stuck, "--wait=false"], None);
        wait_for("namespace stuck on its finalizer", || {
            get(
                "namespace",
                &stuck,
                None,
                "{.status.conditions[?(@.type==\"NamespaceFinalizersRemaining\")].status}",
            ) == "True"
        });
        let selector = format!("kpilot-test={label}");
        let params = [("labelSelector", selector.as_str())];

        let out = check(&dir, "namespaces-stuck-terminating", &params);
        let message = out.expect(0, "warning").only(&format!("Namespace {stuck}"));
        assert!(
            message.contains("is stuck deleting: ") && message.contains("kpilot.dev/hold"),
            "{message}"
        );

        // The finalizer's work done by hand: it is removed and the namespace goes.
        kubectl(
            &[
                "patch",
                "configmap",
                "held",
                "-n",
                &stuck,
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":null}}"#,
            ],
            None,
        );
        wait_for("namespace deleted", || {
            !kubectl(&["get", "namespaces", "-o", "name"], None)
                .lines()
                .any(|l| l == format!("namespace/{stuck}"))
        });
        check(&dir, "namespaces-stuck-terminating", &params).passed();
    }
);

kptest!(
    container_probes_names_the_container_without_readiness_probe,
    |dir| {
        let mut created = Created::default();
        let ns = namespace(&mut created, "probes");
        let mut probed = container("web");
        probed["readinessProbe"] = json!({"httpGet": {"path": "/healthz", "port": 8080}});
        let mut once = container("migrate");
        once["command"] = json!(["/migrate"]);
        create_all(vec![
            pod(
                &ns,
                "web",
                json!({"containers": [probed.clone(), container("cache")]}),
            ),
            pod(&ns, "served", json!({"containers": [probed]})),
            pod(
                &ns,
                "migrate",
                json!({"restartPolicy": "Never", "containers": [once]}),
            ),
        ]);
        let params = [("namespace", ns.as_str())];

        let out = check(&dir, "container-probes", &params);
        let message = out.expect(0, "warning").only(&format!("Pod {ns}/web"));
        assert!(
            message.contains("container cache has no readiness probe"),
            "{message}"
        );

        kubectl(&["delete", "pod", "web", "-n", &ns, "--wait=false"], None);
        wait_deleted(&ns, "web");
        check(&dir, "container-probes", &params).passed();
    }
);

kptest!(pvcs_bound_names_a_lost_claim_whose_volume_is_gone, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "lost");
    let pv = unique("lost-pv");
    created.create(volume(
        &pv,
        &pv,
        "",
        "Retain",
        Some(json!({"namespace": ns, "name": "db"})),
    ));
    create_all(vec![json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"storageClassName": "", "volumeName": pv, "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    })]);
    wait_for("PVC db Bound", || {
        get("pvc", "db", Some(&ns), "{.status.phase}") == "Bound"
    });
    let params = [("namespace", ns.as_str())];
    check(&dir, "pvcs-bound", &params).passed();

    // The volume goes while the claim still uses it (its protection finalizer forced off).
    kubectl(&["delete", "pv", &pv, "--wait=false"], None);
    kubectl(
        &[
            "patch",
            "pv",
            &pv,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
    wait_for("PVC db Lost", || {
        get("pvc", "db", Some(&ns), "{.status.phase}") == "Lost"
    });
    let out = check(&dir, "pvcs-bound", &params);
    let message = out
        .expect(0, "warning")
        .only(&format!("PersistentVolumeClaim {ns}/db"));
    assert!(
        message.contains(&format!(
            "is Lost (storage class none, its volume {pv} is gone)"
        )),
        "{message}"
    );

    kubectl(&["delete", "pvc", "db", "-n", &ns, "--wait=true"], None);
    check(&dir, "pvcs-bound", &params).passed();
});

/// The ids of the shipped checks of `workflows/catalog/patrol-*.yaml`, as
/// `kpilot catalog` lists them.
fn patrol_checks(dir: &Dir) -> Vec<String> {
    let ran = dir.kp(&["catalog", "-o", "json"]).expect(0);
    let json: Value = serde_json::from_str(&ran.stdout).expect("catalog JSON");
    let mut ids: Vec<String> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| {
            c["file"]
                .as_str()
                .is_some_and(|f| f.starts_with("workflows/catalog/patrol"))
        })
        .filter_map(|c| c["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

kptest!(
    patrol_checks_read_the_whole_cluster_with_their_defaults,
    |dir| {
        // Whatever the other tests have made meanwhile, no check fails to evaluate
        // on real objects (an expression that assumed a field, a bad query): each
        // one passes, warns or fails, and says so about the objects it names.
        let expected = patrol_checks(&dir);
        assert!(expected.len() >= 20, "{expected:?}");
        let report = json!({
            "apiVersion": "kpilot/v1",
            "kind": "Report",
            "metadata": {"name": "all"},
            "spec": {"clusterType": "self-hosted", "select": {"ids": expected}},
        });
        dir.write("all.yaml", &report.to_string());
        let kubeconfig = kubeconfig().display().to_string();
        let ran = kp(
            &dir,
            &[
                "inspect",
                "--scenario",
                "patrol",
                "--report",
                "all.yaml",
                "-o",
                "json",
                "--kubeconfig",
                &kubeconfig,
            ],
        );
        assert!(ran.code == 0 || ran.code == 1, "{ran:#?}");
        let json: Value = serde_json::from_str(&ran.stdout).expect("JSON report");
        let checks = json["checks"].as_array().expect("checks");
        let mut ids: Vec<&str> = checks.iter().filter_map(|c| c["id"].as_str()).collect();
        ids.sort_unstable();
        assert_eq!(ids, expected, "{}", ran.stdout);
        for c in checks {
            assert_ne!(c["outcome"], "error", "{c:#}");
            for item in c["items"].as_array().expect("items") {
                assert!(
                    item["object"]["kind"].is_string() && item["object"]["name"].is_string(),
                    "an item names no object: {c:#}"
                );
                assert!(
                    !item["message"].as_str().unwrap_or("").contains("<error"),
                    "a message hole failed: {c:#}"
                );
            }
        }
    }
);

kptest!(statefulsets_ready_names_the_one_short_of_replicas, |dir| {
    let mut created = Created::default();
    let ns = namespace(&mut created, "sts");
    let sts = |name: &str, replicas: u32| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    // Held by a gate: the pod exists, and no node ever runs it.
                    "spec": {"schedulingGates": [{"name": "kpilot.dev/hold"}], "containers": [container("db")]},
                },
            },
        })
    };
    create_all(vec![sts("db", 1), sts("idle", 0)]);
    wait_for("pod db-0 created", || {
        kubectl(&["get", "pods", "-n", &ns, "-o", "name"], None).contains("pod/db-0")
    });
    let params = [("namespace", ns.as_str())];

    let out = check(&dir, "statefulsets-ready", &params);
    let message = out
        .expect(1, "failed")
        .only(&format!("StatefulSet {ns}/db"));
    assert!(message.contains("has 0 of 1 replicas ready"), "{message}");

    // Its pod starts and becomes ready (written here as a kubelet writes it).
    let now = "2026-01-01T00:00:00Z";
    let ready = json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}],
        "containerStatuses": [status("db", 0, json!({"running": {"startedAt": now}}))],
    }})
    .to_string();
    kubectl(
        &[
            "patch",
            "pod",
            "db-0",
            "-n",
            &ns,
            "--subresource=status",
            "-p",
            &ready,
        ],
        None,
    );
    wait_for("StatefulSet db ready", || {
        get("statefulset", "db", Some(&ns), "{.status.readyReplicas}") == "1"
    });
    check(&dir, "statefulsets-ready", &params).passed();
});
