#!/usr/bin/env python3
"""Writes the objects scripts/bench-inspect seeds, as JSON `kind: List` files of at
most CHUNK objects each, in the order they must be created (namespaces first).

    bench-inspect-seed.py OUT_DIR NODES OBJECTS NAMESPACES

Nodes are not managed by KWOK: their status (Ready, addresses, capacity, nodeInfo)
is written once at creation, so 5,000 of them cost the API server nothing after
that. The other objects cost no controller work either: Deployments are paused (no
ReplicaSets, no Pods), Services have no selector (no Endpoints), Pods are bound to a
node by `nodeName` (the scheduler leaves them alone) that has no kubelet.
"""
import json
import os
import sys

CHUNK = 500
LABEL = {"kpilot-bench": "1"}

out, n_nodes, n_objects, n_ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
os.makedirs(out, exist_ok=True)
files = []


def write(stage, kind, objects):
    for start in range(0, len(objects), CHUNK):
        path = os.path.join(out, f"{stage}-{kind}-{start // CHUNK:04}.json")
        with open(path, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "List", "items": objects[start:start + CHUNK]}, f)
        files.append(path)


def node(i):
    name = f"bench-node-{i:05}"
    zone = f"zone-{i % 3}"
    ts = "2026-12-01T00:00:00Z"
    conditions = [
        {"type": t, "status": "False", "reason": f"Kubelet{r}", "message": m,
         "lastHeartbeatTime": ts, "lastTransitionTime": ts}
        for t, r, m in [
            ("MemoryPressure", "HasSufficientMemory", "kubelet has sufficient memory available"),
            ("DiskPressure", "HasNoDiskPressure", "kubelet has no disk pressure"),
            ("PIDPressure", "HasSufficientPID", "kubelet has sufficient PID available"),
        ]
    ]
    conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                       "message": "kubelet is posting ready status",
                       "lastHeartbeatTime": ts, "lastTransitionTime": ts})
    resources = {"cpu": "16", "memory": "65842120Ki", "pods": "110", "ephemeral-storage": "203056560Ki"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {**LABEL, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                       "kubernetes.io/arch": "amd64", "node.kubernetes.io/instance-type": "ecs.g7.4xlarge",
                       "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": "bench-1",
                       "pool": f"pool-{i % 10}"},
        },
        "spec": {"podCIDR": f"10.{(i >> 8) % 256}.{i % 256}.0/24"},
        "status": {
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": f"172.16.{(i >> 8) % 256}.{i % 256}"},
                          {"type": "Hostname", "address": name}],
            "capacity": resources, "allocatable": resources,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": f"{i:032x}", "systemUUID": f"{i:08x}-0000-0000-0000-000000000000",
                "bootID": f"{i:08x}-1111-1111-1111-111111111111",
                "kernelVersion": "5.10.134-16.al8.x86_64", "osImage": "Alibaba Cloud Linux 3",
                "containerRuntimeVersion": "containerd://1.7.20", "kubeletVersion": "v1.34.4",
                "kubeProxyVersion": "v1.34.4", "operatingSystem": "linux", "architecture": "amd64",
            },
            "images": [{"names": [f"registry.example.com/app/image-{j}:v1.{j}.0"], "sizeBytes": 10000000 + j}
                       for j in range(8)],
        },
    }


namespaces = [f"bench-{i:03}" for i in range(n_ns)]
write("0", "namespaces", [{"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": ns, "labels": LABEL}} for ns in namespaces])
write("1", "nodes", [node(i) for i in range(n_nodes)])

# The other objects, by share of OBJECTS: ConfigMaps, Services, Deployments, Pods,
# Secrets, PodDisruptionBudgets.
shares = [("configmaps", 0.30), ("services", 0.20), ("deployments", 0.20), ("pods", 0.20),
          ("secrets", 0.05), ("pdbs", 0.05)]
counts = {k: int(n_objects * s) for k, s in shares}
counts["configmaps"] += n_objects - sum(counts.values())


def meta(kind, i):
    return {"name": f"{kind}-{i:05}", "namespace": namespaces[i % n_ns],
            "labels": {**LABEL, "app": f"app-{i % 500}", "tier": ["web", "api", "db"][i % 3]}}


def template(i):
    return {
        "metadata": {"labels": {"app": f"app-{i % 500}"}},
        "spec": {"containers": [{
            "name": "app", "image": f"registry.example.com/app/image-{i % 8}:v1.{i % 8}.0",
            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
            "env": [{"name": "MODE", "value": "production"}, {"name": "INDEX", "value": str(i)}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                          "limits": {"cpu": "500m", "memory": "256Mi"}},
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
        }], "automountServiceAccountToken": False},
    }


objects = {
    "configmaps": [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta("cm", i),
                    "data": {"app.properties": "\n".join(f"key{j}=value{j}-{i}" for j in range(20))}}
                   for i in range(counts["configmaps"])],
    "services": [{"apiVersion": "v1", "kind": "Service", "metadata": meta("svc", i),
                  "spec": {"type": "ClusterIP", "clusterIP": "None",
                           "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}
                 for i in range(counts["services"])],
    "deployments": [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("deploy", i),
                     "spec": {"paused": True, "replicas": 1 + i % 3,
                              "selector": {"matchLabels": {"app": f"app-{i % 500}"}},
                              "template": template(i)}}
                    for i in range(counts["deployments"])],
    "pods": [{"apiVersion": "v1", "kind": "Pod", "metadata": meta("pod", i),
              "spec": {**template(i)["spec"], "nodeName": f"bench-node-{i % max(n_nodes, 1):05}"}}
             for i in range(counts["pods"])],
    "secrets": [{"apiVersion": "v1", "kind": "Secret", "metadata": meta("secret", i), "type": "Opaque",
                 "stringData": {"password": f"not-a-secret-{i}"}}
                for i in range(counts["secrets"])],
    "pdbs": [{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": meta("pdb", i),
              "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": f"app-{i % 500}"}}}}
             for i in range(counts["pdbs"])],
}
for kind, items in objects.items():
    write("2", kind, items)
print(json.dumps({"nodes": n_nodes, "namespaces": n_ns, **counts}))
