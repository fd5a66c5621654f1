#!/usr/bin/env bash
# Set up everything the tests and the demo need on a Debian 12 machine, as root, idempotently:
#   apt packages (only those missing), the project venv (.venv, rebuilt when requirements change),
#   rootful podman configured for this machine kind without touching the global podman config,
#   and ansible-test's get-pip stand-in (see docs/docsite/rst/guide_development.rst).
# Fast when everything is in place (a few seconds); safe to run any number of times.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"

log() { printf '[setup] %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (apt, podman, loop devices and libvirtd need it)" >&2
  exit 1
fi
if ! grep -qs '^VERSION_ID="12"' /etc/os-release || ! grep -qs '^ID=debian' /etc/os-release; then
  log "warning: only Debian 12 is supported as a test machine; continuing anyway"
fi

# --- apt packages -------------------------------------------------------------------------------
APT_PACKAGES=(
  # the lab: libvirt + QEMU (TCG), guest kernels are extracted from Debian packages
  libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu qemu-system-x86 qemu-utils
  qemu-block-extra busybox-static e2fsprogs cpio
  # storage that stops answering: a FUSE mount whose daemon is frozen (SIGSTOP) stands in for dead hard NFS
  bindfs
  # libvirt-python builds against these; the venv uses Debian's python 3.11
  libvirt-dev pkg-config python3-dev python3-venv gcc
  # fleet hosts: rootful podman with runc, images built with debootstrap (no registry)
  podman runc conmon netavark aardvark-dns fuse-overlayfs debootstrap
  # nested real-kernel VMs (tests/vmlab) and misc tools the tiers call
  openssh-client iproute2 procps git make shellcheck rsync xz-utils
  # kvm_benchmark's integration test runs the real tools (tests/integration/modules/test_kvm_benchmark_local.py)
  fio stress-ng
  # the dr role's DRBD configurations are rendered and checked with the real drbdadm (8.4 and 9 syntax) in unit tests
  drbd-utils
  # the fleet report's HTML is tested in headless Chromium (fonts for a readable screenshot)
  chromium fonts-dejavu-core
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  # refresh the package lists only when they are missing or older than a day
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null | head -n 1)" ]; then
    apt-get update -q -o DPkg::Lock::Timeout=600
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o DPkg::Lock::Timeout=600 "${missing[@]}"
else
  log "apt: all ${#APT_PACKAGES[@]} packages present"
fi

# --- /dev/kvm as udev leaves it on any Debian host with QEMU installed (root:kvm 0660). This machine
# kind has no udev, so a fresh machine has root:root 0600; fleet containers then cannot give their kvm
# group the device's gid (gid 0 is taken) and libvirt re-probes QEMU at every define.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  kvm_gid=$(getent group kvm | cut -d: -f3)
  if [ "$(stat -c '%g %a' /dev/kvm)" != "$kvm_gid 660" ]; then
    log "/dev/kvm: root:kvm 0660 (as udev's rule for QEMU would set it)"
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
  fi
fi

# --- promtool (alert rule tests): taken from Debian's prometheus package without installing it, so no
# Prometheus server is started or enabled on this machine. Exported as $KVMOPS_PROMTOOL by env.sh.
if [ ! -x "$KVMOPS_PROMTOOL" ]; then
  log "promtool: extracting from Debian's prometheus package into ${KVMOPS_PROMTOOL%/*}"
  tmp=$(mktemp -d)
  chown _apt "$tmp" 2>/dev/null || true  # apt downloads as _apt when it can write the directory
  (cd "$tmp" && apt-get download -q prometheus >/dev/null && dpkg-deb -x prometheus_*.deb root)
  mkdir -p "${KVMOPS_PROMTOOL%/*}"
  install -m 0755 "$tmp/root/usr/bin/promtool" "$KVMOPS_PROMTOOL.new"
  mv "$KVMOPS_PROMTOOL.new" "$KVMOPS_PROMTOOL"
  rm -rf "$tmp"
fi
"$KVMOPS_PROMTOOL" --version >/dev/null

# --- ifupdown2: its syntax check on the bridge role's ifupdown files (tests/unit/roles/test_bridge_ifupdown2.py),
# from Debian's package unpacked, not installed (it would replace nothing here, but the machine's network stays
# untouched); the tests run it in a mount and network namespace of their own. Exported by env.sh.
if [ ! -e "$KVMOPS_IFUPDOWN2/usr/share/ifupdown2/__main__.py" ]; then
  log "ifupdown2: extracting Debian's package into $KVMOPS_IFUPDOWN2"
  tmp=$(mktemp -d)
  chown _apt "$tmp" 2>/dev/null || true
  (cd "$tmp" && apt-get download -q ifupdown2 >/dev/null && dpkg-deb -x ifupdown2_*.deb root)
  chmod 0755 "$tmp/root/usr/share/ifupdown2/__main__.py"  # what /sbin/ifup runs: unpacked 0644
  rm -rf "$KVMOPS_IFUPDOWN2"
  mkdir -p "${KVMOPS_IFUPDOWN2%/*}"
  mv "$tmp/root" "$KVMOPS_IFUPDOWN2"
  rm -rf "$tmp"
fi

# --- project venv ---------------------------------------------------------------------------------
req_hash=$(cat "$KVMOPS_REPO/requirements-dev.txt" /usr/bin/python3 2>/dev/null | sha256sum | cut -c1-16)
stamp="$KVMOPS_VENV/.kvmops-requirements-$req_hash"
if [ ! -e "$stamp" ]; then
  log "venv: creating $KVMOPS_VENV (requirements changed or missing)"
  rm -rf "$KVMOPS_VENV"
  /usr/bin/python3 -m venv "$KVMOPS_VENV"
  # (the machine's pip config may name local indexes that are absent: drop that noise, keep errors;
  # the import check below is what decides success)
  "$KVMOPS_VENV/bin/pip" install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location 'file:" || true
  "$KVMOPS_VENV/bin/pip" install -q -r "$KVMOPS_REPO/requirements-dev.txt" 2>&1 \
    | grep -v "^WARNING: Location 'file:" || true
  "$KVMOPS_VENV/bin/python" -c 'import ansible, ansible_test, molecule, libvirt, pytest, testinfra, antsibull_docs'
  touch "$stamp"
else
  log "venv: up to date ($KVMOPS_VENV)"
fi

# --- podman: this machine kind needs runc and explicit ulimits (see docs) -------------------------
mkdir -p "$KVMOPS_CACHE/podman/storage" "$KVMOPS_CACHE/podman/tmp" "$KVMOPS_CACHE/podman/networks" \
  "$KVMOPS_CACHE/apt-pool" "$KVMOPS_PODMAN_RUNROOT"
cat > "$CONTAINERS_STORAGE_CONF.tmp" <<EOF
# written by hack/setup.sh: podman storage for kvmops.fleet tests only
[storage]
driver = "overlay"
graphroot = "$KVMOPS_CACHE/podman/storage"
runroot = "$KVMOPS_PODMAN_RUNROOT"
EOF
cat > "$CONTAINERS_CONF.tmp" <<EOF
# written by hack/setup.sh: podman engine settings for kvmops.fleet tests only
[containers]
# no CAP_SYS_RESOURCE here (hard nofile limit 20000) and pid_max 32768: podman's defaults fail
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
# hybrid cgroup layout: crun refuses it, runc works
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$KVMOPS_CACHE/podman/tmp"
[network]
network_config_dir = "$KVMOPS_CACHE/podman/networks"
EOF
mv "$CONTAINERS_STORAGE_CONF.tmp" "$CONTAINERS_STORAGE_CONF"
mv "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"

# --- ansible-test sanity: a get-pip stand-in (the real one is downloaded from a host not reachable
# here). ansible-test looks for ~/.ansible/test/cache/get_pip_<version>.py first.
"$KVMOPS_VENV/bin/python" "$here/get_pip_standin.py" --install
# --- the checkout as ansible_collections/kvmops/fleet (ANSIBLE_COLLECTIONS_PATH points here) ------
mkdir -p "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/kvmops"
ln -sfn "$KVMOPS_REPO" "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/kvmops/fleet"
log "done"
