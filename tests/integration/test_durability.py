"""Durable delivery (SPEC 4, 6): a 250 means the message survives kill -9;
new/ never shows a partial file; a storage failure answers 451 4.3.0 and
leaves nothing visible."""

import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
import unittest
import uuid

import abuseutil
import harness
from harness import DOMAIN1, Raw, Server

SENDER = "durable@sender.example"


def body_for(token, size):
    """A CRLF message of about `size` octets, deterministic per token,
    ending in a trailer line that proves it is complete."""
    head = ("Subject: durable %s\r\nFrom: <%s>\r\n\r\ntoken %s\r\n" % (token, SENDER, token)).encode()
    rnd = random.Random(token)
    lines = []
    n = len(head)
    i = 0
    table = bytes(b"abcdefghij."[i % 11] for i in range(256))
    while n < size:
        line = b"%s %06d %s\r\n" % (token[:8].encode(), i, rnd.randbytes(rnd.randint(0, 120)).translate(table))
        if line.startswith(b"."):
            line = b"x" + line
        lines.append(line)
        n += len(line)
        i += 1
    return head + b"".join(lines) + ("TRAILER %s\r\n" % token).encode()


def stuff(msg):
    out = msg.replace(b"\r\n.", b"\r\n..")
    return b"." + out if out.startswith(b".") else out


def token_of(data):
    i = data.find(b"\r\ntoken ")
    if i < 0:
        return None
    j = data.find(b"\r\n", i + 8)
    return data[i + 8:j].decode()


class Durability(unittest.TestCase):
    def test_kill_9_loses_no_acknowledged_message(self):
        srv = Server(self)
        srv.config["workers"] = 2
        srv.start()
        expected = {}          # token -> message bytes (everything ever sent)
        acked = set()
        lock = threading.Lock()
        stop = threading.Event()
        sent_any = threading.Event()

        def sender(i, port):
            rnd = random.Random(i * 7919 + port)
            try:
                r = Raw(port, timeout=20)
                r.expect(220)
                r.expect(250, "EHLO t%d.example" % i)
                while not stop.is_set():
                    tok = uuid.uuid4().hex
                    msg = body_for(tok, rnd.choice([300, 2000, 20000, 90000, 250000]))
                    with lock:
                        expected[tok] = msg
                    r.send(b"MAIL FROM:<%s>\r\nRCPT TO:<d%d@%s>\r\nDATA\r\n" % (SENDER.encode(), i, DOMAIN1.encode()))
                    r.expect(250)
                    r.expect(250)
                    r.expect(354)
                    wire = stuff(msg) + b".\r\n"
                    for k in range(0, len(wire), 32768):
                        r.send(wire[k:k + 32768])
                    code, lines = r.read_reply()
                    if code == 250:
                        with lock:
                            acked.add(tok)
                        sent_any.set()
                    else:
                        raise AssertionError("DATA answered %d %s" % (code, lines))
            except (OSError, EOFError, AssertionError) as e:
                if not stop.is_set():
                    errors.append("%d: %r" % (i, e))
            finally:
                r.close() if "r" in locals() else None

        total_acked = 0
        for rnd_no in range(2):
            errors = []
            port = srv.port()
            threads = [threading.Thread(target=sender, args=(i, port), daemon=True) for i in range(8)]
            for t in threads:
                t.start()
            deadline = time.monotonic() + 15
            while len(acked) < total_acked + 40 and time.monotonic() < deadline:
                time.sleep(0.02)
            # now, with every sender mid-transaction: kill -9
            stop.set()
            srv.kill()
            for t in threads:
                t.join(20)
            self.assertEqual(errors, [], "senders failed before the kill")
            self.assertGreater(len(acked), total_acked, "no message was acknowledged before the kill")
            total_acked = len(acked)
            print("round %d: %d acknowledged, %d sent in all, %d files in new/" % (
                rnd_no, len(acked), len(expected), len(srv.new_files(DOMAIN1))), file=sys.stderr)
            stop.clear()
            self.check_maildir(srv, expected, acked)
            srv.start()
            self.check_maildir(srv, expected, acked)
        # the restarted server still delivers
        r = Raw(srv.port())
        self.addCleanup(r.close)
        r.expect(220)
        r.expect(250, "EHLO after.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<after@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        tok = uuid.uuid4().hex
        expected[tok] = body_for(tok, 1000)
        r.send(expected[tok] + b".\r\n")
        r.expect(250)
        acked.add(tok)
        self.check_maildir(srv, expected, acked)

    def check_maildir(self, srv, expected, acked):
        seen = {}
        for name, data in srv.read_new(DOMAIN1):
            self.assertEqual(harness.size_suffix(name), len(data),
                             "partial or mislabelled file in new/: %s has %d octets" % (name, len(data)))
            tok = token_of(data)
            self.assertIn(tok, expected, "file %s holds no message we sent" % name)
            self.assertEqual(harness.split_trace(data)[1], expected[tok],
                             "file %s is not the complete message %s" % (name, tok))
            self.assertTrue(data.endswith(("TRAILER %s\r\n" % tok).encode()))
            seen[tok] = seen.get(tok, 0) + 1
        dups = {t: n for t, n in seen.items() if n > 1}
        self.assertEqual(dups, {}, "messages stored more than once")
        lost = sorted(acked - set(seen))
        self.assertEqual(lost, [], "acknowledged (250) messages missing from new/ after kill -9")
        self.assertEqual(srv.new_files(DOMAIN1, "cur"), [])


MNT_SIZE = 4 * 1024 * 1024


class StorageFailure(unittest.TestCase):
    """451 4.3.0 and nothing visible when the maildrop cannot take the
    message. Tests run as root, so permissions do not stop the server: the
    maildrop sits on a small tmpfs that is filled up or remounted
    read-only, or on a disk whose writes fail (harness.failing_disk), or
    the server runs with a file size limit."""

    def mount_tmpfs(self, srv):
        mnt = harness.mount_tmpfs(self, os.path.join(srv.tmp, "mnt"), MNT_SIZE)
        srv.domain_cfg(DOMAIN1)["maildrop"] = os.path.join(mnt, "maildrop")
        return mnt

    def send(self, srv, token, size=1000):
        r = Raw(srv.port())
        self.addCleanup(r.close)
        r.expect(220)
        r.expect(250, "EHLO fail.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<f@%s>" % DOMAIN1)
        # storage may fail when the spool file is created (at DATA) or
        # when it is written or committed (after the final dot)
        reply = r.cmd("DATA")
        if reply[0] != 354:
            return r, reply
        r.send(stuff(body_for(token, size)) + b".\r\n")
        return r, r.read_reply()

    def assert_451_then_recovers(self, srv, r, reply, fix):
        code, lines = reply
        self.assertEqual(code, 451, lines)
        self.assertTrue(lines[0].startswith("4.3.0"), lines)
        self.assertEqual(srv.new_files(DOMAIN1), [], "nothing may be visible in new/ after a 451")
        srv.wait_log(r"level=error event=\S+")
        # the session goes on, and once storage is back mail flows again
        r.expect(250, "NOOP")
        fix()
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<f@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        tok = uuid.uuid4().hex
        r.send(body_for(tok, 500) + b".\r\n")
        r.expect(250)
        files = srv.read_new(DOMAIN1)
        self.assertEqual(len(files), 1)
        self.assertEqual(token_of(files[0][1]), tok)

    def test_disk_full(self):
        srv = Server(self)
        mnt = self.mount_tmpfs(srv)
        srv.start()
        filler = os.path.join(mnt, "filler")
        harness.fill(filler)
        r, reply = self.send(srv, uuid.uuid4().hex, size=300000)
        self.assert_451_then_recovers(srv, r, reply, lambda: os.unlink(filler))

    def test_read_only_maildrop(self):
        srv = Server(self)
        mnt = self.mount_tmpfs(srv)
        srv.start()
        p = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True)
        if p.returncode != 0:
            self.skipTest("cannot remount read-only: %s" % p.stderr.decode())
        r, reply = self.send(srv, uuid.uuid4().hex)
        self.assert_451_then_recovers(
            srv, r, reply, lambda: subprocess.run(["mount", "-o", "remount,rw", mnt], check=True))

    def concurrent_451(self, srv, size):
        """Eight senders at once, each one message of SIZE octets, all sent
        in one go after a barrier: each must get 451 and leave nothing in
        new/ or tmp/."""
        start = threading.Barrier(8)
        replies = [None] * 8

        def sender(i):
            with Raw(srv.port(), timeout=30) as r:
                r.expect(220)
                r.expect(250, "EHLO fail%d.example" % i)
                tx = b"MAIL FROM:<%s>\r\nRCPT TO:<f%d@%s>\r\nDATA\r\n" % (SENDER.encode(), i, DOMAIN1.encode())
                wire = tx + stuff(body_for(uuid.uuid4().hex, size)) + b".\r\n"
                start.wait(10)
                r.send(wire)
                replies[i] = [r.read_reply()[0] for _ in range(4)]

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(replies, [[250, 250, 354, 451]] * 8)
        self.assertEqual(srv.new_files(DOMAIN1), [], "nothing may be visible in new/ after a 451")
        self.assertEqual(abuseutil.wait_tmp_empty(srv), [], "tmp/ files left behind")
        self.assertTrue(srv.running())

    def test_writeback_error_with_concurrent_deliveries(self):
        """Deliveries that commit together share one syncfs() (a batch);
        when the disk fails under them, each gets 451 and none is in new/."""
        srv = Server(self)
        srv.config["workers"] = 1
        fs, fail = harness.failing_disk(self, srv.tmp)
        srv.domain_cfg(DOMAIN1)["maildrop"] = os.path.join(fs, "maildrop")
        srv.start()
        fail()
        self.concurrent_451(srv, 100000)

    def test_disk_full_with_concurrent_small_deliveries(self):
        """Small messages, written whole at their final dot, on a full
        disk: each sender gets 451, and nothing is left."""
        srv = Server(self)
        srv.config["workers"] = 1
        mnt = self.mount_tmpfs(srv)
        srv.start()
        harness.fill(os.path.join(mnt, "filler"))
        self.concurrent_451(srv, 3000)

    def test_file_size_limit(self):
        """RLIMIT_FSIZE (EFBIG on write, SIGXFSZ ignored) needs no mount."""

        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (100000, 100000))

        srv = Server(self, preexec=limit)
        srv.start()
        r, reply = self.send(srv, uuid.uuid4().hex, size=200000)
        self.assert_451_then_recovers(srv, r, reply, lambda: None)


if __name__ == "__main__":
    unittest.main()
