#!/usr/bin/env bash
# Run test tiers in order, time each one, stop at the first failure, and print a table of wall
# times against each tier's budgets at the end (also when a tier failed).
#
#   hack/tiers.sh [--images] lint sanity unit matrix py39 integration vm molecule
#
# --images builds (or finds cached) every image in the background while the first tiers run (they need
# none and the builds are mostly downloads and unpacking), and waits for it before the first tier that
# boots an image. VM_K=<name> runs only the vm tier's scenarios whose file or directory name contains it
# (make vm K=<name>).
#
# Budgets: each tier has one for a warm machine (image caches filled) and one for a cold one (empty image
# cache, new venvs); the warm ones sum to at most 45 minutes and the cold ones to at most 60, including the
# planned rows for the real-kernel scenarios of the roles still to come, so those have their room reserved
# (docs/docsite/rst/guide_development.rst, "Test tiers"). A tier over budget is reported, not failed: tests
# assert behaviour, timings are for people.
# The tier_* functions are called indirectly, as "tier_$name":
# shellcheck disable=SC2317
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
cd "$KVMOPS_REPO" || exit 1

ORDER=(setup images lint sanity unit matrix py39 integration vm molecule)
declare -A WARM=([setup]=30 [images]=15 [lint]=45 [sanity]=60 [unit]=65 [matrix]=150 [py39]=10
                 [integration]=780 [vm]=1750 [molecule]=650)
declare -A COLD=([setup]=120 [images]=480 [lint]=45 [sanity]=90 [unit]=65 [matrix]=200 [py39]=10
                 [integration]=800 [vm]=1750 [molecule]=650)
# Room kept for the real-kernel scenarios still to come, each on the shared vmlab pool (no boot of its own:
# the HV2 fleet is booted once for the whole vm tier).
# The vm row holds the bridge role's scenarios (test_bridge_networkd.py on HV2: 6 tests, 273 s with the fleet's
# boot; test_bridge_providers.py on PROVIDERS: 4 tests, 253 s with its boot, mostly real revert timers) and the
# tuning role's (test_tuning.py on HV2: 2 tests, 144 s with the boot, about 80 s without; the reserved vm:tuning
# row went into it). The whole tier took 605 s before the providers and tuning scenarios (fresh clone at c07bda1,
# 2026-12-05); 900 s is that plus their measured time without the boots they share (PROVIDERS is booted by
# test_vmlab_providers.py anyway). The benchmark's (test_benchmark.py on HV2: 2 tests, 150 s with the boot, 107 s
# without; the reserved vm:benchmark row went into it): 900 -> 1020 s. With the real tuned in the image the tuning
# scenarios take 208 s with the boot (was 121 s: tuned's start in the apply, and at the reboot): 1020 -> 1110 s.
# The bond + VLAN scenario (test_bridge_bond.py on HV2: 4 tests, 239-253 s with the boot, about 200 s without)
# is in it too: 1110 -> 1310 s. The DRBD scenario (test_dr_drbd.py on HV2: 7 tests, 344 s with the boot, about
# 300 s without; the reserved vm:drbd row went into it): 1310 -> 1610 s. The libvirt networks in the networkd
# scenario (6 tests, 308 s with the boot, was 273 s: +35 s) and the serial rollout (test_bridge_serial.py on HV2: 2
# tests, 158 s with the 47 s boot + snapshot, about 110 s without): 1610 -> 1760 s.
# The thin-LVM forecast (test_pause_risk_thin.py on HV2: 1 test, 89.5 s with the 49 s boot + snapshot, about
# 40 s without): 1760 -> 1800 s. A whole vm tier at bda3c35 (make vm) took 1670 s with DRBD but before the libvirt
# networks, serial and thin-LVM tests (their deltas +191 s): 1800 -> 1900 s.
# The serial rollout moved to PROVIDERS with a third VM (ndhost, networkd: the 3-VM boot 68 s) as one three-host run
# (92 s + 13 s lease, was two 2-host runs on HV2) and SIGKILL on NetworkManager and ifupdown (45 + 40 s): 1900 -> 2000 s.
# The whole vm tier in CI=true .ci/run at 51540de (fresh clone, nothing else running): 69 tests in 2097 s: 2000 -> 2100 s.
# integration: + test_kvm_pause_risk.py (1 test, two TCG domains, 14.6-15.1 s).
# integration 715/735 -> 750/770 s: + the forecast in the report (test_report_forecast_lab.py, 2 tests, 19.9 s with the
# setup) and in the collector (test_collector_forecast.py, 10.9 s); the AWX slices (test_slicing.py, 30.8 s) and the
# whole tier in CI=true .ci/run at 51540de: 157 tests in 824 s: 750/770 -> 830/850 s.
# molecule: + tests/molecule/cluster (2 cluster nodes + a qnetd host; molecule test -s cluster: 249 s wall with both
# destroys, measured 2026-12-06): 600 -> 850 s. The three scenarios side by side (tier_molecule): 579 s, all
# passed (2026-12-06, nothing else running): 850 -> 650 s.
# matrix: the two versions side by side (hack/matrix.sh): 184 s cold (new venvs and sanity venvs), 128 s warm
# (2026-12-06): cold 330 -> 200 s.
# CI=true .ci/run at 3eb04c1 (fresh clone, image cache filled, nothing else running; 2026-12-06): unit 61 s (4,368
# tests): 60 -> 65 s; integration 157 tests in 753 s: 830/850 -> 780/800 s; vm 69 tests in 1668 s with the guests on
# qemu64,+pdpe1gb (was 2098 s on max): 2100 -> 1750 s; molecule 579 s; whole run 3,308 s (55.1 min).
# unit: 2,687 tests in 41-46 s (was 45).
# matrix cold: 316 s on a new machine with other runs beside it (2.20.10 138 s, 2.21.5 178 s; was 240).
# The sums of the budgets (planned rows included) are over the 2,700 s warm and 3,600 s cold aims; the
# measured cold run was 2,308 s before these scenarios (the total row of a run says what it took).
PLANNED=(vm:cluster)
WARM+=([vm:cluster]=150)
COLD+=([vm:cluster]=150)
# The images step overlaps lint..matrix, so a cold run pays only what is left of it when the first
# image-booting tier waits: the "images" budget is that wait.

# pytest exits 5 when it collected nothing: for a tier that must run tests that is a failure, and
# said so plainly instead of a bare exit code.
run_pytest() {
  local tier=$1; shift
  KVMOPS_FAIL_ON_SKIP=${KVMOPS_FAIL_ON_SKIP:-1} python -m pytest "$@"
  local rc=$?
  if [ "$rc" -eq 5 ]; then
    echo "tier $tier: pytest collected no tests ($*): a tier must run real tests" >&2
    return 1
  fi
  return "$rc"
}

tier_lint() {
  yamllint --strict . &&
    ruff check . &&
    ruff format --check plugins &&
    shellcheck -x hack/*.sh .ci/run &&
    ansible-lint --strict &&
    antsibull-changelog lint &&
    (cd "$ANSIBLE_COLLECTIONS_PATH/ansible_collections/kvmops/fleet" &&
      antsibull-docs lint-collection-docs --plugin-docs .)
}
tier_sanity() { "$here/sanity.sh"; }
tier_unit() { run_pytest unit tests/unit; }
tier_matrix() { "$here/matrix.sh"; }
tier_py39() { "$here/py39.sh"; }
# the slowest tests are listed at the end of the two long tiers: where their budgets go, for people
tier_integration() { run_pytest integration --durations=20 tests/integration --ignore=tests/integration/vm; }
tier_vm() {
  local paths=(tests/integration/vm) rc
  if [ -n "${VM_K:-}" ]; then
    mapfile -t paths < <(find tests/integration/vm -mindepth 1 -maxdepth 1 -name "*${VM_K}*" \
      \( -name 'test_*.py' -o -type d \) | sort)
    if [ "${#paths[@]}" -eq 0 ]; then
      echo "tier vm: no scenario matches K=$VM_K; there are:" >&2
      find tests/integration/vm -mindepth 1 -maxdepth 1 \( -name 'test_*.py' -o -type d \) -printf '  %f\n' | sort >&2
      return 2
    fi
  fi
  run_pytest vm --durations=30 "${paths[@]}"
  rc=$?
  # whatever the tests did, nothing of vmlab may outlive the tier: no VM, namespace, run or loop device
  if ! PYTHONPATH=tests python -m vmlab status --check; then
    echo "tier vm: vmlab left something on this machine (above)" >&2
    rc=1
  fi
  return "$rc"
}
# The scenarios run side by side, each its own `molecule test -s NAME` with its own containers, networks and
# ephemeral directory (no names shared; the apt pool they share is safe for concurrent installs, see
# hack/fleet-image.sh): much of a scenario is waiting (apt, systemd, podman exec), so they overlap. Each
# scenario's output is printed whole when it ends; the tier fails if any scenario failed, naming it.
tier_molecule() {
  local dir name rc=0 failed=()
  local -A pids=()
  dir=$(mktemp -d)
  for name in $(find tests/molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort); do
    (cd tests && exec molecule test -s "$name") >"$dir/$name.log" 2>&1 &
    pids[$name]=$!
  done
  for name in $(printf '%s\n' "${!pids[@]}" | sort); do
    if ! wait "${pids[$name]}"; then failed+=("$name"); rc=1; fi
    printf '\n----- molecule scenario %s -----\n' "$name"
    cat "$dir/$name.log"
  done
  rm -rf "$dir"
  [ "$rc" -eq 0 ] || echo "tier molecule: scenario(s) failed: ${failed[*]}" >&2
  return "$rc"
}

declare -A TIME=() RESULT=()
images_pid="" images_log="$KVMOPS_BUILD/images.log" images_start=0 images_waited=0
start_images() {
  mkdir -p "$KVMOPS_BUILD"
  images_start=$(date +%s)
  # the builder's own end time, so the table says how long it took, not when it was waited for
  { "$here/images.sh"; rc=$?; date +%s >"$images_log.end"; exit "$rc"; } >"$images_log" 2>&1 &
  images_pid=$!
  printf '\n===== images: building in the background (log: %s) =====\n' "$images_log"
}
wait_images() {
  [ -n "$images_pid" ] || return 0
  local t0=$SECONDS rc
  wait "$images_pid"
  rc=$?
  images_pid=""
  images_waited=$((SECONDS - t0))
  TIME[images]=$images_waited
  cat "$images_log"
  local built=$(($(cat "$images_log.end" 2>/dev/null || date +%s) - images_start))
  printf '===== images: built in %d s, of which the tiers waited %d s =====\n' "$built" "$images_waited"
  if [ "$rc" -ne 0 ]; then
    RESULT[images]="FAILED (rc $rc)"
    return 1
  fi
  RESULT[images]="passed (built in $built s, overlapped)"
}

summary() {
  local total=0 warm=0 cold=0 row
  printf '\n%-15s %8s %8s %8s  %s\n' tier "wall(s)" "warm" "cold" result
  for row in "${ORDER[@]}" "${PLANNED[@]}"; do
    warm=$((warm + WARM[$row])); cold=$((cold + COLD[$row]))
    if [ -n "${TIME[$row]:-}" ]; then
      total=$((total + TIME[$row]))
      local note=${RESULT[$row]}
      if [ "${TIME[$row]}" -gt "${COLD[$row]}" ]; then
        note="$note (over both budgets)"
      elif [ "${TIME[$row]}" -gt "${WARM[$row]}" ]; then
        note="$note (over the warm budget)"
      fi
      printf '%-15s %8d %8d %8d  %s\n' "$row" "${TIME[$row]}" "${WARM[$row]}" "${COLD[$row]}" "$note"
    elif [[ $row == vm:* ]]; then
      printf '%-15s %8s %8d %8d  %s\n' "$row" - "${WARM[$row]}" "${COLD[$row]}" "planned (room reserved)"
    fi
  done
  printf '%-15s %8d %8d %8d  (budgets of every row, planned included: at most 2700 warm, 3600 cold)\n' \
    total "$total" "$warm" "$cold"
}

with_images=0
if [ "${1:-}" = "--images" ]; then
  with_images=1
  shift
fi
[ "$#" -gt 0 ] || set -- lint sanity unit matrix py39 integration vm molecule
for tier in "$@"; do
  if ! declare -F "tier_$tier" >/dev/null; then
    echo "unknown tier '$tier' (lint sanity unit matrix py39 integration vm molecule)" >&2
    exit 2
  fi
done
[ -z "${KVMOPS_SETUP_SECONDS:-}" ] || { TIME[setup]=$KVMOPS_SETUP_SECONDS; RESULT[setup]=passed; }
[ "$with_images" -eq 0 ] || start_images
rc=0
for tier in "$@"; do
  case $tier in
    py39 | integration | vm | molecule)
      if ! wait_images; then rc=1; break; fi ;;
  esac
  printf '\n===== tier %s =====\n' "$tier"
  start=$SECONDS
  "tier_$tier"
  trc=$?
  TIME[$tier]=$((SECONDS - start))
  if [ "$trc" -eq 0 ]; then RESULT[$tier]=passed; else RESULT[$tier]="FAILED (rc $trc)"; rc=1; break; fi
done
if [ -n "$images_pid" ]; then  # a run that stopped early (or needed no image) still reaps its builder
  wait_images || rc=1
fi
summary
exit "$rc"
