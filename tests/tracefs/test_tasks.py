"""The identity model of the tracefs backend (tracefs/tasks.py): the lifecycle events, in
stream order, on top of a /proc snapshot."""

from mlockaudit.tracefs.decode import (CLONE_PARENT, CLONE_THREAD, EXEC, NEWTASK, RENAME,
                                       TASK_EXIT, TaskRecord)
from mlockaudit.tracefs.tasks import (EXE_EXEC, EXE_INHERITED, EXE_PROC, SnapshotTask,
                                      TaskTable)

SIGCHLD = 17


def table(**kwargs):
    tasks = TaskTable(trace_to_boot_ns=lambda ts: ts + 1000, **kwargs)
    tasks.load_snapshot([
        SnapshotTask(1, 1, 0, b"systemd", b"/usr/lib/systemd/systemd", 5),
        SnapshotTask(100, 100, 1, b"bash", b"/usr/bin/bash", 50),
        SnapshotTask(200, 200, 1, b"java", b"/usr/bin/java", 60),
        SnapshotTask(201, 200, 1, b"GC thread", b"/usr/bin/java", 61),
    ])
    return tasks


def fork(tasks, ts, parent_tid, child, comm, flags=SIGCHLD):
    tasks.apply(TaskRecord(NEWTASK, ts, 0, parent_tid, child, comm=comm, clone_flags=flags))


def test_snapshot_is_what_proc_said():
    tasks = table()
    who = tasks.identify(201)
    assert (who.tid, who.tgid, who.ppid, who.comm, who.exe, who.exe_source) == (
        201, 200, 1, b"GC thread", b"/usr/bin/java", EXE_PROC)
    assert who.start_ns == 61 and who.leader_start_ns == 60 and who.parent_start_ns == 5
    assert not who.uncertain and tasks.identify(999) is None


def test_fork_rename_exec_exit_of_a_short_process():
    tasks = table()
    fork(tasks, 10, 100, 300, b"bash")
    child = tasks.identify(300)
    assert (child.tgid, child.ppid, child.comm, child.exe, child.exe_source) == (
        300, 100, b"bash", b"/usr/bin/bash", EXE_INHERITED)
    assert child.start_ns == 1010 and child.parent_start_ns == 50
    tasks.apply(TaskRecord(RENAME, 11, 0, 300, 300, comm=b"x-1 (1) [000] .", old_comm=b"bash"))
    tasks.apply(TaskRecord(EXEC, 12, 0, 300, 300, filename=b"./miner", old_pid=300))
    after = tasks.identify(300)
    assert (after.comm, after.exe, after.exe_source) == (b"x-1 (1) [000] .", b"./miner", EXE_EXEC)
    tasks.apply(TaskRecord(TASK_EXIT, 13, 0, 300, 300, comm=b"miner", group_dead=True))
    assert tasks.identify(300) is None and 300 not in tasks.procs


def test_threads_join_the_process_and_keep_their_own_names():
    tasks = table()
    fork(tasks, 10, 200, 202, b"java", CLONE_THREAD | 0x3d0f00)
    tasks.apply(TaskRecord(RENAME, 11, 0, 202, 202, comm=b"worker-7", old_comm=b"java"))
    who = tasks.identify(202)
    assert (who.tid, who.tgid, who.ppid, who.comm, who.exe) == (202, 200, 1, b"worker-7",
                                                                b"/usr/bin/java")
    assert tasks.procs[200].threads == 3
    # the main thread exits alone (pthread_exit): the process lives on
    tasks.apply(TaskRecord(TASK_EXIT, 12, 0, 200, 200, comm=b"java", group_dead=False))
    assert tasks.identify(202).tgid == 200 and 200 in tasks.procs


def test_clone_parent_makes_a_sibling():
    tasks = table()
    fork(tasks, 10, 100, 301, b"bash", SIGCHLD | CLONE_PARENT)
    assert tasks.identify(301).ppid == 1


def test_a_thread_that_execs_takes_the_leaders_id():
    tasks = table()
    fork(tasks, 10, 200, 202, b"java", CLONE_THREAD)
    tasks.apply(TaskRecord(TASK_EXIT, 11, 0, 201, 201, comm=b"GC thread", group_dead=False))
    tasks.apply(TaskRecord(RENAME, 12, 0, 202, 202, comm=b"sh", old_comm=b"java"))
    tasks.apply(TaskRecord(EXEC, 13, 0, 200, 200, filename=b"/bin/sh", old_pid=202))
    who = tasks.identify(200)
    assert (who.tid, who.tgid, who.comm, who.exe) == (200, 200, b"sh", b"/bin/sh")
    assert tasks.identify(202) is None


def test_children_of_a_dead_parent_have_an_unknown_parent():
    tasks = table()
    fork(tasks, 10, 100, 300, b"bash")
    fork(tasks, 11, 300, 400, b"bash")
    assert tasks.identify(400).ppid == 300                 # a call before the parent died
    tasks.apply(TaskRecord(TASK_EXIT, 12, 0, 300, 300, comm=b"bash", group_dead=None))
    orphan = tasks.identify(400)
    assert orphan.ppid is None and orphan.parent_start_ns is None    # a reaper: not guessed
    assert orphan.tgid == 400


def test_a_reused_pid_is_a_new_task():
    tasks = table()
    fork(tasks, 10, 100, 300, b"first")
    tasks.apply(TaskRecord(TASK_EXIT, 11, 0, 300, 300, comm=b"first", group_dead=True))
    fork(tasks, 12, 200, 300, b"second")
    who = tasks.identify(300)
    assert (who.comm, who.ppid, who.exe) == (b"second", 200, b"/usr/bin/java")
    # and an exit that was lost: the new task still replaces the old entry
    fork(tasks, 13, 100, 300, b"third")
    assert tasks.identify(300).comm == b"third" and tasks.identify(300).ppid == 100


def test_unknown_creators_and_renames_are_honest():
    tasks = table()
    fork(tasks, 10, 555, 600, b"ghost")                   # created by a thread never seen
    who = tasks.identify(600)
    assert (who.tgid, who.ppid, who.exe) == (600, None, None) and tasks.unknown_parent == 1
    tasks.apply(TaskRecord(RENAME, 11, 0, 777, 777, comm=b"named", old_comm=b"x"))
    who = tasks.identify(777)
    assert who.comm == b"named" and who.tgid is None and who.uncertain


def test_after_a_loss_unconfirmed_entries_are_uncertain():
    tasks = table()
    fork(tasks, 10, 100, 300, b"before")
    tasks.lost()
    assert tasks.identify(300).uncertain and tasks.identify(100).uncertain
    tasks.apply(TaskRecord(RENAME, 11, 0, 300, 300, comm=b"after", old_comm=b"before"))
    # the name is confirmed, the executable (inherited before the loss) is not: an exec
    # may have been overwritten
    assert tasks.identify(300).uncertain
    tasks.apply(TaskRecord(EXEC, 12, 0, 300, 300, filename=b"/bin/true", old_pid=300))
    assert not tasks.identify(300).uncertain


def test_the_table_is_bounded():
    tasks = table(max_threads=64)
    for pid in range(1000, 1300):
        fork(tasks, pid, 100, pid, b"churn")              # exits never seen (lost)
    assert len(tasks.threads) <= 64 and len(tasks.procs) <= 64 and tasks.evicted > 0
    assert tasks.identify(1299).comm == b"churn"
