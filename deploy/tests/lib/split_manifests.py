#!/usr/bin/env python3
"""Split `helm template` output: Kubernetes built-in kinds to one file, custom resources
to another, so kubernetes-validate sees only what it has schemas for and the custom
resources go to check_manifests.py.

Usage: split_manifests.py RENDERED.yaml CORE_OUT.yaml CUSTOM_OUT.yaml
"""

import sys

import yaml

CUSTOM_GROUPS = {"monitoring.coreos.com", "cert-manager.io"}


def main(src, core_out, custom_out):
    core, custom = [], []
    with open(src) as fh:
        for doc in yaml.load_all(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if not doc:
                continue
            group = doc["apiVersion"].split("/")[0] if "/" in doc["apiVersion"] else ""
            (custom if group in CUSTOM_GROUPS else core).append(doc)
    with open(core_out, "w") as fh:
        yaml.safe_dump_all(core, fh, sort_keys=False)
    with open(custom_out, "w") as fh:
        yaml.safe_dump_all(custom, fh, sort_keys=False)
    print(f"{len(core)} built-in objects, {len(custom)} custom resources")


if __name__ == "__main__":
    main(*sys.argv[1:4])
