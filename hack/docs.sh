#!/usr/bin/env bash
# Render the collection reference (modules, roles, guides) to HTML with antsibull-docs + Sphinx.
# Sphinx and its theme go into a separate venv (.build/docs-venv) so the test venv stays lean.
# Output: .build/docs/build/html/index.html
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
dest=$KVMOPS_BUILD/docs
rm -rf "$dest"
mkdir -p "$dest"
antsibull-docs sphinx-init --use-current --lenient --dest-dir "$dest" kvmops.fleet
docs_venv=$KVMOPS_BUILD/docs-venv
if [ ! -x "$docs_venv/bin/sphinx-build" ]; then
  /usr/bin/python3 -m venv "$docs_venv"
  "$docs_venv/bin/pip" install -q -r "$dest/requirements.txt" "ansible-core>=2.19,<2.20" 2>&1 \
    | grep -v "^WARNING: Location 'file:" || true
fi
cd "$dest"
# antsibull-docs copies only the .rst files of docs/docsite/rst: put the guides' images (docs/docsite/images,
# referenced as ../images/NAME) where that relative path points in the generated tree, before Sphinx runs
sed -i "s|^sphinx-build |mkdir -p rst/collections/kvmops/fleet/images \&\& cp $KVMOPS_REPO/docs/docsite/images/*.png rst/collections/kvmops/fleet/images/\nsphinx-build |" build.sh
PATH="$docs_venv/bin:$PATH" ./build.sh
echo "docs: $dest/build/html/index.html"
