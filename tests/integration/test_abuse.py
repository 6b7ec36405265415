"""Abuse from an attacker's side (SPEC 4, 6, 7 and the standards: bad input
gets a clear protocol error and the session or server goes on; nothing
acknowledged is lost; no partial message is ever visible; no unbounded
memory per connection). Each test checks what an operator would: others are
still served correctly, memory stays bounded, the maildrop holds whole
messages only, the replies say what went wrong.

Memory is read from /proc/PID/status (VmRSS) of the non-ASan binary only:
ASan's shadow memory and quarantine make its RSS meaningless.
"""

import os
import select
import smtplib
import socket
import ssl
import subprocess
import threading
import time
import unittest
import uuid

import abuseutil
import harness
import pop3util
from abuseutil import SENDER
from harness import DOMAIN1, DOMAIN2, DOMAIN3, PASSWORDS, Raw, Server

ASAN = harness.is_asan()
MB = 1024 * 1024


def message(token, body_lines=(), subject="abuse"):
    lines = ["From: <%s>" % SENDER, "To: someone@%s" % DOMAIN1, "Subject: %s %s" % (subject, token),
             "Message-ID: <%s@attacker.example>" % token, ""]
    lines += ["token %s" % token] + list(body_lines) + ["end of %s" % token]
    return ("\r\n".join(lines) + "\r\n").encode()


class AbuseCase(unittest.TestCase):
    def server(self, edit=None, **kw):
        srv = Server(self, **kw)
        if edit:
            edit(srv.config)
        return srv.start()

    def raw(self, srv, service="smtp", greet=True, source=None, timeout=15):
        sock = None
        if source:
            sock = socket.create_connection(("127.0.0.1", srv.port(service)), timeout=timeout,
                                            source_address=(source, 0))
        r = Raw(srv.port(service), timeout=timeout, sock=sock)
        self.addCleanup(r.close)
        if greet:
            code, lines = r.read_reply()
            self.assertEqual(code, 220, lines)
        return r

    def p3(self, srv, service="pop3", login=False, domain=DOMAIN1):
        p = pop3util.P3(srv.port(service))
        self.addCleanup(p.close)
        self.assertTrue(p.greeting.startswith("+OK"), p.greeting)
        if login:
            st = p.login(domain)
            self.assertTrue(st.startswith("+OK"), st)
        return p

    def deliver(self, srv, token=None, domain=DOMAIN1, source=None):
        """One ordinary delivery; returns its token once the file is in new/."""
        token = token or uuid.uuid4().hex
        before = len(srv.new_files(domain))
        c = smtplib.SMTP(timeout=30, local_hostname="client.example",
                         source_address=(source, 0) if source else None)
        try:
            c.connect("127.0.0.1", srv.port("smtp"))
            self.assertEqual(c.sendmail(SENDER, ["user@%s" % domain], message(token)), {})
            c.quit()
        finally:
            c.close()
        files = srv.wait_new(domain, before + 1)
        self.assertTrue(any(token.encode() in d for _, d in files), "delivery %s not in new/" % token)
        return token

    def assert_maildir_clean(self, srv, domain=DOMAIN1):
        self.assertEqual(abuseutil.maildir_problems(srv, domain), [])
        self.assertEqual(abuseutil.wait_tmp_empty(srv, domain), [], "tmp/ must be empty once idle")

    def rss(self, srv):
        return abuseutil.rss_kib(srv.proc.pid)

    def smtp_tx(self, r, rcpt="user@%s" % DOMAIN1):
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<%s>" % rcpt)
        r.expect(354, "DATA")


# --------------------------------------------------------------------------
# 1. SMTP smuggling (SEC Consult, December 2023)


class Smuggling(AbuseCase):
    # (name, the fake end of data) -- each holds a bare CR or bare LF
    FAKE_ENDS = [
        ("lf-dot-lf", b"\n.\n"),
        ("cr-dot-lf", b"\r.\n"),
        ("lf-dot-crlf", b"\n.\r\n"),
        ("crlf-dot-cr", b"\r\n.\r"),
        ("cr-dot-cr", b"\r.\r"),
        ("crlf-dot-lf", b"\r\n.\n"),
        ("lf-dot-cr", b"\n.\r"),
        ("cr-crlf-dot-cr-crlf", b"\r\r\n.\r\r\n"),
        ("crlf-dot-lf-lf", b"\r\n.\n\n"),
    ]

    def smuggle(self, r, fake_end, outer, inner):
        """A DATA body whose fake end is followed by a whole second
        transaction, then the real end and a VRFY as the sentinel. Returns
        every reply up to the sentinel's 252."""
        self.smtp_tx(r)
        payload = (b"From: <" + SENDER.encode() + b">\r\nSubject: outer " + outer.encode() + b"\r\n\r\n"
                   b"outer body " + outer.encode() + fake_end +
                   b"MAIL FROM:<ceo@sender.example>\r\n"
                   b"RCPT TO:<victim@" + DOMAIN1.encode() + b">\r\n"
                   b"DATA\r\n"
                   b"From: <ceo@sender.example>\r\nSubject: smuggled " + inner.encode() + b"\r\n\r\n"
                   b"wire the money " + inner.encode() + b"\r\n"
                   b".\r\n"
                   b"VRFY sentinel\r\n")
        r.send(payload)
        return abuseutil.read_until_code(r, 252)

    def test_fake_ends_of_data_never_split_a_second_message(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        inners = []
        for name, fake in self.FAKE_ENDS:
            with self.subTest(variant=name):
                outer, inner = uuid.uuid4().hex, uuid.uuid4().hex
                inners.append(inner)
                replies = self.smuggle(r, fake, outer, inner)
                # exactly one reply for the DATA (the whole text is one
                # message), then the sentinel: nothing smuggled was executed
                self.assertEqual(len(replies), 2, "%s: smuggled commands were answered: %s" % (name, replies))
                self.assertTrue(replies[0].startswith("550 5.6.0"),
                                "%s: a message with bare CR/LF must get 550 5.6.0: %s" % (name, replies))
                self.assertTrue(replies[1].startswith("252"), replies)
        # the session goes on and a real message is delivered alone
        token = uuid.uuid4().hex
        self.smtp_tx(r)
        r.send(message(token) + b".\r\n")
        r.expect(250)
        r.expect(221, "QUIT")
        files = srv.wait_new(DOMAIN1, 1)
        time.sleep(0.3)
        files = srv.read_new(DOMAIN1)
        self.assertEqual(len(files), 1, "only the honest message may be stored: %s" % [n for n, _ in files])
        self.assertEqual(harness.split_trace(files[0][1])[1], message(token))
        for _, data in files:
            self.assertNotIn(b"smuggled", data)
            self.assertNotIn(b"wire the money", data)
        self.assertEqual(srv.new_files(DOMAIN1, "tmp"), [], "refused messages must not linger in tmp/")
        self.assertEqual(srv.new_files(DOMAIN2), [])

    def test_fake_ends_on_a_fresh_session_each(self):
        """Each variant as the only transaction of its own connection, the
        second transaction and QUIT pipelined: the smuggled MAIL must not run
        even when the connection ends right after."""
        srv = self.server()
        for name, fake in self.FAKE_ENDS:
            with self.subTest(variant=name):
                r = self.raw(srv)
                r.expect(250, "EHLO client.example")
                replies = self.smuggle(r, fake, uuid.uuid4().hex, uuid.uuid4().hex)
                self.assertEqual([x[:9] for x in replies], ["550 5.6.0", "252 2.5.0"], replies)
                r.send(b"QUIT\r\n")
                self.assertEqual(r.read_reply()[0], 221)
                self.assertTrue(r.closed())
        time.sleep(0.3)
        self.assertEqual(srv.read_new(DOMAIN1), [])
        self.assertEqual(abuseutil.wait_tmp_empty(srv), [])

    def test_control_proper_end_then_pipelined_transaction(self):
        """The same bytes with a real CRLF.CRLF are two honest messages: the
        detection above would see a split (this guards the test itself)."""
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        replies = self.smuggle(r, b"\r\n.\r\n", "o", "i")
        self.assertEqual([x[:3] for x in replies], ["250", "250", "250", "354", "250", "252"], replies)
        files = srv.wait_new(DOMAIN1, 2)
        self.assertEqual(len(files), 2)

    def test_bdat_with_unreadable_size_does_not_execute_the_chunk(self):
        """BDAT whose size cannot be read (overflow): the chunk that follows
        holds commands; they must not be executed (SPEC via proto/smtp.c:
        501, then 421 and close)."""
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<user@%s>" % DOMAIN1)
        chunk = ("RSET\r\nMAIL FROM:<ceo@sender.example>\r\nRCPT TO:<victim@%s>\r\nDATA\r\n"
                 "Subject: smuggled\r\n\r\nx\r\n.\r\n" % DOMAIN1).encode()
        r.send(b"BDAT 99999999999999999999999999 LAST\r\n" + chunk)
        code, lines = r.read_reply()
        self.assertEqual(code, 501, lines)
        code, lines = r.read_reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(r.closed())
        time.sleep(0.3)
        self.assertEqual(srv.read_new(DOMAIN1), [])
        self.deliver(srv)


# --------------------------------------------------------------------------
# 2. Huge lines


class HugeLines(AbuseCase):
    SIZE = 10 * MB

    def blast(self, sock, data, block=1 << 20):
        """Send data in a thread (the server may answer, and even close,
        before it has read it all); returns the thread."""
        def run():
            try:
                for i in range(0, len(data), block):
                    sock.sendall(data[i:i + block])
            except OSError:
                pass
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    def test_smtp_command_line_of_10mb_without_lf(self):
        srv = self.server(edit=lambda c: c.update(workers=1))
        measure = not ASAN
        junk = b"MAIL FROM:<" + b"A" * (self.SIZE - 11)
        rss = []
        for round_ in range(3):
            if measure:
                time.sleep(0.2)
                rss.append(self.rss(srv))
            r = self.raw(srv)
            r.expect(250, "EHLO client.example")
            sender = self.blast(r.sock, junk)
            # answered before the line ever ends: the LF is never sent here
            r.sock.settimeout(20)
            code, lines = r.read_reply()
            self.assertEqual(code, 500, lines)
            self.assertTrue(lines[0].startswith("5.5.2"), lines)
            sender.join(60)
            self.assertFalse(sender.is_alive(), "the server stopped reading the over-long line")
            # the rest of the line is discarded up to its LF; the session goes on
            r.send(b"\r\n")
            r.expect(250, "NOOP")
            r.expect(250, "MAIL FROM:<%s>" % SENDER)
            r.expect(221, "QUIT")
        if measure:
            time.sleep(0.2)
            rss.append(self.rss(srv))
            # the first round may page in the worker's receive ring (512 x
            # 16 KiB, allocated once); later rounds must not cost anything
            self.assertLess(rss[-1] - rss[0], 8 * 1024 + 4 * 1024,
                            "RSS grew by %d KiB over three 10 MB lines (%s)" % (rss[-1] - rss[0], rss))
            self.assertLess(rss[-1] - rss[1], 3 * 1024,
                            "RSS grew by %d KiB on 10 MB lines after the first (%s)" % (rss[-1] - rss[1], rss))
        self.deliver(srv)

    def test_several_10mb_lines_at_once_memory_bounded(self):
        """Eight connections each streaming a 10 MB line at the same time:
        per-connection memory must not follow the line length."""
        if ASAN:
            self.skipTest("RSS is meaningless under ASan")
        srv = self.server(edit=lambda c: c.update(workers=1))
        # warm the receive ring once (fixed, shared memory)
        r = self.raw(srv)
        t = self.blast(r.sock, b"NOOP " + b"w" * self.SIZE)
        self.assertEqual(r.read_reply()[0], 500)
        t.join(60)
        r.send(b"\r\n")
        r.expect(250, "NOOP")
        time.sleep(0.3)
        base = self.rss(srv)
        pop3util.reset_peak_rss(srv.proc.pid)
        conns = [self.raw(srv) for _ in range(8)]
        senders = [self.blast(c.sock, b"HELO " + b"h" * self.SIZE) for c in conns]
        for c in conns:
            c.sock.settimeout(30)
            self.assertEqual(c.read_reply()[0], 500)
        for s in senders:
            s.join(60)
        for c in conns:
            c.send(b"\r\n")
            c.expect(250, "NOOP")
        peak = abuseutil.rss_kib(srv.proc.pid, "VmHWM")
        self.assertLess(peak - base, 4 * 1024, "peak RSS grew by %d KiB for 8 x 10 MB lines (base %d KiB)"
                        % (peak - base, base))
        self.deliver(srv)

    def test_smtp_auth_response_line_of_10mb(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(220, "STARTTLS")
        r.starttls()
        r.expect(250, "EHLO client.example")
        # Two 10 MB AUTH lines: the first may touch the worker's receive
        # buffers for the first time (a fixed cost of up to 12 MiB: the ring
        # and the plaintext buffers); the second must cost next to nothing.
        base = None
        for round_ in range(2):
            r.expect(334, "AUTH PLAIN")
            if round_ == 1 and not ASAN:
                base = self.rss(srv)
            sender = self.blast(r.sock, b"A" * self.SIZE, block=256 * 1024)
            # An SSLSocket may not be read and written from two threads at
            # once (its records would interleave): the line is all sent
            # first, the server discarding it as it comes, then the reply
            # that it wrote early is read.
            sender.join(60)
            self.assertFalse(sender.is_alive())
            r.sock.settimeout(30)
            code, lines = r.read_reply()
            self.assertEqual(code, 500, lines)
            self.assertTrue(lines[0].startswith("5.5.6"), lines)
            r.send(b"\r\n")
            # back in command state, not authenticated
            r.expect(250, "NOOP")
        if base is not None:
            grown = self.rss(srv) - base
            self.assertLess(grown, 2 * 1024, "RSS grew by %d KiB for a second 10 MB AUTH line" % grown)
        code, lines = r.cmd("AUTH PLAIN " + harness.plain_auth("mailbox@" + DOMAIN1, PASSWORDS[DOMAIN1]))
        self.assertEqual(code, 235, lines)
        self.deliver(srv)

    def test_pop3_line_of_10mb_and_auth_line(self):
        srv = pop3util.server(self, edit=lambda c: c.update(workers=1))
        pop3util.deliver(srv, 1)
        base = None if ASAN else self.rss(srv)
        p = self.p3(srv)
        sender = self.blast(p.sock, b"USER " + b"u" * self.SIZE)
        st = p.readline()
        self.assertTrue(st.startswith("-ERR"), st)
        sender.join(60)
        self.assertFalse(sender.is_alive())
        p.send(b"\r\n")
        # the session goes on: the discarded line was not a USER
        st = p.cmd("PASS " + PASSWORDS[DOMAIN1])
        self.assertTrue(st.startswith("-ERR"), "PASS after the discarded USER line: %s" % st)
        st = p.login()
        self.assertTrue(st.startswith("+OK"), st)
        self.assertEqual(p.stat()[0], 1)
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        # AUTH PLAIN continuation line: same 255-octet rule
        p = self.p3(srv)
        st = p.cmd("AUTH PLAIN")
        self.assertTrue(st.startswith("+"), st)
        sender = self.blast(p.sock, b"Q" * self.SIZE)
        st = p.readline()
        self.assertTrue(st.startswith("-ERR"), st)
        sender.join(60)
        self.assertFalse(sender.is_alive())
        p.send(b"\r\n")
        st = p.auth_plain()
        self.assertTrue(st.startswith("+OK"), st)
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        if base is not None:
            grown = self.rss(srv) - base
            self.assertLess(grown, 8 * 1024 + 4 * 1024, "RSS grew by %d KiB for two 10 MB POP3 lines" % grown)


# --------------------------------------------------------------------------
# 3. Slow clients (slowloris)


class SlowClients(AbuseCase):
    N = 200

    def test_200_trickling_clients_do_not_starve_a_normal_sender(self):
        srv = self.server(edit=lambda c: c["smtp"].update(timeout="3s", max_connections_per_ip=400))
        port = srv.port()
        abuseutil.raise_nofile(self.N + 200)
        socks = abuseutil.connect_many(port, self.N)
        self.addCleanup(abuseutil.close_all, socks)
        greet = abuseutil.first_lines(socks)
        self.assertTrue(all(l and l.startswith("220 ") for l in greet.values()),
                        [l for l in greet.values() if not (l and l.startswith("220 "))][:5])
        scripts = [("HELO slow%d\r\n" % i + "MAIL FROM:<slow%d@sender.example>\r\nRSET\r\n" % i * 100).encode()
                   for i in range(self.N)]
        sent = [0] * self.N
        got = [b""] * self.N
        stop = threading.Event()
        errors = []

        def trickle():
            for s in socks:
                s.setblocking(False)
            while not stop.is_set():
                t0 = time.monotonic()
                for i, s in enumerate(socks):
                    try:
                        s.send(scripts[i][sent[i]:sent[i] + 1])
                        sent[i] += 1
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        errors.append("slow %d: send: %s" % (i, e))
                        stop.set()
                        return
                    try:
                        while True:
                            chunk = s.recv(4096)
                            if not chunk:
                                errors.append("slow %d closed while trickling" % i)
                                stop.set()
                                return
                            got[i] += chunk
                    except BlockingIOError:
                        pass
                time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))

        th = threading.Thread(target=trickle, daemon=True)
        th.start()
        started = time.monotonic()
        time.sleep(1.0)
        # the honest sender: 50 messages on one connection
        tokens = [uuid.uuid4().hex for _ in range(50)]
        t0 = time.monotonic()
        c = smtplib.SMTP("127.0.0.1", port, local_hostname="honest.example", timeout=30)
        try:
            for t in tokens:
                self.assertEqual(c.sendmail(SENDER, ["user@%s" % DOMAIN1], message(t)), {})
            c.quit()
        finally:
            c.close()
        elapsed = time.monotonic() - t0
        # keep trickling until every slow client has completed HELO and MAIL
        # (and at least 5 s), however loaded this machine is
        need = [scripts[i].index(b"\n", scripts[i].index(b"\n") + 1) + 1 for i in range(self.N)]
        while not stop.is_set() and time.monotonic() - started < 60:
            if time.monotonic() - started >= 5 and all(sent[i] >= need[i] for i in range(self.N)):
                break
            time.sleep(0.1)
        stop.set()
        th.join(5)
        self.assertEqual(errors, [])
        self.assertLess(elapsed, 30, "50 deliveries took %.1fs next to %d slow clients" % (elapsed, self.N))
        files = srv.wait_new(DOMAIN1, 50)
        self.assertEqual(len(files), 50)
        self.assertEqual(abuseutil.maildir_problems(srv), [])
        # the slow clients were served correctly meanwhile: one 250 per
        # complete command line they trickled in
        for i in range(self.N):
            if scripts[i][sent[i] - 1:sent[i]] == b"\n":
                socks[i].setblocking(True)
                socks[i].sendall(b"N")   # leave every slow client mid-command
                sent[i] += 1
        deadline = time.monotonic() + 3
        want = [scripts[i][:sent[i]].count(b"\r\n") for i in range(self.N)]
        while time.monotonic() < deadline:
            for i, s in enumerate(socks):
                s.setblocking(False)
                try:
                    got[i] += s.recv(65536)
                except (BlockingIOError, OSError):
                    pass
            if all(got[i].count(b"\r\n") >= want[i] for i in range(self.N)):
                break
            time.sleep(0.05)
        wrong = []
        for i in range(self.N):
            codes, _ = abuseutil.smtp_codes(got[i])
            if len(codes) != want[i] or any(not x.startswith("250") for x in codes):
                wrong.append((i, want[i], codes[-3:]))
        self.assertEqual(wrong[:5], [], "slow clients got wrong replies (%d of %d)" % (len(wrong), self.N))
        self.assertGreater(min(want), 1, "the slow clients should have completed some commands")
        # now they stall mid-command: the 3 s idle timeout closes every one
        t1 = time.monotonic()
        left = set(range(self.N))
        tail = [b""] * self.N
        for s in socks:
            s.setblocking(False)
        while left and time.monotonic() - t1 < 12:
            for i in list(left):
                try:
                    chunk = socks[i].recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    tail[i] += chunk
                else:
                    left.discard(i)
            time.sleep(0.05)
        dt = time.monotonic() - t1
        self.assertEqual(sorted(left)[:5], [], "%d stalled clients still open %.1fs after they stopped"
                         % (len(left), dt))
        bad = [(i, tail[i]) for i in range(self.N) if not tail[i].startswith(b"421 4.4.2")]
        self.assertEqual(bad[:3], [], "a stalled client must get 421 4.4.2 before the close")
        srv.wait_log(r"event=timeout", count=self.N)
        # and the server still serves
        self.deliver(srv)


# --------------------------------------------------------------------------
# 4. Slow reader


class SlowReader(AbuseCase):
    def test_retr_20mb_never_read_by_three_clients(self):
        """Three sessions (one per maildrop) RETR a 20 MB message each and
        never read: the server must not buffer the messages (3 x 20 MB)."""
        srv = Server(self, domains=3)
        pop3util.configure(srv.config, max_message_size=41943040)
        srv.config["workers"] = 1
        srv.start()
        line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuv\r\n"
        big = {}
        for k, dom in enumerate((DOMAIN1, DOMAIN2, DOMAIN3)):
            token = uuid.uuid4().hex
            data = (b"Return-Path: <a@b.example>\r\nSubject: big " + token.encode() + b"\r\n\r\n" +
                    line * (20 * MB // len(line)) + b"end of " + token.encode() + b"\r\n")
            abuseutil.write_message_file(srv.maildrop(dom), data, k)
            big[dom] = data
        pid = srv.proc.pid
        if not ASAN:
            time.sleep(0.3)
            base = self.rss(srv)
            pop3util.reset_peak_rss(pid)
        readers = []
        for dom in big:
            p = pop3util.P3(srv.port("pop3"))
            self.addCleanup(p.close)
            p.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            self.assertTrue(p.login(dom).startswith("+OK"))
            p.send("RETR 1\r\n")
            readers.append(p)
        time.sleep(2.0)
        # others are served meanwhile
        tok = self.deliver(srv)
        q = self.p3(srv)
        self.assertIn("[IN-USE]", q.login(DOMAIN1))
        q.close()
        s = self.raw(srv)
        s.expect(250, "EHLO client.example")
        s.expect(221, "QUIT")
        if not ASAN:
            peak = abuseutil.rss_kib(pid, "VmHWM")
            now = self.rss(srv)
            self.assertLess(peak - base, 32 * 1024, "peak RSS grew by %d KiB with 3 stalled 20 MB RETRs"
                            % (peak - base))
            self.assertLess(now - base, 32 * 1024)
        # the readers vanish without QUIT: nothing removed, locks released
        for p in readers:
            p.abort(rst=True)
        for dom, data in big.items():
            deadline = time.monotonic() + 10
            while True:
                p = self.p3(srv)
                st = p.login(dom)
                if st.startswith("+OK") or time.monotonic() > deadline:
                    break
                p.close()
                time.sleep(0.2)
            self.assertTrue(st.startswith("+OK"), "%s still locked after its reader left: %s" % (dom, st))
            n, _ = p.stat()
            self.assertEqual(n, 2 if dom == DOMAIN1 else 1)
            self.assertEqual(p.cmd("LIST 1"), "+OK 1 %d" % len(data))
            st, lines = p.lines("TOP 1 0")
            self.assertTrue(st.startswith("+OK"), st)
            self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertTrue(any(tok.encode() in d for _, d in srv.read_new(DOMAIN1)))


# --------------------------------------------------------------------------
# 5. Floods


class Floods(AbuseCase):
    N = 2000

    def test_2000_connections_from_one_ip_limit_50(self):
        abuseutil.raise_nofile(self.N + 500)
        # one worker, one listener: accept order is connect order
        srv = self.server(edit=lambda c: (c.update(workers=1),
                                          c["smtp"].update(max_connections=5000, max_connections_per_ip=50)))
        socks = abuseutil.connect_many(srv.port(), self.N)
        self.addCleanup(abuseutil.close_all, socks)
        first = abuseutil.first_lines(socks, timeout=30)
        ok = [s for s in socks if (first[s] or "").startswith("220 ")]
        refused = [s for s in socks if (first[s] or "").startswith("421 4.7.0")]
        other = [first[s] for s in socks if s not in ok and s not in refused]
        self.assertEqual(len(ok), 50, "accepted %d of %d from one IP with a limit of 50" % (len(ok), self.N))
        self.assertEqual(len(refused), self.N - 50, "unexpected first lines: %s" % other[:5])
        # the 51st is the one refused: the first 50 in connect order got in
        self.assertEqual(ok, socks[:50])
        for s in refused[:50]:
            s.settimeout(5)
            try:
                tail = s.recv(100)
            except OSError:
                tail = b""
            self.assertEqual(tail, b"", "a refused connection must be closed after its 421")
        # the held ones still work, another address is served
        for s in ok:
            s.sendall(b"NOOP\r\n")
        for s in ok:
            s.settimeout(10)
            self.assertTrue(s.recv(100).startswith(b"250"))
        self.deliver(srv, source="127.0.0.2")
        srv.wait_log(r"event=refused .*reason=max_connections_per_ip")
        abuseutil.close_all(socks)
        deadline = time.monotonic() + 10
        while True:
            r = Raw(srv.port())
            code, _ = r.read_reply()
            r.close()
            if code == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(code, 220, "slots of closed connections must be released")
        self.deliver(srv)

    def test_2000_connections_from_40_ips(self):
        abuseutil.raise_nofile(self.N + 500)
        srv = self.server(edit=lambda c: c["smtp"].update(max_connections=5000, max_connections_per_ip=50))
        sources = ["127.0.%d.%d" % (1 + i // 200, 2 + i % 200) for i in range(40)]
        socks = abuseutil.connect_many(srv.port(), self.N, sources)
        self.addCleanup(abuseutil.close_all, socks)
        first = abuseutil.first_lines(socks, timeout=30)
        bad = [first[s] for s in socks if not (first[s] or "").startswith("220 ")]
        self.assertEqual(bad[:5], [], "%d of %d connections (50 per IP) not greeted" % (len(bad), self.N))
        # the 51st from one of them is refused, a 41st address is not
        extra = self.raw(srv, greet=False, source=sources[7])
        code, lines = extra.read_reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("4.7.0"), lines)
        self.deliver(srv, source="127.0.9.9")
        # a sample of the flood is still served correctly
        for s in socks[::97]:
            s.sendall(b"EHLO flood\r\nQUIT\r\n")
        for s in socks[::97]:
            s.settimeout(10)
            data = b""
            while b"\r\n221 " not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.assertIn(b"\r\n221 ", data)

    def test_service_limit_and_pop3_per_ip(self):
        abuseutil.raise_nofile(1000)
        srv = pop3util.server(self, start=False)
        srv.config["smtp"].update(max_connections=300, max_connections_per_ip=1000)
        srv.config["pop3"].update(max_connections_per_ip=50)
        srv.start()
        sources = ["127.0.3.%d" % (2 + i) for i in range(10)]
        socks = abuseutil.connect_many(srv.port(), 400, sources)
        self.addCleanup(abuseutil.close_all, socks)
        first = abuseutil.first_lines(socks)
        codes = [(first[s] or "")[:9] for s in socks]
        self.assertEqual(sum(c.startswith("220 ") for c in codes), 300, set(codes))
        self.assertEqual(codes.count("421 4.7.0"), 100, set(codes))
        srv.wait_log(r"event=refused service=smtp reason=max_connections")
        p = abuseutil.connect_many(srv.port("pop3"), 60)
        self.addCleanup(abuseutil.close_all, p)
        first = abuseutil.first_lines(p)
        lines = [first[s] or "" for s in p]
        self.assertEqual(sum(l.startswith("+OK") for l in lines), 50, lines[45:55])
        self.assertEqual(sum(l.startswith("-ERR [SYS/TEMP]") for l in lines), 10, lines[45:55])
        abuseutil.close_all(socks)
        abuseutil.close_all(p)
        time.sleep(0.5)
        self.deliver(srv)

    @unittest.skipIf(ASAN, "ASan maps terabytes of shadow memory: no RLIMIT_DATA fits it")
    def test_out_of_memory_refuses_with_421_and_recovers(self):
        """Out of memory (RLIMIT_DATA a little above what the idle server
        maps), a flood of connections: each one hears 220 or `421 4.7.0 Out
        of memory`, the server lives and logs it, a session after the flood
        is served, and as many sessions fit the second time (nothing
        leaked). (A transaction right after may still be refused with 452
        or 451: jemalloc keeps the address space it once mapped, and
        whether a new size of block fits in what it keeps varies.)"""
        abuseutil.raise_nofile(6000)

        def edit(c):
            c["workers"] = 1
            c["smtp"].update(max_connections=20000, max_connections_per_ip=20000)
        probe = self.server(edit)
        base = abuseutil.rss_kib(probe.proc.pid, "VmData")
        probe.stop()
        srv = Server(self, preexec=abuseutil.data_preexec((base + 3 * 1024) * 1024))
        edit(srv.config)
        srv.start()
        greeted = []
        for _ in range(2):
            socks = abuseutil.connect_many(srv.port(), 3000)
            self.addCleanup(abuseutil.close_all, socks)
            first = abuseutil.first_lines(socks, timeout=20)
            lines = [first[s] or "" for s in socks]
            ok = sum(l.startswith("220 ") for l in lines)
            refused = sum(l.startswith("421 4.7.0 Out of memory") for l in lines)
            self.assertEqual(ok + refused, len(socks),
                             "neither 220 nor 421: %r" % [l for l in lines if not l.startswith(("220 ", "421 "))][:5])
            self.assertGreater(refused, 0, "the limit was never reached")
            self.assertGreater(ok, 0)
            self.assertTrue(srv.running(), srv.stderr()[-3000:])
            greeted.append(ok)
            abuseutil.close_all(socks)
            time.sleep(1)
            r = self.raw(srv)
            r.expect(250, "EHLO after.example")
            r.expect(221, "QUIT")
        srv.wait_log(r"level=warn event=refused service=smtp reason=out_of_memory")
        self.assertGreaterEqual(greeted[1], greeted[0] * 0.9,
                                "fewer sessions fit after the first flood: %r" % greeted)

    def test_emfile_pauses_accept_without_spinning(self):
        abuseutil.raise_nofile(1000)
        srv = Server(self, preexec=abuseutil.nofile_preexec(128))
        srv.config["smtp"].update(max_connections=5000, max_connections_per_ip=5000)
        srv.start()
        pid = srv.proc.pid
        socks = abuseutil.connect_many(srv.port(), 300)
        self.addCleanup(abuseutil.close_all, socks)
        srv.wait_log(r"event=accept_paused", timeout=15)
        self.assertTrue(srv.running())
        cpu0, t0 = abuseutil.cpu_seconds(pid), time.monotonic()
        time.sleep(5)
        cpu = abuseutil.cpu_seconds(pid) - cpu0
        wall = time.monotonic() - t0
        self.assertTrue(srv.running(), "server died at EMFILE:\n" + srv.stderr()[-3000:])
        self.assertLess(cpu, 3.0 if not ASAN else 4.0,
                        "server used %.1fs CPU in %.1fs while out of descriptors (spinning?)" % (cpu, wall))
        # the accepted ones are served; a transaction that needs a file
        # either stores the whole message or gets a clear temporary error
        first = abuseutil.first_lines(socks, timeout=3)
        greeted = [s for s in socks if (first[s] or "").startswith("220 ")]
        self.assertGreater(len(greeted), 10, "no connection accepted at all")
        held = greeted[0]
        r = Raw(None, sock=held)
        r.expect(250, "EHLO held")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<user@%s>" % DOMAIN1)
        code, lines = r.cmd("DATA")
        if code == 354:
            token = uuid.uuid4().hex
            r.send(message(token) + b".\r\n")
            code, lines = r.read_reply()
        self.assertIn(code, (250, 451, 452), lines)
        r.close()
        abuseutil.close_all(socks)
        # once they are gone, a normal delivery works: accept resumes (1 s
        # back-off), the backlog of closed connections drains, and this
        # connection waits in the backlog at worst. Until the server has
        # seen those closes its descriptors may still be short, and the
        # spool file then gets 451 (a temporary error, which a client
        # retries): a retry within a few seconds must succeed.
        deadline = time.monotonic() + 10
        while True:
            try:
                self.deliver(srv)
                break
            except smtplib.SMTPDataError as e:
                if e.smtp_code != 451 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        self.assertEqual(abuseutil.maildir_problems(srv), [])
        self.assertEqual(abuseutil.wait_tmp_empty(srv), [])
        self.assertTrue(srv.running())

    def test_auth_flood_does_not_hold_up_storage(self):
        """Password checks (yescrypt: tens of milliseconds each, and anyone
        may ask for one) share the helper threads with the storage work of
        deliveries. A flood of AUTH attempts waits on its own queue: an
        authenticated sender's message for a remote recipient (its queue
        file is created and committed on those threads) is accepted while
        most of the flood is still unanswered."""
        p = subprocess.run([harness.BINARY, "--hash-password"], input=b"flood pass word\n",
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        hashed = p.stdout.decode().strip()

        srv = Server(self)
        srv.config["workers"] = 1
        srv.domain_cfg(DOMAIN1)["password"] = hashed
        srv.config["relay"] = {"queue": os.path.join(srv.tmp, "queue"), "smarthost": "127.0.0.1:9",
                               "retry": ["1h"]}
        srv.start()

        def tls_session():
            r = self.raw(srv)
            r.expect(250, "EHLO flood.example")
            r.expect(220, "STARTTLS")
            r.starttls()
            r.expect(250, "EHLO flood.example")
            return r

        sender = tls_session()
        code, lines = sender.cmd("AUTH PLAIN " + harness.plain_auth("mailbox@" + DOMAIN1, "flood pass word"))
        self.assertEqual(code, 235, lines)
        flood = [tls_session() for _ in range(100)]
        wrong = ("AUTH PLAIN " + harness.plain_auth("mailbox@" + DOMAIN1, "guess") + "\r\n").encode()
        for r in flood:
            r.send(wrong)
        sender.expect(250, "MAIL FROM:<me@%s>" % DOMAIN1)
        sender.expect(250, "RCPT TO:<far@remote.example>")
        sender.expect(354, "DATA")
        sender.send(message(uuid.uuid4().hex) + b".\r\n")
        code, lines = sender.read_reply()
        answered = sum(1 for r in flood if r.sock.pending() or select.select([r.sock], [], [], 0)[0])
        self.assertEqual(code, 250, lines)
        self.assertLess(answered, len(flood) // 4,
                        "the queued message waited for %d of %d password checks" % (answered, len(flood)))
        for r in flood:
            r.sock.settimeout(60)
            self.assertEqual(r.read_reply()[0], 535)
        self.assertTrue(srv.running())


# --------------------------------------------------------------------------
# 6. Pipelined flood


class PipelinedFlood(AbuseCase):
    """Many commands (or a big BDAT chunk) arrive faster than the machine
    takes them. Back-pressure must hold the client, never drop it: when
    these fail with "connection closed", see core/worker.c on_recv, the
    c->nin == CONN_IN_MAX branch ("cannot happen") that closes silently."""

    def expected(self, n):
        cmds, codes = [], []
        for i in range(n):
            if i % 7 == 3:
                cmds.append(b"VRFY u%d\r\n" % i)
                codes.append(b"252")
            elif i % 11 == 5:
                cmds.append(b"HELP\r\n")
                codes.append(b"214")
            else:
                cmds.append(b"NOOP\r\n")
                codes.append(b"250")
        return b"".join(cmds), codes

    def flood(self, srv, n, pause, tls=False):
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        if tls:
            r.expect(220, "STARTTLS")
            r.starttls()
            r.expect(250, "EHLO client.example")
        data, want = self.expected(n)
        buf, codes = b"", []
        if tls:
            # An SSLSocket may not be written and read from two threads at
            # once: one thread, non-blocking, sends and reads in turn.
            sock = r.sock
            sock.setblocking(False)
            off, t_end, mid = 0, time.monotonic() + 60, None
            t_pause = time.monotonic() + pause
            while len(codes) < n and time.monotonic() < t_end:
                if off < len(data):
                    try:
                        off += sock.send(data[off:off + 16384])
                        continue
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        pass
                if time.monotonic() < t_pause:
                    time.sleep(0.01)   # not reading: the server must wait, not buffer
                    continue
                if mid is None and not ASAN:
                    mid = self.rss(srv)
                try:
                    chunk = sock.recv(1 << 20)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    select.select([sock], [sock] if off < len(data) else [], [], 0.5)
                    continue
                self.assertTrue(chunk, "closed after %d of %d replies" % (len(codes), n))
                buf += chunk
                got, buf = abuseutil.smtp_codes(buf)
                codes.extend(x[:3].encode() for x in got)
            sock.setblocking(True)
        else:
            sender = threading.Thread(target=r.sock.sendall, args=(data,), daemon=True)
            sender.start()
            time.sleep(pause)    # not reading: the server must wait, not buffer
            mid = None if ASAN else self.rss(srv)
            r.sock.settimeout(30)
            while len(codes) < n:
                chunk = r.sock.recv(1 << 20)
                self.assertTrue(chunk, "closed after %d of %d replies" % (len(codes), n))
                buf += chunk
                got, buf = abuseutil.smtp_codes(buf)
                codes.extend(x[:3].encode() for x in got)
            sender.join(30)
        self.assertEqual(len(codes), n)
        first_bad = next((i for i in range(n) if codes[i] != want[i]), None)
        self.assertIsNone(first_bad, "reply %s out of order: got %s want %s" % (
            first_bad, codes[first_bad:first_bad + 3] if first_bad is not None else "",
            want[first_bad:first_bad + 3] if first_bad is not None else ""))
        r.expect(221, "QUIT")
        return mid

    def test_10000_commands_in_one_go(self):
        srv = self.server()
        self.flood(srv, 10000, 1.0)
        self.deliver(srv)

    def test_200000_commands_unread_memory_bounded(self):
        srv = self.server(edit=lambda c: c.update(workers=1))
        n = 200000
        base = None if ASAN else self.rss(srv)
        mid = self.flood(srv, n, 2.0)
        if base is not None:
            self.assertLess(mid - base, 8 * 1024, "RSS grew by %d KiB while %d pipelined commands waited"
                            % (mid - base, n))
        self.deliver(srv)

    def test_200000_commands_over_starttls(self):
        srv = self.server(edit=lambda c: c.update(workers=1))
        base = None if ASAN else self.rss(srv)
        mid = self.flood(srv, 200000, 2.0, tls=True)
        if base is not None:
            self.assertLess(mid - base, 8 * 1024, "RSS grew by %d KiB while 200000 pipelined commands "
                            "waited (TLS)" % (mid - base))
        self.deliver(srv)

    def test_bdat_chunk_sent_with_its_command(self):
        """RFC 3030: a CHUNKING client sends "BDAT n LAST" and the n octets
        at once, without waiting. Chunks of 1 and 4 MB in one send must be
        stored, not dropped."""
        srv = self.server(edit=lambda c: c["smtp"].update(max_message_size=8 * MB))
        for n in (256 * 1024, 1 * MB, 4 * MB):
            with self.subTest(chunk=n):
                token = uuid.uuid4().hex
                m = message(token, ["c" * 998] * (n // 1000))
                r = self.raw(srv)
                r.expect(250, "EHLO client.example")
                r.expect(250, "MAIL FROM:<%s>" % SENDER)
                r.expect(250, "RCPT TO:<user@%s>" % DOMAIN1)
                try:
                    r.send(b"BDAT %d LAST\r\n" % len(m) + m)
                    code, lines = r.read_reply()
                except (OSError, EOFError) as e:
                    self.fail("BDAT %d LAST with its %d octets in one send: connection lost (%r)"
                              % (len(m), len(m), e))
                self.assertEqual(code, 250, lines)
                r.expect(221, "QUIT")
                stored = [d for _, d in srv.read_new(DOMAIN1) if token.encode() in d]
                self.assertEqual(len(stored), 1)
                self.assertEqual(harness.split_trace(stored[0])[1], m)

    def test_pop3_pipelined_flood(self):
        srv = pop3util.server(self)
        pop3util.deliver(srv, 1)
        p = self.p3(srv, login=True)
        n = 20000
        data = b"".join(b"STAT\r\n" if i % 5 else b"NOOP\r\n" for i in range(n))
        t = threading.Thread(target=p.sock.sendall, args=(data,), daemon=True)
        t.start()
        time.sleep(1.0)
        for i in range(n):
            line = p.readline()
            want = "+OK 1 " if i % 5 else "+OK"
            self.assertTrue(line.startswith(want), "reply %d: %r" % (i, line))
        t.join(10)
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))

    def test_pop3_pipelined_flood_unread(self):
        srv = pop3util.server(self, edit=lambda c: c.update(workers=1))
        pop3util.deliver(srv, 1)
        p = self.p3(srv, login=True)
        n = 200000
        base = None if ASAN else self.rss(srv)
        t = threading.Thread(target=p.sock.sendall, args=(b"NOOP\r\n" * n,), daemon=True)
        t.start()
        time.sleep(2.0)
        mid = None if ASAN else self.rss(srv)
        buf = b""
        p.sock.settimeout(30)
        while buf.count(b"\r\n") < n:
            chunk = p.sock.recv(1 << 20)
            self.assertTrue(chunk, "closed after %d of %d replies" % (buf.count(b"\r\n"), n))
            buf += chunk
        self.assertEqual(buf, b"+OK\r\n" * n)
        t.join(10)
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        if base is not None:
            self.assertLess(mid - base, 8 * 1024, "RSS grew by %d KiB" % (mid - base))


# --------------------------------------------------------------------------
# 7. Injection after STARTTLS / STLS


class TLSInjection(AbuseCase):
    def test_smtp_commands_pipelined_after_starttls_are_discarded(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.send("STARTTLS\r\nMAIL FROM:<injected@sender.example>\r\nRCPT TO:<inj@%s>\r\n"
               "DATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n" % DOMAIN1)
        code, lines = r.read_reply()
        self.assertEqual(code, 220, lines)
        self.assertEqual(r.buf, b"", "nothing may follow the 220 in plaintext")
        r.starttls()
        # the first reply after the handshake answers what was sent after it
        code, lines = r.cmd("EHLO again.example")
        self.assertEqual(code, 250, "first reply after TLS: %d %s" % (code, lines))
        # no transaction was started by the injected MAIL
        code, lines = r.cmd("RCPT TO:<x@%s>" % DOMAIN1)
        self.assertEqual(code, 503, "the injected MAIL ran: %d %s" % (code, lines))
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<user@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        token = uuid.uuid4().hex
        r.send(message(token) + b".\r\n")
        r.expect(250)
        r.expect(221, "QUIT")
        files = srv.wait_new(DOMAIN1, 1)
        time.sleep(0.2)
        files = srv.read_new(DOMAIN1)
        self.assertEqual(len(files), 1)
        self.assertNotIn(b"injected", files[0][1])
        self.assertIn(b"ESMTPS", files[0][1])

    def test_smtp_injection_in_a_separate_segment_before_the_handshake(self):
        """The injected line sent right after STARTTLS (its own segment,
        before reading 220): either the handshake fails on it or it is
        dropped; it is never executed."""
        srv = self.server()
        for _ in range(5):
            r = self.raw(srv)
            r.expect(250, "EHLO client.example")
            r.send("STARTTLS\r\n")
            r.send("MAIL FROM:<injected@sender.example>\r\n")
            code, _ = r.read_reply()
            self.assertEqual(code, 220)
            try:
                r.starttls()
            except (ssl.SSLError, OSError):
                continue   # failed closed: fine
            try:
                code, lines = r.cmd("EHLO again.example")
            except (ssl.SSLError, OSError, EOFError):
                continue
            self.assertEqual(code, 250, lines)
            code, lines = r.cmd("RCPT TO:<x@%s>" % DOMAIN1)
            self.assertEqual(code, 503, "the injected MAIL ran: %d %s" % (code, lines))
            r.close()
        self.deliver(srv)

    def test_pop3_commands_pipelined_after_stls_are_discarded(self):
        srv = pop3util.server(self, plaintext=False)
        pop3util.deliver(srv, 1)
        p = self.p3(srv)
        p.send("STLS\r\nUSER mailbox@%s\r\nPASS %s\r\n" % (DOMAIN1, PASSWORDS[DOMAIN1]))
        st = p.readline()
        self.assertTrue(st.startswith("+OK"), st)
        self.assertEqual(p.buf, b"", "nothing may follow the STLS reply in plaintext")
        p.sock = harness.client_context().wrap_socket(p.sock, server_hostname="localhost")
        # if the injected USER had been kept, PASS alone would log in
        st = p.cmd("PASS " + PASSWORDS[DOMAIN1])
        self.assertTrue(st.startswith("-ERR"), "first reply after TLS (PASS without USER): %s" % st)
        self.assertTrue(p.cmd("STAT").startswith("-ERR"), "the injected USER/PASS logged in")
        self.assertTrue(p.login().startswith("+OK"))
        self.assertEqual(p.stat()[0], 1)
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        # no login came from the plaintext part
        self.assertEqual(len(srv.log_lines("login")), 1, srv.log_lines("login"))


# --------------------------------------------------------------------------
# 8. Half-close


class HalfClose(AbuseCase):
    def read_to_eof(self, sock, timeout=15):
        sock.settimeout(timeout)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data

    def test_smtp_everything_then_shutdown_write(self):
        srv = self.server()
        for round_ in range(5):
            token = uuid.uuid4().hex
            s = socket.create_connection(("127.0.0.1", srv.port()), timeout=15)
            self.addCleanup(s.close)
            s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@" + DOMAIN1.encode() + b">\r\nDATA\r\n"
                      b"Subject: t " + token.encode() + b"\r\n\r\nbody\r\nend of " + token.encode() +
                      b"\r\n.\r\nQUIT\r\n")
            s.shutdown(socket.SHUT_WR)
            data = self.read_to_eof(s)
            codes, _ = abuseutil.smtp_codes(data)
            self.assertEqual([c[:3] for c in codes], ["220", "250", "250", "250", "354", "250", "221"],
                             "round %d: %r" % (round_, data))
            self.assertTrue(any(token.encode() in d for _, d in srv.read_new(DOMAIN1)))
        self.assertEqual(len(srv.read_new(DOMAIN1)), 5)
        self.assert_maildir_clean(srv)

    def test_smtp_half_close_without_quit_still_delivers(self):
        srv = self.server()
        token = uuid.uuid4().hex
        s = socket.create_connection(("127.0.0.1", srv.port()), timeout=15)
        self.addCleanup(s.close)
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@" + DOMAIN1.encode() + b">\r\nDATA\r\n" +
                  message(token) + b".\r\n")
        s.shutdown(socket.SHUT_WR)
        data = self.read_to_eof(s)
        codes, _ = abuseutil.smtp_codes(data)
        self.assertEqual([c[:3] for c in codes], ["220", "250", "250", "250", "354", "250"], data)
        self.assertEqual(len(srv.wait_new(DOMAIN1, 1)), 1)
        self.assert_maildir_clean(srv)

    def test_smtp_half_close_mid_data_delivers_nothing(self):
        srv = self.server()
        token = uuid.uuid4().hex
        s = socket.create_connection(("127.0.0.1", srv.port()), timeout=15)
        self.addCleanup(s.close)
        s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@" + DOMAIN1.encode() + b">\r\nDATA\r\n" +
                  message(token) + b"\r\n.")   # no final CRLF: not an end
        s.shutdown(socket.SHUT_WR)
        data = self.read_to_eof(s)
        codes, _ = abuseutil.smtp_codes(data)
        self.assertEqual([c[:3] for c in codes][:5], ["220", "250", "250", "250", "354"], data)
        self.assertNotIn("250", [c[:3] for c in codes[5:]], data)
        time.sleep(0.3)
        self.assertEqual(srv.read_new(DOMAIN1), [])
        self.assertEqual(abuseutil.wait_tmp_empty(srv), [])

    def test_pop3_everything_then_shutdown_write(self):
        srv = pop3util.server(self)
        pop3util.deliver(srv, 2)
        s = socket.create_connection(("127.0.0.1", srv.port("pop3")), timeout=15)
        self.addCleanup(s.close)
        s.sendall(("USER mailbox@%s\r\nPASS %s\r\nSTAT\r\nDELE 1\r\nQUIT\r\n"
                   % (DOMAIN1, PASSWORDS[DOMAIN1])).encode())
        s.shutdown(socket.SHUT_WR)
        lines = self.read_to_eof(s).decode().split("\r\n")
        self.assertEqual(len(lines), 7, lines)
        self.assertTrue(all(l.startswith("+OK") for l in lines[:6]), lines)
        self.assertTrue(lines[3].startswith("+OK 2 "), lines)
        self.assertEqual(len(srv.read_new(DOMAIN1)) + len(srv.read_new(DOMAIN1, "cur")), 1,
                         "QUIT after half-close must run UPDATE")


# --------------------------------------------------------------------------
# 9. Message-size abuse


class SizeAbuse(AbuseCase):
    def test_data_one_mb_over_the_limit(self):
        srv = self.server()
        limit = srv.config["smtp"]["max_message_size"]
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        for round_ in range(2):
            self.smtp_tx(r)
            line = b"o" * 998 + b"\r\n"
            body = b"Subject: huge\r\n\r\n" + line * ((limit + MB) // len(line) + 1)
            self.assertGreater(len(body), limit + MB)
            t = threading.Thread(target=r.sock.sendall, args=(body,), daemon=True)
            t.start()
            # not before the end: nothing is answered during the body
            self.assertEqual(abuseutil.pending(r.sock, 0.5), b"")
            t.join(30)
            r.send(b".\r\n")
            code, lines = r.read_reply()
            self.assertEqual(code, 552, lines)
            self.assertTrue(lines[0].startswith("5.3.4"), lines)
            self.assertEqual(srv.new_files(DOMAIN1), [])
            self.assertEqual(abuseutil.wait_tmp_empty(srv, timeout=3), [],
                             "tmp/ must be empty after the refused transaction")
        # the session goes on
        token = uuid.uuid4().hex
        self.smtp_tx(r)
        r.send(message(token) + b".\r\n")
        r.expect(250)
        files = srv.wait_new(DOMAIN1, 1)
        self.assertEqual(len(files), 1)
        self.assertIn(token.encode(), files[0][1])
        self.assert_maildir_clean(srv)

    def test_mail_from_absurd_size(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        for size in ("99999999999999999999999999", "18446744073709551616", "18446744073709551615"):
            code, lines = r.cmd("MAIL FROM:<%s> SIZE=%s" % (SENDER, size))
            self.assertIn(code, (501, 552), "SIZE=%s: %d %s" % (size, code, lines))
        r.expect(250, "MAIL FROM:<%s> SIZE=100" % SENDER)

    def test_bdat_huge_declared_then_dropped(self):
        srv = self.server()
        for declared, send, rst in ((1 << 30, 3 * MB, False), (1 << 30, 3 * MB, True),
                                    (900 * 1024, 400 * 1024, False), (900 * 1024, 400 * 1024, True)):
            r = self.raw(srv)
            r.expect(250, "EHLO client.example")
            r.expect(250, "MAIL FROM:<%s>" % SENDER)
            r.expect(250, "RCPT TO:<user@%s>" % DOMAIN1)
            r.send(b"BDAT %d LAST\r\n" % declared)
            r.send(b"Subject: bdat\r\n\r\n" + b"b" * send)
            time.sleep(0.3)
            # nothing answered mid-chunk; then the client vanishes
            self.assertEqual(abuseutil.pending(r.sock, 0.2), b"")
            if rst:
                r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            r.close()
            self.assertEqual(abuseutil.wait_tmp_empty(srv), [],
                             "BDAT %d dropped after %d: tmp/ not cleaned" % (declared, send))
            self.assertEqual(srv.new_files(DOMAIN1), [])
        # an honest BDAT still works
        token = uuid.uuid4().hex
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<user@%s>" % DOMAIN1)
        m = message(token)
        r.send(b"BDAT %d LAST\r\n" % len(m) + m)
        r.expect(250)
        self.assertEqual(len(srv.wait_new(DOMAIN1, 1)), 1)
        self.assert_maildir_clean(srv)

    def test_bdat_chunk_over_the_limit_is_read_and_refused(self):
        srv = self.server()
        limit = srv.config["smtp"]["max_message_size"]
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<user@%s>" % DOMAIN1)
        n = limit + MB
        r.send(b"BDAT %d LAST\r\n" % n)
        t = threading.Thread(target=r.sock.sendall, args=(b"Subject: x\r\n\r\n".ljust(n, b"z"),), daemon=True)
        t.start()
        t.join(30)
        code, lines = r.read_reply()
        self.assertEqual(code, 552, lines)
        self.assertTrue(lines[0].startswith("5.3.4"), lines)
        # in sync: the chunk's octets were not read as commands
        r.expect(250, "NOOP")
        time.sleep(0.2)
        self.assertEqual(srv.new_files(DOMAIN1), [])
        self.assertEqual(abuseutil.wait_tmp_empty(srv), [])


# --------------------------------------------------------------------------
# 10. Connections dropped in every phase of DATA


class DroppedMidData(AbuseCase):
    # phase: (what is sent before the drop, whether the message is complete)
    PHASES = ["after-354", "mid-body", "partial-dot", "after-dot", "mid-body-rst", "after-dot-rst",
              "after-dot-shutdown"]

    def test_drops_never_leave_partial_files(self):
        srv = self.server(edit=lambda c: c["smtp"].update(max_message_size=4 * MB))
        iterations = 50 if not ASAN else 28
        complete, partial, bodies = set(), set(), {}
        for i in range(iterations):
            phase = self.PHASES[i % len(self.PHASES)]
            token = uuid.uuid4().hex
            body = message(token, ["x" * 900] * (i * 37 % 400))
            bodies[token] = body
            r = self.raw(srv)
            r.expect(250, "EHLO client.example")
            self.smtp_tx(r)
            if phase == "after-354":
                pass
            elif phase.startswith("mid-body"):
                r.send(body[:len(body) // 2 + i])
            elif phase == "partial-dot":
                r.send(body + b".")
            else:
                r.send(body + b".\r\n")
            if phase.endswith("-rst"):
                r.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            elif phase.endswith("-shutdown"):
                r.sock.shutdown(socket.SHUT_WR)
            r.close()
            (complete if phase.startswith("after-dot") else partial).add(token)
        self.assertEqual(abuseutil.wait_tmp_empty(srv, timeout=15), [], "tmp/ not empty once idle")
        time.sleep(0.3)
        self.assertEqual(abuseutil.maildir_problems(srv), [])
        stored = {}
        for name, data in srv.read_new(DOMAIN1):
            rest = harness.split_trace(data)[1]
            tok = rest.split(b"token ", 1)[1][:32].decode()
            stored[tok] = rest
        self.assertEqual(sorted(set(stored) & partial), [], "a message without its end was delivered")
        for tok, rest in stored.items():
            self.assertIn(tok, complete)
            self.assertEqual(rest, bodies[tok], "stored message differs from what was sent")
        # the server is fine afterwards
        self.deliver(srv)


if __name__ == "__main__":
    unittest.main()
