#!/usr/bin/env bash
# ansible-test sanity, run locally with Python 3.11 from a temporary ansible_collections tree.
# Extra arguments go to ansible-test (e.g. --test validate-modules).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
# the per-test venvs bootstrap pip through this stand-in (hack/get_pip_standin.py)
python "$here/get_pip_standin.py" --install >/dev/null
tree=$("$here/collection-tree.sh" "$KVMOPS_TREES/sanity")
cd "$tree"
ansible-test sanity --python 3.11 --requirements --color no "$@"
