#!/usr/bin/env bash
# Prove module code on Python 3.9 (the RHEL 9 host floor) inside a Debian 11 container:
# byte-compile everything under plugins/ and run the module_utils unit tests, which are stdlib-only.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
image=$("$here/fleet-image.sh" bullseye)
"$here/collection-tree.sh" "$KVMOPS_TREES/py39" >/dev/null
# the tree is mounted read-only; bytecode and pytest state go to the container's own /tmp
podman run --rm --network none -e PYTHONDONTWRITEBYTECODE=1 \
  -v "$KVMOPS_TREES/py39/ansible_collections:/src/ansible_collections:ro" \
  -w /src/ansible_collections/kvmops/fleet "$image" \
  sh -ec '
    python3 --version
    python3 - <<PY
import pathlib, sys
files = sorted(pathlib.Path("plugins").rglob("*.py"))
for f in files:
    compile(f.read_text(encoding="utf-8"), str(f), "exec", dont_inherit=True)
print("compiled %d files under plugins/ with Python %s" % (len(files), sys.version.split()[0]))
PY
    python3 -m pytest -p no:cacheprovider -c /dev/null --rootdir=. -q tests/unit/plugins/module_utils
  '
