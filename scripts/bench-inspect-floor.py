#!/usr/bin/env python3
"""The floor of scripts/bench-inspect: for the workflows `kpilot inspect --dry-run -o yaml`
built, one kubectl command (its arguments, one line each) per distinct cluster list
their checks make, so that kubectl fetches the same data kpilot does.

    bench-inspect-floor.py WORKFLOW.yaml...

node.* queries (answered by agents) and command queries (a user's program) are not
cluster lists and are left out. With no workflow (a kpilot without `inspect`), the
lists the catalog is planned to make.
"""
import re
import sys

import yaml

CHUNK = "-o json --chunk-size=500"
DEFAULT = [
    "version -o json",
    "api-versions",
    f"get nodes {CHUNK}",
    f"get daemonsets.v1.apps,deployments.v1.apps -n kube-system {CHUNK}",
    f"get deployments.v1.apps,services,pods,configmaps,secrets,poddisruptionbudgets.v1.policy -A {CHUNK}",
    f"get validatingwebhookconfigurations,mutatingwebhookconfigurations {CHUNK}",
]


def render(text, params):
    return re.sub(r"\{\{\s*params\.([A-Za-z0-9_]+)\s*\}\}", lambda m: str(params.get(m.group(1), "")), str(text))


def selectors(q, params):
    out = ""
    for key, flag in (("labelSelector", "-l"), ("fieldSelector", "--field-selector")):
        value = render(q.get(key) or "", params)
        if value:
            out += f" {flag} '{value}'" if " " in value else f" {flag} {value}"
    return out


def command(query, params):
    if isinstance(query, str):
        path = query.strip()
        q = {}
    elif isinstance(query, dict) and "cluster" in query:
        path, q = "cluster." + str(query["cluster"]), query
    elif isinstance(query, dict) and "resource" in query:
        r = query["resource"]
        group = "" if r.get("group") in (None, "", "core") else r["group"]
        kind = r["kind"].lower()
        # kubectl reads `kind.version.group`; a core kind goes by its name alone.
        name = f"{kind}.{r['version']}.{group}" if group else kind
        ns = render(r.get("namespace") or "", params)
        scope = f"-n {ns}" if ns else "-A"
        return f"get {name} {scope}{selectors(r, params)} {CHUNK}"
    else:
        return None  # a command query
    if path.startswith("node."):
        return None
    parts = path.split(".")
    base = ".".join(parts[:2])
    if base == "cluster.version":
        return "version -o json"
    if base == "cluster.apis":
        return "api-versions"
    if base == "cluster.nodes":
        return f"get nodes{selectors(q, params)} {CHUNK}"
    if base == "cluster.addons":
        ns = render(q.get("namespace") or "", params) or "kube-system"
        return f"get daemonsets.v1.apps,deployments.v1.apps -n {ns} {CHUNK}"
    if base == "cluster.services":
        ns = render(q.get("namespace") or "", params)
        scope = f"-n {ns}" if ns else "-A"
        # The Services, and the EndpointSlices that say what each has behind it.
        return [f"get services {scope}{selectors(q, params)} {CHUNK}",
                f"get endpointslices.v1.discovery.k8s.io {scope} -l kubernetes.io/service-name {CHUNK}"]
    if base == "cluster.webhooks":
        return f"get validatingwebhookconfigurations,mutatingwebhookconfigurations {CHUNK}"
    if base == "cluster.servingCertificate":
        return None  # a TLS handshake, not a list
    print(f"bench-inspect-floor: no kubectl equivalent known for query {query!r}; not in the floor",
          file=sys.stderr)
    return None


lines = []
found_workflow = False
for path in sys.argv[1:]:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not isinstance(doc, dict) or doc.get("kind") != "Workflow":
                continue
            found_workflow = True
            spec = doc.get("spec") or {}
            defaults = {p["name"]: p.get("default", "") for p in spec.get("params") or [] if isinstance(p, dict)}
            for step in spec.get("steps") or []:
                check = step.get("check") if isinstance(step, dict) else None
                if not isinstance(check, dict) or "query" not in check:
                    continue
                params = {**defaults, **(check.get("params") or {})}
                found = command(check["query"], params)
                for line in found if isinstance(found, list) else [found]:
                    if line and line not in lines:
                        lines.append(line)
print("\n".join(lines if found_workflow else DEFAULT))
