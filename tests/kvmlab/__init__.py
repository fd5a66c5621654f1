"""kvmlab: real libvirt/QEMU (TCG) domains in every pause state the diagnostics must explain.

    from kvmlab import Lab, LabDomain, STATES
    with Lab() as lab:
        d = lab.create("enospc")    # returns once libvirt reports paused (I/O error), diskErrors no space
        d.clear()                   # free the space, without resuming

See README.md in this directory for the states, their measured times and what could not be reproduced.
"""
from .lab import Lab, LabDomain, LabTimeout, bounded, leftovers, status_file_state
from .proc import LabError
from .states import STATES, StateSpec, state_text

__all__ = [
    "STATES",
    "Lab",
    "LabDomain",
    "LabError",
    "LabTimeout",
    "StateSpec",
    "bounded",
    "leftovers",
    "state_text",
    "status_file_state",
]
