"""TLS and AUTH (SPEC 3, 4, 8): STARTTLS, AUTH PLAIN, SNI, SIGHUP reload,
implicit TLS (submissions)."""

import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import unittest
import uuid

import harness
from harness import DOMAIN1, DOMAIN2, HOSTNAME, PASSWORDS, Raw, Server

USER1 = "mailbox@" + DOMAIN1
USER2 = "mailbox@" + DOMAIN2


class TLSTestCase(unittest.TestCase):
    ktls = True

    def server(self, edit=None, own_certs=False, **kw):
        srv = Server(self, **kw)
        srv.config["tls"]["ktls"] = self.ktls
        if own_certs:
            # private copies that the test may replace before SIGHUP
            for i, dom in enumerate((DOMAIN1, DOMAIN2)):
                d = srv.domain_cfg(dom)
                for k in ("tls_cert", "tls_key"):
                    dst = os.path.join(srv.tmp, os.path.basename(d[k]))
                    shutil.copy(d[k], dst)
                    d[k] = dst
        if edit:
            edit(srv.config)
        return srv.start()

    def raw(self, srv, service="smtp"):
        r = Raw(srv.port(service))
        self.addCleanup(r.close)
        r.expect(220)
        return r

    def starttls(self, srv, sni=None, ehlo=True):
        """A session after STARTTLS (and the second EHLO). Returns (raw,
        ehlo_lines)."""
        r = self.raw(srv)
        lines = r.expect(250, "EHLO client.example")
        self.assertIn("STARTTLS", lines)
        r.expect(220, "STARTTLS")
        r.starttls(server_hostname=sni)
        if not ehlo:
            return r, None
        return r, r.expect(250, "EHLO client.example")

    def implicit(self, srv, service="submissions", sni=None):
        s = socket.create_connection(("127.0.0.1", srv.port(service)), timeout=10)
        s = harness.client_context().wrap_socket(s, server_hostname=sni)
        r = Raw(None, sock=s)
        self.addCleanup(r.close)
        r.expect(220)
        return r

    def peer_cert(self, r):
        return r.sock.getpeercert(binary_form=True)

    def auth(self, r, user, password):
        return r.cmd("AUTH PLAIN " + harness.plain_auth(user, password))

    def send_local(self, r, sender, rcpt, token):
        r.expect(250, "MAIL FROM:<%s>" % sender)
        r.expect(250, "RCPT TO:<%s>" % rcpt)
        r.expect(354, "DATA")
        r.send(("Subject: %s\r\n\r\nbody %s\r\n.\r\n" % (token, token)).encode())
        return r.read_reply()


class StartTLS(TLSTestCase):
    def test_smtplib_starttls_login_send(self):
        srv = self.server()
        c = smtplib.SMTP("127.0.0.1", srv.port(), local_hostname="client.example", timeout=15)
        self.addCleanup(c.close)
        c.ehlo()
        self.assertTrue(c.has_extn("starttls"))
        self.assertFalse(c.has_extn("auth"), "AUTH must not be offered before TLS")
        c.starttls(context=harness.client_context())
        c.ehlo()
        self.assertFalse(c.has_extn("starttls"), "STARTTLS must not be offered after TLS")
        self.assertIn("PLAIN", c.esmtp_features.get("auth", "").upper().split())
        code, _ = c.login(USER1, PASSWORDS[DOMAIN1])
        self.assertEqual(code, 235)
        tok = uuid.uuid4().hex
        msg = ("From: <me@%s>\r\nTo: <friend@%s>\r\nSubject: %s\r\n\r\nsent over TLS\r\n"
               % (DOMAIN1, DOMAIN1, tok)).encode()
        self.assertEqual(c.sendmail("me@" + DOMAIN1, ["friend@" + DOMAIN1], msg), {})
        c.quit()
        files = srv.wait_new(DOMAIN1, 1)
        self.assertEqual(len(files), 1)
        name, data = files[0]
        self.assertEqual(harness.size_suffix(name), len(data))
        trace, rest = harness.split_trace(data)
        rcv = b"".join(t for t in trace if t.lower().startswith(b"received")).decode()
        self.assertRegex(rcv, r"with ESMTPSA\b", "authenticated TLS session: ESMTPSA (RFC 3848)")
        self.assertIn(tok.encode(), rest)
        srv.wait_log(r"event=tls_established .*version=TLSv1\.[23] ")
        srv.wait_log(r"event=auth .*domain=%s" % re.escape(DOMAIN1))
        self.assertNotIn(PASSWORDS[DOMAIN1], srv.stderr(), "passwords must never be logged")
        self.assertNotIn(harness.plain_auth(USER1, PASSWORDS[DOMAIN1]), srv.stderr())

    def test_authenticated_message_gets_date_and_message_id(self):
        """SPEC 4 (RFC 6409 8.2/8.3): added when missing, kept when present."""
        srv = self.server()
        r, _ = self.starttls(srv)
        self.assertEqual(self.auth(r, USER1, PASSWORDS[DOMAIN1])[0], 235)
        self.assertEqual(self.send_local(r, "me@" + DOMAIN1, "a@" + DOMAIN1, "no-date")[0], 250)
        r.expect(250, "MAIL FROM:<me@%s>" % DOMAIN1)
        r.expect(250, "RCPT TO:<b@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <keep@me>\r\nSubject: has-date\r\n\r\nx\r\n.\r\n")
        r.expect(250)
        files = srv.wait_new(DOMAIN1, 2)
        self.assertEqual(len(files), 2)
        for _, data in files:
            rest = harness.split_trace(data)[1].decode()
            head = rest.split("\r\n\r\n", 1)[0]
            self.assertEqual(len(re.findall(r"(?im)^Date: ", head)), 1, head)
            self.assertEqual(len(re.findall(r"(?im)^Message-ID: <[^>]+@[^>]+>", head)), 1, head)
            if "has-date" in head:
                self.assertIn("Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n", head)
                self.assertIn("Message-ID: <keep@me>\r\n", head)

    def test_large_message_over_tls(self):
        """Byte-exact bodies through the TLS receive path (user space or
        kernel), sent in odd-sized writes."""
        srv = self.server()
        r, _ = self.starttls(srv)
        import random
        rnd = random.Random(7)
        table = bytes(b"abc.xyz "[i % 8] for i in range(256))
        lines = [b"%05d " % i + rnd.randbytes(rnd.randint(0, 300)).translate(table) for i in range(5000)]
        lines[10] = b"."
        lines[11] = b".."
        msg = b"Subject: big tls\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
        self.assertLess(len(msg), 1048576)
        wire = msg.replace(b"\r\n.", b"\r\n..") + b".\r\n"
        r.expect(250, "MAIL FROM:<x@sender.example> SIZE=%d" % len(msg))
        r.expect(250, "RCPT TO:<big@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        pos = 0
        while pos < len(wire):
            n = rnd.choice([1, 7, 1000, 16384, 70000])
            r.send(wire[pos:pos + n])
            pos += n
        code, lines_ = r.read_reply()
        self.assertEqual(code, 250, lines_)
        files = srv.wait_new(DOMAIN1, 1)
        self.assertEqual(len(files), 1)
        name, data = files[0]
        self.assertEqual(harness.size_suffix(name), len(data))
        self.assertEqual(harness.split_trace(data)[1], msg)

    def sendas_data(self, srv):
        """An authenticated STARTTLS session from mailbox@DOMAIN1 to a
        DOMAIN2 address, after DATA's 354."""
        r, _ = self.starttls(srv)
        self.assertEqual(self.auth(r, USER1, PASSWORDS[DOMAIN1])[0], 235)
        r.expect(250, "MAIL FROM:<mailbox@%s>" % DOMAIN1)
        r.expect(250, "RCPT TO:<friend@%s>" % DOMAIN2)
        r.expect(354, "DATA")
        return r

    def sendas_delivered(self, srv):
        """(trace lines, the rest) of the one file delivered to DOMAIN2."""
        files = srv.wait_new(DOMAIN2, 1)
        self.assertEqual(len(files), 1)
        return harness.split_trace(files[0][1])

    def test_sendas(self):
        """SPEC 4: [sendas:NAME] in the Subject of an authenticated message
        rewrites From:, the Subject and the envelope sender."""
        srv = self.server()
        r = self.sendas_data(srv)
        r.send(b"From: Jane Doe <mailbox@example.test>\r\nTo: friend@other.test\r\n"
               b"Subject: [SendAs: sales.team] Quarterly numbers\r\n\r\nbody\r\n.\r\n")
        r.expect(250)
        trace, rest = self.sendas_delivered(srv)
        self.assertEqual(trace[0], b"Return-Path: <sales.team@example.test>\r\n")
        head = rest.split(b"\r\n\r\n", 1)[0].decode()
        self.assertIn("From: Jane Doe <sales.team@example.test>\r\n", head + "\r\n")
        self.assertIn("Subject: Quarterly numbers\r\n", head + "\r\n")
        self.assertNotIn("sendas", rest.decode().lower())

    def test_sendas_header_in_small_pieces(self):
        """The header block arriving a few octets per TLS record (the server
        holds it until its empty line) is rewritten the same way."""
        srv = self.server()
        r = self.sendas_data(srv)
        head = (b"From: Jane Doe <mailbox@example.test>\r\nTo: friend@other.test\r\n"
                b"Subject: [sendas:pieces] split up\r\n\r\n")
        for i in range(0, len(head), 3):
            r.send(head[i:i + 3])   # one TLS record each
        r.send(b"body\r\n.\r\n")
        r.expect(250)
        trace, rest = self.sendas_delivered(srv)
        self.assertEqual(trace[0], b"Return-Path: <pieces@example.test>\r\n")
        hdr = rest.split(b"\r\n\r\n", 1)[0].decode() + "\r\n"
        self.assertIn("From: Jane Doe <pieces@example.test>\r\n", hdr)
        self.assertIn("Subject: split up\r\n", hdr)
        self.assertTrue(rest.endswith(b"\r\n\r\nbody\r\n"), rest[-40:])

    def test_esmtps_without_auth(self):
        srv = self.server()
        r, _ = self.starttls(srv)
        self.assertEqual(self.send_local(r, "x@sender.example", "tls@" + DOMAIN1, "esmtps")[0], 250)
        _, data = srv.wait_new(DOMAIN1, 1)[0]
        rcv = b"".join(t for t in harness.split_trace(data)[0] if t.lower().startswith(b"received")).decode()
        self.assertRegex(rcv, r"with ESMTPS\b")

    def test_auth_before_tls_refused(self):
        srv = self.server()
        r = self.raw(srv)
        lines = r.expect(250, "EHLO client.example")
        self.assertFalse(any(l.upper().startswith("AUTH") for l in lines), lines)
        code, lines = self.auth(r, USER1, PASSWORDS[DOMAIN1])
        self.assertEqual(code, 538, lines)
        self.assertTrue(lines[0].startswith("5.7.11"), lines)
        code, lines = r.cmd("AUTH PLAIN")
        self.assertEqual(code, 538, lines)

    def test_starttls_advertised_only_before_tls(self):
        srv = self.server()
        r, lines = self.starttls(srv)
        self.assertNotIn("STARTTLS", lines)
        self.assertIn("AUTH PLAIN", [l.upper() for l in lines])
        code, lines = r.cmd("STARTTLS")
        self.assertEqual(code, 503, lines)
        self.assertTrue(lines[0].startswith("5.5.1"), lines)

    def test_ehlo_required_after_starttls(self):
        srv = self.server()
        r, _ = self.starttls(srv, ehlo=False)
        code, lines = r.cmd("MAIL FROM:<x@sender.example>")
        self.assertEqual(code, 503, lines)
        r.expect(250, "EHLO client.example")
        r.expect(250, "MAIL FROM:<x@sender.example>")

    def test_starttls_discards_pipelined_commands(self):
        """STARTTLS injection (CVE-2011-0411 class): what was sent after
        STARTTLS in the same packet must never be executed."""
        srv = self.server()
        r = self.raw(srv)
        r.expect(250, "EHLO client.example")
        r.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<injected@sender.example>\r\n")
        code, lines = r.read_reply()
        self.assertEqual(code, 220, lines)
        self.assertEqual(r.buf, b"", "nothing may follow the 220 in plaintext")
        r.starttls()
        r.send(b"EHLO client.example\r\n")
        code, lines = r.read_reply()
        self.assertEqual(code, 250)
        self.assertEqual(lines[0].split()[0], HOSTNAME,
                         "first reply after TLS must be the EHLO reply, not an answer to injected RSET: %s" % lines)
        self.assertTrue(len(lines) > 1, lines)
        # no transaction was started by the injected MAIL
        code, lines = r.cmd("RCPT TO:<a@%s>" % DOMAIN1)
        self.assertEqual(code, 503, lines)
        r.expect(250, "NOOP")

    def test_wrong_password_and_identities(self):
        srv = self.server()
        cases = [(USER1, "wrong"), ("other@" + DOMAIN1, PASSWORDS[DOMAIN1]), (USER1, PASSWORDS[DOMAIN2]),
                 ("mailbox@nowhere.example", "x"), (DOMAIN1, PASSWORDS[DOMAIN1])]
        sessions = [self.starttls(srv)[0] for _ in cases]
        t0 = time.monotonic()
        for r, (user, pw) in zip(sessions, cases):
            r.send("AUTH PLAIN " + harness.plain_auth(user, pw) + "\r\n")
        for r, (user, pw) in zip(sessions, cases):
            code, lines = r.read_reply()
            self.assertEqual(code, 535, "%s: %s" % (user, lines))
            self.assertTrue(lines[0].startswith("5.7.8"), lines)
        t1 = time.monotonic()
        # the delay grows with repeated failures in a session
        self.assertEqual(self.auth(sessions[0], USER1, "wrong again")[0], 535)
        t2 = time.monotonic()
        self.assertGreater(t1 - t0, 0.5, "failures are answered after a delay")
        self.assertGreater(t2 - t1, t1 - t0, "the delay grows")
        # mismatched authorization identity
        r2, _ = self.starttls(srv)
        code, lines = r2.cmd("AUTH PLAIN " + harness.plain_auth(USER1, PASSWORDS[DOMAIN1], authzid=USER2))
        self.assertEqual(code, 535, lines)
        # matching authorization identity, initial response in a second line
        r3, _ = self.starttls(srv)
        code, lines = r3.cmd("AUTH PLAIN")
        self.assertEqual(code, 334, lines)
        code, lines = r3.cmd(harness.plain_auth(USER1, PASSWORDS[DOMAIN1], authzid=USER1))
        self.assertEqual(code, 235, lines)
        code, lines = self.auth(r3, USER1, PASSWORDS[DOMAIN1])
        self.assertEqual(code, 503, "second AUTH: %s" % lines)
        srv.wait_log(r"event=auth_failed ")
        self.assertNotIn("wrong", srv.stderr())

    def test_auth_syntax(self):
        srv = self.server()
        r, _ = self.starttls(srv)
        code, lines = r.cmd("AUTH CRAM-MD5")
        self.assertEqual(code, 504, lines)
        self.assertTrue(lines[0].startswith("5.5.4"), lines)
        code, lines = r.cmd("AUTH PLAIN !!!notbase64")
        self.assertEqual(code, 501, lines)
        self.assertEqual(r.cmd("AUTH PLAIN")[0], 334)
        code, lines = r.cmd("*")
        self.assertEqual(code, 501, lines)
        self.assertTrue(lines[0].startswith("5.5.2"), lines)

    def test_authenticated_sender_domain(self):
        srv = self.server()
        r, _ = self.starttls(srv)
        self.assertEqual(self.auth(r, USER1, PASSWORDS[DOMAIN1])[0], 235)
        code, lines = r.cmd("MAIL FROM:<me@%s>" % DOMAIN2)
        self.assertEqual(code, 550, "MAIL FROM outside the authenticated domain: %s" % lines)
        self.assertTrue(lines[0].startswith("5.7.1"), lines)
        code, lines = r.cmd("MAIL FROM:<stranger@sender.example>")
        self.assertEqual(code, 550, lines)
        self.assertEqual(self.send_local(r, "me@" + DOMAIN1, "to@" + DOMAIN2, "authd")[0], 250)
        self.assertEqual(len(srv.wait_new(DOMAIN2, 1)), 1)

    def test_hashed_password(self):
        p = subprocess.run([harness.BINARY, "--hash-password"], input=b"hashed pass word\n",
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        h = p.stdout.decode().strip()
        self.assertTrue(h.startswith("$y$"), h)
        srv = self.server(edit=lambda c: c["domain"][0].update(password=h))
        self.assertNotIn("event=plaintext_password domain=%s " % DOMAIN1, srv.stderr())
        r, _ = self.starttls(srv)
        self.assertEqual(self.auth(r, USER1, "wrong")[0], 535)
        r2, _ = self.starttls(srv)
        code, lines = self.auth(r2, USER1, "hashed pass word")
        self.assertEqual(code, 235, lines)

    def test_openssl_s_client(self):
        harness.require_tool("openssl")
        srv = self.server()
        p = subprocess.run(["openssl", "s_client", "-starttls", "smtp", "-connect", "127.0.0.1:%d" % srv.port(),
                            "-servername", DOMAIN1, "-crlf", "-ign_eof"],
                           input=b"EHLO s-client.example\nNOOP\nQUIT\n", capture_output=True, timeout=30)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out[-1500:] + p.stderr.decode(errors="replace"))
        self.assertRegex(out, r"Protocol\s*: TLSv1\.[23]")
        self.assertRegex(out, r"subject=.*CN\s*=\s*localhost")
        self.assertRegex(out, r"250[- ]AUTH PLAIN\r?\n", out[-1500:])
        self.assertIn("221 2.0.0", out)

    def test_swaks_tls_auth(self):
        harness.require_tool("swaks")
        if subprocess.run(["perl", "-MNet::SSLeay", "-e1"], capture_output=True).returncode != 0:
            self.skipTest("swaks --tls needs Net::SSLeay: add libnet-ssleay-perl to DEB_TEST")
        srv = self.server()
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(srv.port()), "--tls",
                            "--auth", "PLAIN", "--auth-user", USER1, "--auth-password", PASSWORDS[DOMAIN1],
                            "--from", "me@" + DOMAIN1, "--to", "swaks@" + DOMAIN1,
                            "--header", "Subject: swaks-tls", "--body", "over tls"],
                           capture_output=True, timeout=30)
        out = p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out)
        self.assertIn("235 2.7.0", out)
        files = srv.wait_new(DOMAIN1, 1)
        self.assertEqual(len(files), 1)
        self.assertIn(b"Subject: swaks-tls", files[0][1])


class StartTLSUserSpace(StartTLS):
    """The same dialogues with kernel TLS switched off (DESIGN: test both
    paths)."""
    ktls = False

    def test_ktls_off_logged(self):
        srv = self.server()
        self.starttls(srv)
        line = srv.wait_log(r"event=tls_established ")[0]
        self.assertIn("ktls_tx=0", line)
        self.assertIn("ktls_rx=0", line)


class SNI(TLSTestCase):
    def names(self, r):
        return harness.cert_names(self.peer_cert(r))

    def test_sni_selects_domain_certificate(self):
        srv = self.server()
        r, _ = self.starttls(srv, sni=DOMAIN2)
        cn, sans = self.names(r)
        self.assertEqual(cn, DOMAIN2)
        self.assertIn(DOMAIN2, sans)
        srv.wait_log(r"event=tls_established .*sni=%s" % re.escape(DOMAIN2))
        # also a name of the second certificate other than the domain
        r, _ = self.starttls(srv, sni="mx." + DOMAIN2)
        self.assertEqual(self.names(r)[0], DOMAIN2)
        # case-insensitive
        r, _ = self.starttls(srv, sni=DOMAIN2.upper())
        self.assertEqual(self.names(r)[0], DOMAIN2)

    def test_first_domain_and_default(self):
        srv = self.server()
        for sni in (DOMAIN1, "unknown.example", None):
            r, _ = self.starttls(srv, sni=sni)
            cn, sans = self.names(r)
            self.assertEqual(cn, "localhost", "SNI %r" % sni)
            self.assertIn(DOMAIN1, sans)


class Reload(TLSTestCase):
    def new_pair(self, srv, name, cn, names):
        d = os.path.join(srv.tmp, "newcerts")
        return harness.make_cert(d, name, cn, names)

    def test_sighup_swaps_certificates_sessions_keep_theirs(self):
        srv = self.server(own_certs=True)
        old_session, _ = self.starttls(srv, sni=DOMAIN1)
        old_fp = harness.cert_fingerprint(self.peer_cert(old_session))
        crt, key = self.new_pair(srv, "d1new", "reloaded.example", ["localhost", DOMAIN1, "reloaded.example"])
        d1 = srv.domain_cfg(DOMAIN1)
        shutil.copy(crt, d1["tls_cert"])
        shutil.copy(key, d1["tls_key"])
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"event=tls_reloaded ")
        new_session, _ = self.starttls(srv, sni=DOMAIN1)
        cn, _ = harness.cert_names(self.peer_cert(new_session))
        self.assertEqual(cn, "reloaded.example", "a new connection must see the new certificate")
        self.assertNotEqual(harness.cert_fingerprint(self.peer_cert(new_session)), old_fp)
        # the session opened before the reload goes on with its certificate
        self.assertEqual(harness.cert_fingerprint(self.peer_cert(old_session)), old_fp)
        code, lines = self.send_local(old_session, "x@sender.example", "old@" + DOMAIN1, "before-reload")
        self.assertEqual(code, 250, lines)
        self.assertEqual(self.send_local(new_session, "x@sender.example", "new@" + DOMAIN1, "after")[0], 250)
        files = srv.wait_new(DOMAIN1, 2)
        self.assertEqual(len(files), 2)
        # the second domain still has its own certificate
        r, _ = self.starttls(srv, sni=DOMAIN2)
        self.assertEqual(harness.cert_names(self.peer_cert(r))[0], DOMAIN2)

    def test_broken_files_keep_old_certificates(self):
        srv = self.server(own_certs=True)
        r, _ = self.starttls(srv, sni=DOMAIN1)
        old_fp = harness.cert_fingerprint(self.peer_cert(r))
        d1 = srv.domain_cfg(DOMAIN1)
        with open(d1["tls_cert"], "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"level=error event=tls_reload_failed ")
        r2, _ = self.starttls(srv, sni=DOMAIN1)
        self.assertEqual(harness.cert_fingerprint(self.peer_cert(r2)), old_fp)
        self.assertEqual(self.send_local(r, "x@sender.example", "a@" + DOMAIN1, "t1")[0], 250)
        self.assertEqual(self.send_local(r2, "x@sender.example", "b@" + DOMAIN1, "t2")[0], 250)
        # a key that does not match the certificate is refused too
        crt, key = self.new_pair(srv, "mismatch", "mismatch.example", [DOMAIN1])
        shutil.copy(crt, d1["tls_cert"])   # new cert, old key
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"event=tls_reload_failed ", count=2)
        r3, _ = self.starttls(srv, sni=DOMAIN1)
        self.assertEqual(harness.cert_fingerprint(self.peer_cert(r3)), old_fp)
        # and a missing file
        os.unlink(d1["tls_key"])
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"event=tls_reload_failed ", count=3)
        r4, _ = self.starttls(srv, sni=DOMAIN1)
        self.assertEqual(harness.cert_fingerprint(self.peer_cert(r4)), old_fp)
        self.assertTrue(srv.running())


class Submission(TLSTestCase):
    def sub_server(self):
        def edit(c):
            c["submission"] = {"listen": ["127.0.0.1:0"]}
            c["submissions"] = {"listen": ["127.0.0.1:0"]}
            c["relay"] = {"queue": os.path.join(os.path.dirname(c["domain"][0]["maildrop"]), "queue")}
        return self.server(edit=edit)

    def test_submissions_implicit_tls(self):
        srv = self.sub_server()
        r = self.implicit(srv, sni=DOMAIN2)
        self.assertEqual(harness.cert_names(self.peer_cert(r))[0], DOMAIN2)
        lines = r.expect(250, "EHLO client.example")
        self.assertIn("AUTH PLAIN", [l.upper() for l in lines])
        self.assertNotIn("STARTTLS", lines)
        code, lines = r.cmd("MAIL FROM:<me@%s>" % DOMAIN2)
        self.assertEqual(code, 530, "MAIL before AUTH on submissions: %s" % lines)
        self.assertTrue(lines[0].startswith("5.7.0"), lines)
        self.assertEqual(self.auth(r, USER2, PASSWORDS[DOMAIN2])[0], 235)
        code, lines = self.send_local(r, "me@" + DOMAIN2, "friend@" + DOMAIN1, "via-465")
        self.assertEqual(code, 250, lines)
        files = srv.wait_new(DOMAIN1, 1)
        self.assertEqual(len(files), 1)
        rcv = b"".join(t for t in harness.split_trace(files[0][1])[0] if t.lower().startswith(b"received"))
        self.assertRegex(rcv.decode(), r"with ESMTPSA\b")

    def test_submission_starttls_auth_required(self):
        srv = self.sub_server()
        r = self.raw(srv, "submission")
        lines = r.expect(250, "EHLO client.example")
        self.assertIn("STARTTLS", lines)
        code, lines = r.cmd("MAIL FROM:<me@%s>" % DOMAIN1)
        self.assertEqual(code, 530, lines)
        r.expect(220, "STARTTLS")
        r.starttls()
        r.expect(250, "EHLO client.example")
        code, lines = r.cmd("MAIL FROM:<me@%s>" % DOMAIN1)
        self.assertEqual(code, 530, lines)
        self.assertEqual(self.auth(r, USER1, PASSWORDS[DOMAIN1])[0], 235)
        self.assertEqual(self.send_local(r, "me@" + DOMAIN1, "friend@" + DOMAIN1, "via-587")[0], 250)

    def test_submissions_with_openssl(self):
        harness.require_tool("openssl")
        srv = self.sub_server()
        p = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port("submissions"),
                            "-servername", DOMAIN1, "-crlf", "-ign_eof"],
                           input=b"EHLO s-client.example\nQUIT\n", capture_output=True, timeout=30)
        out = p.stdout.decode(errors="replace")
        self.assertEqual(p.returncode, 0, out[-1500:] + p.stderr.decode(errors="replace"))
        self.assertIn("220 %s ESMTP" % HOSTNAME, out)
        self.assertRegex(out, r"250[- ]AUTH PLAIN\r?\n", out[-1500:])


if __name__ == "__main__":
    unittest.main()
