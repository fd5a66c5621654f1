"""kvm_libvirt_network against a REAL libvirtd (libvirt 9.0), run as a real ansible process.

The libvirtd is the test's own, never the machine's: it runs in a mount namespace of its own with
/etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and /var/log/libvirt bind-mounted from the
test's work directory, and in a network namespace of its own (only ``lo``), and listens on a socket in that
work directory (``qemu:///system?socket=...``). So the machine's own networks (/etc/libvirt/qemu/networks,
``default`` included) and its links are out of its reach, which the tests check before and after. A network of
forward mode bridge creates no link anyway; libvirt only records the bridge's name.

Every present-state case runs four times (check, real, check, real): the check run predicts the real run
exactly and changes nothing (read back with the API), the second real run is unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import libvirt
import pytest

from kvmlab.proc import pid_alive, pid_starttime, stop_pid, wait_for

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[3]
PY = sys.executable
ANSIBLE = str(Path(PY).with_name("ansible"))
# what the lab daemon gets instead of the machine's directories
BOUND = {"etc": "/etc/libvirt", "run": "/run/libvirt", "lib": "/var/lib/libvirt", "cache": "/var/cache/libvirt",
         "log": "/var/log/libvirt"}
SYSTEM_NETWORKS = Path("/etc/libvirt/qemu/networks")


def _snapshot_system() -> dict:
    """The machine's own libvirt network files and links: none of them may change."""
    files = {}
    if SYSTEM_NETWORKS.is_dir():
        for path in sorted(SYSTEM_NETWORKS.rglob("*")):
            files[str(path)] = path.read_text() if path.is_file() else "dir"
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {"files": files, "links": sorted(line.split(":")[1].strip() for line in links.splitlines())}


class NetLab:
    """A private libvirtd: its own mount and network namespaces, its own state under ``workdir``."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="kvmops-netlab-", dir="/tmp"))
        self.sock = self.workdir / "sock"
        self.uri = f"qemu:///system?socket={self.sock}/libvirt-sock"
        self.proc: subprocess.Popen | None = None
        self.starttime: int | None = None

    def start(self) -> None:
        for sub in (*BOUND, "sock"):
            (self.workdir / sub).mkdir()
        conf = self.workdir / "libvirtd.conf"
        conf.write_text(f'unix_sock_dir = "{self.sock}"\nlog_level = 3\n'
                        f'log_outputs = "3:file:{self.workdir}/libvirtd.log"\n')
        binds = "".join(f"mount --bind {self.workdir / sub} {target}\n" for sub, target in BOUND.items())
        script = f"set -e\n{binds}ip link set lo up\nexec libvirtd -f {conf} -p {self.workdir}/libvirtd.pid\n"
        # unshare without --fork execs sh, which execs libvirtd: the Popen PID is libvirtd's
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script],
            stdout=(self.workdir / "stdout.log").open("w"), stderr=subprocess.STDOUT)
        self.starttime = pid_starttime(self.proc.pid)

        def answers() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"lab libvirtd exited: {(self.workdir / 'stdout.log').read_text()}")
            try:
                libvirt.open(self.uri).close()
            except libvirt.libvirtError:
                return False
            return True

        libvirt.registerErrorHandler(lambda ctx, err: None, None)
        wait_for(answers, 60, f"the lab libvirtd at {self.uri}", interval=0.1)

    def stop(self) -> None:
        if self.proc is not None and pid_alive(self.proc.pid, self.starttime):
            stop_pid(self.proc.pid, self.starttime, timeout=20)
        if self.proc is not None:
            self.proc.wait(timeout=20)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def conn(self) -> libvirt.virConnect:
        return libvirt.open(self.uri)

    def networks(self) -> dict:
        """Every network of the lab daemon, read with the API: name -> what the module manages."""
        conn = self.conn()
        try:
            out = {}
            for net in conn.listAllNetworks(0):
                persistent = net.isPersistent() == 1
                out[net.name()] = {
                    "active": net.isActive() == 1,
                    "persistent": persistent,
                    "autostart": bool(net.autostart()) if persistent else False,
                    "uuid": net.UUIDString(),
                    "inactive": net.XMLDesc(1) if persistent else None,
                    "live": net.XMLDesc(0) if net.isActive() == 1 else None,
                }
            return out
        finally:
            conn.close()

    def clear(self) -> None:
        conn = self.conn()
        try:
            for net in conn.listAllNetworks(0):
                if net.isActive() == 1:
                    net.destroy()
                if net.isPersistent() == 1:
                    net.undefine()
        finally:
            conn.close()


@pytest.fixture(scope="module")
def netlab():
    before = _snapshot_system()
    lab = NetLab()
    try:
        lab.start()
        # the daemon is not this machine's: other namespaces than ours
        for ns in ("mnt", "net"):
            assert os.readlink(f"/proc/{lab.proc.pid}/ns/{ns}") != os.readlink(f"/proc/self/ns/{ns}"), ns
        yield lab
    finally:
        lab.stop()
    assert _snapshot_system() == before, "the machine's own libvirt networks or links changed"


@pytest.fixture
def lab(netlab):
    netlab.clear()
    yield netlab
    netlab.clear()


def run_module(lab: NetLab, args: dict, *, check=False) -> dict:
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
               ANSIBLE_COLLECTIONS_PATH=str(REPO / ".build" / "collections"))
    cmd = [ANSIBLE, "localhost", "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={PY}",
           "-m", "kvmops.fleet.kvm_libvirt_network", "-a", json.dumps(dict(args, uri=lab.uri)), "--diff"]
    proc = subprocess.run(cmd + (["--check"] if check else []), env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]


def four_steps(lab: NetLab, args: dict) -> dict:
    """check, real, check, real -> the first real result; asserts prediction, no change by check, idempotence."""
    before = lab.networks()
    check1 = run_module(lab, args, check=True)
    assert not check1.get("failed"), check1.get("msg")
    assert lab.networks() == before, "check mode changed a network"
    real1 = run_module(lab, args)
    assert not real1.get("failed"), real1.get("msg")
    for key in ("changed", "changes", "diff", "networks"):
        assert check1[key] == real1[key], key
    check2 = run_module(lab, args, check=True)
    real2 = run_module(lab, args)
    assert check2["changed"] is False and real2["changed"] is False, (check2["changes"], real2["changes"])
    assert real2["diff"] == [] and real2["changes"] == []
    return real1


def minimal(name: str, bridge: str, uuid: str) -> str:
    return (f"<network>\n  <name>{name}</name>\n  <uuid>{uuid}</uuid>\n  <forward mode='bridge'/>\n"
            f"  <bridge name='{bridge}'/>\n</network>\n")


def test_define_start_autostart_then_unchanged(lab):
    args = {"networks": [{"name": "kvmnet-a", "bridge": "kvmnb0"},
                         {"name": "kvmnet-b", "bridge": "kvmnb1", "autostart": False}]}
    out = four_steps(lab, args)
    assert out["changes"] == ["defined network kvmnet-a", "started network kvmnet-a",
                              "autostart of network kvmnet-a on",
                              "defined network kvmnet-b", "started network kvmnet-b"]
    nets = lab.networks()
    assert set(nets) == {"kvmnet-a", "kvmnet-b"}
    for name, bridge, autostart in (("kvmnet-a", "kvmnb0", True), ("kvmnet-b", "kvmnb1", False)):
        net = nets[name]
        assert (net["active"], net["persistent"], net["autostart"]) == (True, True, autostart)
        assert net["inactive"] == net["live"] == minimal(name, bridge, net["uuid"])
    # the definitions went to the lab daemon's own /etc/libvirt, with libvirt's autostart link for kvmnet-a only
    networks_dir = lab.workdir / "etc" / "qemu" / "networks"
    assert sorted(p.name for p in networks_dir.glob("*.xml")) == ["kvmnet-a.xml", "kvmnet-b.xml"]
    assert sorted(p.name for p in (networks_dir / "autostart").iterdir()) == ["kvmnet-a.xml"]
    # the module runs on this machine, which has no such bridges: it says so
    warnings = [w["event"]["msg"] if isinstance(w, dict) else w for w in out.get("warnings", [])]
    assert any(w.startswith("networks[0].bridge: this host has no Linux bridge 'kvmnb0'") for w in warnings), warnings


def test_mismatch_refused_then_forced(lab):
    four_steps(lab, {"networks": [{"name": "kvmnet-c", "bridge": "kvmnb2"}]})
    before = lab.networks()
    moved = {"networks": [{"name": "kvmnet-c", "bridge": "kvmnb3"}]}
    for check in (True, False):
        out = run_module(lab, moved, check=check)
        assert out["failed"] is True and out["changed"] is False and out["changes"] == []
        assert out["msg"].startswith("networks[0]: network 'kvmnet-c' exists and its definition differs: bridge is "
                                     "'kvmnb2', declared 'kvmnb3'. Refusing to change it")
    assert lab.networks() == before
    out = four_steps(lab, dict(moved, force=True))
    assert out["changes"] == ["redefined network kvmnet-c", "stopped network kvmnet-c", "started network kvmnet-c"]
    after = lab.networks()["kvmnet-c"]
    uuid = before["kvmnet-c"]["uuid"]
    assert after["uuid"] == uuid and (after["active"], after["autostart"]) == (True, True)
    assert after["inactive"] == after["live"] == minimal("kvmnet-c", "kvmnb3", uuid)
    assert out["diff"] == [{"before_header": "network kvmnet-c", "after_header": "network kvmnet-c",
                            "before": minimal("kvmnet-c", "kvmnb2", uuid),
                            "after": minimal("kvmnet-c", "kvmnb3", uuid)}]


def test_differing_definition_made_by_hand_is_refused(lab):
    conn = lab.conn()
    conn.networkDefineXML("<network><name>kvmnet-p</name><forward mode='bridge'/><bridge name='kvmnb4'/>"
                          "<portgroup name='web'/></network>")
    conn.close()
    before = lab.networks()
    out = run_module(lab, {"networks": [{"name": "kvmnet-p", "bridge": "kvmnb4"}]})
    assert out["failed"] and out["changed"] is False
    assert "its definition differs: it has <portgroup>, not declared" in out["msg"]
    assert lab.networks() == before


def test_absent_removes(lab):
    four_steps(lab, {"networks": [{"name": "kvmnet-d", "bridge": "kvmnb5"}, {"name": "kvmnet-e", "bridge": "kvmnb6"}]})
    uuid = lab.networks()["kvmnet-d"]["uuid"]
    out = four_steps(lab, {"networks": [{"name": "kvmnet-d", "state": "absent"},
                                        {"name": "kvmnet-gone", "state": "absent"}]})
    assert out["changes"] == ["stopped network kvmnet-d", "undefined network kvmnet-d"]
    assert out["diff"] == [{"before_header": "network kvmnet-d", "after_header": "network kvmnet-d",
                            "before": minimal("kvmnet-d", "kvmnb5", uuid), "after": ""}]
    assert set(lab.networks()) == {"kvmnet-e"}
    assert not (lab.workdir / "etc" / "qemu" / "networks" / "kvmnet-d.xml").exists()


NAT = """<network><name>default</name><forward mode='nat'/><bridge name='kvmvirbr0' stp='on' delay='0'/>
<ip address='192.0.2.1' netmask='255.255.255.0'/></network>"""


@pytest.mark.parametrize("force", [False, True])
def test_nat_network_is_never_removed(lab, force):
    conn = lab.conn()
    conn.networkDefineXML(NAT)  # defined, not started: no bridge, no dnsmasq, no firewall rule
    conn.close()
    before = lab.networks()
    for check in (True, False):
        out = run_module(lab, {"networks": [{"name": "default", "state": "absent"}], "force": force}, check=check)
        assert out["failed"] is True and out["changed"] is False
        assert out["msg"].startswith("networks[0]: network 'default' has forward mode nat, not bridge: refusing to "
                                     "remove it")
    assert lab.networks() == before


BAD = [
    ({"networks": [{"name": "kvmnet-x", "bridge": "kvmnb7"}, {"name": "kvmnet-x", "bridge": "kvmnb8"}]},
     "networks[1].name: 'kvmnet-x' is also given in networks[0]"),
    ({"networks": [{"name": "kvmnet-x", "bridge": "kvmnb7"}, {"name": "kvmnet-y", "bridge": "kvmnb7"}]},
     "networks[1].bridge: 'kvmnb7' is also the bridge of networks[0]"),
    ({"networks": [{"name": "kvmnet-x", "bridge": "kvmnb-sixteen-ch"}]},
     "networks[0].bridge: is 16 characters long, at most 15"),
    ({"networks": [{"name": "kvmnet-x", "bridge": "kvm nb"}]}, "networks[0].bridge: 'kvm nb' is not valid"),
    ({"networks": [{"name": "kvm/net", "bridge": "kvmnb7"}]}, "networks[0].name: 'kvm/net' is not valid"),
    ({"networks": [{"name": "kvmnet-x"}]}, "networks[0].bridge: required with state present"),
    ({"networks": [{"name": "kvmnet-x", "bridge": "kvmnb7"}], "timeout": 0}, "timeout: must be more than 0"),
    # a valid new network beside a refused one: nothing at all is defined
    ({"networks": [{"name": "kvmnet-x", "bridge": "kvmnb7"}, {"name": "kvmnet-c0", "bridge": "kvmnb9"}]},
     "networks[1]: network 'kvmnet-c0' exists and its definition differs: bridge is 'kvmnb0', declared 'kvmnb9'"),
]


def test_bad_inputs_refused_with_nothing_changed(lab):
    conn = lab.conn()
    conn.networkDefineXML("<network><name>kvmnet-c0</name><forward mode='bridge'/><bridge name='kvmnb0'/></network>")
    conn.close()
    before = lab.networks()
    for args, msg in BAD:
        for check in (True, False):
            out = run_module(lab, args, check=check)
            assert out.get("failed") is True and out["changed"] is False, (args, check, out)
            assert out["msg"].startswith(msg), out["msg"]
        assert lab.networks() == before, args
    # the caller's variable name: the bridge role passes var_prefix
    out = run_module(lab, {"networks": [{"name": "kvmnet-c0", "bridge": "kvmnb1", "state": "absent"}],
                           "var_prefix": "bridge_libvirt_"})
    assert out["failed"] and out["msg"].startswith("bridge_libvirt_networks[0].bridge: network 'kvmnet-c0' is on "
                                                   "bridge kvmnb0, not 'kvmnb1'")
    assert lab.networks() == before
