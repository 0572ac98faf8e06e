"""An audit SYSCALL record as the kernel prints it, for the record and assembler tests."""

BODY = (b"arch=c000003e syscall=325 success=no exit=-22 a0=7f470c0a0000 a1=2000 a2=63 a3=0 "
        b"items=0 ppid=10176 pid=10217 auid=4294967295 uid=0 gid=0 euid=0 suid=0 fsuid=0 "
        b"egid=0 sgid=0 fsgid=0 tty=pts0 ses=4294967295 comm=\"storm\" "
        b"exe=\"/usr/local/bin/storm\" subj=unconfined key=\"mlockaudit\"")
# RHEL 7's 3.10 prints ses= before tty= (audit_log_task_info of that era)
BODY_3_10 = BODY.replace(b"tty=pts0 ses=4294967295", b"ses=4294967295 tty=pts0")
