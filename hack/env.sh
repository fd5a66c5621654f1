# Sourced by the hack/ scripts and the Makefile's recipes: one place for the project's paths.
# shellcheck shell=bash
KVMOPS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# caches that outlive a clone (guest kernels, fleet images, podman storage, apt downloads)
: "${KVMOPS_CACHE:=/var/cache/kvmops-fleet}"
: "${KVMOPS_VENV:=$KVMOPS_REPO/.venv}"
: "${KVMOPS_BUILD:=$KVMOPS_REPO/.build}"
: "${KVMOPS_PODMAN_RUNROOT:=/run/kvmops-fleet-podman}"
# podman reads these instead of /etc/containers/*.conf: the machine's own config stays untouched
: "${CONTAINERS_CONF:=$KVMOPS_CACHE/podman/containers.conf}"
: "${CONTAINERS_STORAGE_CONF:=$KVMOPS_CACHE/podman/storage.conf}"
: "${ANSIBLE_COLLECTIONS_PATH:=$KVMOPS_BUILD/collections}"
# promtool extracted from Debian's prometheus package by setup.sh (no Prometheus server installed)
: "${KVMOPS_PROMTOOL:=$KVMOPS_CACHE/prometheus/promtool}"
# Debian's ifupdown2 package unpacked by setup.sh (not installed): the bridge tests run its syntax check
: "${KVMOPS_IFUPDOWN2:=$KVMOPS_CACHE/ifupdown2}"
# copies of the collection for ansible-test and the Python 3.9 tier: outside the checkout, because
# ansible-test lists files with git and would see nothing under the git-ignored .build/
: "${KVMOPS_TREES:=/tmp/kvmops-fleet-trees/$(printf '%s' "$KVMOPS_REPO" | sha256sum | cut -c1-12)}"
export KVMOPS_REPO KVMOPS_CACHE KVMOPS_VENV KVMOPS_BUILD KVMOPS_TREES KVMOPS_PODMAN_RUNROOT KVMOPS_PROMTOOL
export KVMOPS_IFUPDOWN2
export CONTAINERS_CONF CONTAINERS_STORAGE_CONF ANSIBLE_COLLECTIONS_PATH
case ":$PATH:" in
  *":$KVMOPS_VENV/bin:"*) ;;
  *) PATH="$KVMOPS_VENV/bin:$PATH" ;;
esac
export PATH
