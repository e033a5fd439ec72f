#!/usr/bin/env python3
"""Every value in a values file must be documented: each mapping key needs a comment on
the line just above it or at the end of its own line. Keys inside flow mappings
(`{cpu: 100m, memory: 128Mi}`) are covered by their key's comment, and so are the
Kubernetes-native structures below the keys in NATIVE (resources, annotations, affinity,
probes, security contexts, ...): their comment describes the object as a whole.

Usage: check_values_comments.py VALUES.yaml...   (exit 1 and list the bare keys)
"""

import re
import sys

NATIVE = {
    "resources", "podAnnotations", "affinity", "podSecurityContext", "securityContext",
    "livenessProbe", "readinessProbe", "nodeSelector", "extraVolumes", "extraVolumeMounts",
    "hosts", "tls",
}
KEY = re.compile(r"^(\s*)([A-Za-z0-9_.\"'/-]+):(\s|$)")


def bare_keys(path):
    lines = open(path).read().splitlines()
    bare = []
    in_block = None  # indentation of a block scalar (|) whose content is not YAML keys
    parents = []  # (indent, key) of the enclosing keys
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if in_block is not None:
            if stripped and indent <= in_block:
                in_block = None
            else:
                continue
        m = KEY.match(line)
        if not m or stripped.startswith("#") or stripped.startswith("- "):
            continue
        while parents and parents[-1][0] >= indent:
            parents.pop()
        covered = any(key in NATIVE for _, key in parents)
        parents.append((indent, m.group(2)))
        if re.search(r":\s*[|>][-+]?\s*(#.*)?$", line):
            in_block = indent
        if covered:
            continue
        if "#" in line.split(":", 1)[1]:
            continue
        prev = i - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        if prev >= 0 and lines[prev].strip().startswith("#"):
            continue
        bare.append(f"{path}:{i + 1}: {stripped}")
    return bare


def main(paths):
    bare = [b for p in paths for b in bare_keys(p)]
    for b in bare:
        print(f"undocumented value {b}")
    return 1 if bare else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
