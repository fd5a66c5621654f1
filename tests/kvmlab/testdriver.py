"""A libvirt test-driver fleet: N domains in mixed states on a multi-NUMA-node host, as a node XML file.

    from kvmlab.testdriver import write_fleet
    uri = write_fleet(tmp_path / "fleet.xml", 1000)        # -> "test:///ABS/PATH/fleet.xml"
    conn = libvirt.openReadOnly(uri)

libvirt's test driver (LAB.md): 1000 domains load in ~0.24 s; states come from <test:runstate>; its
pause reason is always 0 (unknown) and diskErrors() is fake. Good for unit tests and scale benchmarks,
never evidence that a diagnosis is right. NUMA: the file driver takes the topology from <node><cpu>
(<nodes>, <sockets>, <cores>, <threads>); getInfo() reports the node count, capabilities list no cells.

CLI: python tests/kvmlab/testdriver.py N PATH [--numa-nodes K]  (prints the URI)
"""
from __future__ import annotations

import argparse
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

RUNNING, PAUSED, SHUTOFF, CRASHED = 1, 3, 5, 6
# default mix per 10 domains: 6 running, 2 paused, 1 shut off, 1 crashed
DEFAULT_MIX = (RUNNING,) * 6 + (PAUSED,) * 2 + (SHUTOFF, CRASHED)
NS = "http://libvirt.org/schemas/domain/test/1.0"


def domain_xml(i: int, state: int, prefix: str = "vm", images: str = "/var/lib/libvirt/images") -> str:
    """One test-driver domain. Disks vary by index: file (all), plus a block disk every 3rd, an NBD
    network disk every 5th, a watchdog every 4th; error policies stop/enospace alternate."""
    name = f"{prefix}{i:04d}"
    policy = "stop" if i % 2 == 0 else "enospace"
    driver = f"<driver name='qemu' type='qcow2' error_policy='{policy}' rerror_policy='stop'/>"
    disks = [f"""<disk type='file' device='disk'>{driver}
        <source file='{escape(images)}/{name}.qcow2'/><target dev='vda' bus='virtio'/></disk>"""]
    if i % 3 == 0:
        disks.append(f"""<disk type='block' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>
        <source dev='/dev/mapper/vg0-{name}'/><target dev='vdb' bus='virtio'/></disk>""")
    if i % 5 == 0:
        disks.append(f"""<disk type='network' device='disk'><driver name='qemu' type='raw' error_policy='stop'/>
        <source protocol='nbd' name='{name}'><host name='127.0.0.1' port='{10809 + i % 100}'/></source>
        <target dev='vdc' bus='virtio'/></disk>""")
    extra = "<watchdog model='i6300esb' action='pause'/>" if i % 4 == 0 else ""
    mac = f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
    return f"""  <domain type='test' xmlns:test='{NS}'>
    <name>{name}</name><uuid>{uuid.UUID(int=i + 1)}</uuid>
    <memory unit='MiB'>64</memory><vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
    <on_crash>{"preserve" if state == CRASHED else "destroy"}</on_crash>
    <devices>
      {"".join(disks)}
      <interface type='bridge'><source bridge='br0'/><mac address='{mac}'/></interface>
      {extra}
    </devices>
    <test:runstate>{state}</test:runstate>
  </domain>
"""


def fleet_xml(n: int, *, mix: tuple[int, ...] = DEFAULT_MIX, numa_nodes: int = 2, sockets: int = 2, cores: int = 4,
              threads: int = 2, mhz: int = 2600, memory_kib: int = 64 * 1024 * 1024, prefix: str = "vm") -> str:
    if numa_nodes < 1 or n < 0 or not mix:
        raise ValueError("need numa_nodes >= 1, n >= 0 and a non-empty state mix")
    cpus = numa_nodes * sockets * cores * threads
    head = (f"<node>\n  <cpu><mhz>{mhz}</mhz><model>x86_64</model><active>{cpus}</active>"
            f"<nodes>{numa_nodes}</nodes><sockets>{sockets}</sockets><cores>{cores}</cores>"
            f"<threads>{threads}</threads></cpu>\n  <memory>{memory_kib}</memory>\n")
    return head + "".join(domain_xml(i, mix[i % len(mix)], prefix) for i in range(n)) + "</node>\n"


def uri_for(path: str | Path) -> str:
    return "test://" + str(Path(path).resolve())


def write_fleet(path: str | Path, n: int, **kw) -> str:
    """Write the node file and return its test:///ABS/PATH.xml URI."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(fleet_xml(n, **kw))
    return uri_for(p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("path")
    ap.add_argument("--numa-nodes", type=int, default=2)
    args = ap.parse_args(argv)
    print(write_fleet(args.path, args.n, numa_nodes=args.numa_nodes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
