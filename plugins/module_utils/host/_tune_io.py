# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvm_host_tune's host side: read the knobs from sysfs, /proc and the configuration directories, write live
values and files, and run the few tools involved (tuned-adm, udevadm, systemctl).

Every path goes through ``root`` (the module's private ``_root``, ``/`` on a real host), so the unit tests run
all of it against fixture trees; tools are looked up under the same root only, so a fixture tree without them
never runs this machine's own. Stdlib only.
"""

from __future__ import annotations

import glob
import os
import re

from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import read_text, under
from ansible_collections.kvmops.fleet.plugins.module_utils.common._files_io import write_atomic as write_file
from ansible_collections.kvmops.fleet.plugins.module_utils.host import _tune_plan as plan

TOOL_DIRS = ("usr/sbin", "usr/bin", "sbin", "bin")


class ApplyError(Exception):
    """A write failed. ``done``: what was applied before it (knobs and files)."""

    def __init__(self, msg, done):
        super().__init__(msg)
        self.done = done


def _value(path):
    text = read_text(path)
    return None if text is None else text.strip()


def _int(path):
    text = _value(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def read_nodes(root):
    nodes = {}
    for d in glob.glob(under(root, "/sys/devices/system/node/node[0-9]*")):
        m = re.search(r"node(\d+)$", d)
        if not m or not os.path.isdir(d):
            continue
        pages = {}
        for hp in glob.glob(os.path.join(d, "hugepages", "hugepages-*kB")):
            kb = int(re.search(r"hugepages-(\d+)kB$", hp).group(1))
            pages[kb] = _int(os.path.join(hp, "nr_hugepages"))
        nodes[int(m.group(1))] = {
            "mem_kb": plan.parse_node_meminfo(read_text(os.path.join(d, "meminfo"))),
            "hugepages": pages,
        }
    return nodes


def read_devices(root):
    devices = {}
    for d in sorted(glob.glob(under(root, "/sys/block/*"))):
        name = os.path.basename(d)
        queue = os.path.join(d, "queue")
        if not os.path.exists(os.path.join(d, "device")) or not os.path.exists(os.path.join(queue, "scheduler")):
            continue  # virtual devices (loop, dm, md, zram) are not tuned here
        active, offered = plan.parse_choice(read_text(os.path.join(queue, "scheduler")))
        subsystem = os.path.realpath(os.path.join(d, "device", "subsystem"))
        devices[name] = {
            "scheduler": active,
            "schedulers": offered,
            "rotational": _value(os.path.join(queue, "rotational")) == "1",
            "transport": os.path.basename(subsystem) if os.path.exists(subsystem) else None,
            "read_ahead_kb": _int(os.path.join(queue, "read_ahead_kb")),
            "nr_requests": _int(os.path.join(queue, "nr_requests")),
        }
    return devices


def _knob_dir(root, path, keys, choice=False):
    d = under(root, path)
    if not os.path.isdir(d):
        return None
    out = {}
    for key in keys:
        text = read_text(os.path.join(d, key))
        if choice:
            active, offered = plan.parse_choice(text)
            out[key] = active
            out[key + "_offered"] = offered if text is not None else []
        else:
            out[key] = None if text is None else text.strip()
    return out


def _config_files(root, dirs, suffix, extra=()):
    out = []
    for d in dirs:
        for path in sorted(glob.glob(under(root, d) + "/*" + suffix)):
            text = read_text(path)
            if text is not None:  # a dangling link or a directory is not read by the host either
                out.append((d + "/" + os.path.basename(path), text))
    for path in extra:
        text = read_text(under(root, path))
        if text is not None:
            out.append((path, text))
    return out


def read_host(root, sysctl_keys):
    """The host as _tune_plan.plan() takes it (see its module docstring)."""
    cpuinfo = read_text(under(root, "/proc/cpuinfo")) or ""
    flags = set()
    for line in cpuinfo.splitlines():
        key, _sep, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    sysctl = {}
    for key in [*sysctl_keys, plan.NUMA_BALANCING]:
        sysctl[key] = _value(under(root, "/proc/sys/" + key.replace(".", "/")))
    present = _value(under(root, "/sys/devices/system/cpu/present"))
    try:
        cpus = plan.parse_cpuset(present, "present") if present else []
    except plan.CpusetError:
        cpus = []
    return {
        "cpus": cpus,
        "cpu_isolated": _value(under(root, "/sys/devices/system/cpu/isolated")),
        "tuned_vars": read_text(under(root, plan.TUNED_VARS_FILE)),
        "nodes": read_nodes(root),
        "pdpe1gb": "pdpe1gb" in flags,
        "cmdline": (read_text(under(root, "/proc/cmdline")) or "").strip(),
        "devices": read_devices(root),
        "ksm": _knob_dir(root, plan.KSM_DIR, plan.KSM_KEYS),
        "thp": _knob_dir(root, plan.THP_DIR, plan.THP_KEYS, choice=True),
        "sysctl": sysctl,
        "files": {p: read_text(under(root, p)) for p in plan.MANAGED_FILES},
        "wants": os.path.lexists(under(root, plan.WANTS_LINK)),
        "sysctl_files": _config_files(root, plan.SYSCTL_DIRS, ".conf", extra=(plan.SYSCTL_CONF,)),
        "udev_files": _config_files(root, plan.UDEV_DIRS, ".rules"),
    }


# ---- writing ---------------------------------------------------------------------------------------------------


def write_value(path, value):
    """One sysfs or /proc value (no temporary file: the kernel takes the write itself)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(value + "\n")


def _link(target, link):
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(target, link)


def find_tool(root, name):
    for d in TOOL_DIRS:
        path = under(root, "/" + d + "/" + name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def apply(root, result, runner, done=None):
    """Files first (what a reboot keeps), then the live values in plan order. Raises ApplyError with what was
    done before the failing step (``done``: what the caller did before, kept at the front)."""
    done = [] if done is None else done

    def step(what, func, *args):
        try:
            func(*args)
        except OSError as exc:
            raise ApplyError(f"{what}: {exc.strerror or exc}", done) from None
        done.append(what)

    for path in result["files_changed"]:
        text = result["files"][path]
        if text is None:
            step(f"removed {path}", os.unlink, under(root, path))
        else:
            step(f"wrote {path}", write_file, under(root, path), text)
    if result["enable"]:
        step(f"enabled {plan.UNIT_NAME}", _link, plan.UNIT_FILE, under(root, plan.WANTS_LINK))
    if result["disable"]:
        step(f"disabled {plan.UNIT_NAME}", os.unlink, under(root, plan.WANTS_LINK))
    if plan.UNIT_FILE in result["files_changed"] or result["enable"] or result["disable"]:
        _tool(root, runner, ["systemctl", "daemon-reload"], done)
    if plan.UDEV_FILE in result["files_changed"]:
        _tool(root, runner, ["udevadm", "control", "--reload"], done)
    for knob, path, _before, after in result["live"]:
        step(f"{knob} = {after}", write_value, under(root, path), after)
    return done


def _tool(root, runner, argv, done):
    tool = find_tool(root, argv[0])
    if tool is None:
        return  # no systemd or udev here (a container, a fixture tree): the files take effect at boot
    rc, _out, err = runner([tool, *argv[1:]])
    if rc != 0:
        raise ApplyError(f"{' '.join(argv)} failed (rc {rc}): {err.strip()}", done)
    done.append(" ".join(argv))


# ---- tuned ---------------------------------------------------------------------------------------------------


def tuned_state(root, runner):
    """-> None when tuned-adm is not installed, else {"tool", "profiles": [...], "active": name or None}."""
    tool = find_tool(root, "tuned-adm")
    if tool is None:
        return None
    rc, out, err = runner([tool, "list"])
    if rc != 0:
        raise ApplyError(f"tuned-adm list failed (rc {rc}): {err.strip() or out.strip()}", [])
    profiles = []
    for line in out.splitlines():
        m = re.match(r"^-\s+(\S+)", line.strip())
        if m:
            profiles.append(m.group(1))
    return {"tool": tool, "profiles": sorted(set(profiles)), "active": tuned_active(tool, runner)}


def tuned_profiles_read(root, names):
    """The settings of tuned profiles ``names`` (see _tune_plan.tuned_profile_settings) and whether tuned applies
    the sysctl.d files again after its own (tuned-main.conf ``reapply_sysctl``, on unless set off)."""
    main = {}
    for section, opts in plan.parse_tuned_conf("[main]\n" + (read_text(under(root, plan.TUNED_MAIN_CONF)) or "")):
        if section == "main":  # the file has no section header: its keys are tuned's main options
            main.update(opts)
    reapply = main.get("reapply_sysctl", "1").strip().lower() not in ("0", "false", "no", "n", "off")
    settings = plan.tuned_profile_settings(
        names,
        lambda path: read_text(under(root, path)),
        os.uname().machine,
        read_text(under(root, "/proc/cpuinfo")) or "",
    )
    return settings, reapply


def tuned_enabled_profiles(root):
    """The profiles tuned applies at boot (its active_profile file), or [] when tuned.service is not enabled."""
    if not os.path.lexists(under(root, plan.TUNED_WANTS_LINK)):
        return []
    return (read_text(under(root, plan.TUNED_ACTIVE_FILE)) or "").split()


def tuned_service(root, runner):
    """-> {"enabled": bool, "active": bool} of tuned.service, or None when there is no systemctl (a fixture tree)."""
    tool = find_tool(root, "systemctl")
    if tool is None:
        return None
    rc_enabled, _o, _e = runner([tool, "is-enabled", "--quiet", "tuned.service"])
    rc_active, _o, _e = runner([tool, "is-active", "--quiet", "tuned.service"])
    return {"enabled": rc_enabled == 0, "active": rc_active == 0}


def tuned_service_start(root, runner, done):
    """``systemctl enable --now tuned.service``: tuned-adm talks to the daemon, and the daemon applies the
    profile at every boot."""
    _tool(root, runner, ["systemctl", "enable", "--now", "tuned.service"], done)


def tuned_active(tool, runner):
    rc, out, _err = runner([tool, "active"])
    m = re.search(r"Current active profile:\s*(\S+)", out or "")
    return m.group(1) if rc == 0 and m else None


def tuned_apply(tool, runner, profile, done):
    rc, out, err = runner([tool, "profile", profile])
    if rc != 0:
        raise ApplyError(f"tuned-adm profile {profile} failed (rc {rc}): {(err or out).strip()}", done)
    done.append(f"tuned profile = {profile}")
