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
# tracked and new files, minus those deleted in the work tree (not yet committed): rsync would fail on them
present_only() {
  local f
  while IFS= read -r -d '' f; do
    if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
  done
}
git ls-files -z --cached --others --exclude-standard | present_only > "$1/.wanted0"
rsync -a --delete --from0 --files-from="$1/.wanted0" ./ "$dest/"
# --files-from does not delete files that left the list: remove them by comparing the lists
(cd "$dest" && find . -type f -printf '%P\n' | sort) > "$1/.present"
tr '\0' '\n' < "$1/.wanted0" | sort > "$1/.wanted"
{ comm -23 "$1/.present" "$1/.wanted" | grep -v '^tests/output/' || true; } \
  | (cd "$dest" && xargs -r -d '\n' rm -f --)
echo "$dest"
