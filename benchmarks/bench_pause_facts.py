# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark kvmops.fleet.kvm_pause_facts side by side with the alternatives (issue 6).

    python3 benchmarks/bench_pause_facts.py [--reps 3] [--quick] [--no-lab] [--no-fleet] [--no-curve]

One command from a fresh clone (`make bench`): creates the benchmark venv (.build/bench-venv: PyPI `ansible`
for community.libvirt, libvirt-python, lxml) if missing and re-runs itself in it, writes libvirt
test-driver hosts, starts a PRIVATE unprivileged libvirtd (user nobody, its own socket under the work dir;
the machine's libvirtd is never touched) for the round trips through a daemon, then times, alternating
within every repetition so that background load hits all alternatives alike:

  kvm_pause_facts    this collection's module
  libvirt_info       community.libvirt.virt command=info
  virsh_loop         virsh list --state-paused, then domstate --reason + domblkerror per paused domain
  noop               ansible.builtin.ping (the floor of any ansible-playbook run)

Hosts: test:///FILE (the test driver inside the client), test+unix:///default on the private daemon with
the domains defined, started and paused through the API and kept resident there (as libvirtd keeps its
QEMU domains: a connection open costs what it costs on a real host), test+unix:///FILE on the same daemon
(which parses the whole node file again at every connection open), and the real lab on qemu:///system.

It prints Markdown tables (medians, ratios, noise) and writes them with the raw samples to
.build/bench/results.md and results.json. Not a test: pytest never collects it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV = Path(os.environ.get("KVMOPS_BENCH_VENV", REPO / ".build" / "bench-venv"))
VENV_PACKAGES = ["ansible", "libvirt-python", "lxml"]  # lxml: community.libvirt.virt imports it
OUT = REPO / ".build" / "bench"
ALTS = ("kvm_pause_facts", "libvirt_info", "virsh_loop", "noop")
RUNNING, PAUSED = 1, 3


# ---- set-up -----------------------------------------------------------------------------------------------


def ensure_venv() -> None:
    """Re-exec the running script (sys.argv[0]: this one, or bench_fleet / bench_pause_risk importing this
    function) in the benchmark venv, creating it first when missing."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating the benchmark venv {VENV} (PyPI: {' '.join(VENV_PACKAGES)})", flush=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=True)
    script = os.path.abspath(sys.argv[0])  # not __file__: an importing benchmark must re-run itself, not this
    os.execv(str(py), [str(py), script, *sys.argv[1:]])  # noqa: S606 - re-exec ourselves in the venv


def paused_states(n: int, paused: int) -> list:
    """n states, `paused` of them PAUSED (spread evenly), the rest RUNNING."""
    every = n // paused if paused else 0
    return [PAUSED if every and i % every == 0 and i // every < paused else RUNNING for i in range(n)]


def fleet_xml(n: int, paused: int, prefix: str = "vm") -> str:
    """n test-driver domains, `paused` of them paused (spread evenly), the rest running."""
    from kvmlab.testdriver import domain_xml  # noqa: PLC0415 - tests/ is on the path (main)
    from kvmlab.testdriver import fleet_xml as base  # noqa: PLC0415

    states = paused_states(n, paused)
    head = base(0, prefix=prefix).rsplit("</node>", 1)[0]
    return head + "".join(domain_xml(i, s, prefix) for i, s in enumerate(states)) + "</node>\n"


def write_host(work: Path, n: int, paused: int, tag: str = "") -> Path:
    path = work / "hosts" / f"host-{n}-{paused}{tag}.xml"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fleet_xml(n, paused))
        path.chmod(0o644)
    return path


class Daemon:
    """A private libvirtd for test+unix:// (unprivileged: user nobody, session mode, own socket dir).

    As root a second libvirtd would load the QEMU driver on the machine's /run/libvirt and fight the
    shared daemon over its domains; as nobody it keeps everything under its own HOME/XDG dirs."""

    def __init__(self, work: Path) -> None:
        self.dir = work / "libvirtd"
        self.sock = self.dir / "run" / "libvirt-sock"
        self.pid = None

    def start(self) -> None:
        run, home = self.dir / "run", self.dir / "home"
        for d in (self.dir, run, home):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "nobody", "nogroup")
        shutil.chown(home, "nobody", "nogroup")
        conf = self.dir / "libvirtd.conf"
        conf.write_text(
            f'unix_sock_dir = "{run}"\nunix_sock_rw_perms = "0777"\nauth_unix_rw = "none"\n'
            "max_clients = 5000\nmax_workers = 20\nmax_client_requests = 50\n"
        )
        conf.chmod(0o644)
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(run),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
        }
        pidfile = run / "libvirtd.pid"
        subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "libvirtd",
                "-d",
                "-f",
                str(conf),
                "-p",
                str(pidfile),
            ],
            env=env,
            check=True,
        )
        for _attempt in range(100):
            if self.sock.exists() and pidfile.exists() and pidfile.read_text().strip():
                self.pid = int(pidfile.read_text())
                return
            time.sleep(0.1)
        raise RuntimeError("private libvirtd did not come up")

    def uri(self, host: Path | None = None) -> str:
        """test+unix:///FILE (parsed by the daemon at every connection open) or, without a file, the daemon's
        test:///default driver (one instance shared by all connections while any is open)."""
        return f"test+unix://{host or '/default'}?socket={self.sock}"

    def stop(self) -> None:
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGTERM)
                for _attempt in range(50):
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.pid = None


class Resident:
    """``n`` domains, ``paused`` of them paused, resident in the private daemon's test:///default driver.

    Defined, started and suspended through the API over a read-write connection that stays open for the
    whole measurement: libvirt frees the default test driver (and its domains) when its last connection
    closes. Connections opened meanwhile find the domains in the daemon's memory, as with libvirtd's QEMU
    driver, instead of making the daemon parse a node file (test+unix:///FILE does that at every open)."""

    def __init__(self, daemon: Daemon, n: int, paused: int) -> None:
        self.daemon, self.n, self.paused = daemon, n, paused
        self.conn = None
        self.uri = daemon.uri()
        self.setup_seconds = None

    def __enter__(self) -> Resident:
        import libvirt  # noqa: PLC0415 - only in the venv

        from kvmlab.testdriver import domain_xml  # noqa: PLC0415 - tests/ is on the path (fleet_xml)

        t0 = time.monotonic()
        libvirt.registerErrorHandler(lambda *_: None, None)
        self.conn = libvirt.open(self.uri)
        for dom in self.conn.listAllDomains():  # the driver's built-in "test" domain
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        for i, state in enumerate(paused_states(self.n, self.paused)):
            dom = self.conn.defineXML(domain_xml(i, RUNNING))
            dom.create()
            if state == PAUSED:
                dom.suspend()
        counts = (self.conn.numOfDomains(), len(self.conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_PAUSED)))
        if counts != (self.n, self.paused):
            raise RuntimeError(f"resident host: expected {self.n} domains / {self.paused} paused, got {counts}")
        self.setup_seconds = time.monotonic() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()  # the last connection: the daemon frees the driver and its domains
            self.conn = None


def check_daemon_serves(daemon: Daemon, host: Path, work: Path) -> str:
    """Prove the daemon (not the client library) opens the node file: a file only root can read fails."""
    import libvirt  # noqa: PLC0415 - only in the venv

    libvirt.registerErrorHandler(lambda *_: None, None)
    conn = libvirt.openReadOnly(daemon.uri(host))
    n = conn.numOfDomains() + conn.numOfDefinedDomains()
    conn.close()
    secret = work / "hosts" / "root-only.xml"
    shutil.copy(host, secret)
    secret.chmod(0o600)
    try:
        libvirt.openReadOnly(daemon.uri(secret)).close()
        served = "UNEXPECTED: a root-only node file opened, so the client side parsed it"
    except libvirt.libvirtError as exc:
        served = f"daemon side parses the node file (root-only copy refused: {exc.get_error_message()[:80]})"
    return f"{n} domains through {daemon.uri(host)}; {served}"


# ---- measuring --------------------------------------------------------------------------------------------


def descendants(pid: int) -> list:
    """Every process below ``pid`` (from /proc), children before their own children."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(0), []):
            out.append(child)
            todo.append(child)
    return out


class Runner:
    def __init__(self, work: Path, py: str) -> None:
        self.work, self.py = work, py
        coll = work / "collections" / "ansible_collections" / "kvmops"
        coll.mkdir(parents=True, exist_ok=True)
        link = coll / "fleet"
        if not link.exists():
            link.symlink_to(REPO)
        self.collections = str(work / "collections")
        self.env = dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=self.collections,
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
            ANSIBLE_REMOTE_TMP=str(work / "ansible-remote-tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_DEPRECATION_WARNINGS="0",
            ANSIBLE_RETRY_FILES_ENABLED="0",
            ANSIBLE_HOME=str(work / "ansible-home"),
        )
        self.env.pop("ANSIBLE_CONFIG", None)
        site = subprocess.run(
            [py, "-c", "import ansible_collections,sys;print(list(ansible_collections.__path__)[0])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.virt_module = str(Path(site) / "community" / "libvirt" / "plugins" / "modules" / "virt.py")
        self.pause_module = str(REPO / "plugins" / "modules" / "kvm_pause_facts.py")

    def _wait(self, argv, env=None, timeout=900, stdin=None):
        """Run argv; return (wall seconds, stdout text, max RSS KiB of the whole process tree, rc)."""
        out = tempfile.TemporaryFile()  # noqa: SIM115 - closed with the object, read after the child exits
        err = tempfile.TemporaryFile()  # noqa: SIM115
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=out, stderr=err, env=env or self.env, stdin=stdin, start_new_session=True)
        deadline = t0 + timeout
        self.timed_out = False
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                # the process tree, taken before anything dies: ansible's workers start their own sessions
                # (setsid), so killing the process group alone would orphan them
                tree = descendants(p.pid)
                os.killpg(p.pid, signal.SIGKILL)  # the session: ansible-playbook, virsh, the module run
                for child in tree:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGKILL)
                pid, status, ru = os.wait4(p.pid, 0)
                self.timed_out = True
                break
            time.sleep(0.005)
        wall = time.monotonic() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (
            wall,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
            ru.ru_maxrss,
            p.returncode,
        )

    def inventory(self, name: str, hosts: dict) -> Path:
        """hosts: inventory name -> bench_uri. Local connection, the venv's python."""
        inv = self.work / f"inventory-{name}.json"
        inv.write_text(
            json.dumps(
                {
                    "all": {
                        "vars": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": self.py,
                            "bench_dir": str(HERE),
                        },
                        "hosts": {h: {"bench_uri": u} for h, u in hosts.items()},
                    }
                }
            )
        )
        return inv

    def playbook(self, book: str, inv: Path, extra_env=None, args=(), timeout=900) -> dict:
        env = dict(self.env, **(extra_env or {}))
        wall, out, err, rss, rc = self._wait(
            ["ansible-playbook", "-i", str(inv), str(HERE / "playbooks" / book), *args], env=env, timeout=timeout
        )
        rec = {"wall": wall, "maxrss_kib": rss, "rc": rc, "timed_out": self.timed_out}
        if self.timed_out:
            return rec
        try:
            data = json.loads(out[out.index("{") :])
        except ValueError:
            rec["error"] = (err or out)[-500:]
            return rec
        durations, paused, failed = [], 0, 0
        for play in data.get("plays", []):
            for task in play.get("tasks", []):
                for res in task.get("hosts", {}).values():
                    failed += bool(res.get("failed"))
                    facts = (res.get("ansible_facts") or {}).get("kvm_pause")
                    if facts:
                        durations.append(facts["duration_seconds"])
                        paused += len(facts["paused"])
        rec.update(durations=durations, paused=paused, failed=failed)
        if failed or rc:
            rec["error"] = json.dumps(data.get("stats"))[:300] + (err[-300:] if err else "")
        return rec

    def module(self, which: str, uri: str, timeout=900) -> dict:
        """The module as its own process (no ansible-playbook): process wall, its own work, peak RSS."""
        if which == "kvm_pause_facts":
            args, path = {"uri": uri, "timeout": 120}, self.pause_module
        else:
            args, path = {"command": "info", "uri": uri}, self.virt_module
        argfile = self.work / f"args-{which}.json"
        argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
        wall, out, err, rss, rc = self._wait(
            [self.py, str(HERE / "_modrun.py"), self.collections, path, str(argfile)], timeout=timeout
        )
        rec = {"wall": wall, "rc": rc, "maxrss_tree_kib": rss, "timed_out": self.timed_out}
        line = [x for x in err.splitlines() if x.startswith("MODRUN ")]
        if line:
            m = json.loads(line[-1][7:])
            rec.update(
                process_wall=m["wall"], maxrss_self_kib=m["maxrss_self_kib"], maxrss_worker_kib=m["maxrss_children_kib"]
            )
        try:
            res = json.loads(out[out.index("{") :])
        except ValueError:
            rec["error"] = err[-400:]
            return rec
        if res.get("failed"):
            rec["error"] = res.get("msg")
        facts = (res.get("ansible_facts") or {}).get("kvm_pause")
        if facts:
            rec["duration"] = facts["duration_seconds"]
            rec["paused"] = len(facts["paused"])
        return rec

    def virsh(self, uri: str, mode: str, timeout=900) -> dict:
        wall, out, err, rss, rc = self._wait([str(HERE / "virsh_loop.sh"), uri, mode], timeout=timeout)
        rec = {"wall": wall, "rc": rc, "maxrss_kib": rss, "timed_out": self.timed_out}
        tail = [x for x in out.splitlines() if x.startswith("paused: ")]
        rec["paused"] = int(tail[-1].split()[1]) if tail else None
        if rc:
            rec["error"] = err[-300:]
        return rec

    def open_only(self, uri: str) -> float:
        """Time of a bare read-only connection open (the test driver parses its node file here)."""
        code = (
            "import libvirt,sys,time;t=time.monotonic();c=libvirt.openReadOnly(sys.argv[1]);print(time.monotonic()-t)"
        )
        _w, out, _e, _r, _rc = self._wait([self.py, "-c", code, uri])
        try:
            return float(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return float("nan")


def one_rep(
    r: Runner, uri: str, inv: Path, virsh_mode: str, cap: float, big: bool = False, module_runs: int = 1
) -> dict:
    """All alternatives once, back to back (the order rotates between repetitions in the caller).

    kvm_pause_facts' standalone module runs ``module_runs`` times (its work is short and the most
    load-sensitive figure; medians over all runs). community.libvirt's info is CPU-bound in the client and
    grows faster than linearly (over a minute at 5,000 domains): it is cut at ``cap`` seconds (reported as
    a lower bound), and at 5,000 domains (``big``) its standalone module run is skipped."""
    return {
        "kvm_pause_facts": lambda: {
            "play": r.playbook("pause_facts.yml", inv),
            "mod": r.module("kvm_pause_facts", uri),
            "more_mod": [r.module("kvm_pause_facts", uri) for _run in range(module_runs - 1)],
        },
        "libvirt_info": (
            lambda: {
                "play": r.playbook("libvirt_info.yml", inv, timeout=cap),
                "mod": r.module("libvirt_info", uri, timeout=cap),
            }
        )
        if not big
        else (lambda: {"play": r.playbook("libvirt_info.yml", inv, timeout=cap)}),
        "virsh_loop": lambda: {
            "play": r.playbook("virsh_loop.yml", inv, args=("-e", f"bench_virsh_mode={virsh_mode}")),
            "mod": r.virsh(uri, virsh_mode, timeout=cap),
        },
        "noop": lambda: {"play": r.playbook("noop.yml", inv), "open": r.open_only(uri)},
    }


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def noise(xs):
    """Half the min-max spread as a percentage of the median."""
    xs = [x for x in xs if x is not None]
    if len(xs) < 2 or not statistics.median(xs):
        return None
    return 100.0 * (max(xs) - min(xs)) / 2.0 / statistics.median(xs)


def run_scenario(
    r: Runner,
    label: str,
    uri: str,
    reps: int,
    virsh_mode: str = "session",
    cap: float = 900,
    big: bool = False,
    module_runs: int = 1,
) -> dict:
    inv = r.inventory(label.replace(" ", "_").replace("/", "_").replace("(", "").replace(")", ""), {"benchhost": uri})
    samples = {a: [] for a in ALTS}
    t0 = time.monotonic()
    for rep in range(reps):
        jobs = one_rep(r, uri, inv, virsh_mode, cap, big, module_runs)
        order = ALTS[rep % len(ALTS) :] + ALTS[: rep % len(ALTS)]
        for a in order:
            samples[a].append(jobs[a]())
        print(f"  {label}: rep {rep + 1}/{reps} done ({time.monotonic() - t0:.0f} s)", flush=True)
    return summarize(label, uri, samples)


def summarize(label: str, uri: str, samples: dict) -> dict:
    def col(a, part, key):
        out = [s[part].get(key) if isinstance(s.get(part), dict) else None for s in samples[a]]
        if part == "mod":  # further standalone runs of the same repetition
            out += [m.get(key) for s in samples[a] for m in s.get("more_mod", [])]
        return out

    s = {"label": label, "uri": uri, "reps": len(samples["noop"]), "samples": samples, "errors": []}
    s["module_runs"] = len([x for x in col("kvm_pause_facts", "mod", "wall") if x is not None])
    for a in ALTS:
        for part in ("play", "mod"):
            for x in samples[a]:
                for y in [x.get(part)] + (x.get("more_mod", []) if part == "mod" else []):
                    if isinstance(y, dict) and y.get("error"):
                        s["errors"].append(f"{label}: {a}/{part}: {y['error']}")
    s["play"] = {a: med(col(a, "play", "wall")) for a in ALTS}
    s["timed_out"] = {a: any(col(a, "play", "timed_out")) for a in ALTS}
    s["play_noise"] = {a: noise(col(a, "play", "wall")) for a in ALTS}
    s["mod_wall"] = {a: med(col(a, "mod", "wall")) for a in ("kvm_pause_facts", "libvirt_info", "virsh_loop")}
    s["mod_noise"] = {a: noise(col(a, "mod", "wall")) for a in ("kvm_pause_facts", "libvirt_info", "virsh_loop")}
    s["duration"] = med(col("kvm_pause_facts", "mod", "duration"))
    s["duration_noise"] = noise(col("kvm_pause_facts", "mod", "duration"))
    in_play = [x["play"]["durations"][0] if x["play"].get("durations") else None for x in samples["kvm_pause_facts"]]
    s["play_duration"], s["play_duration_noise"] = med(in_play), noise(in_play)
    s["virt_process"] = med(col("libvirt_info", "mod", "process_wall"))
    s["rss_self_mib"] = max([x or 0 for x in col("kvm_pause_facts", "mod", "maxrss_self_kib")] or [0]) / 1024
    s["rss_worker_mib"] = max([x or 0 for x in col("kvm_pause_facts", "mod", "maxrss_worker_kib")] or [0]) / 1024
    s["rss_virt_mib"] = max([x or 0 for x in col("libvirt_info", "mod", "maxrss_self_kib")] or [0]) / 1024 or None
    s["paused"] = med(col("kvm_pause_facts", "mod", "paused"))
    s["open"] = med([x.get("open") for x in samples["noop"]])
    return s


def fmt(x, unit="", digits=2):
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def pm(x):
    """The noise cell: ±N% (several runs) or nothing."""
    return "" if x is None else f" ±{x:.0f}%"


def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}x"


def table_runs(results: list) -> str:
    """Whole ansible-playbook runs: the four alternatives and the ratios to community.libvirt's info."""
    lines = [
        "| host | runs | kvm_pause_facts | libvirt info | virsh loop | no-op (floor) | pause / info | floor / info |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in results:
        p, n = s["play"], s["play_noise"]
        capped = ">" if s["timed_out"]["libvirt_info"] else ""
        below = "<" if capped else ""
        cells = [
            s["label"],
            str(s["reps"]),
            fmt(p["kvm_pause_facts"], " s") + pm(n["kvm_pause_facts"]),
            capped + fmt(p["libvirt_info"], " s") + (pm(n["libvirt_info"]) if not capped else ""),
            fmt(p["virsh_loop"], " s") + pm(n["virsh_loop"]),
            fmt(p["noop"], " s") + pm(n["noop"]),
            below + ratio(p["kvm_pause_facts"], p["libvirt_info"]),
            below + ratio(p["noop"], p["libvirt_info"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table_module(results: list) -> str:
    """The module's own work, the connection open inside it, whole module processes and peak memory."""
    lines = [
        "| host | runs: module / play | module work | module work in the play | connection open | work - open | "
        "module process: pause / info / virsh loop | peak RSS: module + worker (info) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in results:
        w = s["mod_wall"]
        lines.append(
            "| {} | {} / {} | {}{} | {}{} | {} | {} | {} / {} / {} | {} + {} MiB ({}) |".format(
                s["label"],
                s["module_runs"],
                s["reps"],
                fmt(s["duration"], " s", 3),
                pm(s["duration_noise"]),
                fmt(s["play_duration"], " s", 3),
                pm(s["play_duration_noise"]),
                fmt(s["open"], " s", 3),
                fmt(
                    s["duration"] - s["open"] if s["duration"] is not None and s["open"] is not None else None, " s", 3
                ),
                fmt(w["kvm_pause_facts"], " s"),
                fmt(w["libvirt_info"], " s"),
                fmt(w["virsh_loop"], " s"),
                fmt(s["rss_self_mib"], "", 0),
                fmt(s["rss_worker_mib"], "", 0),
                fmt(s["rss_virt_mib"], " MiB", 0),
            )
        )
    return "\n".join(lines)


CURVE_POINTS = ((100, 10), (1000, 10), (5000, 10), (1000, 0), (1000, 100), (1000, 500), (5000, 100))


def curve(r: Runner, work: Path, daemon: Daemon | None, reps: int, points=CURVE_POINTS) -> tuple[list, str]:
    """Module work only (standalone process, duration_seconds) as paused and total vary, in-process and
    through the daemon with resident domains, alternating within every repetition."""
    rows = []
    for n, k in points:
        file_uri = "test://" + str(write_host(work, n, k))
        row = {"total": n, "paused": k}
        samples = {"file": ([], []), "resident": ([], [])}
        with Resident(daemon, n, k) if daemon else contextlib.nullcontext() as res:
            for _rep in range(reps):
                for kind, uri in (("file", file_uri), ("resident", res.uri if res else None)):
                    if uri:
                        samples[kind][0].append(r.module("kvm_pause_facts", uri).get("duration"))
                        samples[kind][1].append(r.open_only(uri))
        for kind, (d, o) in samples.items():
            row[kind] = {"duration": med(d), "noise": noise(d), "open": med(o), "samples": d} if d else None
        rows.append(row)
        print(f"  curve {n}/{k} done", flush=True)
    lines = [
        "| total | paused | test:///FILE work | open | work - open | test+unix:///default (resident) work | open |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for kind in ("file", "resident"):
            c = row.get(kind)
            if not c:
                cells += ["-", "-"] + (["-"] if kind == "file" else [])
                continue
            cells += [f"{fmt(c['duration'], ' s', 3)}{pm(c['noise'])}", fmt(c["open"], " s", 3)]
            if kind == "file":
                cells.append(fmt(c["duration"] - c["open"] if c["duration"] is not None else None, " s", 3))
        lines.append(f"| {row['total']} | {row['paused']} | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)


FLEET_CONFIGS = (
    ("defaults (forks 5, linear, no pipelining)", {}),
    ("forks 10 + pipelining", {"ANSIBLE_FORKS": "10", "ANSIBLE_PIPELINING": "1"}),
    ("forks 5 + pipelining + strategy free", {"ANSIBLE_PIPELINING": "1", "ANSIBLE_STRATEGY": "free"}),
)


def fleet(r: Runner, work: Path, hosts: int, size: int, reps: int) -> tuple[dict, str]:
    """`hosts` inventory hosts (local connection), each its own test-driver host of `size` domains; every
    configuration once per repetition, the order rotating."""
    inv = r.inventory(
        "fleet",
        {f"kvm{i:02d}": "test://" + str(write_host(work, size, size // 10, f"-h{i:02d}")) for i in range(hosts)},
    )
    samples = {label: [] for label, _env in FLEET_CONFIGS}
    for rep in range(reps):
        order = FLEET_CONFIGS[rep % len(FLEET_CONFIGS) :] + FLEET_CONFIGS[: rep % len(FLEET_CONFIGS)]
        for label, env in order:
            res = {b: r.playbook(b, inv, extra_env=env) for b in ("controller.yml", "noop.yml", "pause_facts.yml")}
            samples[label].append(res)
        print(f"  fleet rep {rep + 1}/{reps} done", flush=True)
    lines = [
        "| settings | runs | wall: kvm_pause_facts | wall: ping (transfer floor) | wall: debug (controller) | "
        "module work per host | sum of module work | peak RSS (any one process) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, _env in FLEET_CONFIGS:
        runs = samples[label]

        def walls(book, runs=runs):
            return [x[book]["wall"] for x in runs]

        per_host = [d for x in runs for d in x["pause_facts.yml"].get("durations") or []]
        sums = [sum(x["pause_facts.yml"].get("durations") or []) for x in runs]
        lines.append(
            "| {} | {} | {}{} | {}{} | {}{} | {} | {} | {} MiB |".format(
                label,
                len(runs),
                fmt(med(walls("pause_facts.yml")), " s", 1),
                pm(noise(walls("pause_facts.yml"))),
                fmt(med(walls("noop.yml")), " s", 1),
                pm(noise(walls("noop.yml"))),
                fmt(med(walls("controller.yml")), " s", 1),
                pm(noise(walls("controller.yml"))),
                fmt(med(per_host), " s", 2),
                fmt(med(sums), " s", 1),
                fmt(max(x["pause_facts.yml"]["maxrss_kib"] for x in runs) / 1024, "", 0),
            )
        )
        for x in runs:
            if x["pause_facts.yml"].get("error"):
                lines.append(f"| ! {label}: {x['pause_facts.yml']['error'][:200]} |")
    return samples, "\n".join(lines)


def busy_lab_domains(status_dir: str = "/run/libvirt/qemu") -> list:
    """Domains of the machine's libvirtd whose status file shows a job in flight: while one exists, listing
    all domains (virsh list, community.libvirt info) hangs for everyone, so the real-lab part is skipped."""
    busy = []
    for path in sorted(Path(status_dir).glob("*.xml")) if Path(status_dir).is_dir() else []:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        job = re.search(r"<job\b[^>]*>", text)
        if job and re.search(r"""\b(type|async)=['"](?!none['"])""", job.group(0)):
            busy.append(path.stem)
    return busy


def lab_part(r: Runner, reps: int, module_runs: int = 1) -> tuple[dict | None, str]:
    """A few real domains on qemu:///system (2 paused by the user, 1 running), the same four alternatives."""
    try:
        from kvmlab import Lab  # noqa: PLC0415
    except ImportError as exc:
        return None, f"lab skipped: {exc}"
    busy = busy_lab_domains()
    if busy:
        return None, f"lab skipped: domains blocked in a job on qemu:///system ({', '.join(busy)})"
    with Lab(prefix="kvmbench") as lab:
        for st in ("user", "user", "running"):
            lab.create(st)
        s = run_scenario(
            r, "real lab qemu:///system", "qemu:///system", reps, virsh_mode="per-call", cap=60, module_runs=module_runs
        )
    return s, table_runs([s]) + "\n\n" + table_module([s])


def finish(name: str, text: str, report: dict, scratch: Path | None, also: str | None = None) -> None:
    """Write NAME.md and NAME.json under .build/bench (and the Markdown to ``also``), print the Markdown,
    remove the scratch work dir."""
    (OUT / f"{name}.md").write_text(text + "\n")
    if also:
        Path(also).write_text(text + "\n")
    (OUT / f"{name}.json").write_text(json.dumps(report, indent=1, default=str))
    print(text)
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every row (medians of these)")
    ap.add_argument(
        "--info-cap",
        type=float,
        default=30,
        help="at 5,000 domains, cut community.libvirt info after this many seconds (a lower bound)",
    )
    ap.add_argument(
        "--module-runs", type=int, default=3, help="standalone kvm_pause_facts runs per repetition (module work)"
    )
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument(
        "--file-daemon-sizes", default="1000", help="sizes also run as test+unix:///FILE (node file parsed per open)"
    )
    ap.add_argument("--quick", action="store_true", help="2 repetitions, 100 and 1,000 only, no curve/fleet/lab")
    ap.add_argument("--no-lab", action="store_true")
    ap.add_argument("--no-fleet", action="store_true")
    ap.add_argument("--no-curve", action="store_true")
    ap.add_argument("--fleet-hosts", type=int, default=50)
    ap.add_argument(
        "--diagnose-hosts",
        type=int,
        default=100,
        help="hosts of the diagnose-playbook fleet (benchmarks/bench_fleet.py, 1,000 domains each); 0 skips it",
    )
    ap.add_argument("--workdir", help="default: a fresh temporary directory, removed at the end")
    args = ap.parse_args()
    ensure_venv()
    sys.path.insert(0, str(REPO / "tests"))  # kvmlab: test-driver node files, the real lab
    if args.quick:
        args.reps, args.sizes, args.no_lab, args.no_fleet, args.no_curve = 2, "100,1000", True, True, True
    sizes = [int(x) for x in args.sizes.split(",")]
    mruns = max(1, args.module_runs)
    file_daemon_sizes = [int(x) for x in args.file_daemon_sizes.split(",") if x]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kvmops-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    OUT.mkdir(parents=True, exist_ok=True)
    r = Runner(work, sys.executable)
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    r.env["PATH"] = os.environ["PATH"]
    daemon = Daemon(work)
    t_start = time.monotonic()
    report = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_before": os.getloadavg(),
        "cores": os.cpu_count(),
        "args": vars(args),
    }
    md = []
    try:
        daemon.start()
        report["daemon"] = check_daemon_serves(daemon, write_host(work, 100, 10), work)
        print(report["daemon"], flush=True)
        results = []
        for n in sizes:
            uri = "test://" + str(write_host(work, n, n // 10))
            cap = args.info_cap if n >= 5000 else 900
            results.append(
                run_scenario(
                    r, f"{n} ({n // 10} paused) test:///FILE", uri, args.reps, cap=cap, big=n >= 5000, module_runs=mruns
                )
            )
        for n in sizes:
            cap = args.info_cap if n >= 5000 else 900
            with Resident(daemon, n, n // 10) as res:
                print(f"  resident host {n}/{n // 10} set up in {res.setup_seconds:.1f} s", flush=True)
                label = f"{n} ({n // 10} paused) test+unix:///default (resident)"
                results.append(run_scenario(r, label, res.uri, args.reps, cap=cap, big=n >= 5000, module_runs=mruns))
        for n in file_daemon_sizes:
            uri = daemon.uri(write_host(work, n, n // 10))
            cap = args.info_cap if n >= 5000 else 900
            label = f"{n} ({n // 10} paused) test+unix:///FILE"
            results.append(run_scenario(r, label, uri, args.reps, cap=cap, big=n >= 5000, module_runs=mruns))
        report["main"] = results
        md += [
            "## Whole ansible-playbook runs (medians; ± = half the min-max spread)",
            "",
            table_runs(results),
            "",
            "## The module's own work (duration_seconds), connection open, module processes, peak memory",
            "",
            table_module(results),
            "",
        ]
        report["seconds_main"] = time.monotonic() - t_start
        if not args.no_curve:
            report["curve"], t = curve(r, work, daemon, args.reps)
            md += ["## Module work as paused and total domains vary", "", t, ""]
        if not args.no_fleet:
            report["fleet"], t = fleet(r, work, args.fleet_hosts, 1000, args.reps)
            md += [f"## Fleet: {args.fleet_hosts} hosts x 1,000 domains (100 paused), local connection", "", t, ""]
        if not args.no_fleet and args.diagnose_hosts > 0:
            # the whole diagnose playbook (report included) beside community.libvirt info and a bare task, its own
            # private daemon (this one's resident domains are gone by now); one repetition: a fleet run is long
            fleet_md = HERE / "fleet-part.md"
            subprocess.run(
                [
                    sys.executable,
                    str(HERE / "bench_fleet.py"),
                    "--hosts",
                    str(args.diagnose_hosts),
                    "--out",
                    str(fleet_md),
                ],
                check=False,
            )
            md += [
                fleet_md.read_text() if fleet_md.exists() else "diagnose fleet: no result (see the output above)",
                "",
            ]
            fleet_md.unlink(missing_ok=True)
        if not args.no_lab:
            try:
                report["lab"], t = lab_part(r, args.reps, mruns)
            except Exception as exc:
                report["lab"], t = None, f"lab failed: {type(exc).__name__}: {exc}"
            md += [
                "## Real lab (qemu:///system, 2 paused + 1 running lab domains + whatever else runs there)",
                "",
                t,
                "",
            ]
        errs = [e for s in report.get("main", []) for e in s["errors"]]
        if report.get("lab"):
            errs += report["lab"]["errors"]
        if errs:
            md += ["## Errors", "", *[f"- {e}" for e in errs[:20]], ""]
    finally:
        daemon.stop()
        report["load_after"] = os.getloadavg()
        report["seconds"] = time.monotonic() - t_start
        md.insert(
            0,
            f"Run {report['started']}, {report['seconds'] / 60:.1f} min, {report['cores']} cores, load average "
            f"(1 min) {report['load_before'][0]:.1f} -> {report['load_after'][0]:.1f}; {report.get('daemon', '')}\n",
        )
        finish("results", "\n".join(md), report, None if args.workdir else work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
