"""The lab: real libvirt TCG domains brought into each state diagnostics must explain.

Everything a :class:`Lab` creates is written, as it is created, to ``<workdir>/<prefix>-<session>/state.json``
(domains, FIFOs, qemu-storage-daemon PIDs, mounts, loop devices, files). Teardown works from those records
only, so it runs the same in-process (``Lab.close``), from another process (``python -m kvmlab down``) and
for a run that died (the next ``Lab`` removes records whose owner is gone).

libvirt is never asked to list domains: one domain stuck in a job (a save into a FIFO) makes every
listing call hang, on this daemon shared with other test sessions too. The lab only looks up its own
domains by name, and bounds every call that may block.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import libvirt
import libvirt_qemu

from .daemons import URI, Daemons
from .guest import PROGRAMS, GuestImages
from .peer import Peer, remove_container
from .proc import LabError, pid_alive, pid_starttime, run, stop_pid, wait_for
from .states import CRASHED, PAUSED, RUNNING, SHUTOFF, STATES, StateSpec, parse_state_text, state_text
from .storage import LoopExt4, MiB, NbdExport, detach_loop, drain_fifo, make_fifo, thaw_pid, umount, unmount_fuse

log = logging.getLogger("kvmlab")

DEFAULT_WORKDIR = Path("/tmp/kvmops-lab")
PAUSED_POSTCOPY = (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY)
READY = "KVMLAB: ready"
UNDEFINE_FLAGS = (libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                  | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
# teardown order: thaw frozen FUSE daemons (anything touching their mounts blocks), unblock jobs, then domains
# (QEMU holds files in its own mount namespace), then the rest
PHASES = ("thaw", "fifo", "domain", "container", "process", "mount", "loop", "path")


class LabTimeout(LabError):
    """A libvirt call did not return within its bound."""


def bounded(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """Run ``fn`` in a daemon thread; raise LabTimeout if it has not returned after ``timeout`` seconds."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, name=f"kvmlab:{what}", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise LabTimeout(f"{what}: no answer from libvirt within {timeout}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def status_file_state(name: str) -> tuple[int, int] | None:
    """(state, reason) from libvirtd's own status XML; readable while the domain's API calls hang."""
    try:
        root = ET.parse(f"/run/libvirt/qemu/{name}.xml").getroot()
    except (OSError, ET.ParseError):
        return None
    return parse_state_text(root.get("state", "nostate"), root.get("reason", "unknown"))


# -- records and teardown --------------------------------------------------------------------------------

class StateFile:
    """JSON record of everything a lab session created; rewritten atomically on each change."""

    def __init__(self, path: Path, persistent: bool) -> None:
        self.path = path
        self.data: dict[str, Any] = {"pid": os.getpid(), "starttime": pid_starttime(os.getpid()),
                                     "persistent": persistent, "daemons": [], "records": []}
        if path.exists():
            old = json.loads(path.read_text())
            self.data["records"] = old.get("records", [])
            self.data["daemons"] = old.get("daemons", [])

    @property
    def records(self) -> list[dict[str, Any]]:
        return self.data["records"]

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def teardown(conn: libvirt.virConnect, records: list[dict[str, Any]]) -> list[str]:
    """Remove what ``records`` describe, in PHASES order; returns the errors (it always tries everything)."""
    errors: list[str] = []
    for phase in PHASES:
        for rec in reversed([r for r in records if r["kind"] == phase]):
            try:
                _teardown_one(conn, rec)
            except Exception as e:
                errors.append(f"{rec}: {e}")
    return errors


def _teardown_one(conn: libvirt.virConnect, rec: dict[str, Any]) -> None:
    kind = rec["kind"]
    if kind == "thaw":
        thaw_pid(rec["pid"], rec.get("starttime"))
    elif kind == "fifo":
        if Path(rec["path"]).exists():
            drain_fifo(Path(rec["path"]), lambda: _job_done(rec["domain"]), timeout=120)
    elif kind == "domain" and rec.get("uri"):          # the copy on the migration peer
        try:
            peer_conn = bounded(lambda: libvirt.open(rec["uri"]), 30, f"connect {rec['uri']}")
        except libvirt.libvirtError:
            return                                      # peer is gone, and its domains with it
        try:
            _remove_domain(peer_conn, rec["name"], rec.get("uuid"))
        finally:
            peer_conn.close()
    elif kind == "domain":
        _remove_domain(conn, rec["name"], rec.get("uuid"))
    elif kind == "container":
        remove_container(rec)
    elif kind == "process":
        stop_pid(rec["pid"], rec.get("starttime"))
    elif kind == "mount" and rec.get("fuse"):
        unmount_fuse(rec["path"])
    elif kind == "mount":
        umount(rec["path"])
    elif kind == "loop":
        detach_loop(rec["device"], rec["backing"])
    elif kind == "path":
        p = Path(rec["path"])
        if p.is_dir() and not p.is_symlink():
            if not os.path.ismount(p):
                shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _unix_socket_connected(path: str) -> bool:
    """True if /proc/net/unix shows a connected (state 03) socket on ``path`` (accepted server side)."""
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as f:
        next(f)
        return any(len(p) >= 8 and p[5] == "03" and p[7] == path for p in (line.split() for line in f))


def _job_done(name: str) -> bool:
    st = status_file_state(name)
    busy = (libvirt.VIR_DOMAIN_PAUSED_SAVE, libvirt.VIR_DOMAIN_PAUSED_DUMP)
    return st is None or st[0] != PAUSED or st[1] not in busy


def _remove_domain(conn: libvirt.virConnect, name: str, uuid: str | None) -> None:
    """Destroy + undefine; a domain that is (or meanwhile went) gone counts as removed."""
    try:
        dom = bounded(lambda: conn.lookupByName(name), 30, f"lookup {name}")
        if uuid and dom.UUIDString() != uuid:
            raise LabError(f"domain {name} has UUID {dom.UUIDString()}, not ours ({uuid}); left alone")
        if bounded(dom.isActive, 30, f"isActive {name}"):
            bounded(dom.destroy, 60, f"destroy {name}")
        bounded(lambda: dom.undefineFlags(UNDEFINE_FLAGS), 30, f"undefine {name}")
    except libvirt.libvirtError as e:
        # NO_DOMAIN: gone, e.g. a transient migration destination that died with its source
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise


def clean_stale(root: Path, prefix: str, conn: libvirt.virConnect) -> list[str]:
    """Tear down sessions under ``root`` whose owner died without cleaning up (not CLI ``up`` sessions)."""
    errors: list[str] = []
    for sf in sorted(root.glob(f"{prefix}-*/state.json")):
        try:
            data = json.loads(sf.read_text())
        except (OSError, ValueError):
            continue
        if data.get("persistent") or pid_alive(data.get("pid"), data.get("starttime")):
            continue
        log.warning("removing stale lab session %s", sf.parent)
        errs = teardown(conn, data.get("records", []))
        errors += errs
        if not errs:
            shutil.rmtree(sf.parent, ignore_errors=True)
    return errors


# -- domains -------------------------------------------------------------------------------------------

class LabDomain:
    """A handle on one lab domain. ``dom`` uses the lab's connection (do not close it)."""

    def __init__(self, lab: Lab, spec: StateSpec, name: str) -> None:
        self.lab, self.spec, self.name = lab, spec, name
        self.state_name = spec.key
        self.expected: tuple[int, int] = spec.expected
        self.dom: libvirt.virDomain | None = None
        self.uuid: str | None = None
        self.disk_path: Path | None = None
        self.mount_point: Path | None = None
        self.loop_device: str | None = None
        self.nbd_socket: Path | None = None
        self.fifo: Path | None = None
        self.console_log = lab.dir / f"{name}.console.log"
        self.time_to_state: float | None = None
        self.destroyed = False
        self._clear: Callable[[], None] = lambda: None
        self._threads: list[threading.Thread] = []
        self.loop: LoopExt4 | None = None
        self.nbd: NbdExport | None = None
        self.job_error: libvirt.libvirtError | None = None
        self.peer_uri: str | None = None
        self.disk_dir: Path | None = None

    def __repr__(self) -> str:
        return f"<LabDomain {self.name} {self.state_name} expected={state_text(self.expected)}>"

    def record(self, rec: dict[str, Any]) -> dict[str, Any]:
        stored = {**rec, "owner": self.name}
        self.lab.state.add(stored)
        return stored

    # -- observation (all bounded) --
    def state(self, timeout: float = 5.0) -> tuple[int, int]:
        assert self.dom is not None
        return tuple(bounded(self.dom.state, timeout, f"state {self.name}"))  # type: ignore[return-value]

    def status_file_state(self) -> tuple[int, int] | None:
        return status_file_state(self.name)

    def disk_errors(self, timeout: float = 5.0) -> dict[str, int]:
        assert self.dom is not None
        return bounded(self.dom.diskErrors, timeout, f"diskErrors {self.name}")

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def details(self) -> str:
        try:
            st = state_text(self.state(2.0))
        except Exception as e:
            st = f"? ({e})"
        tail = "\n".join(self.console().splitlines()[-25:])
        return (f"domain {self.name}: libvirt says {st}, status file {state_text(self.status_file_state())}, "
                f"expected {state_text(self.expected)}\n--- console tail ({self.console_log}):\n{tail}")

    # -- actions --
    def clear(self) -> None:
        """Remove the cause of the state without resuming the domain (no-op where there is no cause)."""
        self._clear()

    def destroy(self) -> None:
        """Tear down this domain and everything created for it; idempotent."""
        if self.destroyed:
            return
        errors = teardown(self.lab.conn, [r for r in self.lab.state.records if r.get("owner") == self.name])
        for t in self._threads:
            t.join(timeout=10)
        if errors:
            raise LabError(f"teardown of {self.name} incomplete:\n" + "\n".join(errors))
        self.lab.state.data["records"] = [r for r in self.lab.state.records if r.get("owner") != self.name]
        self.lab.state.save()
        self.lab._domains.pop(self.name, None)
        self.destroyed = True


class Lab:
    """``with Lab() as lab: d = lab.create("enospc")``. See the package README for each state."""

    def __init__(self, workdir: str | Path | None = None, prefix: str = "kvmlab", uri: str = URI,
                 cache: Path | None = None, session: str | None = None, persistent: bool = False) -> None:
        self.prefix, self.uri = prefix, uri
        self.root = Path(workdir or os.environ.get("KVMLAB_WORKDIR", DEFAULT_WORKDIR))
        self.session = session or str(os.getpid())
        self.dir = self.root / f"{prefix}-{self.session}"
        self.persistent = persistent
        self.images = GuestImages(cache)
        self.daemons = Daemons(self.dir)
        self.conn: libvirt.virConnect | None = None
        self._domains: dict[str, LabDomain] = {}
        self._seq = 0
        self.timings: dict[str, float] = {}
        self.peer: Peer | None = None
        self.peer_conn: libvirt.virConnect | None = None

    # -- lifecycle --
    def __enter__(self) -> Lab:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        for d in (self.root, self.dir):
            d.mkdir(mode=0o755, parents=True, exist_ok=True)
            d.chmod(0o755)              # QEMU (libvirt-qemu) reaches consoles, images, sockets below
        self.state = StateFile(self.dir / "state.json", self.persistent)
        self._seq = len({r.get("owner") for r in self.state.records})
        t = self.daemons.ensure()
        self.state.data["daemons"] += [list(x) for x in self.daemons.started]
        self.state.save()
        self.timings["daemons"] = t
        # errors come back as exceptions; libvirt's default handler would also print them to stderr
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self.conn = libvirt.open(self.uri)
        errors = clean_stale(self.root, self.prefix, self.conn)
        if errors:
            log.warning("stale lab sessions not fully removed: %s", errors)

    def detach(self) -> None:
        """Leave everything running (CLI ``up``); ``python -m kvmlab down`` removes it later."""
        self.state.save()
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def close(self) -> None:
        """Tear down every domain and resource of this session; stop daemons the session started."""
        errors: list[str] = []
        if self.conn is not None:
            errors += teardown(self.conn, self.state.records)
            for d in self._domains.values():
                d.destroyed = True
            self._domains.clear()
            if self.peer_conn is not None:
                self.peer_conn.close()
                self.peer_conn, self.peer = None, None
            self.conn.close()
            self.conn = None
        try:
            daemons = self.state.data.get("daemons", [])
            self.daemons.started = [tuple(x) for x in daemons]  # type: ignore[misc]
            self.daemons.stop()
        except Exception as e:
            errors.append(f"daemons: {e}")
        if errors:      # the state file stays: the next Lab (or `down`) retries what is left
            raise LabError("lab teardown incomplete:\n" + "\n".join(errors))
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- factory --
    def create(self, state: str, disk_dir: Path | None = None) -> LabDomain:
        """Bring up a new domain in ``state`` (a STATES key); returns once libvirt reports it.

        ``disk_dir`` (states without a disk of their own: running, user, saving, dumping, unknown) gives
        the domain a 4 MiB raw disk (vda, error_policy=stop) in that directory, e.g. on a :class:`BindFs`."""
        if self.conn is None:
            raise LabError("lab is not open")
        spec = STATES[state]
        self._seq += 1
        d = LabDomain(self, spec, f"{self.prefix}-{state.replace('_', '-')}-{self.session}-{self._seq}")
        d.disk_dir = disk_dir
        self._domains[d.name] = d
        t0 = time.monotonic()
        try:
            getattr(self, f"_bring_{state}")(d)
        except BaseException as e:
            details = d.details() if d.dom is not None and not spec.libvirt_blocked else ""
            try:
                d.destroy()
            except Exception as te:
                details += f"\n(teardown after failure also failed: {te})"
            if isinstance(e, LabError):
                raise LabError(f"{state}: {e}\n{details}") from e
            raise
        d.time_to_state = time.monotonic() - t0
        self.timings[d.name] = d.time_to_state
        log.info("%s reached %s in %.2fs", d.name, state_text(d.expected), d.time_to_state)
        return d

    def create_running(self, prepare: Callable[[LabDomain], str], program: str = "idle",
                       label: str = "running") -> LabDomain:
        """A running domain whose disks the caller makes: ``prepare(d)`` creates them (recording what it made
        with ``d.record``, so ``d.destroy()`` removes it after the domain) and returns the disk XML. The guest
        runs ``program`` (kvmlab.guest.PROGRAMS); returns once its console says it is ready."""
        if self.conn is None:
            raise LabError("lab is not open")
        self._seq += 1
        d = LabDomain(self, replace(STATES["running"], program=program),
                      f"{self.prefix}-{label}-{self.session}-{self._seq}")
        self._domains[d.name] = d
        t0 = time.monotonic()
        try:
            self._running_idle(d, disk=prepare(d))
            self._wait_state(d)
        except BaseException:
            d.destroy()
            raise
        d.time_to_state = time.monotonic() - t0
        self.timings[d.name] = d.time_to_state
        return d

    # -- building blocks --
    def _define(self, d: LabDomain, disk: str = "", devices: str = "", on_crash: str = "destroy") -> None:
        prog = PROGRAMS[d.spec.program]
        xml = f"""<domain type='qemu'>
  <name>{d.name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{self.images.kernel(prog.flavour)}</kernel>
    <initrd>{self.images.initrd(prog)}</initrd>
    <cmdline>{prog.cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>{on_crash}</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>{disk}{devices}
    <serial type='file'><source path='{d.console_log}'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>"""
        (self.dir / f"{d.name}.xml").write_text(xml)
        d.record({"kind": "path", "path": str(self.dir / f"{d.name}.xml")})
        d.record({"kind": "path", "path": str(d.console_log)})
        conn = self.conn
        assert conn is not None
        # recorded before defining: a define that times out here may still complete inside libvirtd later
        rec = d.record({"kind": "domain", "name": d.name, "uuid": None})
        d.dom = bounded(lambda: conn.defineXML(xml), 60, f"define {d.name} (libvirtd's domain list may be "
                        "locked: a look-up of a domain stuck in a job holds it)")
        d.uuid = rec["uuid"] = d.dom.UUIDString()
        self.state.save()

    def _start(self, d: LabDomain) -> None:
        assert d.dom is not None
        bounded(d.dom.create, 60, f"start {d.name}")

    def _wait_state(self, d: LabDomain, expected: tuple[int, int] | None = None) -> None:
        want = expected or d.expected
        assert d.dom is not None

        def reached() -> bool:
            st = tuple(d.dom.state())   # type: ignore[union-attr]
            if st == want:
                return True
            if st[0] == SHUTOFF or (st[0] in (PAUSED, CRASHED) and want[0] != st[0]):
                raise LabError(f"{d.name} went to {state_text(st)} instead of {state_text(want)}")  # type: ignore[arg-type]
            return False

        wait_for(reached, d.spec.timeout, f"{d.name} to be {state_text(want)}", interval=0.05)

    def _wait_console(self, d: LabDomain, marker: str = READY) -> None:
        def seen() -> bool:
            if marker in d.console():
                return True
            st = tuple(d.dom.state())   # type: ignore[union-attr]
            if st[0] != RUNNING:
                raise LabError(f"{d.name} is {state_text(st)} before its console said {marker!r}")  # type: ignore[arg-type]
            return False

        wait_for(seen, d.spec.timeout, f"{d.name} console line {marker!r}", interval=0.1)

    def _running_idle(self, d: LabDomain, disk: str = "") -> None:
        if not disk and d.disk_dir is not None:
            d.disk_path = d.disk_dir / f"{d.name}.raw"
            d.record({"kind": "path", "path": str(d.disk_path)})
            with open(d.disk_path, "wb") as f:
                f.truncate(4 * MiB)
            disk = self._disk_xml("file", f"<source file='{d.disk_path}'/>")
        self._define(d, disk=disk)
        self._start(d)
        self._wait_console(d)

    @staticmethod
    def _disk_xml(disk_type: str, source: str, fmt: str = "raw", stop_on_error: bool = True) -> str:
        policy = " error_policy='stop' rerror_policy='stop'" if stop_on_error else ""
        return f"""
    <disk type='{disk_type}' device='disk'>
      <driver name='qemu' type='{fmt}'{policy}/>
      {source}
      <target dev='vda' bus='virtio'/>
    </disk>"""

    def _nbd_disk(self, d: LabDomain) -> str:
        return self._disk_xml("network", f"<source protocol='nbd' name='{NbdExport.EXPORT}'>"
                                         f"<host transport='unix' socket='{d.nbd_socket}'/></source>")

    def _setup_nbd(self, d: LabDomain, inject_eio: bool) -> NbdExport:
        d.nbd_socket = self.dir / f"{d.name}.nbd.sock"
        d.disk_path = self.dir / f"{d.name}.nbd.raw"
        nbd = NbdExport(d.disk_path, d.nbd_socket, self.dir / f"{d.name}.qsd.log")
        nbd.create_image(d.record)
        nbd.start(d.record, inject_eio=inject_eio)
        d.nbd = nbd
        return nbd

    def _restart_healthy_nbd(self, d: LabDomain) -> None:
        """Replace the export by a healthy one and wait until QEMU is connected to it again.

        QEMU's NBD client reconnects only when a request comes and, without reconnect-delay, in the
        background: the first request after the server is back fails. Resuming the guest would thus
        pause it once more. So a harmless read is issued through the monitor (HMP ``qemu-io``, which
        taints the domain as custom-monitor) until the server shows a connected client."""
        assert d.nbd is not None and d.dom is not None and d.nbd_socket is not None
        d.nbd.kill()
        d.nbd.start(d.record, inject_eio=False)
        hmp = libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        node = libvirt_qemu.qemuMonitorCommand(d.dom, "info block", hmp).split(":")[0].strip()
        sock = str(d.nbd_socket)

        def connected() -> bool:
            libvirt_qemu.qemuMonitorCommand(d.dom, f'qemu-io {node} "read 0 512"', hmp)
            return _unix_socket_connected(sock)

        wait_for(connected, 15, f"QEMU to reconnect to {sock}", interval=0.1)

    # -- one method per state ------------------------------------------------------------------------
    def _bring_running(self, d: LabDomain) -> None:
        self._running_idle(d)
        self._wait_state(d)

    def _bring_user(self, d: LabDomain) -> None:
        self._running_idle(d)
        d.dom.suspend()                 # type: ignore[union-attr]
        self._wait_state(d)

    def _bring_enospc(self, d: LabDomain) -> None:
        loop = LoopExt4(self.dir / f"{d.name}.ext4", self.dir / f"{d.name}.mnt")
        loop.create(d.record)
        d.loop, d.loop_device, d.mount_point = loop, loop.loop_device, loop.mount_point
        d.disk_path = loop.mount_point / "disk.img"
        with open(d.disk_path, "wb") as f:
            f.truncate(12 * 1024 * 1024)    # sparse: larger than what the filesystem has left for non-root
        self._define(d, disk=self._disk_xml("file", f"<source file='{d.disk_path}'/>"))
        self._start(d)
        self._wait_state(d)
        d._clear = loop.free_space

    def _bring_eio(self, d: LabDomain) -> None:
        self._setup_nbd(d, inject_eio=True)
        self._define(d, disk=self._nbd_disk(d))
        self._start(d)
        self._wait_state(d)
        d._clear = lambda: self._restart_healthy_nbd(d)

    def _bring_nbd_gone(self, d: LabDomain) -> None:
        nbd = self._setup_nbd(d, inject_eio=False)
        self._define(d, disk=self._nbd_disk(d))
        self._start(d)
        self._wait_console(d)
        nbd.kill()
        self._wait_state(d)
        d._clear = lambda: self._restart_healthy_nbd(d)

    def _bring_watchdog(self, d: LabDomain) -> None:
        self._define(d, devices="\n    <watchdog model='i6300esb' action='pause'/>")
        self._start(d)
        self._wait_state(d)

    def _bring_crashed(self, d: LabDomain) -> None:
        self._define(d, devices="\n    <panic model='isa'/>", on_crash="preserve")
        self._start(d)
        self._wait_state(d)

    def _bring_saving(self, d: LabDomain) -> None:
        self._blocked_job(d, lambda dom, path: dom.save(path))

    def _bring_dumping(self, d: LabDomain) -> None:
        self._blocked_job(d, lambda dom, path: dom.coreDump(path, 0))

    def _blocked_job(self, d: LabDomain, job: Callable[[libvirt.virDomain, str], Any]) -> None:
        """Start a save/dump into a FIFO nobody reads: the domain pauses, the job blocks in open()."""
        self._running_idle(d)
        d.fifo = self.dir / f"{d.name}.fifo"
        make_fifo(d.fifo, d.record, d.name)

        def run_job() -> None:
            conn = libvirt.open(self.uri)
            try:
                job(conn.lookupByName(d.name), str(d.fifo))
            except libvirt.libvirtError as e:
                d.job_error = e
            finally:
                conn.close()

        t = threading.Thread(target=run_job, name=f"kvmlab-job-{d.name}", daemon=True)
        t.start()
        d._threads.append(t)
        wait_for(lambda: d.status_file_state() == d.expected, d.spec.timeout,
                 f"{d.name} status file to say {state_text(d.expected)}",
                 details=lambda: f"status file: {state_text(d.status_file_state())}, job error: {d.job_error}")
        d._clear = lambda: self._unblock(d)

    def _unblock(self, d: LabDomain) -> None:
        assert d.fifo is not None
        drain_fifo(d.fifo, lambda: _job_done(d.name), timeout=120)
        for t in d._threads:
            t.join(timeout=30)

    def _bring_from_snapshot(self, d: LabDomain) -> None:
        d.disk_path = self.dir / f"{d.name}.qcow2"
        d.record({"kind": "path", "path": str(d.disk_path)})
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(d.disk_path), "16M"])
        disk = self._disk_xml("file", f"<source file='{d.disk_path}'/>", "qcow2", stop_on_error=False)
        self._running_idle(d, disk=disk)
        assert d.dom is not None
        snap = d.dom.snapshotCreateXML(f"<domainsnapshot><name>{d.name}-snap</name></domainsnapshot>", 0)
        d.dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED)
        self._wait_state(d)

    def _bring_unknown(self, d: LabDomain) -> None:
        self._running_idle(d)
        libvirt_qemu.qemuMonitorCommand(d.dom, "stop", libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        self._wait_state(d)

    # -- migration: a second libvirtd in a podman container (kvmlab.peer) --
    def _ensure_peer(self) -> Peer:
        if self.peer is None:
            cache = self.images.root.parent
            peer = Peer(f"{self.prefix}-peer-{self.session}", self.dir, cache / "kvmlab-peer", self.images.root)
            self.state.add({**peer.record, "owner": "__lab__"})
            t0 = time.monotonic()
            self.peer_conn = peer.start()
            self.peer = peer
            self.timings["peer"] = time.monotonic() - t0
            log.info("peer libvirtd up in %.1fs (image build %.1fs)", self.timings["peer"], peer.image_seconds)
        return self.peer

    def _start_migration(self, d: LabDomain, flags: int, params: dict[str, Any]) -> None:
        peer = self._ensure_peer()
        params = {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1",            # loopback only
                  libvirt.VIR_MIGRATE_PARAM_LISTEN_ADDRESS: "127.0.0.1",
                  libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 1,
                  **params}

        def migrate() -> None:
            src, dst = libvirt.open(self.uri), libvirt.open(peer.uri)
            try:
                src.lookupByName(d.name).migrate3(dst, params, flags)
            except libvirt.libvirtError as e:
                d.job_error = e
            finally:
                src.close()
                dst.close()

        d.record({"kind": "domain", "name": d.name, "uuid": d.uuid, "uri": peer.uri})
        t = threading.Thread(target=migrate, name=f"kvmlab-migrate-{d.name}", daemon=True)
        t.start()
        d._threads.append(t)
        d.peer_uri = peer.uri

    def _bring_migrating(self, d: LabDomain) -> None:
        """Offline (non-live) migration at 1 MiB/s: the source stays paused (migration) for tens of seconds."""
        self._running_idle(d)
        self._start_migration(d, 0, {})
        self._wait_state(d)

        def abort() -> None:            # libvirt then resumes the source (running, migration canceled)
            d.dom.abortJob()            # type: ignore[union-attr]
            for t in d._threads:
                t.join(timeout=60)
        d._clear = abort

    def _bring_postcopy(self, d: LabDomain) -> None:
        """Live migration with post-copy at 1 MiB/s, switched to post-copy: source paused (post-copy)."""
        self._into_postcopy(d)

        def finish() -> None:           # unlimited post-copy bandwidth: the migration completes
            d.dom.migrateSetMaxSpeed(0, libvirt.VIR_DOMAIN_MIGRATE_MAX_SPEED_POSTCOPY)  # type: ignore[union-attr]
            for t in d._threads:
                t.join(timeout=120)
        d._clear = finish

    def _bring_postcopy_failed(self, d: LabDomain) -> None:
        """Post-copy, then the destination QEMU dies: the source is paused (post-copy failed).

        The guest's state is split between two hosts and half of it is gone: nothing can clear this."""
        dest = self._into_postcopy(d, PAUSED_POSTCOPY)
        dest.destroy()
        self._wait_state(d)

    def _into_postcopy(self, d: LabDomain, want: tuple[int, int] | None = None) -> libvirt.virDomain:
        """Start a post-copy migration; return once the source is paused (post-copy) AND the peer's
        copy runs (post-copy): the destination switches a moment after the source."""
        self._running_idle(d)
        self._start_migration(d, libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_POSTCOPY,
                              {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY: 1})

        def switched() -> bool:
            if d.job_error is not None:
                raise LabError(f"migration failed: {d.job_error}")
            try:
                d.dom.migrateStartPostCopy(0)   # type: ignore[union-attr]
            except libvirt.libvirtError:
                return False                    # migration not running yet
            return True

        wait_for(switched, d.spec.timeout, f"{d.name} migration to accept post-copy", interval=0.1)
        self._wait_state(d, want)
        assert self.peer_conn is not None
        dest = self.peer_conn.lookupByName(d.name)
        wait_for(lambda: tuple(dest.state()) == (RUNNING, libvirt.VIR_DOMAIN_RUNNING_POSTCOPY), 30,
                 f"{d.name} to run (post-copy) on the peer")
        return dest

    # -- introspection --
    @property
    def domains(self) -> list[LabDomain]:
        return list(self._domains.values())


def leftovers(root: str | Path = DEFAULT_WORKDIR, prefix: str = "kvmlab", session: str | None = None) -> list[str]:
    """What of a lab (or of one session) is still on this machine: domains, mounts, loop devices, processes.

    Reads /etc and /run/libvirt/qemu, /proc/self/mountinfo, losetup and /proc: never asks libvirt, so it
    works while some domain blocks libvirt's listing calls."""
    root = Path(root)
    stem = f"{prefix}-{session}" if session else f"{prefix}-"
    found = []
    for d in ("/etc/libvirt/qemu", "/run/libvirt/qemu"):
        found += [f"domain {p.stem} ({d})" for p in Path(d).glob(f"{stem}*.xml")]
    base = str(root / stem)
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if mnt.startswith(base):
            found.append(f"mount {mnt}")
    for line in run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"]).stdout.splitlines():
        if base in line:
            found.append(f"loop {line.strip()}")
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if base in cmd and pid_alive(int(p.name)) and int(p.name) != os.getpid():
            found.append(f"process {p.name}: {cmd[:150]}")
    return found
