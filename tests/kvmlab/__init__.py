"""kvmlab: real libvirt/QEMU (TCG) domains in every pause state the diagnostics must explain.

    from kvmlab import Lab, LabDomain, STATES
    with Lab() as lab:
        d = lab.create("enospc")    # returns once libvirt reports paused (I/O error), diskErrors no space
        d.clear()                   # free the space, without resuming

See README.md in this directory for the states, their measured times and what could not be reproduced.
"""
import importlib

# The names below load on first use (PEP 562), so a submodule that needs no libvirt (hosttree, used by the
# module_utils unit tests on the Python 3.9 tier, where libvirt is not installed) imports without it.
_WHERE = {
    "Lab": "lab", "LabDomain": "lab", "LabTimeout": "lab", "bounded": "lab", "leftovers": "lab",
    "status_file_state": "lab", "LabError": "proc", "STATES": "states", "StateSpec": "states",
    "state_text": "states",
}


def __getattr__(name):
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module("." + where, __name__), name)
    globals()[name] = value
    return value
