//! The catalog's cloud checks (`workflows/catalog/cloud.yaml`) through the
//! `command` driver and the sample driver `workflows/catalog/drivers/aliyun.py`,
//! with a stand-in `aliyun` CLI that prints the responses of
//! `tests/fixtures/cloud/` (the cloud APIs' own shape): no cluster, no cloud.

use crate::util::prereq::{needs, Need};
use crate::util::{step_field, Dir};

const PYTHON: Need = Need::Program("python3", "python3");

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const LB: &str = "lb-bp1kpilotapi00001";
const MASTERS: &str = "sg-bp1master00000000001";
const NODES: &str = "sg-bp1node0000000000001";

/// `aliyun PRODUCT API --Key value ...`: prints `cloud/PRODUCT-API-ID.json`
/// (ID the value of `--LoadBalancerId` or `--SecurityGroupId`), or prints
/// `cloud/PRODUCT-API-ID.stderr` on standard error and exits 1, as the CLI
/// does for an API error; every call is logged to `cloud/calls`.
const FAKE_CLI: &str = r#"#!/bin/sh
here=$(dirname "$0")
echo "$*" >> "$here/calls"
product=$1 api=$2
shift 2
id=
while [ $# -gt 0 ]; do
  case $1 in --LoadBalancerId|--SecurityGroupId) id=$2 ;; esac
  shift
done
f="$here/$product-$api-$id"
if [ -e "$f.json" ]; then cat "$f.json"; exit 0; fi
if [ -e "$f.stderr" ]; then cat "$f.stderr" >&2; exit 1; fi
echo "ERROR: SDK.ServerError: no fixture $f" >&2
exit 1
"#;

/// Serves fixture `fixture` (a file of tests/fixtures/cloud/) as the answer
/// of `product api` for `id`.
fn serve(dir: &Dir, product: &str, api: &str, id: &str, fixture: &str) {
    let ext = if fixture.ends_with(".stderr") {
        "stderr"
    } else {
        "json"
    };
    for old in ["json", "stderr"] {
        let _ = std::fs::remove_file(dir.join(&format!("cloud/{product}-{api}-{id}.{old}")));
    }
    let text = std::fs::read_to_string(format!("{ROOT}/tests/fixtures/cloud/{fixture}"))
        .unwrap_or_else(|e| panic!("fixture {fixture}: {e}"));
    dir.write(&format!("cloud/{product}-{api}-{id}.{ext}"), &text);
}

fn fake_cli(dir: &Dir) -> String {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.write("cloud/aliyun", FAKE_CLI);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_string_lossy().into_owned()
}

/// What one run of a catalog check found.
#[derive(Debug)]
struct Verdict {
    code: i32,
    state: String,
    reason: String,
    items: Vec<String>,
    stderr: String,
}

/// The `---` document of `workflows/catalog/cloud.yaml` that defines `id`.
fn document(id: &str) -> String {
    let path = format!("{ROOT}/workflows/catalog/cloud.yaml");
    let text = std::fs::read_to_string(&path).expect("the cloud catalog");
    text.split("\n---\n")
        .find(|d| d.lines().any(|l| l.trim() == format!("name: {id}")))
        .unwrap_or_else(|| panic!("no check {id} in {path}"))
        .to_owned()
}

/// The lines of a top-level block of a check document, without its first line.
fn block(doc: &str, key: &str) -> String {
    let mut lines = doc.lines().skip_while(|l| *l != format!("{key}:"));
    lines.next();
    lines
        .take_while(|l| l.starts_with(' ') || l.is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

/// Runs catalog check `id` with its own params (those given over the
/// defaults, and `driver` pointing at the repository's sample driver), as
/// the step of a workflow holding the check's body and params word for word.
fn run_check(dir: &Dir, id: &str, params: &[(&str, &str)]) -> Verdict {
    let doc = document(id);
    let body: String = block(&doc, "check")
        .lines()
        .map(|l| format!("      {l}\n"))
        .collect();
    let declared = block(&doc, "params");
    let n = dir.read("runs").len();
    dir.write("runs", &format!("{}.", dir.read("runs")));
    let run = format!("r{n}");
    dir.write(
        &format!("{run}.yaml"),
        &format!(
            "apiVersion: kpilot/v1\nkind: Workflow\nmetadata: {{name: {id}}}\nspec:\n  params:\n{declared}  steps:\n    - id: {id}\n      phase: pre-check\n      check:\n{body}"
        ),
    );
    let driver = format!("driver={ROOT}/workflows/catalog/drivers/aliyun.py");
    let mut args = vec![
        "run".to_owned(),
        format!("{run}.yaml"),
        "--run-id".to_owned(),
        run.clone(),
        "--param".to_owned(),
        driver,
    ];
    for (k, v) in params {
        args.push("--param".to_owned());
        args.push(format!("{k}={v}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let ran = dir.kp(&args);
    let status = dir.status(&run);
    let step = status["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .cloned()
        .unwrap_or_default();
    let items = step["output"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["message"].as_str().map(str::to_owned))
        .collect();
    Verdict {
        code: ran.code,
        state: step_field(&status, id, "state"),
        reason: step_field(&status, id, "reason"),
        items,
        stderr: ran.stderr,
    }
}

impl Verdict {
    #[track_caller]
    fn fails_with(&self, want: &[&str]) {
        assert_eq!(
            (self.code, self.state.as_str()),
            (1, "failed"),
            "kpilot said:\n{}\n{self:#?}",
            self.stderr
        );
        for w in want {
            assert!(
                self.items.iter().any(|i| i.contains(w)) || self.reason.contains(w),
                "no item says {w:?}: {self:#?}"
            );
        }
    }

    #[track_caller]
    fn passes(&self) {
        assert_eq!(
            (self.code, self.state.as_str()),
            (0, "succeeded"),
            "{self:#?}"
        );
    }
}

fn lb_params(cli: &str) -> Vec<(&str, &str)> {
    vec![
        ("cli", cli),
        ("loadBalancerId", LB),
        ("region", "cn-hangzhou"),
    ]
}

kptest!(
    catalog_apiserver_lb_fails_when_missing_inactive_unhealthy_or_not_listening,
    |dir| {
        if !needs("catalog_apiserver_lb", &[PYTHON]) {
            return;
        }
        let cli = fake_cli(&dir);
        let id = "apiserver-lb-healthy";
        let attr = |f: &str| serve(&dir, "slb", "DescribeLoadBalancerAttribute", LB, f);
        let health = |f: &str| serve(&dir, "slb", "DescribeHealthStatus", LB, f);
        attr("slb-DescribeLoadBalancerAttribute-healthy.json");
        health("slb-DescribeHealthStatus-broken.json");
        run_check(&dir, id, &lb_params(&cli)).fails_with(&[
        "load balancer lb-bp1kpilotapi00001 (k8s-apiserver-c8f2e1) has unhealthy backends on port 6443: i-bp1master0000000002 (192.168.0.12) abnormal",
    ]);
        // The driver asked the cloud for that load balancer, in that region, and
        // for the health of the API server's listener.
        let calls = dir.read("cloud/calls");
        assert!(
        calls.contains(&format!(
            "slb DescribeLoadBalancerAttribute --RegionId cn-hangzhou --LoadBalancerId {LB}"
        )) && calls.contains(&format!(
            "slb DescribeHealthStatus --RegionId cn-hangzhou --LoadBalancerId {LB} --ListenerPort 6443"
        )),
        "{calls}"
    );
        health("slb-DescribeHealthStatus-healthy.json");
        run_check(&dir, id, &lb_params(&cli)).passes();
        // The listener the check looks for is a param.
        let mut other_port = lb_params(&cli);
        other_port.push(("port", "443"));
        run_check(&dir, id, &other_port).fails_with(&[
            "has no listener on port 443: the API server is not reachable through it",
        ]);
        attr("slb-DescribeLoadBalancerAttribute-inactive.json");
        run_check(&dir, id, &lb_params(&cli)).fails_with(&[
            "load balancer lb-bp1kpilotapi00001 (k8s-apiserver-c8f2e1) is inactive, not active",
        ]);
        // Deleted: the CLI's NotFound error is a finding, not a read error.
        attr("slb-DescribeLoadBalancerAttribute-not-found.stderr");
        run_check(&dir, id, &lb_params(&cli)).fails_with(&[
        "load balancer lb-bp1kpilotapi00001 does not exist in cn-hangzhou: the API server has no load balancer in front of it",
    ]);
    }
);

kptest!(
    catalog_apiserver_lb_without_an_id_or_a_cli_could_not_check,
    |dir| {
        if !needs("catalog_apiserver_lb_errors", &[PYTHON]) {
            return;
        }
        let cli = fake_cli(&dir);
        let id = "apiserver-lb-healthy";
        let no_id = run_check(&dir, id, &[("cli", &cli)]);
        assert_eq!(no_id.state, "failed", "{no_id:#?}");
        assert!(
            no_id
                .reason
                .contains("no load balancer id: set the check's param loadBalancerId"),
            "{no_id:#?}"
        );
        let mut no_cli = lb_params("/nonexistent/aliyun");
        no_cli.retain(|(k, _)| *k != "cli");
        no_cli.push(("cli", "/nonexistent/aliyun"));
        let v = run_check(&dir, id, &no_cli);
        assert!(
            v.reason
                .contains("the cloud CLI `/nonexistent/aliyun` is not installed"),
            "{v:#?}"
        );
    }
);

kptest!(
    catalog_security_groups_fail_naming_the_missing_and_the_refusing_rule,
    |dir| {
        if !needs("catalog_security_groups", &[PYTHON]) {
            return;
        }
        let cli = fake_cli(&dir);
        let id = "cloud-security-groups-master-node";
        let group =
            |gid: &str, f: &str| serve(&dir, "ecs", "DescribeSecurityGroupAttribute", gid, f);
        group(
            MASTERS,
            "ecs-DescribeSecurityGroupAttribute-masters-broken.json",
        );
        group(
            NODES,
            "ecs-DescribeSecurityGroupAttribute-nodes-broken.json",
        );
        let params = [
            ("cli", cli.as_str()),
            ("masterSecurityGroup", MASTERS),
            ("nodeSecurityGroup", NODES),
            ("region", "cn-hangzhou"),
        ];
        let broken = run_check(&dir, id, &params);
        broken.fails_with(&[
        "security group sg-bp1master00000000001 does not let sg-bp1node0000000000001 in on tcp/6443: no ingress rule of sg-bp1master00000000001 accepts sg-bp1node0000000000001 on tcp/6443",
        "security group sg-bp1node0000000000001 does not let sg-bp1master00000000001 in on tcp/10250: refused by rule sgr-bp1n00000000000004 Drop TCP 10250/10255 from sg-bp1master00000000001, priority 1",
    ]);
        assert_eq!(broken.items.len(), 2, "{broken:#?}");
        group(
            MASTERS,
            "ecs-DescribeSecurityGroupAttribute-masters-healthy.json",
        );
        run_check(&dir, id, &params).fails_with(&[
            "sg-bp1node0000000000001 does not let sg-bp1master00000000001 in on tcp/10250",
        ]);
        group(
            NODES,
            "ecs-DescribeSecurityGroupAttribute-nodes-healthy.json",
        );
        run_check(&dir, id, &params).passes();
        // The masters' group has no rule for 10255 from the nodes.
        let mut more = params.to_vec();
        more.push(("masterPorts", "6443,10255"));
        run_check(&dir, id, &more).fails_with(&[
        "security group sg-bp1master00000000001 does not let sg-bp1node0000000000001 in on tcp/10255",
    ]);
        // A rule by CIDR counts for the nodes when their CIDR lies in it.
        group(
            MASTERS,
            "ecs-DescribeSecurityGroupAttribute-masters-by-cidr.json",
        );
        run_check(&dir, id, &params).fails_with(&[
        "no ingress rule of sg-bp1master00000000001 accepts sg-bp1node0000000000001 on tcp/6443",
    ]);
        let mut by_cidr = params.to_vec();
        by_cidr.push(("nodeCidr", "192.168.8.0/22"));
        run_check(&dir, id, &by_cidr).passes();
        by_cidr.pop();
        by_cidr.push(("nodeCidr", "10.8.0.0/22"));
        run_check(&dir, id, &by_cidr).fails_with(&["tcp/6443"]);
        // A group that does not exist: the CLI's error, not a pass.
        let mut unknown = params.to_vec();
        unknown.retain(|(k, _)| *k != "nodeSecurityGroup");
        unknown.push(("nodeSecurityGroup", "sg-bp1gone"));
        let gone = run_check(&dir, id, &unknown);
        assert_eq!(gone.state, "failed", "{gone:#?}");
        assert!(
            gone.reason
                .contains("DescribeSecurityGroupAttribute sg-bp1gone: ERROR: SDK.ServerError"),
            "{gone:#?}"
        );
    }
);
