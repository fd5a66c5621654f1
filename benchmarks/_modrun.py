# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run one Ansible module file as its own process, the way AnsiballZ would, and measure it.

    python _modrun.py COLLECTIONS_ROOT MODULE.py ARGS.json

The module's JSON goes to stdout as usual; one extra JSON line goes to stderr:
{"wall": s, "maxrss_self_kib": ..., "maxrss_children_kib": ...}. The module process's own peak is VmHWM of
/proc/self/status: getrusage(RUSAGE_SELF) would also count the RSS of the process that forked us before exec
(the benchmark itself, with subprocess' vfork). RUSAGE_CHILDREN is what the module forked and reaped
(kvm_pause_facts' bounded libvirt worker, a fork without exec: its own peak, shared pages included).
"""

from __future__ import annotations

import json
import resource
import runpy
import sys
import time


def main() -> None:
    started = time.monotonic()
    root, module, args = sys.argv[1:4]
    sys.path.insert(0, root)
    sys.argv = [module, args]
    try:
        runpy.run_path(module, run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.stdout.flush()
        me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    me = int(line.split()[1])
        kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        rec = {"wall": time.monotonic() - started, "maxrss_self_kib": me, "maxrss_children_kib": kids}
        sys.stderr.write("\nMODRUN " + json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
