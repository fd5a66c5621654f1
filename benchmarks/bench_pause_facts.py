# Copyright (c) kvmops.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark kvmops.fleet.kvm_pause_facts side by side with the alternatives (issue 6).

    python3 benchmarks/bench_pause_facts.py [--reps 5] [--quick] [--no-lab] [--no-fleet]

One command from a fresh clone: creates the benchmark venv (.build/bench-venv: PyPI `ansible` +
libvirt-python + pyinstrument) if missing and re-runs itself in it, writes libvirt test-driver hosts,
starts a PRIVATE unprivileged libvirtd (user nobody, its own socket under the work dir; the machine's
libvirtd is never touched) for the test+unix:// round trips, then times, alternating within every
repetition so that background load hits all alternatives alike:

  kvm_pause_facts    this collection's module
  libvirt_info       community.libvirt.virt command=info
  virsh_loop         virsh list --state-paused, then domstate --reason + domblkerror per paused domain
  noop               ansible.builtin.ping (the floor of any ansible-playbook run)

It prints Markdown tables (medians, ratios, noise) and writes them with the raw samples to
.build/bench/results.md and results.json. Not a test: pytest never collects it.
"""

from __future__ import annotations

import argparse
import json
import os
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
VENV_PACKAGES = ["ansible", "libvirt-python", "lxml", "pyinstrument"]  # lxml: community.libvirt.virt
OUT = REPO / ".build" / "bench"
ALTS = ("kvm_pause_facts", "libvirt_info", "virsh_loop", "noop")
RUNNING, PAUSED = 1, 3


# ---- set-up -----------------------------------------------------------------------------------------------


def ensure_venv() -> None:
    """Re-exec in the benchmark venv, creating it first when missing."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    py = VENV / "bin" / "python"
    if not py.exists():
        print(f"creating the benchmark venv {VENV} (PyPI: {' '.join(VENV_PACKAGES)})", flush=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=True)
    os.execv(str(py), [str(py), __file__, *sys.argv[1:]])  # noqa: S606 - re-exec ourselves in the venv


def fleet_xml(n: int, paused: int, prefix: str = "vm") -> str:
    """n test-driver domains, `paused` of them paused (spread evenly), the rest running."""
    sys.path.insert(0, str(REPO / "tests"))
    from kvmlab.testdriver import domain_xml  # noqa: PLC0415 - tests/ on the path only here
    from kvmlab.testdriver import fleet_xml as base  # noqa: PLC0415

    every = n // paused if paused else 0
    states = [PAUSED if every and i % every == 0 and i // every < paused else RUNNING for i in range(n)]
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

    def uri(self, host: Path) -> str:
        return f"test+unix://{host}?socket={self.sock}"

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
                os.killpg(p.pid, signal.SIGKILL)  # the whole session: ansible workers, module, virsh
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


def one_rep(r: Runner, uri: str, inv: Path, virsh_mode: str, cap: float, big: bool = False) -> dict:
    """All alternatives once, back to back (the order rotates between repetitions in the caller).

    community.libvirt's info is CPU-bound in the client and grows faster than linearly (over a minute at
    5,000 domains): it is cut at ``cap`` seconds (reported as a lower bound), and at 5,000 domains
    (``big``) its standalone module run is skipped."""
    return {
        "kvm_pause_facts": lambda: {
            "play": r.playbook("pause_facts.yml", inv),
            "mod": r.module("kvm_pause_facts", uri),
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
    r: Runner, label: str, uri: str, reps: int, virsh_mode: str = "session", cap: float = 900, big: bool = False
) -> dict:
    inv = r.inventory(label.replace(" ", "_").replace("/", "_"), {"benchhost": uri})
    samples = {a: [] for a in ALTS}
    for rep in range(reps):
        jobs = one_rep(r, uri, inv, virsh_mode, cap, big)
        order = ALTS[rep % len(ALTS) :] + ALTS[: rep % len(ALTS)]
        for a in order:
            samples[a].append(jobs[a]())
        print(f"  {label}: rep {rep + 1}/{reps} done", flush=True)
    return summarize(label, samples)


def summarize(label: str, samples: dict) -> dict:
    def col(a, part, key):
        return [s[part].get(key) if isinstance(s.get(part), dict) else None for s in samples[a]]

    s = {"label": label, "samples": samples, "errors": []}
    for a in ALTS:
        for part in ("play", "mod"):
            for x in samples[a]:
                if isinstance(x.get(part), dict) and x[part].get("error"):
                    s["errors"].append(f"{a}/{part}: {x[part]['error']}")
    s["play"] = {a: med(col(a, "play", "wall")) for a in ALTS}
    s["timed_out"] = {a: any(col(a, "play", "timed_out")) for a in ALTS}
    s["play_noise"] = {a: noise(col(a, "play", "wall")) for a in ALTS}
    s["mod_wall"] = {a: med(col(a, "mod", "wall")) for a in ("kvm_pause_facts", "libvirt_info", "virsh_loop")}
    s["mod_noise"] = {a: noise(col(a, "mod", "wall")) for a in ("kvm_pause_facts", "libvirt_info", "virsh_loop")}
    s["duration"] = med(col("kvm_pause_facts", "mod", "duration"))
    s["duration_noise"] = noise(col("kvm_pause_facts", "mod", "duration"))
    s["play_duration"] = med(
        [x["play"]["durations"][0] if x["play"].get("durations") else None for x in samples["kvm_pause_facts"]]
    )
    s["virt_process"] = med(col("libvirt_info", "mod", "process_wall"))
    s["rss_self_mib"] = max([x or 0 for x in col("kvm_pause_facts", "mod", "maxrss_self_kib")] or [0]) / 1024
    s["rss_worker_mib"] = max([x or 0 for x in col("kvm_pause_facts", "mod", "maxrss_worker_kib")] or [0]) / 1024
    s["rss_virt_mib"] = max([x or 0 for x in col("libvirt_info", "mod", "maxrss_self_kib")] or [0]) / 1024
    s["paused"] = med(col("kvm_pause_facts", "mod", "paused"))
    s["open"] = med([x.get("open") for x in samples["noop"]])
    return s


def fmt(x, unit="", digits=2):
    return "-" if x is None else f"{x:.{digits}f}{unit}"


def ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}x"


def table(results: list) -> str:
    lines = [
        "| host | play: kvm_pause_facts | play: libvirt info | play: virsh loop | play: no-op | "
        "ratio pause/info (floor) | module work (duration_seconds) | of which connection open | "
        "module process: pause / info / virsh | peak RSS module + worker (info) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results:
        p, n = s["play"], s["play_noise"]
        lines.append(
            (
                "| {} | {} ±{}% | {}{} ±{}% | {} ±{}% | {} ±{}% | {}{} ({}{}) | {} ±{}% | {} | {} / {} / {} "
                "| {} + {} MiB ({}) |"
            ).format(
                s["label"],
                fmt(p["kvm_pause_facts"], " s"),
                fmt(n["kvm_pause_facts"], "", 0),
                ">" if s["timed_out"]["libvirt_info"] else "",
                fmt(p["libvirt_info"], " s"),
                fmt(n["libvirt_info"], "", 0),
                fmt(p["virsh_loop"], " s"),
                fmt(n["virsh_loop"], "", 0),
                fmt(p["noop"], " s"),
                fmt(n["noop"], "", 0),
                "<" if s["timed_out"]["libvirt_info"] else "",
                ratio(p["kvm_pause_facts"], p["libvirt_info"]),
                "<" if s["timed_out"]["libvirt_info"] else "",
                ratio(p["noop"], p["libvirt_info"]),
                fmt(s["duration"], " s", 3),
                fmt(s["duration_noise"], "", 0),
                fmt(s["open"], " s", 3),
                fmt(s["mod_wall"]["kvm_pause_facts"], " s"),
                fmt(s["mod_wall"]["libvirt_info"], " s"),
                fmt(s["mod_wall"]["virsh_loop"], " s"),
                fmt(s["rss_self_mib"], "", 0),
                fmt(s["rss_worker_mib"], "", 0),
                fmt(s["rss_virt_mib"], "", 0),
            )
        )
    return "\n".join(lines)


def curve(r: Runner, work: Path, daemon: Daemon | None, reps: int) -> tuple[list, str]:
    """Module work only (standalone process, duration_seconds) as paused and total vary."""
    points = [(1000, 0), (1000, 10), (1000, 100), (1000, 500), (100, 10), (5000, 10)]
    rows = []
    for n, k in points:
        host = write_host(work, n, k)
        uris = {"test:///": "test://" + str(host)}
        if daemon:
            uris["test+unix://"] = daemon.uri(host)
        row = {"total": n, "paused": k}
        for kind, uri in uris.items():
            d, o = [], []
            for _rep in range(reps):
                d.append(r.module("kvm_pause_facts", uri).get("duration"))
                o.append(r.open_only(uri))
            row[kind] = {"duration": med(d), "noise": noise(d), "open": med(o)}
        rows.append(row)
        print(f"  curve {n}/{k} done", flush=True)
    lines = [
        "| total | paused | test:/// work | open | work - open | test+unix:// work | open | work - open |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for kind in ("test:///", "test+unix://"):
            c = row.get(kind)
            if not c:
                cells += ["-", "-", "-"]
                continue
            cells += [
                f"{fmt(c['duration'], ' s', 3)} ±{fmt(c['noise'], '', 0)}%",
                fmt(c["open"], " s", 3),
                fmt(c["duration"] - c["open"] if c["duration"] is not None else None, " s", 3),
            ]
        lines.append(f"| {row['total']} | {row['paused']} | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)


def fleet(r: Runner, work: Path, hosts: int, size: int) -> tuple[dict, str]:
    """`hosts` inventory hosts (local connection), each its own test-driver host of `size` domains."""
    inv = r.inventory(
        "fleet",
        {f"kvm{i:02d}": "test://" + str(write_host(work, size, size // 10, f"-h{i:02d}")) for i in range(hosts)},
    )
    configs = [
        ("defaults (forks 5, linear, no pipelining)", {}),
        ("forks 10 + pipelining", {"ANSIBLE_FORKS": "10", "ANSIBLE_PIPELINING": "1"}),
        ("forks 5 + pipelining + strategy free", {"ANSIBLE_PIPELINING": "1", "ANSIBLE_STRATEGY": "free"}),
    ]
    out, lines = (
        {},
        [
            "| settings | wall: kvm_pause_facts | wall: ping (transfer floor) | wall: debug (controller) | "
            "module work per host (median) | sum of module work | peak RSS (whole run) |",
            "|---|---|---|---|---|---|---|",
        ],
    )
    for label, env in configs:
        res = {b: r.playbook(b, inv, extra_env=env) for b in ("controller.yml", "noop.yml", "pause_facts.yml")}
        d = res["pause_facts.yml"].get("durations") or []
        out[label] = res
        lines.append(
            "| {} | {} | {} | {} | {} | {} | {} MiB |".format(
                label,
                fmt(res["pause_facts.yml"]["wall"], " s", 1),
                fmt(res["noop.yml"]["wall"], " s", 1),
                fmt(res["controller.yml"]["wall"], " s", 1),
                fmt(med(d), " s", 2),
                fmt(sum(d), " s", 1),
                fmt(res["pause_facts.yml"]["maxrss_kib"] / 1024, "", 0),
            )
        )
        if res["pause_facts.yml"].get("error"):
            lines.append(f"| ! {label}: {res['pause_facts.yml']['error'][:200]} |")
        print(f"  fleet {label} done", flush=True)
    return out, "\n".join(lines)


def lab_part(r: Runner, reps: int) -> tuple[dict | None, str]:
    """A few real domains on qemu:///system (2 paused by the user, 1 running), the same four alternatives."""
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from kvmlab import Lab  # noqa: PLC0415
    except ImportError as exc:
        return None, f"lab skipped: {exc}"
    with Lab(prefix="kvmbench") as lab:
        for st in ("user", "user", "running"):
            lab.create(st)
        s = run_scenario(r, "real lab qemu:///system", "qemu:///system", reps, virsh_mode="per-call", cap=120)
    return s, table([s])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3, help="repetitions per host size (medians of these)")
    ap.add_argument("--reps-5000", type=int, default=1, help="repetitions at 5,000 domains")
    ap.add_argument(
        "--info-cap",
        type=float,
        default=120,
        help="at 5,000 domains, cut community.libvirt info after this many seconds (a lower bound)",
    )
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--quick", action="store_true", help="2 repetitions, 100 and 1,000 only, no fleet/lab")
    ap.add_argument("--no-lab", action="store_true")
    ap.add_argument("--no-fleet", action="store_true")
    ap.add_argument("--no-curve", action="store_true")
    ap.add_argument("--fleet-hosts", type=int, default=50)
    ap.add_argument("--workdir", help="default: a fresh temporary directory, removed at the end")
    args = ap.parse_args()
    ensure_venv()
    if args.quick:
        args.reps, args.sizes, args.no_lab, args.no_fleet = 2, "100,1000", True, True
    sizes = [int(x) for x in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="kvmops-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    OUT.mkdir(parents=True, exist_ok=True)
    r = Runner(work, sys.executable)
    os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    r.env["PATH"] = os.environ["PATH"]
    daemon = Daemon(work)
    report = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_before": os.getloadavg(), "cores": os.cpu_count()}
    md = []
    try:
        daemon.start()
        report["daemon"] = check_daemon_serves(daemon, write_host(work, 100, 10), work)
        print(report["daemon"], flush=True)
        results = []
        for transport in ("test:///", "test+unix://"):
            for n in sizes:
                host = write_host(work, n, n // 10)
                uri = "test://" + str(host) if transport == "test:///" else daemon.uri(host)
                reps = args.reps_5000 if n >= 5000 and not args.quick else args.reps
                cap = args.info_cap if n >= 5000 else 900
                label = f"{n} ({n // 10} paused) {transport}"
                results.append(run_scenario(r, label, uri, reps, cap=cap, big=n >= 5000))
        report["main"] = results
        md += ["## Side by side (medians; ± = half the min-max spread)", "", table(results), ""]
        if not args.no_curve:
            report["curve"], t = curve(r, work, daemon, args.reps if not args.quick else 1)
            md += ["## Module work as paused and total domains vary", "", t, ""]
        if not args.no_fleet:
            report["fleet"], t = fleet(r, work, args.fleet_hosts, 1000)
            md += [f"## Fleet: {args.fleet_hosts} hosts x 1,000 domains (100 paused), local connection", "", t, ""]
        if not args.no_lab:
            try:
                report["lab"], t = lab_part(r, args.reps)
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
        md.insert(
            0,
            f"Run {report['started']}, {report['cores']} cores, load {report['load_before'][0]:.1f} -> "
            f"{report['load_after'][0]:.1f}; {report.get('daemon', '')}\n",
        )
        text = "\n".join(md)
        (OUT / "results.md").write_text(text + "\n")
        (OUT / "results.json").write_text(json.dumps(report, indent=1, default=str))
        print(text)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
