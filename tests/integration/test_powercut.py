"""Power cuts (SPEC 6, sync = "full"): what a 250 promised is on the disk
even if the machine loses power right after it, and a file in new/ is
always complete.

kill -9 (test_durability) keeps the page cache; a power cut does not. The
maildrop sits on ext4 on a disk that logs every write and cache flush in
the order the disk receives them (harness.LoggedDisk). Senders deliver
without pause while the test records, a dozen times, which messages have
been acknowledged so far and then puts a mark in the disk's log. For each
mark the disk is rebuilt as a power cut there would leave it: every write
before the last cache flush that precedes the mark (what a flush promises
is stable), and once more with a random half of the writes after that
flush as well (a disk may have written any of those). The rebuilt disk is
checked by e2fsck -fy, as a boot would, and mounted: every message
acknowledged before the mark must be there, complete and exactly once, and
every file in new/ or cur/ must be a complete message we sent.

With a journal (ext4 as mkfs makes it) and without (many VPS images)."""

import os
import random
import sys
import threading
import time
import unittest
import uuid

import harness
import test_durability as td
from harness import DOMAIN1, Raw, Server

MARKS = 12
SENDERS = 6


class PowerCut(unittest.TestCase):
    def run_cuts(self, journal):
        srv = Server(self)
        disk = harness.LoggedDisk(self, os.path.join(srv.tmp, "disk"), journal)
        maildrop = os.path.join(disk.fs, "maildrop")
        srv.domain_cfg(DOMAIN1)["maildrop"] = maildrop
        srv.start()

        expected = {}   # token -> the message as sent
        acked = []      # tokens in the order their 250 came
        lock = threading.Lock()
        stop = threading.Event()
        errors = []

        def sender(i, port):
            rnd = random.Random(i)
            r = None
            try:
                r = Raw(port, timeout=30)
                r.expect(220)
                r.expect(250, "EHLO cut%d.example" % i)
                while not stop.is_set():
                    tok = uuid.uuid4().hex
                    msg = td.body_for(tok, rnd.choice([300, 1500, 6000, 40000]))
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
            except (OSError, EOFError, AssertionError) as e:
                if not stop.is_set():
                    errors.append("sender %d: %r" % (i, e))
            finally:
                if r:
                    r.close()

        port = srv.port()
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
            "journal" if journal else "no journal", kinds.count(b"W"), kinds.count(b"F"), len(acked)),
            file=sys.stderr)
        rnd = random.Random(len(records))
        for name, n in marks:
            at = next(i for i, (k, _, d) in enumerate(records) if k == b"M" and d == name.encode())
            flush = max((i for i in range(at) if kinds[i] == b"F"), default=0)
            after = [i for i in range(flush, at) if kinds[i] == b"W"]
            for extra in ([], sorted(rnd.sample(after, len(after) // 2))):
                with disk.cut(records, flush, extra) as (mnt, fsck):
                    self.check(os.path.join(mnt, "maildrop"), expected, acked[:n],
                               "power cut at %s (%d acknowledged; %d of %d writes after the last flush "
                               "kept; e2fsck exit %d)" % (name, n, len(extra), len(after), fsck))

    def check(self, maildrop, expected, acked, what):
        seen = {}
        for sub in ("new", "cur"):
            d = os.path.join(maildrop, sub)
            for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
                with open(os.path.join(d, name), "rb") as f:
                    data = f.read()
                self.assertEqual(harness.size_suffix(name), len(data),
                                 "%s: partial file %s/%s (%d octets)" % (what, sub, name, len(data)))
                tok = td.token_of(data)
                self.assertIn(tok, expected, "%s: %s/%s holds no message we sent" % (what, sub, name))
                self.assertEqual(harness.split_trace(data)[1], expected[tok],
                                 "%s: %s/%s is not the whole message %s" % (what, sub, name, tok))
                seen[tok] = seen.get(tok, 0) + 1
        self.assertEqual({t: c for t, c in seen.items() if c > 1}, {}, "%s: stored twice" % what)
        lost = [t for t in acked if t not in seen]
        self.assertEqual(lost, [], "%s: %d acknowledged messages lost" % (what, len(lost)))

    def test_without_journal(self):
        self.run_cuts(journal=False)

    def test_with_journal(self):
        self.run_cuts(journal=True)


if __name__ == "__main__":
    unittest.main()
