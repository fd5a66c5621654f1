# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvm_tune's host side: what the host can do (kernel traffic-control support for live bandwidth limits)
and the bounded libvirt calls that read the domain and apply a plan from ``_plan.plan()``.

libvirt implements interface bandwidth limits by running ``tc`` on the host side device of the interface
(the tap ``vnetN``): inbound limits (traffic into the guest) are an ``htb`` root qdisc with one class, an
``sfq`` leaf and an ``fw`` filter; outbound limits (traffic from the guest) are an ``ingress`` qdisc with
a ``u32`` filter that ``police``s. A kernel without one of these objects makes ``tc`` fail; libvirt 9.0
answered such a live ``virDomainSetInterfaceParameters`` on this project's lab with a segfault of
libvirtd. So the kernel is checked first and a host that cannot do it gets no live call at all.
"""

from __future__ import annotations

import gzip
import os
import re
import time

from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import (
    KvmError,
    LibvirtTimeout,
    is_local_uri,
    libvirt,
    lookup_domain,
    open_connection,
    raise_worker_error,
    run_bounded,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.tune import _numa, _plan

# kernel objects libvirt's tc commands need, per direction as seen from the guest, and their Kconfig names
BANDWIDTH_KERNEL = {
    "inbound": ("sch_htb", "sch_sfq", "cls_fw"),
    "outbound": ("sch_ingress", "cls_u32", "act_police"),
}
KCONFIG = {
    "sch_htb": "CONFIG_NET_SCH_HTB",
    "sch_sfq": "CONFIG_NET_SCH_SFQ",
    "cls_fw": "CONFIG_NET_CLS_FW",
    "sch_ingress": "CONFIG_NET_SCH_INGRESS",
    "cls_u32": "CONFIG_NET_CLS_U32",
    "act_police": "CONFIG_NET_ACT_POLICE",
}
TC_PATHS = ("/usr/sbin/tc", "/sbin/tc")


def _read(path: str, compressed: bool = False):
    try:
        if compressed:
            with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
                return fh.read()
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def kernel_objects(names, root: str = "/", release=None) -> dict:
    """-> {name: True (built in, loaded or loadable) | False (not in this kernel) | None (cannot tell)}.

    Sources, most direct first: /sys/module/NAME (loaded, or built in with parameters); the module lists
    of the running kernel (/lib/modules/RELEASE/modules.builtin and modules.dep: authoritative when
    present, ``tc`` loads a listed module on demand); the kernel configuration (/proc/config.gz or
    /boot/config-RELEASE; ``=m`` without module lists cannot be loaded). ``root`` is for tests.
    """
    release = release or os.uname().release
    base = root.rstrip("/")
    moddir = f"{base}/lib/modules/{release}"
    lists = [text for text in (_read(f"{moddir}/modules.builtin"), _read(f"{moddir}/modules.dep")) if text]
    config = _read(f"{base}/proc/config.gz", compressed=True) or _read(f"{base}/boot/config-{release}")
    out = {}
    for name in names:
        if os.path.isdir(f"{base}/sys/module/{name}"):
            out[name] = True
        elif lists:
            pattern = re.compile(r"(^|/)" + re.escape(name) + r"\.ko(\.[a-z]+)?(:|$)", re.M)
            out[name] = any(pattern.search(text) for text in lists)
        elif config is not None and KCONFIG.get(name):
            match = re.search("^" + re.escape(KCONFIG[name]) + r"=(\w+)", config, re.M)
            out[name] = bool(match and match.group(1) == "y")
        else:
            out[name] = None
    return out


def bandwidth_blocker(change: dict, uri: str, root: str = "/", release=None):
    """Why this host cannot set the bandwidth limit of ``change`` (a ``_tune`` change), or None.

    Only for a local libvirt (a remote URI's kernel is not this one: not checked) and only for changes of
    kind ``bandwidth``. Removing a limit needs nothing; setting one needs ``tc`` and the kernel objects of
    its direction (swapped for ``direct`` (macvtap) interfaces, whose host side sees the guest's traffic
    the other way round). Objects whose presence cannot be told are assumed present.
    """
    if change["kind"] != "bandwidth" or not is_local_uri(uri):
        return None
    values = change["detail"]["values"]
    directions = [d for d in ("inbound", "outbound") if values.get(f"{d}.average")]
    if change["detail"].get("type") == "direct":
        directions = [{"inbound": "outbound", "outbound": "inbound"}[d] for d in directions]
    if not directions:
        return None
    if not any(os.path.exists(root.rstrip("/") + path) for path in TC_PATHS):
        return "tc (iproute2) is not installed on this host"
    needed = [name for d in directions for name in BANDWIDTH_KERNEL[d]]
    have = kernel_objects(needed, root, release)
    missing = [name for name in needed if have[name] is False]
    if not missing:
        return None
    names = ", ".join(f"{n} ({KCONFIG[n]})" for n in missing)
    return f"this host's kernel lacks {names}, which libvirt's tc limits need"


# ---- bounded libvirt I/O ----------------------------------------------------------------------------


def _read_worker(emit, uri, name, want_others):
    conn = open_connection(uri)
    emit({"record": "caps", "xml": conn.getCapabilities(), "info": conn.getInfo()})
    dom = lookup_domain(conn, name)
    active = dom.isActive() == 1
    persistent = dom.isPersistent() == 1
    emit(
        {
            "record": "dom",
            "state": dom.state()[0],
            "active": active,
            "persistent": persistent,
            "inactive": dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) if persistent else None,
            "live": dom.XMLDesc(0) if active else None,
        }
    )
    if want_others:
        own, pinned = dom.UUIDString(), set()
        for other in conn.listAllDomains(0):
            if other.UUIDString() != own:
                pinned |= _numa.pinned_cpus_from_domain_xml(other.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        emit({"record": "others", "pinned": sorted(pinned)})


def read_host(uri, name, timeout, want_others):
    records, finished = run_bounded(_read_worker, time.monotonic() + timeout, uri, name, want_others)
    raise_worker_error(records, finished, "reading the domain and host", timeout)
    out = {"pinned": []}
    for rec in records:
        if rec["record"] == "caps":
            out["caps"], out["info"] = rec["xml"], rec["info"]
        elif rec["record"] == "dom":
            out["dom"] = rec
        elif rec["record"] == "others":
            out["pinned"] = rec["pinned"]
    return out


def _cpumap(cpuset, ncpus):
    cpus = set(_numa.parse_cpuset(cpuset))
    return tuple(i in cpus for i in range(ncpus))


def bandwidth_params(values: dict) -> dict:
    """_tune's bandwidth values -> virDomainSetInterfaceParameters typed parameters.

    Every key of a managed direction is passed (libvirt replaces a direction whole: a peak or burst not
    passed would be dropped anyway); an average of 0 removes that direction's limit.
    """
    return {key: int(value) for key, value in sorted(values.items())}


def _apply_worker(emit, uri, name, config_xml, ops):
    conn = open_connection(uri, readonly=False)
    if config_xml is not None:
        try:
            conn.defineXML(config_xml)
        except libvirt.libvirtError as exc:
            raise KvmError(f"{DEFINE}: libvirt refused: {exc}") from None
        emit({"record": "step", "step": DEFINE})
    if not ops:
        return
    dom = lookup_domain(conn, name)
    ncpus = conn.getCPUMap()[0]
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    for op in ops:
        kind, key, d = op["kind"], op["key"], op["detail"]
        step = "live " + _plan.describe(op)
        try:
            if kind == "vcpupin":
                dom.pinVcpuFlags(key, _cpumap(d["cpuset"], ncpus), live)
            elif kind == "emulatorpin":
                dom.pinEmulator(_cpumap(d["cpuset"], ncpus), live)
            elif kind == "iothreads":
                # one record per thread: a failure halfway says which threads were already added or removed
                for tid in d["add"]:
                    dom.addIOThread(tid, live)
                    emit({"record": "step", "step": f"{step}: added I/O thread {tid}"})
                for tid in d["remove"]:
                    dom.delIOThread(tid, live)
                    emit({"record": "step", "step": f"{step}: removed I/O thread {tid}"})
            elif kind == "iothreadpin":
                dom.pinIOThread(key, _cpumap(d["cpuset"], ncpus), live)
            elif kind == "numatune":
                dom.setNumaParameters({"numa_nodeset": d["nodeset"]}, live)
            elif kind == "iotune":
                dom.setBlockIoTune(key, d["values"], live)
            elif kind == "bandwidth":
                dom.setInterfaceParameters(key, bandwidth_params(d["values"]), live)
            else:
                raise KvmError(f"{step}: no live operation for {kind}")
        except libvirt.libvirtError as exc:
            raise KvmError(f"{step}: libvirt refused: {exc}") from None
        emit({"record": "step", "step": step})


DEFINE = "persistent definition"


class PartialApply(KvmError):
    """A step of the plan failed after others were applied. ``done``: the steps applied (``DEFINE``, ``"live
    vcpupin[0]"``, ...); ``not_done``: the steps planned but not applied. The definition is not restored: it
    holds what was asked for, and the next run retries only the live steps that still differ."""

    def __init__(self, msg, done, not_done):
        super().__init__(msg)
        self.done, self.not_done = done, not_done


def apply_changes(uri, name, config_xml, live_changes, timeout):
    """Apply a plan: define ``config_xml`` (when not None), then each live change in order, all bounded by
    ``timeout``. A failure before any step took effect raises the worker's error (nothing changed); a failure
    after one raises PartialApply saying what was applied and what was not."""
    ops = [{"kind": c["kind"], "key": c["key"], "detail": c["detail"]} for c in live_changes]
    planned = ([DEFINE] if config_xml is not None else []) + ["live " + _plan.describe(op) for op in ops]
    records, finished = run_bounded(_apply_worker, time.monotonic() + timeout, uri, name, config_xml, ops)
    done = [r["step"] for r in records if r.get("record") == "step"]
    try:
        raise_worker_error(records, finished, "applying the tuning", timeout)
    except KvmError as exc:
        if not done:
            raise
        not_done = [step for step in planned if step not in done]
        why = str(exc)
        if isinstance(exc, LibvirtTimeout):
            why = f"applying the tuning: libvirt did not answer within {timeout:.0f} s (timeout)"
        kept = (
            "; the persistent definition keeps the new tuning (not restored): it takes effect at the next boot, and "
            "the next run retries the live changes that still differ"
            if DEFINE in done
            else "; the next run retries the changes that still differ"
        )
        raise PartialApply(
            f"{why}. Partly applied: {', '.join(done)}; not applied: {', '.join(not_done) or 'none'}{kept}",
            done,
            not_done,
        ) from None
