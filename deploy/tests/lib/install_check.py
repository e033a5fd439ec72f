#!/usr/bin/env python3
"""Offline install check: evaluate the umbrella chart the way a cluster would see a first
`deploy-umbrella.sh install`, phase by phase, without a cluster.

Usage: install_check.py --helm HELM --chart CHART --env dev|prod|default [options]
  --phases a,b,c       install phases to simulate (default: INSTALL_PHASES of
                       scripts/lib/phases.sh); e.g. "applications" alone is a one-shot
                       `helm install` of everything
  --operator           the cluster already runs the Prometheus Operator (its CRDs exist)
  --set KEY=VALUE      extra helm --set for every render (repeatable; negative tests)
  --images FILE        the image list (default: deploy/images.yaml)
  --max-image-age DAYS how old a `checked` date may be (default 120)
  --only NAME,...      run only these checks: references, crds, flows, images, schemas
  --today YYYY-MM-DD   the date images are judged at (default: today)
  --no-monitoring-gate leave out deploy-umbrella.sh's ServiceMonitor switch

Per phase, the chart is rendered with the phase's --set flags (phases.sh), as an install
(first phase) or an upgrade, knowing the API versions of the CRDs that earlier phases
installed (plus the Prometheus Operator's with --operator). Then:

  references  every Secret, ConfigMap, ServiceAccount, PVC and Service a workload or hook
              refers to (volumes, env, envFrom, serviceAccountName, imagePullSecrets,
              StatefulSet serviceName, `*.svc` host names in ConfigMaps and Secrets) exists
              by then: rendered by this or an earlier phase, created by vault-bootstrap.sh
              in an earlier phase (BOOTSTRAP_CREATES), or created at runtime by a Job that
              runs before it. A pre-install/pre-upgrade hook sees only earlier phases and
              hooks of lower weight, never the phase's ordinary objects; a `helm test`
              pod sees everything its phase installed.
  crds        every custom resource's kind is served when its phase is applied: its CRD
              came in an earlier phase, or the cluster had it (--operator).
  flows       the required network flows are admitted by the rendered NetworkPolicies,
              given the rendered pods' labels, namespaces and ports (final state); the
              `helm test` pod running `blinkchamber doctor` counts as a Redis client.
  images      every image is in the image list with a recent `checked` date; none is
              under docker.io/bitnami/ (those tags were withdrawn in 2025).
  schemas     custom resources whose CRD the chart renders are validated against that
              CRD's openAPIV3Schema, unknown fields included (kubernetes-validate has no
              schema for them).

Prints `PASS name` / `FAIL name: reason` lines; exits 1 if any failed.
"""

import argparse
import datetime as dt
import re
import subprocess
import sys
from pathlib import Path

import yaml

DEPLOY_DIR = Path(__file__).resolve().parents[2]
PHASES_SH = DEPLOY_DIR / "scripts/lib/phases.sh"
RELEASE = "blinkchamber"
RELEASE_NS = "blinkchamber"
BUILTIN_GROUPS = {"", "apps", "batch", "policy", "rbac.authorization.k8s.io", "networking.k8s.io",
                  "admissionregistration.k8s.io", "apiextensions.k8s.io", "autoscaling",
                  "coordination.k8s.io", "storage.k8s.io", "scheduling.k8s.io",
                  "discovery.k8s.io", "certificates.k8s.io", "node.k8s.io"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "IngressClass",
                  "PriorityClass", "StorageClass", "PersistentVolume", "ClusterIssuer"}
OPERATOR_APIS = ["monitoring.coreos.com/v1/ServiceMonitor", "monitoring.coreos.com/v1/PrometheusRule",
                 "monitoring.coreos.com/v1/PodMonitor"]
# Objects a rendered Job creates while it runs: (kind, name) -> name of the Job (same namespace).
RUNTIME_CREATED = {
    ("Secret", "login-client"): "zitadel-setup",
    ("Secret", f"{RELEASE}-ingress-nginx-admission"): f"{RELEASE}-ingress-nginx-admission-create",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}

RESULTS = []
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the renders are large


def record(name, errors):
    if errors:
        for err in errors[:15]:
            RESULTS.append((False, f"{name}: {err}"))
        if len(errors) > 15:
            RESULTS.append((False, f"{name}: ... and {len(errors) - 15} more"))
    else:
        RESULTS.append((True, name))


# --- phases and rendering --------------------------------------------------------------

def bash_lines(snippet):
    out = subprocess.run(["bash", "-c", f'. "{PHASES_SH}"; {snippet}'], check=True,
                         capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line]


def phase_plan(names):
    plan = []
    for name in names:
        kind = bash_lines(f'phase_kind "{name}"')[0]
        sets = bash_lines(f'phase_set_args "{name}"') if kind == "helm" else []
        plan.append((name, kind, sets))
    return plan


def render(args, sets, apis, upgrade):
    cmd = [args.helm, "template", RELEASE, args.chart, "--namespace", RELEASE_NS, "-f", f"{args.chart}/values.yaml"]
    if args.env != "default":
        cmd += ["-f", f"{args.chart}/values-{args.env}.yaml"]
    for api in apis:
        cmd += ["--api-versions", api]
    if upgrade:
        cmd.append("--is-upgrade")
    cmd += sets
    for s in args.set or []:
        cmd += ["--set", s]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"helm template failed: {proc.stderr.strip()}")
    return [d for d in yaml.load_all(proc.stdout, Loader=LOADER) if d]


def ns_of(doc):
    if doc["kind"] in CLUSTER_SCOPED:
        return ""
    return doc["metadata"].get("namespace") or RELEASE_NS


def key(doc):
    return (doc["kind"], ns_of(doc), doc["metadata"]["name"])


def hook_info(doc):
    ann = doc["metadata"].get("annotations") or {}
    hooks = [h.strip() for h in str(ann.get("helm.sh/hook", "")).split(",") if h.strip()]
    return hooks, int(ann.get("helm.sh/hook-weight", "0") or 0)


def crd_apis(docs):
    apis = []
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            spec = d["spec"]
            for v in spec["versions"]:
                if v.get("served", True):
                    apis.append(f"{spec['group']}/{v['name']}/{spec['names']['kind']}")
    return apis


def group_of(doc):
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


# --- pod templates and references ------------------------------------------------------

def pod_template(doc):
    spec = doc.get("spec") or {}
    kind = doc["kind"]
    if kind == "Pod":
        return doc
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]
    return spec.get("template")


def containers(pod_spec):
    return (pod_spec.get("initContainers") or []) + (pod_spec.get("containers") or [])


def references(doc):
    """(kind, name) pairs the workload needs in its own namespace."""
    refs = set()
    tpl = pod_template(doc)
    if not tpl:
        return refs
    spec = tpl["spec"]
    refs.add(("ServiceAccount", spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"))
    for s in spec.get("imagePullSecrets") or []:
        refs.add(("Secret", s["name"]))
    for vol in spec.get("volumes") or []:
        if "secret" in vol and not vol["secret"].get("optional"):
            refs.add(("Secret", vol["secret"]["secretName"]))
        if "configMap" in vol and not vol["configMap"].get("optional"):
            refs.add(("ConfigMap", vol["configMap"]["name"]))
        if "persistentVolumeClaim" in vol:
            refs.add(("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"]))
        for src in (vol.get("projected") or {}).get("sources") or []:
            for kind, field in (("Secret", "secret"), ("ConfigMap", "configMap")):
                if field in src and not src[field].get("optional"):
                    refs.add((kind, src[field]["name"]))
    for c in containers(spec):
        for env in c.get("env") or []:
            vf = env.get("valueFrom") or {}
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if field in vf and not vf[field].get("optional"):
                    refs.add((kind, vf[field]["name"]))
        for ef in c.get("envFrom") or []:
            for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if field in ef and not ef[field].get("optional"):
                    refs.add((kind, ef[field]["name"]))
    tls = ((tpl.get("metadata") or {}).get("annotations") or {}).get("vault.hashicorp.com/tls-secret")
    if tls:
        refs.add(("Secret", tls))
    if doc["kind"] == "StatefulSet" and doc["spec"].get("serviceName"):
        refs.add(("Service", doc["spec"]["serviceName"]))
    return refs


SVC_HOST = re.compile(r"\b((?:[a-z0-9-]+\.)*[a-z0-9-]+)\.svc(?:\.cluster\.local)?\b")


def host_references(doc):
    """Services named by `NAME.NS.svc[.cluster.local]` host names in a ConfigMap's data."""
    refs = set()
    if doc["kind"] != "ConfigMap":
        return refs
    for value in (doc.get("data") or {}).values():
        for host in SVC_HOST.findall(str(value)):
            labels = host.split(".")
            if len(labels) >= 2:
                refs.add((labels[-1], labels[-2]))  # (namespace, service)
    return refs


def check_references(plan_renders, bootstrap):
    """plan_renders: [(phase, kind, docs)]; bootstrap: {(kind, ns, name)}."""
    errors = []
    # where each object first appears: phase index and whether as a hook
    first_seen = {}
    for i, (phase, kind, docs) in enumerate(plan_renders):
        if kind == "bootstrap":
            for k in bootstrap:
                first_seen.setdefault(k, (i, phase))
        for d in docs or []:
            first_seen.setdefault(key(d), (i, phase))
    available = {("Namespace", "", RELEASE_NS), ("Namespace", "", "kube-system")}
    for i, (phase, kind, docs) in enumerate(plan_renders):
        if kind == "bootstrap":
            available |= bootstrap
            continue
        namespaces = {n for (k, _, n) in available if k == "Namespace"} | \
            {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
        for n in namespaces:
            available.add(("ServiceAccount", n, "default"))
            available.add(("ConfigMap", n, "kube-root-ca.crt"))
        pre, main, post, tests = [], [], [], []
        for d in docs:
            hooks, weight = hook_info(d)
            if "test" in hooks:
                tests.append(d)
                continue
            if any(h.startswith("pre-") for h in hooks):
                pre.append((weight, d))
            elif any(h.startswith("post-") for h in hooks):
                post.append((weight, d))
            else:
                main.append(d)
        pre.sort(key=lambda wd: wd[0])

        def runtime_outputs(job_docs):
            # Secrets cert-manager issues for the Certificates (cert-manager runs from the
            # first phase on), and what the known Jobs write.
            out = {("Secret", ns_of(c), c["spec"]["secretName"]) for c in job_docs if c["kind"] == "Certificate"}
            for (k, name), job in RUNTIME_CREATED.items():
                for jd in job_docs:
                    if jd["kind"] == "Job" and jd["metadata"]["name"] == job:
                        out.add((k, ns_of(jd), name))
            return out

        def check_doc(d, have, when):
            missing = []
            ns = ns_of(d)
            if ns and ("Namespace", "", ns) not in have:
                missing.append(("Namespace", "", ns))
            if d["kind"] in WORKLOADS:
                missing += [(k, ns, n) for k, n in references(d) if (k, ns, n) not in have]
            for rns, svc in host_references(d):
                if ("Service", rns, svc) not in have:
                    missing.append(("Service", rns, svc))
            for m in missing:
                where = first_seen.get(m)
                later = f"created only in phase {where[1]}" if where and where[0] >= i else "never created"
                if not where and m in bootstrap:
                    later = "created by vault-bootstrap.sh, which does not run before it"
                if where and where[0] == i:
                    later = f"rendered in phase {where[1]} but not before this {when}"
                errors.append(f"phase {phase}: {d['kind']}/{ns_of(d) or '-'}/{d['metadata']['name']} ({when}) "
                              f"needs {m[0]}/{m[1] or '-'}/{m[2]}: {later}")

        # pre hooks: earlier phases, hooks of lower weight (or same weight, not a Job/Pod)
        for weight, d in pre:
            before = {key(h) for w, h in pre if w < weight or (w == weight and h["kind"] not in ("Job", "Pod"))}
            before |= runtime_outputs([h for w, h in pre if w < weight])
            check_doc(d, available | before, "pre hook")
        after_pre = available | {key(h) for _, h in pre} | runtime_outputs([h for _, h in pre])
        for d in main:
            check_doc(d, after_pre | {key(m) for m in main} | runtime_outputs(main), "resource")
        everything = after_pre | {key(m) for m in main} | runtime_outputs(main)
        for _, d in post:
            check_doc(d, everything | {key(h) for _, h in post}, "post hook")
        available = everything | {key(h) for _, h in post} | runtime_outputs([h for _, h in post])
        # `helm test` runs on the installed release: everything of this phase exists.
        for d in tests:
            check_doc(d, available, "test hook")
    return errors


def check_crds(plan_renders, preexisting):
    errors = []
    served = set(preexisting)
    for phase, kind, docs in plan_renders:
        if kind != "helm":
            continue
        for d in docs:
            if group_of(d) in BUILTIN_GROUPS:
                continue
            api = f"{d['apiVersion']}/{d['kind']}"
            if api not in served:
                same = [c for c in docs if c["kind"] == "CustomResourceDefinition"
                        and c["spec"]["names"]["kind"] == d["kind"] and c["spec"]["group"] == group_of(d)]
                why = "its CRD arrives in the same release (no matches for kind on install)" if same else "no phase installs its CRD"
                errors.append(f"phase {phase}: {d['kind']}/{d['metadata']['name']} ({api}): {why}")
        served |= set(crd_apis(docs))
    return errors


# --- NetworkPolicy evaluation ----------------------------------------------------------

def selector_matches(sel, labels):
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


EXTERNAL = "external"  # the API server, the internet: only an ipBlock or an empty `from` admits it


class Pod:
    def __init__(self, name, ns, labels, ports):
        self.name, self.ns, self.labels, self.ports = name, ns, labels, ports

    def __repr__(self):
        return f"{self.ns}/{self.name}"


def pods_of(docs, tests=False):
    """The pods the workloads run; with tests=True, the `helm test` pods instead."""
    pods = []
    for d in docs:
        if d["kind"] not in WORKLOADS:
            continue
        tpl = pod_template(d)
        hooks, _ = hook_info(d)
        if not tpl or ("test" in hooks) != tests:
            continue
        ports = {}
        for c in containers(tpl["spec"]):
            for p in c.get("ports") or []:
                ports[p.get("name") or str(p["containerPort"])] = p["containerPort"]
        pods.append(Pod(d["metadata"]["name"], ns_of(d), (tpl.get("metadata") or {}).get("labels") or {}, ports))
    return pods


def ns_labels(ns, docs):
    labels = {"kubernetes.io/metadata.name": ns}
    for d in docs:
        if d["kind"] == "Namespace" and d["metadata"]["name"] == ns:
            labels.update(d["metadata"].get("labels") or {})
    return labels


def peer_admits(peer, src, policy_ns, docs):
    if src == EXTERNAL:
        return "ipBlock" in peer
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], ns_labels(src.ns, docs)):
            return False
    elif src.ns != policy_ns:
        return False
    if "podSelector" in peer:
        return selector_matches(peer["podSelector"], src.labels)
    return True


def port_admits(entry, dst, port):
    p = entry.get("port")
    if p is None:
        return True
    if isinstance(p, str) and not p.isdigit():
        p = dst.ports.get(p)
        if p is None:
            return False
    p = int(p)
    return p <= port <= int(entry.get("endPort", p))


def admitted(src, dst, port, docs):
    policies = [d for d in docs if d["kind"] == "NetworkPolicy" and ns_of(d) == dst.ns
                and "Ingress" in (d["spec"].get("policyTypes") or ["Ingress"])
                and selector_matches(d["spec"].get("podSelector", {}), dst.labels)]
    if not policies:
        return True
    for pol in policies:
        for rule in pol["spec"].get("ingress") or []:
            ports_ok = not rule.get("ports") or any(port_admits(e, dst, port) for e in rule["ports"])
            from_ok = not rule.get("from") or any(peer_admits(p, src, ns_of(pol), docs) for p in rule["from"])
            if ports_ok and from_ok:
                return True
    return False


def service_targets(docs, pods, ns, name, port_ref):
    """Pods and container ports behind Service ns/name's port (number or name)."""
    svc = next((d for d in docs if d["kind"] == "Service" and ns_of(d) == ns and d["metadata"]["name"] == name), None)
    if svc is None:
        return None, f"Service {ns}/{name} not rendered"
    sport = next((p for p in svc["spec"].get("ports") or []
                  if p.get("name") == port_ref or p.get("port") == port_ref
                  or (isinstance(port_ref, str) and port_ref.isdigit() and p.get("port") == int(port_ref))), None)
    if sport is None:
        return None, f"Service {ns}/{name} has no port {port_ref}"
    selector = svc["spec"].get("selector") or {}
    targets = [p for p in pods if p.ns == ns and selector and all(p.labels.get(k) == v for k, v in selector.items())]
    if not targets:
        return None, f"Service {ns}/{name} selects no rendered pod"
    out = []
    tp = sport.get("targetPort", sport["port"])
    for pod in targets:
        num = tp if isinstance(tp, int) else (int(tp) if str(tp).isdigit() else pod.ports.get(tp))
        if num is None:
            return None, f"pod {pod} has no port named {tp} (Service {ns}/{name})"
        out.append((pod, int(num)))
    return out, None


def check_flows(docs, monitoring_ns):
    errors, checked = [], 0
    pods = pods_of(docs)

    def by_name(name, ns=None):
        return [p for p in pods if p.labels.get("app.kubernetes.io/name") == name and (ns is None or p.ns == ns)]

    def need(what, srcs, dsts):
        nonlocal checked
        if not srcs:
            errors.append(f"{what}: no source pod rendered")
            return
        if not dsts:
            errors.append(f"{what}: no destination pod rendered")
            return
        for src in srcs:
            for dst, port in dsts:
                checked += 1
                if not admitted(src, dst, port, docs):
                    errors.append(f"{what}: {src} -> {dst}:{port} dropped by the NetworkPolicies")

    prometheus = Pod("prometheus", monitoring_ns, {"app.kubernetes.io/name": "prometheus"}, {})
    ingress_pods = [p for p in by_name("ingress-nginx") if p.labels.get("app.kubernetes.io/component") == "controller"]
    runtime = by_name("blinkchamber-runtime")
    redis = by_name("redis")
    vault = [p for p in by_name("vault") if "vault-agent-injector" not in p.name]
    pgpool = [p for p in by_name("postgresql-ha") if p.labels.get("app.kubernetes.io/component") == "pgpool"]
    postgres = [p for p in by_name("postgresql-ha") if p.labels.get("app.kubernetes.io/component") == "postgresql"]
    zitadel = by_name("zitadel")
    need("runtime -> Redis 6379 and Sentinel 26379", runtime, [(r, p) for r in redis for p in (6379, 26379)])
    # The helm test pod running `blinkchamber doctor` reaches the same Redis and Sentinels.
    doctor_names = {d["metadata"]["name"] for d in docs if d["kind"] == "Pod" and "test" in hook_info(d)[0]
                    and any((c.get("args") or [])[:1] == ["doctor"] for c in containers(d["spec"]))}
    doctor = [p for p in pods_of(docs, tests=True) if p.name in doctor_names]
    if doctor:
        need("helm test doctor pod -> Redis 6379 and Sentinel 26379", doctor, [(r, p) for r in redis for p in (6379, 26379)])
    need("Redis replication and Sentinel gossip", redis, [(r, p) for r in redis for p in (6379, 26379)])
    need("ZITADEL (server, init and setup Jobs) -> pgpool 5432", zitadel, [(p, 5432) for p in pgpool])
    need("pgpool and repmgr -> PostgreSQL 5432", pgpool + postgres, [(p, 5432) for p in postgres])
    need("Vault Raft and retry_join", vault, [(v, p) for v in vault for p in (8200, 8201)])
    agents = []
    for d in docs:
        tpl = pod_template(d) if d["kind"] in WORKLOADS else None
        ann = ((tpl or {}).get("metadata") or {}).get("annotations") or {}
        if ann.get("vault.hashicorp.com/agent-inject") == "true":
            agents += [p for p in pods + doctor if p.name == d["metadata"]["name"] and p.ns == ns_of(d)]
    need("every Vault agent -> Vault 8200", agents, [(v, 8200) for v in vault])
    if not agents:
        errors.append("no pod carries a Vault agent")
    for d in docs:
        if d["kind"] not in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            continue
        for wh in d["webhooks"]:
            svc = wh["clientConfig"].get("service")
            if not svc:
                continue
            targets, err = service_targets(docs, pods, svc["namespace"], svc["name"], svc.get("port", 443))
            if err:
                errors.append(f"API server -> webhook {wh['name']}: {err}")
                continue
            need(f"API server -> webhook {wh['name']}", [EXTERNAL], targets)
    for d in docs:
        if d["kind"] != "Ingress":
            continue
        for rule in d["spec"].get("rules") or []:
            for path in (rule.get("http") or {}).get("paths") or []:
                b = path["backend"]["service"]
                targets, err = service_targets(docs, pods, ns_of(d), b["name"], b["port"].get("name") or b["port"].get("number"))
                if err:
                    errors.append(f"ingress {d['metadata']['name']} {path['path']}: {err}")
                    continue
                need(f"ingress controller -> {d['metadata']['name']} {path['path']}", ingress_pods, targets)
    ingresses = {d["metadata"]["name"] for d in docs if d["kind"] == "Ingress"}
    for want in ("zitadel", "zitadel-login", "blinkchamber"):
        if want not in ingresses:
            errors.append(f"no Ingress routes to {want}")
    for d in docs:
        if d["kind"] != "ServiceMonitor":
            continue
        sel = d["spec"]["selector"]
        nss = (d["spec"].get("namespaceSelector") or {}).get("matchNames") or [ns_of(d)]
        svcs = [s for s in docs if s["kind"] == "Service" and ns_of(s) in nss
                and selector_matches(sel, s["metadata"].get("labels") or {})]
        if not svcs:
            errors.append(f"ServiceMonitor {d['metadata']['name']}: selects no Service")
        for s in svcs:
            for ep in d["spec"]["endpoints"]:
                targets, err = service_targets(docs, pods, ns_of(s), s["metadata"]["name"], ep.get("port") or ep.get("targetPort"))
                if err:
                    errors.append(f"ServiceMonitor {d['metadata']['name']}: {err}")
                    continue
                need(f"Prometheus -> {s['metadata']['name']}:{ep.get('port')}", [prometheus], targets)
    # Certificates signed by an issuer the chart renders as a CA or self-signed need no
    # challenge; the others (the public names, an ACME ClusterIssuer) get HTTP-01 solvers.
    local_issuers = {(d["kind"], ns_of(d), d["metadata"]["name"]) for d in docs
                     if d["kind"] in ("Issuer", "ClusterIssuer") and ("ca" in d["spec"] or "selfSigned" in d["spec"])}
    cert_ns = {RELEASE_NS}
    for d in docs:
        if d["kind"] == "Certificate":
            ref = d["spec"]["issuerRef"]
            kind = ref.get("kind", "Issuer")
            if (kind, "" if kind == "ClusterIssuer" else ns_of(d), ref["name"]) not in local_issuers:
                cert_ns.add(ns_of(d))
    for ns in sorted(cert_ns):
        solver = Pod("cm-acme-http-solver", ns, {"acme.cert-manager.io/http01-solver": "true"}, {"http": 8089})
        need(f"ingress controller -> ACME HTTP-01 solver in {ns}", ingress_pods, [(solver, 8089)])
    return errors, checked


# --- images ----------------------------------------------------------------------------

def normalise(image):
    image = image.split("@", 1)[0]
    first = image.split("/", 1)[0]
    if "/" not in image:
        image = f"docker.io/library/{image}"
    elif "." not in first and ":" not in first and first != "localhost":
        image = f"docker.io/{image}"
    return image


def check_images(renders, list_file, max_age, today):
    errors = []
    listed = yaml.safe_load(Path(list_file).read_text())
    entries = {normalise(e["image"]): e for e in listed["images"]}
    used = {}
    for env, docs in renders.items():
        for d in docs:
            tpl = pod_template(d) if d["kind"] in WORKLOADS else None
            if not tpl:
                continue
            for c in containers(tpl["spec"]):
                used.setdefault(normalise(c["image"]), set()).add(f"{env}:{d['kind']}/{d['metadata']['name']}")
    for image, where in sorted(used.items()):
        if image.startswith("docker.io/bitnami/"):
            errors.append(f"{image} ({sorted(where)[0]}): docker.io/bitnami tags were withdrawn in 2025; use bitnamilegacy or another maintained image")
            continue
        entry = entries.get(image)
        if entry is None:
            errors.append(f"{image} ({sorted(where)[0]}) is not in {Path(list_file).name}; check the registry publishes it and add it with the date")
            continue
        checked = entry.get("checked")
        if not isinstance(checked, dt.date):
            errors.append(f"{image}: no `checked` date in {Path(list_file).name}")
        elif (today - checked).days > max_age:
            errors.append(f"{image}: last checked {checked}, more than {max_age} days ago; check it again")
    for image in sorted(set(entries) - set(used)):
        errors.append(f"{image} is listed in {Path(list_file).name} but no render uses it; drop it")
    return errors, len(used)


# --- custom resources against the CRDs the chart renders ----------------------------------

def validate(obj, schema, path, errors):
    if schema.get("x-kubernetes-int-or-string"):
        if not isinstance(obj, (int, str)):
            errors.append(f"{path}: expected int or string")
        return
    t = schema.get("type")
    if t == "object" or "properties" in schema:
        if not isinstance(obj, dict):
            errors.append(f"{path}: expected an object")
            return
        props = schema.get("properties") or {}
        for req in schema.get("required") or []:
            if req not in obj:
                errors.append(f"{path}: missing required field {req}")
        for k, v in obj.items():
            if path == "" and k == "metadata":
                continue
            if k in props:
                validate(v, props[k], f"{path}.{k}", errors)
            elif "additionalProperties" in schema and isinstance(schema["additionalProperties"], dict):
                validate(v, schema["additionalProperties"], f"{path}.{k}", errors)
            elif path == "" and k in ("apiVersion", "kind", "metadata"):
                continue  # ObjectMeta: checked by the API server itself, not the CRD schema
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                errors.append(f"{path}.{k}: unknown field")
    elif t == "array":
        if not isinstance(obj, list):
            errors.append(f"{path}: expected an array")
            return
        for i, item in enumerate(obj):
            validate(item, schema.get("items") or {}, f"{path}[{i}]", errors)
    elif t == "string":
        if not isinstance(obj, str):
            errors.append(f"{path}: expected a string")
        elif "enum" in schema and obj not in schema["enum"]:
            errors.append(f"{path}: {obj!r} not one of {schema['enum']}")
    elif t == "integer":
        if not isinstance(obj, int) or isinstance(obj, bool):
            errors.append(f"{path}: expected an integer")
    elif t == "boolean":
        if not isinstance(obj, bool):
            errors.append(f"{path}: expected a boolean")


def check_schemas(docs):
    errors, n = [], 0
    crds = {}
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            for v in d["spec"]["versions"]:
                crds[(f"{d['spec']['group']}/{v['name']}", d["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    for d in docs:
        schema = crds.get((d["apiVersion"], d["kind"]))
        if schema is None:
            continue
        n += 1
        errs = []
        validate(d, schema, "", errs)
        errors += [f"{d['kind']}/{d['metadata']['name']}{e}" for e in errs]
    return errors, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--helm", required=True)
    ap.add_argument("--chart", required=True)
    ap.add_argument("--env", action="append", required=True)
    ap.add_argument("--phases", default="")
    ap.add_argument("--operator", action="store_true")
    ap.add_argument("--set", action="append")
    ap.add_argument("--no-monitoring-gate", action="store_true",
                    help="render without deploy-umbrella.sh's ServiceMonitor switch (negative test)")
    ap.add_argument("--images", default=str(DEPLOY_DIR / "images.yaml"))
    ap.add_argument("--max-image-age", type=int, default=120)
    ap.add_argument("--today", default="")
    ap.add_argument("--only", default="references,crds,flows,images,schemas")
    ap.add_argument("--monitoring-namespace", default="monitoring")
    args = ap.parse_args()
    only = set(args.only.split(","))
    names = args.phases.split(",") if args.phases else bash_lines('printf "%s\\n" "${INSTALL_PHASES[@]}"')
    plan = phase_plan(names)
    bootstrap = set()
    for entry in bash_lines('printf "%s\\n" "${BOOTSTRAP_CREATES[@]}"'):
        kind, ns, name = entry.split("/")
        bootstrap.add((kind, RELEASE_NS if ns == "release" else "database", name))
    scenario = "cluster with the Prometheus Operator" if args.operator else "empty cluster"
    finals = {}
    for env in args.env:
        args.env = env
        preexisting = OPERATOR_APIS if args.operator else []
        have_sm = "1" if args.operator else "0"
        monitoring = [] if args.no_monitoring_gate else bash_lines(f"monitoring_set_args {have_sm}")
        served = list(preexisting)
        renders = []
        first_helm = True
        try:
            for phase, kind, sets in plan:
                if kind == "bootstrap":
                    renders.append((phase, kind, None))
                    continue
                docs = render(args, monitoring + sets, served, upgrade=not first_helm)
                first_helm = False
                served += crd_apis(docs)
                renders.append((phase, kind, docs))
        except SystemExit as err:
            record(f"{env} ({scenario}): every phase renders", [str(err)])
            continue
        final = next(docs for _, kind, docs in reversed(renders) if kind == "helm")
        finals[env] = final
        label = f"{env}, {scenario}, phases {' -> '.join(names)}"
        if "references" in only:
            record(f"install check ({label}): every referenced object exists when needed", check_references(renders, bootstrap))
        if "crds" in only:
            record(f"install check ({label}): every custom resource's CRD is served before it",
                   check_crds(renders, preexisting))
        if "flows" in only:
            errs, n = check_flows(final, args.monitoring_namespace)
            record(f"install check ({env}, {scenario}): required flows admitted by the NetworkPolicies ({n} pod pairs)", errs)
        if "schemas" in only:
            errs, n = check_schemas(final)
            record(f"install check ({env}): custom resources valid against the rendered CRDs ({n} objects)", errs)
    if "images" in only and finals:
        today = dt.date.fromisoformat(args.today) if args.today else dt.date.today()
        errs, n = check_images(finals, args.images, args.max_image_age, today)
        record(f"install check ({', '.join(finals)}): {n} images listed, recently checked, none from docker.io/bitnami", errs)
    failed = 0
    for ok, line in RESULTS:
        print(("PASS " if ok else "FAIL ") + line)
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
