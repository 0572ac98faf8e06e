"""The qemu harness (scripts/vmlib.py, scripts/vm-test) boots a real Debian kernel with
kprobes and runs commands in it as root, on the host's files, without touching the host
kernel's audit or tracefs state. Two boots: one through the CLI, one that must fail fast."""

import os
import platform
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, SCRIPTS

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(os.geteuid() != 0, reason="the qemu harness needs root"),
    pytest.mark.skipif(platform.machine() != "x86_64", reason="the guest kernel is amd64"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None and shutil.which("apt-get") is None,
                       reason="no qemu and no apt-get to install it"),
]

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


def test_guest_runs_a_real_kprobe_kernel_with_the_given_parameters(tmp_path):
    script = "PYTHON=%s\nROOT=%s\n%s" % (sys.executable, ROOT, GUEST_SCRIPT)
    result = subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, "vm-test"), "--append",
         "lockdown=integrity mlockaudit_vm_harness=1", "--exchange", str(tmp_path), "--",
         script],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=400,
        universal_newlines=True)
    assert result.returncode == 7, (result.stdout, result.stderr)   # the command's status
    facts = _facts(result.stdout)
    assert facts["uname"] and facts["uname"] != os.uname().release
    assert facts.get("kprobe_events") == "yes"
    cmdline = facts["cmdline"].split()
    assert "lockdown=integrity" in cmdline and "mlockaudit_vm_harness=1" in cmdline
    assert facts["lockdown"].split() == ["none", "[integrity]", "confidentiality"]
    assert "host root writable" not in result.stdout
    assert not os.path.exists(os.path.join(ROOT, ".vm-harness-write-test"))
    assert "python=ok %s" % ROOT in result.stdout            # host venv, host cwd
    assert facts["exchange"] and (tmp_path / "from-guest").read_text() == "written in the guest\n"


def test_a_failed_boot_is_reported_with_the_console_not_hung():
    import vmlib
    with pytest.raises(vmlib.VMError) as caught:
        vmlib.run_in_vm("true", kernel_params="rdinit=/nonexistent root=/dev/nonexistent",
                        timeout=120)
    assert "Kernel panic" in caught.value.console_tail
    assert "last console lines" in str(caught.value)
