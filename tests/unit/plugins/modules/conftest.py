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
