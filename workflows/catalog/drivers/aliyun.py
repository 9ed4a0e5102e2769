#!/usr/bin/env python3
"""A sample data driver for kpilot's cloud checks: runs Alibaba Cloud's `aliyun` CLI and
prints one JSON document, the data of a `query: {command: [...]}` check.

  aliyun.py slb --load-balancer-id=lb-... [--region=cn-hangzhou] [--port=6443] [--cli=aliyun]
      The API server's load balancer: DescribeLoadBalancerAttribute, and DescribeHealthStatus
      of the listener on --port. Prints
      {"id", "region", "present", "name", "status", "address", "listening", "protocol",
       "backends": [{"serverId", "ip", "port", "health"}]}
      A load balancer that does not exist is `"present": false` (a finding, not an error).

  aliyun.py sg --master-group=sg-... --node-group=sg-... [--master-ports=6443]
               [--node-ports=10250] [--master-cidr=...] [--node-cidr=...] [--region=...] [--cli=aliyun]
      The paths masters and nodes need between their security groups: nodes -> masters on
      each --master-ports port (TCP), masters -> nodes on each --node-ports port. Prints a
      list of {"name", "from", "to", "protocol", "port", "allowed", "rule", "reason"}.
      A rule applies when its source is the other group, a CIDR holding that group's
      --*-cidr, or 0.0.0.0/0; of the rules that apply, the lowest Priority wins and Drop wins
      a tie (the cloud's own order); with none, traffic within one group follows its
      InnerAccessPolicy and anything else is refused.

  aliyun.py vsw --vswitch-ids=vsw-...,vsw-... [--region=...] [--cli=aliyun]
      The node vSwitches: DescribeVSwitchAttributes of each. Prints a list of
      {"name", "id", "zone", "cidr", "status", "availableIps"}.

The CLI is --cli, else $ALIYUN_CLI, else `aliyun` (its credentials and default region are its
own: `aliyun configure`). Exit 0 with the data; 2 for bad arguments or a CLI that failed, with
the reason on standard error.
"""

import argparse
import ipaddress
import json
import os
import subprocess
import sys


class Failed(Exception):
    pass


def call(cli, product, api, region, **params):
    argv = [cli, product, api]
    if region:
        argv += ["--RegionId", region]
    for key, value in params.items():
        argv += ["--" + key, str(value)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise Failed(f"the cloud CLI `{cli}` is not installed (set the check's param cli)")
    except subprocess.TimeoutExpired:
        raise Failed(f"`{' '.join(argv)}` gave no answer in 60s")
    if done.returncode != 0:
        return None, (done.stderr.strip() or done.stdout.strip())
    try:
        return json.loads(done.stdout), None
    except ValueError as e:
        raise Failed(f"`{' '.join(argv)}` did not print JSON: {e}")


def listed(value, key):
    """The aliyun RPC APIs wrap lists: {"BackendServer": [...]}."""
    if isinstance(value, dict):
        value = value.get(key, [])
    return value if isinstance(value, list) else []


def slb(args):
    if not args.load_balancer_id:
        raise Failed("no load balancer id: set the check's param loadBalancerId")
    lb_id, region = args.load_balancer_id, args.region
    attr, err = call(args.cli, "slb", "DescribeLoadBalancerAttribute", region, LoadBalancerId=lb_id)
    out = {"id": lb_id, "region": region, "present": True, "name": "", "status": "",
           "address": "", "listening": False, "protocol": "", "backends": []}
    if attr is None:
        if "InvalidLoadBalancerId.NotFound" in err:
            out["present"] = False
            return out
        raise Failed(f"DescribeLoadBalancerAttribute {lb_id}: {err}")
    out["name"] = attr.get("LoadBalancerName", "")
    out["status"] = str(attr.get("LoadBalancerStatus", "")).lower()
    out["address"] = attr.get("Address", "")
    out["region"] = attr.get("RegionId", region)
    for listener in listed(attr.get("ListenerPortsAndProtocol"), "ListenerPortAndProtocol"):
        if int(listener.get("ListenerPort", -1)) == args.port:
            out["listening"] = True
            out["protocol"] = listener.get("ListenerProtocol", "")
    if not out["listening"]:
        return out
    health, err = call(args.cli, "slb", "DescribeHealthStatus", region,
                       LoadBalancerId=lb_id, ListenerPort=args.port)
    if health is None:
        raise Failed(f"DescribeHealthStatus {lb_id} port {args.port}: {err}")
    for server in listed(health.get("BackendServers"), "BackendServer"):
        out["backends"].append({
            "serverId": server.get("ServerId", ""),
            "ip": server.get("ServerIp", ""),
            "port": server.get("Port"),
            "health": server.get("ServerHealthStatus", ""),
        })
    return out


def ports(text):
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise Failed(f"ports {text!r}: write them as 6443,443")


def covers(rule, protocol, port):
    proto = str(rule.get("IpProtocol", "")).lower()
    if proto not in ("all", protocol):
        return False
    low, _, high = str(rule.get("PortRange", "")).partition("/")
    try:
        low, high = int(low), int(high or low)
    except ValueError:
        return False
    return (low, high) == (-1, -1) or low <= port <= high


def comes_from(rule, group, cidr):
    if rule.get("SourceGroupId"):
        return rule["SourceGroupId"] == group
    source = rule.get("SourceCidrIp", "")
    if not source:
        return False
    try:
        net = ipaddress.ip_network(source, strict=False)
        if net.prefixlen == 0:
            return True
        return bool(cidr) and ipaddress.ip_network(cidr, strict=False).subnet_of(net)
    except ValueError:
        return False


def describe(rule):
    source = rule.get("SourceGroupId") or rule.get("SourceCidrIp") or "?"
    rid = rule.get("SecurityGroupRuleId", "")
    return (f"{rid + ' ' if rid else ''}{rule.get('Policy', 'Accept')} {rule.get('IpProtocol')} "
            f"{rule.get('PortRange')} from {source}, priority {rule.get('Priority', 1)}")


def verdict(group, source, cidr, protocol, port):
    rules = [r for r in listed(group.get("Permissions"), "Permission")
             if str(r.get("Direction", "ingress")).lower() == "ingress"
             and covers(r, protocol, port) and comes_from(r, source, cidr)]

    def order(r):
        drop = str(r.get("Policy", "Accept")).lower() == "drop"
        return (int(r.get("Priority", 1)), 0 if drop else 1)

    if rules:
        rule = min(rules, key=order)
        if str(rule.get("Policy", "Accept")).lower() == "drop":
            return False, describe(rule), f"refused by rule {describe(rule)}"
        return True, describe(rule), ""
    if source == group.get("SecurityGroupId"):
        inner = str(group.get("InnerAccessPolicy", "Accept"))
        return inner.lower() == "accept", None, f"no rule; within the group InnerAccessPolicy is {inner}"
    return False, None, f"no ingress rule of {group.get('SecurityGroupId')} accepts {source} on {protocol}/{port}"


def sg(args):
    if not args.master_group or not args.node_group:
        raise Failed("set the check's params masterSecurityGroup and nodeSecurityGroup")
    groups = {}
    for gid in {args.master_group, args.node_group}:
        data, err = call(args.cli, "ecs", "DescribeSecurityGroupAttribute", args.region,
                         SecurityGroupId=gid, Direction="ingress")
        if data is None:
            raise Failed(f"DescribeSecurityGroupAttribute {gid}: {err}")
        groups[gid] = data
    paths = []
    for to, source, cidr, wanted in [
        (args.master_group, args.node_group, args.node_cidr, ports(args.master_ports)),
        (args.node_group, args.master_group, args.master_cidr, ports(args.node_ports)),
    ]:
        for port in wanted:
            allowed, rule, reason = verdict(groups[to], source, cidr, "tcp", port)
            paths.append({"name": f"{source} -> {to} tcp/{port}", "from": source, "to": to,
                          "protocol": "tcp", "port": port, "allowed": allowed, "rule": rule,
                          "reason": reason})
    return paths


def vsw(args):
    ids = [v.strip() for v in args.vswitch_ids.split(",") if v.strip()]
    if not ids:
        raise Failed("no vSwitch id: set the check's param vswitchIds")
    out = []
    for vid in ids:
        data, err = call(args.cli, "vpc", "DescribeVSwitchAttributes", args.region, VSwitchId=vid)
        if data is None:
            raise Failed(f"DescribeVSwitchAttributes {vid}: {err}")
        out.append({
            "name": vid,
            "id": vid,
            "zone": data.get("ZoneId", ""),
            "cidr": data.get("CidrBlock", ""),
            "status": data.get("Status", ""),
            "availableIps": int(data.get("AvailableIpAddressCount", 0)),
        })
    return out


def main():
    parser = argparse.ArgumentParser(description="cloud data for kpilot checks")
    parser.add_argument("what", choices=["slb", "sg", "vsw"])
    parser.add_argument("--cli", default="")
    parser.add_argument("--region", default="")
    parser.add_argument("--load-balancer-id", default="")
    parser.add_argument("--port", type=int, default=6443)
    parser.add_argument("--master-group", default="")
    parser.add_argument("--node-group", default="")
    parser.add_argument("--master-ports", default="6443")
    parser.add_argument("--node-ports", default="10250")
    parser.add_argument("--master-cidr", default="")
    parser.add_argument("--node-cidr", default="")
    parser.add_argument("--vswitch-ids", default="")
    args = parser.parse_args()
    args.cli = args.cli or os.environ.get("ALIYUN_CLI", "") or "aliyun"
    try:
        data = {"slb": slb, "sg": sg, "vsw": vsw}[args.what](args)
    except Failed as e:
        print(f"aliyun.py {args.what}: {e}", file=sys.stderr)
        return 2
    json.dump(data, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
