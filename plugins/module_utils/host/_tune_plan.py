# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""PURE: kvm_host_tune's planner. Desired host knobs + the host as read by ``_tune_io.read_host`` -> what to
write live, which files to write, what needs a reboot; and, after the apply, what did not take and which file
overrides it.

Paths here are the host's real ones (``/sys/...``, ``/etc/...``); ``_tune_io`` puts them under the module's
private root for the unit tests. The host dict (``_tune_io.read_host``)::

    {"nodes": {0: {"mem_kb": 1048576, "hugepages": {2048: 0, 1048576: 0}}},
     "pdpe1gb": True, "cmdline": "...",
     "devices": {"vdb": {"scheduler": "mq-deadline", "schedulers": ["mq-deadline", "none"], "rotational": False,
                         "transport": "virtio", "read_ahead_kb": 128, "nr_requests": 256}},
     "ksm": {"run": "0", "pages_to_scan": "100", ...} or None, "thp": {"enabled": "madvise",
     "enabled_offered": [...], "defrag": ..., "defrag_offered": [...]} or None,
     "sysctl": {"vm.swappiness": "60", "kernel.numa_balancing": None (missing)},
     "files": {path: text or None}, "wants": True/False (the unit is enabled),
     "sysctl_files": [(path, text)], "udev_files": [(path, text)]}   # both in the order the host reads them

No I/O and no ansible imports.
"""

from __future__ import annotations

import fnmatch
import re

from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    CpusetError,
    OptionError,
    format_cpuset,
    parse_cpuset,
)

SIZES_KB = {"2M": 2048, "1G": 1048576}
SIZE_NAMES = {v: k for k, v in SIZES_KB.items()}
MAX_NUMNODES = 1024  # Linux: CONFIG_NODES_SHIFT is at most 10

SYSCTL_FILE = "/etc/sysctl.d/90-kvmops-fleet.conf"
UDEV_FILE = "/etc/udev/rules.d/90-kvmops-fleet-io.rules"
UNIT_NAME = "kvmops-host-tune.service"
UNIT_FILE = "/etc/systemd/system/" + UNIT_NAME
WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/" + UNIT_NAME
MANAGED_FILES = (SYSCTL_FILE, UDEV_FILE, UNIT_FILE)
HEADER = "# Managed by kvmops.fleet.kvm_host_tune: changes made here are overwritten by the next run.\n"

# systemd-sysctl and udev read these directories; a file name in an earlier directory hides the same name in a
# later one, and all files are read in the order of their names (sysctl.d(5), udev(7))
SYSCTL_DIRS = ("/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d", "/lib/sysctl.d")
SYSCTL_CONF = "/etc/sysctl.conf"  # read last by `sysctl --system` (Debian links it as /etc/sysctl.d/99-sysctl.conf)
UDEV_DIRS = (
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/local/lib/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
)

NODE_DIR = "/sys/devices/system/node/node{node}"
HUGEPAGES_FILE = NODE_DIR + "/hugepages/hugepages-{kb}kB/nr_hugepages"
KSM_DIR = "/sys/kernel/mm/ksm"
THP_DIR = "/sys/kernel/mm/transparent_hugepage"
KSM_KEYS = ("pages_to_scan", "sleep_millisecs", "merge_across_nodes", "run")
THP_KEYS = ("enabled", "defrag")
QUEUE_KEYS = ("scheduler", "read_ahead_kb", "nr_requests")  # in this order: a scheduler change resets nr_requests
TRANSPORT_UDEV = {
    "virtio": 'DRIVERS=="virtio_blk"',  # not SUBSYSTEMS=="virtio": a virtio-scsi disk has a virtio parent too
    "nvme": 'SUBSYSTEMS=="nvme"',
    "scsi": 'SUBSYSTEMS=="scsi"',
}

# the sysctls the module sets (a short list: what KVM host guides change), each with the kernel's own range;
# kernel.numa_balancing is O(numa_balancing)
SYSCTLS = {
    "vm.swappiness": (0, 200),
    "vm.dirty_ratio": (0, 100),
    "vm.dirty_background_ratio": (0, 100),
    "vm.dirty_bytes": (0, 2**63 - 1),
    "vm.dirty_background_bytes": (0, 2**63 - 1),
    "vm.dirty_expire_centisecs": (0, 2**31 - 1),
    "vm.dirty_writeback_centisecs": (0, 2**31 - 1),
    "vm.vfs_cache_pressure": (0, 2**31 - 1),
    "vm.min_free_kbytes": (0, 2**31 - 1),
    "vm.zone_reclaim_mode": (0, 7),
    "vm.overcommit_memory": (0, 2),
    "vm.max_map_count": (0, 2**31 - 1),
    "kernel.sched_autogroup_enabled": (0, 1),
}
# the kernel keeps only one of each pair: writing one sets the other to 0
SYSCTL_EXCLUSIVE = (("vm.dirty_ratio", "vm.dirty_bytes"), ("vm.dirty_background_ratio", "vm.dirty_background_bytes"))
NUMA_BALANCING = "kernel.numa_balancing"


class HostTuneError(ValueError):
    """Desired knobs the host cannot take (before any change); the message starts with the option's path."""


class OptionValueError(HostTuneError, OptionError):
    """An option's own value is wrong (raised by the RULES' custom checks, so check_module reports it)."""


# ---- option checks that need no host (RULES: Custom) ------------------------------------------------------------


def check_hugepages(value, path):
    seen = []
    for i, raw in enumerate(value or []):
        entry = raw or {}
        node, size = entry.get("node"), entry.get("size") or "2M"
        for j, (other_node, other_size) in enumerate(seen):
            if other_size == size and (node is None or other_node is None or node == other_node):
                where = f"node {node}" if node is not None else "every node"
                raise OptionValueError(
                    f"{path}[{i}]: {size} pages for {where} are also given in {path}[{j}]: give each node and size "
                    "once (entries are not merged)"
                )
        seen.append((node, size))


def check_io_schedulers(value, path):
    seen = {}
    for i, raw in enumerate(value or []):
        entry = raw or {}
        key = (entry.get("name", "*"), entry.get("rotational"), entry.get("transport"))
        if key in seen:
            raise OptionValueError(
                f"{path}[{i}]: matches the same devices as {path}[{seen[key]}] (name, rotational, transport): "
                "merge the two entries"
            )
        seen[key] = i
        if not any(entry.get(k) is not None for k in QUEUE_KEYS):
            raise OptionValueError(f"{path}[{i}]: sets nothing: give scheduler, read_ahead_kb or nr_requests")


def check_sysctls(value, path):
    if not isinstance(value, dict):
        raise OptionValueError(f"{path}: must be a dictionary, got {value!r}")
    for key, item in value.items():
        if key not in SYSCTLS:
            hint = " (use numa_balancing)" if key == NUMA_BALANCING else ""
            raise OptionValueError(f"{path}: unknown key {key!r}{hint} (known: {', '.join(sorted(SYSCTLS))})")
        low, high = SYSCTLS[key]
        if isinstance(item, bool) or not isinstance(item, int):
            raise OptionValueError(f"{path}.{key}: must be an integer, got {item!r}")
        if not low <= item <= high:
            raise OptionValueError(f"{path}.{key}: must be from {low} to {high}, got {item} (the kernel's range)")
    for a, b in SYSCTL_EXCLUSIVE:
        if a in value and b in value:
            raise OptionValueError(f"{path}.{b}: cannot be set together with {path}.{a} (the kernel keeps one)")


# ---- parsers --------------------------------------------------------------------------------------------------


def parse_choice(text):
    """'always [madvise] never' -> ('madvise', ['always', 'madvise', 'never']); a bare word is both."""
    words = (text or "").split()
    active = None
    offered = []
    for raw in words:
        word = raw
        if raw.startswith("[") and raw.endswith("]"):
            word = raw[1:-1]
            active = word
        offered.append(word)
    if active is None and len(offered) == 1:
        active = offered[0]
    return active, offered


def parse_node_meminfo(text):
    m = re.search(r"MemTotal:\s+(\d+)\s*kB", text or "")
    return int(m.group(1)) if m else None


def parse_sysctl_text(text):
    """A sysctl.d file -> [(key, value)] (keys with dots; a leading '-' dropped; globs left as they are)."""
    out = []
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip().lstrip("-").strip().replace("/", ".")
        out.append((key, value.strip()))
    return out


def config_order(files, dirs, last=None):
    """[(path, text)] -> the files in the order the host reads them: one per base name (the earliest directory
    wins), sorted by base name; ``last`` (when present and not already read through a link) at the end."""
    by_name = {}
    for path, text in files:
        d, _sep, name = path.rpartition("/")
        if d not in dirs:
            continue
        rank = dirs.index(d)
        if name not in by_name or rank < by_name[name][0]:
            by_name[name] = (rank, path, text)
    ordered = [(p, t) for _n, (_r, p, t) in sorted(by_name.items())]
    if last is not None:
        ordered += [(p, t) for p, t in files if p == last]
    return ordered


def parse_cmdline_hugepages(cmdline):
    """-> {size_kb: counts} for hugepages given on the kernel command line; counts is {node: n} for the per-node
    form (hugepages=0:2,1:2) or {None: n}."""
    size = None
    out = {}
    for token in (cmdline or "").split():
        key, _sep, value = token.partition("=")
        if key == "hugepagesz" or (key == "default_hugepagesz" and size is None):
            size = _size_kb(value)
        elif key == "hugepages" and value:
            kb = size or 2048
            counts = {}
            try:
                if ":" in value:
                    for part in value.split(","):
                        node, _c, count = part.partition(":")
                        counts[int(node)] = _count(count)
                else:
                    counts[None] = _count(value)
            except ValueError:
                continue
            out[kb] = counts
    return out


def _count(text):
    m = re.match(r"^(\d+)$", text.strip())
    if not m:
        raise ValueError(text)
    return int(m.group(1))


def _size_kb(text):
    m = re.match(r"^(\d+)([KMG])?$", text.strip().upper())
    if not m:
        return None
    return int(m.group(1)) * {"K": 1, "M": 1024, "G": 1048576, None: 1 / 1024}[m.group(2)]


# ---- validation against the host -----------------------------------------------------------------------------


def _nodes_text(nodes):
    return ",".join(str(n) for n in sorted(nodes)) or "none"


def validate(desired, host):
    """Raise HostTuneError naming the option when the host cannot take ``desired``; -> the hugepages per
    (node, size_kb) wanted."""
    pages = {}
    nodes = host["nodes"]
    for i, entry in enumerate(desired.get("hugepages") or []):
        path = f"hugepages[{i}]"
        kb = SIZES_KB[entry["size"]]
        if entry.get("node") is not None and entry["node"] not in nodes:
            raise HostTuneError(
                f"{path}.node: NUMA node {entry['node']} does not exist on this host (nodes: {_nodes_text(nodes)})"
            )
        if kb == SIZES_KB["1G"] and not host["pdpe1gb"]:
            raise HostTuneError(f"{path}.size: 1G pages need a CPU with the pdpe1gb flag (not in /proc/cpuinfo)")
        targets = [entry["node"]] if entry.get("node") is not None else sorted(nodes)
        if not targets:
            raise HostTuneError(f"{path}: this host shows no NUMA node in /sys/devices/system/node")
        for node in targets:
            if kb not in nodes[node]["hugepages"]:
                raise HostTuneError(
                    f"{path}.size: node {node} has no {entry['size']} pages "
                    f"({HUGEPAGES_FILE.format(node=node, kb=kb)} is missing)"
                )
            pages[(node, kb)] = (entry["count"], f"{path}.count")
    for node in sorted(nodes):
        mem = nodes[node]["mem_kb"]
        total = sum(count * kb for (n, kb), (count, _p) in pages.items() if n == node)
        if mem is not None and total > mem:
            opt = [p for (n, _kb), (c, p) in sorted(pages.items()) if n == node and c][-1]
            raise HostTuneError(
                f"{opt}: {total // 1024} MiB of hugepages on node {node} is more than the node's memory "
                f"({mem // 1024} MiB)"
            )
    if desired.get("numa_balancing") and host["sysctl"].get(NUMA_BALANCING) is None:
        raise HostTuneError(
            "numa_balancing: this kernel has no automatic NUMA balancing (/proc/sys/kernel/numa_balancing is missing)"
        )
    for key in desired.get("sysctls") or {}:
        if host["sysctl"].get(key) is None:
            raise HostTuneError(f"sysctls.{key}: this kernel has no /proc/sys/{key.replace('.', '/')}")
    for i, entry in enumerate(desired.get("io_schedulers") or []):
        if entry.get("scheduler") is None:
            continue
        for dev in matching_devices(entry, host["devices"]):
            offered = host["devices"][dev]["schedulers"]
            if entry["scheduler"] not in offered:
                raise HostTuneError(
                    f"io_schedulers[{i}].scheduler: {dev} does not offer {entry['scheduler']!r} "
                    f"(it offers {', '.join(offered) or 'none'})"
                )
    ksm = desired.get("ksm") or {}
    if any(v is not None for v in ksm.values()) and host["ksm"] is None:
        raise HostTuneError(f"ksm: this kernel has no KSM ({KSM_DIR} is missing)")
    for key in KSM_KEYS:
        if ksm.get(key) is not None and host["ksm"].get(key) is None:
            raise HostTuneError(f"ksm.{key}: this kernel has no {KSM_DIR}/{key}")
    thp = desired.get("thp") or {}
    if any(v is not None for v in thp.values()) and host["thp"] is None:
        raise HostTuneError(f"thp: this kernel has no transparent hugepages ({THP_DIR} is missing)")
    for key in THP_KEYS:
        if thp.get(key) is not None and thp[key] not in host["thp"][key + "_offered"]:
            raise HostTuneError(
                f"thp.{key}: this kernel offers {', '.join(host['thp'][key + '_offered'])}, not {thp[key]!r}"
            )
    return {k: c for k, (c, _p) in pages.items()}


def matching_devices(entry, devices):
    out = []
    for name in sorted(devices):
        dev = devices[name]
        if not fnmatch.fnmatchcase(name, entry.get("name") or "*"):
            continue
        if entry.get("rotational") is not None and dev["rotational"] != entry["rotational"]:
            continue
        if entry.get("transport") is not None and dev["transport"] != entry["transport"]:
            continue
        out.append(name)
    return out


# ---- the wanted state ------------------------------------------------------------------------------------------


KSM_RUN = {"stop": "0", "merge": "1", "unmerge": "2"}


def _ksm_value(key, value):
    if key == "run":
        return KSM_RUN[value]
    return str(int(value)) if isinstance(value, bool) else str(value)


def wanted_knobs(desired, host, pages):
    """-> ordered [(knob, path, value)]: every live value the desired state sets, in the order it is written."""
    out = []
    for (node, kb), count in sorted(pages.items()):
        out.append((f"hugepages node{node} {SIZE_NAMES[kb]}", HUGEPAGES_FILE.format(node=node, kb=kb), str(count)))
    if desired.get("numa_balancing") is not None and host["sysctl"].get(NUMA_BALANCING) is not None:
        out.append((f"sysctl {NUMA_BALANCING}", _proc_sys(NUMA_BALANCING), "1" if desired["numa_balancing"] else "0"))
    for key, value in sorted((desired.get("sysctls") or {}).items()):
        out.append((f"sysctl {key}", _proc_sys(key), str(value)))
    per_dev = device_settings(desired, host)
    for dev in sorted(per_dev):
        for key in QUEUE_KEYS:
            if key in per_dev[dev]:
                out.append((f"{dev} queue/{key}", f"/sys/block/{dev}/queue/{key}", str(per_dev[dev][key])))
    ksm = desired.get("ksm") or {}
    for key in KSM_KEYS:
        if ksm.get(key) is not None:
            out.append((f"ksm {key}", f"{KSM_DIR}/{key}", _ksm_value(key, ksm[key])))
    thp = desired.get("thp") or {}
    for key in THP_KEYS:
        if thp.get(key) is not None:
            out.append((f"thp {key}", f"{THP_DIR}/{key}", thp[key]))
    return out


def _proc_sys(key):
    return "/proc/sys/" + key.replace(".", "/")


def device_settings(desired, host):
    """-> {device: {scheduler, read_ahead_kb, nr_requests}}: every entry that matches a device applies in order,
    a later entry's setting wins (as udev applies the rules' lines in order)."""
    out = {}
    for entry in desired.get("io_schedulers") or []:
        for dev in matching_devices(entry, host["devices"]):
            for key in QUEUE_KEYS:
                if entry.get(key) is not None:
                    out.setdefault(dev, {})[key] = entry[key]
    return out


def current_value(host, knob, path):
    kind = knob.split(" ", 1)[0]
    if kind == "hugepages":
        m = re.match(r"^/sys/devices/system/node/node(\d+)/hugepages/hugepages-(\d+)kB/", path)
        return _str(host["nodes"].get(int(m.group(1)), {}).get("hugepages", {}).get(int(m.group(2))))
    if kind == "sysctl":
        return host["sysctl"].get(knob.split(" ", 1)[1])
    if kind == "ksm":
        return (host["ksm"] or {}).get(knob.split(" ", 1)[1])
    if kind == "thp":
        return (host["thp"] or {}).get(knob.split(" ", 1)[1])
    dev, _sp, attr = knob.partition(" queue/")
    return _str(host["devices"].get(dev, {}).get(attr))


def _str(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


# ---- files -------------------------------------------------------------------------------------------------------


def render_sysctl(desired, host):
    lines = []
    if desired.get("numa_balancing") is not None and host["sysctl"].get(NUMA_BALANCING) is not None:
        lines.append(f"{NUMA_BALANCING} = {1 if desired['numa_balancing'] else 0}")
    for key, value in sorted((desired.get("sysctls") or {}).items()):
        lines.append(f"{key} = {value}")
    return HEADER + "\n".join(lines) + "\n" if lines else None


def render_udev(desired):
    lines = []
    for i, entry in enumerate(desired.get("io_schedulers") or []):
        match = ['ACTION=="add|change"', 'SUBSYSTEM=="block"', 'ENV{DEVTYPE}=="disk"', 'TEST=="device"']
        match.append(f'KERNEL=="{entry.get("name") or "*"}"')
        if entry.get("transport"):
            match.append(TRANSPORT_UDEV[entry["transport"]])
        if entry.get("rotational") is not None:
            match.append(f'ATTR{{queue/rotational}}=="{1 if entry["rotational"] else 0}"')
        sets = [f'ATTR{{queue/{k}}}="{entry[k]}"' for k in QUEUE_KEYS if entry.get(k) is not None]
        lines.append(f"# io_schedulers[{i}]\n" + ", ".join(match + sets))
    return HEADER + "\n".join(lines) + "\n" if lines else None


def render_unit(desired, pages):
    """The boot-time unit: 2M hugepages per node, KSM, THP (1G pages need the kernel command line)."""
    writes = []
    for (node, kb), count in sorted(pages.items()):
        if kb == SIZES_KB["2M"]:
            writes.append((HUGEPAGES_FILE.format(node=node, kb=kb), str(count)))
    ksm = desired.get("ksm") or {}
    # at boot nothing is merged yet, so merge_across_nodes needs no unmerge first (the live apply does one)
    for key in KSM_KEYS:
        if ksm.get(key) is not None:
            writes.append((f"{KSM_DIR}/{key}", _ksm_value(key, ksm[key])))
    thp = desired.get("thp") or {}
    for key in THP_KEYS:
        if thp.get(key) is not None:
            writes.append((f"{THP_DIR}/{key}", thp[key]))
    if not writes:
        return None
    execs = "\n".join(f"ExecStart=/bin/sh -c 'echo {value} > {path}'" for path, value in writes)
    return (
        HEADER + "[Unit]\n"
        "Description=kvmops.fleet host tuning: hugepages per NUMA node, KSM, transparent hugepages\n"
        "After=local-fs.target tuned.service ksm.service ksmtuned.service\n"
        "Before=libvirtd.service virtqemud.service\n\n"
        "[Service]\n"
        "Type=oneshot\n"
        "RemainAfterExit=yes\n" + execs + "\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def one_g_reboot_items(pages, host):
    """1G pages are persisted only by the kernel command line: say what it needs when it does not have it."""
    wanted = {node: c for (node, kb), c in sorted(pages.items()) if kb == SIZES_KB["1G"]}
    if not wanted:
        return []
    have = parse_cmdline_hugepages(host["cmdline"]).get(SIZES_KB["1G"], {})
    ok = {n: have.get(n, 0) for n in wanted} == wanted if None not in have else _even(have[None], wanted, host)
    if ok:
        return []
    form = ",".join(f"{n}:{c}" for n, c in sorted(wanted.items()))
    return [
        f"hugepages 1G: set now, but kept across a reboot only by the kernel command line: add 'hugepagesz=1G "
        f"hugepages={form}' (GRUB_CMDLINE_LINUX) and reboot when convenient"
    ]


def _even(total, wanted, host):
    nodes = sorted(host["nodes"])
    if set(wanted) != set(nodes) or not nodes:
        return False
    return all(total // len(nodes) + (1 if i < total % len(nodes) else 0) == wanted[n] for i, n in enumerate(nodes))


# ---- the plan ----------------------------------------------------------------------------------------------------


def plan(desired, host):
    """-> {"live": [(knob, path, before, after)], "files": {path: text or None}, "files_changed": [path],
    "enable": bool, "reboot_required": [...], "warnings": [...], "wanted": [(knob, path, value)]}."""
    pages = validate(desired, host)
    wanted = wanted_knobs(desired, host, pages)
    live = []
    ksm_merge_change = False
    for knob, path, value in wanted:
        before = current_value(host, knob, path)
        if before != value:
            if knob == "ksm merge_across_nodes":
                ksm_merge_change = True
            live.append((knob, path, before, value))
    if ksm_merge_change and (host["ksm"] or {}).get("run") != "2":
        # the kernel refuses a merge_across_nodes change while pages are merged: unmerge first, then set run
        at = next(i for i, c in enumerate(live) if c[0] == "ksm merge_across_nodes")
        live.insert(at, ("ksm run", f"{KSM_DIR}/run", (host["ksm"] or {}).get("run"), "2"))
        want_run = next((v for k, _p, v in wanted if k == "ksm run"), (host["ksm"] or {}).get("run"))
        if not any(c[0] == "ksm run" for c in live[at + 1 :]) and want_run != "2":
            live.append(("ksm run", f"{KSM_DIR}/run", "2", want_run))
    files = {SYSCTL_FILE: render_sysctl(desired, host), UDEV_FILE: render_udev(desired), UNIT_FILE: None}
    files[UNIT_FILE] = render_unit(desired, pages)
    files_changed = [p for p in MANAGED_FILES if host["files"].get(p) != files[p]]
    enable = files[UNIT_FILE] is not None and not host["wants"]
    disable = files[UNIT_FILE] is None and host["wants"]
    warnings = []
    for i, entry in enumerate(desired.get("io_schedulers") or []):
        if not matching_devices(entry, host["devices"]):
            warnings.append(f"io_schedulers[{i}] matches no disk of this host now (its udev rule waits for one)")
    return {
        "live": live,
        "files": files,
        "files_changed": files_changed,
        "enable": enable,
        "disable": disable,
        "reboot_required": one_g_reboot_items(pages, host),
        "warnings": warnings,
        "wanted": wanted,
    }


def live_diff(live):
    before = "".join(f"{knob} = {b if b is not None else '(unset)'}\n" for knob, _p, b, _a in live)
    after = "".join(f"{knob} = {a}\n" for knob, _p, _b, a in live)
    return {"before_header": "live values", "after_header": "live values", "before": before, "after": after}


# ---- verify ---------------------------------------------------------------------------------------------------


def sysctl_overrides(keys, sysctl_files):
    """-> {key: (file, value)} for each key whose last assignment at boot is not in our file."""
    ordered = config_order(sysctl_files, SYSCTL_DIRS, last=SYSCTL_CONF)
    last = {}
    for path, text in ordered:
        for key, value in parse_sysctl_text(text):
            for wanted in keys:
                if fnmatch.fnmatchcase(wanted, key):
                    last[wanted] = (path, value)
    return {k: v for k, v in last.items() if v[0] != SYSCTL_FILE}


_UDEV_ASSIGN = re.compile(r'ATTR\{queue/(scheduler|read_ahead_kb|nr_requests)\}\s*:?=\s*"([^"]*)"')
_UDEV_KERNEL = re.compile(r'(?<![A-Z])KERNEL\s*==\s*"([^"]*)"')


def udev_overrides(per_dev, udev_files):
    """-> {(device, attr): (file, value)}: a rule read after ours that assigns the attribute to the device
    (a KERNEL== match that names another device is skipped; other matches are taken as matching)."""
    ordered = config_order(udev_files, UDEV_DIRS)
    ours = UDEV_FILE.rpartition("/")[2]
    out = {}
    for path, text in ordered:
        if path.rpartition("/")[2] <= ours:
            continue
        for line in _logical_lines(text):
            kernels = _UDEV_KERNEL.findall(line)
            for attr, value in _UDEV_ASSIGN.findall(line):
                for dev, settings in per_dev.items():
                    if attr not in settings:
                        continue
                    if kernels and not any(fnmatch.fnmatchcase(dev, g) for k in kernels for g in k.split("|")):
                        continue
                    if value != str(settings[attr]):
                        out[(dev, attr)] = (path, value)
    return out


def _logical_lines(text):
    joined = (text or "").replace("\\\n", "")
    return [ln for ln in joined.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def with_files(host, files):
    """The host as it will be once ``files`` are written (for check mode's override check)."""
    out = dict(host, files=dict(host["files"], **files))
    for key in ("sysctl_files", "udev_files"):
        kept = [(p, t) for p, t in host[key] if p not in files]
        out[key] = kept + [
            (p, t)
            for p, t in files.items()
            if t is not None and p.endswith(".conf" if key == "sysctl_files" else ".rules")
        ]
    return out


def verify(desired, host, wanted, files, live=True):
    """The host as read back after the apply -> problems, each naming the knob, the wanted and the actual value
    and the file that overrides it. ``live=False`` (check mode): only the files that would override a knob."""
    problems = []
    for knob, path, value in wanted if live else []:
        actual = current_value(host, knob, path)
        if actual != value:
            problems.append(f"{knob}: wanted {value}, actual {actual if actual is not None else '(missing)'} ({path})")
    for path, text in files.items() if live else []:
        if host["files"].get(path) != text:
            problems.append(f"{path}: does not hold what was written")
    keys = [k for k, _p, _v in wanted if k.startswith("sysctl ")]
    for key, (path, value) in sorted(
        sysctl_overrides([k.split(" ", 1)[1] for k in keys], host["sysctl_files"]).items()
    ):
        want = next(v for k, _p, v in wanted if k == "sysctl " + key)
        if value != want:
            problems.append(
                f"sysctl {key}: wanted {want}, actual {current_value(host, 'sysctl ' + key, '')} now but {value} "
                f"after a reboot: {path} sets it after {SYSCTL_FILE}"
            )
    per_dev = device_settings(desired, host)
    for (dev, attr), (path, value) in sorted(udev_overrides(per_dev, host["udev_files"]).items()):
        problems.append(
            f"{dev} queue/{attr}: wanted {per_dev[dev][attr]}, actual "
            f"{current_value(host, f'{dev} queue/{attr}', '')} now but {value} at the next udev event or reboot: "
            f"{path} sets it after {UDEV_FILE}"
        )
    return problems


# ---- tuned's cpu-partitioning: isolated cores --------------------------------------------------------------

TUNED_VARS_FILE = "/etc/tuned/cpu-partitioning-variables.conf"
CPU_PARTITIONING = "cpu-partitioning"


def plan_isolated(isolated, profile, host):
    """O(tuned_isolated_cores) -> {"cpus": [...], "text": the variables file as it should be, "reboot": [...]}.
    Raises HostTuneError naming the option for CPUs the host lacks or for isolating every CPU."""
    if profile != CPU_PARTITIONING:
        raise HostTuneError(f"tuned_isolated_cores: only used with tuned_profile={CPU_PARTITIONING}")
    present = host["cpus"]
    if not present:
        raise HostTuneError("tuned_isolated_cores: this host lists no CPUs in /sys/devices/system/cpu/present")
    try:
        cpus = parse_cpuset(isolated, "tuned_isolated_cores", limit=max(present) + 1, existing=present)
    except CpusetError as exc:
        raise HostTuneError(str(exc)) from None
    missing = sorted(set(cpus) - set(present))
    if missing:
        raise HostTuneError(
            f"tuned_isolated_cores: host CPU(s) {format_cpuset(missing)} do not exist on this host "
            f"(host CPUs: {format_cpuset(present)})"
        )
    if set(cpus) >= set(present):
        raise HostTuneError(
            f"tuned_isolated_cores: {format_cpuset(cpus)} leaves no CPU for the host (host CPUs: "
            f"{format_cpuset(present)}): keep at least one for housekeeping"
        )
    text = render_tuned_vars(host.get("tuned_vars"), format_cpuset(cpus))
    reboot = []
    kernel = parse_cpuset(host["cpu_isolated"], "isolated") if (host.get("cpu_isolated") or "").strip() else []
    if kernel != cpus:
        reboot.append(
            f"tuned cpu-partitioning: isolated cores {format_cpuset(cpus)} take effect at the next boot (tuned puts "
            f"them on the kernel command line; the kernel isolates {format_cpuset(kernel) or 'none'} now)"
        )
    return {"cpus": cpus, "text": text, "reboot": reboot}


def render_tuned_vars(current, cpus_text):
    """The cpu-partitioning variables file with ``isolated_cores=`` set (its other lines kept)."""
    lines = (current or "").splitlines()
    out, done = [], False
    for line in lines:
        if re.match(r"^\s*isolated_cores\s*=", line):
            if not done:
                out.append(f"isolated_cores={cpus_text}")
                done = True
            continue
        out.append(line)
    if not done:
        out.append(f"isolated_cores={cpus_text}")
    return "\n".join(out) + "\n"


# ---- tuned profiles that override a knob ------------------------------------------------------------------------

# where tuned looks for a profile, the first hit wins (tuned 2.20 reads /etc/tuned and /usr/lib/tuned; 2.22 and
# later moved them into profiles/ subdirectories)
TUNED_PROFILE_DIRS = ("/etc/tuned/profiles", "/etc/tuned", "/usr/lib/tuned/profiles", "/usr/lib/tuned")
TUNED_MAIN_CONF = "/etc/tuned/tuned-main.conf"
TUNED_ACTIVE_FILE = "/etc/tuned/active_profile"
TUNED_WANTS_LINK = "/etc/systemd/system/multi-user.target.wants/tuned.service"
TUNED_INCLUDE_DEPTH = 16
# knobs only udev sets at boot: tuned starts after udev's coldplug and wins over the rule (the boot unit runs
# after tuned.service, so hugepages, KSM and THP stay ours)
_TUNED_QUEUE = {"read_ahead_kb": "readahead", "scheduler": "elevator"}


def parse_tuned_conf(text):
    """A tuned.conf -> [(section, {key: value})] in file order (configobj's subset tuned profiles use)."""
    sections = []
    current = None
    for raw in (text or "").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = (line[1:-1].strip(), {})
            sections.append(current)
            continue
        key, sep, value = line.partition("=")
        if sep and current is not None:
            current[1][key.strip()] = value.strip()
    return sections


def tuned_profile_settings(names, read, machine="", cpuinfo=""):
    """Profiles (the active ones, in order) -> {section: {"type": plugin, "options": {key: (value, file)}}}, with
    each profile's includes resolved as tuned does (included first, the including profile's keys win).

    ``read(path)`` returns a file's text or None. Sections whose ``uname_regex``/``cpuinfo_regex`` do not match
    this host are left out, as tuned leaves them out. Values that hold a ``${...}`` variable or function are
    left out too: this module does not evaluate them, and it names only overrides it is sure of."""
    merged = {}

    def load(name, depth, seen):
        if depth > TUNED_INCLUDE_DEPTH or name in seen:
            return
        for d in TUNED_PROFILE_DIRS:
            path = f"{d}/{name}/tuned.conf"
            text = read(path)
            if text is not None:
                break
        else:
            return
        sections = parse_tuned_conf(text)
        for section, opts in sections:
            if section == "main" and opts.get("include"):
                for inc in (i.strip() for i in opts["include"].split(",")):
                    if inc and "${" not in inc:
                        load(inc, depth + 1, seen | {name})
        for section, opts in sections:
            if section in ("main", "variables"):
                continue
            if not _tuned_section_applies(opts, machine, cpuinfo):
                merged.pop(section, None)
                continue
            if opts.get("replace", "").lower() in ("1", "true", "yes", "y") or section not in merged:
                merged[section] = {"type": opts.get("type", section), "options": {}}
            entry = merged[section]
            entry["type"] = opts.get("type", entry["type"])
            for key, value in opts.items():
                if key not in ("type", "replace", "uname_regex", "cpuinfo_regex") and "${" not in value:
                    entry["options"][key] = (value, path)

    for name in names:
        load(name, 0, frozenset())
    return merged


def _tuned_section_applies(opts, machine, cpuinfo):
    for key, subject in (("uname_regex", machine), ("cpuinfo_regex", cpuinfo)):
        pattern = opts.get(key)
        if pattern is None or "${" in pattern:
            continue
        try:
            if not re.search(pattern, subject, re.MULTILINE):
                return False
        except re.error:
            return False
    return True


def _tuned_devices_match(spec, dev):
    """tuned's ``devices`` option: comma-separated globs, ``!glob`` excludes; none given means every device."""
    if not spec:
        return True
    globs = [g.strip() for g in spec.split(",") if g.strip()]
    if any(g.startswith("!") and fnmatch.fnmatchcase(dev, g[1:]) for g in globs):
        return False
    wanted = [g for g in globs if not g.startswith("!")]
    return not wanted or any(fnmatch.fnmatchcase(dev, g) for g in wanted)


def _tuned_readahead_kb(value):
    """tuned's readahead: ``[>]N`` in KiB, or ``N s`` in 512-byte sectors -> (kib, only_raise) or None."""
    m = re.match(r"^(>)?\s*(\d+)\s*(s)?$", value.strip())
    if not m:
        return None
    kib = int(m.group(2)) // 2 if m.group(3) else int(m.group(2))
    return kib, bool(m.group(1))


def tuned_overrides(settings, per_dev, wanted, reapply_sysctl):
    """-> [(knob, tuned's value, file, "section key=value")] for each knob the tuned profile sets to something
    else when tuned applies it (at its start, at a profile switch, at a reboot after udev).

    Sysctls count only when tuned's ``reapply_sysctl`` is off: on (the default) it applies the sysctl.d files again
    after its own, so ours win."""
    out = []
    for section, entry in sorted(settings.items()):
        kind, opts = entry["type"], entry["options"]
        if kind == "disk":
            for dev, dev_settings in sorted(per_dev.items()):
                if not _tuned_devices_match(opts.get("devices", ("", ""))[0], dev):
                    continue
                for attr, key in _TUNED_QUEUE.items():
                    if attr not in dev_settings or key not in opts:
                        continue
                    value, path = opts[key]
                    want = dev_settings[attr]
                    if attr == "read_ahead_kb":
                        parsed = _tuned_readahead_kb(value)
                        if parsed is None:
                            continue
                        kib, only_raise = parsed
                        if kib == int(want) or (only_raise and int(want) >= kib):
                            continue
                        theirs = str(kib)
                    else:
                        choices = [c.strip() for c in value.split(",") if c.strip()]
                        if not choices or want in choices[:1]:
                            continue
                        theirs = choices[0]
                    out.append((f"{dev} queue/{attr}", theirs, path, f"[{section}] {key}={value}"))
        elif kind == "sysfs":
            for knob, kpath, want in wanted:
                if " queue/" not in knob:
                    continue
                for pattern, (value, path) in sorted(opts.items()):
                    if fnmatch.fnmatchcase(kpath, pattern) and value != str(want):
                        out.append((knob, value, path, f"[{section}] {pattern}={value}"))
        elif kind == "sysctl" and not reapply_sysctl:
            for knob, _kpath, want in wanted:
                key = knob[7:] if knob.startswith("sysctl ") else None
                if key not in opts:
                    continue
                value, path = opts[key]
                theirs = value.lstrip(">").strip()
                if theirs == str(want) or (value.startswith(">") and _ge(want, theirs)):
                    continue
                out.append((knob, theirs, path, f"[{section}] {key}={value}"))
    return out


def _ge(want, theirs):
    try:
        return int(want) >= int(theirs)
    except ValueError:
        return False
