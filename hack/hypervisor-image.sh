#!/usr/bin/env bash
# A fleet-host image that kvmops.fleet.hypervisor has already set up, for the scenarios whose subject is
# not the installation (molecule scenario diagnostics, whose dependency step runs this script): their
# hosts start as the role leaves a host, instead of installing libvirt and QEMU into every container
# again.
#
#   hack/hypervisor-image.sh [12|13]
#
# Built from localhost/kvmops-fleet-debian:TAG (hack/fleet-image.sh) by running the role with the
# settings of hack/hypervisor-image.yml in a systemd container, which is then stopped and committed.
# The image is labelled with a key over the tag, the base image's rootfs key, this script and that
# playbook without their comment lines, and every file of the role: when any of them changes, the
# image is rebuilt (70-80 s); otherwise this takes a fraction of a second. The installation itself is
# proved from the bare images by the molecule scenario hypervisor (Debian 12 and 13 side by side).
# Prints the image name on stdout.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"

tag=${1:-12}
case "$tag" in
  12) suite=bookworm ;;
  13) suite=trixie ;;
  *) echo "hypervisor-image: unknown tag '$tag' (12 or 13)" >&2; exit 2 ;;
esac
log() { printf '[hypervisor-image] %s\n' "$*" >&2; }

base=$("$here/fleet-image.sh" "$suite")
image=localhost/kvmops-fleet-hypervisor:$tag
base_key=$(podman image inspect --format '{{index .Labels "org.kvmops.rootfs"}}' "$base")
role_key=$(cd "$KVMOPS_REPO" && find roles/hypervisor -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
# comment lines do not count: rewording them must not rebuild every machine's images
key=$( (echo "$tag $base_key"; grep -hv '^[[:space:]]*#' "$0" "$here/hypervisor-image.yml"; echo "$role_key") \
  | sha256sum | cut -c1-12)

current=$(podman image inspect --format '{{index .Labels "org.kvmops.hypervisor"}}' "$image" 2>/dev/null || true)
if [ "$current" = "$key" ]; then
  echo "$image"
  exit 0
fi

t0=$SECONDS
name=kvmops-hvimage-$tag-$$
cleanup() { podman rm -f -t 0 "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT
mkdir -p "$KVMOPS_CACHE/apt-pool"
log "building $image from $base with kvmops.fleet.hypervisor (about two minutes)"
# the same container settings as the scenarios that use the image (privileged: libvirtd's cgroups)
podman run -d --name "$name" --hostname kvmops-fleet --privileged --systemd=always \
  --ulimit nofile=20000:20000 --ulimit nproc=32768:32768 \
  -v "$KVMOPS_CACHE/apt-pool:/var/cache/kvmops-apt-pool" "$base" /sbin/init >/dev/null
mkdir -p "$KVMOPS_BUILD"
run_log=$KVMOPS_BUILD/hypervisor-image-$tag.log
if ! ANSIBLE_NOCOLOR=1 ansible-playbook \
    -i "$name," -c containers.podman.podman -e ansible_python_interpreter=/usr/bin/python3 \
    "$here/hypervisor-image.yml" > "$run_log" 2>&1; then
  tail -n 60 "$run_log" >&2
  log "kvmops.fleet.hypervisor failed in $name (whole output: $run_log)"
  exit 1
fi
# what must not be shared by every container made from the image: host keys, machine identity, logs,
# libvirt's runtime state; the apt pool's links point into a mount that is not committed
podman exec "$name" sh -c 'systemctl stop libvirtd.service libvirtd.socket libvirtd-ro.socket \
    libvirtd-admin.socket virtlogd.service virtlogd.socket virtlockd.socket 2>/dev/null || true
  rm -f /etc/ssh/ssh_host_* /var/lib/dbus/machine-id
  : > /etc/machine-id
  find /var/cache/apt/archives -maxdepth 1 -type l -delete
  rm -rf /var/log/journal/* /var/log/libvirt/qemu/*'
podman stop -t 30 "$name" >/dev/null
# the commit moves the name to the new image; the old one is removed unless containers still use it
# (another run's scenario: never "rm -f", which would remove those containers with it)
old_id=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
podman commit --quiet --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL org.kvmops.hypervisor=$key" "$name" "$image" >/dev/null
if [ -n "$old_id" ]; then
  podman image rm "$old_id" >/dev/null 2>&1 || true
fi
log "built $image in $((SECONDS - t0)) s (key $key)"
echo "$image"
