"""A real rsyslogd for the syslog tests: its own config, pid file, work directory and
loopback ports under a test's tmp_path (never the system's daemon, never /dev/log).

Each input (udp, tcp, tls, tls-client-cert, local) has its own ruleset writing what it
received to ``<name>.jsonl``: one JSON object per message with what rsyslog parsed out of
it (pri, hostname, app-name, procid, msgid, structured-data, msg) and the raw message,
so a test can check both that the collector parsed our framing and that the payload
arrived byte for byte. rsyslog's default of escaping control characters on receipt stays
on: a control byte that got through would show up as ``#NNN``.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
GTLS = "/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"

TEMPLATE = r'''
template(name="parsed" type="list") {
  constant(value="{\"pri\":\"") property(name="pri")
  constant(value="\",\"host\":\"") property(name="hostname" format="json")
  constant(value="\",\"app\":\"") property(name="app-name" format="json")
  constant(value="\",\"procid\":\"") property(name="procid" format="json")
  constant(value="\",\"msgid\":\"") property(name="msgid" format="json")
  constant(value="\",\"sd\":\"") property(name="structured-data" format="json")
  constant(value="\",\"msg\":\"") property(name="msg" format="json")
  constant(value="\",\"raw\":\"") property(name="rawmsg" format="json")
  constant(value="\"}\n")
}
'''


def have_rsyslogd():
    return os.path.exists(RSYSLOGD)


def have_gtls():
    if os.path.exists(GTLS):
        return True
    return any(os.path.exists(os.path.join(d, "lmnsd_gtls.so"))
               for d in ("/usr/lib/rsyslog", "/usr/lib64/rsyslog",
                         "/usr/lib/aarch64-linux-gnu/rsyslog"))


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_certs(directory):
    """A throwaway CA, a server certificate for 127.0.0.1/localhost, a client one."""
    os.makedirs(directory, exist_ok=True)

    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True, cwd=directory,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=mlockaudit test CA")
    with open(os.path.join(directory, "server.ext"), "w") as handle:
        handle.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                     "extendedKeyUsage=serverAuth\n")
    with open(os.path.join(directory, "client.ext"), "w") as handle:
        handle.write("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        run("req", *ec, "-keyout", name + ".key", "-out", name + ".csr",
            "-subj", "/CN=" + ("localhost" if name == "server" else "mlockaudit client"))
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext")
    # a second CA that signed nothing we use: "the wrong CA"
    run("req", "-x509", *ec, "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "2",
        "-subj", "/CN=some other CA")
    return {name: os.path.join(directory, name) for name in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key", "other-ca.pem")}


class Rsyslogd(object):
    """rsyslogd -n with inputs on loopback; ``start()``, ``stop()``, ``messages(name)``."""

    def __init__(self, directory, tls=True, max_message_size="64k"):
        self.directory = str(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.work = os.path.join(self.directory, "work")
        os.makedirs(self.work, exist_ok=True)
        self.ports = {"tcp": free_port(), "udp": free_port(socket.SOCK_DGRAM)}
        self.socket_path = os.path.join(self.directory, "log.sock")
        self.tls = tls and have_gtls()
        self.certs = None
        if self.tls:
            self.certs = make_certs(os.path.join(self.directory, "certs"))
            self.ports["tls"] = free_port()
            self.ports["tls-client-cert"] = free_port()
        self.max_message_size = max_message_size
        self.conf = os.path.join(self.directory, "rsyslog.conf")
        self.pidfile = os.path.join(self.directory, "rsyslogd.pid")
        self.log = os.path.join(self.directory, "rsyslogd.out")
        self.proc = None
        self._write_conf()

    def path(self, name):
        return os.path.join(self.directory, name + ".jsonl")

    def target(self, name):
        if name == "local":
            return "syslog:" + self.socket_path
        scheme = "tls" if name.startswith("tls") else name
        return "syslog+%s://127.0.0.1:%d" % (scheme, self.ports[name])

    def _write_conf(self):
        lines = ['global(workDirectory="%s" maxMessageSize="%s"' % (self.work, self.max_message_size)]
        if self.tls:
            lines[0] += (' defaultNetstreamDriverCAFile="%s" defaultNetstreamDriverCertFile="%s"'
                         ' defaultNetstreamDriverKeyFile="%s"' % (
                             self.certs["ca.pem"], self.certs["server.pem"],
                             self.certs["server.key"]))
        lines[0] += ")"
        lines.append(TEMPLATE)
        lines.append('module(load="imuxsock" SysSock.Use="off")')
        lines.append('module(load="imudp")')
        lines.append('module(load="imtcp" maxSessions="200")')
        lines.append('input(type="imudp" address="127.0.0.1" port="%d" ruleset="udp" rcvbufSize="16m")'
                     % self.ports["udp"])
        lines.append('input(type="imtcp" address="127.0.0.1" port="%d" ruleset="tcp")'
                     % self.ports["tcp"])
        lines.append('input(type="imuxsock" Socket="%s" ruleset="local" '
                     'RateLimit.Interval="0" CreatePath="on")' % self.socket_path)
        names = ["udp", "tcp", "local"]
        if self.tls:
            lines.append('input(type="imtcp" address="127.0.0.1" port="%d" ruleset="tls" '
                         'streamDriver.name="gtls" streamDriver.mode="1" '
                         'streamDriver.authMode="anon")' % self.ports["tls"])
            lines.append('input(type="imtcp" address="127.0.0.1" port="%d" '
                         'ruleset="tls-client-cert" streamDriver.name="gtls" '
                         'streamDriver.mode="1" streamDriver.authMode="x509/certvalid")'
                         % self.ports["tls-client-cert"])
            names += ["tls", "tls-client-cert"]
        for name in names:
            lines.append('ruleset(name="%s") { action(type="omfile" file="%s" '
                         'template="parsed") }' % (name, self.path(name)))
        lines.append('action(type="omfile" file="%s")' % os.path.join(self.directory,
                                                                     "internal.log"))
        with open(self.conf, "w") as handle:
            handle.write("\n".join(lines) + "\n")

    def start(self, timeout=30):
        check = subprocess.run([RSYSLOGD, "-N1", "-f", self.conf], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
        if check.returncode != 0:
            raise AssertionError("rsyslogd rejects the config:\n%s" % check.stdout.decode())
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([RSYSLOGD, "-n", "-f", self.conf, "-i", self.pidfile],
                                     stdout=out, stderr=subprocess.STDOUT)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("rsyslogd exited: %s" % self.read_log())
            if self._listening():
                return self
            time.sleep(0.05)
        raise AssertionError("rsyslogd is not listening after %ss: %s" % (timeout, self.read_log()))

    def _listening(self):
        for name, port in self.ports.items():
            if name == "udp":
                continue
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
        return os.path.exists(self.socket_path)

    def stop(self, timeout=30):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def read_log(self):
        text = ""
        for path in (self.log, os.path.join(self.directory, "internal.log")):
            if os.path.exists(path):
                with open(path, "rb") as handle:
                    text += handle.read().decode("utf-8", "replace")
        return text

    def messages(self, name):
        """What the input ``name`` received, as parsed dicts (raw bytes checked for
        valid UTF-8: a message must arrive as UTF-8 text)."""
        path = self.path(name)
        if not os.path.exists(path):
            return []
        with open(path, "rb") as handle:
            data = handle.read()
        # rsyslogd may be writing the last line right now: only whole lines count
        return [json.loads(line.decode("utf-8")) for line in data.split(b"\n")[:-1] if line]

    def wait_for(self, name, count, msgid=None, timeout=60):
        """Wait until ``count`` messages (of ``msgid``) arrived; returns all messages."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages(name)
            got = [m for m in messages if msgid is None or m["msgid"] == msgid]
            if len(got) >= count or time.monotonic() > deadline:
                return messages
            time.sleep(0.1)
