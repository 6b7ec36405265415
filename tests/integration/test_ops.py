"""Operation (SPEC 2, 3, 6, 8): command line, config checking, signals,
startup housekeeping, logs."""

import os
import re
import signal
import socket
import stat
import subprocess
import time
import unittest
import uuid

import harness
from harness import DOMAIN1, Raw, Server

SENDER = "ops@sender.example"


def run(args, stdin=b"", timeout=30):
    return subprocess.run([harness.BINARY] + args, input=stdin, capture_output=True, timeout=timeout)


class CommandLine(unittest.TestCase):
    def write(self, text):
        srv = Server(self)
        path = os.path.join(srv.tmp, "check.toml")
        with open(path, "w") as f:
            f.write(text)
        return srv, path

    def test_version_and_help(self):
        p = run(["--version"])
        self.assertEqual(p.returncode, 0)
        self.assertRegex(p.stdout.decode(), r"^mailpopbox \d+\.\d+\.\d+\S*\n$")
        p = run(["--help"])
        self.assertEqual(p.returncode, 0)
        self.assertIn("--check", p.stdout.decode())
        self.assertIn("--hash-password", p.stdout.decode())
        p = run(["--no-such-option"])
        self.assertNotEqual(p.returncode, 0)

    def test_check_good_configs(self):
        srv = Server(self)
        p = run(["--check", srv.write_config()])
        self.assertEqual((p.returncode, p.stdout.decode()), (0, "ok\n"), p.stderr.decode())
        # the repository's reference config is valid as shipped
        p = subprocess.run([harness.BINARY, "--check", "mailpopbox.toml"], cwd=harness.ROOT,
                           capture_output=True, timeout=30)
        self.assertEqual((p.returncode, p.stdout.decode()), (0, "ok\n"), p.stderr.decode())

    def test_check_unknown_key_names_file_and_line(self):
        cfg = harness.to_toml(harness.default_config(tmp=os.path.join(harness.tmp_root(), "x"), tls=False))
        lines = cfg.splitlines()
        i = lines.index("[smtp]")
        lines.insert(i + 2, "listen_typo = 3")
        srv, path = self.write("\n".join(lines) + "\n")
        p = run(["--check", path])
        self.assertEqual(p.returncode, 1, p.stderr)
        err = p.stderr.decode()
        self.assertRegex(err, r"(?m)^%s:%d: .*listen_typo" % (re.escape(path), i + 3))
        self.assertEqual(p.stdout.decode(), "")
        # and the server refuses to start on it with status 1
        rc = srv.start(config_text="\n".join(lines) + "\n", expect_fail=True)
        self.assertEqual(rc, 1)
        self.assertIn("listen_typo", srv.stderr())

    def test_check_reports_every_error(self):
        text = ('hostname = "h"\n'
                'bogus_top = 1\n'
                '[smtp]\n'
                'listen = ["127.0.0.1:0"]\n'
                'timeout = "5 fortnights"\n'
                '[[domain]]\n'
                'name = "d.test"\n'
                'password = "x"\n'
                'maildrop = "/tmp/none"\n'
                'unknown_domain_key = true\n')
        srv, path = self.write(text)
        p = run(["--check", path])
        self.assertEqual(p.returncode, 1)
        err = p.stderr.decode()
        for line in (2, 5, 10):
            self.assertRegex(err, r"(?m)^%s:%d: " % (re.escape(path), line), err)

    def test_check_missing_required(self):
        srv, path = self.write('[smtp]\nlisten = ["127.0.0.1:0"]\n')
        p = run(["--check", path])
        self.assertEqual(p.returncode, 1)
        self.assertIn(path + ":", p.stderr.decode())
        p = run(["--check", os.path.join(srv.tmp, "does-not-exist.toml")])
        self.assertEqual(p.returncode, 1)
        self.assertIn("does-not-exist.toml", p.stderr.decode())

    def test_hash_password(self):
        p = run(["--hash-password"], stdin=b"correct horse\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        h = p.stdout.decode().strip()
        self.assertRegex(h, r"^\$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]+\$[./A-Za-z0-9]+$")
        self.assertNotIn(b"correct horse", p.stdout + p.stderr)
        try:
            import crypt  # deprecated, still in 3.11
            self.assertEqual(crypt.crypt("correct horse", h), h)
            self.assertNotEqual(crypt.crypt("correct horsE", h), h)
        except ImportError:
            pass
        p2 = run(["--hash-password"], stdin=b"correct horse\n")
        self.assertNotEqual(p2.stdout.decode().strip(), h, "a fresh salt each time")
        self.assertNotEqual(run(["--hash-password"], stdin=b"").returncode, 0)

    def test_port_in_use_exits_2(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        port = s.getsockname()[1]
        srv = Server(self)
        srv.config["smtp"]["listen"] = ["127.0.0.1:%d" % port]
        # SO_REUSEPORT would let a second listener in; only a plain listener
        # without it blocks the bind
        rc = srv.start(expect_fail=True)
        self.assertEqual(rc, 2, srv.stderr())
        self.assertIn(str(port), srv.stderr())

    def test_second_instance_on_the_same_port_exits_2(self):
        """SO_REUSEPORT must not let a second mailpopbox (same user) join
        the first one's port and take half its connections."""
        first = Server(self)
        first.start()
        port = first.port("smtp")
        second = Server(self)
        second.config["smtp"]["listen"] = ["127.0.0.1:%d" % port]
        rc = second.start(expect_fail=True)
        self.assertEqual(rc, 2, second.stderr())
        self.assertIn("Address already in use", second.stderr())
        self.assertTrue(first.running())

    def test_maildrop_cannot_be_created_exits_2(self):
        srv = Server(self)
        blocker = os.path.join(srv.tmp, "afile")
        open(blocker, "w").close()
        srv.domain_cfg(DOMAIN1)["maildrop"] = os.path.join(blocker, "maildrop")
        rc = srv.start(expect_fail=True)
        self.assertEqual(rc, 2, srv.stderr())
        self.assertIn(DOMAIN1, srv.stderr())


class Shutdown(unittest.TestCase):
    def session(self, srv, ehlo=True):
        r = Raw(srv.port())
        self.addCleanup(r.close)
        r.expect(220)
        if ehlo:
            r.expect(250, "EHLO ops.example")
        return r

    def test_sigterm_idle_sessions_get_421(self):
        srv = Server(self).start()
        idle = [self.session(srv) for _ in range(5)] + [self.session(srv, ehlo=False)]
        done = self.session(srv)
        done.expect(250, "MAIL FROM:<%s>" % SENDER)
        done.expect(250, "RCPT TO:<x@%s>" % DOMAIN1)
        done.expect(354, "DATA")
        done.send(b"Subject: done\r\n\r\nx\r\n.\r\n")
        done.expect(250)               # between transactions: idle again
        idle.append(done)
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        for r in idle:
            code, lines = r.read_reply()
            self.assertEqual(code, 421, lines)
            self.assertTrue(lines[0].startswith("4."), lines)
            self.assertTrue(r.closed())
        rc = srv.proc.wait(12)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 3, "idle sessions must not hold up the exit")
        srv.stop()
        srv.wait_log(r"event=stopped ")

    def test_sigterm_after_mail_transaction_can_complete(self):
        """A session between MAIL and DATA is in a transaction (RFC 5321
        3.3): it may finish it within the grace period."""
        srv = Server(self).start()
        r = self.session(srv)
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        srv.signal(signal.SIGTERM)
        time.sleep(0.5)
        r.expect(250, "RCPT TO:<mid@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(b"Subject: mid\r\n\r\nx\r\n.\r\n")
        r.expect(250)
        self.assertEqual(srv.proc.wait(12), 0)
        srv.stop()
        self.assertEqual(len(srv.read_new(DOMAIN1)), 1)

    def test_sigint_like_sigterm(self):
        srv = Server(self).start()
        r = self.session(srv)
        srv.signal(signal.SIGINT)
        self.assertEqual(r.read_reply()[0], 421)
        self.assertEqual(srv.proc.wait(10), 0)
        srv.stop()

    def test_sigterm_during_data_lets_it_finish(self):
        srv = Server(self).start()
        r = self.session(srv)
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<late@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        tok = uuid.uuid4().hex
        r.send(b"Subject: late %s\r\n\r\nfirst half\r\n" % tok.encode())
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        time.sleep(1.5)
        # no new connections once stopping
        self.assertTrue(srv.running(), "server must wait for the transaction in progress")
        try:
            c = socket.create_connection(("127.0.0.1", srv.port()), timeout=2)
            c.settimeout(2)
            try:
                got = c.recv(100)
            except (socket.timeout, ConnectionResetError):
                got = b""
            c.close()
            self.assertFalse(got.startswith(b"220"), "a new session was greeted while stopping: %r" % got)
        except (ConnectionRefusedError, socket.timeout):
            pass
        r.send(b"second half\r\n.\r\n")
        code, lines = r.read_reply()
        self.assertEqual(code, 250, lines)
        rc = srv.proc.wait(12)
        self.assertEqual(rc, 0)
        self.assertLess(time.monotonic() - t0, 11.5)
        srv.stop()
        files = srv.read_new(DOMAIN1)
        self.assertEqual(len(files), 1)
        self.assertIn(b"second half\r\n", files[0][1])

    def test_sigterm_stalled_data_bounded(self):
        """A transaction that never finishes is cut after about 10 s; the
        partial message is not delivered."""
        srv = Server(self).start()
        r = self.session(srv)
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<stall@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(b"Subject: stalled\r\n\r\nnever finished\r\n")
        t0 = time.monotonic()
        srv.signal(signal.SIGTERM)
        try:
            rc = srv.proc.wait(16)
        except subprocess.TimeoutExpired:
            rc = None
        dt = time.monotonic() - t0
        self.assertEqual(rc, 0, "exit status after SIGTERM with a stalled transaction")
        self.assertLess(dt, 13, "must stop within about 10 s")
        self.assertGreater(dt, 5, "must give the transaction time to finish")
        srv.stop()
        self.assertEqual(srv.new_files(DOMAIN1), [])


class Startup(unittest.TestCase):
    @unittest.skipUnless(os.geteuid() == 0, "needs root to drop privileges")
    def test_user_binds_privileged_port_reads_key_then_drops(self):
        """SPEC 3 `user`: ports below 1024 are bound and keys read as root,
        then the process runs as the user; mail still flows (the maildrop
        belongs to that user), TLS still works with the key read before."""
        import pwd
        nobody = pwd.getpwnam("nobody")
        port = None
        for cand in range(700, 1000):
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", cand))
                port = cand
                break
            except OSError:
                continue
            finally:
                t.close()
        self.assertIsNotNone(port, "no free privileged port")
        srv = Server(self, domains=1)
        srv.config["user"] = "nobody"
        srv.config["smtp"]["listen"] = ["127.0.0.1:%d" % port]
        srv.config["pop3s"] = {"listen": ["127.0.0.1:0"]}
        md = srv.maildrop(DOMAIN1)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), mode=0o700)
        for d in (md, os.path.join(md, "tmp"), os.path.join(md, "new"), os.path.join(md, "cur")):
            os.chown(d, nobody.pw_uid, nobody.pw_gid)
        # nobody must reach the maildrop through the temp directories
        d = os.path.dirname(md)
        while d and d != "/":
            os.chmod(d, os.stat(d).st_mode | 0o011)
            d = os.path.dirname(d)
        srv.start()
        srv.wait_log(r"event=privileges_dropped user=nobody")
        with open("/proc/%d/status" % srv.proc.pid) as f:
            uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
        self.assertEqual(set(uids), {str(nobody.pw_uid)}, "every uid is nobody's")
        self.assertEqual(srv.port("smtp"), port)
        token = uuid.uuid4().hex
        import smtplib
        c = smtplib.SMTP("127.0.0.1", port, timeout=30)
        c.sendmail("a@example.org", ["x@" + DOMAIN1], "Subject: %s\r\n\r\nhi\r\n" % token)
        c.quit()
        files = srv.wait_new(DOMAIN1, 1)
        self.assertTrue(any(token.encode() in data for _, data in files))
        import poplib
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        p = poplib.POP3_SSL("127.0.0.1", srv.port("pop3s"), context=ctx, timeout=30)
        p.user("mailbox@" + DOMAIN1)
        p.pass_(harness.PASSWORDS[DOMAIN1])
        self.assertEqual(p.stat()[0], 1)
        p.quit()

    def test_old_tmp_files_removed_fresh_kept(self):
        srv = Server(self)
        md = srv.maildrop(DOMAIN1)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(md, sub), mode=0o700)
        now = time.time()
        old = [os.path.join(md, "tmp", "old%d.host" % i) for i in range(3)]
        fresh = [os.path.join(md, "tmp", "fresh%d.host" % i) for i in range(2)]
        for p in old + fresh:
            with open(p, "wb") as f:
                f.write(b"leftover\r\n")
        for p in old:
            os.utime(p, (now - 37 * 3600, now - 37 * 3600))
        os.utime(fresh[0], (now - 35 * 3600, now - 35 * 3600))
        keep_new = os.path.join(md, "new", "1.old.host,S=10")
        with open(keep_new, "wb") as f:
            f.write(b"delivered\r")
        os.utime(keep_new, (now - 100 * 3600, now - 100 * 3600))
        srv.start()
        for p in old:
            self.assertFalse(os.path.exists(p), "tmp/ file older than 36h must be removed: %s" % p)
        for p in fresh:
            self.assertTrue(os.path.exists(p), "tmp/ file younger than 36h must be kept: %s" % p)
        self.assertTrue(os.path.exists(keep_new), "old files in new/ are mail, never removed")
        srv.wait_log(r"event=tmp_cleaned .*files=3")

    def test_warns_about_a_file_system_without_journal(self):
        """A maildrop or queue on ext4 without a journal is logged at
        startup (test_powercut.py: after a power cut e2fsck may move
        messages into lost+found there); with a journal it is not."""
        for journal in (False, True):
            with self.subTest(journal=journal):
                srv = Server(self, domains=1)
                tmp = os.path.join(srv.tmp, "disk")
                os.makedirs(tmp)
                fs, _ = harness.loop_ext4(self, tmp, os.path.join(tmp, "disk.img"), 64 * 1024 * 1024,
                                          journal=journal)
                md = os.path.join(fs, "maildrop")
                srv.domain_cfg(DOMAIN1)["maildrop"] = md
                srv.config["submission"] = {"listen": ["127.0.0.1:0"]}
                srv.config["relay"] = {"queue": os.path.join(fs, "queue")}
                srv.start()
                warned = srv.log_lines("storage_unjournaled")
                srv.stop()
                if journal:
                    self.assertEqual(warned, [])
                else:
                    self.assertEqual(len(warned), 2, warned)
                    self.assertIn("relay_queue=%s" % os.path.join(fs, "queue"), warned[0])
                    self.assertIn("maildrop=%s" % md, warned[1])
                    self.assertIn("level=warn", warned[1])

    def test_maildirs_created_0700(self):
        srv = Server(self, domains=3)
        # one maildrop exists partly (new/ missing), the others not at all
        partial = srv.maildrop(harness.DOMAIN2)
        os.makedirs(os.path.join(partial, "tmp"), mode=0o755)
        os.makedirs(os.path.join(partial, "cur"), mode=0o755)
        srv.start()
        for dom in (DOMAIN1, harness.DOMAIN2, harness.DOMAIN3):
            md = srv.maildrop(dom)
            subs = ("new",) if dom == harness.DOMAIN2 else ("", "tmp", "new", "cur")
            for sub in subs:
                p = os.path.join(md, sub) if sub else md
                self.assertTrue(os.path.isdir(p), p)
                self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o700, "%s must be created 0700" % p)
        # and mail goes there
        r = Raw(srv.port())
        self.addCleanup(r.close)
        r.expect(220)
        r.expect(250, "EHLO ops.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<x@%s>" % harness.DOMAIN2)
        r.expect(354, "DATA")
        r.send(b"Subject: into partial\r\n\r\nx\r\n.\r\n")
        r.expect(250)
        self.assertEqual(len(srv.read_new(harness.DOMAIN2)), 1)

    def test_log_lines_are_key_value(self):
        srv = Server(self).start()
        r = Raw(srv.port())
        r.expect(220)
        r.expect(250, "EHLO ops.example")
        r.expect(250, "MAIL FROM:<%s>" % SENDER)
        r.expect(250, "RCPT TO:<log@%s>" % DOMAIN1)
        r.expect(354, "DATA")
        r.send(b"Subject: log\r\n\r\nx\r\n.\r\n")
        r.expect(250)
        r.expect(221, "QUIT")
        r.close()
        srv.wait_log(r"event=delivered ")
        srv.stop()
        pair = r'[a-z_]+=(?:"(?:[^"\\]|\\.)*"|\S*)'
        rx = re.compile(r"^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z level=(debug|info|warn|error) "
                        r"event=[a-z_]+( %s)*$" % pair)
        lines = srv.stderr().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, rx)
        listening = srv.log_lines("listening")
        self.assertGreaterEqual(len(listening), 1)
        self.assertEqual(len({l.split("addr=")[1] for l in listening}), 1, "all workers share the port")
        started = srv.log_lines("started")[0]
        self.assertRegex(started, r" ktls=\S+")
        delivered = srv.log_lines("delivered")[0]
        self.assertIn("domain=%s" % DOMAIN1, delivered)
        self.assertRegex(delivered, r" conn=\d+")


if __name__ == "__main__":
    unittest.main()
