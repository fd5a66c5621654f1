"""The dr role's DRBD resources: what refuses a declaration (each message names the variable), the configuration
rendered for DRBD 8.4 and 9 and checked by the REAL drbdadm of this machine's drbd-utils (drbdadm-84 for 8.4
syntax, drbdadm for 9; each refuses the other's), and the decisions on metadata and the initial sync from the
shared data-safety verdict on the recorded blkid/wipefs answers."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _disk_safety as ds
from ansible_collections.kvmops.fleet.plugins.module_utils.drbd import _config as c

PROBES = Path(__file__).parent / "fixtures" / "bench"
SECRET = "s3cret-0123456789abcdef"  # noqa: S105 (a test value)
DISK = "/dev/disk/by-id/virtio-vmlab-disk0"
V = "dr_drbd_resources"


def resource(**kw):
    r = {"name": "vm1disk", "port": 7789, "protocol": "C", "secret": SECRET, "cram_hmac_alg": "sha256",
         "sync_rate": "100M", "net_timeout": 60, "connect_int": 10, "ping_int": 10, "disk_timeout": 0,
         "fencing": "dont-care", "handlers": {}, "quorum": "off", "on_no_quorum": "suspend-io",
         "initial_primary": "hva", "force": False,
         "nodes": [{"host": "hva", "hostname": None, "address": "10.213.2.11", "disk": DISK, "minor": 0,
                    "node_id": None, "diskless": False},
                   {"host": "hvb", "hostname": None, "address": "10.213.2.12", "disk": DISK, "minor": 0,
                    "node_id": None, "diskless": False}]}
    r.update(kw)
    return r


def three(**kw):
    r = resource(**kw)
    r["nodes"].append({"host": "witness", "hostname": None, "address": "10.213.2.13", "disk": None, "minor": 0,
                       "node_id": None, "diskless": True})
    return r


HOSTS = ["hva", "hvb", "witness"]


def test_a_good_declaration_has_no_problem():
    assert c.problems([resource(), resource(name="vm2disk", port=7790, nodes=[
        dict(n, minor=1, disk="/dev/vg0/vm2") for n in resource()["nodes"]])], HOSTS) == []
    assert c.problems([three(quorum="majority")], HOSTS) == []


def _with(**changes):
    r = resource()
    for path, value in changes.items():
        if "__" in path:
            i, key = path.split("__")
            r["nodes"][int(i[1:])][key] = value
        else:
            r[path] = value
    return r


@pytest.mark.parametrize("res,msg", [
    (_with(secret="short"), f"{V}[0].secret: must have 16 to 64 characters (has 5; value hidden)"),  # noqa: S106
    (_with(secret="x" * 65), f"{V}[0].secret: must have 16 to 64 characters (has 65; value hidden)"),
    (_with(secret='has a "quote" and blanks'),  # noqa: S106
     f"{V}[0].secret: no blanks, double quotes or backslashes"),
    (_with(n1__host="hvz"), f"{V}[0].nodes[1].host: hvz is not in the inventory"),
    (_with(n1__disk="/dev/vdb"), f"{V}[0].nodes[1].disk: /dev/vdb is a kernel name that can change at the next "
                                 "boot"),
    (_with(n0__disk="vdb"), f"{V}[0].nodes[0].disk: 'vdb' is not a block device path under /dev"),
    (_with(n0__address="hva.example.net"), f"{V}[0].nodes[0].address: 'hva.example.net' is not an IPv4 or IPv6"),
    (_with(sync_rate="100MB"), f"{V}[0].sync_rate: '100MB' is not a rate from 1K to 4G"),
    (_with(sync_rate="5G"), f"{V}[0].sync_rate: '5G' is not a rate from 1K to 4G"),
    (_with(initial_primary="hvc"), f"{V}[0].initial_primary: hvc is not one of this resource's nodes with a disk"),
    (_with(quorum="majority"), f"{V}[0].quorum: majority on 2 nodes without a tiebreaker: with two nodes, neither "
                               "side has a majority"),
    (_with(n1__host="hva"), f"{V}[0].nodes[1].host: hva is also {V}[0].nodes[0]: each node once per resource"),
    (_with(handlers={"fence-peer": 'x"y'}), f"{V}[0].handlers.fence-peer: a command of 1 to 512 characters"),
    (_with(handlers={"bogus": "/bin/true"}), f"{V}[0].handlers: 'bogus' is not a DRBD handler"),
    (_with(nodes=resource()["nodes"][:1]), f"{V}[0].nodes: a resource needs at least two nodes, got 1"),
])
def test_a_bad_declaration_names_the_variable(res, msg):
    problems = c.problems([res], HOSTS)
    assert any(p.startswith(msg) for p in problems), problems
    assert all(SECRET not in p for p in problems)


def test_the_same_minor_or_port_twice_on_a_host():
    a = resource()
    b = resource(name="vm2disk")  # same port 7789 and minor 0 on hva and hvb
    problems = c.problems([a, b], HOSTS)
    assert f"{V}[1].nodes[0].minor: minor 0 on hva is also {V}[0].nodes[0].minor (vm1disk): one device per minor" \
        in problems
    assert f"{V}[1].port: port 7789 on hva is also {V}[0].port (vm1disk): one resource per port" in problems
    assert f"{V}[1].name: vm2disk" not in " ".join(problems)
    problems = c.problems([a, resource()], HOSTS)
    assert f"{V}[1].name: vm1disk is also {V}[0].name: give each resource once" in problems


def test_what_needs_drbd_9():
    assert c.needs_9(resource()) is None
    assert c.needs_9(three()) == "3 nodes (DRBD 8.4 replicates between two)"


# ---- rendering, checked by the real drbdadm ------------------------------------------------------------------

DRBDADM = shutil.which("drbdadm") or "/usr/sbin/drbdadm"
DRBDADM_84 = "/usr/lib/drbd/drbdadm-84"
needs_utils = pytest.mark.skipif(not Path(DRBDADM_84).exists(), reason="drbd-utils is not installed "
                                 "(hack/setup.sh installs it)")


def dump(tool, text, tmp_path):
    f = tmp_path / "r.res"
    f.write_text(text)
    return subprocess.run([tool, "-c", str(f), "dump", "all"], capture_output=True, text=True, timeout=60,
                          check=False)


V6 = [dict(resource()["nodes"][0], address="fd00::11"), dict(resource()["nodes"][1], address="fd00::12")]
FENCED = resource(fencing="resource-only", handlers={"fence-peer": "/usr/lib/drbd/crm-fence-peer.sh"})


@needs_utils
@pytest.mark.parametrize("res", [resource(), FENCED, resource(nodes=V6)])
def test_84_syntax_passes_drbdadm_84_and_not_drbdadm_9(res, tmp_path):
    text = c.render(res, "8.4")
    p = dump(DRBDADM_84, text, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "resource vm1disk" in p.stdout and "protocol           C;" in p.stdout
    if res["fencing"] != "dont-care":  # 8.4 keeps fencing in the disk section, which 9's parser refuses
        assert dump(DRBDADM, text, tmp_path).returncode != 0


@needs_utils
@pytest.mark.parametrize("res", [resource(), three(quorum="majority", fencing="resource-only"),
                                 three(nodes=resource()["nodes"] + [{"host": "hvc", "hostname": "hvc.example",
                                                                     "address": "10.213.2.14", "disk": DISK,
                                                                     "minor": 3, "node_id": None,
                                                                     "diskless": False}])])
def test_9_syntax_passes_drbdadm_and_not_drbdadm_84(res, tmp_path):
    text = c.render(res, "9")
    p = dump(DRBDADM, text, tmp_path)
    assert p.returncode == 0, p.stderr
    assert "node-id 0;" in text and dump(DRBDADM_84, text, tmp_path).returncode != 0


def test_rendering_is_deterministic_and_exact_for_84():
    text = c.render(resource(handlers={"split-brain": "/usr/lib/drbd/notify-split-brain.sh root"}), "8.4")
    assert text == c.render(copy.deepcopy(resource(handlers={"split-brain": "/usr/lib/drbd/notify-split-brain.sh "
                                                                            "root"})), "8.4")
    assert text == f"""\
# managed by kvmops.fleet (role dr, entry point drbd): DRBD 8.4 syntax
resource vm1disk {{
  net {{
    protocol C;
    cram-hmac-alg sha256;
    shared-secret "{SECRET}";
    after-sb-0pri disconnect;
    after-sb-1pri disconnect;
    after-sb-2pri disconnect;
    timeout 60;
    connect-int 10;
    ping-int 10;
  }}
  disk {{
    resync-rate 100M;
    c-max-rate 100M;
    disk-timeout 0;
    fencing dont-care;
  }}
  handlers {{
    split-brain "/usr/lib/drbd/notify-split-brain.sh root";
  }}
  on hva {{
    device /dev/drbd0 minor 0;
    disk {DISK};
    address 10.213.2.11:7789;
    meta-disk internal;
  }}
  on hvb {{
    device /dev/drbd0 minor 0;
    disk {DISK};
    address 10.213.2.12:7789;
    meta-disk internal;
  }}
}}
"""


def test_9_quorum_mesh_and_diskless_node():
    text = c.render(three(quorum="majority", on_no_quorum="io-error"), "9")
    assert "  options {\n    quorum majority;\n    on-no-quorum io-error;\n  }" in text
    assert "  on witness {\n    node-id 2;\n    device /dev/drbd0 minor 0;\n    disk none;\n" in text
    assert "  connection-mesh {\n    hosts hva hvb witness;\n  }" in text
    net = text[text.index("  net {"):text.index("  disk {")]
    assert "    fencing dont-care;\n" in net  # 9: fencing is a net option


def test_mask():
    assert c.mask(f'shared-secret "{SECRET}";', SECRET) == 'shared-secret "********";'
    assert c.mask("", SECRET) == "" and c.mask("x", "") == "x"


# ---- metadata and initial sync decisions on the shared verdict -----------------------------------------------


def verdict(kind="clean", **kw):
    rec = json.loads((PROBES / f"probe-{kind}.json").read_text())
    facts = {"path": DISK, "real": "/dev/vdb", "exists": True, "is_block": True, "holders": [], "partitions": [],
             "mounts": [], "swap": False, "openers": [], "excl_error": None}
    for tool in ("blkid", "wipefs"):
        facts.update({f"{tool}_rc": rec[tool]["rc"], f"{tool}_out": rec[tool]["stdout"],
                      f"{tool}_err": rec[tool]["stderr"]})
    facts.update(kw)
    return ds.examine(facts)


W = f"{V}[0].nodes[1].disk"


def test_metadata_on_an_empty_device_is_created():
    assert c.metadata_action(verdict(), False, False, W) == "create"


@pytest.mark.parametrize("kind,found", [("ext4", "ext4 signature"), ("lvm2", "LVM2_member signature"),
                                        ("md", "linux_raid_member signature"), ("dos", "dos partition table"),
                                        ("gpt", "gpt partition table"), ("swap", "swap signature")])
def test_metadata_on_a_device_with_data_is_refused_unless_force(kind, found):
    with pytest.raises(c.ConfigError) as err:
        c.metadata_action(verdict(kind), False, False, W)
    msg = str(err.value)
    assert msg.startswith(f"{W}: {DISK} (/dev/vdb) is not empty: {found}") and "set the resource's force: true" in msg
    assert c.metadata_action(verdict(kind), False, True, W) == "create"


def test_existing_drbd_metadata_is_never_recreated():
    assert c.metadata_action(verdict("drbd"), False, False, W) == "none"
    assert c.metadata_action(verdict("drbd"), False, True, W) == "none"  # not even with force
    assert c.metadata_action(verdict(holders=["drbd0 (DRBD)"]), True, False, W) == "none"
    assert c.metadata_action(verdict("ext4"), True, False, W) == "none"  # up: never touched, whatever blkid says


@pytest.mark.parametrize("kw,found", [({"mounts": ["/srv"]}, "mounted at /srv"),
                                      ({"holders": ["dm-0 (LVM vg-x)"]}, "held by dm-0 (LVM vg-x)"),
                                      ({"holders": ["drbd3 (DRBD)"]}, "held by drbd3 (DRBD)"),
                                      ({"openers": ["qemu-system-x86 (pid 7)"]}, "open by qemu-system-x86 (pid 7)")])
def test_a_device_in_use_is_refused_even_with_force(kw, found):
    with pytest.raises(c.ConfigError, match=rf"^{re.escape(W)}: .* is in use .* not even with force: .*"
                                            rf"{re.escape(found)}"):
        c.metadata_action(verdict(**kw), False, True, W)


def test_a_missing_device_is_named():
    with pytest.raises(c.ConfigError, match=rf"^{re.escape(W)}: {DISK} does not exist$"):
        c.metadata_action(ds.examine({"path": DISK, "exists": False}), False, False, W)


@pytest.mark.parametrize("local,peers,connected,action", [
    (["Inconsistent"], ["Inconsistent"], True, "start"),
    (["Inconsistent"], ["DUnknown"], False, "wait"),
    (["UpToDate"], ["UpToDate"], True, "none"),
    (["UpToDate"], ["DUnknown"], False, "none"),
])
def test_initial_sync(local, peers, connected, action):
    assert c.initial_sync_action(local, peers, connected) == action


def test_initial_sync_never_overwrites_a_peer_with_data():
    with pytest.raises(c.ConfigError, match="the peer's disk is UpToDate while this node's is Inconsistent"):
        c.initial_sync_action(["Inconsistent"], ["UpToDate"], True)
