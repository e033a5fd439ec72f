#!/usr/bin/env python3
"""Write or verify CHART_DIR/Chart.lock for the chart packages vendored in charts/.

Helm records in Chart.lock the resolved version of every dependency and a digest of
Chart.yaml's dependencies together with the lock's (`resolver.HashReq`: sha256 of the
JSON of [requirements, locked]). `helm dependency build` refuses a lock whose digest does
not match Chart.yaml; this writes the same digest without reaching a chart repository.

Usage: chart_lock.py write|verify CHART_DIR
  verify also checks that charts/ holds exactly one package per locked dependency, at
  the locked version, and nothing else.
"""

import hashlib
import json
import sys
import tarfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

# Field order and omitempty rules of helm's chart.Dependency (pkg/chart/dependency.go).
FIELDS = [("name", False), ("version", True), ("repository", False), ("condition", True),
          ("tags", True), ("enabled", True), ("import-values", True), ("alias", True)]


def go_json(dep):
    out = {}
    for key, omitempty in FIELDS:
        val = dep.get(key)
        if omitempty and not val:
            continue
        out[key] = val if val is not None else ""
    return out


def digest(reqs, locked):
    data = json.dumps([[go_json(d) for d in reqs], [go_json(d) for d in locked]],
                      separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def locked_deps(meta):
    return [{"name": d["name"], "repository": d.get("repository", ""), "version": d["version"]}
            for d in meta.get("dependencies", [])]


def package_version(path):
    with tarfile.open(path) as tar:
        member = next(m for m in tar.getmembers() if m.name.count("/") == 1 and m.name.endswith("/Chart.yaml"))
        meta = yaml.safe_load(tar.extractfile(member))
    return meta["name"], str(meta["version"])


def main(mode, chart_dir):
    chart = Path(chart_dir)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    locked = locked_deps(meta)
    if mode == "write":
        lock = {"dependencies": locked, "digest": digest(meta["dependencies"], locked),
                "generated": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")}
        (chart / "Chart.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
        print(f"wrote {chart / 'Chart.lock'}")
        return 0
    errors = []
    lock = yaml.safe_load((chart / "Chart.lock").read_text())
    if lock["dependencies"] != locked:
        errors.append("Chart.lock dependencies differ from Chart.yaml")
    if lock["digest"] != digest(meta["dependencies"], lock["dependencies"]):
        errors.append("Chart.lock digest is out of sync with Chart.yaml")
    packaged = {}
    for tgz in sorted((chart / "charts").glob("*.tgz")):
        name, version = package_version(tgz)
        packaged[name] = version
    for dep in locked:
        if not dep["repository"]:
            if not (chart / "charts" / dep["name"] / "Chart.yaml").is_file():
                errors.append(f"{dep['name']}: local chart missing in charts/")
            continue
        if packaged.get(dep["name"]) != dep["version"]:
            errors.append(f"{dep['name']}: charts/ has {packaged.get(dep['name'])}, locked {dep['version']}")
    extra = set(packaged) - {d["name"] for d in locked}
    if extra:
        errors.append(f"charts/ holds packages nobody depends on: {sorted(extra)}")
    for err in errors:
        print(err)
    if not errors:
        print(f"Chart.lock matches Chart.yaml and charts/ ({len(packaged)} packages)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
