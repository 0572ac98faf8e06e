"""doctor says, per call of the surface beyond the family, whether this kernel has its
syscall tracepoints and the entry's event filter, and which audit fields its rules use
(a stand-in tracefs tree: the host's own is read by the live tests)."""

from mlockaudit import doctor


def test_surface_tracepoints_and_filters(tmp_path):
    events = tmp_path / "events" / "syscalls"
    for name in ("sys_enter_mmap", "sys_exit_mmap", "sys_enter_shmctl", "sys_exit_shmctl",
                 "sys_enter_setrlimit"):
        (events / name).mkdir(parents=True)
    (events / "sys_enter_mmap" / "filter").write_text("none\n")
    (tmp_path / "instances").mkdir()
    info = doctor._probe_tracefs(str(tmp_path), None)
    assert info["surface"] == {
        "mmap": {"tracepoint": True, "event_filter": True},
        "shmctl": {"tracepoint": True, "event_filter": False},
        "setrlimit": {"tracepoint": False, "event_filter": False},      # no exit
        "prlimit64": {"tracepoint": False, "event_filter": False}}


def test_audit_fields_are_the_rules_fields():
    assert doctor.surface_audit() == {
        "mmap": {"fields": ["a3&0x2000"], "supported": True},
        "shmctl": {"fields": ["a1=11", "a1=12"], "supported": True},
        "setrlimit": {"fields": ["a0=8"], "supported": True},
        "prlimit64": {"fields": ["a1=8 a2!=0"], "supported": True}}
