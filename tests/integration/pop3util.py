"""POP3 helpers for test_pop3.py, on top of harness.py (which this module
does not change): a server with [pop3]/[pop3s] configured, a raw
byte-exact POP3 client, dot-stuffing in both directions, SMTP delivery of
token-bearing messages, and a look at the server's memory.

    srv = pop3util.server(test)                 # pop3 + pop3s, cert, plaintext auth allowed
    tokens = pop3util.deliver(srv, 3)           # via smtplib, one message each
    with pop3util.P3(srv.port("pop3")) as p:
        p.login()                               # USER/PASS as mailbox@example.test
        status, raw = p.multi("RETR 1")         # raw stuffed bytes incl. ".\\r\\n"
        data = pop3util.unstuff(raw)
"""

import base64
import smtplib
import socket
import ssl
import time
import uuid

import harness
from harness import DOMAIN1, PASSWORDS, Server

SENDER = "carol@sender.example"


def user(domain=DOMAIN1):
    return "mailbox@" + domain


def server(test, plaintext=True, timeout="30s", pop3s=True, tls=True, max_message_size=None,
           start=True, edit=None):
    """A started Server with [pop3] (and [pop3s] when tls) on ephemeral ports."""
    srv = Server(test, tls=tls)
    configure(srv.config, plaintext=plaintext, timeout=timeout, pop3s=pop3s and tls,
              max_message_size=max_message_size)
    if edit:
        edit(srv.config)
    return srv.start() if start else srv


def configure(cfg, plaintext=True, timeout="30s", pop3s=True, max_message_size=None):
    cfg["pop3"] = {"listen": ["127.0.0.1:0"], "allow_plaintext_auth": plaintext, "timeout": timeout}
    if pop3s:
        cfg["pop3s"] = {"listen": ["127.0.0.1:0"]}
    if max_message_size:
        cfg["smtp"]["max_message_size"] = max_message_size


def second_server(test, srv, **kw):
    """Another server process on the same maildrops as srv (its own ports,
    temp dir and log)."""
    srv2 = server(test, start=False, **kw)
    for d in srv2.config["domain"]:
        d["maildrop"] = srv.maildrop(d["name"])
    return srv2.start()


# --------------------------------------------------------------------------
# Messages


def message(token, body_lines=(), subject="pop3 test"):
    lines = ["From: Carol <%s>" % SENDER, "To: someone@%s" % DOMAIN1, "Subject: %s %s" % (subject, token),
             "Message-ID: <%s@sender.example>" % token, ""]
    lines += ["token %s" % token] + list(body_lines) + ["end of %s" % token]
    return ("\r\n".join(lines) + "\r\n").encode()


def deliver(srv, n=1, body_lines=(), domain=DOMAIN1):
    """Deliver n messages (one SMTP transaction each, in order) and wait
    until they are in new/. Returns the tokens in delivery order."""
    tokens = [uuid.uuid4().hex for _ in range(n)]
    deliver_messages(srv, [message(t, body_lines) for t in tokens], domain)
    return tokens


def deliver_messages(srv, msgs, domain=DOMAIN1):
    before = len(srv.new_files(domain))
    c = smtplib.SMTP("127.0.0.1", srv.port("smtp"), local_hostname="client.example", timeout=60)
    try:
        for m in msgs:
            refused = c.sendmail(SENDER, ["user@%s" % domain], m)
            assert refused == {}, refused
        c.quit()
    finally:
        c.close()
    files = srv.wait_new(domain, before + len(msgs))
    assert len(files) >= before + len(msgs), "messages did not arrive in new/"


def files_by_token(srv, tokens, domain=DOMAIN1):
    """{token: (subdir, name, bytes)} for every file of the maildrop that
    holds a token (new/ and cur/)."""
    out = {}
    for sub in ("new", "cur"):
        for name, data in srv.read_new(domain, sub):
            for t in tokens:
                if t.encode() in data:
                    out[t] = (sub, name, data)
    return out


# --------------------------------------------------------------------------
# Dot-stuffing (RFC 1939 3)


def stuff(data):
    """The multi-line body as it must appear on the wire, without the
    terminating '.' line: a CRLF is added when the data does not end in
    one, and every line starting with '.' gets one more."""
    if data and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return (b"\r\n" + data).replace(b"\r\n.", b"\r\n..")[2:]


def unstuff(raw):
    """raw = the bytes after the +OK line up to and including '.\\r\\n'.
    Returns the message (a line '.' only terminates)."""
    assert raw.endswith(b".\r\n"), "multi-line response must end with .CRLF: %r" % raw[-20:]
    body = raw[:-3]
    assert body == b"" or body.endswith(b"\r\n"), "terminator must follow a CRLF"
    return (b"\r\n" + body).replace(b"\r\n.", b"\r\n")[2:]


# --------------------------------------------------------------------------
# A raw POP3 client


class P3:
    """Line-level POP3 over a socket; everything is bytes on the wire.
    readline() returns a line without CRLF as str; multi() returns the
    status line and the raw multi-line body (stuffed, with '.CRLF')."""

    def __init__(self, port, host="127.0.0.1", timeout=20, tls=False, greet=True):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        if tls:
            self.sock = harness.client_context().wrap_socket(self.sock, server_hostname="localhost")
        self.buf = b""
        self.greeting = self.readline() if greet else None

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed by the server")
        self.buf += chunk

    def readline(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line.decode("utf-8", "replace")
            self._fill()

    def cmd(self, line):
        """Send one command, return its status line."""
        self.send(line + "\r\n")
        return self.readline()

    def read_multi(self):
        """The raw body of a multi-line response, up to and including the
        '.CRLF' line."""
        start = 0
        while True:
            if self.buf.startswith(b".\r\n"):
                raw, self.buf = self.buf[:3], self.buf[3:]
                return raw
            i = self.buf.find(b"\r\n.\r\n", start)
            if i >= 0:
                raw, self.buf = self.buf[:i + 5], self.buf[i + 5:]
                return raw
            start = max(0, len(self.buf) - 4)
            self._fill()

    def multi(self, line):
        status = self.cmd(line)
        if not status.startswith("+OK"):
            return status, None
        return status, self.read_multi()

    def lines(self, line):
        """A multi-line command's status and its lines (unstuffed, str)."""
        status, raw = self.multi(line)
        if raw is None:
            return status, None
        text = unstuff(raw).decode("utf-8", "replace")
        return status, text.split("\r\n")[:-1]

    def login(self, domain=DOMAIN1, password=None):
        """USER/PASS; returns the PASS status line."""
        st = self.cmd("USER " + user(domain))
        if not st.startswith("+OK"):
            return st
        return self.cmd("PASS " + (password if password is not None else PASSWORDS[domain]))

    def auth_plain(self, domain=DOMAIN1, password=None, initial=True, authzid=""):
        resp = harness.plain_auth(user(domain), password if password is not None else PASSWORDS[domain],
                                  authzid)
        if initial:
            return self.cmd("AUTH PLAIN " + resp)
        st = self.cmd("AUTH PLAIN")
        if not st.startswith("+"):
            return st
        assert st.startswith("+ ") or st == "+", st
        return self.cmd(resp)

    def stls(self):
        st = self.cmd("STLS")
        if st.startswith("+OK"):
            assert self.buf == b"", "data after the STLS reply before the handshake"
            self.sock = harness.client_context().wrap_socket(self.sock, server_hostname="localhost")
        return st

    def capa(self):
        st, lines = self.lines("CAPA")
        assert st.startswith("+OK"), st
        return lines

    def stat(self):
        st = self.cmd("STAT")
        assert st.startswith("+OK "), st
        _, n, size = st.split()[:3]
        return int(n), int(size)

    def closed(self, timeout=5):
        """True when the server closes the connection within timeout
        (whatever it sends before)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        except ssl.SSLError:
            return True

    def abort(self, rst=False):
        """Close the socket without QUIT (an abrupt disconnect); with rst,
        a TCP reset instead of a FIN."""
        if rst:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            except OSError:
                pass
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


# --------------------------------------------------------------------------
# Server memory


def proc_status(pid, field):
    """A /proc/PID/status field in KiB (VmRSS, VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid):
    """Reset VmHWM to the current RSS (Linux 4.0+: clear_refs 5). False
    when the kernel refuses."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def wait_until(pred, timeout=10, step=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def b64(s):
    return base64.b64encode(s.encode()).decode()
