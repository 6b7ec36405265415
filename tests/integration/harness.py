"""Integration test harness: start build/mailpopbox on a generated config,
talk to it, look at what it stored.

Everything a test needs from the outside world lives here so that test
modules (test_smtp.py, test_tls.py, later test_pop3.py ...) read like what
a user checks:

    srv = harness.Server(self)          # temp dir, maildrops, config
    srv.start()                         # waits for event=started
    port = srv.port("smtp")             # from the event=listening lines
    ... talk with smtplib / raw sockets / swaks ...
    files = srv.new_files("example.test")

The binary is chosen by the MAILPOPBOX_BIN environment variable (run.py
sets it; default build/mailpopbox). Servers are stopped by the cleanup the
constructor registers on the TestCase: SIGTERM, exit status 0 expected,
and (for any binary) the server's stderr must be free of sanitizer reports.

Parallel safety: every Server has its own temporary directory and binds
127.0.0.1:0 (ephemeral ports). Certificates are generated once per run (by
run.py, passed in MPB_TEST_CERTS) or once per process.
"""

import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.abspath(os.environ.get("MAILPOPBOX_BIN", os.path.join(ROOT, "build", "mailpopbox")))

HOSTNAME = "mx.example.test"
DOMAIN1 = "example.test"      # first domain: default certificate
DOMAIN2 = "other.test"        # second domain: its own certificate (SNI)
DOMAIN3 = "third.test"        # no certificate
PASSWORDS = {DOMAIN1: "secret-one", DOMAIN2: "secret-two", DOMAIN3: "secret-three"}

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

_tmp_root = None
_tmp_lock = threading.Lock()


def tmp_root():
    """The directory under which every server's temp dir is made."""
    global _tmp_root
    with _tmp_lock:
        if _tmp_root is None:
            base = os.environ.get("MPB_TEST_TMP")
            if base:
                os.makedirs(base, exist_ok=True)
                _tmp_root = base
            else:
                _tmp_root = tempfile.mkdtemp(prefix="mpb-it-")
        return _tmp_root


def is_asan():
    return os.path.basename(BINARY).endswith("-asan")


# --------------------------------------------------------------------------
# Certificates


def make_cert(directory, name, cn, dns_names, ip=True):
    """A self-signed EC certificate with the given SAN names; returns
    (cert_path, key_path)."""
    os.makedirs(directory, exist_ok=True)
    crt = os.path.join(directory, name + ".crt")
    key = os.path.join(directory, name + ".key")
    san = ",".join(["DNS:" + d for d in dns_names] + (["IP:127.0.0.1"] if ip else []))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "30", "-subj", "/CN=" + cn, "-addext", "subjectAltName=" + san,
         "-keyout", key, "-out", crt],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    os.chmod(key, 0o600)
    return crt, key


_certs = None


def certs():
    """{'d1': (crt, key), 'd2': (crt, key)} made once per run."""
    global _certs
    with _tmp_lock:
        if _certs is not None:
            return _certs
    d = os.environ.get("MPB_TEST_CERTS")
    if not d or not os.path.exists(os.path.join(d, "d2.key")):
        d = d or os.path.join(tmp_root(), "certs")
        make_certs(d)
    with _tmp_lock:
        _certs = {k: (os.path.join(d, k + ".crt"), os.path.join(d, k + ".key")) for k in ("d1", "d2")}
        return _certs


def make_certs(d):
    make_cert(d, "d1", "localhost", ["localhost", DOMAIN1, HOSTNAME])
    make_cert(d, "d2", DOMAIN2, [DOMAIN2, "mx." + DOMAIN2], ip=False)


def cert_names(der):
    """(CN, [DNS SANs]) of a DER certificate, parsed with openssl."""
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject", "-ext",
                          "subjectAltName"], input=der, capture_output=True, check=True).stdout.decode()
    cn = re.search(r"CN\s*=\s*([^,\n/]+)", out)
    return (cn.group(1).strip() if cn else None), re.findall(r"DNS:([^,\s]+)", out)


def cert_fingerprint(der):
    import hashlib
    return hashlib.sha256(der).hexdigest()


def client_context():
    """A TLS client context that does not verify (self-signed test certs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


# --------------------------------------------------------------------------
# Config: a dict rendered as TOML


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError("cannot render %r" % (v,))


def to_toml(cfg):
    """Top-level scalars, then tables (dict values), then arrays of tables
    (lists of dicts, e.g. cfg['domain'])."""
    out = []
    for k, v in cfg.items():
        if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict)):
            out.append("%s = %s" % (k, _toml_value(v)))
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.append("\n[%s]" % k)
            for kk, vv in v.items():
                out.append("%s = %s" % (kk, _toml_value(vv)))
    for k, v in cfg.items():
        if isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out.append("\n[[%s]]" % k)
                for kk, vv in item.items():
                    out.append("%s = %s" % (kk, _toml_value(vv)))
    return "\n".join(out) + "\n"


def default_config(tmp, tls=True, domains=2):
    """Two domains (three with domains=3); the first two have certificates
    when tls is true. Tests edit the dict before start()."""
    c = certs() if tls else None
    doms = []
    for i, name in enumerate([DOMAIN1, DOMAIN2, DOMAIN3][:domains]):
        d = {"name": name, "password": PASSWORDS[name], "maildrop": os.path.join(tmp, "maildrop", name)}
        if tls and i < 2:
            crt, key = c["d1" if i == 0 else "d2"]
            d["tls_cert"], d["tls_key"] = crt, key
        if i == 0:
            d["blocked"] = ["blocked@" + name, "NoReply@" + name]
        doms.append(d)
    return {
        "hostname": HOSTNAME,
        "workers": 2,
        "log_level": "info",
        "smtp": {"listen": ["127.0.0.1:0"], "timeout": "30s", "max_message_size": 1048576,
                 "max_connections_per_ip": 200},
        "tls": {"ktls": True},
        "storage": {"sync": "full"},
        "domain": doms,
    }


# --------------------------------------------------------------------------
# Failing storage (tests run as root)


def fill(path):
    """Writes zeros to path until its file system is full (it may be
    already: then path stays empty, or does not exist)."""
    try:
        with open(path, "wb") as f:
            while True:
                f.write(b"\0" * 65536)
    except OSError:
        pass


def mount_tmpfs(test, mnt, size):
    """A tmpfs of size octets at mnt, unmounted at the test's end; skips
    the test where mounting is not allowed."""
    os.makedirs(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % size, "tmpfs", mnt],
                       capture_output=True)
    if p.returncode != 0:
        raise unittest.SkipTest("cannot mount a tmpfs here (%s): needs root with CAP_SYS_ADMIN"
                                % p.stderr.decode().strip())
    test.addCleanup(subprocess.run, ["umount", "-l", mnt], capture_output=True)
    return mnt


def loop_ext4(test, tmp, img, size, journal=False, inodes=2048):
    """An ext4 file system made in the file IMG (SIZE octets, sparse; made
    unless it exists) and mounted from a loop device at TMP/ext4; skips
    the test where loop devices or mounts are not allowed. Without a
    journal unless JOURNAL (as on many VPS images). Returns the mount
    point and undo(), which unmounts and detaches (once: at the test's end
    unless called before)."""
    for tool in ("losetup", "mkfs.ext4"):
        if not shutil.which(tool):
            raise unittest.SkipTest("%s is not installed" % tool)
    if not os.path.exists(img):
        with open(img, "wb") as f:
            f.truncate(size)
    opts = [] if journal else ["-O", "^has_journal"]
    p = subprocess.run(["mkfs.ext4", "-q", "-F", "-N", str(inodes),
                        "-E", "lazy_itable_init=0,lazy_journal_init=0,nodiscard"] + opts + [img],
                       capture_output=True)
    test.assertEqual(p.returncode, 0, p.stderr)
    p = subprocess.run(["losetup", "-f", "--show", img], capture_output=True)
    if p.returncode != 0:
        raise unittest.SkipTest("no loop device here: %s" % p.stderr.decode().strip())
    dev = p.stdout.decode().strip()
    fs = os.path.join(tmp, "ext4")
    os.makedirs(fs)
    steps = [["losetup", "-d", dev]]

    def undo():
        # (a device detached twice might be another test's by then)
        while steps:
            subprocess.run(steps.pop(), capture_output=True)
    test.addCleanup(undo)
    p = subprocess.run(["mount", "-o", "errors=continue", dev, fs], capture_output=True)
    if p.returncode != 0:
        raise unittest.SkipTest("cannot mount ext4 from %s: %s" % (dev, p.stderr.decode().strip()))
    steps.append(["umount", "-l", fs])
    return fs, undo


def failing_disk(test, tmp):
    """An ext4 file system (no journal) on a loop device whose sparse
    backing file sits on a small tmpfs. Returns its mount point and
    fail(): once called, the tmpfs is full, so the file system still takes
    writes into the page cache but their writeback fails, the error a
    dying disk gives fsync() and syncfs()."""
    back = mount_tmpfs(test, os.path.join(tmp, "backing"), 4 * 1024 * 1024)
    fs, _ = loop_ext4(test, tmp, os.path.join(back, "disk.img"), 256 * 1024 * 1024)
    return fs, lambda: fill(os.path.join(back, "filler"))


class LoggedDisk:
    """An ext4 file system (with its journal) on a loop device over
    disklog.py's FUSE file: every write and cache flush that reaches the
    disk is logged in order, so that the disk can be rebuilt as a power cut
    at any point would have left it (test_powercut.py)."""

    SIZE = 96 * 1024 * 1024

    def __init__(self, test, tmp):
        syspy = "/usr/bin/python3"
        if not os.path.exists("/dev/fuse"):
            raise unittest.SkipTest("no /dev/fuse here (the FUSE module is not loaded)")
        if subprocess.run([syspy, "-c", "import fusepy"], capture_output=True).returncode != 0:
            raise unittest.SkipTest("python3-fusepy is not installed (make deps-test)")
        if not shutil.which("e2fsck"):
            raise unittest.SkipTest("e2fsck is not installed")
        self.test = test
        self.tmp = tmp
        self.logpath = os.path.join(tmp, "disk.log")
        self.fuse = os.path.join(tmp, "fuse")
        self.undo = None
        os.makedirs(self.fuse)
        here = os.path.dirname(os.path.abspath(__file__))
        self.proc = subprocess.Popen([syspy, os.path.join(here, "disklog.py"), self.fuse,
                                      str(self.SIZE), self.logpath], stderr=subprocess.PIPE)
        test.addCleanup(self.stop)
        disk = os.path.join(self.fuse, "disk")
        for _ in range(200):
            if os.path.exists(disk) or self.proc.poll() is not None:
                break
            time.sleep(0.025)
        if not os.path.exists(disk):
            raise unittest.SkipTest("cannot mount FUSE here: %s" % self._stderr())
        self.fs, self.undo = loop_ext4(test, tmp, disk, self.SIZE, journal=True, inodes=8192)

    def _stderr(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace").strip()[-400:]

    def mark(self, name):
        """Records NAME in the log after everything the disk took so far."""
        with open(os.path.join(self.fuse, "ctl"), "w") as f:
            f.write(name)

    def stop(self):
        """Detaches everything (nothing written after this point counts)
        and returns the log's records."""
        if self.undo:
            self.undo()
        if self.proc.poll() is None:
            subprocess.run(["umount", self.fuse], capture_output=True)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                subprocess.run(["umount", "-l", self.fuse], capture_output=True)
                self.proc.kill()
                self.proc.wait()
        import disklog
        return disklog.read_log(self.logpath) if os.path.exists(self.logpath) else []

    @contextlib.contextmanager
    def cut(self, records, upto, extra=()):
        """The disk as a power cut would leave it: every write logged before
        record index UPTO, then the writes of index EXTRA, checked by
        e2fsck -fy as a boot would, mounted read-only for the with block.
        Gives (mount point, e2fsck's exit code)."""
        img = bytearray(self.SIZE)
        for kind, off, data in records[:upto]:
            if kind == b"W":
                img[off:off + len(data)] = data
        for i in extra:
            kind, off, data = records[i]
            img[off:off + len(data)] = data
        path = os.path.join(self.tmp, "cut.img")
        with open(path, "wb") as f:  # sparse: most of the disk is zeros
            f.truncate(self.SIZE)
            view, step = memoryview(img), 1 << 16
            zero = bytes(step)
            for off in range(0, self.SIZE, step):
                if view[off:off + step] != zero:
                    f.seek(off)
                    f.write(view[off:off + step])
        fsck = subprocess.run(["e2fsck", "-fy", path], capture_output=True)
        mnt = os.path.join(self.tmp, "cut")
        os.makedirs(mnt, exist_ok=True)
        p = subprocess.run(["mount", "-o", "ro,loop", path, mnt], capture_output=True)
        self.test.assertEqual(p.returncode, 0, "the cut disk does not mount: %s (e2fsck said %s)"
                              % (p.stderr.decode(), fsck.stdout.decode()[-600:]))
        self.fsck_output = fsck.stdout.decode(errors="replace")
        try:
            yield mnt, fsck.returncode
        finally:
            subprocess.run(["umount", mnt], capture_output=True)


# --------------------------------------------------------------------------
# The server process


class ServerError(Exception):
    pass


class Server:
    """One mailpopbox process (and its restarts) on its own temp dir."""

    def __init__(self, test=None, config=None, tls=True, domains=2, binary=None, preexec=None):
        self.tmp = tempfile.mkdtemp(prefix="srv-", dir=tmp_root())
        self.config = config if config is not None else default_config(self.tmp, tls=tls, domains=domains)
        self.binary = binary or BINARY
        self.proc = None
        self.runs = 0
        self.ports = {}
        self.stderr_path = None
        self._stderr_file = None
        self.checked_runs = set()
        self.preexec = preexec      # run in the child before exec (rlimits, signals)
        if test is not None:
            test.addCleanup(self.cleanup)

    # -- paths
    @property
    def config_path(self):
        return os.path.join(self.tmp, "mailpopbox.toml")

    def domain_cfg(self, domain):
        for d in self.config["domain"]:
            if d["name"] == domain:
                return d
        raise KeyError(domain)

    def maildrop(self, domain=DOMAIN1):
        return self.domain_cfg(domain)["maildrop"]

    def write_config(self, text=None):
        with open(self.config_path, "w") as f:
            f.write(text if text is not None else to_toml(self.config))
        return self.config_path

    # -- lifecycle
    def start(self, timeout=20, config_text=None, expect_fail=False):
        """Start and wait for event=started; returns self. With
        expect_fail, wait for the process to exit and return its status."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.write_config(config_text)
        self.runs += 1
        self.stderr_path = os.path.join(self.tmp, "stderr.%d.log" % self.runs)
        self._stderr_file = open(self.stderr_path, "wb")
        env = dict(os.environ)
        # Leaks are checked at a clean exit; a startup that is meant to
        # fail (exit 1/2 on purpose) may leave its config unfreed.
        env.setdefault("ASAN_OPTIONS", "detect_leaks=%d:abort_on_error=0" % (0 if expect_fail else 1))
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.proc = subprocess.Popen([self.binary, self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._stderr_file,
                                     cwd=self.tmp, env=env, preexec_fn=self.preexec)
        if expect_fail:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError("server started although a failure was expected:\n" + self.stderr())
            self._finish_run()
            return rc
        deadline = time.monotonic() + timeout
        while True:
            text = self.stderr()
            if "event=started" in text:
                break
            if self.proc.poll() is not None:
                self._finish_run()
                raise ServerError("server exited with %s during startup:\n%s" % (self.proc.returncode, text))
            if time.monotonic() > deadline:
                self.kill()
                raise ServerError("no event=started within %ss:\n%s" % (timeout, text))
            time.sleep(0.02)
        self.ports = {}
        for m in re.finditer(r"event=listening service=(\S+) addr=(\S+):(\d+)", text):
            self.ports.setdefault(m.group(1), int(m.group(3)))
        return self

    def port(self, service="smtp"):
        try:
            return self.ports[service]
        except KeyError:
            raise ServerError("service %s is not listening; log:\n%s" % (service, self.stderr()))

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15, expect_status=0):
        """SIGTERM and wait; asserts the exit status (0 by default) and a
        clean sanitizer report. Returns the exit status."""
        if not self.running():
            rc = self.proc.returncode if self.proc else None
            self._finish_run()
            return rc
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self._finish_run()
            raise AssertionError("server did not exit within %ss of SIGTERM; log tail:\n%s"
                                 % (timeout, self.stderr()[-3000:]))
        self._finish_run()
        if expect_status is not None and rc != expect_status:
            raise AssertionError("server exit status %s after SIGTERM, expected %s; log tail:\n%s"
                                 % (rc, expect_status, self.stderr()[-3000:]))
        return rc

    def kill(self):
        """kill -9 (no cleanup possible on the server side)."""
        if self.running():
            self.proc.kill()
            self.proc.wait()
        self._finish_run()

    def restart(self, **kw):
        """Start again on the same directories (new ephemeral ports)."""
        if self.running():
            self.stop()
        return self.start(**kw)

    def _finish_run(self):
        if self._stderr_file:
            self._stderr_file.close()
            self._stderr_file = None
        self.check_sanitizers()

    def check_sanitizers(self):
        """Fail when any run's stderr has a sanitizer report."""
        for n in range(1, self.runs + 1):
            if n in self.checked_runs:
                continue
            path = os.path.join(self.tmp, "stderr.%d.log" % n)
            if self.running() and n == self.runs:
                continue
            self.checked_runs.add(n)
            try:
                with open(path, errors="replace") as f:
                    text = f.read()
            except FileNotFoundError:
                continue
            for marker in SANITIZER_MARKERS:
                if marker in text:
                    i = text.index(marker)
                    raise AssertionError("sanitizer report in server stderr (%s, run %d):\n%s"
                                         % (path, n, text[max(0, i - 500):i + 4000]))

    def cleanup(self):
        try:
            if self.running():
                self.stop()
            else:
                self._finish_run()
        finally:
            if not os.environ.get("MPB_KEEP"):
                shutil.rmtree(self.tmp, ignore_errors=True)

    # -- logs
    def stderr(self, run=None):
        path = self.stderr_path if run is None else os.path.join(self.tmp, "stderr.%d.log" % run)
        if not path:
            return ""
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_lines(self, event=None):
        lines = self.stderr().splitlines()
        if event:
            lines = [l for l in lines if " event=%s" % event in l or l.startswith("event=%s" % event)]
        return lines

    def wait_log(self, pattern, timeout=10, count=1):
        """Wait until `pattern` (regex) matches `count` log lines; returns them."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            hits = [l for l in self.stderr().splitlines() if rx.search(l)]
            if len(hits) >= count:
                return hits
            if time.monotonic() > deadline:
                raise AssertionError("log pattern %r not seen %d times within %ss; log tail:\n%s"
                                     % (pattern, count, timeout, self.stderr()[-3000:]))
            time.sleep(0.05)

    # -- maildir
    def new_files(self, domain=DOMAIN1, sub="new"):
        d = os.path.join(self.maildrop(domain), sub)
        try:
            return sorted(os.listdir(d))
        except FileNotFoundError:
            return []

    def read_new(self, domain=DOMAIN1, sub="new"):
        """[(name, bytes)] of every file in new/ (or sub)."""
        out = []
        for name in self.new_files(domain, sub):
            with open(os.path.join(self.maildrop(domain), sub, name), "rb") as f:
                out.append((name, f.read()))
        return out

    def wait_new(self, domain=DOMAIN1, count=1, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            files = self.read_new(domain)
            if len(files) >= count or time.monotonic() > deadline:
                return files
            time.sleep(0.05)


# --------------------------------------------------------------------------
# Stored messages


def split_trace(data):
    """Split a stored message into (trace_header_lines, rest): the leading
    Return-Path:, Delivered-To: and Received: headers (Received may be
    folded) and the message as the client sent it."""
    trace = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n", pos)
        if end < 0:
            break
        line = data[pos:end + 2]
        lname = line.split(b":", 1)[0].lower()
        if lname in (b"return-path", b"delivered-to", b"received"):
            trace.append(line)
            pos = end + 2
            continue
        if line[:1] in (b" ", b"\t") and trace and trace[-1].lower().startswith(b"received"):
            trace[-1] += line
            pos = end + 2
            continue
        break
    return trace, data[pos:]


def size_suffix(name):
    m = re.search(r",S=(\d+)", name)
    return int(m.group(1)) if m else None


# --------------------------------------------------------------------------
# A raw SMTP client for byte-level tests


class Raw:
    """A line-oriented SMTP client over a plain socket (or TLS after
    starttls()). read_reply() returns (code, [text lines])."""

    def __init__(self, port, host="127.0.0.1", timeout=10, sock=None):
        self.sock = sock or socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.read_reply()

    def readline(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    line, self.buf = self.buf, b""
                    return line
                raise EOFError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_reply(self):
        lines = []
        while True:
            line = self.readline().decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise AssertionError("malformed reply line %r" % line)
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines

    def reply_text(self):
        code, lines = self.read_reply()
        return "%d %s" % (code, "\n".join(lines))

    def expect(self, code, line=None):
        got, lines = self.read_reply() if line is None else self.cmd(line)
        if got != code:
            raise AssertionError("expected %d after %r, got %d %s" % (code, line, got, lines))
        return lines

    def closed(self, timeout=5):
        """True when the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                if self.buf:
                    self.buf = b""
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False

    def starttls(self, server_hostname=None, context=None):
        ctx = context or client_context()
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)
        self.buf = b""
        return self.sock

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def plain_auth(user, password, authzid=""):
    return base64.b64encode(("%s\0%s\0%s" % (authzid, user, password)).encode()).decode()


def have(tool):
    return shutil.which(tool) is not None


def require_tool(tool):
    """Skip when a CLI client is missing (make deps-test installs them)."""
    if not have(tool):
        raise unittest.SkipTest("%s is not installed (make deps-test installs it)" % tool)
