#!/usr/bin/env bash
# Copy the collection's files (tracked + new, not ignored) into DEST/ansible_collections/kvmops/fleet
# and print that path. ansible-test needs the collection at such a path and must not see the venv
# or caches; a copy (not a symlink) keeps its output out of the checkout.
#   hack/collection-tree.sh DEST
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
dest=$1/ansible_collections/kvmops/fleet
mkdir -p "$dest"
cd "$KVMOPS_REPO"
git ls-files -z --cached --others --exclude-standard \
  | rsync -a --delete --from0 --files-from=- ./ "$dest/"
# --files-from does not delete files that left the list: remove them by comparing the lists
(cd "$dest" && find . -type f -printf '%P\n' | sort) > "$1/.present"
git ls-files --cached --others --exclude-standard | sort > "$1/.wanted"
{ comm -23 "$1/.present" "$1/.wanted" | grep -v '^tests/output/' || true; } \
  | (cd "$dest" && xargs -r -d '\n' rm -f --)
echo "$dest"
