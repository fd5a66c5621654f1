"""A stand-in for ansible-test's get-pip bootstrap script, for machines that cannot reach its host.

ansible-test sanity creates a venv per test and bootstraps pip into it by running
``~/.ansible/test/cache/get_pip_<version>.py`` (downloading it from ci-files.testing.ansible.com when
the file is missing). That host is not reachable here, but PyPI is. This script does the same job
with what Python ships:

1. ``ensurepip`` installs the pip bundled with this Python into the venv;
2. that pip installs exactly the packages ansible-test asked for (e.g. ``pip==24.2``).

``ensurepip`` sets ``PIP_CONFIG_FILE=/dev/null`` in the process environment, which would hide the
machine's pip configuration (its CA bundle and package index) from step 2, so it is removed first.

``python hack/get_pip_standin.py --install`` copies this file to the path ansible-test looks for,
for the pip version the installed ansible-test pins.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import types

# options the real get-pip.py understands that plain ``pip install`` does not
_GET_PIP_ONLY = {"--no-setuptools", "--no-wheel"}


def bootstrap(argv: list[str]) -> int:
    import ensurepip  # noqa: PLC0415  # pylint: disable=import-outside-toplevel

    ensurepip.bootstrap(upgrade=True)
    os.environ.pop("PIP_CONFIG_FILE", None)
    args = [a for a in argv if a not in _GET_PIP_ONLY]
    return subprocess.call([sys.executable, "-m", "pip", "install", *args])


def install() -> str:
    # only the installer needs ansible-test; the bootstrap runs in a bare venv
    from ansible_test._internal.python_requirements import get_venv_packages  # noqa: PLC0415  # pylint: disable=import-outside-toplevel

    python = types.SimpleNamespace(version=f"{sys.version_info[0]}.{sys.version_info[1]}")
    version = get_venv_packages(python)["pip"]
    target = os.path.expanduser(f"~/.ansible/test/cache/get_pip_{version.replace('.', '_')}.py")
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.{os.getpid()}.tmp"  # the matrix installs it for two versions at once
    shutil.copyfile(__file__, tmp)
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    if sys.argv[1:] == ["--install"]:
        print(f"[setup] ansible-test get-pip stand-in: {install()}")
        sys.exit(0)
    sys.exit(bootstrap(sys.argv[1:]))
