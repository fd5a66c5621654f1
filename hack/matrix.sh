#!/usr/bin/env bash
# The ansible-core matrix: ansible-test sanity and the unit tests on each ansible-core release users run
# besides the project venv's 2.19 (which the sanity and unit tiers test). One line per version with its
# result and wall seconds; exits non-zero when any version fails.
#
#   hack/matrix.sh              every version in MATRIX below
#   hack/matrix.sh 2.21.5       only these (each must be in MATRIX, which names its Python)
#   hack/matrix.sh 2.22.0rc1=3.13   any other release on PyPI, with the Python X.Y to run it on
#
# Each version gets its own venv, cached under $KVMOPS_CACHE/matrix/<version>-<hash of its inputs>
# (Python, the pip lines below, the get-pip stand-in): rebuilt only when an input changes, older ones
# removed. It holds that ansible-core and what the unit tests import (lines taken from
# requirements-dev.txt), nothing else.
#
# ansible-core 2.20 and later run only on Python >= 3.12 (their wheels say Requires-Python >=3.12) and
# Debian 12 ships 3.11, so their venvs use the newest matching interpreter found as /usr/bin/pythonX.Y
# or in pyenv's versions/X.Y.*; a version whose Python is missing FAILS (it is never skipped).
# Sanity keeps --python 3.11: there 3.11 is a target-only Python (the modules' side, as on hosts), and
# the controller-side tests run on the venv's own Python.
#
# Unit tests left out here (they pass in the main venv's unit tier), each for a reason:
#   none today. (Add a path to UNIT_EXCLUDE with the reason beside it.)
#
# Bump a version: `pip index versions ansible-core --python-version 3.12` lists the releases.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/env.sh
source "$here/env.sh"
cd "$KVMOPS_REPO"

# ansible-core version -> Python X.Y of its venv. 2.20: the series after the main venv's 2.19, on its
# oldest controller Python (3.12, Ubuntu 24.04's); 2.21: the newest release on PyPI, on the EE's Python
# (3.13, Fedora 42's). 2.22 is at rc1 and devel is only on GitHub, which this machine cannot reach.
declare -A MATRIX=([2.20.10]=3.12 [2.21.5]=3.13)
ORDER=(2.20.10 2.21.5)
# requirement names the unit tests import, with their specifiers from requirements-dev.txt
UNIT_REQUIREMENTS=(pytest libvirt-python markdown-it-py)
UNIT_EXCLUDE=()

log() { printf '[matrix] %s\n' "$*" >&2; }

# the requirement lines of requirements-dev.txt for the names above (exact name, any specifier)
unit_requirements() {
  local name line found
  for name in "${UNIT_REQUIREMENTS[@]}"; do
    found=
    while IFS= read -r line; do
      line=${line%%#*}
      line=${line//[[:space:]]/}
      if [[ "$line" =~ ^${name}([<>=!~\[;].*)?$ ]]; then found=$line; fi
    done < requirements-dev.txt
    if [ -z "$found" ]; then
      log "requirements-dev.txt has no line for $name"
      return 1
    fi
    printf '%s\n' "$found"
  done
}

# /usr/bin/pythonX.Y, else the newest pyenv build of X.Y
find_python() {
  local want=$1 root cand best=
  if [ -x "/usr/bin/python$want" ]; then
    echo "/usr/bin/python$want"
    return 0
  fi
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for cand in "$root/versions/$want".*/bin/"python$want"; do
    [ -x "$cand" ] && best=$cand
  done
  [ -n "$best" ] && echo "$best"
}

# prints the venv path; builds it when missing
ensure_venv() {
  local version=$1 python=$2 reqs key venv
  mapfile -t reqs < <(unit_requirements)
  key=$({
    echo "ansible-core==$version"
    printf '%s\n' "${reqs[@]}"
    "$python" -c 'import sys; print(sys.version)'
    realpath "$python"
    cat "$here/get_pip_standin.py"
  } | sha256sum | cut -c1-16)
  venv=$KVMOPS_CACHE/matrix/$version-$key
  if [ ! -e "$venv/.complete" ]; then
    log "$version: new venv $venv ($python)"
    rm -rf "$venv"
    mkdir -p "$KVMOPS_CACHE/matrix"
    "$python" -m venv "$venv"
    # (the machine's pip config may name local indexes that are absent: drop that noise, keep errors)
    "$venv/bin/pip" install -q "ansible-core==$version" "${reqs[@]}" 2>&1 \
      | grep -v "^WARNING: Location 'file:" >&2 || true
    "$venv/bin/python" -c 'import ansible, ansible_test, libvirt, markdown_it, pytest' >&2
    touch "$venv/.complete"
    # older venvs of the same version (other inputs) are garbage now
    find "$KVMOPS_CACHE/matrix" -mindepth 1 -maxdepth 1 -name "$version-*" ! -path "$venv" \
      -exec rm -rf {} +
  fi
  echo "$venv"
}

# runs sanity and unit for one version (both, also when the first fails); prints the verdict
run_version() {
  local version=$1 python venv tree start failed=() times=() ignore=() path
  start=$SECONDS
  if ! python=$(find_python "${MATRIX[$version]}"); then
    log "$version: no Python ${MATRIX[$version]} (/usr/bin/python${MATRIX[$version]} or pyenv's versions/)"
    echo "FAILED (no Python ${MATRIX[$version]})"
    return 1
  fi
  if ! venv=$(ensure_venv "$version" "$python"); then
    echo "FAILED (venv)"
    return 1
  fi
  times+=("venv $((SECONDS - start))s")
  # ansible-test bootstraps pip in its per-test venvs through the stand-in, named for the pip
  # version this ansible-test pins (get_pip_24_2.py for 2.19, get_pip_25_2.py for 2.20 and 2.21)
  # Its own HOME for ansible-test (~/.ansible/test: the stand-in and the sanity venvs, named by a hash of
  # their pip commands, the same for two versions that pin the same linter): the versions run side by side
  # and must not build one venv at once. pyenv's shims find their root through HOME unless told.
  local home=$KVMOPS_CACHE/matrix/home-$version pyroot
  pyroot=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  mkdir -p "$home"
  if ! HOME=$home "$venv/bin/python" "$here/get_pip_standin.py" --install >&2 ||
    ! tree=$("$here/collection-tree.sh" "$KVMOPS_TREES/matrix-$version"); then
    echo "FAILED (get-pip stand-in or collection tree)"
    return 1
  fi
  log "$version: ansible-test sanity"
  start=$SECONDS
  (cd "$tree" && HOME=$home PYENV_ROOT=$pyroot PATH="$venv/bin:$PATH" \
    ansible-test sanity --python 3.11 --requirements --color no) >&2 ||
    failed+=(sanity)
  times+=("sanity $((SECONDS - start))s")
  log "$version: unit"
  start=$SECONDS
  for path in "${UNIT_EXCLUDE[@]}"; do ignore+=(--ignore "$path"); done
  # as strict as the unit tier: a skipped test fails the run
  KVMOPS_FAIL_ON_SKIP=1 "$venv/bin/python" -m pytest -q tests/unit "${ignore[@]}" >&2 || failed+=(unit)
  times+=("unit $((SECONDS - start))s")
  if [ "${#failed[@]}" -gt 0 ]; then
    local IFS=,
    echo "FAILED: ${failed[*]} (${times[*]})"
    return 1
  fi
  local IFS=,
  echo "passed (${times[*]})"
}

[ "$#" -gt 0 ] || set -- "${ORDER[@]}"
versions=()
for arg in "$@"; do
  if [[ "$arg" =~ ^([0-9][0-9a-z.]*)=(3\.[0-9]+)$ ]]; then
    MATRIX[${BASH_REMATCH[1]}]=${BASH_REMATCH[2]}
    arg=${BASH_REMATCH[1]}
  elif [ -z "${MATRIX[$arg]:-}" ]; then
    echo "matrix: unknown ansible-core version '$arg' (${ORDER[*]}, or VERSION=PYTHON_X.Y)" >&2
    exit 2
  fi
  versions+=("$arg")
done

declare -a LINES=()
main=$("$KVMOPS_VENV/bin/python" -c 'from ansible.release import __version__; print(__version__)' 2>/dev/null) ||
  main="(not set up: hack/setup.sh)"
LINES+=("$(printf 'ansible-core %-8s %5s  %s' "$main" - "main venv $KVMOPS_VENV: the sanity and unit tiers")")
# The versions run side by side (each has its own venv, collection tree and ansible-test venvs): sanity is
# mostly one process at a time, so two versions fill the two cores instead of taking turns. Each version's
# output goes to its own log, printed whole when it is done, so the two never interleave.
rc=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
declare -A PIDS=()
for version in "${versions[@]}"; do
  (
    start=$SECONDS
    verdict=$(run_version "$version" 2>"$work/$version.log") || status=1
    printf 'ansible-core %-8s %4ds  %s\n' "$version" $((SECONDS - start)) "$verdict" >"$work/$version.line"
    exit "${status:-0}"
  ) &
  PIDS[$version]=$!
done
for version in "${versions[@]}"; do
  wait "${PIDS[$version]}" || rc=1
  log "===== $version ====="
  cat "$work/$version.log" >&2
  LINES+=("$(cat "$work/$version.line" 2>/dev/null || echo "ansible-core $version  FAILED (no verdict)")")
done
printf '\n'
printf '%s\n' "${LINES[@]}"
exit "$rc"
