"""Relay (SPEC 5): authenticated submissions to other domains leave through
the durable queue to the MX hosts that DNS names, and failures come back as
DSNs in the sender's maildrop. Real peers on loopback: dnsmasq for DNS
(relay.test MX mx.relay.test -> 127.0.0.1; null.test has a null MX;
implicit.test has no MX but an address; anything else under .test is
NXDOMAIN; multi.test has mx1 (127.0.0.3, preference 10) and mx2 (127.0.0.1,
20)) and a scripted asyncio SMTP server as the MX (relayutil.Peer).
"""

import os
import re
import smtplib
import threading
import time
import unittest

import harness
import relayutil
from harness import DOMAIN1
from relayutil import message, submit

RCPT = "rcpt@relay.test"


class RelayTestCase(unittest.TestCase):
    def setUp(self):
        self.dns = relayutil.DNS(
            self,
            mx=[("relay.test", "mx.relay.test", 10), ("null.test", ".", 0),
                ("multi.test", "mx2.multi.test", 20), ("multi.test", "mx1.multi.test", 10)],
            hosts=[("mx.relay.test", "127.0.0.1"), ("implicit.test", "127.0.0.1"),
                   ("mx1.multi.test", "127.0.0.3"), ("mx2.multi.test", "127.0.0.1")])

    def peer(self, **kw):
        return relayutil.Peer(self, **kw)

    def server(self, peer_port, start=True, **relay):
        return relayutil.relay_server(self, self.dns.port, peer_port, start=start, **relay)

    def queue_files(self, srv):
        q = srv.config["relay"]["queue"]
        try:
            return sorted(n for n in os.listdir(q) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def queue_entries(self, srv):
        """An entry is its ID.msg (ID.env holds the state once an attempt
        has been recorded)."""
        return [n for n in self.queue_files(srv) if n.endswith(".msg")]

    def wait_state_file(self, srv, entry, timeout=10):
        """Waits for ENTRY's (ID.msg's) ID.env: a deferral's log line may
        come just before the state file is in place."""
        env = entry[:-4] + ".env"
        deadline = time.monotonic() + timeout
        while env not in self.queue_files(srv):
            if time.monotonic() > deadline:
                self.fail("no %s after %ss: %s" % (env, timeout, self.queue_files(srv)))
            time.sleep(0.05)

    def wait_queue_empty(self, srv, timeout=20):
        deadline = time.monotonic() + timeout
        while self.queue_files(srv):
            if time.monotonic() > deadline:
                self.fail("queue not empty after %ss: %s\n%s" % (timeout, self.queue_files(srv),
                                                                 srv.stderr()[-3000:]))
            time.sleep(0.05)

    def assert_one_dsn(self, srv, timeout=20):
        dsns = relayutil.wait_dsn(srv, 1, timeout)
        self.assertEqual(len(dsns), 1, "expected one DSN; log:\n" + srv.stderr()[-3000:])
        name, data = dsns[0]
        self.assertEqual(harness.size_suffix(name), len(data), "S= must be the exact file size")
        return relayutil.parse_dsn(data)


class Delivery(RelayTestCase):
    def test_delivered_once_with_sendas(self):
        """SPEC 4 send-as, then SPEC 5: the MX sees the rewritten From and
        MAIL FROM, once; the queue empties; no DSN without NOTIFY=SUCCESS."""
        peer = self.peer()
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(subject="[sendas:sales] hi"))
        tx = peer.wait_transactions(1)[0]
        self.assertEqual(tx.mail_from, "sales@" + DOMAIN1)
        self.assertEqual(tx.rcpts, [RCPT])
        m = tx.message()
        self.assertIn("sales@" + DOMAIN1, m["From"])
        self.assertEqual(str(m["Subject"]), "hi")
        self.assertIn(b"hello from the relay test", tx.data)
        srv.wait_log(r"event=relay_delivered .*rcpt=rcpt@relay\.test .*host=mx\.relay\.test")
        self.wait_queue_empty(srv)
        time.sleep(1.5)
        self.assertEqual(len(peer.transactions), 1)
        self.assertEqual(relayutil.dsn_files(srv), [])
        self.assertEqual(srv.log_lines("relay_attempt").__len__(), 1)

    def test_dot_stuffing_and_size(self):
        """Lines starting with '.' survive (the peer unstuffs), SIZE= is the
        queued size, and a large body streams through."""
        peer = self.peer()
        srv = self.server(peer.port)
        body = "".join(".line %d with a leading dot\r\n" % i for i in range(20000)) + ".\r\n..\r\nend\r\n"
        submit(srv, [RCPT], message(body=body))
        tx = peer.wait_transactions(1, timeout=30)[0]
        self.assertTrue(tx.data.endswith(body.encode()), tx.data[-200:])
        self.assertRegex(tx.mail_params, r"SIZE=\d+")

    def test_several_recipients_one_transaction(self):
        """Recipients of one domain share one transaction (RFC 5321 3.3)."""
        peer = self.peer()
        srv = self.server(peer.port)
        rcpts = ["a@relay.test", "b@relay.test", "c@RELAY.test"]
        submit(srv, rcpts, message())
        tx = peer.wait_transactions(1)[0]
        self.assertEqual(sorted(tx.rcpts), sorted(rcpts))
        self.wait_queue_empty(srv)
        self.assertEqual(len(peer.transactions), 1)

    def test_smarthost_bypasses_mx(self):
        """relay.smarthost: everything goes there; no MX lookup at all."""
        peer = self.peer()
        srv = self.server(1, smarthost="127.0.0.1:%d" % peer.port)
        submit(srv, ["someone@nowhere.test"], message(to="someone@nowhere.test"))
        tx = peer.wait_transactions(1)[0]
        self.assertEqual(tx.rcpts, ["someone@nowhere.test"])
        self.wait_queue_empty(srv)
        self.assertNotIn("query[MX]", self.dns.log())

    def test_spare_files_reused_and_removed_by_hand(self):
        """A relayed entry's file stays in the queue directory as a spare
        (.spare.N) that the next entry is written over; if an operator
        removed the spares meanwhile, the next entry gets a new file."""
        peer = self.peer()
        srv = self.server(1, smarthost="127.0.0.1:%d" % peer.port)
        q = srv.config["relay"]["queue"]

        def spares():
            return sorted(n for n in os.listdir(q) if n.startswith(".spare."))

        def relay(subject, n):
            self.assertEqual(submit(srv, [RCPT], message(subject=subject)), {})
            self.assertEqual(str(peer.wait_transactions(n)[n - 1].message()["Subject"]), subject)
            self.wait_queue_empty(srv)

        relay("first", 1)
        first = spares()
        self.assertEqual(len(first), 1, os.listdir(q))
        ino = os.stat(os.path.join(q, first[0])).st_ino
        relay("second", 2)
        self.assertEqual(len(spares()), 1, os.listdir(q))
        self.assertEqual(os.stat(os.path.join(q, spares()[0])).st_ino, ino, "the spare was not reused")
        os.unlink(os.path.join(q, spares()[0]))
        relay("third", 3)  # its spare is gone: a new file, and 250 all the same
        self.assertEqual(len(spares()), 1, os.listdir(q))
        self.assertEqual(srv.log_lines("spool_open_failed"), [])

    def test_implicit_mx(self):
        """No MX record: the domain's own address (RFC 5321 5.1)."""
        peer = self.peer()
        srv = self.server(peer.port)
        submit(srv, ["x@implicit.test"], message(to="x@implicit.test"))
        tx = peer.wait_transactions(1)[0]
        self.assertEqual(tx.rcpts, ["x@implicit.test"])

    def test_next_mx_when_first_refuses_connection(self):
        """RFC 5321 5.1: hosts in preference order; mx1 (nothing listens
        there) is skipped, mx2 takes the mail."""
        peer = self.peer()
        srv = self.server(peer.port)
        submit(srv, ["x@multi.test"], message(to="x@multi.test"))
        tx = peer.wait_transactions(1)[0]
        self.assertEqual(tx.rcpts, ["x@multi.test"])
        attempts = srv.log_lines("relay_attempt")
        self.assertIn("host=mx1.multi.test", attempts[0])
        self.assertIn("host=mx2.multi.test", attempts[1])
        srv.wait_log(r"event=relay_connect_failed .*host=mx1\.multi\.test")
        srv.wait_log(r"event=relay_delivered .*host=mx2\.multi\.test")

    def test_next_mx_after_421_greeting(self):
        """A host that greets with 421 fails the host, not the message: the
        next MX is tried in the same attempt."""
        peer2 = self.peer()
        peer1 = self.peer(host="127.0.0.3", port=peer2.port)
        peer1.greeting = lambda conn: "421 4.3.2 too busy, try another"
        srv = self.server(peer2.port)
        submit(srv, ["y@multi.test"], message(to="y@multi.test"))
        tx = peer2.wait_transactions(1)[0]
        self.assertEqual(tx.rcpts, ["y@multi.test"])
        self.assertEqual(peer1.connections, 1)
        self.assertEqual(peer1.transactions, [])
        self.assertEqual(srv.log_lines("relay_deferred"), [])

    def test_starttls_opportunistic(self):
        """relay.tls = opportunistic: STARTTLS when offered (no verification
        of the self-signed certificate), then the message inside TLS."""
        peer = self.peer(tls_context=relayutil.peer_tls_context())
        srv = self.server(peer.port, tls="opportunistic")
        submit(srv, [RCPT], message())
        tx = peer.wait_transactions(1)[0]
        self.assertTrue(tx.tls, "the transaction should have run inside TLS")
        srv.wait_log(r"event=relay_delivered .*tls=yes")

    def trust_test_ca(self):
        """The server's OpenSSL trusts the test certificate (SSL_CERT_FILE
        is read by SSL_CTX_set_default_verify_paths)."""
        crt, _ = harness.certs()["d1"]
        old = os.environ.get("SSL_CERT_FILE")
        os.environ["SSL_CERT_FILE"] = crt
        self.addCleanup(lambda: os.environ.__setitem__("SSL_CERT_FILE", old) if old is not None
                        else os.environ.pop("SSL_CERT_FILE", None))

    def test_tls_required_verified(self):
        """relay.tls = required with a certificate that verifies for the
        host name dialled (the smarthost "localhost", one of its names)."""
        self.trust_test_ca()
        peer = self.peer(tls_context=relayutil.peer_tls_context())
        srv = self.server(1, tls="required", smarthost="localhost:%d" % peer.port)
        submit(srv, [RCPT], message())
        tx = peer.wait_transactions(1)[0]
        self.assertTrue(tx.tls)
        srv.wait_log(r"event=relay_delivered .*tls=yes")
        self.assertEqual(srv.log_lines("relay_tls_failed"), [])

    def test_tls_required_name_mismatch_defers(self):
        """required: a trusted certificate for another name (the MX is
        mx.relay.test, the certificate names localhost) is refused."""
        self.trust_test_ca()
        peer = self.peer(tls_context=relayutil.peer_tls_context())
        srv = self.server(peer.port, tls="required")
        submit(srv, [RCPT], message())
        srv.wait_log(r"event=relay_tls_failed .*host=mx\.relay\.test .*hostname mismatch")
        srv.wait_log(r"event=relay_deferred .*status=4\.7\.5")
        self.assertEqual(peer.transactions, [])

    def test_tls_required_unverifiable_defers(self):
        """relay.tls = required: a certificate that does not verify is a
        temporary failure, never a plaintext fallback."""
        peer = self.peer(tls_context=relayutil.peer_tls_context())
        srv = self.server(peer.port, tls="required")
        submit(srv, [RCPT], message())
        srv.wait_log(r"event=relay_tls_failed .*host=mx\.relay\.test")
        srv.wait_log(r"event=relay_deferred .*rcpt=rcpt@relay\.test")
        self.assertEqual(peer.transactions, [])


class Reuse(RelayTestCase):
    """Connection reuse: a delivery thread keeps its connection for a
    moment, and the next message to the same destination goes over it."""

    def test_next_message_reuses_the_connection(self):
        peer = self.peer()
        srv = self.server(peer.port)
        for i in range(3):
            submit(srv, [RCPT], message(subject="reuse %d" % i))
            peer.wait_transactions(i + 1)
            # the entry is gone once its thread is done with it: the next
            # one then finds that thread parked with the connection
            self.wait_queue_empty(srv)
        txs = peer.wait_transactions(3)
        self.assertEqual([str(t.message()["Subject"]) for t in txs],
                         ["reuse 0", "reuse 1", "reuse 2"])
        self.assertEqual([t.conn for t in txs], [1, 1, 1], "one connection for all three")
        self.assertEqual(peer.connections, 1)
        # one greeting, one EHLO; MAIL straight after the previous 250
        ehlos = [c for c in peer.commands if c[1].upper().startswith("EHLO")]
        self.assertEqual(len(ehlos), 1, peer.commands)
        self.assertFalse([c for c in peer.commands if c[1].upper() == "RSET"])
        srv.wait_log(r"event=relay_attempt .*reuse=2", timeout=5)
        self.wait_queue_empty(srv)
        # idle for longer than it may be: QUIT, and the next one connects anew
        time.sleep(3)
        self.assertIn((1, "QUIT"), peer.commands)
        submit(srv, [RCPT], message(subject="after idle"))
        tx = peer.wait_transactions(4)[3]
        self.assertEqual(tx.conn, 2)

    def test_kept_only_for_the_same_destination(self):
        """A connection kept for relay.test is not used for implicit.test,
        though both reach the same server: the next destination closes it
        (QUIT) and connects anew."""
        peer = self.peer()
        srv = self.server(peer.port)
        for i, rcpt in enumerate([RCPT, "x@implicit.test", RCPT]):
            submit(srv, [rcpt], message(to=rcpt, subject="dest %d" % i))
            peer.wait_transactions(i + 1)
            self.wait_queue_empty(srv)
        txs = peer.wait_transactions(3)
        self.assertEqual([t.rcpts for t in txs], [[RCPT], ["x@implicit.test"], [RCPT]])
        self.assertEqual([t.conn for t in txs], [1, 2, 3])
        for conn in (1, 2):
            self.assertIn((conn, "QUIT"), peer.commands)

    def test_connection_dropped_while_idle_is_not_a_failure(self):
        """The server closed the kept connection: the next message goes on a
        new one at once, without a deferral."""
        peer = self.peer()
        peer.after_data = lambda tx, conn: conn == 1
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(subject="first"))
        peer.wait_transactions(1)
        time.sleep(0.2)
        submit(srv, [RCPT], message(subject="second"))
        txs = peer.wait_transactions(2, timeout=10)
        self.assertEqual(str(txs[1].message()["Subject"]), "second")
        self.assertEqual(txs[1].conn, 2)
        self.wait_queue_empty(srv)
        self.assertEqual(srv.log_lines("relay_deferred"), [])
        srv.wait_log(r"event=relay_reuse_failed ", timeout=5)


class Failures(RelayTestCase):
    def test_550_gives_dsn(self):
        """5xx from the MX: a DSN (RFC 3464) in the sender's maildrop with
        the peer's reply as Diagnostic-Code, the original attached."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "550 5.1.1 <%s>: mailbox unavailable here" % addr
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(subject="bounce me"))
        msg, rcpts, per_msg = self.assert_one_dsn(srv)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        self.assertEqual(msg["To"].strip("<> "), "mailbox@" + DOMAIN1)
        self.assertIn(harness.HOSTNAME, per_msg.get("Reporting-MTA", ""))
        self.assertEqual(len(rcpts), 1)
        r = rcpts[0]
        self.assertIn(RCPT, r["Final-Recipient"])
        self.assertEqual(r["Action"], "failed")
        self.assertTrue(r["Status"].startswith("5."), r)
        self.assertEqual(r["Status"], "5.1.1")
        self.assertIn("mailbox unavailable here", re.sub(r"\s+", " ", r["Diagnostic-Code"]))
        self.assertIn("mx.relay.test", r.get("Remote-MTA", ""))
        raw = relayutil.dsn_files(srv)[0][1]
        self.assertIn(b"Subject: bounce me", raw)       # RET unset + failure: full copy
        self.wait_queue_empty(srv)
        srv.wait_log(r"event=relay_failed .*status=5\.1\.1")
        srv.wait_log(r"event=dsn_delivered .*rcpt=rcpt@relay\.test .*action=failed")

    def test_partial_failure(self):
        """One recipient refused, one accepted: one delivery, one DSN that
        names only the refused one."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "550 5.1.1 nope" if addr.startswith("bad") else None
        srv = self.server(peer.port)
        submit(srv, ["good@relay.test", "bad@relay.test"], message())
        tx = peer.wait_transactions(1)[0]
        self.assertEqual(tx.rcpts, ["good@relay.test"])
        _, rcpts, _ = self.assert_one_dsn(srv)
        self.assertEqual(len(rcpts), 1)
        self.assertIn("bad@relay.test", rcpts[0]["Final-Recipient"])
        self.wait_queue_empty(srv)
        self.assertEqual(len(peer.transactions), 1)

    def test_notify_never_no_dsn(self):
        """NOTIFY=NEVER (RFC 3461 4.1): a failure produces no DSN."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "550 5.1.1 no"
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(), rcpt_options=["NOTIFY=NEVER"])
        srv.wait_log(r"event=relay_failed ")
        self.wait_queue_empty(srv)
        time.sleep(0.5)
        self.assertEqual(relayutil.dsn_files(srv), [])
        self.assertEqual(srv.log_lines("dsn_delivered"), [])

    def test_null_mx(self):
        """RFC 7505: a null MX fails at once (5.1.10), nothing is dialled."""
        peer = self.peer()
        srv = self.server(peer.port)
        submit(srv, ["x@null.test"], message(to="x@null.test"))
        _, rcpts, _ = self.assert_one_dsn(srv, timeout=10)
        self.assertEqual(rcpts[0]["Status"], "5.1.10")
        self.assertEqual(rcpts[0]["Action"], "failed")
        # our own reason, not an SMTP reply (RFC 3464 2.3.6)
        self.assertTrue(rcpts[0]["Diagnostic-Code"].startswith("X-mailpopbox;"), rcpts[0])
        self.assertIn("null MX", rcpts[0]["Diagnostic-Code"])
        self.assertNotIn("Remote-MTA", rcpts[0])
        self.assertEqual(peer.connections, 0)
        self.assertEqual(srv.log_lines("relay_attempt"), [])

    def test_nxdomain(self):
        """A domain that does not exist fails permanently."""
        peer = self.peer()
        srv = self.server(peer.port)
        submit(srv, ["x@nowhere.test"], message(to="x@nowhere.test"))
        _, rcpts, _ = self.assert_one_dsn(srv, timeout=10)
        self.assertTrue(rcpts[0]["Status"].startswith("5."), rcpts[0])
        self.assertEqual(peer.connections, 0)

    def test_null_sender_never_bounced(self):
        """A message from <> never draws a DSN (RFC 5321 6.1)."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "550 5.1.1 no"
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(), sender="<>")
        srv.wait_log(r"event=relay_failed ")
        self.wait_queue_empty(srv)
        time.sleep(0.5)
        self.assertEqual(relayutil.dsn_files(srv), [])

    def test_expired(self):
        """4xx until max_queue_time: then failed, Status 4.4.7, the last
        reply kept as the diagnostic."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "451 4.3.0 try again later, dear"
        srv = self.server(peer.port, max_queue_time="3s")
        submit(srv, [RCPT], message())
        _, rcpts, _ = self.assert_one_dsn(srv, timeout=20)
        self.assertEqual(rcpts[0]["Action"], "failed")
        self.assertEqual(rcpts[0]["Status"], "4.4.7")
        self.assertIn("try again later", rcpts[0]["Diagnostic-Code"])
        self.assertGreaterEqual(peer.connections, 2)
        self.wait_queue_empty(srv)

    def test_queue_on_a_failing_disk(self):
        """The queue's disk fails under concurrent submissions (entries that
        commit together share one syncfs): each gets 451, none is
        relayed, no entry stays."""
        peer = self.peer()
        srv = self.server(peer.port, start=False)
        srv.config["workers"] = 1
        fs, fail = harness.failing_disk(self, srv.tmp)
        srv.config["relay"]["queue"] = os.path.join(fs, "queue")
        srv.start()
        fail()
        start = threading.Barrier(8)
        codes = [None] * 8

        def submitter(i):
            start.wait(10)
            try:
                submit(srv, [RCPT], message(body="x" * 100000 + "\r\n"))
                codes[i] = 250
            except smtplib.SMTPDataError as e:
                codes[i] = e.smtp_code

        threads = [threading.Thread(target=submitter, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(codes, [451] * 8)
        self.wait_queue_empty(srv, timeout=10)  # a refused entry's file is unlinked after the 451
        # each failure logged: at the commit, or (once the file system has
        # seen errors) already when its file was opened at DATA
        self.assertEqual(len(srv.log_lines("queue_failed")) + len(srv.log_lines("spool_open_failed")), 8)
        self.assertEqual(peer.transactions, [])


class Retry(RelayTestCase):
    def test_451_then_250(self):
        """4xx: retried per relay.retry; delivered exactly once."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "451 4.7.1 greylisted, come back" if conn == 1 else None
        srv = self.server(peer.port)
        submit(srv, [RCPT], message())
        srv.wait_log(r"event=relay_deferred .*rcpt=rcpt@relay\.test .*greylisted")
        tx = peer.wait_transactions(1, timeout=20)
        self.assertEqual(tx[0].conn, 2)
        self.wait_queue_empty(srv)
        time.sleep(1.5)
        self.assertEqual(len(peer.transactions), 1)
        self.assertEqual(peer.connections, 2)
        self.assertEqual(relayutil.dsn_files(srv), [])

    def test_451_after_data(self):
        """4xx to the end of data: the message is sent again in full, on a
        new connection (one that gave a 4xx is not kept for reuse)."""
        peer = self.peer()
        peer.data_reply = lambda tx, conn: "451 4.3.0 disk hiccup" if conn == 1 else None
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(subject="again"))
        tx = peer.wait_transactions(1, timeout=20)[0]
        self.assertEqual(tx.conn, 2)
        self.assertIn((1, "QUIT"), peer.commands)
        self.assertEqual(str(tx.message()["Subject"]), "again")

    def test_peer_down_kill_restart(self):
        """The queue survives kill -9: peer down, server killed and started
        again, peer up: the message arrives exactly once."""
        port = relayutil.free_port()
        peer = self.peer(port=port, start=False)
        srv = self.server(port)
        submit(srv, [RCPT], message(subject="durable"))
        srv.wait_log(r"event=relay_deferred .*rcpt=rcpt@relay\.test")
        entries = self.queue_entries(srv)
        self.assertEqual(len(entries), 1)
        # the deferral records its state next to the message
        self.wait_state_file(srv, entries[0])
        self.assertEqual(self.queue_files(srv), [entries[0][:-4] + ".env", entries[0]])
        srv.kill()
        self.assertEqual(len(self.queue_entries(srv)), 1)
        peer.start()
        srv.start()
        tx = peer.wait_transactions(1, timeout=20)
        self.assertEqual(str(tx[0].message()["Subject"]), "durable")
        self.wait_queue_empty(srv)
        time.sleep(1.5)
        self.assertEqual(len(peer.transactions), 1)

    def test_message_file_removed(self):
        """An operator removes a deferred entry's message file: the next
        try says so in the log, sends nothing and clears the state file."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "451 4.7.1 later" if conn == 1 else None
        srv = self.server(peer.port, retry=["2s"])
        submit(srv, [RCPT], message(subject="removed"))
        srv.wait_log(r"event=relay_deferred .*rcpt=rcpt@relay\.test")
        entries = self.queue_entries(srv)
        self.assertEqual(len(entries), 1)
        ident = entries[0][:-4]
        self.wait_state_file(srv, entries[0])
        os.unlink(os.path.join(srv.config["relay"]["queue"], entries[0]))
        srv.wait_log(r"event=relay_entry_gone id=%s " % re.escape(ident), timeout=20)
        self.wait_queue_empty(srv)
        self.assertEqual(peer.transactions, [])
        self.assertTrue(srv.running())

    def test_delay_notification(self):
        """NOTIFY=DELAY,FAILURE: one delay report after a 4xx, then none
        when it is delivered."""
        peer = self.peer()
        peer.rcpt_reply = lambda addr, conn: "451 4.2.0 later" if conn <= 2 else None
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(), rcpt_options=["NOTIFY=DELAY,FAILURE"])
        peer.wait_transactions(1, timeout=20)
        self.wait_queue_empty(srv)
        dsns = relayutil.dsn_files(srv)
        self.assertEqual(len(dsns), 1, srv.stderr()[-3000:])
        _, rcpts, _ = relayutil.parse_dsn(dsns[0][1])
        self.assertEqual(rcpts[0]["Action"], "delayed")
        self.assertTrue(rcpts[0]["Status"].startswith("4."), rcpts[0])


class Success(RelayTestCase):
    def notify_success(self, dsn):
        peer = self.peer(dsn=dsn)
        srv = self.server(peer.port)
        submit(srv, [RCPT], message(), rcpt_options=["NOTIFY=SUCCESS"])
        tx = peer.wait_transactions(1)[0]
        _, rcpts, _ = self.assert_one_dsn(srv)
        return tx, rcpts[0]

    def test_relayed_when_peer_has_no_dsn(self):
        """RFC 3461 5.2.2: the next hop does not offer DSN -> relayed."""
        tx, r = self.notify_success(dsn=False)
        self.assertEqual(r["Action"], "relayed")
        self.assertNotIn("NOTIFY", tx.rcpt_params.get(RCPT, ""))

    def test_delivered_when_peer_has_dsn(self):
        """The next hop offers DSN: it is asked to report; we say delivered
        and pass NOTIFY on."""
        tx, r = self.notify_success(dsn=True)
        self.assertEqual(r["Action"], "delivered")
        self.assertIn("NOTIFY=SUCCESS", tx.rcpt_params.get(RCPT, ""))


    def test_local_delivery_success_notice(self):
        """SPEC 5: NOTIFY=SUCCESS on a recipient of our own domain gives a
        DSN with "Action: delivered" (no Remote-MTA: nothing was relayed);
        without NOTIFY=SUCCESS no DSN and no queue entry."""
        peer = self.peer()
        srv = self.server(peer.port)
        local = "someone@" + DOMAIN1
        submit(srv, [local], message(subject="no notice"))
        submit(srv, [local], message(subject="notice please"),
               rcpt_options=["NOTIFY=SUCCESS,FAILURE"])
        _, rcpts, per_msg = self.assert_one_dsn(srv)
        self.assertEqual(len(rcpts), 1)
        r = rcpts[0]
        self.assertIn(local, r["Final-Recipient"])
        self.assertEqual(r["Action"], "delivered")
        self.assertEqual(r["Status"], "2.0.0")
        self.assertNotIn("Remote-MTA", r)
        raw = relayutil.dsn_files(srv)[0][1]
        self.assertIn(b"notice please", raw)
        self.assertNotIn(b"no notice", raw)
        self.wait_queue_empty(srv)
        self.assertEqual(peer.transactions, [])


class Shutdown(RelayTestCase):
    def test_stop_during_slow_attempt(self):
        """SIGTERM while the relay waits on a silent MX: exit 0 promptly,
        the entry stays queued."""
        import socket
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(5)     # accepts, never greets
        self.addCleanup(lsock.close)
        srv = self.server(lsock.getsockname()[1])
        submit(srv, [RCPT], message())
        srv.wait_log(r"event=relay_attempt ")
        time.sleep(0.3)
        t0 = time.monotonic()
        srv.stop()
        self.assertLess(time.monotonic() - t0, 8)
        self.assertEqual(len(self.queue_entries(srv)), 1)


if __name__ == "__main__":
    unittest.main()


# --------------------------------------------------------------------------
# Postfix's smtp-sink as the remote MX: a real, independent SMTP server.


SMTP_SINK = "/usr/sbin/smtp-sink"


class Sink:
    """smtp-sink on a loopback port, dumping each transaction to a file in
    dir (its -d option); `reject` holds -f (5xx) / -r (4xx) arguments."""

    def __init__(self, test, port=None, args=()):
        import subprocess
        import tempfile
        self.test = test
        self.port = port or relayutil.free_port()
        self.dir = tempfile.mkdtemp(prefix="sink-", dir=harness.tmp_root())
        os.chmod(self.dir, 0o777)
        self.proc = subprocess.Popen([SMTP_SINK, "-u", "root", "-d", self.dir + "/%M.", *args,
                                      "127.0.0.1:%d" % self.port, "100"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        test.addCleanup(self.stop)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            import socket
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        test.fail("smtp-sink did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def dumps(self):
        out = []
        for n in sorted(os.listdir(self.dir)):
            with open(os.path.join(self.dir, n), "rb") as f:
                out.append(f.read())
        return out

    def wait_dumps(self, n, timeout=20):
        """At least n dump files, each written completely: smtp-sink creates
        the file before it writes, so wait until none is empty and their
        sizes hold still."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            d = self.dumps()
            sizes = [len(x) for x in d]
            if len(d) >= n and all(sizes) and sizes == last:
                return d
            last = sizes
            time.sleep(0.1)
        return self.dumps()


@unittest.skipUnless(os.path.exists(SMTP_SINK), "smtp-sink (postfix) is not installed")
class RealPeer(RelayTestCase):
    def test_delivered_to_smtp_sink_with_sendas(self):
        """The message reaches a real SMTP server once, sent as NAME@DOMAIN
        in both the envelope and the From header, tag gone."""
        sink = Sink(self)
        srv = self.server(sink.port)
        submit(srv, [RCPT], message(subject="[sendas:sales] quarterly"))
        dumps = sink.wait_dumps(1)
        self.wait_queue_empty(srv)
        time.sleep(0.3)
        self.assertEqual(len(sink.dumps()), 1, "delivered exactly once")
        d = dumps[0]
        self.assertRegex(d, rb"(?m)^X-Mail-Args: <sales@example\.test>$")
        self.assertRegex(d, rb"(?m)^X-Rcpt-Args: <rcpt@relay\.test>$")
        self.assertRegex(d, rb"(?m)^From: Me <sales@example\.test>\r?$")
        self.assertRegex(d, rb"(?m)^Subject: quarterly\r?$")
        self.assertIn(b"hello from the relay test", d)
        self.assertEqual(relayutil.dsn_files(srv), [])

    def test_hard_reject_gives_dsn(self):
        """smtp-sink refuses RCPT with 5xx: a DSN in the sender's maildrop
        with smtp-sink's reply as the diagnostic."""
        sink = Sink(self, args=("-f", "RCPT"))
        srv = self.server(sink.port)
        submit(srv, [RCPT], message(subject="refused please"))
        _, rcpts, _ = self.assert_one_dsn(srv)
        self.assertEqual(rcpts[0]["Action"], "failed")
        self.assertTrue(rcpts[0]["Status"].startswith("5."), rcpts[0])
        self.assertIn("smtp;", rcpts[0]["Diagnostic-Code"])
        self.wait_queue_empty(srv)
        self.assertEqual(sink.dumps(), [])

    def test_soft_reject_then_accept_delivers_once(self):
        """4xx at RCPT: kept and retried; once the MX accepts, delivered
        exactly once and no DSN."""
        sink = Sink(self, args=("-r", "RCPT"))
        srv = self.server(sink.port)
        submit(srv, [RCPT], message(subject="try again"))
        srv.wait_log(r"event=relay_deferred ", timeout=20)
        self.assertEqual(len(self.queue_entries(srv)), 1)
        sink.stop()
        sink2 = Sink(self, port=sink.port)
        dumps = sink2.wait_dumps(1, timeout=30)
        self.wait_queue_empty(srv, timeout=30)
        time.sleep(0.5)
        self.assertEqual(len(sink2.dumps()), 1)
        self.assertIn(b"Subject: try again", dumps[0])
        self.assertEqual(relayutil.dsn_files(srv), [])

    def test_sink_down_kill_restart_delivers_once(self):
        """The MX is down, the server is killed with -9 with the entry
        queued, restarted, the MX comes up: delivered exactly once."""
        port = relayutil.free_port()
        srv = self.server(port)
        submit(srv, [RCPT], message(subject="survive kill"))
        srv.wait_log(r"event=relay_(deferred|connect_failed) ", timeout=20)
        srv.kill()
        self.assertEqual(len(self.queue_entries(srv)), 1, "the entry survives kill -9")
        srv.start()
        sink = Sink(self, port=port)
        dumps = sink.wait_dumps(1, timeout=30)
        self.wait_queue_empty(srv, timeout=30)
        time.sleep(0.5)
        self.assertEqual(len(sink.dumps()), 1)
        self.assertIn(b"Subject: survive kill", dumps[0])

    def test_smarthost_address_literal_needs_no_dns(self):
        """relay.smarthost = "127.0.0.1:PORT" is an address, not a name: it
        is dialled at once even when no resolver answers (c-ares would ask
        one about "127.0.0.1" and wait for it)."""
        sink = Sink(self)
        dead = relayutil.free_port()   # nothing listens: every DNS query would time out
        srv = relayutil.relay_server(self, dead, 25, smarthost="127.0.0.1:%d" % sink.port)
        t0 = time.monotonic()
        submit(srv, [RCPT, "other@elsewhere.test"], message(subject="literal"))
        dumps = sink.wait_dumps(1, timeout=20)
        self.assertEqual(len(dumps), 1, srv.stderr()[-2000:])
        self.assertLess(time.monotonic() - t0, 2.5, "no DNS wait (c-ares tries 3 s per query)")
        self.wait_queue_empty(srv)
