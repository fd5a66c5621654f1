#!/usr/bin/env bash
# The virsh loop a user would write: the paused domains, then for each its state reason and disk errors.
#   virsh_loop.sh URI [session|per-call]
# session (default): the per-domain commands go through ONE virsh connection (stdin). per-call: one virsh
# process per command, as a naive loop does; with libvirt's test driver every new connection re-parses the
# whole node file (~1 s per 1,000 domains), so per-call is only fair against a real driver (qemu:///system).
set -euo pipefail
uri=$1
mode=${2:-session}
mapfile -t names < <(virsh -r -c "$uri" list --state-paused --name | sed '/^$/d')
if [ "$mode" = per-call ]; then
  for n in "${names[@]}"; do
    virsh -r -c "$uri" domstate --reason "$n"
    virsh -r -c "$uri" domblkerror "$n" || true
  done
else
  for n in "${names[@]}"; do
    printf 'domstate --reason %s\ndomblkerror %s\n' "$n" "$n"
  done | virsh -r -c "$uri" || true
fi
echo "paused: ${#names[@]}"
