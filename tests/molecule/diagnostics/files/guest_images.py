"""Print, as JSON, the kernel + initrd of each guest program the fleet's guests boot.

Runs on the controller in prepare.yml (PYTHONPATH=tests): the lab's own GuestImages builds them
once into ${KVMOPS_CACHE}/guest (a Debian kernel from Debian's package, busybox initramfs programs)
and reuses them afterwards. prepare.yml copies the files into each fleet container.

    python guest_images.py PROGRAM [PROGRAM ...]
"""

import json
import sys

from kvmlab.guest import PROGRAMS, GuestImages


def main(programs: list[str]) -> None:
    images = GuestImages()
    out = {}
    for name in programs:
        program = PROGRAMS[name]
        out[name] = {
            "kernel": str(images.kernel(program.flavour)),
            "initrd": str(images.initrd(program)),
            "cmdline": program.cmdline,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1:])
