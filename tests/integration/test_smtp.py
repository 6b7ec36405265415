"""Inbound SMTP (SPEC 4, 6): what a sender and the mailbox owner see."""

import os
import re
import smtplib
import socket
import subprocess
import threading
import time
import unittest
import uuid

import harness
from harness import DOMAIN1, DOMAIN2, DOMAIN3, HOSTNAME, Raw, Server

SENDER = "alice@sender.example"


def message(token, body_lines=(), subject="test"):
    """A CRLF message with a unique token in Subject and body."""
    lines = ["From: Alice <%s>" % SENDER, "To: someone@%s" % DOMAIN1, "Subject: %s %s" % (subject, token),
             "Message-ID: <%s@sender.example>" % token, ""]
    lines += ["token %s" % token] + list(body_lines) + ["end of %s" % token]
    return ("\r\n".join(lines) + "\r\n").encode()


class SMTPTestCase(unittest.TestCase):
    def server(self, **kw):
        cfg_edit = kw.pop("edit", None)
        srv = Server(self, **kw)
        if cfg_edit:
            cfg_edit(srv.config)
        return srv.start()

    def smtp(self, srv, service="smtp"):
        c = smtplib.SMTP("127.0.0.1", srv.port(service), local_hostname="client.example", timeout=15)
        self.addCleanup(self._close, c)
        return c

    def raw(self, srv, service="smtp", greet=True):
        r = Raw(srv.port(service))
        self.addCleanup(r.close)
        if greet:
            code, lines = r.read_reply()
            self.assertEqual(code, 220)
        return r

    @staticmethod
    def _close(c):
        try:
            c.close()
        except Exception:
            pass

    def only_file(self, srv, domain=DOMAIN1):
        files = srv.wait_new(domain, 1)
        self.assertEqual(len(files), 1, "expected exactly one file in %s new/: %s" % (domain, [n for n, _ in files]))
        return files[0]

    def assert_stored(self, name, data):
        """The Maildir naming and size contract of SPEC 6."""
        self.assertRegex(name, r",S=\d+$", "file name must end in ,S=SIZE")
        self.assertEqual(harness.size_suffix(name), len(data), "S= must be the file size")
        self.assertNotIn(b"\n", data.replace(b"\r\n", b""), "stored file must use CRLF only")


class Delivery(SMTPTestCase):
    def test_greeting_and_ehlo_extensions(self):
        srv = self.server(tls=False)
        r = self.raw(srv, greet=False)
        code, lines = r.read_reply()
        self.assertEqual((code, lines), (220, ["%s ESMTP mailpopbox" % HOSTNAME]))
        code, lines = r.cmd("EHLO client.example")
        self.assertEqual(code, 250)
        self.assertEqual(lines[0].split()[0], HOSTNAME)
        ext = {l.split()[0].upper(): l for l in lines[1:]}
        for e in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8", "CHUNKING", "DSN"):
            self.assertIn(e, ext, "EHLO must advertise %s: %s" % (e, lines))
        self.assertEqual(ext["SIZE"], "SIZE 1048576")
        self.assertNotIn("STARTTLS", ext, "no certificate: no STARTTLS")
        self.assertNotIn("AUTH", ext, "AUTH only after TLS")
        # STARTTLS without any certificate: 502 5.5.1
        code, lines = r.cmd("STARTTLS")
        self.assertEqual(code, 502)
        self.assertTrue(lines[0].startswith("5.5.1"), lines)
        # commands are case-insensitive, the usual small ones work
        self.assertEqual(r.cmd("noop")[0], 250)
        self.assertEqual(r.cmd("HeLp")[0], 214)
        self.assertEqual(r.cmd("VRFY bob")[0], 252)
        self.assertEqual(r.cmd("EXPN list")[0], 502)
        self.assertEqual(r.cmd("rset")[0], 250)
        code, lines = r.cmd("QUIT")
        self.assertEqual(code, 221)
        self.assertTrue(r.closed())

    def test_several_addresses_one_file_exact_bytes(self):
        srv = self.server()
        token = uuid.uuid4().hex
        msg = message(token, ["line with trailing space ", "\ttab", "", " leading space", "x" * 900])
        rcpts = ["one@%s" % DOMAIN1, "two.Words+tag@%s" % DOMAIN1, "THREE@EXAMPLE.TEST"]
        c = self.smtp(srv)
        refused = c.sendmail(SENDER, rcpts, msg)
        self.assertEqual(refused, {})
        c.quit()
        name, data = self.only_file(srv)
        self.assert_stored(name, data)
        trace, rest = harness.split_trace(data)
        self.assertEqual(rest, msg, "message after the trace headers must be byte-identical")
        self.assertEqual(trace[0], ("Return-Path: <%s>\r\n" % SENDER).encode())
        delivered = [t for t in trace if t.lower().startswith(b"delivered-to:")]
        self.assertEqual(len(delivered), 3, trace)
        for rc_, d in zip(rcpts, delivered):
            self.assertIn(rc_.lower().encode(), d.lower())
        received = [t for t in trace if t.lower().startswith(b"received:")]
        self.assertEqual(len(received), 1, trace)
        rcv = received[0].decode()
        self.assertIn("client.example", rcv)
        self.assertIn("127.0.0.1", rcv)
        self.assertIn(HOSTNAME, rcv)
        self.assertRegex(rcv, r"with ESMTP\b")
        self.assertRegex(rcv, r"\bid \S+")
        self.assertRegex(rcv, r";\s*\w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n$")
        self.assertEqual(srv.new_files(DOMAIN1, "tmp"), [], "tmp/ must be empty after delivery")
        # the id given to the client is the one in the log
        srv.wait_log(r"event=delivered .*domain=%s" % re.escape(DOMAIN1))

    def test_received_names_single_recipient(self):
        srv = self.server()
        c = self.smtp(srv)
        c.sendmail(SENDER, ["solo@%s" % DOMAIN1], message("solo"))
        name, data = self.only_file(srv)
        trace, _ = harness.split_trace(data)
        rcv = b"".join(t for t in trace if t.lower().startswith(b"received:")).decode()
        self.assertIn("solo@%s" % DOMAIN1, rcv, "Received: must name the recipient (SPEC 4)")

    def test_8bit_and_long_lines_kept(self):
        srv = self.server()
        body = ["caf\xe9 na\xefve".encode("utf-8"), b"x" * 990, b"\xff\xfe raw octets"]
        msg = b"Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + b"\r\n".join(body) + b"\r\n"
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s> BODY=8BITMIME" % SENDER)
        r.expect(250, "RCPT TO:<x@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(msg + b".\r\n")
        r.expect(250)
        name, data = self.only_file(srv)
        self.assert_stored(name, data)
        self.assertEqual(harness.split_trace(data)[1], msg)

    def test_dot_unstuffing(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<dots@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        # what the user wrote: ".", "..", ".foo", "x.", "" -- stuffed on the wire
        r.send(b"Subject: dots\r\n\r\n..\r\n...\r\n..foo\r\nx.\r\n\r\n..\r\n.\r\n")
        code, lines = r.read_reply()
        self.assertEqual(code, 250, lines)
        self.assertTrue(lines[0].startswith("2.0.0"), lines)
        _, data = self.only_file(srv)
        self.assertEqual(harness.split_trace(data)[1], b"Subject: dots\r\n\r\n.\r\n..\r\n.foo\r\nx.\r\n\r\n.\r\n")

    def test_end_of_data_only_crlf_dot_crlf(self):
        """Only CRLF.CRLF ends DATA; '. ' at a line start is a stuffed
        ' ' (RFC 5321 4.5.2), and the terminator may arrive in pieces."""
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<eod@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        # sent in awkward pieces: the terminator split across sends
        for part in (b"Subject: eod\r\n\r\na. \r\n. \r\n", b"tail\r", b"\n.", b"\r", b"\n"):
            r.send(part)
            time.sleep(0.05)
        r.expect(250)
        _, data = self.only_file(srv)
        self.assertEqual(harness.split_trace(data)[1], b"Subject: eod\r\n\r\na. \r\n \r\ntail\r\n")

    def test_empty_body_and_null_sender(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<>")
        r.expect(250, "RCPT TO:<bounce@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(b".\r\n")
        r.expect(250)
        name, data = self.only_file(srv)
        self.assert_stored(name, data)
        trace, rest = harness.split_trace(data)
        self.assertEqual(trace[0], b"Return-Path: <>\r\n")
        self.assertEqual(rest, b"")

    def test_catch_all_any_local_part(self):
        srv = self.server()
        c = self.smtp(srv)
        locals_ = ["a", "Some.Body", "x+y-z_1", "%s" % uuid.uuid4().hex, "postmaster", "abuse",
                   "blocked2", "very.long.local.part.with.many.dots"]
        for i, lp in enumerate(locals_):
            self.assertEqual(c.sendmail(SENDER, ["%s@%s" % (lp, DOMAIN1)], message("ca%d" % i)), {})
        c.quit()
        files = srv.wait_new(DOMAIN1, len(locals_))
        self.assertEqual(len(files), len(locals_))
        for lp in locals_:
            self.assertTrue(any(("%s@%s" % (lp, DOMAIN1)).lower().encode() in d.lower() for _, d in files),
                            "no delivery for %s" % lp)

    def test_postmaster_without_domain(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<Postmaster>")
        r.expect(354, "DATA")
        r.send(message("pm") + b".\r\n")
        r.expect(250)
        self.only_file(srv, DOMAIN1)
        self.assertEqual(srv.new_files(DOMAIN2), [])

    def test_multiple_domains_separate_maildrops(self):
        srv = self.server(domains=3)
        c = self.smtp(srv)
        msg = message("multi")
        self.assertEqual(c.sendmail(SENDER, ["a@%s" % DOMAIN1, "b@%s" % DOMAIN2, "c@%s" % DOMAIN3,
                                             "a2@%s" % DOMAIN1], msg), {})
        c.quit()
        for dom, mine, others in ((DOMAIN1, ["a@", "a2@"], ["b@", "c@"]), (DOMAIN2, ["b@"], ["a@", "c@"]),
                                  (DOMAIN3, ["c@"], ["a@", "b@"])):
            name, data = self.only_file(srv, dom)
            self.assert_stored(name, data)
            trace, rest = harness.split_trace(data)
            self.assertEqual(rest, msg)
            dt = b"".join(t for t in trace if t.lower().startswith(b"delivered-to:")).decode().lower()
            for m in mine:
                self.assertIn(m + dom, dt)
            for o in others:
                self.assertNotIn(o, dt, "%s maildrop must not name other domains' recipients" % dom)
        self.assertNotEqual(srv.maildrop(DOMAIN1), srv.maildrop(DOMAIN2))

    def test_helo_without_esmtp(self):
        srv = self.server()
        r = self.raw(srv)
        code, lines = r.cmd("HELO old.client")
        self.assertEqual(code, 250)
        self.assertEqual(len(lines), 1, "HELO answers one line, no extensions: %s" % lines)
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<helo@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(message("helo") + b".\r\n")
        r.expect(250)
        r.expect(221, "QUIT")
        _, data = self.only_file(srv)
        rcv = b"".join(t for t in harness.split_trace(data)[0] if t.lower().startswith(b"received")).decode()
        self.assertIn("old.client", rcv)
        self.assertRegex(rcv, r"with E?SMTP\b")

    def test_swaks_delivery(self):
        harness.require_tool("swaks")
        srv = self.server()
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(srv.port()),
                            "--from", SENDER, "--to", "swaks@%s" % DOMAIN1, "--helo", "swaks.client",
                            "--header", "Subject: swaks-token-42", "--body", "hello from swaks"],
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout.decode() + p.stderr.decode())
        name, data = self.only_file(srv)
        self.assert_stored(name, data)
        self.assertIn(b"Subject: swaks-token-42\r\n", data)
        self.assertIn(b"hello from swaks", data)

    def test_rset_discards_transaction(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<first@%s>" % DOMAIN1)
        r.expect(250, "RSET")
        r.expect(503, "DATA")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<second@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(message("rset") + b".\r\n")
        r.expect(250)
        _, data = self.only_file(srv)
        self.assertIn(b"second@", data)
        self.assertNotIn(b"first@", data)


class Refusals(SMTPTestCase):
    def test_blocked_address(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        for addr in ("blocked@%s" % DOMAIN1, "noreply@%s" % DOMAIN1, "NOREPLY@Example.Test"):
            code, lines = r.cmd("RCPT TO:<%s>" % addr)
            self.assertEqual(code, 550, "%s: %s" % (addr, lines))
            self.assertTrue(lines[0].startswith("5.1.1"), lines)
        r.expect(250, "RCPT TO:<ok@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(message("blk") + b".\r\n")
        r.expect(250)
        _, data = self.only_file(srv)
        self.assertNotIn(b"blocked@", data.lower())
        self.assertNotIn(b"noreply@", data.lower())

    def test_other_domain_relay_denied(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        for addr in ("someone@elsewhere.example", "x@sub.%s" % DOMAIN1, "x@%s.evil" % DOMAIN1):
            code, lines = r.cmd("RCPT TO:<%s>" % addr)
            self.assertEqual(code, 550, "%s: %s" % (addr, lines))
            self.assertTrue(lines[0].startswith("5.7.1"), lines)
        r.expect(503, "DATA")

    def test_local_sender_without_auth(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        for sender in ("me@%s" % DOMAIN1, "Me@OTHER.TEST"):
            code, lines = r.cmd("MAIL FROM:<%s>" % sender)
            self.assertEqual(code, 550, "%s: %s" % (sender, lines))
            self.assertTrue(lines[0].startswith("5.7.1"), lines)
        r.expect(250, "MAIL FROM:<%s>" % SENDER)

    def test_declared_size_over_limit(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        code, lines = r.cmd("MAIL FROM:<%s> SIZE=1048577" % SENDER)
        self.assertEqual(code, 552)
        self.assertTrue(lines[0].startswith("5.3.4"), lines)
        r.expect(250, "MAIL FROM:<%s> SIZE=1000" % SENDER)

    def test_actual_size_over_limit(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<big@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        line = b"y" * 998 + b"\r\n"
        r.send(b"Subject: big\r\n\r\n" + line * 1100 + b".\r\n")
        code, lines = r.read_reply()
        self.assertEqual(code, 552, lines)
        self.assertTrue(lines[0].startswith("5.3.4"), lines)
        # the session goes on
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<small@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(message("small") + b".\r\n")
        r.expect(250)
        files = srv.wait_new(DOMAIN1, 1)
        time.sleep(0.2)
        files = srv.read_new(DOMAIN1)
        self.assertEqual(len(files), 1)
        self.assertIn(b"token small", files[0][1])

    def test_bare_lf_and_bare_cr_refused_session_continues(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        for bad in (b"Subject: lf\r\n\r\nline\nbare\r\n", b"Subject: cr\r\n\r\nline\rbare\r\n",
                    b"Subject: lf2\n\r\nbody\r\n"):
            r.expect(250, "MAIL FROM:<%s>" % SENDER)
            r.expect(250, "RCPT TO:<bare@%s>" % DOMAIN1)
            r.expect(354, "DATA")
            r.send(bad + b".\r\n")
            code, lines = r.read_reply()
            self.assertEqual(code, 550, "%r: %s" % (bad, lines))
            self.assertTrue(lines[0].startswith("5.6.0"), lines)
        r.expect(250, "NOOP")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<good@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(message("afterbare") + b".\r\n")
        r.expect(250)
        time.sleep(0.2)
        files = srv.read_new(DOMAIN1)
        self.assertEqual(len(files), 1, [n for n, _ in files])
        self.assertIn(b"token afterbare", files[0][1])
        self.assertEqual(srv.new_files(DOMAIN1, "tmp"), [], "refused messages must not linger in tmp/")

    def test_command_line_length_limit(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        # 512 octets with CRLF: allowed (RFC 5321 4.5.3.1.4)
        ok = "NOOP " + "a" * (512 - 2 - 5)
        self.assertEqual(len(ok) + 2, 512)
        code, lines = r.cmd(ok)
        self.assertEqual(code, 250, lines)
        code, lines = r.cmd(ok + "b")
        self.assertEqual(code, 500, lines)
        self.assertTrue(lines[0].startswith("5.5.2"), lines)
        # a very long line (several buffers' worth)
        code, lines = r.cmd("NOOP " + "z" * 20000)
        self.assertEqual(code, 500, lines)
        # still in sync
        r.expect(250, "NOOP")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)

    def test_unknown_command_and_wrong_order(self):
        srv = self.server()
        r = self.raw(srv)
        code, lines = r.cmd("FROBNICATE now")
        self.assertEqual(code, 500)
        self.assertTrue(lines[0].startswith("5.5.1"), lines)
        code, lines = r.cmd("MAIL FROM:<%s>" % SENDER)
        self.assertEqual(code, 503, "MAIL before EHLO")
        r.expect(250, "EHLO client.example")
        code, lines = r.cmd("RCPT TO:<x@%s>" % DOMAIN1)
        self.assertEqual(code, 503, "RCPT before MAIL")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        code, lines = r.cmd("DATA")
        self.assertEqual(code, 503, "DATA without recipient")
        self.assertTrue(lines[0].startswith("5.5.1"), lines)
        code, lines = r.cmd("MAIL FROM:<%s>" % SENDER)
        self.assertEqual(code, 503, "nested MAIL")
        code, lines = r.cmd("RCPT TO:<not an address>")
        self.assertIn(code, (501, 553), lines)
        self.assertTrue(lines[0][:5] in ("5.1.3", "5.5.4"), lines)
        code, lines = r.cmd("RCPT TO:")
        self.assertEqual(code, 501, lines)
        code, lines = r.cmd("MAIL")
        self.assertIn(code, (501, 503), lines)

    def test_twenty_errors_close(self):
        srv = self.server()
        r = self.raw(srv)
        for i in range(19):
            code, _ = r.cmd("BOGUS%d" % i)
            self.assertEqual(code, 500, "error %d" % (i + 1))
        code, lines = r.cmd("BOGUS-last")
        self.assertEqual(code, 500, "the 20th error is still answered")
        code, lines = r.read_reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("4.7.0"), lines)
        self.assertTrue(r.closed(), "connection must close after 421")

    def test_max_recipients(self):
        srv = self.server(edit=lambda c: c["smtp"].update(max_recipients=3))
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        for i in range(3):
            r.expect(250, "RCPT TO:<r%d@%s>" % (i, DOMAIN1))
        code, lines = r.cmd("RCPT TO:<r4@%s>" % DOMAIN1)
        self.assertEqual(code, 452, lines)
        self.assertTrue(lines[0].startswith("4.5.3"), lines)
        r.expect(354, "DATA")
        r.send(message("maxrcpt") + b".\r\n")
        r.expect(250)
        _, data = self.only_file(srv)
        self.assertNotIn(b"r4@", data)


class Chunking(SMTPTestCase):
    def test_bdat(self):
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<%s> BODY=8BITMIME" % SENDER)
        r.expect(250, "RCPT TO:<bdat@%s>" % DOMAIN1)
        # BDAT content is taken verbatim: no dot-unstuffing, '.\r\n' is data
        chunks = [b"Subject: bdat\r\n\r\n", b"..not unstuffed\r\n.\r\n", b"last line\r\n"]
        for ch in chunks[:-1]:
            r.send(b"BDAT %d\r\n" % len(ch) + ch)
            code, lines = r.read_reply()
            self.assertEqual(code, 250, lines)
        r.send(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
        code, lines = r.read_reply()
        self.assertEqual(code, 250, lines)
        name, data = self.only_file(srv)
        self.assert_stored(name, data)
        self.assertEqual(harness.split_trace(data)[1], b"".join(chunks))
        # BDAT 0 LAST and a second transaction in the same session
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<bdat2@%s>" % DOMAIN1)
        body = message("bdat2")
        r.send(b"BDAT %d\r\n" % len(body) + body + b"BDAT 0 LAST\r\n")
        r.expect(250)
        r.expect(250)
        files = srv.wait_new(DOMAIN1, 2)
        self.assertEqual(len(files), 2)
        self.assertTrue(any(harness.split_trace(d)[1] == body for _, d in files))

    def test_pipelining_one_send(self):
        srv = self.server()
        r = self.raw(srv)
        body = message("pipe")
        r.send(b"EHLO client.example\r\n"
               b"MAIL FROM:<" + SENDER.encode() + b">\r\n"
               b"RCPT TO:<p1@" + DOMAIN1.encode() + b">\r\n"
               b"RCPT TO:<p2@nowhere.example>\r\n"
               b"RCPT TO:<p3@" + DOMAIN1.encode() + b">\r\n"
               b"DATA\r\n" + body + b".\r\n"
               b"NOOP\r\n"
               b"MAIL FROM:<>\r\n"
               b"RCPT TO:<p4@" + DOMAIN2.encode() + b">\r\n"
               b"BDAT 6 LAST\r\nhi\r\n\r\n"
               b"QUIT\r\n")
        expect = [250, 250, 250, 550, 250, 354, 250, 250, 250, 250, 250, 221]
        got = [r.read_reply()[0] for _ in expect]
        self.assertEqual(got, expect)
        self.assertTrue(r.closed())
        _, data = self.only_file(srv, DOMAIN1)
        self.assertEqual(harness.split_trace(data)[1], body)
        self.assertNotIn(b"p2@", data)
        _, data2 = self.only_file(srv, DOMAIN2)
        self.assertEqual(harness.split_trace(data2)[1], b"hi\r\n\r\n")


class Connections(SMTPTestCase):
    def test_idle_timeout(self):
        srv = self.server(edit=lambda c: c["smtp"].update(timeout="2s"))
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        t0 = time.monotonic()
        r.sock.settimeout(10)
        code, lines = r.read_reply()
        dt = time.monotonic() - t0
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("4.4.2"), lines)
        self.assertGreater(dt, 1.5)
        self.assertLess(dt, 6)
        self.assertTrue(r.closed())
        # also while waiting for DATA content
        r2 = self.raw(srv)
        r2.expect(250, "EHLO client.example")
        r2.expect(250, "MAIL FROM:<%s>" % SENDER)
        r2.expect(250, "RCPT TO:<t@%s>" % DOMAIN1)
        r2.expect(354, "DATA")
        r2.send(b"Subject: partial\r\n\r\nhalf a mess")
        r2.sock.settimeout(10)
        code, lines = r2.read_reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(r2.closed())
        self.assertEqual(srv.new_files(DOMAIN1), [])

    def test_max_connections_per_ip(self):
        srv = self.server(edit=lambda c: c["smtp"].update(max_connections_per_ip=3))
        held = [self.raw(srv) for _ in range(3)]
        extra = Raw(srv.port())
        self.addCleanup(extra.close)
        code, lines = extra.read_reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(extra.closed())
        srv.wait_log(r"event=refused .*reason=max_connections_per_ip")
        # the held sessions still work
        for h in held:
            h.expect(250, "NOOP")
        # freeing one slot lets a new client in
        held[0].expect(221, "QUIT")
        self.assertTrue(held[0].closed())
        deadline = time.monotonic() + 5
        while True:
            again = Raw(srv.port())
            self.addCleanup(again.close)
            code, _ = again.read_reply()
            if code == 220 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        self.assertEqual(code, 220)

    def test_max_connections(self):
        srv = self.server(edit=lambda c: c["smtp"].update(max_connections=2))
        held = [self.raw(srv) for _ in range(2)]
        extra = Raw(srv.port())
        self.addCleanup(extra.close)
        code, lines = extra.read_reply()
        self.assertEqual(code, 421, lines)
        for h in held:
            h.expect(250, "NOOP")

    def test_concurrent_senders(self):
        srv = self.server()
        n_threads, per = 12, 6
        errors = []
        tokens = []
        lock = threading.Lock()

        def sender(i):
            try:
                c = smtplib.SMTP("127.0.0.1", srv.port(), local_hostname="c%d.example" % i, timeout=30)
                for k in range(per):
                    tok = "conc-%d-%d-%s" % (i, k, uuid.uuid4().hex[:8])
                    body = ["filler %d %s" % (j, "x" * (i * 37 % 200)) for j in range(k * 50)]
                    c.sendmail(SENDER, ["t%d@%s" % (i, DOMAIN1)], message(tok, body))
                    with lock:
                        tokens.append(tok)
                c.quit()
            except Exception as e:
                with lock:
                    errors.append("%d: %r" % (i, e))

        ts = [threading.Thread(target=sender, args=(i,)) for i in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertEqual(errors, [])
        files = srv.read_new(DOMAIN1)
        self.assertEqual(len(files), n_threads * per)
        names = set()
        for name, data in files:
            self.assert_stored(name, data)
            names.add(name.split(",")[0])
        self.assertEqual(len(names), len(files), "unique Maildir names")
        blob = b"\n".join(d for _, d in files)
        for tok in tokens:
            self.assertEqual(blob.count(("token %s\r\n" % tok).encode()), 1, tok)


if __name__ == "__main__":
    unittest.main()
