"""Power cuts (SPEC 6, sync = "full"): what a 250 promised is on the disk
even if the machine loses power right after it, and a file in new/ (or a
relay queue entry) is always whole.

kill -9 (test_durability) keeps the page cache; a power cut does not. The
maildrop (or the relay queue) sits on ext4 on a disk that logs every write
and cache flush in the order the disk receives them (harness.LoggedDisk).
Senders deliver (or submit for a remote recipient, the next hop down, so
entries stay queued and retries rewrite their state files) without pause
while the test records, a dozen times, which messages have been
acknowledged so far and then puts a mark in the disk's log. For each mark
the disk is rebuilt as a power cut there would leave it: every write before
the last cache flush that precedes the mark (what a flush promises is
stable), and once more with a random half of the writes after that flush
as well (a disk may have written any of those, in any order). The rebuilt
disk is checked by e2fsck -fy, as a boot would, and mounted: every message
acknowledged before the mark must be there, whole and exactly once, and
every file in new/ and cur/ and every queue entry must be a whole message
we sent.

Checked against servers broken on purpose, each of which fails here: no
data sync before the rename into new/, no fsync of new/ before the 250,
queue entries without their data sync, without the queue directory's fsync.

ext4 with its journal, as mkfs.ext4 makes it. Without a journal ext4 orders
none of its own metadata writes, and no program's order of syncs can make
up for it; this test, run on such a file system, found cuts after which
e2fsck salvaged a growing htree directory (new/) whose new blocks had been
written without its inode, moving long-acknowledged messages, whole, into
lost+found, and a state file name (ID.env) that pointed at its inode number
after the inode had been reused for a newer file, whose data had not been
written. mailpopbox logs event=storage_unjournaled at startup for a
maildrop or queue on such a file system (test_ops)."""

import os
import random
import socket
import sys
import threading
import time
import unittest
import uuid

import smtplib

import harness
import relayutil
import test_durability as td
from harness import DOMAIN1, PASSWORDS, Raw, Server

MARKS = 12
SENDERS = 6


SIZES = [300, 1500, 6000, 40000]


class PowerCut(unittest.TestCase):
    def run_cuts(self, relay):
        srv = Server(self)
        disk = self.disk = harness.LoggedDisk(self, os.path.join(srv.tmp, "disk"))
        if relay:
            # the next hop is down: every entry stays, and each retry
            # rewrites its state file
            dead = self.closed_port()
            relayutil.relay_config(srv, dead, dead, retry=["1s"],
                                   smarthost="localhost:%d" % dead,
                                   queue=os.path.join(disk.fs, "queue"))
        else:
            srv.domain_cfg(DOMAIN1)["maildrop"] = os.path.join(disk.fs, "maildrop")
        srv.start()

        expected = {}   # token -> the message as sent
        acked = []      # tokens in the order their 250 came
        lock = threading.Lock()
        stop = threading.Event()
        errors = []

        def deliver(i, port):
            """Inbound SMTP into the maildrop, pipelined."""
            rnd = random.Random(i)
            r = Raw(port, timeout=30)
            try:
                r.expect(220)
                r.expect(250, "EHLO cut%d.example" % i)
                while not stop.is_set():
                    tok = uuid.uuid4().hex
                    msg = td.body_for(tok, rnd.choice(SIZES))
                    with lock:
                        expected[tok] = msg
                    r.send(b"MAIL FROM:<%s>\r\nRCPT TO:<c%d@%s>\r\nDATA\r\n"
                           % (td.SENDER.encode(), i, DOMAIN1.encode()))
                    r.expect(250)
                    r.expect(250)
                    r.expect(354)
                    r.send(td.stuff(msg) + b".\r\n")
                    code, lines = r.read_reply()
                    if code != 250:
                        raise AssertionError("DATA answered %d %s" % (code, lines))
                    with lock:
                        acked.append(tok)
            finally:
                r.close()

        def submit(i, port):
            """Authenticated submission for a remote recipient: queued."""
            rnd = random.Random(i)
            c = smtplib.SMTP("127.0.0.1", port, local_hostname="cut%d.example" % i, timeout=30)
            try:
                c.starttls(context=harness.client_context())
                c.login("mailbox@" + DOMAIN1, PASSWORDS[DOMAIN1])
                while not stop.is_set():
                    tok = uuid.uuid4().hex
                    msg = td.body_for(tok, rnd.choice(SIZES))
                    with lock:
                        expected[tok] = msg
                    c.sendmail("mailbox@" + DOMAIN1, ["r%d@relay.test" % i], msg)
                    with lock:
                        acked.append(tok)
            finally:
                c.close()

        def sender(i, port):
            try:
                (submit if relay else deliver)(i, port)
            except (OSError, EOFError, AssertionError, smtplib.SMTPException) as e:
                if not stop.is_set():
                    errors.append("sender %d: %r" % (i, e))

        port = srv.port("submission" if relay else "smtp")
        threads = [threading.Thread(target=sender, args=(i, port), daemon=True) for i in range(SENDERS)]
        for t in threads:
            t.start()
        marks = []      # (name, number of tokens acknowledged before it)
        deadline = time.monotonic() + 60
        while len(marks) < MARKS and time.monotonic() < deadline:
            time.sleep(0.15)
            with lock:
                n = len(acked)
            if n == (marks[-1][1] if marks else 0):
                continue
            name = "m%d" % len(marks)
            disk.mark(name)
            marks.append((name, n))
        # the power goes: nothing after this reaches the disk
        stop.set()
        srv.kill()
        records = disk.stop()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(len(marks), MARKS, "too few acknowledgements to cut between")

        kinds = [k for k, _, _ in records]
        print("%s: %d writes, %d flushes, %d messages acknowledged" % (
            "relay queue" if relay else "maildrop", kinds.count(b"W"), kinds.count(b"F"), len(acked)),
            file=sys.stderr)
        rnd = random.Random(len(records))
        for name, n in marks:
            at = next(i for i, (k, _, d) in enumerate(records) if k == b"M" and d == name.encode())
            flush = max((i for i in range(at) if kinds[i] == b"F"), default=0)
            after = [i for i in range(flush, at) if kinds[i] == b"W"]
            for extra in ([], sorted(rnd.sample(after, len(after) // 2))):
                with disk.cut(records, flush, extra) as (mnt, fsck):
                    what = ("power cut at %s (%d acknowledged; %d of %d writes after the last flush "
                            "kept; e2fsck exit %d)" % (name, n, len(extra), len(after), fsck))
                    # (1: the journal replayed, or something fixed; 4 and up:
                    # errors left, which a journal exists to prevent)
                    self.assertLess(fsck, 4, "%s: e2fsck said:\n%s" % (what, disk.fsck_output[-3000:]))
                    (self.check_queue if relay else self.check)(mnt, expected, acked[:n], what)

    def check(self, root, expected, acked, what):
        """The maildrop at ROOT/maildrop after the cut: every file in new/
        and cur/ a whole message, none twice; every acknowledged message
        there."""
        seen = {}
        for sub in ("new", "cur"):
            d = os.path.join(root, "maildrop", sub)
            for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                data = read(os.path.join(d, name))
                self.assertEqual(harness.size_suffix(name), len(data),
                                 "%s: partial file %s/%s (%d octets)" % (what, sub, name, len(data)))
                tok = td.token_of(data)
                self.assertIn(tok, expected, "%s: %s/%s holds no message we sent" % (what, sub, name))
                self.assertEqual(harness.split_trace(data)[1], expected[tok],
                                 "%s: %s/%s is not the whole message %s" % (what, sub, name, tok))
                seen[tok] = seen.get(tok, 0) + 1
        self.assertEqual({t: c for t, c in seen.items() if c > 1}, {}, "%s: stored twice" % what)
        self.missing(root, seen, acked, what)

    def check_queue(self, root, expected, acked, what):
        """The queue at ROOT/queue after the cut: every entry (ID.msg)
        whole as the server's loader reads it (store/queue.c
        queue_read_entry), none twice; every acknowledged submission in one
        of them."""
        qdir = os.path.join(root, "queue")
        seen = {}
        for name in sorted(os.listdir(qdir)) if os.path.isdir(qdir) else []:
            if name.startswith(".") or not name.endswith(".msg"):
                continue  # spares, and *.tmp never acknowledged
            msg = queue_message(qdir, name[:-4])
            self.assertIsNotNone(msg, "%s: queue entry %s is not whole" % (what, name))
            tok = td.token_of(msg)
            self.assertIn(tok, expected, "%s: entry %s holds no message we sent" % (what, name))
            # (the server adds Date: and Message-ID: to the header block)
            body = expected[tok].split(b"\r\n\r\n", 1)[1]
            self.assertTrue(msg.endswith(b"\r\n\r\n" + body),
                            "%s: entry %s is not the whole message %s" % (what, name, tok))
            seen[tok] = seen.get(tok, 0) + 1
        self.assertEqual({t: c for t, c in seen.items() if c > 1}, {}, "%s: queued twice" % what)
        self.missing(root, seen, acked, what)

    def missing(self, root, seen, acked, what):
        lost = [t for t in acked if t not in seen]
        self.assertEqual(lost, [], "%s: %d acknowledged messages lost; e2fsck said:\n%s"
                         % (what, len(lost), self.disk.fsck_output[-3000:]))

    def closed_port(self):
        """A loopback port that refuses connections for the whole test: a
        TCP socket bound to it and never listening (so no other test's
        server can take it meanwhile)."""
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.addCleanup(s.close)
        return s.getsockname()[1]

    def test_maildrop(self):
        self.run_cuts(relay=False)

    def test_relay_queue(self):
        self.run_cuts(relay=True)


FOOTER = b"mailpopbox-env "
FOOTER_LEN = len(FOOTER) + 20 + 1


def read(path):
    with open(path, "rb") as f:
        return f.read()


def queue_message(qdir, qid):
    """The message of queue entry QID as store/queue.c reads it: its state
    from ID.env when there is one, else from the trailer the footer of
    ID.msg locates; the message is ID.msg's first `size` octets, and the
    state's id must be QID. None when the entry is not whole."""
    data = read(os.path.join(qdir, qid + ".msg"))
    env = os.path.join(qdir, qid + ".env")
    trailer = not os.path.exists(env)
    if trailer:
        foot = data[-FOOTER_LEN:]
        if len(data) < FOOTER_LEN or not foot.startswith(FOOTER) or not foot.endswith(b"\n") \
                or not foot[len(FOOTER):-1].isdigit():
            return None
        n = int(foot[len(FOOTER):-1])
        if n > len(data) - FOOTER_LEN:
            return None
        text = data[len(data) - FOOTER_LEN - n:len(data) - FOOTER_LEN]
    else:
        text = read(env)
    lines = text.split(b"\n")
    if not lines or lines[0] != b"mailpopbox-queue 1" or b"end" not in lines:
        return None
    fields = {}
    for line in lines[1:lines.index(b"end")]:
        k, _, v = line.partition(b" ")
        fields.setdefault(k, v)
    if fields.get(b"id") != qid.encode() or not fields.get(b"size", b"").isdigit():
        return None
    size = int(fields[b"size"])
    if trailer and size != len(data) - FOOTER_LEN - n:
        return None
    return data[:size] if size <= len(data) else None
