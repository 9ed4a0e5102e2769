//! The catalog's cloud checks (`workflows/catalog/cloud.yaml`), through
//! `kpilot inspect --no-cluster`, the `command` driver and the shipped
//! sample driver `workflows/catalog/drivers/aliyun.py`,
//! with a stand-in `aliyun` CLI that prints the responses of
//! `tests/fixtures/cloud/` (the cloud APIs' own shape): no cluster, no cloud.

use crate::util::prereq::{needs, Need};
use crate::util::Dir;

const PYTHON: Need = Need::Program("python3", "python3");

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

const LB: &str = "lb-bp1kpilotapi00001";
const MASTERS: &str = "sg-bp1master00000000001";
const NODES: &str = "sg-bp1node0000000000001";

/// `aliyun PRODUCT API --Key value ...`: prints `cloud/PRODUCT-API-ID.json`
/// (ID the value of `--LoadBalancerId`, `--SecurityGroupId` or `--VSwitchId`), or prints
/// `cloud/PRODUCT-API-ID.stderr` on standard error and exits 1, as the CLI
/// does for an API error; every call is logged to `cloud/calls`.
const FAKE_CLI: &str = r#"#!/bin/sh
here=$(dirname "$0")
echo "$*" >> "$here/calls"
product=$1 api=$2
shift 2
id=
while [ $# -gt 0 ]; do
  case $1 in --LoadBalancerId|--SecurityGroupId|--VSwitchId) id=$2 ;; esac
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

/// What one inspection of a catalog check found: kpilot's exit code, and the
/// check's outcome, message and failing items' messages in the report.
#[derive(Debug)]
struct Verdict {
    code: i32,
    outcome: String,
    message: String,
    items: Vec<String>,
    stderr: String,
}

/// `kpilot inspect --scenario upgrade --to 1.35 --cluster-type managed
/// --no-cluster` of catalog check `id` alone (a `kind: Report` selecting it),
/// with `params` over its defaults.
fn run_check(dir: &Dir, id: &str, params: &[(&str, &str)]) -> Verdict {
    let n = dir.read("runs").len();
    dir.write("runs", &format!("{}.", dir.read("runs")));
    let params: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}: {}", serde_json::Value::from(*v)))
        .collect();
    let report = format!("r{n}.yaml");
    dir.write(
        &report,
        &format!(
            "apiVersion: kpilot/v1\nkind: Report\nmetadata: {{name: t}}\nspec:\n  select: {{ids: [{id}]}}\n  overrides:\n    - {{check: {id}, params: {{{}}}}}\n",
            params.join(", ")
        ),
    );
    let ran = dir.kp(&[
        "inspect",
        "--scenario",
        "upgrade",
        "--to",
        "1.35",
        "--cluster-type",
        "managed",
        "--no-cluster",
        "--report",
        &report,
        "-o",
        "json",
    ]);
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap_or_else(|e| {
        panic!(
            "the report is not JSON ({e}):\n{}\n{}",
            ran.stdout, ran.stderr
        )
    });
    let checks = json["checks"].as_array().cloned().unwrap_or_default();
    assert_eq!(checks.len(), 1, "one check in the report: {json:#}");
    let check = &checks[0];
    assert_eq!(check["id"], id, "{json:#}");
    let items = check["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["outcome"] != "passed")
        .filter_map(|i| i["message"].as_str().map(str::to_owned))
        .collect();
    Verdict {
        code: ran.code,
        outcome: check["outcome"].as_str().unwrap_or("").to_owned(),
        message: check["message"].as_str().unwrap_or("").to_owned(),
        items,
        stderr: ran.stderr,
    }
}

impl Verdict {
    /// Asserts the check failed, and that its message or one of its items
    /// says each of `want`.
    #[track_caller]
    fn fails_with(&self, want: &[&str]) {
        assert_eq!(
            (self.code, self.outcome.as_str()),
            (1, "failed"),
            "kpilot said:\n{}\n{self:#?}",
            self.stderr
        );
        for w in want {
            assert!(
                self.items.iter().any(|i| i.contains(w)) || self.message.contains(w),
                "nothing says {w:?}: {self:#?}"
            );
        }
    }

    /// Asserts the check could not read its data (exit 3), saying `why`.
    #[track_caller]
    fn could_not_check(&self, why: &str) {
        assert_eq!(
            (self.code, self.outcome.as_str()),
            (3, "error"),
            "kpilot said:\n{}\n{self:#?}",
            self.stderr
        );
        assert!(self.message.contains(why), "{self:#?}");
    }

    #[track_caller]
    fn passes(&self) {
        assert_eq!(
            (self.code, self.outcome.as_str()),
            (0, "passed"),
            "kpilot said:\n{}\n{self:#?}",
            self.stderr
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
        run_check(&dir, id, &[("cli", &cli)])
            .could_not_check("no load balancer id: set the check's param loadBalancerId");
        let mut no_cli = lb_params("/nonexistent/aliyun");
        no_cli.retain(|(k, _)| *k != "cli");
        no_cli.push(("cli", "/nonexistent/aliyun"));
        run_check(&dir, id, &no_cli)
            .could_not_check("the cloud CLI `/nonexistent/aliyun` is not installed");
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
        run_check(&dir, id, &unknown)
            .could_not_check("DescribeSecurityGroupAttribute sg-bp1gone: ERROR: SDK.ServerError");
    }
);

kptest!(catalog_vswitch_without_free_ips_fails_naming_it, |dir| {
    if !needs("catalog_vswitch_free_ips", &[PYTHON]) {
        return;
    }
    let cli = fake_cli(&dir);
    let id = "cloud-vswitch-free-ips";
    let vsw = "vsw-bp1kpilotvsw0001";
    serve(
        &dir,
        "vpc",
        "DescribeVSwitchAttributes",
        vsw,
        "vpc-DescribeVSwitchAttributes-exhausted.json",
    );
    let params = [
        ("cli", cli.as_str()),
        ("vswitchIds", vsw),
        ("region", "cn-hangzhou"),
    ];
    run_check(&dir, id, &params).fails_with(&[
        "vSwitch vsw-bp1kpilotvsw0001 (192.168.0.0/24, cn-hangzhou-h) has 1 free IP addresses, fewer than 2: a new node (or pod) there gets no address",
    ]);
    serve(
        &dir,
        "vpc",
        "DescribeVSwitchAttributes",
        vsw,
        "vpc-DescribeVSwitchAttributes-healthy.json",
    );
    run_check(&dir, id, &params).passes();
    // The margin is a param: 187 free is too few for a surge of 200 pods.
    let mut more = params.to_vec();
    more.push(("minFreeIps", "200"));
    run_check(&dir, id, &more).fails_with(&["has 187 free IP addresses, fewer than 200"]);
    run_check(&dir, id, &[("cli", cli.as_str())])
        .could_not_check("no vSwitch id: set the check's param vswitchIds");
});
