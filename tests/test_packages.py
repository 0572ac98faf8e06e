"""The fleet packages (scripts/build-packages): the .deb installed for real with dpkg,
run, and removed; the .rpm by inspection and installed into a scratch root with rpm (no
RPM-based system runs here)."""

import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.slow]

VERSION = subprocess.run(
    ["sed", "-n", 's/^__version__ = "\\(.*\\)"/\\1/p', os.path.join(ROOT, "mlockaudit",
                                                                 "__init__.py")],
    stdout=subprocess.PIPE, universal_newlines=True).stdout.strip()
DEB = os.path.join(ROOT, "dist", "mlockaudit_%s_all.deb" % VERSION)
RPM = os.path.join(ROOT, "dist", "mlockaudit-%s-1.noarch.rpm" % VERSION)
CONFFILES = ["/etc/audit/plugins.d/au-mlockaudit.conf", "/etc/logrotate.d/mlockaudit",
             "/etc/mlockaudit/auditd-plugin.toml", "/etc/mlockaudit/mlockaudit.toml"]
PAYLOAD = ["/usr/bin/mlockaudit", "/usr/share/mlockaudit/50-mlockaudit.rules",
           "/usr/share/mlockaudit/au-mlockaudit.conf", "/usr/share/mlockaudit/detections.toml",
           "/usr/share/doc/mlockaudit/README.md"]


def run(*args, **kwargs):
    kwargs.setdefault("timeout", 300)
    return subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, **kwargs)


@pytest.fixture(scope="module")
def packages():
    result = run(os.path.join(ROOT, "scripts", "build-packages"), cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert os.path.exists(DEB) and os.path.exists(RPM)
    return DEB, RPM


def test_deb_metadata(packages):
    info = run("dpkg-deb", "-f", DEB, "Package", "Version", "Architecture", "Depends").stdout
    assert "Architecture: all" in info and "Depends: python3 (>= 3.6)" in info
    files = run("dpkg-deb", "-c", DEB).stdout
    for path in PAYLOAD + CONFFILES + ["/lib/systemd/system/mlockaudit.service"]:
        assert "." + path in files, path
    control = run("dpkg-deb", "-I", DEB, "conffiles").stdout.split()
    assert sorted(control) == sorted(CONFFILES)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("dpkg") is None,
                    reason="dpkg -i needs root on a Debian system")
def test_deb_installs_runs_and_removes_cleanly(packages, tmp_path):
    if run("dpkg-query", "-W", "-f=${Status}", "mlockaudit").stdout.endswith(" installed"):
        pytest.skip("an mlockaudit package is already installed here: not touching it")
    before = set(path for path in PAYLOAD + CONFFILES if os.path.lexists(path))
    assert not before, "files of the package exist before it is installed: %s" % before
    result = run("dpkg", "-i", DEB)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        for path in PAYLOAD + CONFFILES + ["/lib/systemd/system/mlockaudit.service"]:
            assert os.path.exists(path), path
        with open("/usr/bin/mlockaudit", "rb") as handle:
            assert handle.readline() == b"#!/usr/bin/python3\n"
        version = run("/usr/bin/mlockaudit", "--version", cwd=str(tmp_path))
        assert version.returncode == 0 and VERSION in version.stdout, version.stderr
        doctor = run("/usr/bin/mlockaudit", "doctor", "--json", cwd=str(tmp_path))
        assert json.loads(doctor.stdout)["kernel"]["release"] == os.uname().release
        with open("/lib/systemd/system/mlockaudit.service") as handle:
            unit = handle.read()
        assert "ExecStart=/usr/bin/mlockaudit start" in unit
        with open("/etc/audit/plugins.d/au-mlockaudit.conf") as handle:
            plugin = handle.read()
        assert "active = no" in plugin and "path = /usr/bin/mlockaudit" in plugin
        # nothing was started by the installation
        assert run("pgrep", "-f", "mlockaudit start").returncode == 1
        removed = run("dpkg", "-r", "mlockaudit")
        assert removed.returncode == 0, removed.stderr
        # remove keeps the configuration (Debian policy: conffiles), purge takes it too
        assert [path for path in PAYLOAD if os.path.lexists(path)] == []
        assert [path for path in CONFFILES if os.path.exists(path)] == CONFFILES
    finally:
        run("dpkg", "--purge", "mlockaudit")
    assert [path for path in PAYLOAD + CONFFILES if os.path.lexists(path)] == []
    assert not os.path.exists("/etc/mlockaudit") and not os.path.exists("/usr/share/mlockaudit")
    assert run("dpkg-query", "-W", "mlockaudit").returncode != 0


def test_rpm_by_inspection(packages):
    files = run("rpm", "-qlp", RPM).stdout.split()
    for path in PAYLOAD + CONFFILES + ["/usr/lib/systemd/system/mlockaudit.service"]:
        assert path in files, path
    assert sorted(run("rpm", "-qp", "--configfiles", RPM).stdout.split()) == sorted(CONFFILES)
    requires = run("rpm", "-qp", "--requires", RPM).stdout
    assert "/usr/bin/python3" in requires and "PayloadIsZstd" not in requires
    info = run("rpm", "-qp", "--qf", "%{ARCH} %{PAYLOADCOMPRESSOR} %{NAME}-%{VERSION}", RPM).stdout
    assert info == "noarch gzip mlockaudit-%s" % VERSION      # (RHEL 7's rpm reads gzip)
    scripts = run("rpm", "-qp", "--scripts", RPM).stdout
    assert "systemctl daemon-reload" in scripts
    assert "systemctl start" not in scripts and "systemctl enable" not in scripts


def test_rpm_installs_into_a_scratch_root(packages, tmp_path):
    root = str(tmp_path / "root")
    os.makedirs(root)
    assert run("rpm", "--root", root, "--initdb").returncode == 0
    result = run("rpm", "--root", root, "-i", "--nodeps", "--noscripts", RPM)
    assert result.returncode == 0, result.stderr
    for path in PAYLOAD + CONFFILES:
        assert os.path.exists(root + path), path
    assert os.stat(root + "/usr/bin/mlockaudit").st_mode & 0o777 == 0o755
    python = shutil.which("python3", path="/usr/bin") or "python3"
    version = run(python, "-I", root + "/usr/bin/mlockaudit", "--version", cwd=str(tmp_path))
    assert VERSION in version.stdout, version.stderr
    assert run("rpm", "--root", root, "-e", "--noscripts", "mlockaudit").returncode == 0
    left = [path for path in PAYLOAD + CONFFILES + ["/etc/mlockaudit", "/usr/share/mlockaudit"]
            if os.path.lexists(root + path)]
    assert left == []
