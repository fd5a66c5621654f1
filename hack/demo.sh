#!/usr/bin/env bash
# The main job on a local lab: set everything up, bring up real QEMU (TCG) VMs that are paused for
# different reasons (host filesystem full, I/O error from the storage, guest watchdog, paused by a
# user) next to running ones, diagnose them with the kvmops.fleet.diagnose playbook (a table per host
# and the fleet report: JSON, Markdown, HTML under .build/demo-report/), and clean up.
#
#   hack/demo.sh            (make demo)
#   KVMOPS_DEMO_KEEP=1 hack/demo.sh    leave the lab up afterwards; remove it with `make lab-down`
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/setup.sh"
# shellcheck source=hack/env.sh
source "$here/env.sh"
cd "$KVMOPS_REPO"
export PYTHONPATH=$KVMOPS_REPO/tests

lab_down() { python -m kvmlab down; }
if [ "${KVMOPS_DEMO_KEEP:-0}" != 1 ]; then
  trap lab_down EXIT
fi

echo "== bringing up the lab (real QEMU guests; the first run also fetches a Debian kernel)"
python -m kvmlab up running running user enospc eio watchdog

inventory=$KVMOPS_BUILD/demo-inventory.yml
mkdir -p "$KVMOPS_BUILD"
cat > "$inventory" <<INV
all:
  hosts:
    localhost:
      ansible_connection: local
      ansible_python_interpreter: $KVMOPS_VENV/bin/python
INV
report_dir=$KVMOPS_BUILD/demo-report
echo "== diagnosing: ansible-playbook -i $inventory kvmops.fleet.diagnose -e diagnostics_report_dir=$report_dir"
ANSIBLE_NOCOLOR=${ANSIBLE_NOCOLOR:-0} ansible-playbook -i "$inventory" kvmops.fleet.diagnose \
  -e "diagnostics_report_dir=$report_dir"
echo "== the fleet report (open the HTML page in a browser):"
for f in kvm-pause-report.html kvm-pause-report.md kvm-pause-report.json; do
  echo "   $report_dir/$f"
done
if [ "${KVMOPS_DEMO_KEEP:-0}" = 1 ]; then
  echo "== the lab is still up; remove it with: make lab-down"
fi
