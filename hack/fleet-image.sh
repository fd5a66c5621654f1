#!/usr/bin/env bash
# Build a systemd fleet-host image for podman without any container registry:
#   debootstrap (Debian's packages) -> rootfs tarball (cached outside the repo) -> podman import.
#
#   hack/fleet-image.sh [bookworm|trixie|bullseye]
#
# bookworm (Debian 12) and trixie (Debian 13) are fleet hosts for molecule scenarios; bullseye
# (Debian 11) carries Python 3.9, the oldest Python our modules must run on (the RHEL 9 host floor).
# The tarball is rebuilt only when this script or the package list changes; the podman image only
# when it is missing or older than the tarball. Prints the image name on stdout.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"

suite=${1:-bookworm}
mirror=${KVMOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
case "$suite" in
  bookworm) tag=12 ;;
  trixie) tag=13 ;;
  bullseye) tag=11 ;;
  *) echo "fleet-image: unknown suite '$suite' (bookworm, trixie or bullseye)" >&2; exit 2 ;;
esac
image=localhost/kvmops-fleet-debian:$tag
packages=systemd,systemd-sysv,dbus,python3,python3-apt,openssh-server,iproute2,iputils-ping,procps,sudo,ca-certificates,kmod,less,apt-utils
if [ "$suite" = bullseye ]; then
  packages=$packages,python3-pytest
fi

images_dir=$KVMOPS_CACHE/images
mkdir -p "$images_dir" "$KVMOPS_CACHE/debootstrap-$suite"
key=$( (cat "$0"; echo "$packages $mirror") | sha256sum | cut -c1-12)
tarball=$images_dir/debian-$suite-$key.tar

log() { printf '[fleet-image] %s\n' "$*" >&2; }

if [ ! -s "$tarball" ]; then
  t0=$SECONDS
  rootfs=$(mktemp -d "$images_dir/rootfs-$suite.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap $suite (cold build, about a minute)"
  debootstrap --variant=minbase --cache-dir="$KVMOPS_CACHE/debootstrap-$suite" \
    --include="$packages" "$suite" "$rootfs" "$mirror" >&2
  security=${mirror%/debian}/debian-security
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$security" "$suite" > "$rootfs/etc/apt/sources.list"
  # A download pool shared by all test containers (mounted at /var/cache/kvmops-apt-pool when a
  # scenario wants it). It cannot simply be mounted over /var/cache/apt/archives: apt locks that
  # directory, so two containers installing at once fail. Instead apt hooks link pooled .debs into
  # the container's own archive after `apt-get update`, and copy new downloads into the pool before
  # dpkg runs (atomically: temp file + rename).
  cat > "$rootfs/usr/local/sbin/kvmops-apt-pool" <<'POOL'
#!/bin/sh
# kvmops-apt-pool link|save: share downloaded .debs with other test containers (see apt.conf.d)
pool=/var/cache/kvmops-apt-pool
archives=/var/cache/apt/archives
[ -d "$pool" ] && [ -w "$pool" ] || exit 0
case "$1" in
  link)
    for deb in "$pool"/*.deb; do
      [ -e "$deb" ] || continue
      [ -e "$archives/${deb##*/}" ] || ln -s "$deb" "$archives/${deb##*/}"
    done ;;
  save)
    for deb in "$archives"/*.deb; do
      [ -f "$deb" ] && [ ! -L "$deb" ] || continue
      [ -e "$pool/${deb##*/}" ] && continue
      cp "$deb" "$pool/.${deb##*/}.$$" && mv "$pool/.${deb##*/}.$$" "$pool/${deb##*/}"
    done ;;
esac
exit 0
POOL
  chmod 0755 "$rootfs/usr/local/sbin/kvmops-apt-pool"
  cat > "$rootfs/etc/apt/apt.conf.d/80kvmops-apt-pool" <<'CONF'
APT::Update::Post-Invoke { "/usr/local/sbin/kvmops-apt-pool link"; };
DPkg::Pre-Invoke { "/usr/local/sbin/kvmops-apt-pool save"; };
Binary::apt::APT::Keep-Downloaded-Packages "true";
CONF
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/*
  # empty lists dated 1970: apt's cache_valid_time must see them as stale so update_cache runs
  touch -d 1970-01-02 "$rootfs/var/lib/apt/lists"
  echo kvmops-fleet > "$rootfs/etc/hostname"
  : > "$rootfs/etc/machine-id"          # systemd makes one per container at boot
  rm -f "$rootfs"/etc/ssh/ssh_host_*    # per-container host keys, generated at first boot
  cat > "$rootfs/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate missing SSH host keys
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
UNIT
  ln -sf /etc/systemd/system/ssh-hostkeys.service \
    "$rootfs/etc/systemd/system/multi-user.target.wants/ssh-hostkeys.service"
  tar -C "$rootfs" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
  trap - EXIT
  # older tarballs of this suite are stale now
  find "$images_dir" -maxdepth 1 -name "debian-$suite-*.tar" ! -name "$(basename "$tarball")" -delete
  log "rootfs tarball built in $((SECONDS - t0)) s: $tarball"
fi

current=$(podman image inspect --format '{{index .Labels "org.kvmops.rootfs"}}' "$image" 2>/dev/null || true)
if [ "$current" != "$key" ]; then
  log "podman import $image"
  podman image rm -f "$image" >/dev/null 2>&1 || true
  podman import --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
    --change "LABEL org.kvmops.rootfs=$key" "$tarball" "$image" >/dev/null
fi
echo "$image"
