#!/usr/bin/env bash
# Build (or find cached) every image the test tiers boot, and say how long each took:
#   hack/images.sh [fleet] [hypervisor] [vm]     (no argument: all three)
# fleet:      registry-less podman fleet images, Debian 12, 11 (py39 tier) and 13 (hack/fleet-image.sh)
# hypervisor: those images with kvmops.fleet.hypervisor already applied (hack/hypervisor-image.sh)
# vm:         the vmlab image the vm tier's shared fleets boot (python -m vmlab build)
# Every builder keys its cache on its inputs, so a warm run takes seconds. hack/tiers.sh starts this in the
# background while lint, sanity and the unit tiers run, and waits for it before the first tier that boots one.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
[ "$#" -gt 0 ] || set -- fleet hypervisor vm
step() {
  local name=$1 start=$SECONDS
  shift
  "$@" >/dev/null
  printf '[images] %-24s %4d s\n' "$name" $((SECONDS - start))
}
for what in "$@"; do
  case $what in
    fleet)
      step "fleet debian 12" "$here/fleet-image.sh" bookworm
      step "fleet debian 11" "$here/fleet-image.sh" bullseye
      step "fleet debian 13" "$here/fleet-image.sh" trixie ;;
    hypervisor)
      step "hypervisor debian 12" "$here/hypervisor-image.sh" 12
      step "hypervisor debian 13" "$here/hypervisor-image.sh" 13 ;;
    vm)
      step "vmlab hypervisor variant" env PYTHONPATH="$KVMOPS_REPO/tests" python -m vmlab build --variant hypervisor ;;
    *) echo "images: unknown set '$what' (fleet, hypervisor, vm)" >&2; exit 2 ;;
  esac
done
