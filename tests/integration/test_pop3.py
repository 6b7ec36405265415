"""POP3 and POP3S (SPEC 6, 7): what the mailbox owner sees with poplib,
raw sockets, curl, openssl s_client and fetchmail, byte for byte against
the Maildir files the SMTP side stored."""

import os
import poplib
import re
import smtplib
import subprocess
import tempfile
import threading
import time
import unittest
import uuid

import harness
import pop3util
from harness import DOMAIN1, DOMAIN2, HOSTNAME, PASSWORDS
from pop3util import P3, stuff, unstuff

GREETING = "+OK POP3 (mailpopbox) server %s" % HOSTNAME
CAPS = ("TOP", "UIDL", "USER", "SASL PLAIN", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "EXPIRE NEVER")


class POP3TestCase(unittest.TestCase):
    def server(self, **kw):
        return pop3util.server(self, **kw)

    def p3(self, srv, service="pop3", login=False, **kw):
        p = P3(srv.port(service), tls=(service == "pop3s"), **kw)
        self.addCleanup(p.close)
        if kw.get("greet", True):
            self.assertEqual(p.greeting, GREETING)
        if login:
            st = p.login()
            self.assertTrue(st.startswith("+OK"), "login failed: %r" % st)
        return p

    def pop_order(self, srv, tokens):
        """The tokens in the server's listing order (TOP n 0 in a session
        that deletes nothing). Tests that are not about the order use it
        (Retrieval checks the order against the delivery order)."""
        with P3(srv.port("pop3"), tls=False) as p:
            self.assertTrue(p.login().startswith("+OK"))
            out = []
            for i in range(p.stat()[0]):
                st, raw = p.multi("TOP %d 0" % (i + 1))
                self.assertTrue(st.startswith("+OK"), st)
                out += [t for t in tokens if t.encode() in raw]
            self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertEqual(sorted(out), sorted(tokens))
        return out

    def drop_files(self, srv, domain=DOMAIN1):
        """Every message file of the maildrop: [(sub, name)]."""
        return [(sub, n) for sub in ("new", "cur") for n in srv.new_files(domain, sub)]

    def file_of(self, srv, token, domain=DOMAIN1):
        got = pop3util.files_by_token(srv, [token], domain)
        self.assertIn(token, got, "no file holds token %s" % token)
        return got[token][2]

    def listing(self, p):
        st, lines = p.lines("LIST")
        self.assertTrue(st.startswith("+OK"), st)
        out = []
        for l in lines:
            n, size = l.split()
            out.append((int(n), int(size)))
        return out

    def uidls(self, p):
        st, lines = p.lines("UIDL")
        self.assertTrue(st.startswith("+OK"), st)
        return [tuple(l.split(" ", 1)) for l in lines]

    def retr(self, p, n):
        st, raw = p.multi("RETR %d" % n)
        self.assertTrue(st.startswith("+OK"), "RETR %d: %s" % (n, st))
        return raw

    def assert_retr_exact(self, p, n, data, what=""):
        raw = self.retr(p, n)
        self.assertEqual(raw, stuff(data) + b".\r\n", "RETR %d must send the stored file dot-stuffed %s" % (n, what))
        self.assertEqual(unstuff(raw), data)


# --------------------------------------------------------------------------


class Protocol(POP3TestCase):
    def test_greeting_capa_and_stls_advertising(self):
        srv = self.server()
        p = self.p3(srv)
        caps = p.capa()
        for c in CAPS + ("STLS",):
            self.assertIn(c, caps, "CAPA must list %s: %s" % (c, caps))
        self.assertTrue(any(c.startswith("IMPLEMENTATION ") for c in caps), caps)
        self.assertTrue(p.stls().startswith("+OK"))
        caps = p.capa()
        self.assertNotIn("STLS", caps, "no STLS once TLS is on")
        for c in CAPS:
            self.assertIn(c, caps, "CAPA after STLS must list %s: %s" % (c, caps))
        self.assertTrue(p.cmd("STLS").startswith("-ERR"), "a second STLS must be refused")
        self.assertTrue(p.login().startswith("+OK"))
        self.assertEqual(p.stat(), (0, 0))
        self.assertNotIn("STLS", p.capa(), "no STLS in TRANSACTION after TLS")
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertTrue(p.closed())
        # pop3s: TLS from the start, no STLS
        s = self.p3(srv, "pop3s")
        caps = s.capa()
        self.assertNotIn("STLS", caps)
        for c in CAPS:
            self.assertIn(c, caps)
        self.assertTrue(s.cmd("STLS").startswith("-ERR"))
        self.assertTrue(s.login().startswith("+OK"))
        self.assertTrue(s.cmd("QUIT").startswith("+OK"))

    def test_no_certificate_no_stls(self):
        srv = self.server(tls=False)
        p = self.p3(srv)
        caps = p.capa()
        self.assertNotIn("STLS", caps, "STLS only when a certificate exists")
        for c in CAPS:
            self.assertIn(c, caps)
        self.assertTrue(p.cmd("STLS").startswith("-ERR"))
        self.assertTrue(p.login().startswith("+OK"), "session goes on after the refused STLS")
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))

    def test_errors_long_lines_and_state(self):
        srv = self.server(tls=False)
        pop3util.deliver(srv, 2)
        p = self.p3(srv)
        self.assertTrue(p.cmd("FROB").startswith("-ERR"), "unknown command")
        self.assertTrue(p.cmd("STAT").startswith("-ERR"), "STAT before login")
        self.assertTrue(p.cmd("RETR 1").startswith("-ERR"), "RETR before login")
        # 256 octets with CRLF: too long; the session goes on
        self.assertTrue(p.cmd("USER " + "a" * 249).startswith("-ERR"), "a 256-octet line must be refused")
        self.assertTrue(p.cmd("NOOP").startswith("-ERR"), "NOOP is a TRANSACTION command")
        # 255 octets with CRLF: accepted as a command
        self.assertTrue(p.cmd("USER " + "a" * 248).startswith("+OK"), "a 255-octet line is allowed")
        # a very long line (several reads) is one error, not several
        p.send("X" * 5000 + "\r\nCAPA\r\n")
        self.assertTrue(p.readline().startswith("-ERR"))
        st = p.readline()
        self.assertTrue(st.startswith("+OK"), "CAPA after an over-long line: %r" % st)
        p.read_multi()
        self.assertTrue(p.login().startswith("+OK"))
        self.assertTrue(p.cmd("USER x").startswith("-ERR"), "USER in TRANSACTION")
        self.assertTrue(p.cmd("RETR 3").startswith("-ERR"), "no message 3")
        self.assertTrue(p.cmd("RETR 0").startswith("-ERR"), "no message 0")
        self.assertTrue(p.cmd("RETR x").startswith("-ERR"))
        self.assertTrue(p.cmd("LIST 99999999999999999999").startswith("-ERR"))
        self.assertTrue(p.cmd("TOP 1").startswith("-ERR"), "TOP needs two arguments")
        self.assertTrue(p.cmd("NOOP " + "n" * 300).startswith("-ERR"))
        self.assertTrue(p.cmd("noop").startswith("+OK"), "commands are case-insensitive; session goes on")
        self.assertEqual(p.stat()[0], 2)
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertEqual(len(srv.new_files()), 2)

    def test_pipelining_replies_in_order(self):
        srv = self.server(tls=False)
        tokens = self.pop_order(srv, pop3util.deliver(srv, 2))
        files = pop3util.files_by_token(srv, tokens)
        d1, d2 = files[tokens[0]][2], files[tokens[1]][2]
        p = self.p3(srv)
        p.send("USER mailbox@%s\r\nPASS %s\r\nSTAT\r\nLIST\r\nRETR 2\r\nLIST 1\r\nBOGUS\r\nUIDL 1\r\n"
               "TOP 1 0\r\nNOOP\r\nDELE 2\r\nSTAT\r\nRSET\r\nQUIT\r\n" % (DOMAIN1, PASSWORDS[DOMAIN1]))
        self.assertTrue(p.readline().startswith("+OK"))  # USER
        self.assertTrue(p.readline().startswith("+OK"))  # PASS
        self.assertEqual(p.readline(), "+OK 2 %d" % (len(d1) + len(d2)))
        self.assertTrue(p.readline().startswith("+OK"))
        self.assertEqual(p.read_multi(), ("1 %d\r\n2 %d\r\n.\r\n" % (len(d1), len(d2))).encode())
        self.assertTrue(p.readline().startswith("+OK"))
        self.assertEqual(p.read_multi(), stuff(d2) + b".\r\n")
        self.assertEqual(p.readline(), "+OK 1 %d" % len(d1))
        self.assertTrue(p.readline().startswith("-ERR"))
        self.assertRegex(p.readline(), r"^\+OK 1 [\x21-\x7e]{1,70}$")
        self.assertTrue(p.readline().startswith("+OK"))
        self.assertEqual(p.read_multi(), stuff(d1[:d1.index(b"\r\n\r\n") + 4]) + b".\r\n")
        self.assertTrue(p.readline().startswith("+OK"))  # NOOP
        self.assertTrue(p.readline().startswith("+OK"))  # DELE
        self.assertEqual(p.readline(), "+OK 1 %d" % len(d1))
        self.assertTrue(p.readline().startswith("+OK"))  # RSET
        self.assertTrue(p.readline().startswith("+OK"))  # QUIT
        self.assertTrue(p.closed())
        self.assertEqual(len(srv.new_files()), 2, "RSET before QUIT keeps both")


# --------------------------------------------------------------------------


def body_with_dots():
    return [".", "..", ".foo", "...", "a.b", " .lead space", "", ".", "x" * 300, ".bar.", "end"]


class Retrieval(POP3TestCase):
    def test_stat_list_retr_top_exact(self):
        srv = self.server(tls=False)
        bodies = [[], ["one line"], body_with_dots(), ["l%d" % i for i in range(50)], ["", "", "after blanks"]]
        tokens = []
        for b in bodies:
            tokens += pop3util.deliver(srv, 1, body_lines=b)
        files = pop3util.files_by_token(srv, tokens)
        self.assertEqual(len(files), 5)
        for t in tokens:
            sub, name, data = files[t]
            self.assertEqual(sub, "new")
            self.assertEqual(harness.size_suffix(name), len(data))
        sizes = [len(files[t][2]) for t in tokens]
        p = self.p3(srv, login=True)
        self.assertEqual(p.stat(), (5, sum(sizes)), "STAT must count the stored octets exactly")
        self.assertEqual(self.listing(p), [(i + 1, s) for i, s in enumerate(sizes)],
                         "LIST: exact file sizes, oldest (first delivered) first; files: %s"
                         % [files[t][1] for t in tokens])
        for i, t in enumerate(tokens):
            self.assertEqual(p.cmd("LIST %d" % (i + 1)), "+OK %d %d" % (i + 1, sizes[i]))
        for i, t in enumerate(tokens):
            self.assert_retr_exact(p, i + 1, files[t][2], "(message %s)" % t)
        # TOP n k: the header, the blank line, k lines of the body
        for i, t in enumerate(tokens):
            data = files[t][2]
            hend = data.index(b"\r\n\r\n") + 4
            body_lines = data[hend:].split(b"\r\n")[:-1]
            for k in (0, 1, 3, 10000):
                st, raw = p.multi("TOP %d %d" % (i + 1, k))
                self.assertTrue(st.startswith("+OK"), st)
                want = data[:hend] + b"".join(l + b"\r\n" for l in body_lines[:k])
                self.assertEqual(raw, stuff(want) + b".\r\n", "TOP %d %d" % (i + 1, k))
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertEqual(len(srv.new_files()), 5, "RETR and TOP delete nothing")

    def test_dot_stuffing_round_trip(self):
        srv = self.server(tls=False)
        token = uuid.uuid4().hex
        # Body: lines ".", "..", ".foo", "...", and a line "." at the very end.
        msg = ("From: Carol <%s>\r\nTo: x@%s\r\nSubject: dots %s\r\n\r\n.\r\n..\r\n.foo\r\n...\r\nmid\r\n"
               ".\r\n.\r\n" % (pop3util.SENDER, DOMAIN1, token)).encode()
        pop3util.deliver_messages(srv, [msg])      # smtplib dot-stuffs on the way in
        data = self.file_of(srv, token)
        _, rest = harness.split_trace(data)
        self.assertEqual(rest, msg, "the stored file holds the unstuffed message")
        self.assertTrue(data.endswith(b"\r\nmid\r\n.\r\n.\r\n"))
        p = self.p3(srv, login=True)
        raw = self.retr(p, 1)
        self.assertIn(b"\r\n\r\n..\r\n...\r\n..foo\r\n....\r\nmid\r\n..\r\n..\r\n.\r\n", raw,
                      "RETR must dot-stuff every line starting with '.'")
        self.assertTrue(raw.endswith(b"\r\n..\r\n.\r\n"))
        self.assertEqual(raw, stuff(data) + b".\r\n")
        self.assertEqual(unstuff(raw), data, "unstuffed RETR must be the stored file exactly")
        self.assertEqual(harness.split_trace(unstuff(raw))[1], msg, "round trip SMTP in, POP3 out")
        st, raw = p.multi("TOP 1 2")
        self.assertTrue(st.startswith("+OK"))
        self.assertTrue(raw.endswith(b"\r\n\r\n..\r\n...\r\n.\r\n"), raw[-40:])
        # poplib undoes the stuffing too
        p.cmd("QUIT")
        c = poplib.POP3("127.0.0.1", srv.port("pop3"), timeout=10)
        try:
            c.user(pop3util.user())
            c.pass_(PASSWORDS[DOMAIN1])
            _, lines, octets = c.retr(1)
            self.assertEqual(b"\r\n".join(lines) + b"\r\n", data)
            c.quit()
        finally:
            c.close()

    def test_snapshot_at_login_new_mail_next_session(self):
        srv = self.server(tls=False)
        first = pop3util.deliver(srv, 1)
        p = self.p3(srv, login=True)
        self.assertEqual(p.stat()[0], 1)
        later = pop3util.deliver(srv, 1)  # delivery into a locked maildrop works
        self.assertEqual(p.stat()[0], 1, "the listing is the snapshot at login")
        self.assertTrue(p.cmd("RETR 2").startswith("-ERR"))
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        q = self.p3(srv, login=True)
        self.assertEqual(q.stat()[0], 2)
        self.assertIn(later[0].encode(), unstuff(self.retr(q, 2)))
        self.assertIn(first[0].encode(), unstuff(self.retr(q, 1)))
        q.cmd("QUIT")

    def test_oldest_first_within_one_second(self):
        """Two messages delivered in the same second, the second one after
        the microseconds in the Maildir name gain a digit (M99999 ->
        M100000): the older one must still be listed first."""
        srv = self.server(tls=False)
        c = smtplib.SMTP("127.0.0.1", srv.port("smtp"), local_hostname="client.example", timeout=20)
        self.addCleanup(c.close)

        def send():
            t = uuid.uuid4().hex
            c.sendmail(pop3util.SENDER, ["u@" + DOMAIN1], pop3util.message(t))
            name = pop3util.files_by_token(srv, [t])[t][1]
            m = re.match(r"(\d+)\.M(\d+)P", name)
            self.assertIsNotNone(m, "unexpected Maildir name %s" % name)
            return t, name, int(m.group(1)), int(m.group(2))

        tokens, names, arranged = [], [], False
        for attempt in range(8):
            time.sleep((1.0 - time.time() % 1) % 1)          # a second starts
            t0, n0, s0, us0 = send()
            tokens.append(t0), names.append(n0)
            if us0 >= 100000:
                continue
            wait = s0 + 0.15 - time.time()
            if wait <= 0:
                continue
            time.sleep(wait)
            t1, n1, s1, us1 = send()
            tokens.append(t1), names.append(n1)
            if s1 == s0 and us1 >= 100000:
                arranged = True
                break
        c.quit()
        if not arranged:
            self.skipTest("could not deliver on both sides of .100000 s within one second: %s" % names)
        p = self.p3(srv, login=True)
        order = []
        for i in range(len(tokens)):
            st, raw = p.multi("TOP %d 0" % (i + 1))
            order += [t for t in tokens if t.encode() in raw]
        p.cmd("QUIT")
        self.assertEqual(order, tokens, "POP3 must list oldest first (delivery order); stored names in "
                         "delivery order: %s" % names)


class Large(POP3TestCase):
    def test_20mib_message_exact_and_bounded_memory(self):
        srv = self.server(tls=False, max_message_size=41943040)
        token = uuid.uuid4().hex
        line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuv"
        chunk = b"".join((b"." if i % 7 == 0 else b"") + line + b"\r\n" for i in range(1024))
        body = chunk * (20 * 1024 * 1024 // len(chunk) + 1)
        msg = ("From: <%s>\r\nSubject: big %s\r\n\r\n" % (pop3util.SENDER, token)).encode() + body
        self.assertGreater(len(msg), 20 * 1024 * 1024)
        pop3util.deliver_messages(srv, [msg])
        data = self.file_of(srv, token)
        self.assertEqual(harness.split_trace(data)[1], msg)
        pid = srv.proc.pid
        measure = not harness.is_asan()
        p = self.p3(srv, login=True)
        if measure:
            time.sleep(0.3)
            reset = pop3util.reset_peak_rss(pid)
            base = pop3util.proc_status(pid, "VmRSS" if reset else "VmHWM")
        self.assertEqual(p.cmd("LIST 1"), "+OK 1 %d" % len(data))
        p.send("RETR 1\r\n")
        time.sleep(1.0)   # a slow reader: the server must wait, not buffer the message
        st = p.readline()
        self.assertTrue(st.startswith("+OK"), st)
        raw = p.read_multi()
        self.assertEqual(len(raw), len(stuff(data)) + 3)
        self.assertTrue(raw == stuff(data) + b".\r\n", "20 MiB RETR must be the stored file, dot-stuffed")
        self.assertEqual(unstuff(raw), data)
        if measure:
            peak = pop3util.proc_status(pid, "VmHWM")
            grown = (peak - base) * 1024
            self.assertLess(grown, 8 * 1024 * 1024, "server peak RSS grew by %d KiB while sending a %d KiB "
                            "message (baseline %d KiB, peak %d KiB)" % (grown // 1024, len(data) // 1024,
                                                                         base, peak))
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))


    def test_plain_message_is_spliced_exactly(self):
        """A stored message with no line that starts with "." (and a final
        CRLF) is named plain (",D=0") and RETR sends the file as it is
        (splice, no user-space copy); one with such a line is not, and goes
        through the stuffer. Both arrive exact, with TLS too."""
        srv = self.server(tls=True, max_message_size=41943040,
                          edit=lambda cfg: cfg.update(log_level="debug"))
        line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopqrstuv\r\n"
        tokens = [uuid.uuid4().hex, uuid.uuid4().hex]
        plain = ("Subject: plain %s\r\n\r\n" % tokens[0]).encode() + line * 40000
        dotted = ("Subject: dotted %s\r\n\r\n" % tokens[1]).encode() + line * 20000 + b".x\r\n" + line
        pop3util.deliver_messages(srv, [plain, dotted])
        got = pop3util.files_by_token(srv, tokens)
        names = {t: got[t][1] for t in tokens}
        self.assertRegex(names[tokens[0]], r",D=0,S=\d+$")
        self.assertNotIn(",D=0", names[tokens[1]])
        for service in ("pop3", "pop3s"):
            p = self.p3(srv, service, login=True)
            order = self.listing(p)
            for n in range(1, len(order) + 1):
                p.send("RETR %d\r\n" % n)
                st = p.readline()
                self.assertTrue(st.startswith("+OK"), st)
                raw = p.read_multi()
                data = unstuff(raw)
                tok = tokens[0] if tokens[0].encode() in data[:4096] else tokens[1]
                self.assertEqual(data, got[tok][2], "RETR %d over %s" % (n, service))
            self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        modes = re.findall(r"event=retr .*size=(\d+) mode=(\w+)", srv.stderr())
        by_size = {}
        for size, mode in modes:
            by_size.setdefault(int(size), set()).add(mode)
        self.assertEqual(by_size.get(len(got[tokens[0]][2])), {"splice", "stream"},
                         "plain: splice over plaintext, stream over user-space TLS: %s" % modes)
        self.assertEqual(by_size.get(len(got[tokens[1]][2])), {"stream"}, modes)


# --------------------------------------------------------------------------


class Uidl(POP3TestCase):
    def test_uidl_stable_across_sessions_restart_and_moves(self):
        srv = self.server(tls=False)
        tokens = self.pop_order(srv, pop3util.deliver(srv, 4))
        p = self.p3(srv, login=True)
        u1 = self.uidls(p)
        self.assertEqual([int(n) for n, _ in u1], [1, 2, 3, 4])
        uids = [u for _, u in u1]
        for u in uids:
            self.assertRegex(u, r"^[\x21-\x7e]{1,70}$", "UIDL: 1..70 chars in 0x21..0x7E")
        self.assertEqual(len(set(uids)), 4, "UIDs must be unique")
        for i, u in enumerate(uids):
            self.assertEqual(p.cmd("UIDL %d" % (i + 1)), "+OK %d %s" % (i + 1, u))
        by_token = {}
        for i in range(4):   # (the listing order is Retrieval's business)
            data = unstuff(self.retr(p, i + 1))
            by_token.update({t: uids[i] for t in tokens if t.encode() in data})
        self.assertEqual(len(by_token), 4)
        p.cmd("QUIT")
        q = self.p3(srv, login=True)
        self.assertEqual(self.uidls(q), u1, "UIDL must be the same in the next session")
        q.cmd("QUIT")
        srv.restart()
        r = self.p3(srv, login=True)
        self.assertEqual(self.uidls(r), u1, "UIDL must survive a server restart")
        # delete the first: the others keep their UIDs under new numbers
        self.assertTrue(r.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(r.cmd("QUIT").startswith("+OK"))
        # another Maildir reader moves one to cur/ with flags
        files = pop3util.files_by_token(srv, tokens[1:])
        sub, name, _ = files[tokens[2]]
        md = srv.maildrop()
        os.rename(os.path.join(md, "new", name), os.path.join(md, "cur", name + ":2,S"))
        s = self.p3(srv, login=True)
        got = self.uidls(s)
        self.assertEqual([n for n, _ in got], ["1", "2", "3"])
        self.assertEqual(sorted(u for _, u in got), sorted(by_token[t] for t in tokens[1:]),
                         "UIDs stay after a DELE of another message and after a move to cur/")
        for i in range(3):
            data = unstuff(self.retr(s, i + 1))
            t = [t for t in tokens if t.encode() in data][0]
            self.assertEqual(got[i][1], by_token[t], "message %s keeps its UID" % t)
        s.cmd("QUIT")


# --------------------------------------------------------------------------


class Locking(POP3TestCase):
    def test_in_use_same_server(self):
        srv = self.server(tls=False)
        pop3util.deliver(srv, 1)
        a = self.p3(srv, login=True)
        b = self.p3(srv)
        st = b.login()
        self.assertTrue(st.startswith("-ERR [IN-USE]"), "second session: %r" % st)
        c = self.p3(srv)
        st = c.auth_plain()
        self.assertTrue(st.startswith("-ERR [IN-USE]"), "second session via AUTH PLAIN: %r" % st)
        self.assertTrue(a.cmd("QUIT").startswith("+OK"))
        self.assertTrue(a.closed())
        d = self.p3(srv)
        self.assertTrue(d.login().startswith("+OK"), "after the first QUIT, login works")
        self.assertEqual(d.stat()[0], 1)
        # an abrupt disconnect releases the lock too
        d.abort()
        e = self.p3(srv)
        ok = pop3util.wait_until(lambda: self._try_login(srv), timeout=5)
        self.assertTrue(ok, "the lock of a dropped session must be released")
        e.close()

    def _try_login(self, srv):
        with P3(srv.port("pop3")) as p:
            st = p.login()
            if st.startswith("+OK"):
                p.cmd("QUIT")
                return True
            self.assertTrue(st.startswith("-ERR [IN-USE]"), st)
            return False

    def test_lock_released_when_quit_is_answered(self):
        """A client that logs in again as soon as QUIT said +OK must get
        in: the session is over, its lock must be gone. Other sessions
        stream a big message meanwhile (a busy server)."""
        srv = self.server(tls=False, max_message_size=41943040)
        big = b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * (4 * 1024 * 1024 // 80)
        pop3util.deliver_messages(srv, [big], domain=DOMAIN2)
        pop3util.deliver(srv, 1)
        stop = threading.Event()

        def busy():
            while not stop.is_set():
                with P3(srv.port("pop3")) as b:
                    b.login(DOMAIN2)
                    for _ in range(5):
                        b.multi("RETR 1")
                    b.cmd("QUIT")

        threads = [threading.Thread(target=busy) for _ in range(2)]
        for t in threads:
            t.start()
        refused, n = [], 0
        try:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                with P3(srv.port("pop3")) as p:
                    st = p.login()
                    n += 1
                    if not st.startswith("+OK"):
                        refused.append(st)
                        time.sleep(0.05)
                        continue
                    self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(refused, [], "%d of %d logins right after the previous session's QUIT +OK were "
                         "refused" % (len(refused), n))

    def test_in_use_across_two_processes(self):
        srv = self.server(tls=False)
        tokens = self.pop_order(srv, pop3util.deliver(srv, 2))
        srv2 = pop3util.second_server(self, srv, tls=False)
        self.assertNotEqual(srv.port("pop3"), srv2.port("pop3"))
        a = self.p3(srv, login=True)
        b = self.p3(srv2)
        st = b.login()
        self.assertTrue(st.startswith("-ERR [IN-USE]"), "a session on another process: %r" % st)
        self.assertTrue(a.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(a.cmd("QUIT").startswith("+OK"))
        c = self.p3(srv2)
        self.assertTrue(c.login().startswith("+OK"), "after the first QUIT the other process lets us in")
        self.assertEqual(c.stat()[0], 1)
        self.assertIn(tokens[1].encode(), unstuff(self.retr(c, 1)))
        d = self.p3(srv)
        st = d.login()
        self.assertTrue(st.startswith("-ERR [IN-USE]"), "and now the first process refuses: %r" % st)
        c.cmd("QUIT")


# --------------------------------------------------------------------------


class Deletion(POP3TestCase):
    def test_dele_quit_removes(self):
        srv = self.server(tls=False)
        tokens = self.pop_order(srv, pop3util.deliver(srv, 3))
        files = pop3util.files_by_token(srv, tokens)
        p = self.p3(srv, login=True)
        self.assertTrue(p.cmd("DELE 2").startswith("+OK"))
        self.assertEqual(len(srv.new_files()), 3, "DELE only marks")
        size2 = len(files[tokens[1]][2])
        total = sum(len(files[t][2]) for t in tokens)
        self.assertEqual(p.stat(), (2, total - size2), "STAT leaves out deleted messages")
        for c in ("RETR 2", "DELE 2", "LIST 2", "TOP 2 0", "UIDL 2"):
            self.assertTrue(p.cmd(c).startswith("-ERR"), "%s of a deleted message must be -ERR" % c)
        self.assertEqual([n for n, _ in self.listing(p)], [1, 3])
        self.assertEqual([n for n, _ in self.uidls(p)], ["1", "3"])
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertTrue(p.closed())
        left = srv.new_files()
        self.assertEqual(len(left), 2)
        self.assertNotIn(files[tokens[1]][1], left, "QUIT must remove the marked file from new/")
        q = self.p3(srv, login=True)
        self.assertEqual(q.stat()[0], 2)
        for i, t in enumerate((tokens[0], tokens[2])):
            self.assert_retr_exact(q, i + 1, files[t][2])
        for n in (1, 2):
            q.cmd("DELE %d" % n)
        self.assertTrue(q.cmd("QUIT").startswith("+OK"))
        self.assertEqual(self.drop_files(srv), [], "everything deleted")

    def test_quit_removes_hundreds_in_parallel_ranges(self):
        """Many deletions (QUIT removes them in ranges on several threads):
        every marked file goes, every unmarked one stays, +OK only after."""
        srv = self.server(tls=False)
        order = self.pop_order(srv, pop3util.deliver(srv, 400))
        p = self.p3(srv, login=True)
        self.assertEqual(p.stat()[0], 400)
        keep = {7, 200, 399}
        p.send("".join("DELE %d\r\n" % n for n in range(1, 401) if n not in keep))
        for _ in range(400 - len(keep)):
            self.assertTrue(p.readline().startswith("+OK"))
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        left = srv.new_files()
        self.assertEqual(len(left), len(keep), "exactly the unmarked messages stay")
        kept = {order[n - 1] for n in keep}
        left_tokens = set(pop3util.files_by_token(srv, order))
        self.assertEqual(left_tokens, kept, "the unmarked messages, and only they, remain")
        q = self.p3(srv, login=True)
        self.assertEqual(q.stat()[0], len(keep))
        self.assertTrue(q.cmd("QUIT").startswith("+OK"))

    def test_dele_then_abrupt_disconnect_keeps_mail(self):
        srv = self.server(tls=False)
        pop3util.deliver(srv, 3)
        before = srv.new_files()
        for rst in (False, True):
            p = self.p3(srv, login=True)
            for n in (1, 2, 3):
                self.assertTrue(p.cmd("DELE %d" % n).startswith("+OK"))
            p.abort(rst=rst)
            # the server notices the close; the next login sees everything
            ok = pop3util.wait_until(lambda: self._login_stat(srv), timeout=5)
            self.assertEqual(ok, 3, "a session ending without QUIT removes nothing (rst=%s)" % rst)
            self.assertEqual(srv.new_files(), before)
        # QUIT sent, connection closed at once without reading the answer:
        p = self.p3(srv, login=True)
        p.send("DELE 1\r\nRSET\r\n")
        p.readline(), p.readline()
        p.abort()
        self.assertEqual(pop3util.wait_until(lambda: self._login_stat(srv), timeout=5), 3)

    def _login_stat(self, srv):
        with P3(srv.port("pop3")) as p:
            st = p.login()
            if not st.startswith("+OK"):
                return 0
            n = p.stat()[0]
            p.cmd("QUIT")   # nothing marked: removes nothing
            return n

    def test_dele_rset_quit_keeps(self):
        srv = self.server(tls=False)
        pop3util.deliver(srv, 2)
        before = srv.new_files()
        p = self.p3(srv, login=True)
        self.assertTrue(p.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(p.cmd("DELE 2").startswith("+OK"))
        self.assertEqual(p.stat()[0], 0)
        self.assertTrue(p.cmd("RSET").startswith("+OK"))
        self.assertEqual(p.stat()[0], 2, "RSET unmarks")
        self.assertTrue(p.cmd("RETR 1").startswith("+OK"))
        p.read_multi()
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertEqual(srv.new_files(), before)

    def test_message_removed_by_another_tool(self):
        srv = self.server(tls=False)
        tokens = self.pop_order(srv, pop3util.deliver(srv, 3))
        files = pop3util.files_by_token(srv, tokens)
        p = self.p3(srv, login=True)
        os.unlink(os.path.join(srv.maildrop(), "new", files[tokens[1]][1]))
        self.assertTrue(p.cmd("RETR 2").startswith("-ERR"), "RETR of a vanished file")
        self.assertTrue(p.cmd("TOP 2 1").startswith("-ERR"), "TOP of a vanished file")
        self.assert_retr_exact(p, 3, files[tokens[2]][2], "after a vanished one")
        self.assert_retr_exact(p, 1, files[tokens[0]][2])
        self.assertTrue(p.cmd("DELE 2").startswith("+OK"))
        self.assertTrue(p.cmd("DELE 3").startswith("+OK"))
        self.assertTrue(p.cmd("QUIT").startswith("+OK"), "removing an already-gone file is not a failure")
        self.assertEqual(srv.new_files(), [files[tokens[0]][1]])

    def test_message_moved_to_cur_by_another_tool(self):
        srv = self.server(tls=False)
        tokens = self.pop_order(srv, pop3util.deliver(srv, 2))
        files = pop3util.files_by_token(srv, tokens)
        md = srv.maildrop()
        p = self.p3(srv, login=True)
        for t in tokens:
            name = files[t][1]
            os.rename(os.path.join(md, "new", name), os.path.join(md, "cur", name + ":2,S"))
        self.assert_retr_exact(p, 2, files[tokens[1]][2], "after a move to cur/ with :2,S")
        st, raw = p.multi("TOP 1 0")
        self.assertTrue(st.startswith("+OK"), st)
        self.assertTrue(p.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        self.assertEqual(srv.new_files(), [])
        self.assertEqual(srv.new_files(DOMAIN1, "cur"), [files[tokens[1]][1] + ":2,S"],
                         "DELE+QUIT removes the moved file from cur/ and only it")


# --------------------------------------------------------------------------


class Auth(POP3TestCase):
    def test_failures_answer_auth_after_a_delay(self):
        srv = self.server(tls=False)
        results = {}

        def attempt(key, fn):
            with P3(srv.port("pop3")) as p:
                t0 = time.monotonic()
                st = fn(p)
                results[key] = (st, time.monotonic() - t0, p)
                if key == "wrong-password":
                    # a second failure on the same connection waits longer,
                    # the right password then works
                    t1 = time.monotonic()
                    st2 = p.login(password="still-wrong")
                    results["second"] = (st2, time.monotonic() - t1)
                    results["then-ok"] = p.login()
                    p.cmd("QUIT")

        cases = {
            "wrong-password": lambda p: p.login(password="wrong-" + PASSWORDS[DOMAIN1]),
            "unknown-domain": lambda p: p.login(domain="nowhere.test", password="x"),
            "other-local-part": lambda p: (p.cmd("USER alice@" + DOMAIN1),
                                           p.cmd("PASS " + PASSWORDS[DOMAIN1]))[1],
            "plain-wrong": lambda p: p.auth_plain(password="nope"),
        }
        threads = [threading.Thread(target=attempt, args=(k, f)) for k, f in cases.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for k in cases:
            st, dt, _ = results[k]
            self.assertTrue(st.startswith("-ERR [AUTH]"), "%s: %r" % (k, st))
            self.assertGreaterEqual(dt, 0.8, "%s: failure answered after %.2fs, expected a delay" % (k, dt))
        st2, dt2 = results["second"]
        self.assertTrue(st2.startswith("-ERR [AUTH]"), st2)
        self.assertGreater(dt2, results["wrong-password"][1] + 0.5, "the delay must grow")
        self.assertTrue(results["then-ok"].startswith("+OK"), results["then-ok"])
        log = srv.stderr()
        self.assertNotIn("wrong-" + PASSWORDS[DOMAIN1], log, "passwords are never logged")
        self.assertNotIn(harness.plain_auth(pop3util.user(), "nope"), log)

    def test_auth_plain_initial_and_continuation(self):
        srv = self.server(tls=False)
        pop3util.deliver(srv, 1)
        p = self.p3(srv)
        st, lines = p.lines("AUTH")
        self.assertTrue(st.startswith("+OK"), st)
        self.assertIn("PLAIN", lines)
        self.assertTrue(p.auth_plain(initial=True).startswith("+OK"))
        self.assertEqual(p.stat()[0], 1)
        self.assertTrue(p.cmd("QUIT").startswith("+OK"))
        q = self.p3(srv)
        self.assertTrue(q.cmd("AUTH PLAIN").startswith("+"))
        self.assertTrue(q.cmd("*").startswith("-ERR"), "'*' cancels")
        self.assertTrue(q.cmd("AUTH FOO").startswith("-ERR"), "unknown mechanism")
        self.assertTrue(q.auth_plain(initial=False).startswith("+OK"), "AUTH PLAIN with continuation")
        self.assertEqual(q.stat()[0], 1)
        self.assertTrue(q.cmd("QUIT").startswith("+OK"))

    def test_plaintext_auth_refused_before_tls(self):
        srv = self.server(plaintext=False)
        pop3util.deliver(srv, 1)
        p = self.p3(srv)
        self.assertIn("STLS", p.capa())
        st = p.cmd("USER " + pop3util.user())
        if st.startswith("+OK"):
            st = p.cmd("PASS " + PASSWORDS[DOMAIN1])
        self.assertTrue(st.startswith("-ERR"), "USER/PASS before STLS must be refused: %r" % st)
        self.assertTrue(p.auth_plain().startswith("-ERR"), "AUTH PLAIN before STLS must be refused")
        self.assertTrue(p.cmd("STAT").startswith("-ERR"), "not logged in")
        self.assertTrue(p.stls().startswith("+OK"))
        caps = p.capa()
        self.assertIn("USER", caps)
        self.assertIn("SASL PLAIN", caps)
        self.assertTrue(p.login().startswith("+OK"), "after STLS, USER/PASS works")
        self.assertEqual(p.stat()[0], 1)
        p.cmd("QUIT")
        self.assertTrue(p.closed())
        q = self.p3(srv)
        self.assertTrue(q.stls().startswith("+OK"))
        self.assertTrue(q.auth_plain().startswith("+OK"), "after STLS, AUTH PLAIN works")
        q.cmd("QUIT")
        self.assertTrue(q.closed())
        s = self.p3(srv, "pop3s")
        self.assertTrue(s.login().startswith("+OK"), "pop3s is TLS: login works")
        s.cmd("QUIT")
        self.assertNotIn(PASSWORDS[DOMAIN1], srv.stderr())


# --------------------------------------------------------------------------


class Clients(POP3TestCase):
    def test_tls_session_resumption(self):
        """Session tickets: a client that comes back resumes its TLS session
        (TLS 1.2 and 1.3) instead of a full handshake."""
        import socket
        import ssl
        srv = self.server(tls=True)
        for ver in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.minimum_version = ctx.maximum_version = ver
            a = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port("pop3s")), timeout=10))
            self.assertTrue(a.recv(200).startswith(b"+OK"))
            sess = a.session
            a.sendall(b"QUIT\r\n")
            a.recv(200)
            a.close()
            b = ctx.wrap_socket(socket.create_connection(("127.0.0.1", srv.port("pop3s")), timeout=10),
                                session=sess)
            self.assertTrue(b.recv(200).startswith(b"+OK"))
            self.assertTrue(b.session_reused, "%s session not resumed" % ver)
            b.close()

    def setUp(self):
        self.srv = self.server()
        self.tokens = self.pop_order(self.srv, pop3util.deliver(self.srv, 3, body_lines=[".", "..dots", "x"]))
        self.files = pop3util.files_by_token(self.srv, self.tokens)
        self.data = [self.files[t][2] for t in self.tokens]

    def test_poplib_stls(self):
        c = poplib.POP3("127.0.0.1", self.srv.port("pop3"), timeout=15)
        try:
            self.assertEqual(c.getwelcome().decode(), GREETING)
            self.assertIn("STLS", c.capa())
            c.stls(context=harness.client_context())
            self.assertNotIn("STLS", c.capa())
            c.user(pop3util.user())
            c.pass_(PASSWORDS[DOMAIN1])
            self.assertEqual(c.stat(), (3, sum(len(d) for d in self.data)))
            _, lines, _ = c.list()
            self.assertEqual(lines, [("%d %d" % (i + 1, len(d))).encode() for i, d in enumerate(self.data)])
            for i, d in enumerate(self.data):
                _, lines, octets = c.retr(i + 1)
                self.assertEqual(b"\r\n".join(lines) + b"\r\n", d)
            c.dele(1)
            c.quit()
        finally:
            c.close()
        self.assertEqual(len(self.srv.new_files()), 2)

    def test_poplib_pop3_ssl(self):
        c = poplib.POP3_SSL("127.0.0.1", self.srv.port("pop3s"), context=harness.client_context(), timeout=15)
        try:
            self.assertEqual(c.getwelcome().decode(), GREETING)
            c.user(pop3util.user())
            c.pass_(PASSWORDS[DOMAIN1])
            _, uids, _ = c.uidl()
            self.assertEqual(len(uids), 3)
            _, lines, _ = c.top(2, 1)
            d = self.data[1]
            hend = d.index(b"\r\n\r\n")
            self.assertEqual(lines, d[:hend].split(b"\r\n") + [b"", d[hend + 4:].split(b"\r\n")[0]])
            for i, d in enumerate(self.data):
                _, lines, _ = c.retr(i + 1)
                self.assertEqual(b"\r\n".join(lines) + b"\r\n", d)
                c.dele(i + 1)
            c.quit()
        finally:
            c.close()
        self.assertEqual(self.drop_files(self.srv), [])

    def test_openssl_s_client_starttls(self):
        harness.require_tool("openssl")
        script = "CAPA\nUSER %s\nPASS %s\nSTAT\nLIST\nRETR 1\nQUIT\n" % (pop3util.user(), PASSWORDS[DOMAIN1])
        p = subprocess.run(["openssl", "s_client", "-starttls", "pop3", "-connect",
                            "127.0.0.1:%d" % self.srv.port("pop3"), "-quiet", "-crlf", "-ign_eof"],
                           input=script.encode(), capture_output=True, timeout=30)
        out = p.stdout
        total = sum(len(d) for d in self.data)
        self.assertIn(("+OK 3 %d\r\n" % total).encode(), out, "STAT over s_client -starttls pop3: %r" % out[:2000])
        self.assertNotIn(b"\r\nSTLS\r\n", out, "no STLS in CAPA after STLS")
        self.assertIn(b"\r\nSASL PLAIN\r\n", out)
        self.assertIn(stuff(self.data[0]) + b".\r\n", out, "RETR 1 through s_client")
        self.assertIn(b"signing off", out)
        self.assertEqual(len(self.srv.new_files()), 3)

    def test_curl_pop3_and_pop3s(self):
        harness.require_tool("curl")
        cred = "%s:%s" % (pop3util.user(), PASSWORDS[DOMAIN1])
        port = self.srv.port("pop3")
        lst = subprocess.run(["curl", "-sS", "--max-time", "20", "pop3://127.0.0.1:%d/" % port, "--user", cred],
                             capture_output=True, timeout=30)
        self.assertEqual(lst.returncode, 0, lst.stderr)
        self.assertEqual(lst.stdout, "".join("%d %d\r\n" % (i + 1, len(d)) for i, d in enumerate(self.data)).encode())
        for i, d in enumerate(self.data):
            r = subprocess.run(["curl", "-sS", "--max-time", "20", "pop3://127.0.0.1:%d/%d" % (port, i + 1),
                                "--user", cred], capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, d, "curl pop3:// must retrieve message %d exactly" % (i + 1))
        # over STLS, curl insisting on TLS
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "--ssl-reqd", "-k",
                            "pop3://127.0.0.1:%d/2" % port, "--user", cred], capture_output=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, self.data[1]), r.stderr)
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "-k",
                            "pop3s://127.0.0.1:%d/3" % self.srv.port("pop3s"), "--user", cred],
                           capture_output=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, self.data[2]), r.stderr)
        # DELE as a custom request (-I: a single-line answer)
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "-k", "-X", "DELE", "-I",
                            "pop3s://127.0.0.1:%d/1" % self.srv.port("pop3s"), "--user", cred],
                           capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(self.srv.new_files()), 2, "curl DELE 1 then QUIT removes message 1")
        # wrong password: curl fails
        r = subprocess.run(["curl", "-sS", "--max-time", "20", "pop3://127.0.0.1:%d/" % port,
                            "--user", pop3util.user() + ":bad"], capture_output=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)


class Fetchmail(POP3TestCase):
    def run_fetchmail(self, srv, port, ssl_line):
        harness.require_tool("fetchmail")
        home = tempfile.mkdtemp(prefix="fm-", dir=srv.tmp)
        out = os.path.join(home, "out")
        os.mkdir(out)
        rc = os.path.join(home, "fetchmailrc")
        with open(rc, "w") as f:
            f.write('set no syslog\n'
                    'poll 127.0.0.1 with proto POP3 port %d uidl no envelope\n'
                    '  user "%s" there with password "%s" is "%s" here\n'
                    '  options nokeep fetchall %s\n'
                    '  mda "cat > $(mktemp %s/msg.XXXXXX)"\n'
                    % (port, pop3util.user(), PASSWORDS[DOMAIN1], os.environ.get("USER", "root"), ssl_line, out))
        os.chmod(rc, 0o600)
        env = dict(os.environ, FETCHMAILHOME=home, HOME=home)
        p = subprocess.run(["fetchmail", "-f", rc, "-N", "--nosyslog", "-v", "--invisible", "--norewrite",
                            "--pidfile", os.path.join(home, "fetchmail.pid")],
                           capture_output=True, env=env, timeout=60)
        got = []
        for n in sorted(os.listdir(out)):
            with open(os.path.join(out, n), "rb") as f:
                got.append(f.read())
        return p, got

    def check(self, srv, tokens, p, got):
        log = (p.stdout + p.stderr).decode(errors="replace")
        self.assertEqual(p.returncode, 0, "fetchmail failed:\n" + log[-4000:])
        self.assertEqual(len(got), len(tokens), "one MDA run per message:\n" + log[-4000:])
        for t in tokens:
            self.assertEqual(sum(t.encode() in g for g in got), 1, "token %s delivered once" % t)
        self.assertEqual(self.drop_files(srv), [], "fetchmail --nokeep leaves the maildrop empty")

    def test_fetchmail_stls_retrieves_and_deletes_everything(self):
        srv = self.server(plaintext=False)
        tokens = pop3util.deliver(srv, 4, body_lines=[".", "..", ".foo"])
        stored = pop3util.files_by_token(srv, tokens)
        p, got = self.run_fetchmail(srv, srv.port("pop3"), "sslproto tls1.2+ no sslcertck")
        self.check(srv, tokens, p, got)
        # the dot lines arrive unstuffed
        for t in tokens:
            g = [x for x in got if t.encode() in x][0]
            self.assertIn(b"\n.\n..\n.foo\n", g.replace(b"\r\n", b"\n"))
            body = stored[t][2].split(b"\r\n\r\n", 1)[1]
            self.assertTrue(g.replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n")), g[-300:])

    def test_fetchmail_pop3s_retrieves_and_deletes_everything(self):
        srv = self.server(plaintext=False)
        tokens = pop3util.deliver(srv, 3)
        p, got = self.run_fetchmail(srv, srv.port("pop3s"), "ssl no sslcertck")
        self.check(srv, tokens, p, got)


class Timeout(POP3TestCase):
    def test_idle_timeout_closes_without_update(self):
        srv = self.server(tls=False, timeout="2s")
        pop3util.deliver(srv, 2)
        before = srv.new_files()
        a = self.p3(srv)                       # idle in AUTHORIZATION
        p = self.p3(srv, login=True)
        self.assertTrue(p.cmd("DELE 1").startswith("+OK"))
        self.assertTrue(p.cmd("DELE 2").startswith("+OK"))
        t0 = time.monotonic()
        self.assertTrue(p.closed(timeout=8), "idle session must be closed after the 2s timeout")
        dt = time.monotonic() - t0
        self.assertGreaterEqual(dt, 1.5, "closed too early (%.1fs)" % dt)
        self.assertTrue(a.closed(timeout=3), "idle session before login closed too")
        self.assertEqual(srv.new_files(), before, "a timed-out session removes nothing")
        q = self.p3(srv, login=True)
        self.assertEqual(q.stat()[0], 2)
        q.cmd("QUIT")


if __name__ == "__main__":
    unittest.main()
