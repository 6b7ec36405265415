"""Helpers for test_abuse.py (attacker-side tests) on top of harness.py and
pop3util.py, which this module only uses:

    rss_kib(pid), cpu_seconds(pid)        what an operator watches in top(1)
    connect_many(port, n, sources)        a burst of raw TCP connections
    first_lines(socks)                    the first line each one received
    maildir_problems(srv, domain)         partial / mis-sized files in new/
    drain_replies(sock, want, sentinel)   SMTP replies of a pipelined batch
"""

import os
import re
import resource
import selectors
import socket
import time

import harness
from harness import DOMAIN1

SENDER = "mallory@attacker.example"


# --------------------------------------------------------------------------
# The server process as an operator sees it


def rss_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def cpu_seconds(pid):
    """user + system CPU time of every thread of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def raise_nofile(n):
    """Make sure this (test) process may hold n descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        want = min(n, hard) if hard != resource.RLIM_INFINITY else n
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def data_preexec(n):
    """A preexec_fn for harness.Server: the server may map n octets of
    private writable memory (RLIMIT_DATA: what malloc gets from mmap and
    brk), no more."""
    def fn():
        resource.setrlimit(resource.RLIMIT_DATA, (n, n))
    return fn


def nofile_preexec(n):
    """A preexec_fn for harness.Server: the server runs with RLIMIT_NOFILE n."""
    def fn():
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    return fn


# --------------------------------------------------------------------------
# Many connections


def connect_many(port, n, sources=("127.0.0.1",), timeout=10):
    """n TCP connections as fast as possible, round-robin over the source
    addresses (any 127.0.0.0/8 address is local on Linux). Returns the
    sockets in connect order with their source address as .src."""
    socks = []
    for i in range(n):
        src = sources[i % len(sources)]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.bind((src, 0))
        s.connect(("127.0.0.1", port))
        socks.append(s)
    return socks


def first_lines(socks, timeout=20):
    """{sock: first CRLF line (str) or '' on EOF/reset} for every socket,
    read concurrently."""
    out = {}
    bufs = {}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        bufs[s] = b""
        sel.register(s, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while len(out) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                chunk = s.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                chunk = b""
            if chunk:
                bufs[s] += chunk
                if b"\r\n" not in bufs[s]:
                    continue
            out[s] = bufs[s].split(b"\r\n", 1)[0].decode("utf-8", "replace")
            sel.unregister(s)
    sel.close()
    for s in socks:
        s.setblocking(True)
        out.setdefault(s, None)   # None: nothing within the timeout
    return out


def close_all(socks, rst=False):
    for s in socks:
        try:
            if rst:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            s.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# SMTP on a raw socket


def smtp_codes(buf):
    """Final reply codes of every complete SMTP reply in buf (continuation
    lines `250-...` are skipped); returns (codes, rest)."""
    codes = []
    lines = buf.split(b"\r\n")
    rest = lines.pop()
    for line in lines:
        if len(line) >= 4 and line[3:4] == b"-":
            continue
        codes.append(line[:3].decode("ascii", "replace") + line[3:].decode("utf-8", "replace"))
    return codes, rest


def read_until_code(raw, code, timeout=15, limit=1000):
    """Replies (as 'NNN text') read from a harness.Raw up to and including
    the first one with the given code."""
    raw.sock.settimeout(timeout)
    got = []
    while len(got) < limit:
        c, lines = raw.read_reply()
        got.append("%d %s" % (c, lines[-1] if lines else ""))
        if c == code:
            return got
    raise AssertionError("no %d reply within %d replies: %s" % (code, limit, got[:20]))


def pending(sock, wait=0.3):
    """Whatever the server sent within `wait` seconds (b'' if nothing)."""
    sock.settimeout(wait)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, TimeoutError, BlockingIOError):
        pass
    return data


# --------------------------------------------------------------------------
# The maildrop


def maildir_problems(srv, domain=DOMAIN1, trailer=rb"end of [0-9a-f]+\r\n\Z"):
    """Descriptions of files in new/ and cur/ that break SPEC 6: a name
    without ,S=, S= different from the size, or a message that does not end
    with its trailer line (a partial message)."""
    bad = []
    rx = re.compile(trailer) if trailer else None
    for sub in ("new", "cur"):
        for name, data in srv.read_new(domain, sub):
            size = harness.size_suffix(name)
            if size is None:
                bad.append("%s/%s: no ,S= in the name" % (sub, name))
            elif size != len(data):
                bad.append("%s/%s: S=%d but %d octets" % (sub, name, size, len(data)))
            if rx and not rx.search(data):
                bad.append("%s/%s: does not end with its trailer (tail %r)" % (sub, name, data[-40:]))
    return bad


def wait_tmp_empty(srv, domain=DOMAIN1, timeout=10):
    """tmp/ of the maildrop once the server is idle ([] when it empties)."""
    deadline = time.monotonic() + timeout
    while True:
        left = srv.new_files(domain, "tmp")
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def write_message_file(maildrop, data, unique):
    """Put a message into new/ the way a Maildir tool does (tmp/, then
    rename); returns the name."""
    name = "%d.M%dP%d.abuse,S=%d" % (int(time.time()), unique, os.getpid(), len(data))
    tmp = os.path.join(maildrop, "tmp", name)
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, os.path.join(maildrop, "new", name))
    return name
