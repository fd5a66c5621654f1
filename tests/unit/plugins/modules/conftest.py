"""Black-box module runs shared by the module tests: main() with patched arguments, as Ansible runs it."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args


@pytest.fixture
def run_module(capsys):
    """``run_module(module, args)`` -> the module's JSON result; no traceback may ever reach the user."""

    def run(module, args: dict) -> dict:
        with patch_module_args(args), pytest.raises(SystemExit):
            module.main()
        out = json.loads(capsys.readouterr().out)
        assert "Traceback" not in json.dumps(out)
        return out

    return run


# libvirt calls that change a domain, a network or their definitions; the worker runs them in a forked child, so the spy
# appends to a file (the parent reads it), then calls the real method
LIBVIRT_WRITES = {
    "virConnect": ("defineXML", "createXML", "networkDefineXML", "networkCreateXML"),
    "virNetwork": ("create", "destroy", "undefine", "setAutostart"),
    "virDomain": ("pinVcpu", "pinVcpuFlags", "pinEmulator", "pinIOThread", "addIOThread", "delIOThread",
                  "setNumaParameters", "setBlockIoTune", "setInterfaceParameters", "setMemoryParameters",
                  "setMemoryFlags", "setVcpusFlags", "resume", "suspend", "destroy", "create", "undefine",
                  "undefineFlags"),
}


@pytest.fixture
def libvirt_writes(monkeypatch, tmp_path):
    """Spy on libvirt's write calls, also in forked workers: ``libvirt_writes()`` -> the names called, in order."""
    libvirt = pytest.importorskip("libvirt")
    log = tmp_path / "libvirt-writes.log"
    log.write_text("")
    for cls_name, names in LIBVIRT_WRITES.items():
        cls = getattr(libvirt, cls_name)
        for name in names:
            real = getattr(cls, name)

            def spy(self, *args, _real=real, _name=name, **kwargs):
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write(_name + "\n")
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, spy)
    return lambda: log.read_text().split()
