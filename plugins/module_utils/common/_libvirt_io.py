# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Guarded libvirt import, the options every libvirt module shares, connections, error mapping, and the
bounded worker that runs libvirt calls.

Every libvirt call of a module runs in a forked worker process. The parent holds the deadline, reads the
worker's results as JSON lines as they come (so whatever finished is kept), and at the deadline kills the
worker with SIGKILL and reaps it. Measured on libvirt 9.0: while a domain is blocked in a job (a save into
a pipe nobody reads), *every* call that touches that domain or enumerates domains hangs (listAllDomains,
getAllDomainStats with or without NOWAIT, numOfDomains, listDomainsID, lookups, state, XMLDesc, ...);
calls on other domains by name/UUID still answer. No in-process timeout can interrupt such a call.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import time
import traceback
from urllib.parse import urlsplit

LIBVIRT_IMPORT_ERROR = None
try:
    import libvirt
except ImportError:
    libvirt = None
    LIBVIRT_IMPORT_ERROR = traceback.format_exc()
HAS_LIBVIRT = libvirt is not None


class KvmError(Exception):
    """Base of the errors module_utils raise; ``main()`` turns them into one fail_json message."""


class LibvirtConnectError(KvmError):
    """The daemon is down, the URI is wrong, or access was denied."""


class LibvirtTimeout(KvmError):
    """libvirt did not answer within the timeout."""


class LibvirtOptionError(KvmError):
    """A shared libvirt option (uri, timeout) has a value that cannot work; the message names the option."""


# ---- what every libvirt module shares: options, the libvirt requirement, the timeout check -------------

# The options of plugins/doc_fragments/_libvirt.py, in the order the modules list them. A module's spec is
# ``{**own_options_before, **LIBVIRT_COMMON_ARGS, **own_options_after}``.
LIBVIRT_COMMON_ARGS = {
    "uri": {"type": "str", "default": "qemu:///system"},
    "timeout": {"type": "float", "default": 10},
}
# The longest a task may spend on libvirt: an hour. Their rules are _validate.LIBVIRT_COMMON_RULES (the same
# bound, a unit test keeps them equal); this module does not import _validate, because the host collector
# ships common/_libvirt_io.py without it.
TIMEOUT_MAX = 3600


def require_libvirt(module) -> None:
    """Fail the task (module.fail_json) when the libvirt Python binding cannot be imported on the host,
    with the import's traceback (shown at -vvv)."""
    if not HAS_LIBVIRT:
        from ansible.module_utils.basic import missing_required_lib  # noqa: PLC0415 - the host collector runs without Ansible

        module.fail_json(msg=missing_required_lib("libvirt-python (import libvirt)"), exception=LIBVIRT_IMPORT_ERROR)


def check_timeout(timeout) -> None:
    """Refuse a timeout that leaves libvirt no time at all, or that no clock can wait for (LibvirtOptionError)."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout):
        raise LibvirtOptionError(f"timeout: must be a finite number of seconds, got {timeout!r}")
    if timeout <= 0 or timeout > TIMEOUT_MAX:
        raise LibvirtOptionError(f"timeout: must be a positive number of seconds, at most {TIMEOUT_MAX}, got {timeout}")


def classify_error(code, message: str, uri: str) -> str:
    """libvirt error (code from get_error_code()) -> one clear sentence a person can act on."""
    msg = (message or "").strip()
    low = msg.lower()
    codes = {}
    if libvirt is not None:
        codes = {
            getattr(libvirt, "VIR_ERR_AUTH_FAILED", -1): "auth",
            getattr(libvirt, "VIR_ERR_AUTH_CANCELLED", -1): "auth",
            getattr(libvirt, "VIR_ERR_ACCESS_DENIED", -1): "auth",
            getattr(libvirt, "VIR_ERR_NO_CONNECT", -1): "uri",
            getattr(libvirt, "VIR_ERR_INVALID_ARG", -1): "uri",
            getattr(libvirt, "VIR_ERR_CONFIG_UNSUPPORTED", -1): "uri",
        }
    kind = codes.get(code)
    if (
        "permission denied" in low
        or "authentication" in low
        or "access denied" in low
        or "polkit" in low
        or "system bus" in low
        or kind == "auth"
    ):
        return (
            f"Permission denied connecting to {uri}: run the task as root (become: true) or as a member of the "
            f"libvirt group ({msg})"
        )
    if ("no such file or directory" in low or "connection refused" in low) and "sock" in low:
        return f"libvirtd is not running on this host: cannot connect to {uri} ({msg})"
    if (
        "no connection driver" in low
        or "unsupported" in low
        or kind == "uri"
        or "invalid" in low
        or "no such file" in low
    ):
        return f"Cannot use libvirt URI {uri!r}: {msg}"
    return f"Cannot connect to libvirt at {uri}: {msg}"


# Hypervisor drivers and transports libvirt's URIs can name (driver[+transport]://...). Checked on the
# host before connecting: without a running daemon, libvirt hands an unknown driver to the remote
# driver and reports a missing socket, which would send the user looking for a stopped daemon.
URI_DRIVERS = (
    "bhyve",
    "ch",
    "esx",
    "gsx",
    "hyperv",
    "libxl",
    "lxc",
    "openvz",
    "parallels",
    "qemu",
    "remote",
    "test",
    "vbox",
    "vmwarefusion",
    "vmwareplayer",
    "vmwarews",
    "vpx",
    "vz",
    "xen",
)
URI_TRANSPORTS = ("ext", "libssh", "libssh2", "ssh", "tcp", "tls", "unix")


# Drivers whose daemon runs on the host it is reached on (its kernel, its files); a URI of theirs without a
# host name, over the default UNIX socket, is a daemon on THIS host.
LOCAL_DRIVERS = ("qemu", "lxc", "ch")


def is_local_uri(uri: str, instance=None) -> bool:
    """Whether ``uri`` connects to a libvirt daemon on this host (and, given ``instance``, to that one).

    Local: a driver of LOCAL_DRIVERS, no host name, no transport but ``unix``; the query (``?socket=...``)
    does not matter. ``instance`` narrows it to one daemon instance, written as the plain URI:
    ``is_local_uri("qemu+unix:///system?socket=/run/x", "qemu:///system")`` is True,
    ``is_local_uri("qemu:///session", "qemu:///system")`` False. Remote (``qemu+ssh://h/system``),
    ``test:///...`` and aliases are never local.
    """
    parts = urlsplit(uri)
    driver, _sep, transport = parts.scheme.partition("+")
    if driver not in LOCAL_DRIVERS or parts.netloc or transport not in ("", "unix"):
        return False
    return instance is None or f"{driver}://{parts.path}" == instance


def check_uri(uri: str) -> None:
    """Refuse an empty URI (libvirt would silently connect to its default) and a URI whose driver or transport
    libvirt does not have; aliases (no "://") pass through."""
    if not isinstance(uri, str) or not uri.strip():
        raise LibvirtConnectError(
            f"uri: must not be empty, got {uri!r}: an empty URI makes libvirt connect wherever its own default points "
            "(LIBVIRT_DEFAULT_URI, uri_default in libvirt.conf, or a guess); give one, e.g. qemu:///system"
        )
    scheme, sep, _rest = uri.partition("://")
    if not sep:
        return
    driver, _plus, transport = scheme.lower().partition("+")
    if driver not in URI_DRIVERS:
        raise LibvirtConnectError(
            f"Cannot use libvirt URI {uri!r}: unknown hypervisor driver {driver!r} "
            f"(libvirt knows {', '.join(URI_DRIVERS)})"
        )
    if transport and transport not in URI_TRANSPORTS:
        raise LibvirtConnectError(
            f"Cannot use libvirt URI {uri!r}: unknown transport {transport!r} "
            f"(libvirt knows {', '.join(URI_TRANSPORTS)})"
        )


def open_connection(uri: str, readonly: bool = True):
    """Open a (read-only by default) connection, silencing libvirt's default stderr error printer."""
    check_uri(uri)
    libvirt.registerErrorHandler(lambda ctx, err: None, None)
    try:
        return libvirt.openReadOnly(uri) if readonly else libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtConnectError(
            classify_error(exc.get_error_code(), exc.get_error_message() or str(exc), uri)
        ) from exc


# ---- the bounded worker ------------------------------------------------------------------------------


def _pid_gone(pid: int) -> bool:
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def run_bounded(body, deadline: float, *args):
    """Run ``body(emit, *args)`` in a forked child until ``deadline`` (time.monotonic()).

    ``emit(record)`` sends one JSON-serialisable dict to the parent at once; its ``"record"`` key names what
    it is (the worker's own kinds, plus ``"error"`` for an exception the body raised and ``"done"`` when the
    body returned). Returns
    ``(records, finished)``; ``finished`` is False when the child was killed at the deadline (or died).
    The child is always SIGKILLed if still alive and reaped before this returns: nothing is left behind.
    """
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller
        code = 0
        try:
            os.close(rfd)
            out = os.fdopen(wfd, "w", buffering=1)

            def emit(record):
                out.write(json.dumps(record, default=str) + "\n")
                out.flush()

            try:
                body(emit, *args)
            except KvmError as exc:
                emit({"record": "error", "kind": type(exc).__name__, "message": str(exc)})
            except Exception as exc:
                emit(
                    {
                        "record": "error",
                        "kind": "internal",
                        "message": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc(),
                    }
                )
            emit({"record": "done"})
            out.close()
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    records, buf, finished, eof = [], b"", False, False
    try:
        while not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready = select.select([rfd], [], [], left)[0]
            if not ready:
                continue
            chunk = os.read(rfd, 65536)
            if not chunk:
                eof = True
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    rec = json.loads(line.decode("utf-8", "replace"))
                except ValueError:
                    continue
                records.append(rec)
                if rec.get("record") == "done":
                    finished = True
    finally:
        os.close(rfd)
        if not _pid_gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return records, finished


# ---- small helpers shared by modules that change domains ----------------------------------------------


class DomainNotFound(KvmError):
    """No domain of that name on this host."""


class LibvirtOperationError(KvmError):
    """libvirt refused an operation."""


def lookup_domain(conn, name: str):
    """conn.lookupByName with a clear DomainNotFound naming the ``domain`` option."""
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == getattr(libvirt, "VIR_ERR_NO_DOMAIN", 42):
            raise DomainNotFound(f"domain: no domain named {name!r} exists on this host") from None
        raise


_ERROR_KINDS = {"DomainNotFound": DomainNotFound, "LibvirtConnectError": LibvirtConnectError}


def raise_worker_error(records: list, finished: bool, what: str, timeout: float) -> None:
    """Turn a run_bounded result into the right typed exception (or return when all went well).

    Errors keep their type across the fork (DomainNotFound, LibvirtConnectError); anything else becomes
    LibvirtOperationError prefixed with ``what``; a killed worker becomes LibvirtTimeout naming the
    completed ``{"record": "step", "step": ...}`` records.
    """
    for rec in records:
        if rec.get("record") == "error":
            cls = _ERROR_KINDS.get(rec.get("kind"))
            if cls is not None:
                raise cls(rec["message"])
            raise LibvirtOperationError(f"{what}: {rec['message']}")
    if not finished:
        done = [r["step"] for r in records if r.get("record") == "step"]
        raise LibvirtTimeout(
            f"{what}: libvirt did not answer within {timeout} s (timeout)"
            + (f"; completed steps: {', '.join(done)}" if done else "")
        )
