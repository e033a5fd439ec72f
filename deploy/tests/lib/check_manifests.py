#!/usr/bin/env python3
"""Checks on the umbrella chart that a Kubernetes schema cannot make.

Usage: check_manifests.py CHART_DIR ENV=RENDERED.yaml [ENV=RENDERED.yaml ...]
  ENV is default, dev or prod; RENDERED.yaml is `helm template` output for that env.

What is checked:
  * custom resources (PrometheusRule, ServiceMonitor, Certificate) against a strict
    description of the fields we use, since kubernetes-validate has no schema for them;
  * what the real upstream charts (vendored in charts/) rendered from our values: replica
    counts, Sentinel quorum, Vault HA Raft and its retry_join targets, PodDisruptionBudgets,
    optional charts off;
  * the BlinkChamber objects: config file shape, secrets wired through Vault annotations,
    probes, security context, PDBs, NetworkPolicies denying by default, and the helm test
    pod running `blinkchamber doctor` with what the serve pods run with.

Prints one `PASS name` or `FAIL name: reason` line per check; exits 1 if any failed.
"""

import json
import os
import re
import sys
from pathlib import Path

import yaml

RESULTS = []


def check(name):
    """Decorator-free helper: run fn, record PASS/FAIL with the assertion message."""

    def run(fn, *args):
        try:
            fn(*args)
        except AssertionError as err:
            RESULTS.append((False, f"{name}: {err}"))
        except Exception as err:  # a crash in a check is a failure, not a traceback
            RESULTS.append((False, f"{name}: {type(err).__name__}: {err}"))
        else:
            RESULTS.append((True, name))

    return run


class UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml parses much faster
    """SafeLoader that refuses duplicate mapping keys (Kubernetes would keep only one)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
)


def merge(base, over):
    """Helm's coalescing of -f files: maps merge, null deletes, anything else replaces."""
    out = dict(base)
    for key, val in over.items():
        if val is None:
            out.pop(key, None)
        elif isinstance(val, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], val)
        else:
            out[key] = val
    return out


def dig(tree, path, default=None):
    node = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


DURATION = re.compile(r"^[0-9]+(ms|s|m|h|d|w|y)$")
SEVERITIES = {"critical", "warning", "info"}


def exported_metrics():
    """Metric names a running binary exported (collect_metrics.py), from the file named by
    DEPLOY_METRICS_FILE. No file: every check that needs it fails, saying so."""
    path = os.environ.get("DEPLOY_METRICS_FILE", "")
    assert path and Path(path).is_file(), "no metric names from a running blinkchamber (DEPLOY_METRICS_FILE unset or missing)"
    names = {line.strip() for line in Path(path).read_text().splitlines() if line.strip()}
    assert any(n.startswith("blinkchamber_") for n in names), f"{path} lists no blinkchamber_ metric"
    return names


# Labels Prometheus adds to every scraped series (target labels), not the binary.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint"}


def check_metric_labels(expr, where):
    """Label names an expression selects or groups a blinkchamber_ metric by must be on the
    binary's samples of that metric."""
    path = os.environ.get("DEPLOY_METRICS_FILE", "") + ".labels.json"
    assert Path(path).is_file(), f"no label names from a running blinkchamber ({path})"
    seen = json.loads(Path(path).read_text())
    uses = [(m, set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", sel)))
            for m, sel in re.findall(r"\b(blinkchamber_[a-z_]+)\{([^}]*)\}", expr)]
    uses += [(m, {x.strip() for x in by.split(",") if x.strip()})
             for by, m in re.findall(r"\bby \(([^)]*)\) \((?:rate|increase|irate)?\(?(blinkchamber_[a-z_]+)", expr)]
    for metric, names in uses:
        unknown = names - TARGET_LABELS - set(seen.get(metric, []))
        assert not unknown, f"{where}: {metric} has no label {sorted(unknown)} (the binary exports {seen.get(metric, [])})"


REQUIRED_ALERTS = {
    "VaultSealed", "PostgreSQLDown", "RedisDown", "RedisMemoryHigh", "RedisLatencyHigh",
    "RedisTooManyConnections", "RedisRejectedConnections", "RedisMasterLinkDown",
    "RedisEvictionsHigh", "RedisReplicationLag", "BlinkChamberCacheHitRateLow",
    "BlinkChamberDeadLetterGrowing", "BlinkChamberEventsNotConsumed",
    "BlinkChamberPublishErrors", "BlinkChamberRedisFailover",
}


def only_keys(obj, allowed, where):
    assert isinstance(obj, dict), f"{where} is not a mapping"
    extra = set(obj) - set(allowed)
    assert not extra, f"{where}: unknown fields {sorted(extra)}"


def check_metadata(doc):
    only_keys(doc, {"apiVersion", "kind", "metadata", "spec"}, doc["kind"])
    assert re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", doc["metadata"]["name"]), "bad metadata.name"


def balanced(expr):
    pairs = {")": "(", "]": "[", "}": "{"}
    stack = []
    for ch in expr:
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack


def check_prometheus_rule(doc):
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", "apiVersion"
    check_metadata(doc)
    only_keys(doc["spec"], {"groups"}, "spec")
    names = set()
    for group in doc["spec"]["groups"]:
        only_keys(group, {"name", "interval", "rules"}, "group")
        assert group["rules"], f"group {group['name']} has no rules"
        for rule in group["rules"]:
            only_keys(rule, {"alert", "record", "expr", "for", "labels", "annotations"}, "rule")
            assert ("alert" in rule) != ("record" in rule), "rule needs exactly one of alert/record"
            expr = str(rule["expr"])
            assert expr.strip(), f"{rule.get('alert')}: empty expr"
            assert balanced(expr), f"{rule.get('alert')}: unbalanced brackets in expr"
            assert "{{" not in expr, f"{rule.get('alert')}: unrendered template in expr"
            if "for" in rule:
                assert DURATION.match(str(rule["for"])), f"{rule.get('alert')}: bad for"
            if "alert" in rule:
                assert rule["labels"]["severity"] in SEVERITIES, f"{rule['alert']}: severity"
                assert rule["annotations"].get("summary"), f"{rule['alert']}: no summary"
                names.add(rule["alert"])
            for metric in re.findall(r"\bblinkchamber_[a-z_]+", expr):
                assert metric in exported_metrics(), f"{rule.get('alert')}: metric {metric} is not exported by the binary"
            check_metric_labels(expr, rule.get("alert") or rule.get("record"))
    missing = REQUIRED_ALERTS - names
    assert not missing, f"missing alerts {sorted(missing)}"


def check_service_monitor(doc, services):
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", "apiVersion"
    check_metadata(doc)
    spec = doc["spec"]
    only_keys(spec, {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}, "spec")
    sel = spec["selector"]["matchLabels"]
    assert spec["endpoints"], "no endpoints"
    for ep in spec["endpoints"]:
        only_keys(ep, {"port", "path", "interval", "scrapeTimeout", "scheme", "params", "honorLabels",
                       "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig"}, "endpoint")
        for key in ("interval", "scrapeTimeout"):
            assert key not in ep or DURATION.match(ep[key]), f"endpoint {key} {ep.get(key)!r}"
    matched = [s for s in services if all(s["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
    assert matched, "selector matches no Service"
    for svc in matched:
        ports = {p.get("name") for p in svc["spec"]["ports"]}
        for ep in spec["endpoints"]:
            assert ep["port"] in ports, f"Service {svc['metadata']['name']} has no port {ep['port']}"


def check_certificate(doc):
    assert doc["apiVersion"] == "cert-manager.io/v1", "apiVersion"
    check_metadata(doc)
    spec = doc["spec"]
    only_keys(spec, {"secretName", "dnsNames", "issuerRef", "privateKey", "duration", "renewBefore",
                     "commonName", "isCA", "ipAddresses"}, "spec")
    assert spec["secretName"], "secretName"
    assert spec.get("dnsNames") or spec.get("commonName"), "dnsNames or commonName"
    assert all(isinstance(n, str) for n in spec.get("dnsNames") or []), "dnsNames"
    only_keys(spec["issuerRef"], {"name", "kind", "group"}, "issuerRef")
    assert spec["issuerRef"]["kind"] in {"Issuer", "ClusterIssuer"}, "issuerRef.kind"


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def named(docs, kind, name):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert found, f"no {kind}/{name}"
    return found[0]


def workload(docs, kind, name):
    return named(docs, kind, name)


def check_upstream_objects(env, values, docs):
    """What the upstream charts rendered from our values: replica counts, Sentinel, Vault
    HA Raft, the injector, ZITADEL, the optional charts off."""
    ha = env != "dev"
    want = (lambda n: n) if ha else (lambda n: 1)
    pg = workload(docs, "StatefulSet", "postgresql-ha-postgresql")["spec"]["replicas"]
    assert pg == want(3), f"postgresql nodes {pg}"
    pgpool = workload(docs, "Deployment", "postgresql-ha-pgpool")["spec"]["replicas"]
    assert pgpool == want(2), f"pgpool {pgpool}"
    redis = workload(docs, "StatefulSet", "redis-node")
    n = redis["spec"]["replicas"]
    containers = {c["name"] for c in redis["spec"]["template"]["spec"]["containers"]}
    assert "sentinel" in containers, "sentinel off"
    conf = named(docs, "ConfigMap", "redis-configuration")["data"]["sentinel.conf"]
    m = re.search(r"sentinel monitor (\S+) \S+ 6379 (\d+)", conf)
    assert m, "no `sentinel monitor` line"
    q = int(m.group(2))
    assert m.group(1) == values["redis"]["sentinel"]["masterSet"], "sentinel master name"
    assert n == want(3), f"redis nodes {n}"
    assert n % 2 == 1, "even number of sentinels"
    assert n // 2 < q <= n, f"quorum {q} is not a majority of {n}"
    env_names = {e["name"] for c in redis["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert "REDIS_PASSWORD_FILE" in env_names, "redis auth from a password file"
    vault = [d for d in by_kind(docs, "StatefulSet") if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "vault"]
    assert len(vault) == 1, "no Vault StatefulSet"
    vault = vault[0]
    assert vault["spec"]["replicas"] == want(3), f"vault replicas {vault['spec']['replicas']}"
    vconf = named(docs, "ConfigMap", f"{vault['metadata']['name']}-config")["data"]["extraconfig-from-values.hcl"]
    assert 'storage "raft"' in vconf, "vault HA raft"
    joins = re.findall(r'leader_api_addr = "https?://([a-z0-9-]+)\.([a-z0-9-]+):8200"', vconf)
    assert len(joins) == want(3), "retry_join per server"
    headless = {s["metadata"]["name"] for s in by_kind(docs, "Service") if s["spec"].get("clusterIP") == "None"}
    for pod, svc in joins:
        assert re.fullmatch(rf"{vault['metadata']['name']}-\d+", pod) and svc in headless and svc == vault["spec"]["serviceName"], \
            f"retry_join {pod}.{svc} is not a pod of StatefulSet {vault['metadata']['name']} ({vault['spec']['serviceName']})"
    workload(docs, "Deployment", f"{vault['metadata']['name']}-agent-injector")
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    pods = {f"{vault['metadata']['name']}-{i}" for i in range(vault["spec"]["replicas"])}
    for script in ("vault-bootstrap.sh", "vault-backup.sh"):
        for pod in set(re.findall(r"(?:VAULT_POD:-|^POD=)([a-z0-9-]+)", (scripts / script).read_text(), re.M)):
            assert pod in pods, f"{script} execs into {pod}, not a pod of StatefulSet {vault['metadata']['name']}"
    z = workload(docs, "Deployment", "zitadel")["spec"]["replicas"]
    assert z >= (2 if ha else 1), f"zitadel replicas {z}"
    charts = {d["metadata"].get("labels", {}).get("helm.sh/chart", "").rsplit("-", 1)[0] for d in docs}
    for dep in ("cert-manager", "ingress-nginx", "vault", "postgresql-ha", "redis", "zitadel"):
        assert dep in charts, f"{dep} is not rendered"
    for dep in ("mailu", "longhorn"):
        assert dep not in charts, f"{dep} must be off by default"


def check_pdbs(env, values, docs):
    pdbs = {p["metadata"]["name"]: p for p in by_kind(docs, "PodDisruptionBudget")}
    for name in ("blinkchamber-cert-manager", "postgresql-ha-postgresql", "postgresql-ha-pgpool",
                 "redis-node", "zitadel", "blinkchamber-serve", "blinkchamber-worker"):
        assert name in pdbs, f"no PodDisruptionBudget {name}"
    for name in ("blinkchamber-serve", "blinkchamber-worker"):
        pdb = named(docs, "PodDisruptionBudget", name)
        spec = pdb["spec"]
        assert ("minAvailable" in spec) != ("maxUnavailable" in spec), f"{name}: one of min/max"
        dep = named(docs, "Deployment", name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items(), f"{name}: PDB selects no pod"
        if "minAvailable" in spec:
            assert spec["minAvailable"] < dep["spec"]["replicas"], f"{name}: PDB would block every drain"


def zitadel_issuer(zc):
    """The `iss` ZITADEL writes into its tokens: its external scheme, domain and port."""
    secure = zc.get("ExternalSecure", True)
    port = int(zc.get("ExternalPort") or (443 if secure else 80))
    scheme = "https" if secure else "http"
    default = 443 if secure else 80
    return f"{scheme}://{zc['ExternalDomain']}" + ("" if port == default else f":{port}")


def check_runtime(env, values, docs):
    redis = values["redis"]
    cm = named(docs, "ConfigMap", "blinkchamber-config")
    cfg = yaml.load(cm["data"]["config.yaml"], Loader=UniqueKeyLoader)
    assert set(cfg) <= {"server", "backend", "redis", "cache", "events", "sessions", "tokens"} | set(values["blinkchamber-runtime"].get("extraConfig") or {}), f"config sections {sorted(cfg)}"
    assert cfg["server"]["listen"] == "0.0.0.0:8080", "server.listen"
    assert cfg["server"]["metricsListen"] == "0.0.0.0:9090", "server.metricsListen"
    assert cfg["server"]["auth"]["tokens"] == {"valueFromFile": "/vault/secrets/API_TOKENS"}, "auth tokens"
    assert cfg["backend"] == "redis" and cfg["redis"]["mode"] == "sentinel", "backend/mode"
    s = cfg["redis"]["sentinel"]
    assert s["masterName"] == redis["sentinel"]["masterSet"], "masterName != redis.sentinel.masterSet"
    assert len(s["nodes"]) == redis["replica"]["replicaCount"], "one sentinel node per Redis node"
    ns = values["platform"]["databaseNamespace"]
    for node in s["nodes"]:
        assert re.match(rf"^redis-node-\d+\.redis-headless\.{ns}\.svc\.cluster\.local:26379$", node), node
    assert cfg["redis"]["password"] == {"valueFromFile": "/vault/secrets/REDIS_PASSWORD"}, "redis password"
    assert cfg["events"]["queues"]["dead_letter"] == "zitadel:events:dead_letter", "queues"
    assert "redis" not in cfg["sessions"], "sessions use the top-level redis block"
    if values["zitadel"].get("enabled", True) and cfg["tokens"].get("issuer"):
        want = zitadel_issuer(values["zitadel"]["zitadel"]["configmapConfig"])
        issuer = cfg["tokens"]["issuer"].rstrip("/")
        assert issuer == want, f"tokens.issuer {issuer} != ZITADEL's issuer {want}"
    files = set(re.findall(r"/vault/secrets/([A-Za-z0-9_.-]+)", cm["data"]["config.yaml"]))

    for comp, args0 in (("serve", "serve"), ("worker", "worker")):
        dep = named(docs, "Deployment", f"blinkchamber-{comp}")
        replicas = dep["spec"]["replicas"]
        if comp == "serve":
            assert replicas >= (2 if env != "dev" else 1), f"serve replicas {replicas}"
        pod = dep["spec"]["template"]
        ann = pod["metadata"]["annotations"]
        assert ann.get("vault.hashicorp.com/agent-inject") == "true", f"{comp}: no vault agent"
        assert ann.get("vault.hashicorp.com/role") == "blinkchamber", f"{comp}: vault role"
        for f in files:
            assert f"vault.hashicorp.com/agent-inject-secret-{f}" in ann, f"{comp}: /vault/secrets/{f} never injected"
            assert "{{" in ann[f"vault.hashicorp.com/agent-inject-template-{f}"], f"{comp}: no template for {f}"
        spec = pod["spec"]
        bound = values["platform"]["vaultAuth"]["roles"]["blinkchamber"]["serviceAccounts"]
        assert spec["serviceAccountName"] in bound, f"{comp}: service account not bound to the blinkchamber Vault role"
        check_runtime_pod_security(f"Deployment/{dep['metadata']['name']}", spec)
        aff = spec["affinity"]["podAntiAffinity"]
        assert aff, f"{comp}: no pod anti-affinity"
        c = spec["containers"][0]
        assert c["args"][:3] == [args0, "--config", "/etc/blinkchamber/config.yaml"], f"{comp}: args {c['args']}"
        for k in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"][k]), f"{comp}: resources.{k}"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports.get("metrics") == 9090, f"{comp}: metrics port"
        if comp == "serve":
            assert ports.get("http") == 8080, "serve: http port"
            assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}, "liveness"
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}, "readiness"
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert "/etc/blinkchamber" in mounts, f"{comp}: config not mounted"
        init = [i for i in spec.get("initContainers", []) if i["name"] == "config-check"]
        assert init and init[0]["args"] == ["config", "check", "/etc/blinkchamber/config.yaml"], f"{comp}: config check"


def check_runtime_pod_security(what, spec):
    """A runtime pod (serve, worker, the helm test): uid 65532, non-root, RuntimeDefault
    seccomp; every container with a read-only root filesystem, no privilege escalation
    and no capabilities."""
    psc = spec.get("securityContext") or {}
    assert psc.get("runAsNonRoot") is True, f"{what}: runAsNonRoot"
    assert psc.get("runAsUser") == 65532, f"{what}: runAsUser {psc.get('runAsUser')}"
    assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{what}: seccomp profile"
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        sc = c.get("securityContext") or {}
        assert sc, f"{what}: container {c['name']} has no securityContext"
        assert sc.get("readOnlyRootFilesystem") and sc.get("runAsNonRoot") and sc.get("allowPrivilegeEscalation") is False, \
            f"{what}: container {c['name']}: security context {sc}"
        assert (sc.get("capabilities") or {}).get("drop") == ["ALL"], f"{what}: container {c['name']}: capabilities"


def quantity(q):
    """A Kubernetes CPU or memory quantity as a number (cores, bytes)."""
    q = str(q)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 1e3, "M": 1e6, "G": 1e9}
    for unit, factor in sorted(units.items(), key=lambda u: -len(u[0])):
        if q.endswith(unit):
            return float(q[: -len(unit)]) * factor
    return float(q)


def check_doctor_test(env, values, docs):
    """`helm test` runs `blinkchamber doctor --json` in a pod that sees the backend as the
    API pods do: same image, config file, volumes, env, Vault secrets, service account and
    security context; one-shot (no restart, no Vault sidecar, which would never exit)."""
    enabled = dig(values, "blinkchamber-runtime.tests.doctor.enabled", True)
    tests = [d for d in by_kind(docs, "Pod")
             if "test" in str((d["metadata"].get("annotations") or {}).get("helm.sh/hook", "")).split(",")]
    doctor = [d for d, tpl in pod_templates(docs)
              if any((c.get("args") or [])[:1] == ["doctor"] for c in tpl["spec"]["containers"])]
    if not enabled:
        assert not doctor, "tests.doctor.enabled is false, yet a doctor pod is rendered"
        return
    assert doctor, "no helm test pod runs `blinkchamber doctor`"
    pod = doctor[0]
    name = f"{pod['kind']}/{pod['metadata']['name']}"
    assert pod in tests, f"{name} is not a helm test hook (helm.sh/hook: test)"
    ann = pod["metadata"]["annotations"]
    policy = {p.strip() for p in str(ann.get("helm.sh/hook-delete-policy", "")).split(",")}
    assert {"before-hook-creation", "hook-succeeded"} <= policy, f"{name}: hook-delete-policy {sorted(policy)}"
    serve = named(docs, "Deployment", "blinkchamber-serve")["spec"]["template"]
    sspec, sc0 = serve["spec"], serve["spec"]["containers"][0]
    spec = pod["spec"]
    assert spec.get("restartPolicy") == "Never", f"{name}: restartPolicy {spec.get('restartPolicy')}"
    assert len(spec["containers"]) == 1, f"{name}: {len(spec['containers'])} containers"
    c = spec["containers"][0]
    check_runtime_pod_security(name, spec)
    config = sc0["args"][sc0["args"].index("--config") + 1]
    assert c["args"] == ["doctor", "--json", "--config", config], \
        f"{name}: args {c['args']}, want doctor --json --config {config} (serve's --config)"
    for field in ("image", "imagePullPolicy", "env", "securityContext", "volumeMounts"):
        assert c.get(field) == sc0.get(field), f"{name}: container {field} differs from serve's: {c.get(field)} != {sc0.get(field)}"
    for field in ("volumes", "serviceAccountName", "automountServiceAccountToken", "imagePullSecrets",
                  "securityContext", "nodeSelector", "tolerations"):
        assert spec.get(field) == sspec.get(field), f"{name}: pod {field} differs from serve's: {spec.get(field)} != {sspec.get(field)}"
    sann = serve["metadata"]["annotations"]
    for k, v in sann.items():
        if k.startswith("vault.hashicorp.com/") and k != "vault.hashicorp.com/agent-pre-populate-only":
            assert ann.get(k) == v, f"{name}: annotation {k} differs from serve's"
    if ann.get("vault.hashicorp.com/agent-inject") == "true":
        assert ann.get("vault.hashicorp.com/agent-pre-populate-only") == "true", \
            f"{name}: a Vault sidecar agent never exits, so the test pod would never complete (agent-pre-populate-only)"
    labels = pod["metadata"].get("labels") or {}
    assert labels.get("app.kubernetes.io/name") == "blinkchamber-runtime", f"{name}: the Redis NetworkPolicy admits app.kubernetes.io/name=blinkchamber-runtime only"
    assert labels.get("app.kubernetes.io/component") not in ("serve", "worker"), f"{name}: selected by the serve/worker Services and PDBs"
    res = c.get("resources") or {}
    for k in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(res.get(k) or {}), f"{name}: resources.{k}"
        for r in ("cpu", "memory"):
            assert quantity(res[k][r]) <= quantity(sc0["resources"][k][r]), f"{name}: resources.{k}.{r} {res[k][r]} above serve's"


def check_network_policies(values, docs, release_ns):
    nps = by_kind(docs, "NetworkPolicy")
    db = values["platform"]["databaseNamespace"]
    for ns in {release_ns, db}:
        deny = [p for p in nps if p["metadata"].get("namespace") == ns and p["spec"]["podSelector"] == {}
                and p["spec"]["policyTypes"] == ["Ingress"] and not p["spec"].get("ingress")]
        assert deny, f"no default-deny policy in {ns}"
    redis = [p for p in nps if p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "redis"]
    assert len(redis) == 1, "one policy selects Redis"
    sources = set()
    for rule in redis[0]["spec"]["ingress"]:
        assert rule.get("from"), "a Redis rule without `from` opens it to everyone"
        for peer in rule["from"]:
            sources.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    assert sources == {"zitadel", "blinkchamber-runtime", "prometheus", "redis"}, f"Redis reachable from {sorted(sources)}"
    # Every policy that opens a port to the whole world must be one of the deliberate ones.
    for p in nps:
        for rule in p["spec"].get("ingress") or []:
            if not rule.get("from"):
                assert p["metadata"]["name"] in {"webhooks-allow-apiserver", "ingress-controller-allow-public"}, f"{p['metadata']['name']} is open to all"


def check_vault_policies(docs):
    cm = named(docs, "ConfigMap", "vault-policies")
    apps = cm["data"]["roles"].split()
    assert sorted(apps) == ["blinkchamber", "postgres", "redis", "zitadel"], f"roles {apps}"
    for app in apps:
        hcl = cm["data"][f"{app}-policy.hcl"]
        for path, caps in re.findall(r'path "([^"]+)" \{\s*capabilities = \[([^\]]*)\]', hcl):
            assert re.match(rf"^secret/(data|metadata)/{app}(/\*)?$", path), f"{app}: foreign path {path}"
            assert set(re.findall(r'"(\w+)"', caps)) <= {"read", "list"}, f"{app}: not read-only"
        role = json.loads(cm["data"][f"{app}-role.json"])
        assert role["policies"] == [f"{app}-policy"], f"{app}: role policies"
        assert role["bound_service_account_names"] and role["bound_service_account_namespaces"], f"{app}: unbound role"
    ep = named(docs, "ConfigMap", "postgresql-vault-entrypoint")
    assert 'exec "$@"' in ep["data"]["entrypoint.sh"], "entrypoint does not hand over"


def pod_templates(docs):
    for d in docs:
        spec = d.get("spec") or {}
        if d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield d, spec["template"]
        elif d["kind"] == "Pod":  # helm test pods
            yield d, d


def check_vault_agents_can_log_in(docs):
    """Every pod the Vault injector mutates must mount a service account token the
    Kubernetes auth roles accept."""
    cm = named(docs, "ConfigMap", "vault-policies")
    audiences = {json.loads(cm["data"][f"{app}-role.json"]).get("audience") for app in cm["data"]["roles"].split()}
    n = 0
    for d, tpl in pod_templates(docs):
        ann = tpl["metadata"].get("annotations") or {}
        if ann.get("vault.hashicorp.com/agent-inject") != "true":
            continue
        n += 1
        for name, value in ann.items():
            if name.startswith("vault.hashicorp.com/agent-inject-template-"):
                assert "with secret" in value and "{{" in value and "`" not in value, \
                    f"{d['kind']}/{d['metadata']['name']}: {name} is not a Vault agent template: {value!r}"
        spec = tpl["spec"]
        assert spec.get("automountServiceAccountToken", True) is not False, \
            f"{d['kind']}/{d['metadata']['name']}: automountServiceAccountToken false, the Vault agent cannot log in"
        projected = {src["serviceAccountToken"].get("audience") for v in spec.get("volumes") or []
                     for src in (v.get("projected") or {}).get("sources") or [] if "serviceAccountToken" in src}
        for aud in audiences - {None}:
            assert aud in projected, f"Vault roles require audience {aud!r}, but {d['kind']}/{d['metadata']['name']} mounts no token with it"
    assert n >= 3, f"only {n} pods get a Vault agent"


def check_pgpool_users(docs):
    """ZITADEL logs in through pgpool as its own user, which pgpool must know."""
    zcfg = yaml.safe_load(named(docs, "ConfigMap", "zitadel-config-yaml")["data"]["zitadel-config-yaml"])
    pg = zcfg["Database"]["Postgres"]
    assert pg["Host"].startswith("postgresql-ha-pgpool."), f"ZITADEL's database host {pg['Host']} is not pgpool"
    pgpool = named(docs, "Deployment", "postgresql-ha-pgpool")
    env = {e["name"]: e for c in pgpool["spec"]["template"]["spec"]["containers"] for e in c.get("env") or []}
    assert "PGPOOL_POSTGRES_CUSTOM_USERS" in env, \
        f"pgpool has no custom users: user {pg['User']['Username']} is not in pool_passwd and ZITADEL cannot log in"


def check_vault_scraped(docs):
    rules = by_kind(docs, "PrometheusRule")
    if not rules:
        return
    exprs = " ".join(str(r["expr"]) for d in rules for g in d["spec"]["groups"] for r in g["rules"])
    if "vault_" not in exprs:
        return
    vault = named(docs, "StatefulSet", "vault")
    pod_labels = vault["spec"]["template"]["metadata"]["labels"]
    for sm in by_kind(docs, "ServiceMonitor"):
        sel = sm["spec"]["selector"].get("matchLabels", {})
        for svc in by_kind(docs, "Service"):
            if all(svc["metadata"].get("labels", {}).get(k) == v for k, v in sel.items()):
                svc_sel = svc["spec"].get("selector") or {}
                if svc_sel and svc_sel.items() <= pod_labels.items() and "vault-active" not in svc_sel:
                    return
    raise AssertionError("the Vault alerts read vault_* metrics, but no ServiceMonitor scrapes every Vault server (sealed ones included)")


def check_platform_basics(env, docs):
    cm = named(docs, "ConfigMap", "blinkchamber-config")
    prefix = yaml.safe_load(cm["data"]["config.yaml"]).get("cache", {}).get("keyPrefix", "")
    assert prefix and not prefix.startswith("aikernel"), f"cache.keyPrefix {prefix!r} is another product's"
    ingresses = {d["metadata"]["name"] for d in by_kind(docs, "Ingress")}
    for name in ("zitadel", "zitadel-login"):
        assert name in ingresses, f"no Ingress {name}: ZITADEL's issuer URL would not be reachable"
    hosts = {r.get("host") for d in by_kind(docs, "Ingress") if d["metadata"]["name"].startswith("zitadel") for r in d["spec"]["rules"]}
    zcfg = yaml.safe_load(named(docs, "ConfigMap", "zitadel-config-yaml")["data"]["zitadel-config-yaml"])
    assert hosts == {zcfg["ExternalDomain"]}, f"ZITADEL Ingress hosts {sorted(map(str, hosts))} != ExternalDomain {zcfg['ExternalDomain']}"


def check_vault_tls(env, docs):
    """Production Vault serves TLS, and every Vault agent trusts its CA."""
    vault = [d for d in by_kind(docs, "StatefulSet") if d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/name") == "vault"][0]
    conf = named(docs, "ConfigMap", f"{vault['metadata']['name']}-config")["data"]["extraconfig-from-values.hcl"]
    env_vars = {e["name"]: e.get("value") for c in vault["spec"]["template"]["spec"]["containers"] for e in c.get("env") or []}
    plain = re.search(r"tls_disable\s*=\s*(1|true|\"true\")", conf) or not str(env_vars.get("VAULT_ADDR", "")).startswith("https://")
    if env != "prod":
        return
    assert not plain, "Vault in prod serves plain HTTP (tls_disable or an http VAULT_ADDR)"
    assert "tls_cert_file" in conf, "Vault in prod has no tls_cert_file"
    for d, tpl in pod_templates(docs):
        ann = tpl["metadata"].get("annotations") or {}
        if ann.get("vault.hashicorp.com/agent-inject") == "true":
            assert ann.get("vault.hashicorp.com/tls-secret") and ann.get("vault.hashicorp.com/ca-cert"), \
                f"{d['kind']}/{d['metadata']['name']}: its Vault agent does not trust Vault's CA (tls-secret / ca-cert)"


def check_dashboard(chart):
    dash = json.loads((chart / "files/dashboards/blinkchamber.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for metric in ("blinkchamber_cache_hits_total", "blinkchamber_events_consumed_total",
                   "blinkchamber_ratelimit_checks_total", "redis_up", "redis_memory_used_bytes"):
        assert metric in exprs, f"dashboard lacks {metric}"
    exported = exported_metrics()
    for metric in re.findall(r"\bblinkchamber_[a-z_]+", exprs):
        assert metric in exported, f"dashboard: metric {metric} is not exported by the binary"
    for p in dash["panels"]:
        for t in p.get("targets", []):
            check_metric_labels(t["expr"], f"dashboard panel {p['title']!r}")
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"


def main(argv):
    chart = Path(argv[1])
    base = yaml.safe_load((chart / "values.yaml").read_text())
    check("dashboard")(check_dashboard, chart)
    for arg in argv[2:]:
        env, path = arg.split("=", 1)
        values = base
        if env != "default":
            values = merge(base, yaml.safe_load((chart / f"values-{env}.yaml").read_text()) or {})
        try:
            docs = [d for d in yaml.load_all(Path(path).read_text(), Loader=UniqueKeyLoader) if d]
        except yaml.YAMLError as err:
            RESULTS.append((False, f"{env}: rendered YAML: {err}"))
            continue
        RESULTS.append((True, f"{env}: rendered YAML has no duplicate keys"))
        services = by_kind(docs, "Service")
        for doc in by_kind(docs, "PrometheusRule"):
            check(f"{env}: PrometheusRule/{doc['metadata']['name']}")(check_prometheus_rule, doc)
        for doc in by_kind(docs, "ServiceMonitor"):
            check(f"{env}: ServiceMonitor/{doc['metadata']['name']}")(check_service_monitor, doc, services)
        for doc in by_kind(docs, "Certificate"):
            check(f"{env}: Certificate/{doc['metadata']['name']}")(check_certificate, doc)
        check(f"{env}: PrometheusRule and ServiceMonitor rendered")(
            lambda: (by_kind(docs, "PrometheusRule") and by_kind(docs, "ServiceMonitor")) or (_ for _ in ()).throw(AssertionError("missing")))
        check(f"{env}: upstream charts rendered as configured")(check_upstream_objects, env, values, docs)
        check(f"{env}: PodDisruptionBudgets")(check_pdbs, env, values, docs)
        check(f"{env}: BlinkChamber deployments and config")(check_runtime, env, values, docs)
        check(f"{env}: helm test pod runs doctor --json as serve runs (config, volumes, secrets, security)")(
            check_doctor_test, env, values, docs)
        check(f"{env}: NetworkPolicies deny by default")(check_network_policies, values, docs, "blinkchamber")
        check(f"{env}: Vault policies, roles and PostgreSQL entrypoint")(check_vault_policies, docs)
        check(f"{env}: every Vault agent can log in (token mounted, audience matched)")(check_vault_agents_can_log_in, docs)
        check(f"{env}: pgpool knows ZITADEL's database user")(check_pgpool_users, docs)
        check(f"{env}: every Vault server is scraped for the Vault alerts")(check_vault_scraped, docs)
        check(f"{env}: cache key prefix, ZITADEL and login Ingresses")(check_platform_basics, env, docs)
        check(f"{env}: Vault TLS (on in prod, trusted by every agent)")(check_vault_tls, env, docs)
        if env == "prod":
            check("prod: TLS certificates rendered")(
                lambda: len(by_kind(docs, "Certificate")) >= 2 or (_ for _ in ()).throw(AssertionError("expected 2 Certificates")))
    failed = 0
    for ok, line in RESULTS:
        print(("PASS " if ok else "FAIL ") + line)
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
