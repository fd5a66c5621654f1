#!/usr/bin/env bash
# Run test tiers in order, time each one, stop at the first failure, and print a table of wall
# times against each tier's budget at the end (also when a tier failed).
#
#   hack/tiers.sh lint sanity unit py39 integration vm molecule
#
# The budgets keep the full suite under 45 minutes on a 2-core machine; a tier over budget is
# reported (not failed: tests assert behaviour, timings are for people).
# The tier_* functions are called indirectly, as "tier_$name":
# shellcheck disable=SC2317
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
cd "$KVMOPS_REPO" || exit 1

declare -A BUDGET=([lint]=180 [sanity]=420 [unit]=120 [py39]=180 [integration]=900 [vm]=480 [molecule]=900)

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
tier_py39() { "$here/py39.sh"; }
tier_integration() { run_pytest integration tests/integration --ignore=tests/integration/vm; }
tier_vm() { run_pytest vm tests/integration/vm; }
tier_molecule() { (cd tests && molecule test --all); }

declare -a NAMES=() TIMES=() RESULTS=()
summary() {
  local total=0 i
  printf '\n%-12s %8s %8s  %s\n' tier "wall(s)" "budget" result
  for i in "${!NAMES[@]}"; do
    total=$((total + TIMES[i]))
    local note=${RESULTS[i]}
    if [ "${TIMES[i]}" -gt "${BUDGET[${NAMES[i]}]}" ]; then note="$note (over budget)"; fi
    printf '%-12s %8d %8d  %s\n' "${NAMES[i]}" "${TIMES[i]}" "${BUDGET[${NAMES[i]}]}" "$note"
  done
  printf '%-12s %8d %8d\n' total "$total" 2700
}

[ "$#" -gt 0 ] || set -- lint sanity unit py39 integration vm molecule
rc=0
for tier in "$@"; do
  if ! declare -F "tier_$tier" >/dev/null; then
    echo "unknown tier '$tier' (lint sanity unit py39 integration vm molecule)" >&2
    exit 2
  fi
  printf '\n===== tier %s =====\n' "$tier"
  start=$SECONDS
  "tier_$tier"
  trc=$?
  NAMES+=("$tier"); TIMES+=($((SECONDS - start)))
  if [ "$trc" -eq 0 ]; then RESULTS+=(passed); else RESULTS+=("FAILED (rc $trc)"); rc=1; break; fi
done
summary
exit "$rc"
