#!/usr/bin/env python3
"""Write a stub chart in charts/<name>/ for every dependency of CHART_DIR/Chart.yaml that
is not already there (BlinkChamber's own chart is), so the umbrella renders without the
chart repositories. A stub carries the pinned name and version and renders one object:
a ConfigMap `stub-values-<name>` holding, as JSON, the values Helm hands that subchart
after merging every values file and --set. check_manifests.py asserts on those.

Usage: stub_dependencies.py CHART_DIR
"""

import sys
from pathlib import Path

import yaml


def main(chart_dir):
    chart = Path(chart_dir)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    for dep in meta.get("dependencies", []):
        target = chart / "charts" / dep["name"]
        if target.exists():
            continue
        target.mkdir(parents=True)
        (target / "Chart.yaml").write_text(
            f"apiVersion: v2\nname: {dep['name']}\nversion: {dep['version']}\n"
            f"description: offline stand-in for the upstream {dep['name']} chart\n"
        )
        (target / "templates").mkdir()
        (target / "templates" / "values-dump.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n"
            f"  name: stub-values-{dep['name']}\n"
            "data:\n  values.json: {{ toJson .Values | quote }}\n"
        )
        print(f"stubbed {dep['name']} {dep['version']}")


if __name__ == "__main__":
    main(sys.argv[1])
