#!/usr/bin/python
# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: kvm_resume
short_description: Resume a paused libvirt domain only when a fresh diagnosis shows its cause is gone
version_added: 0.1.0
description:
  - Diagnoses the domain afresh on the host, with the same code as M(kvmops.fleet.kvm_pause_facts), and
    resumes it only when that diagnosis says
    RV(kvmops.fleet.kvm_pause_facts#module:ansible_facts.kvm_pause.paused[].safe_to_resume) and the cause is
    gone. Otherwise it fails with the exact reason, naming the path, device or endpoint, and changes nothing.
  - "Cause gone, per cause: V(storage_full): the diagnosis sees enough space again and every filesystem
    holding a disk of the domain has at least O(min_free) available to an unprivileged writer (C(statvfs)
    f_bavail; QEMU writes as C(libvirt-qemu)). V(storage_io_error), V(storage_unreachable): the diagnosis
    shows the storage is back (for example a network disk whose server was re-created after the failure and
    answers). V(user_paused), V(from_snapshot), a save, dump or snapshot that is no longer running: safe as
    diagnosed."
  - Never resumed, even with O(override) (the reason says so) - a domain with a job in flight (save, dump,
    snapshot, backup, migration), a domain libvirt does not answer for, a domain whose storage does not
    answer (V(storage_unresponsive), such as a dead hard NFS mount, a hung FUSE daemon or iSCSI session;
    the guest would block on its first I/O and the resume call itself can block in libvirt), a domain whose
    DRBD device cannot serve I/O (V(drbd_diskless), V(drbd_no_quorum), V(drbd_suspended); resumed once the
    fresh diagnosis finds the disk re-attached or the peer back), a domain shutting down or starting up, and
    a cause the module does not know.
  - Refused unless listed in O(override) - V(watchdog), V(crashed), V(postcopy), V(postcopy_failed),
    V(migration), V(lock_failure), V(unknown), V(emulation_failure), V(api_error), and the storage causes
    whose diagnosis cannot show the cause is gone. See O(override) for what each one does.
  - After resuming, the module watches the domain for O(settle) seconds. If QEMU pauses it again (the cause
    came back), the task fails with RV(action=paused_again) and the state.
  - A domain that is already running is left alone (RV(action=already_running), not changed). A shut off
    domain is not started.
  - Never hangs. Every libvirt call, the resume included, runs in a forked worker that is killed at its
    deadline; a domain whose libvirt calls would hang (blocked in a job) is judged from libvirtd's status
    file and not touched.
author:
  - kvmops.fleet contributors (@kvmops)
extends_documentation_fragment:
  - kvmops.fleet._attributes
  - kvmops.fleet._attributes.IDEMPOTENT
  - kvmops.fleet._libvirt
attributes:
  check_mode:
    support: full
    details:
      - Runs the same fresh diagnosis and the same checks, reads the domain's state read-only, and returns
        RV(action=would_resume) (or V(would_restart)) with V(changed=true), or the same refusal as a real
        run. Nothing is resumed.
  diff_mode:
    support: full
    details:
      - The diff is the domain's state before and after (predicted in check mode), for example
        V(paused (ioerror\)) -> V(running).
options:
  name:
    description: Name of the domain.
    type: str
    required: true
    aliases: [domain]
  min_free:
    description:
      - For a domain paused because its storage ran full (cause V(storage_full)), every filesystem holding a
        disk of the domain must have at least this much available to an unprivileged writer (f_bavail)
        before it is resumed, on top of the diagnosis' own check (room for what the disk images may still
        grow, at least 1 MiB).
      - Bytes with an optional V(K), V(M), V(G) or V(T) suffix (powers of 1024, for example V(512M)), at most
        16 EiB, or a percentage of each filesystem's size up to V(100%) (for example V(5%)).
      - Disks on block devices, LVM thin pools or storage pools are judged by the diagnosis alone.
    type: str
    default: 5%
  override:
    description:
      - Causes whose refusal the operator explicitly overrides. Each one is a risk the operator takes.
      - V(watchdog) resumes a guest whose watchdog fired; a hung guest stays hung and may fire again.
      - V(crashed) restarts the domain, as libvirt cannot resume a crashed one - destroy, then start from its
        persistent definition (a transient domain is refused). The crashed guest's memory is lost and it
        boots again; take a dump first if it is needed (C(virsh dump --memory-only)).
      - V(postcopy) and V(postcopy_failed) ask libvirt to resume the source of a post-copy migration. This
        risks split brain - the destination owns (part of) the guest's memory and may run it too, so two
        copies write to the same disks, or the source runs on torn memory. They only take effect once no
        migration job is left on the domain. While libvirt holds the job (libvirt keeps it after a failed
        post-copy so that the migration can be recovered) the domain is never touched; libvirt itself would
        hold a resume for 30 s and then refuse it (measured with libvirt 9.0).
      - V(migration) resumes a domain left paused by a migration that no longer runs; if the destination
        already runs the guest, it runs twice.
      - V(lock_failure) and V(user_paused) (with C(on_lockfailure=pause) a lost lease looks like a user
        pause) resume a domain that may have lost its disk lease to another host.
      - V(storage_full) resumes without the free-space checks; V(storage_io_error) and
        V(storage_unreachable) resume although the storage cannot be shown to be healthy. If it is not,
        QEMU pauses the domain again at once (error_policy C(stop)) and the task fails with
        RV(action=paused_again).
      - V(unknown), V(emulation_failure), V(api_error) resume although the cause is unknown or the guest's
        state is in doubt.
      - Jobs in flight, unresponsive domains, V(shutting_down) and V(starting_up) cannot be overridden.
    type: list
    elements: str
    choices:
      - api_error
      - crashed
      - emulation_failure
      - lock_failure
      - migration
      - postcopy
      - postcopy_failed
      - storage_full
      - storage_io_error
      - storage_unreachable
      - unknown
      - user_paused
      - watchdog
    default: []
  settle:
    description:
      - Seconds to watch the domain after resuming it. If it leaves the running state within this time
        (QEMU paused it again because the cause came back), the task fails.
      - The task takes at most about O(timeout) + O(settle) seconds.
      - From V(0) to V(3600).
    type: float
    default: 1
notes:
  - The C(ansible.posix.json) stdout callback prints the task's module name in place of the module's
    RV(action) key; a registered variable has the module's value.
  - Needs a read-write libvirt connection (root or the C(libvirt) group) to resume; check mode uses a
    read-only one.
  - Reading C(/run/libvirt/qemu) and C(/var/log/libvirt/qemu), which part of the diagnosis relies on, needs
    root.
seealso:
  - module: kvmops.fleet.kvm_pause_facts
  - name: Diagnostics guide
    description: What the causes mean and when resuming is safe.
    link: https://github.com/kvmops/fleet/blob/main/docs/docsite/rst/guide_diagnostics.rst
"""

EXAMPLES = r"""
- name: Resume web-01 if its cause is gone
  kvmops.fleet.kvm_resume:
    name: web-01
  become: true

- name: After freeing space, resume only when 2 GiB are available on its filesystems
  kvmops.fleet.kvm_resume:
    name: db-02
    min_free: 2G
  become: true

- name: Resume a guest whose watchdog fired, knowingly
  kvmops.fleet.kvm_resume:
    name: batch-07
    override:
      - watchdog
  become: true

- name: Resume everything the diagnosis says is safe
  kvmops.fleet.kvm_resume:
    name: "{{ item.name }}"
  loop: "{{ ansible_facts.kvm_pause.paused | selectattr('safe_to_resume') | list }}"
  loop_control:
    label: "{{ item.name }}"
  become: true
"""

RETURN = r"""
resumed:
  description: Whether the domain was resumed (or restarted) and is running. V(false) in check mode.
  returned: always
  type: bool
  sample: true
action:
  description:
    - What was done. V(resumed), V(restarted) (override V(crashed)), V(would_resume) and V(would_restart)
      (check mode), V(already_running), V(refused) (nothing done, see RV(reason)), V(paused_again) (resumed,
      but QEMU paused it again within O(settle) seconds), V(error) (libvirt refused or did not answer; see
      RV(reason)).
  returned: always
  type: str
  sample: resumed
reason:
  description: Why, in one sentence naming the cause and the path, device or endpoint it depends on.
  returned: always
  type: str
  sample: >-
    storage_full: enough space is available again on the storage that ran full: /var/lib/libvirt/images
    (ext4 on /dev/sdb1) has 9.1 GiB available for QEMU, at least 1 GiB (5% of 20 GiB)
diagnosis:
  description:
    - The fresh diagnosis the decision was made on, the domain's entry of
      RV(kvmops.fleet.kvm_pause_facts#module:ansible_facts.kvm_pause.paused), or V(null) when the domain is
      not paused or crashed.
  returned: always
  type: dict
  sample: {name: web-01, state: paused, reason: ioerror, cause: storage_full, safe_to_resume: true,
           safe_to_resume_reason: enough space is available again on the storage that ran full}
state:
  description:
    - libvirt's state of the domain after the task, V(running) or state and reason such as
      V(paused (ioerror\)), V(crashed (panicked\)), V(shutoff (destroyed\)); V(null) when unknown.
  returned: always
  type: str
  sample: running
msg:
  description: On failure, C(refused to resume NAME - <reason>) or what went wrong.
  returned: failure
  type: str
  sample: >-
    refused to resume web-01: storage_full: the storage is still full: resuming would pause the domain
    again at once
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmops.fleet.plugins.module_utils.common import _domxml
from ansible_collections.kvmops.fleet.plugins.module_utils.common._libvirt_io import (
    LIBVIRT_COMMON_ARGS,
    KvmError,
    LibvirtOperationError,
    check_timeout,
    check_uri,
    libvirt,
    lookup_domain,
    open_connection,
    require_libvirt,
    run_bounded,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.common._validate import (
    LIBVIRT_COMMON_RULES,
    TIMEOUT_MAX,
    Custom,
    Float,
    OptionError,
    Text,
    check_module,
)
from ansible_collections.kvmops.fleet.plugins.module_utils.pause import _resume
from ansible_collections.kvmops.fleet.plugins.module_utils.pause._collect_io import (
    STATUS_DIR,
    collect,
    local_system_uri,
)

ARGUMENT_SPEC = {
    "name": {"type": "str", "required": True, "aliases": ["domain"]},
    **LIBVIRT_COMMON_ARGS,
    "min_free": {"type": "str", "default": "5%"},
    "override": {"type": "list", "elements": "str", "choices": sorted(_resume.OVERRIDABLE), "default": []},
    "settle": {"type": "float", "default": 1},
}


def _check_min_free(value, path):
    """min_free's grammar and bounds are _resume.parse_min_free's (at most 64 characters and 16 EiB)."""
    if not isinstance(value, str):
        raise OptionError(f"{path}: must be a size or percentage, got {value!r}")
    try:
        _resume.parse_min_free(value)
    except _resume.ResumeError as exc:
        raise OptionError(str(exc)) from None


# each option's rule (common/_validate.py), checked before anything is read
RULES = {
    "name": Text("the domain's name"),
    **LIBVIRT_COMMON_RULES,
    "min_free": Custom(_check_min_free, "a size up to 16 EiB or a percentage up to 100"),
    "settle": Float(0, TIMEOUT_MAX, "seconds to watch the resumed domain"),
}


# ---- the bounded libvirt worker ---------------------------------------------------------------------------


def _act_worker(emit, uri, name, entry, op, dry_run, settle):
    """Look the domain up, re-check its state, and (unless dry_run or op is None) resume or restart it."""
    conn = open_connection(uri, readonly=dry_run or op is None)
    dom = lookup_domain(conn, name)
    state = dom.state()
    persistent = dom.isPersistent() == 1
    emit({"record": "seen", "state": state, "persistent": persistent})
    if dry_run or op is None or entry is None or _resume.changed_since(entry, state) or state[0] == _resume.RUNNING:
        return
    if op == "restart" and not persistent:
        return
    # "step" before each call (a call that hangs may or may not take effect), "applied" after it took effect
    destroyed = False
    try:
        if op == "restart":
            emit({"record": "step", "step": "destroy"})
            dom.destroy()
            destroyed = True
            emit({"record": "applied", "step": "destroy"})
            emit({"record": "step", "step": "start"})
            dom.create()
        else:
            emit({"record": "step", "step": "resume"})
            dom.resume()
    except libvirt.libvirtError as exc:
        if destroyed:
            raise LibvirtOperationError(
                f"destroyed {name} to restart it, but libvirt refused to start it: {exc.get_error_message() or exc}; "
                f"{name} is shut off now: start it once the cause is fixed"
            ) from None
        raise LibvirtOperationError(f"libvirt refused to {op} {name}: {exc.get_error_message() or exc}") from None
    emit({"record": "acted"})
    end = time.monotonic() + settle
    while True:
        state = dom.state()
        left = end - time.monotonic()
        if state[0] != _resume.RUNNING or left <= 0:
            break
        time.sleep(min(0.1, left))
    emit({"record": "after", "state": state})


def _status_file_state(uri, name):
    """(state, reason) from libvirtd's status file, or None (not local, not readable, domain not running)."""
    if not local_system_uri(uri):
        return None
    try:
        with open(os.path.join(STATUS_DIR, f"{name}.xml"), encoding="utf-8") as fh:
            st = _domxml.parse_status(fh.read())
    except (OSError, _domxml.DomainXMLError):
        return None
    return st["state"], st["reason"]


# ---- main ---------------------------------------------------------------------------------------------------


class Failed(Exception):
    """The task fails with this message; ``result`` carries the return keys."""

    def __init__(self, msg, result):
        super().__init__(msg)
        self.result = result


def run(params: dict, check_mode: bool) -> dict:
    name, uri, timeout, settle = params["name"], params["uri"], params["timeout"], params["settle"]
    check_timeout(timeout)
    if settle < 0:
        raise _resume.ResumeError(f"settle: must be zero or more seconds, got {settle}")
    min_free = _resume.parse_min_free(params["min_free"])
    check_uri(uri)
    started = time.monotonic()

    facts = collect(uri, timeout, [_resume.glob_escape(name)], include_running=True, started=started)
    entry = next((p for p in facts["paused"] if p["name"] == name), None)
    res = {"changed": False, "resumed": False, "action": None, "reason": None, "diagnosis": entry, "state": None}
    before = _resume.state_text(entry["state_code"], entry["reason_code"]) if entry else None

    def finish(action, reason, state, failed=False, changed=False, resumed=False, after=None):
        res.update(action=action, reason=reason, state=state, changed=changed, resumed=resumed)
        res["diff"] = {"before": {"state": before or state}, "after": {"state": after or state}}
        if failed:
            msg = f"refused to resume {name}: {reason}" if action == "refused" else reason
            raise Failed(msg, res)
        return res

    if any(r["name"] == name for r in facts.get("running") or []):
        return finish("already_running", f"{name} is already running", "running")
    if entry is None and not facts["complete"]:
        raise KvmError(f"no fresh diagnosis of {name}: " + "; ".join(facts["errors"]))
    decision = _resume.judge(name, entry, min_free, params["override"]) if entry else None
    if decision is not None and decision["op"] is None:
        return finish("refused", decision["reason"], before, failed=True)

    op = decision["op"] if decision else None
    dry_run = check_mode or op is None
    deadline = max(started + timeout, time.monotonic() + 2.0) + (0 if dry_run else settle)
    records, finished = run_bounded(_act_worker, deadline, uri, name, entry, op, dry_run, settle)
    seen = next((r for r in records if r["record"] == "seen"), None)
    after = next((r["state"] for r in records if r["record"] == "after"), None)
    steps = [r["step"] for r in records if r["record"] == "step"]
    for r in records:
        if r["record"] == "error":
            if r.get("kind") == "DomainNotFound":
                raise KvmError(f"name: no domain named {name!r} exists on this host ({uri})")
            if r.get("kind") == "LibvirtConnectError":
                raise KvmError(r["message"])
            now = _status_file_state(uri, name)
            return finish(
                "error",
                r["message"],
                _resume.state_text(*now) if now else before,
                failed=True,
                # a call libvirt refused changed nothing; one that took effect before it did (a restart's destroy)
                changed=any(a["record"] == "applied" for a in records),
            )
    if seen is None:
        raise KvmError(f"libvirt did not answer within {timeout} s when looking up {name} (timeout)")
    if not finished and steps:
        now = _status_file_state(uri, name)
        done = "; ".join(steps)
        return finish(
            "error",
            f"libvirt did not answer within {deadline - started:.0f} s while asked to {op} {name} (calls made: "
            f"{done}); its state now: {_resume.state_text(*now) if now else 'unknown'}",
            _resume.state_text(*now) if now else None,
            failed=True,
            changed=True,
        )
    state = tuple(seen["state"])
    if entry is None or state[0] == _resume.RUNNING:
        out = _resume.not_paused(name, state)
        return finish(out["action"], out["reason"], _resume.state_text(*state), failed=out["failed"])
    moved = _resume.changed_since(entry, state)
    if moved:
        return finish("refused", moved, _resume.state_text(*state), failed=True)
    if op == "restart" and not seen["persistent"]:
        return finish(
            "refused",
            f"{decision['reason']}; but {name} is transient: destroying it would remove it, so it cannot be "
            "restarted here",
            before,
            failed=True,
        )
    if check_mode:
        verb = "would_restart" if op == "restart" else "would_resume"
        return finish(verb, decision["reason"], before, changed=True, after="running")
    if after is None:
        return finish(
            "error",
            f"{op} of {name} was done, but libvirt did not report its state afterwards within the timeout",
            None,
            failed=True,
            changed=True,
        )
    out = _resume.outcome(name, op, after, settle)
    reason = f"{decision['reason']}; {out['reason']}" if not out["failed"] else out["reason"]
    return finish(
        out["action"],
        reason,
        _resume.state_text(*after),
        failed=out["failed"],
        changed=True,
        resumed=not out["failed"],
    )


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    check_module(module, ARGUMENT_SPEC, RULES, resumed=False, action="error", reason=None, diagnosis=None, state=None)
    require_libvirt(module)
    try:
        result = run(module.params, module.check_mode)
    except Failed as exc:
        module.fail_json(msg=str(exc), **exc.result)
    except (KvmError, _resume.ResumeError) as exc:
        module.fail_json(
            msg=str(exc), changed=False, resumed=False, action="error", reason=str(exc), diagnosis=None, state=None
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
