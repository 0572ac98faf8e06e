"""The qemu harness (scripts/vmlib.py, scripts/vm-test) boots a real Debian kernel with
kprobes and runs commands in it as root, on the host's files, without touching the host
kernel's audit or tracefs state. Boots (marked vm): one through the CLI per kernel of the
matrix, one that must fail fast. Offline (no mark, no network, no root): how a kernel line
is resolved from a Debian Packages index, the mirror from apt's sources, the module load
order, and the cache reuse."""

import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SCRIPTS
import vmlib

VM_MARKS = (
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="the qemu harness needs root"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the guest kernel is amd64"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None,
                       reason="no qemu and no apt-get to install it"),
)


def boots(test):
    """The marks of a test that boots a guest."""
    for mark in reversed(VM_MARKS):
        test = mark(test)
    return test

GUEST_SCRIPT = """
echo "uname=$(uname -r)"
echo "cmdline=$(cat /proc/cmdline)"
test -e /sys/kernel/tracing/kprobe_events && echo "kprobe_events=yes"
echo "lockdown=$(cat /sys/kernel/security/lockdown)"
echo "exchange=$MLOCKAUDIT_VM_EXCHANGE"
echo "written in the guest" > "$MLOCKAUDIT_VM_EXCHANGE/from-guest"
touch "$ROOT/.vm-harness-write-test" 2>/dev/null && echo "host root writable"
"$PYTHON" -c 'import mlockaudit, os; print("python=ok", os.getcwd())'
exit 7
"""


def _facts(output):
    facts = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key] = value
    return facts


@boots
@pytest.mark.parametrize("line", vmlib.kernel_matrix())
def test_guest_runs_a_real_kprobe_kernel_with_the_given_parameters(tmp_path, line):
    script = "PYTHON=%s\nROOT=%s\n%s" % (sys.executable, ROOT, GUEST_SCRIPT)
    result = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "vm-test"), "--kernel", line, "--append",
         "lockdown=integrity mlockaudit_vm_harness=1", "--exchange", str(tmp_path), "--",
         script],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=400,
        universal_newlines=True)
    assert result.returncode == 7, (result.stdout, result.stderr)   # the command's status
    facts = _facts(result.stdout)
    assert facts["uname"] and facts["uname"] != os.uname().release
    assert facts["uname"].startswith(line + ".")                # the kernel asked for
    assert facts.get("kprobe_events") == "yes"
    cmdline = facts["cmdline"].split()
    assert "lockdown=integrity" in cmdline and "mlockaudit_vm_harness=1" in cmdline
    assert facts["lockdown"].split() == ["none", "[integrity]", "confidentiality"]
    assert "host root writable" not in result.stdout
    assert not os.path.exists(os.path.join(ROOT, ".vm-harness-write-test"))
    assert "python=ok %s" % ROOT in result.stdout            # host venv, host cwd
    assert facts["exchange"] and (tmp_path / "from-guest").read_text() == "written in the guest\n"


@boots
def test_a_failed_boot_is_reported_with_the_console_not_hung():
    with pytest.raises(vmlib.VMError) as caught:
        vmlib.run_in_vm("true", kernel_params="rdinit=/nonexistent root=/dev/nonexistent",
                        timeout=120)
    assert "Kernel panic" in caught.value.console_tail
    assert "last console lines" in str(caught.value)


# =========================================================================== offline

def _stanza(package, version, **fields):
    lines = ["Package: %s" % package, "Version: %s" % version, "Architecture: amd64"]
    fields.setdefault("Filename", "pool/main/l/linux-signed-amd64/%s_%s_amd64.deb"
                      % (package, version))
    for key, value in sorted(fields.items()):
        lines.append("%s: %s" % (key, value))
    return "\n".join(lines) + "\n"


#: A Packages index shaped like bullseye's: flavours, -dbg/-unsigned, a meta package, an
#: ABI number that sorts wrong as text (9 < 46), a continued Description.
BULLSEYE = "\n".join([
    _stanza("linux-image-5.10.0-9-amd64", "5.10.70-1", Size="52000000"),
    _stanza("linux-image-5.10.0-46-amd64", "5.10.262-1", Size="55749416",
            SHA256="86a6792f3a03ab15a643f385830cdaa921f15e3e9c8bf63aa55a9243c62fc797",
            Description="Linux 5.10 for 64-bit PCs (signed)\n The Linux kernel 5.10 and "
                        "modules for use on PCs with AMD64, Intel 64 or VIA Nano\n .\n "
                        "processors."),
    _stanza("linux-image-5.10.0-46-amd64-dbg", "5.10.263-1"),
    _stanza("linux-image-5.10.0-46-amd64-unsigned", "5.10.263-1"),
    _stanza("linux-image-5.10.0-47-cloud-amd64", "5.10.263-1"),
    _stanza("linux-image-5.10.0-47-rt-amd64", "5.10.263-1"),
    _stanza("linux-image-amd64", "5.10.262-1"),
    _stanza("linux-image-6.1.0-0.deb11.52-amd64", "6.1.158-1~deb11u1"),
    _stanza("linux-headers-5.10.0-50-amd64", "5.10.300-1"),
])


def test_a_packages_index_parses_into_stanzas_with_continued_fields():
    stanzas = vmlib.parse_packages(BULLSEYE)
    assert len(stanzas) == 9
    second = stanzas[1]
    assert second["Package"] == "linux-image-5.10.0-46-amd64"
    assert second["Version"] == "5.10.262-1" and second["Size"] == "55749416"
    assert second["Filename"] == ("pool/main/l/linux-signed-amd64/"
                                  "linux-image-5.10.0-46-amd64_5.10.262-1_amd64.deb")
    assert second["Description"].splitlines() == [
        "Linux 5.10 for 64-bit PCs (signed)",
        "The Linux kernel 5.10 and modules for use on PCs with AMD64, Intel 64 or VIA Nano",
        ".", "processors."]
    assert vmlib.parse_packages("\n\n") == []


def test_the_newest_image_of_a_line_is_picked_by_version_not_by_name():
    stanzas = vmlib.parse_packages(BULLSEYE)
    newest = vmlib.newest_of_line(stanzas, "5.10")
    assert newest["Package"] == "linux-image-5.10.0-46-amd64"      # not -9, not flavours
    assert newest["Version"] == "5.10.262-1"
    assert vmlib.newest_of_line(stanzas, "6.12") is None
    # bookworm and its security suite together (kernel updates land in -security first)
    bookworm = vmlib.parse_packages("\n".join([
        _stanza("linux-image-6.1.0-50-amd64", "6.1.158-1"),
        _stanza("linux-image-6.1.0-57-amd64", "6.1.192-3"),
        _stanza("linux-image-6.12.117+deb12-amd64", "6.12.117-1~deb12u1"),
        _stanza("linux-image-6.1.0-57-amd64", "6.1.192-2"),
    ]))
    assert vmlib.newest_of_line(bookworm, "6.1")["Version"] == "6.1.192-3"
    trixie = vmlib.parse_packages("\n".join([
        _stanza("linux-image-6.12.99+deb13-amd64", "6.12.99-1"),
        _stanza("linux-image-6.12.118+deb13-amd64", "6.12.118-1"),
        _stanza("linux-image-6.12.117+deb13-amd64", "6.12.117-1"),
        _stanza("linux-image-6.12.118+deb13-cloud-amd64", "6.12.118-1"),
        _stanza("linux-image-6.16.3+deb13-amd64", "6.16.3-1~bpo13+1"),
    ]))
    assert vmlib.newest_of_line(trixie, "6.12")["Package"] == "linux-image-6.12.118+deb13-amd64"
    # a stanza without Filename (a broken or partial index) is never picked
    assert vmlib.newest_of_line(vmlib.parse_packages(
        "Package: linux-image-6.1.0-9-amd64\nVersion: 6.1.1-1\n"), "6.1") is None


def test_package_names_map_to_their_kernel_line():
    assert vmlib.line_of_package("linux-image-5.10.0-46-amd64") == "5.10"
    assert vmlib.line_of_package("linux-image-6.1.0-57-amd64") == "6.1"
    assert vmlib.line_of_package("linux-image-6.12.118+deb13-amd64") == "6.12"
    for other in ("linux-image-6.12.118+deb12-amd64", "linux-image-6.1.0-57-cloud-amd64",
                  "linux-image-6.1.0-0.deb11.52-amd64", "linux-image-amd64", "", None):
        assert vmlib.line_of_package(other) is None, other


VERSION_ORDER = [
    ("5.10.262-1", "5.10.223-1", 1), ("6.12.118-1", "6.12.117-1", 1),
    ("6.1.192-3", "6.1.192-10", -1), ("6.1.192-3", "6.1.192-3", 0),
    ("1.0~rc1-1", "1.0-1", -1), ("1.0-1", "1.0+b1-1", -1), ("1.0a", "1.0", 1),
    ("1:0.9", "2.0", 1), ("0:2.0", "2.0", 0), ("6.1.158-1~deb11u1", "6.1.158-1", -1),
    ("5.10.0", "5.10", 1), ("1.01", "1.1", 0), ("1.0-1~", "1.0-1", -1), ("2.a", "2.+", -1),
]


@pytest.mark.parametrize("a,b,sign", VERSION_ORDER)
def test_versions_compare_as_dpkg_does(a, b, sign):
    def signum(value):
        return (value > 0) - (value < 0)
    assert signum(vmlib.compare_versions(a, b)) == sign
    assert signum(vmlib.compare_versions(b, a)) == -sign
    if shutil.which("dpkg"):                  # the reference, where there is one
        for op, want in (("lt", sign < 0), ("eq", sign == 0), ("gt", sign > 0)):
            assert (subprocess.run(["dpkg", "--compare-versions", a, op, b]).returncode
                    == 0) == want, (a, op, b)


def test_the_matrix_is_narrowed_by_an_environment_value(monkeypatch):
    assert vmlib.kernel_matrix("") == ["5.10", "6.1", "6.12"]
    assert vmlib.kernel_matrix("6.1") == ["6.1"]
    assert vmlib.kernel_matrix(" 6.12, 5.10 ") == ["5.10", "6.12"]    # matrix order
    with pytest.raises(ValueError, match="4.19"):
        vmlib.kernel_matrix("6.1,4.19")
    monkeypatch.setenv("MLOCKAUDIT_VM_KERNELS", "6.12")
    assert vmlib.kernel_matrix() == ["6.12"]
    monkeypatch.delenv("MLOCKAUDIT_VM_KERNELS")
    assert vmlib.kernel_matrix() == list(vmlib.KERNEL_LINES)


def test_the_mirrors_come_from_apt_sources_in_either_form(tmp_path, monkeypatch):
    monkeypatch.delenv("MLOCKAUDIT_VM_MIRROR", raising=False)
    monkeypatch.delenv("MLOCKAUDIT_VM_SECURITY_MIRROR", raising=False)
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    assert vmlib.debian_mirror(apt_dir=str(apt)) == vmlib.DEFAULT_MIRROR
    assert vmlib.debian_mirror(True, apt_dir=str(apt)) == vmlib.DEFAULT_SECURITY_MIRROR
    (apt / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: http://packages.example/node\nSuites: nodistro\nComponents: main\n")
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb-src\nURIs: http://src.example/debian-security\n"
        "Suites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n")
    assert vmlib.debian_mirror(apt_dir=str(apt)) == "http://mirror.example/debian"
    assert vmlib.debian_mirror(True, apt_dir=str(apt)) == "http://mirror.example/debian-security"
    # a one-line sources.list comes first
    (apt / "sources.list").write_text(
        "# deb http://commented.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://old.example/debian bullseye main\n"
        "deb http://old.example/security bullseye-security main\n")
    assert vmlib.debian_mirror(apt_dir=str(apt)) == "http://old.example/debian"
    assert vmlib.debian_mirror(True, apt_dir=str(apt)) == "http://old.example/security"
    monkeypatch.setenv("MLOCKAUDIT_VM_MIRROR", "http://override.example/debian/")
    assert vmlib.debian_mirror(apt_dir=str(apt)) == "http://override.example/debian"
    assert vmlib.parse_apt_sources("Types: deb\nEnabled: no\nURIs: http://x\nSuites: sid\n",
                                   deb822=True) == []


def test_release_hashes_are_read_from_the_sha256_section():
    release = ("Origin: Debian\nSuite: oldoldstable\nCodename: bullseye\n"
               "MD5Sum:\n 0123 10 main/binary-amd64/Packages.gz\n"
               "SHA256:\n 7b6d43 626180 main/binary-amd64/Packages.gz\n"
               " f8863a  474876 main/binary-amd64/Packages.xz\n")
    assert vmlib.release_hashes(release) == {
        "main/binary-amd64/Packages.gz": ("7b6d43", 626180),
        "main/binary-amd64/Packages.xz": ("f8863a", 474876)}


def test_module_dependencies_come_from_modinfo_and_load_first():
    blob = (b"\x7fELF junk\0license=GPL\0depends=virtio_ring,virtio,netfs\0"
            b"intree=Y\0name=9pnet_virtio\0vermagic=6.12.118+deb13-amd64 SMP\0")
    assert vmlib.modinfo_depends(blob) == ["virtio_ring", "virtio", "netfs"]
    assert vmlib.modinfo_depends(b"\0depends=\0name=virtio\0") == []
    assert vmlib.modinfo_depends(b"no modinfo here") == []
    needed = list(vmlib.NEEDED_MODULES)
    # 5.10: no netfs, no virtio_pci_*_dev, 9p on fscache
    graph_510 = {"virtio_ring": [], "virtio": [], "virtio_pci": ["virtio_ring", "virtio"],
                 "fscache": [], "9pnet": [], "9pnet_virtio": ["virtio_ring", "9pnet", "virtio"],
                 "9p": ["9pnet", "fscache"]}
    order = vmlib.module_load_order(needed, graph_510.get)
    assert sorted(order) == sorted(graph_510)
    for name, deps in graph_510.items():
        assert all(order.index(dep) < order.index(name) for dep in deps), name
    # 6.12: virtio built in, fscache folded into netfs
    graph_612 = {"netfs": [], "9pnet": [], "9pnet_virtio": ["9pnet"], "9p": ["netfs", "9pnet"]}
    assert vmlib.module_load_order(needed, graph_612.get) == ["9pnet", "9pnet_virtio",
                                                              "netfs", "9p"]
    with pytest.raises(vmlib.VMError, match="loop"):
        vmlib.module_load_order(["a"], {"a": ["b"], "b": ["a"]}.get)


def _fake_kernel(cache, package, version, modules=("9p",)):
    directory = os.path.join(cache, "kernels", package)
    os.makedirs(os.path.join(directory, "modules"))
    with open(os.path.join(directory, "kernel.json"), "w") as handle:
        json.dump({"package": package, "version": version, "release": "r-" + package,
                   "modules": list(modules)}, handle)
    return directory


def test_a_line_keeps_its_cached_kernel_without_the_network(tmp_path, monkeypatch):
    cache = str(tmp_path)
    monkeypatch.setattr(vmlib, "CACHE_DIR", cache)
    monkeypatch.delenv("MLOCKAUDIT_VM_REFRESH", raising=False)
    monkeypatch.delenv("MLOCKAUDIT_VM_KERNEL_PACKAGE", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("the network was asked")
    monkeypatch.setattr(vmlib, "_download", no_network)
    # the default kernel (apt's 6.1) is this line's kernel: reused, and linked as the line's
    default = _fake_kernel(cache, "linux-image-6.1.0-57-amd64", "6.1.192-3")
    os.symlink(os.path.relpath(default, cache), os.path.join(cache, "current"))
    kernel = vmlib.ensure_kernel("6.1")
    assert (kernel.package, kernel.line) == ("linux-image-6.1.0-57-amd64", "6.1")
    assert os.path.realpath(os.path.join(cache, "lines", "6.1")) == os.path.realpath(default)
    assert vmlib.ensure_kernel().package == "linux-image-6.1.0-57-amd64"   # no argument
    # a line linked before is reused as it is
    old = _fake_kernel(cache, "linux-image-5.10.0-46-amd64", "5.10.262-1",
                       modules=("virtio_ring", "9p"))
    vmlib._link(os.path.join(cache, "lines", "5.10"), old)
    kernel = vmlib.ensure_kernel("5.10")
    assert (kernel.version, list(kernel.modules)) == ("5.10.262-1", ["virtio_ring", "9p"])
    # an unknown line is an error, not a download
    with pytest.raises(vmlib.VMError):
        vmlib.ensure_line("4.19")


def test_an_uncached_line_resolves_the_newest_of_its_suites(tmp_path, monkeypatch):
    cache = str(tmp_path)
    monkeypatch.setattr(vmlib, "CACHE_DIR", cache)
    monkeypatch.delenv("MLOCKAUDIT_VM_REFRESH", raising=False)
    indexes = {
        "trixie": "\n".join([_stanza("linux-image-6.12.117+deb13-amd64", "6.12.117-1")]),
        "trixie-security": "\n".join([_stanza("linux-image-6.12.118+deb13-amd64",
                                              "6.12.118-1"),
                                      _stanza("linux-image-6.12.116+deb13-amd64",
                                              "6.12.116-1")]),
    }
    asked, extracted = [], []

    def suite_index(suite, refresh=False):
        asked.append(suite)
        stanzas = vmlib.parse_packages(indexes[suite])
        for stanza in stanzas:
            stanza["_archive"], stanza["_suite"] = "http://mirror.example/" + suite, suite
        return stanzas

    def archive_deb(stanza):
        return "/nonexistent/" + os.path.basename(stanza["Filename"])

    def extract(package, target, deb=None):
        extracted.append((package, deb))
        _fake_kernel(cache, package, {"linux-image-6.12.118+deb13-amd64": "6.12.118-1"}[
            package], modules=("netfs", "9pnet", "9pnet_virtio", "9p"))
    monkeypatch.setattr(vmlib, "suite_index", suite_index)
    monkeypatch.setattr(vmlib, "_archive_deb", archive_deb)
    monkeypatch.setattr(vmlib, "_extract_kernel", extract)
    kernel = vmlib.ensure_kernel("6.12")
    assert asked == ["trixie", "trixie-security"]
    assert extracted == [("linux-image-6.12.118+deb13-amd64", "/nonexistent/"
                          "linux-image-6.12.118+deb13-amd64_6.12.118-1_amd64.deb")]
    assert (kernel.package, kernel.line, list(kernel.modules)) == (
        "linux-image-6.12.118+deb13-amd64", "6.12", ["netfs", "9pnet", "9pnet_virtio", "9p"])
    assert os.path.realpath(os.path.join(cache, "lines", "6.12")) == kernel.directory
    assert not os.path.exists(os.path.join(cache, "current"))     # the default is apt's
    del asked[:]
    assert vmlib.ensure_kernel("6.12").version == "6.12.118-1" and asked == []


def test_the_guest_init_loads_the_kernels_own_module_list():
    init = vmlib._init_text(["netfs", "9pnet", "9pnet_virtio", "9p"])
    assert "for m in netfs 9pnet 9pnet_virtio 9p; do" in init
    assert "fscache" not in init and "virtio_pci" not in init
    assert "for m in %s; do" % " ".join(vmlib.MODULES) in vmlib._init_text()


def test_vmlib_stays_within_python_3_6():
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    if not os.path.exists(vermin):
        pytest.skip("vermin is not installed (pip install -e '.[test]')")
    result = subprocess.run([vermin, "-q", "--no-tips", "--eval-annotations", "--violations",
                             "-t=3.6-", os.path.join(SCRIPTS, "vmlib.py"),
                             os.path.join(SCRIPTS, "vm-test")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True)
    assert result.returncode == 0, result.stdout
