"""The drbd_problems filter (the dr role's controller-side check) is module_utils/drbd/_config.problems, with a
clear error for input that is not a list of resources. Kept out of tests/unit/plugins/module_utils, which the
py39 tier runs without ansible."""
from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kvmops.fleet.plugins.filter import drbd_problems as plugin

V = "dr_drbd_resources"
SECRET = "s3cret-0123456789abcdef"  # noqa: S105 (a test value)
HOSTS = ["hva", "hvb"]


def resource(**kw):
    r = {"name": "vm1disk", "port": 7789, "secret": SECRET, "sync_rate": "100M", "initial_primary": "hva",
         "nodes": [{"host": "hva", "address": "10.213.2.11", "disk": "/dev/disk/by-id/a", "minor": 0},
                   {"host": "hvb", "address": "10.213.2.12", "disk": "/dev/disk/by-id/b", "minor": 0}]}
    r.update(kw)
    return r


def test_the_filter_is_the_same_check_and_refuses_what_is_not_a_list():
    f = plugin.FilterModule().filters()["drbd_problems"]
    assert f([resource()], HOSTS) == [] and f([resource()], None) == []
    assert f([resource(secret="short")], ["hva"]) == [  # noqa: S106
        f"{V}[0].secret: must have 16 to 64 characters (has 5; value hidden)",
        f"{V}[0].nodes[1].host: hvb is not in the inventory"]
    with pytest.raises(AnsibleFilterError, match="dr_drbd_resources must be a list of mappings"):
        f({"name": "x"})
