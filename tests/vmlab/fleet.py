"""Start, reach, cut and tear down N TCG VMs booting the cached base image.

Networking, and why nothing leaves this machine:

* ``eth0`` of every VM is QEMU user networking with ``restrict=on`` (the guest cannot send anything
  off-box) and one host forward, ``127.0.0.1:<free port> -> :22``: this machine reaches the VMs only
  through 127.0.0.1.
* Every private link (:class:`LinkSpec`) is a Linux bridge inside a network namespace created for the
  run (``vmlab-<run id>``); each member VM gets a virtio NIC whose tap device lives in that namespace
  (the tap is opened inside the namespace and handed to QEMU as a file descriptor, so QEMU itself and
  its SSH forward stay in this machine's namespace). The namespace has no other interfaces: frames on
  a link reach the other members of the link and nothing else.
* Links are cut from outside either at the guest's NIC (QMP ``set_link``: the guest sees carrier
  loss, like a pulled cable) or silently at the tap in the namespace (``how="drop"``: carrier stays
  up, frames vanish, like a dead switch port).

Per-VM configuration (hostname, per-run SSH keys, static addresses, /etc/hosts) reaches the guest as
a script in the fw_cfg item ``opt/vmlab/setup`` that ``vmlab-setup.service`` runs at every boot.

All state of a run lives in one run directory (``${VMLAB_RUNS:-/tmp/vmlab}/<run id>/``, ``state.json``
lists QEMU PIDs with their start times), so :func:`down_run` can clean up from another process.
"""
from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import fcntl
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .image import BaseImage
from .variants import NET_PROVIDERS

QEMU = "qemu-system-x86_64"
# ConnectTimeout covers the banner exchange too: a TCG guest on a loaded 2-core machine can take well over
# 5 s for it (seen: "Connection timed out during banner exchange").
SSH_OPTS = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=30", "-o", "ServerAliveInterval=5",
    "-o", "ServerAliveCountMax=6",
)
MGMT_ADDR = "10.0.2.15"
STAMP_DIR = "/var/lib/vmlab"

# The state a pool reset must restore, as text per VM (see Fleet.fingerprints). Sysctls that are counters
# or per-boot random values move by themselves and are left out; so are logs, caches, the journal, and the state
# of timers the clock step after a revert can fire (logrotate's daily timer is Persistent=true), and the
# lifetimes of routes learnt from router advertisements (QEMU's user network advertises fec0::/64 on eth0: their
# "expires NNNsec" counts down, and a new advertisement moves it).
FINGERPRINT = r"""
set -e
{
ip -o link show | sed -E 's/^[0-9]+: //; s/ link\/.*//'
ip -o addr show | sed -E 's/^[0-9]+: //; s/ *valid_lft.*//'
ip route show table all | sed -E 's/ expires [0-9]+sec//'
lsmod | awk 'NR > 1 {print $1}' | sort
volatile='^(fs\.(dentry-state|file-nr|inode-nr|inode-state|quota\.|aio-nr)|net\.netfilter\.nf_conntrack_count|'
volatile="${volatile}kernel\.(ns_last_pid|random\.|pty\.nr|tainted|perf_event_max_sample_rate))"
sysctl -a 2>/dev/null | grep -Ev "$volatile"
findmnt -rno TARGET,SOURCE,FSTYPE | sort
find /etc /root /srv /opt /usr/local /var/lib -xdev \( -path /var/lib/systemd -o -path /var/lib/vmlab \
  -o -path /var/lib/dhcp -o -path /var/lib/logrotate -o -path /root/.ansible -o -path /var/lib/sudo \) -prune \
  -o -printf '%p %y %m %s %T@\n' | sort
}
"""


class VmlabError(RuntimeError):
    pass


def runs_root() -> Path:
    return Path(os.environ.get("VMLAB_RUNS", "/tmp/vmlab"))


# --------------------------------------------------------------------------------------------- spec
@dataclass
class LinkSpec:
    """A private L2 segment. ``members`` None = every VM. ``subnet`` None = 10.213.<n>.0/24.
    ``addressed`` False leaves the NICs unmanaged and without address (for bonds, VLANs, bridges
    the test builds itself)."""

    name: str
    members: list[str] | None = None
    subnet: str | None = None
    addressed: bool = True


@dataclass
class VMSpec:
    """One VM. ``disks``: extra disks (sparse qcow2, so they are part of the pool's snapshots).
    ``numa_nodes``: guest NUMA nodes, memory split evenly, vCPUs dealt round robin (a node may have memory
    only). ``net``: the network provider that runs in the guest (``networkd``, ``nm`` = NetworkManager,
    ``ifupdown``; the image must carry it, see :data:`vmlab.variants.NET_PROVIDERS`)."""

    name: str
    memory_mb: int = 512
    cpus: int = 1
    disks: list[str] = field(default_factory=lambda: ["256M"])
    numa_nodes: int = 1
    net: str = "networkd"


@dataclass
class SharedDiskSpec:
    """A raw disk every VM of the fleet sees (``share-rw``), as a SAN LUN for sbd: ``/dev/disk/by-id/
    virtio-vmlab-shared-<name>``. Left out of snapshots; a pool reset zeroes it."""

    name: str
    size: str = "16M"


@dataclass
class FleetSpec:
    vms: list[VMSpec]
    links: list[LinkSpec] = field(default_factory=lambda: [LinkSpec("lan")])
    shared_disks: list[SharedDiskSpec] = field(default_factory=list)
    boot_timeout: float = float(os.environ.get("VMLAB_BOOT_TIMEOUT", "300"))
    # TCG translation cache per VM. QEMU's default is 1 GiB and it fills up and stays resident:
    # this is most of a VM's RSS beyond the guest RAM it touched.
    tb_size_mb: int = int(os.environ.get("VMLAB_TB_SIZE", "128"))
    # The emulated CPU model (QEMU -cpu; VMLAB_CPU): part of the pool key, a VM on another model is another VM.
    # qemu64 (x86-64 baseline) + pdpe1gb (1 GiB pages, which the tuning role offers where the CPU has them): under
    # TCG a guest on "max" is slower (its AVX/AVX2 and 5-level paging are emulated): one hypervisor-variant VM
    # boots in 27.4-29.4 s instead of 32.6 s and a Python/dpkg/systemctl workload takes 18.8-20.2 s instead of
    # 22.3-23.9 s (2026-12-06, side by side; tests/vmlab/README.md, "TCG CPU model").
    cpu: str = os.environ.get("VMLAB_CPU", "qemu64,+pdpe1gb")

    @classmethod
    def simple(cls, n: int = 2, links: tuple[str, ...] = ("lan",), **vm_kw) -> FleetSpec:
        names = [f"vm{chr(ord('a') + i)}" for i in range(n)]
        return cls([VMSpec(name, **vm_kw) for name in names], [LinkSpec(x) for x in links])

    @classmethod
    def from_dict(cls, d: dict) -> FleetSpec:
        return cls(
            vms=[VMSpec(**v) for v in d["vms"]],
            links=[LinkSpec(**x) for x in d["links"]],
            shared_disks=[SharedDiskSpec(**x) for x in d.get("shared_disks", [])],
            boot_timeout=d.get("boot_timeout", 300.0),
            tb_size_mb=d.get("tb_size_mb", 256),
        )

    def validate(self) -> None:
        names = [v.name for v in self.vms]
        if len(set(names)) != len(names) or not names:
            raise VmlabError(f"VM names must be unique and non-empty: {names}")
        if len({x.name for x in self.links}) != len(self.links):
            raise VmlabError("link names must be unique")
        for x in self.links:
            for m in x.members or []:
                if m not in names:
                    raise VmlabError(f"link {x.name}: unknown member {m}")
        for v in self.vms:
            if v.net not in NET_PROVIDERS:
                raise VmlabError(f"{v.name}: net {v.net!r} is not one of {', '.join(NET_PROVIDERS)}")
            if not 1 <= v.numa_nodes <= 8 or v.memory_mb % v.numa_nodes:
                raise VmlabError(f"{v.name}: numa_nodes {v.numa_nodes} must be 1-8 and divide memory_mb "
                                 f"{v.memory_mb}")
        if len({d.name for d in self.shared_disks}) != len(self.shared_disks):
            raise VmlabError("shared disk names must be unique")

    def canonical(self) -> dict:
        """What the VMs are, without run-time knobs (boot timeout, TB size): the pool's key."""
        d = asdict(self)
        d.pop("boot_timeout")
        d.pop("tb_size_mb")
        return d


# ------------------------------------------------------------------------------------- low level
_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_tap_in_netns(netns: str, ifname: str) -> int:
    """Create tap ``ifname`` inside ``netns`` and return its fd (for QEMU ``-netdev tap,fd=``).
    The device belongs to the namespace the tun fd was opened in, so only this thread briefly
    enters the namespace; the caller's process stays where it is."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        _setns(target)
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR)
            try:
                fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI))
            except OSError:
                os.close(fd)
                raise
        finally:
            _setns(own)
    finally:
        os.close(own)
        os.close(target)
    os.set_inheritable(fd, True)
    return fd


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise VmlabError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_starttime(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie PID; None otherwise."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


class QMP:
    """One-shot QMP client over the VM's unix socket (connect, negotiate, command, close), so any
    process holding the run directory can drive the VM."""

    def __init__(self, path: Path | str, timeout: float = 10.0):
        self.path, self.timeout = str(path), timeout

    def __call__(self, command: str, **arguments) -> object:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(self.timeout)
            s.connect(self.path)
            f = s.makefile("rwb")
            json.loads(f.readline())  # greeting
            for cmd, args in (("qmp_capabilities", {}), (command, arguments)):
                msg = {"execute": cmd}
                if args:
                    msg["arguments"] = args
                f.write(json.dumps(msg).encode() + b"\n")
                f.flush()
                while True:
                    line = f.readline()
                    if not line:
                        if cmd == "quit":
                            return None
                        raise VmlabError(f"QMP {self.path}: connection closed during {cmd}")
                    reply = json.loads(line)
                    if "event" in reply:
                        continue
                    if "error" in reply:
                        raise VmlabError(f"QMP {cmd}: {reply['error']}")
                    break
            return reply.get("return")


# ---------------------------------------------------------------------------------------- the VMs
@dataclass
class NicInfo:
    link: str
    iface: str
    mac: str
    tap: str
    address: str | None  # "10.213.1.11/24" or None (unmanaged)


@dataclass
class DiskInfo:
    dev: str  # /dev/vdb in the guest
    by_id: str  # /dev/disk/by-id/virtio-<serial>
    size: str
    path: str  # backing file on this machine


@dataclass
class VM:
    name: str
    index: int
    run_dir: str
    ssh_port: int
    memory_mb: int
    nics: list[NicInfo] = field(default_factory=list)
    disks: list[DiskInfo] = field(default_factory=list)
    shared_disks: list[DiskInfo] = field(default_factory=list)
    pid: int | None = None
    starttime: int | None = None
    started_at: float | None = None  # time.time() when QEMU was started
    boot_seconds: float | None = None  # QEMU start -> SSH login works

    # ---- paths
    @property
    def dir(self) -> Path:
        return Path(self.run_dir)

    @property
    def qmp_path(self) -> Path:
        return self.dir / f"{self.name}.qmp"

    @property
    def serial_log(self) -> Path:
        return self.dir / f"{self.name}.serial"

    @property
    def key(self) -> Path:
        return self.dir / "id_ed25519"

    def nic(self, link: str) -> NicInfo:
        for n in self.nics:
            if n.link == link:
                return n
        raise KeyError(f"{self.name} has no NIC on link {link}")

    def addr(self, link: str) -> str:
        a = self.nic(link).address
        if a is None:
            raise KeyError(f"{self.name}: link {link} is unaddressed")
        return a.split("/")[0]

    # ---- process
    def alive(self) -> bool:
        return self.pid is not None and proc_starttime(self.pid) == self.starttime

    def rss_mib(self) -> float | None:
        return rss_mib(self.pid) if self.alive() else None

    def qmp(self, command: str, **arguments) -> object:
        return QMP(self.qmp_path)(command, **arguments)

    # ---- ssh
    @property
    def control_path(self) -> Path:
        return self.dir / f"{self.name}.ssh"

    def ssh_argv(self, command: str | None = None, *, connect_timeout: int = 30) -> list[str]:
        """ssh to the VM. Calls share one connection (ControlMaster, kept 60 s after the last use; ``down()``
        ends it): a new SSH handshake costs seconds of emulated CPU in a TCG guest. ssh takes the first value
        of an option, so ``connect_timeout`` comes before SSH_OPTS."""
        argv = ["ssh", "-i", str(self.key), "-p", str(self.ssh_port), "-o", f"ConnectTimeout={connect_timeout}",
                "-o", "ControlMaster=auto", "-o", f"ControlPath={self.control_path}", "-o", "ControlPersist=60",
                *SSH_OPTS, "root@127.0.0.1"]
        return argv + ([command] if command is not None else [])

    def ssh_close(self) -> None:
        """End the shared SSH connection, if there is one."""
        if self.control_path.exists():
            subprocess.run(["ssh", "-o", f"ControlPath={self.control_path}", "-O", "exit", "root@127.0.0.1"],
                           capture_output=True, timeout=30, check=False, stdin=subprocess.DEVNULL)

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        p = subprocess.run(self.ssh_argv(command), capture_output=True, text=True, check=False,
                           timeout=timeout, input=input, stdin=None if input is not None else subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise VmlabError(f"{self.name}: `{command}` rc={p.returncode}\n{p.stdout}{p.stderr}")
        return p

    def ssh_banner(self, timeout: float = 3.0) -> bool:
        """True when sshd in the guest answers (slirp accepts on 127.0.0.1 even when the guest
        does not, so a bare connect proves nothing)."""
        try:
            with socket.create_connection(("127.0.0.1", self.ssh_port), timeout=timeout) as s:
                s.settimeout(timeout)
                return s.recv(4).startswith(b"SSH-")
        except OSError:
            return False

    def boot_id(self) -> str:
        return self.ssh("cat /proc/sys/kernel/random/boot_id", timeout=30).stdout.strip()

    def serial_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.serial_log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no serial log)"

    def wait_ssh(self, timeout: float, *, not_boot_id: str | None = None) -> float:
        """Poll until SSH login works (and, after a reboot, the boot id changed); return seconds."""
        t0 = time.monotonic()
        while True:
            if not self.alive():
                raise VmlabError(f"{self.name}: QEMU died\n{self.serial_tail()}")
            if self.ssh_banner():
                try:  # a loaded machine can take longer than that for the first login: try again
                    p = subprocess.run(self.ssh_argv("cat /proc/sys/kernel/random/boot_id"), check=False,
                                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
                except subprocess.TimeoutExpired:
                    p = None
                if p is not None and p.returncode == 0 and p.stdout.strip() and p.stdout.strip() != not_boot_id:
                    return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise VmlabError(f"{self.name}: no SSH after {timeout:.0f} s\n{self.serial_tail()}")
            time.sleep(1)

    def reboot(self, timeout: float = 300, *, hard: bool = False) -> float:
        """Reboot the guest (``systemctl reboot``, or QMP ``system_reset`` when ``hard``); the QEMU
        process, its disks and its forwards stay. Returns seconds until SSH works again."""
        before = self.boot_id()
        if hard:
            self.qmp("system_reset")
        else:
            self.ssh("systemctl reboot", check=False, timeout=30)
        return self.wait_ssh(timeout, not_boot_id=before)


# ------------------------------------------------------------------------------------------ fleet
class Fleet:
    """N VMs of one run. ``up()`` boots them (in parallel) and waits for SSH; ``down()`` always
    cleans everything (also after a failed ``up()``), from this or another process."""

    def __init__(self, spec: FleetSpec, image: BaseImage, run_dir: Path | None = None, *,
                 owned: bool = True):
        """``owned``: the VMs belong to this process. QEMU gets SIGTERM when it dies (even by
        SIGKILL, via PR_SET_PDEATHSIG), an atexit hook tears the run down, and
        :func:`reap_orphans` cleans the rest (namespace, files) later. The CLI's ``up`` passes
        False: its VMs outlive it until ``down``."""
        spec.validate()
        self.owned = owned
        self.owner: dict | None = None
        self.spec, self.image = spec, image
        self.run_id = run_dir.name if run_dir else f"{time.strftime('%H%M%S')}{secrets.token_hex(2)}"
        self.run_dir = run_dir or runs_root() / self.run_id
        self.netns = f"vmlab-{self.run_id}"
        self.vms: dict[str, VM] = {}
        self.link_subnets: dict[str, str] = {}
        self._popen: dict[str, subprocess.Popen] = {}
        self._atexit = False

    # ---- state
    @property
    def state_file(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def inventory_path(self) -> Path:
        return self.run_dir / "inventory.yml"

    @property
    def key(self) -> Path:
        return self.run_dir / "id_ed25519"

    def save(self) -> None:
        state = {
            "run_id": self.run_id,
            "netns": self.netns,
            "image": str(self.image.path),
            "spec": asdict(self.spec),
            "link_subnets": self.link_subnets,
            "owner": self.owner,
            "vms": {n: asdict(v) for n, v in self.vms.items()},
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_file)

    @classmethod
    def load(cls, run_dir: Path) -> Fleet:
        state = json.loads((run_dir / "state.json").read_text())
        image = BaseImage.load(Path(state["image"])) or BaseImage(Path(state["image"]))
        f = cls(FleetSpec.from_dict(state["spec"]), image, run_dir)
        f.netns = state["netns"]
        f.link_subnets = state["link_subnets"]
        f.owner = state.get("owner")
        f.owned = False  # loading a run never makes this process its owner
        for n, v in state["vms"].items():
            v["nics"] = [NicInfo(**x) for x in v["nics"]]
            v["disks"] = [DiskInfo(**x) for x in v["disks"]]
            v["shared_disks"] = [DiskInfo(**x) for x in v.get("shared_disks", [])]
            f.vms[n] = VM(**v)
        return f

    def __getitem__(self, name: str) -> VM:
        return self.vms[name]

    def __iter__(self):
        return iter(self.vms.values())

    # ---- up
    def up(self) -> Fleet:
        for tool in (QEMU, "qemu-img", "ssh", "ssh-keygen", "ip", "unshare"):
            if shutil.which(tool) is None:
                raise VmlabError(f"{tool} not found")
        packages = set(self.image.manifest.get("packages", ()))
        for vs in self.spec.vms:
            if vs.net != "networkd" and NET_PROVIDERS[vs.net] not in packages:
                raise VmlabError(f"{vs.name}: net {vs.net} needs {NET_PROVIDERS[vs.net]} in the image "
                                 f"({self.image.path.name}); boot the hypervisor variant")
        self.run_dir.mkdir(parents=True, exist_ok=False)
        self._atexit = True  # a failed up() cleans up in any case; detach() undoes it
        atexit.register(self.down)
        if self.owned:
            self.owner = {"pid": os.getpid(), "starttime": proc_starttime(os.getpid())}
        try:
            self._plan()
            self.save()
            self._prepare()
            self._start_all()
            self._wait_all()
            self.write_inventory()
        except BaseException:
            self.down()
            raise
        return self

    def _plan(self) -> None:
        for li, link in enumerate(self.spec.links):
            self.link_subnets[link.name] = link.subnet or f"10.213.{li + 1}.0/24"
        for vi, vs in enumerate(self.spec.vms):
            vm = VM(vs.name, vi, str(self.run_dir), 0, vs.memory_mb)
            for li, link in enumerate(self.spec.links):
                if link.members is not None and vs.name not in link.members:
                    continue
                net = ipaddress.ip_network(self.link_subnets[link.name])
                addr = f"{net.network_address + 11 + vi}/{net.prefixlen}" if link.addressed else None
                vm.nics.append(NicInfo(
                    link=link.name, iface=f"eth{len(vm.nics) + 1}",
                    mac=f"52:54:00:{li + 1:02x}:{vi + 1:02x}:01", tap=f"vt{vi}l{li}", address=addr))
            for di, size in enumerate(vs.disks):
                serial = f"vmlab-disk{di + 1}"
                vm.disks.append(DiskInfo(
                    dev=f"/dev/vd{chr(ord('b') + di)}", by_id=f"/dev/disk/by-id/virtio-{serial}",
                    size=size, path=str(self.run_dir / f"{vs.name}-disk{di + 1}.qcow2")))
            for si, sd in enumerate(self.spec.shared_disks):
                serial = f"vmlab-shared-{sd.name}"
                vm.shared_disks.append(DiskInfo(
                    dev=f"/dev/vd{chr(ord('b') + len(vs.disks) + si)}", by_id=f"/dev/disk/by-id/virtio-{serial}",
                    size=sd.size, path=str(self.run_dir / f"shared-{sd.name}.img")))
            self.vms[vs.name] = vm

    def _prepare(self) -> None:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vmlab-{self.run_id}",
                        "-f", str(self.key)], check=True)
        _ip("netns", "add", self.netns)
        self.save()
        _ip("-n", self.netns, "link", "set", "lo", "up")
        for li in range(len(self.spec.links)):
            _ip("-n", self.netns, "link", "add", f"br{li}", "mtu", "9000", "type", "bridge",
                "stp_state", "0", "forward_delay", "0")
        self._bridges_as_planned()
        for sd in self.spec.shared_disks:
            with open(self.run_dir / f"shared-{sd.name}.img", "wb") as f:
                f.truncate(_size_bytes(sd.size))
        for vm in self:
            d = self.run_dir
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2",
                            "-b", str(self.image.qcow2), str(d / f"{vm.name}.qcow2")], check=True)
            for disk in vm.disks:
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", disk.path,
                                str(_size_bytes(disk.size))], check=True)
            (d / f"{vm.name}.setup.sh").write_text(self._setup_script(vm))

    # ---- the controller on the links
    def controller_address(self, link: str, *, prefix: bool = False) -> str:
        """The run's network namespace has an address on every addressed link (the subnet's .1): a
        controller in that namespace (:meth:`netns_argv`) reaches the VMs over the link itself, so a test
        that changes the link sees it with the controller's own connection."""
        net = ipaddress.ip_network(self.link_subnets[link])
        addr = net.network_address + 1
        return f"{addr}/{net.prefixlen}" if prefix else str(addr)

    def netns_argv(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the run's network namespace (the links' side of the VMs)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def _setup_script(self, vm: VM) -> str:
        pub = (self.run_dir / "id_ed25519.pub").read_text().strip()
        priv = self.key.read_text()
        hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        for other in self:
            first = None
            for n in other.nics:
                if n.address:
                    a = n.address.split("/")[0]
                    hosts.append(f"{a} {other.name}-{n.link}")
                    first = first or a
            if first:
                hosts.append(f"{first} {other.name}")
        lines = [
            "# generated by vmlab for " + vm.name,
            "umask 022",
            f"echo {vm.name} > /etc/hostname",
            f"hostname {vm.name}",
            "install -d -m 700 /root/.ssh",
            _heredoc("/root/.ssh/authorized_keys", pub + "\n"),
            _heredoc("/root/.ssh/id_ed25519", priv),
            _heredoc("/root/.ssh/id_ed25519.pub", pub + "\n"),
            _heredoc("/root/.ssh/config", "Host *\n  StrictHostKeyChecking no\n"
                     "  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n"),
            "chmod 600 /root/.ssh/authorized_keys /root/.ssh/id_ed25519 /root/.ssh/config",
            _heredoc("/etc/hosts", "\n".join(hosts) + "\n"),
            "# the links' addresses, in the files of the VM's network provider, at the first boot only: from then",
            "# on they are the host's own configuration, which the role under test may change (and a reboot keeps).",
            f"if [ ! -e {STAMP_DIR}/links-configured ]; then",
        ]
        for path, (mode, text) in self._net_files(vm).items():
            lines += [_heredoc(path, text), f"chmod {mode:o} {shlex.quote(path)}"]
        lines += [f"install -d {STAMP_DIR}", f"echo {self._vmspec(vm.name).net} > {STAMP_DIR}/links-configured", "fi"]
        return "\n".join(lines) + "\n"

    def _net_files(self, vm: VM) -> dict[str, tuple[int, str]]:
        """path -> (mode, content) of the addresses of eth0 (10.0.2.15, the SSH forward) and the addressed
        links, for the VM's provider. Unaddressed links stay unconfigured (for bonds, VLANs and bridges).
        Every file matches its NIC by MAC where the provider can: VLANs and bonds inherit a NIC's MAC and must
        not pick up its address."""
        net = self._vmspec(vm.name).net
        nics = [("mgmt", "eth0", _mgmt_mac(vm.index), f"{MGMT_ADDR}/24")]
        nics += [(n.link, n.iface, n.mac, n.address) for n in vm.nics]
        files: dict[str, tuple[int, str]] = {}
        if net == "networkd":
            for i, (link, _iface, mac, address) in enumerate(nics):
                if address:
                    body = (f"[Match]\nType=ether\nMACAddress={mac}\n\n[Link]\nRequiredForOnline=no\n\n"
                            f"[Network]\nAddress={address}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n")
                else:
                    body = f"[Match]\nType=ether\nMACAddress={mac}\n\n[Link]\nUnmanaged=yes\n"
                files[f"/etc/systemd/network/{10 if i == 0 else 20}-vmlab-{link}.network"] = (0o644, body)
        elif net == "nm":
            files["/etc/NetworkManager/conf.d/vmlab.conf"] = (
                0o644, "[main]\n# links without an address stay unconfigured; no DNS (the VMs have none)\n"
                       "no-auto-default=*\ndns=none\n")
            for link, _iface, mac, address in nics:
                if address:
                    files[f"/etc/NetworkManager/system-connections/vmlab-{link}.nmconnection"] = (
                        0o600, f"[connection]\nid=vmlab-{link}\ntype=ethernet\nautoconnect=true\n\n"
                               f"[ethernet]\nmac-address={mac}\n\n[ipv4]\nmethod=manual\naddress1={address}\n"
                               "never-default=true\n\n[ipv6]\nmethod=disabled\n")
        else:  # ifupdown: names, not MACs (eth0 is the management NIC: it has the lowest PCI address)
            text = ("# written by vmlab at first boot\nsource /etc/network/interfaces.d/*\n\n"
                    "auto lo\niface lo inet loopback\n")
            for _link, iface, _mac, address in nics:
                if address:
                    text += f"\nauto {iface}\niface {iface} inet static\n    address {address}\n"
            files["/etc/network/interfaces"] = (0o644, text)
        return files

    def _qemu_argv(self, vm: VM, tap_fds: dict[str, int]) -> list[str]:
        d = self.run_dir
        vs = self._vmspec(vm.name)
        kernel_cmdline = " ".join([
            f"root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.hostname={vm.name}",
            "quiet loglevel=4 systemd.show_status=false mitigations=off tsc=reliable",
            *NET_CMDLINE[vs.net], os.environ.get("VMLAB_KERNEL_ARGS", "")]).strip()
        argv = [
            QEMU, "-name", f"vmlab-{self.run_id}-{vm.name},process=vmlab-{vm.name}",
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none",
            "-accel", f"tcg,tb-size={self.spec.tb_size_mb}", "-cpu", self.spec.cpu,
            "-smp", str(vs.cpus), "-m", str(vm.memory_mb), *_numa_argv(vs),
            "-kernel", str(self.image.kernel), "-initrd", str(self.image.initrd),
            "-append", kernel_cmdline,
            "-serial", f"file:{vm.serial_log}",
            "-qmp", f"unix:{vm.qmp_path},server=on,wait=off",
            "-fw_cfg", f"name=opt/vmlab/setup,file={d / f'{vm.name}.setup.sh'}",
            "-device", "virtio-rng-pci,addr=0x1f",
            "-blockdev", _blockdev("root", d / f"{vm.name}.qcow2", "qcow2"),
            "-device", "virtio-blk-pci,drive=root,addr=0x10,serial=vmlab-root",
            "-netdev", f"user,id=mgmt,restrict=on,net=10.0.2.0/24,host=10.0.2.2,"
                       f"hostfwd=tcp:127.0.0.1:{vm.ssh_port}-{MGMT_ADDR}:22",
            "-device", f"virtio-net-pci,netdev=mgmt,id=nic-mgmt,mac={_mgmt_mac(vm.index)},addr=0x3",
        ]
        for i, disk in enumerate(vm.disks):
            argv += ["-blockdev", _blockdev(f"disk{i + 1}", disk.path, "qcow2"),
                     "-device", f"virtio-blk-pci,drive=disk{i + 1},addr={0x11 + i:#x},"
                                f"serial={disk.by_id.rsplit('virtio-', 1)[1]}"]
        for i, disk in enumerate(vm.shared_disks):
            argv += ["-blockdev", _blockdev(f"shared{i + 1}", disk.path, "raw"),
                     "-device", f"virtio-blk-pci,drive=shared{i + 1},addr={0x11 + len(vm.disks) + i:#x},"
                                f"share-rw=on,serial={disk.by_id.rsplit('virtio-', 1)[1]}"]
        for i, n in enumerate(vm.nics):
            argv += ["-netdev", f"tap,id=net-{n.link},fd={tap_fds[n.link]}",
                     "-device", f"virtio-net-pci,netdev=net-{n.link},id=nic-{n.link},mac={n.mac},addr={0x4 + i:#x}"]
        return argv

    def _vmspec(self, name: str) -> VMSpec:
        return next(v for v in self.spec.vms if v.name == name)

    def _start_one(self, vm: VM) -> None:
        fds: dict[str, int] = {}
        try:
            for n in vm.nics:
                fds[n.link] = open_tap_in_netns(self.netns, n.tap)
                br = f"br{[x.name for x in self.spec.links].index(n.link)}"
                _ip("-n", self.netns, "link", "set", n.tap, "mtu", "9000", "master", br, "up")
            for _attempt in range(4):  # a free port can be taken by someone else before QEMU binds it
                vm.ssh_port = free_port()
                vm.started_at = time.time()
                with open(self.run_dir / f"{vm.name}.qemu.log", "w") as log:
                    # preexec_fn only calls prctl (async-signal-safe); vmlab starts no threads.
                    p = subprocess.Popen(self._qemu_argv(vm, fds), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, pass_fds=list(fds.values()),
                                         start_new_session=True,
                                         preexec_fn=_die_with_parent if self.owned else None)  # noqa: PLW1509
                vm.pid, vm.starttime = p.pid, None
                for _attempt in range(100):
                    vm.starttime = proc_starttime(p.pid)
                    if vm.starttime:
                        break
                    time.sleep(0.01)
                self._popen[vm.name] = p
                self.save()
                if self._wait_qmp(vm, p):
                    return
                err = (self.run_dir / f"{vm.name}.qemu.log").read_text(errors="replace")
                if "hostfwd" not in err and "forwarding rule" not in err:
                    raise VmlabError(f"{vm.name}: QEMU exited rc={p.returncode}: {err.strip()}")
            raise VmlabError(f"{vm.name}: no free SSH port after retries")
        finally:
            for fd in fds.values():
                os.close(fd)  # QEMU holds its own copies

    def _wait_qmp(self, vm: VM, p: subprocess.Popen, timeout: float = 30) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if p.poll() is not None:
                return False
            if vm.qmp_path.exists():
                try:
                    vm.qmp("query-status")
                    return True
                except (OSError, VmlabError):
                    pass
            time.sleep(0.05)
        raise VmlabError(f"{vm.name}: QMP socket not up after {timeout} s")

    def _start_all(self) -> None:
        for vm in self:
            self._start_one(vm)

    def _wait_all(self) -> None:
        pending = {vm.name for vm in self}
        deadline = time.monotonic() + self.spec.boot_timeout
        while pending:
            for name in sorted(pending):
                vm = self.vms[name]
                if not vm.alive():
                    raise VmlabError(f"{name}: QEMU died during boot\n{vm.serial_tail()}")
                if vm.ssh_banner(timeout=2):
                    try:  # a loaded machine can take longer than that for the first login: try again
                        p = subprocess.run(vm.ssh_argv("true"), capture_output=True, timeout=60, check=False,
                                           stdin=subprocess.DEVNULL)
                    except subprocess.TimeoutExpired:
                        p = None
                    if p is not None and p.returncode == 0:
                        vm.boot_seconds = round(time.time() - vm.started_at, 1)
                        pending.discard(name)
            if pending and time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.vms[n].serial_tail()}" for n in sorted(pending))
                raise VmlabError(f"no SSH within {self.spec.boot_timeout:.0f} s: {sorted(pending)}\n{tails}")
            if pending:
                time.sleep(1)
        self.save()

    # ---- links
    def set_link(self, link: str, up: bool, *, vm: str | None = None, how: str = "carrier") -> None:
        """Cut (``up=False``) or restore a link from outside, for every member or just ``vm``.
        ``how="carrier"``: QMP set_link on the guest NIC (guest sees NO-CARRIER);
        ``how="drop"``: the tap in the namespace goes down (guest still sees carrier; frames lost)."""
        targets = [self.vms[vm]] if vm else [v for v in self if any(n.link == link for n in v.nics)]
        if not targets:
            raise VmlabError(f"no VM on link {link}")
        for v in targets:
            n = v.nic(link)
            if how == "carrier":
                v.qmp("set_link", name=f"nic-{link}", up=up)
            elif how == "drop":
                _ip("-n", self.netns, "link", "set", n.tap, "up" if up else "down")
            else:
                raise ValueError(how)

    def cut(self, link: str, **kw) -> None:
        self.set_link(link, False, **kw)

    def restore(self, link: str, **kw) -> None:
        self.set_link(link, True, **kw)

    # ---- snapshots (the shared pool's reset)
    def snapshot(self, tag: str) -> dict[str, str]:
        """Take a snapshot ``tag`` of every VM at one moment (all stopped, saved, then continued): RAM, devices
        and every per-VM disk (root overlay and extra disks; shared disks are left out). Returns each VM's
        state fingerprint (:meth:`fingerprints`) as it was saved. No SSH connection crosses a snapshot."""
        self._each(lambda vm: vm.ssh(f"install -d {STAMP_DIR}; date +%s.%N > {STAMP_DIR}/snapshot-{tag}; sync"))
        prints = self.fingerprints()
        for vm in self:
            vm.ssh_close()
        self._all_qmp("stop")
        try:
            self._snapshot_jobs("snapshot-save", tag)
        finally:
            self._all_qmp("cont")
        return prints

    def revert(self, tag: str) -> None:
        """Put every VM back to snapshot ``tag`` and this run's links to their planned state: each NIC's carrier
        and tap up, interfaces a test added to the run's namespace deleted, shared disks zeroed. The guests'
        clocks are set to this machine's (a guest resumes at the time it was saved)."""
        for vm in self:
            vm.ssh_close()
        self._all_qmp("stop")
        self._restore_links()
        for vm in self:
            for disk in vm.shared_disks:
                with open(disk.path, "r+b") as f:  # zeroes, sparse: every VM is stopped
                    f.truncate(0)
                    f.truncate(_size_bytes(disk.size))
            break  # every VM sees the same shared files
        self._snapshot_jobs("snapshot-load", tag)
        self._all_qmp("cont")
        self._each(lambda vm: vm.ssh(f"date -s @{time.time():.3f} >/dev/null", timeout=120))

    def fingerprints(self) -> dict[str, str]:
        """Per VM, the state a test may change and a reset must undo, as text: links, addresses, routes, loaded
        modules, sysctls (minus counters that move by themselves), mounts, and the metadata of every file under
        the configuration and state directories; plus this machine's side of the links (the run's namespace)."""
        host = self._netns_state()
        return {name: p.stdout + host for name, p in self._each(lambda vm: vm.ssh(FINGERPRINT, timeout=300)).items()}

    def _each(self, fn) -> dict:
        """``fn(vm)`` for every VM at once (each VM is a separate TCG process: SSH round trips overlap)."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(self.vms)) as pool:
            futures = {name: pool.submit(fn, vm) for name, vm in self.vms.items()}
            return {name: f.result() for name, f in futures.items()}

    def _netns_state(self) -> str:
        out = _ip("-n", self.netns, "-o", "link", "show").stdout + _ip("-n", self.netns, "-o", "addr", "show").stdout
        lines = sorted("netns " + re.sub(r"^\d+: ", "", line).split(" link/")[0] for line in out.splitlines())
        return "\n".join(lines) + "\n"

    def _restore_links(self) -> None:
        planned = {"lo"} | {f"br{i}" for i in range(len(self.spec.links))} | {n.tap for vm in self for n in vm.nics}
        for line in _ip("-n", self.netns, "-o", "link", "show").stdout.splitlines():
            name = line.split(":")[1].strip().split("@")[0]
            if name not in planned:
                _ip("-n", self.netns, "link", "del", name, check=False)
        self._bridges_as_planned()
        for vm in self:
            for n in vm.nics:
                vm.qmp("set_link", name=f"nic-{n.link}", up=True)
                _ip("-n", self.netns, "link", "set", n.tap, "up")

    def _bridges_as_planned(self) -> None:
        """Every link's bridge up, holding the controller address (addressed links) and no other global one."""
        for li, link in enumerate(self.spec.links):
            _ip("-n", self.netns, "addr", "flush", "dev", f"br{li}", "scope", "global")
            if link.addressed:
                _ip("-n", self.netns, "addr", "add", self.controller_address(link.name, prefix=True), "dev", f"br{li}")
            _ip("-n", self.netns, "link", "set", f"br{li}", "up")

    def _all_qmp(self, command: str) -> None:
        for vm in self:
            vm.qmp(command)

    def _snapshot_jobs(self, command: str, tag: str, timeout: float = 600) -> None:
        """QMP snapshot-save/-load as jobs on every VM at once; waits for all of them, raises the first error."""
        for vm in self:
            disks = ["root", *(f"disk{i + 1}" for i in range(len(vm.disks)))]
            vm.qmp(command, **{"job-id": f"vmlab-{tag}", "tag": tag, "vmstate": "root", "devices": disks})
        deadline = time.monotonic() + timeout
        errors = []
        for vm in self:
            while True:
                jobs = {j["id"]: j for j in vm.qmp("query-jobs")}
                job = jobs.get(f"vmlab-{tag}")
                if job is None or job["status"] == "concluded":
                    break
                if time.monotonic() > deadline:
                    raise VmlabError(f"{vm.name}: {command} {tag} still {job['status']} after {timeout:.0f} s")
                time.sleep(0.1)
            if job is not None:
                if job.get("error"):
                    errors.append(f"{vm.name}: {command} {tag}: {job['error']}")
                vm.qmp("job-dismiss", id=f"vmlab-{tag}")
        if errors:
            raise VmlabError("; ".join(errors))

    # ---- reporting
    def stats(self) -> dict:
        return {v.name: {"pid": v.pid, "alive": v.alive(), "ssh_port": v.ssh_port,
                         "boot_seconds": v.boot_seconds, "rss_mib": v.rss_mib(),
                         "memory_mb": v.memory_mb} for v in self.vms.values()}

    def write_inventory(self) -> Path:
        from .inventory import write_inventory  # noqa: PLC0415  (inventory imports this module)

        return write_inventory(self, self.inventory_path)

    # ---- down
    def down(self) -> list[str]:
        """Stop every QEMU of the run (by PID, checked against its start time), delete the
        namespace (bridges and taps go with it) and the run directory. Idempotent; returns
        what it did."""
        done: list[str] = []
        for vm in self.vms.values():
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                vm.ssh_close()
            if vm.pid is None:
                continue
            if vm.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(vm.pid, signal.SIGTERM)
                done.append(f"TERM qemu {vm.name} pid {vm.pid}")
            p = self._popen.get(vm.name)
            t0 = time.monotonic()
            while vm.alive() and time.monotonic() - t0 < 10:
                if p is not None:
                    p.poll()
                time.sleep(0.05)
            if vm.alive():
                os.kill(vm.pid, signal.SIGKILL)
                done.append(f"KILL qemu {vm.name} pid {vm.pid}")
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10)
        self._popen.clear()
        if Path(f"/run/netns/{self.netns}").exists():
            _ip("netns", "del", self.netns, check=False)
            done.append(f"netns {self.netns} deleted")
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)
            done.append(f"removed {self.run_dir}")
        with contextlib.suppress(OSError):  # the runs root too, once the last run is gone
            self.run_dir.parent.rmdir()
        if self._atexit:
            atexit.unregister(self.down)
            self._atexit = False
        return done

    def detach(self) -> None:
        """Leave the VMs running when this process exits (the CLI's ``up``, with ``owned=False``);
        ``down`` later."""
        if self.owned:
            raise VmlabError("an owned fleet dies with its process; create it with owned=False")
        if self._atexit:
            atexit.unregister(self.down)
            self._atexit = False

    def __enter__(self) -> Fleet:
        return self.up()

    def __exit__(self, *exc) -> None:
        self.down()


PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the forked child before exec
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# What the kernel command line adds per network provider: systemd-networkd is enabled in the image; for the
# others it is masked for the boot and the provider's unit is pulled in (systemd-debug-generator).
NET_CMDLINE = {
    "networkd": (),
    "nm": ("systemd.mask=systemd-networkd.service", "systemd.mask=systemd-networkd.socket",
           "systemd.wants=NetworkManager.service"),
    "ifupdown": ("systemd.mask=systemd-networkd.service", "systemd.mask=systemd-networkd.socket",
                 "systemd.wants=networking.service"),
}


def _blockdev(node: str, path: str | Path, fmt: str) -> str:
    """A -blockdev with a node name (QMP snapshot-save/load name disks by node). cache.no-flush = the old
    cache=unsafe: a VM's disks die with its run."""
    return (f"driver={fmt},node-name={node},discard=unmap,cache.no-flush=on,"
            f"file.driver=file,file.filename={path},file.aio=threads")


def _numa_argv(vs: VMSpec) -> list[str]:
    if vs.numa_nodes <= 1:
        return []
    argv: list[str] = []
    per_node = vs.memory_mb // vs.numa_nodes
    for node in range(vs.numa_nodes):
        cpus = [c for c in range(vs.cpus) if c % vs.numa_nodes == node]
        argv += ["-object", f"memory-backend-ram,id=numa-mem{node},size={per_node}M",
                 "-numa", ",".join([f"node,nodeid={node}", *(f"cpus={c}" for c in cpus), f"memdev=numa-mem{node}"])]
    return argv


def _mgmt_mac(index: int) -> str:
    return f"52:54:00:fe:{index + 1:02x}:01"


def _heredoc(path: str, content: str) -> str:
    tag = "VMLAB_EOF"
    assert tag not in content
    if not content.endswith("\n"):
        content += "\n"
    return f"cat > {shlex.quote(path)} <<'{tag}'\n{content}{tag}"


def _size_bytes(size: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    s = size.strip().upper().removesuffix("B").removesuffix("I")
    if s and s[-1] in units:
        return int(float(s[:-1]) * units[s[-1]])
    return int(s)


# ---------------------------------------------------------------------------- cross-process ops
def list_runs() -> list[Path]:
    root = runs_root()
    return sorted(p for p in root.iterdir() if (p / "state.json").is_file()) if root.is_dir() else []


def down_run(run_dir: Path) -> list[str]:
    return Fleet.load(run_dir).down()


def reap_orphans() -> list[str]:
    """Tear down runs whose owning process is gone (a test run killed with SIGKILL: its QEMUs
    died with it, its namespace and files did not)."""
    done: list[str] = []
    for run in list_runs():
        try:
            f = Fleet.load(run)
        except (OSError, ValueError, KeyError):
            continue
        o = f.owner
        if o and proc_starttime(o["pid"]) != o["starttime"]:
            done += [f"orphan run {f.run_id} (owner pid {o['pid']} gone)", *f.down()]
    return done


def down_all() -> list[str]:
    """Tear down every run under runs_root(), then any leftover ``vmlab-*`` namespace whose run
    directory is gone."""
    done: list[str] = []
    for run in list_runs():
        done += down_run(run)
    known = {json.loads((r / "state.json").read_text())["netns"] for r in list_runs()}
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        ns = line.split()[0] if line.strip() else ""
        if ns.startswith("vmlab-") and ns not in known:
            _ip("netns", "del", ns, check=False)
            done.append(f"stale netns {ns} deleted")
    return done


def leftovers() -> list[str]:
    """Everything vmlab may leave on this machine, as lines (empty: nothing): runs, ``vmlab-*`` network
    namespaces, QEMU processes of vmlab VMs, loop devices whose backing file is under the runs directory."""
    found = [f"run {run.name}" for run in list_runs()]
    for line in _ip("netns", "list", check=False).stdout.splitlines():
        if line.startswith("vmlab-"):
            found.append(f"netns {line.split()[0]}")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(QEMU.encode()) and b"-name" in argv:
                name = argv[argv.index(b"-name") + 1].decode(errors="replace")
                if name.startswith("vmlab-") and proc_starttime(int(proc.name)) is not None:
                    found.append(f"qemu pid {proc.name} {name.split(',')[0]}")
    loops = subprocess.run(["losetup", "-nO", "NAME,BACK-FILE"], capture_output=True, text=True, check=False).stdout
    root = str(runs_root())
    found += [f"loop {line.split()[0]} on {line.split()[1]}" for line in loops.splitlines()
              if len(line.split()) > 1 and line.split()[1].startswith(root + "/")]
    return found
