"""The fleet-host chain every molecule scenario relies on, checked on this scenario's hosts (a Debian 12
and a Debian 13 container from the registry-less images of hack/fleet-image.sh): systemd runs as
PID 1, the Python our modules run with imports the libvirt binding, the client tools are there, and
apt's downloads went to the pool that every scenario's containers share (testinfra, podman connection).
"""


def test_systemd_is_pid1_and_running(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    state = host.run("systemctl is-system-running --wait").stdout.strip()
    assert state in ("running", "degraded"), state


def test_libvirt_binding_importable_by_the_module_python(host):
    result = host.run("/usr/bin/python3 -c 'import libvirt; print(libvirt.getVersion())'")
    assert result.rc == 0, result.stderr
    assert int(result.stdout) >= 9_000_000


def test_client_tools_installed(host):
    assert host.package("libvirt-clients").is_installed
    assert host.exists("virsh")


def test_downloads_are_in_the_shared_apt_pool(host):
    # the pool is a host directory mounted into every test container: the next scenario (or the
    # next run) links these .debs instead of downloading them again
    debs = host.run("ls /var/cache/kvmops-apt-pool/").stdout.split()
    assert any(name.startswith("python3-libvirt_") and name.endswith(".deb") for name in debs), debs
