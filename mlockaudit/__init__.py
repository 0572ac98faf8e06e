"""mlockaudit: trace the mlock family (mlock, mlock2, munlock, mlockall, munlockall) on
kernels where eBPF is not an option, through audit or tracefs, into Tracee-style events."""

__version__ = "0.1.0"
