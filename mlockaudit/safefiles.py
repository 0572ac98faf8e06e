"""Files and directories mlockaudit writes as root: private, never through a planted link,
never someone else's (issue #17).

Events carry other users' command lines (``proctitle``), which often hold secrets; the
spool holds the same messages; the state file says what to undo in the kernel. mlockaudit
runs as root and is often pointed at directories others can write to (a shared log
directory, a sticky /tmp), where the classic attack is a symbolic link planted at the
path: root would then append to, or truncate, whatever file it names. So:

* every file is opened with ``O_NOFOLLOW`` (the kernel refuses a link as the last
  component, ELOOP) and ``O_CLOEXEC``, and checked with ``fstat`` on the descriptor itself
  (no window between the check and the use): a regular file with one name (a second hard
  link could be any file of ours, e.g. /etc/shadow), owned by our uid; an output may also
  be a character device (``file:/dev/null``; only root can make one);
* a file mlockaudit creates gets exactly its mode (``fchmod`` after the create, so the
  umask cannot widen or narrow it): 0600 unless the operator chose otherwise; an existing
  file of ours is tightened to at most that mode (bits outside it are removed, none added);
* a directory mlockaudit owns (the run directory, a spool directory) is created 0700, and
  an existing one must be a real directory (not a link) owned by us; it is tightened to
  0700.

A refusal is an :class:`UnsafePath` (an OSError, so callers that report open errors report
it too) whose message names the path and the reason.
"""

import errno
import os
import stat

FILE_MODE = 0o600
DIR_MODE = 0o700
#: What ``--file-mode`` may grant: read and write for the owner, read for group and others
#: (write for anyone else would let them forge events; execute makes no sense).
ALLOWED_FILE_BITS = 0o644


class UnsafePath(OSError):
    """A path mlockaudit refuses to use; ``str()`` names the path and says why."""

    def __init__(self, path, reason, error=errno.EPERM):
        OSError.__init__(self, error, reason, path)

    def __str__(self):
        return "refusing %s: %s" % (self.filename, self.strerror)


def parse_mode(value):
    """``"0640"`` (an octal string, as in chmod) -> 0o640; ValueError says what is allowed.
    An int is taken as the mode itself (the Python API)."""
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        text = str(value).strip()
        if not text or len(text) > 4 or any(c not in "01234567" for c in text):
            raise ValueError("file mode %r is not an octal mode such as \"0600\" or \"0640\""
                             % (value,))
        mode = int(text, 8)
    if mode & ~ALLOWED_FILE_BITS or not mode & 0o200:
        raise ValueError("file mode %s not allowed: the owner must be able to write, and "
                         "group and others may only read (at most 0644; 0600 or 0640 are "
                         "the usual ones)" % format(mode, "04o"))
    return mode


def _kind(st_mode):
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a fifo"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISLNK, "a symbolic link")):
        if test(st_mode):
            return name
    return "not a regular file"


def _refusal(path, exc):
    """The OSError of an open -> an UnsafePath when it was one of our refusals."""
    if exc.errno == errno.ELOOP and os.path.islink(path):
        return UnsafePath(path, "it is a symbolic link (mlockaudit never writes through one: "
                                "it could point at any file); remove it", errno.ELOOP)
    if exc.errno in (errno.ENXIO, errno.EISDIR, errno.ENOTDIR):
        try:
            kind = _kind(os.lstat(path).st_mode)
        except OSError:
            return exc
        if kind != "a character device":
            return UnsafePath(path, "it is %s, not a regular file" % kind, exc.errno)
    return exc


def check_fd(fd, path, devices=False):
    """Refuse what ``fd`` (opened from ``path``) is if it is not ours to write to. Returns
    its stat (for a character device when ``devices``: no owner or link checks)."""
    st = os.fstat(fd)
    if stat.S_ISCHR(st.st_mode) and devices:
        return st
    if not stat.S_ISREG(st.st_mode):
        raise UnsafePath(path, "it is %s, not a regular file" % _kind(st.st_mode))
    uid = os.geteuid()
    if st.st_uid != uid:
        raise UnsafePath(path, "it is owned by uid %d, not by uid %d (mlockaudit's): a file "
                               "another user controls is never written to; remove it or "
                               "chown it" % (st.st_uid, uid))
    if st.st_nlink != 1:
        raise UnsafePath(path, "it has %d hard links (another name of it could be any "
                               "file); remove it" % st.st_nlink)
    return st


def open_file(path, flags, mode=FILE_MODE, devices=False):
    """``os.open(path, flags | O_CREAT | O_NOFOLLOW | O_CLOEXEC)`` with the checks above ->
    ``(fd, created)``. A new file gets exactly ``mode``; an existing one loses the bits
    outside ``mode``. Opened non-blocking (a fifo must not hang the open), then switched to
    blocking. ``devices``: a character device is accepted as is (outputs only). ``flags``
    must not hold O_TRUNC (it would act before the checks): ``os.ftruncate`` after."""
    if flags & os.O_TRUNC:
        raise ValueError("open_file: truncate after the checks, not with O_TRUNC")
    base = flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    for _attempt in range(8):                  # (a path removed or created meanwhile)
        created = True
        try:
            fd = os.open(path, base | os.O_CREAT | os.O_EXCL, mode)
        except FileExistsError:
            created = False
            try:
                fd = os.open(path, base & ~os.O_CREAT, mode)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _refusal(path, exc)
        except OSError as exc:
            raise _refusal(path, exc)
        break
    else:
        raise UnsafePath(path, "it keeps being created and removed under us", errno.EAGAIN)
    try:
        st = check_fd(fd, path, devices)
        if stat.S_ISREG(st.st_mode):
            if created:
                os.fchmod(fd, mode)            # exactly: the umask does not decide
            elif st.st_mode & 0o7777 & ~mode:
                os.fchmod(fd, st.st_mode & 0o7777 & mode)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, created


def _make_parents(path):
    """Missing parents 0700 (os.makedirs gives them 0777 minus the umask)."""
    if os.path.isdir(path):
        return
    _make_parents(os.path.dirname(path))
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass


def private_dir(path, mode=DIR_MODE):
    """Create ``path`` (missing parents too, 0700) or take the existing one: a real
    directory owned by our uid, tightened to ``mode``. Returns ``path``."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except FileNotFoundError:
        _make_parents(os.path.dirname(os.path.abspath(path)))
        os.mkdir(path, mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafePath(path, "it is a symbolic link, not mlockaudit's own directory; "
                                   "remove it", errno.ELOOP)
        if exc.errno == errno.ENOTDIR:
            raise UnsafePath(path, "it is not a directory", errno.ENOTDIR)
        raise
    try:
        st = os.fstat(fd)
        uid = os.geteuid()
        if st.st_uid != uid:
            raise UnsafePath(path, "the directory is owned by uid %d, not by uid %d "
                                   "(mlockaudit's); remove it or chown it" % (st.st_uid, uid))
        if st.st_mode & 0o7777 != mode:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def read_file(path):
    """The bytes of an existing file of ours (no link followed, the checks of check_fd)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise _refusal(path, exc)
    try:
        check_fd(fd, path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def write_file(path, data, mode=FILE_MODE):
    """Replace the content of ``path`` with ``data`` (bytes) through open_file: created
    ``mode``, never through a link, never another uid's file."""
    fd, _created = open_file(path, os.O_WRONLY, mode)
    try:
        os.ftruncate(fd, 0)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
