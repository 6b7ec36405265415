"""Real peers for the relay tests (test_relay.py), all on loopback:

    dns = relayutil.DNS(test, mx=[("relay.test", "mx.relay.test", 10)],
                        hosts=[("mx.relay.test", "127.0.0.1")])
    peer = relayutil.Peer(test)                 # an SMTP server we script
    peer.rcpt_reply = lambda addr, conn: "550 5.1.1 no such user"
    srv = relayutil.relay_server(test, dns.port, peer.port)
    relayutil.submit(srv, ["rcpt@relay.test"], msg)
    tx = peer.wait_transactions(1)[0]           # .mail_from, .rcpts, .data

DNS is dnsmasq (Debian dnsmasq-base) on an unprivileged port, answering
only from its command line (--no-resolv --no-hosts); names under .test that
it does not know are NXDOMAIN (--local=/test/). The peer is an asyncio SMTP
server (Python 3.11 has no smtpd) whose replies are hooks, so a test can
script 550, 451-then-250, a missing DSN extension, a dead host ...; it
records every connection, command and accepted transaction.
"""

import asyncio
import email
import email.policy
import os
import smtplib
import socket
import struct
import subprocess
import threading
import time
import unittest

import harness
from harness import DOMAIN1, PASSWORDS


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq takes both)."""
    for _ in range(50):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            t.close()
        return port
    raise RuntimeError("no free port")


# --------------------------------------------------------------------------
# DNS


class DNS:
    """dnsmasq answering MX/A/AAAA for test names. mx: [(domain, host,
    pref)], host "." for a null MX (RFC 7505); hosts: [(name, ip)]."""

    def __init__(self, test=None, mx=(), hosts=(), txt=()):
        if not harness.have("dnsmasq") and not os.path.exists("/usr/sbin/dnsmasq"):
            raise unittest.SkipTest("dnsmasq is not installed (make deps-test installs dnsmasq-base)")
        self.tmp = harness.tmp_root()
        self.proc = None
        # The port is free when free_port() looks and taken by dnsmasq a
        # moment later; another test's client socket may take it in
        # between (as its ephemeral source port): then another port.
        for attempt in range(5):
            if self._start(mx, hosts):
                break
            if "Address already in use" not in self.log() or attempt == 4:
                raise RuntimeError("dnsmasq did not start: " + self.log())
        if test is not None:
            test.addCleanup(self.stop)

    def _start(self, mx, hosts):
        self.port = free_port()
        argv = ["/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else "dnsmasq",
                "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                "--no-dhcp-interface=", "--bind-interfaces", "--listen-address=127.0.0.1",
                "--port=%d" % self.port, "--pid-file=", "--local=/test/", "--log-facility=-",
                "--log-queries", "--cache-size=0"]
        if os.geteuid() == 0:
            argv.append("--user=root")
        for dom, host, pref in mx:
            argv.append("--mx-host=%s,%s,%d" % (dom, host, pref))
        for name, ip in hosts:
            argv.append("--host-record=%s,%s" % (name, ip))
        self.log_path = os.path.join(self.tmp, "dnsmasq.%d.log" % self.port)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 10
        while True:
            try:
                query(self.port, "ready.check.test", 1)
                return True
            except (OSError, socket.timeout):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    return False
                time.sleep(0.05)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log:
            self._log.close()
            self._log = None


def query(port, name, qtype, timeout=1.0):
    """A raw DNS query: (rcode, answer count). Used to see dnsmasq is up."""
    qid = os.getpid() & 0xFFFF
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack(">HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        r, _ = s.recvfrom(4096)
    finally:
        s.close()
    flags, _, an = struct.unpack(">HHH", r[2:8])
    return flags & 15, an


# --------------------------------------------------------------------------
# The peer: an SMTP server with scripted replies


class Transaction:
    def __init__(self, conn, tls):
        self.conn = conn          # connection number, from 1
        self.tls = tls
        self.mail_from = None
        self.mail_params = ""
        self.rcpts = []           # accepted recipients
        self.rcpt_params = {}     # addr -> params text
        self.data = None          # bytes, dot-unstuffed, CRLF lines

    def message(self):
        return email.message_from_bytes(self.data, policy=email.policy.default)


class Peer:
    """An SMTP server on host:port (127.0.0.1:0 = ephemeral; give a port to
    bring a server up later on a known address). Replies are hooks that
    return None (the default reply) or a full reply line such as
    "550 5.1.1 no such user":

        mail_reply(addr, conn)   rcpt_reply(addr, conn)
        data_reply(tx, conn)     (after the message)
        greeting(conn)

    conn is the 1-based connection number, so "the first connection
    refuses, the second accepts" is one line."""

    def __init__(self, test=None, port=0, ext=None, dsn=True, tls_context=None, start=True,
                 host="127.0.0.1"):
        self.host = host
        self.port = port
        self.ext = ext if ext is not None else ["PIPELINING", "SIZE 52428800", "8BITMIME",
                                                 "ENHANCEDSTATUSCODES"]
        if dsn:
            self.ext.append("DSN")
        self.tls_context = tls_context
        self.mail_reply = lambda addr, conn: None
        self.rcpt_reply = lambda addr, conn: None
        self.data_reply = lambda tx, conn: None
        self.greeting = lambda conn: None
        # after_data(tx, conn) -> True: drop the connection right after the
        # reply to the end of data (a server whose idle timeout struck)
        self.after_data = lambda tx, conn: False
        self.connections = 0
        self.commands = []        # (conn, line)
        self.transactions = []    # accepted by the final reply
        self.lock = threading.Lock()
        self.loop = None
        self.server = None
        self.thread = None
        if start:
            self.start()
        if test is not None:
            test.addCleanup(self.stop)

    def start(self):
        ready = threading.Event()
        err = []

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.server = self.loop.run_until_complete(
                    asyncio.start_server(self._handle, self.host, self.port, reuse_address=True))
            except OSError as e:
                err.append(e)
                ready.set()
                return
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            try:
                self.loop.run_forever()
            finally:
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(10)
        if err:
            raise err[0]
        return self

    def stop(self):
        if not self.loop or not self.thread:
            return

        async def close():
            self.server.close()
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()
            await self.server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.thread = None
        self.loop = None

    def wait_transactions(self, n=1, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.transactions) >= n:
                    return list(self.transactions)
            if time.monotonic() > deadline:
                raise AssertionError("peer: %d transaction(s) wanted within %ss, got %d; commands:\n%s"
                                     % (n, timeout, len(self.transactions),
                                        "\n".join("%d %s" % c for c in self.commands[-40:])))
            time.sleep(0.05)

    def wait_connections(self, n=1, timeout=20):
        deadline = time.monotonic() + timeout
        while self.connections < n:
            if time.monotonic() > deadline:
                raise AssertionError("peer: %d connection(s) wanted within %ss, got %d"
                                     % (n, timeout, self.connections))
            time.sleep(0.05)

    async def _handle(self, reader, writer):
        with self.lock:
            self.connections += 1
            conn = self.connections
        tls = False

        async def reply(line):
            writer.write((line + "\r\n").encode())
            await writer.drain()

        try:
            g = self.greeting(conn)
            await reply(g or "220 peer.test ESMTP relayutil")
            if g and not g.startswith("2"):
                return
            tx = None
            while True:
                raw = await reader.readline()
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self.lock:
                    self.commands.append((conn, line))
                verb = line.split(" ", 1)[0].upper()
                arg = line[len(verb):].strip()
                if verb == "EHLO":
                    ext = list(self.ext)
                    if self.tls_context and not tls:
                        ext.append("STARTTLS")
                    lines = ["peer.test"] + ext
                    for i, l in enumerate(lines):
                        writer.write(("250%s%s\r\n" % ("-" if i < len(lines) - 1 else " ", l)).encode())
                    await writer.drain()
                elif verb == "HELO":
                    await reply("250 peer.test")
                elif verb == "STARTTLS" and self.tls_context and not tls:
                    await reply("220 2.0.0 go ahead")
                    await writer.start_tls(self.tls_context)
                    tls = True
                    tx = None
                elif verb == "MAIL":
                    addr, params = _path(arg[5:] if arg.upper().startswith("FROM:") else arg)
                    r = self.mail_reply(addr, conn)
                    if r and not r.startswith("2"):
                        await reply(r)
                        continue
                    tx = Transaction(conn, tls)
                    tx.mail_from, tx.mail_params = addr, params
                    await reply(r or "250 2.1.0 ok")
                elif verb == "RCPT":
                    if tx is None:
                        await reply("503 5.5.1 MAIL first")
                        continue
                    addr, params = _path(arg[3:] if arg.upper().startswith("TO:") else arg)
                    r = self.rcpt_reply(addr, conn)
                    if not r or r.startswith("2"):
                        tx.rcpts.append(addr)
                        tx.rcpt_params[addr] = params
                    await reply(r or "250 2.1.5 ok")
                elif verb == "DATA":
                    if tx is None or not tx.rcpts:
                        await reply("503 5.5.1 no valid recipients")
                        continue
                    await reply("354 go ahead")
                    body = bytearray()
                    while True:
                        l = await reader.readline()
                        if not l:
                            return
                        if l == b".\r\n":
                            break
                        body += l[1:] if l.startswith(b".") else l
                    tx.data = bytes(body)
                    r = self.data_reply(tx, conn)
                    if not r or r.startswith("2"):
                        with self.lock:
                            self.transactions.append(tx)
                    await reply(r or "250 2.0.0 queued as T%d" % len(self.transactions))
                    if self.after_data(tx, conn):
                        return
                    tx = None
                elif verb == "RSET":
                    tx = None
                    await reply("250 2.0.0 ok")
                elif verb == "NOOP":
                    await reply("250 2.0.0 ok")
                elif verb == "QUIT":
                    await reply("221 2.0.0 bye")
                    return
                else:
                    await reply("502 5.5.1 unknown command")
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, OSError):
            return
        finally:
            try:
                writer.close()
            except Exception:
                pass


def _path(s):
    """'<a@b> PARAMS' -> ('a@b', 'PARAMS')."""
    s = s.strip()
    if s.startswith("<"):
        end = s.find(">")
        return s[1:end], s[end + 1:].strip()
    parts = s.split(" ", 1)
    return parts[0], parts[1] if len(parts) > 1 else ""


def peer_tls_context():
    """A server context with the harness's test certificate."""
    import ssl
    crt, key = harness.certs()["d1"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    return ctx


# --------------------------------------------------------------------------
# The server under test


def relay_config(srv, dns_port, peer_port, **relay):
    """Submission on, [relay] pointed at our DNS and peer; relay keys
    override (smarthost, tls, retry, max_queue_time ...)."""
    c = srv.config
    c["submission"] = {"listen": ["127.0.0.1:0"]}
    r = {"queue": os.path.join(srv.tmp, "queue"), "nameservers": ["127.0.0.1:%d" % dns_port],
         "port": peer_port, "retry": ["1s"], "tls": "none"}
    r.update(relay)
    c["relay"] = r
    return srv


def relay_server(test, dns_port, peer_port, start=True, **relay):
    srv = harness.Server(test)
    relay_config(srv, dns_port, peer_port, **relay)
    if start:
        srv.start()
    return srv


def submit(srv, rcpts, msg, sender=None, mail_options=(), rcpt_options=(), domain=DOMAIN1):
    """Authenticated submission (STARTTLS + AUTH PLAIN) of msg (str or
    bytes) from mailbox@DOMAIN; returns smtplib's refused dict."""
    sender = sender or "mailbox@" + domain
    c = smtplib.SMTP("127.0.0.1", srv.port("submission"), local_hostname="client.example", timeout=20)
    try:
        c.ehlo()
        c.starttls(context=harness.client_context())
        c.ehlo()
        c.login("mailbox@" + domain, PASSWORDS[domain])
        if isinstance(msg, str):
            msg = msg.encode()
        return c.sendmail(sender, rcpts, msg, list(mail_options), list(rcpt_options))
    finally:
        try:
            c.quit()
        except smtplib.SMTPException:
            pass


def message(subject="hi", body="hello from the relay test\r\n", frm="Me <mailbox@example.test>",
            to="rcpt@relay.test", extra=""):
    return ("From: %s\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: <%s@client.example>\r\n%s\r\n%s"
            % (frm, to, subject, "m%d.%d" % (os.getpid(), time.monotonic_ns()), extra, body))


def dsn_files(srv, domain=DOMAIN1):
    """[(name, bytes)] of the maildrop files that are DSNs (Return-Path: <>)."""
    return [(n, d) for n, d in srv.read_new(domain) if d.startswith(b"Return-Path: <>\r\n")]


def wait_dsn(srv, count=1, timeout=20, domain=DOMAIN1):
    deadline = time.monotonic() + timeout
    while True:
        got = dsn_files(srv, domain)
        if len(got) >= count or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def parse_dsn(data):
    """(message, [per-recipient dicts], per-message dict) of a stored DSN."""
    body = data.split(b"\r\n", 1)[1]  # without Return-Path
    msg = email.message_from_bytes(body, policy=email.policy.compat32)
    per_msg, per_rcpt = {}, []
    for part in msg.walk():
        if part.get_content_type() == "message/delivery-status":
            blocks = part.get_payload()
            # compat32 parses message/delivery-status into a list of
            # header blocks: the per-message one, then one per recipient.
            if isinstance(blocks, list):
                per_msg = dict(blocks[0].items())
                per_rcpt = [dict(b.items()) for b in blocks[1:]]
    return msg, per_rcpt, per_msg
