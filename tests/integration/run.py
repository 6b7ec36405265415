#!/usr/bin/env python3
"""Run the integration tests against build/mailpopbox and
build/mailpopbox-asan.

    python3 tests/integration/run.py                 # everything, both binaries
    python3 tests/integration/run.py --bin build/mailpopbox test_smtp
    python3 tests/integration/run.py test_tls.TLSReload   # one class
    python3 tests/integration/run.py -k sni               # names containing "sni"
    MAILPOPBOX_BIN=build/mailpopbox python3 -m unittest tests/integration/test_smtp.py

Every test_*.py module in this directory is picked up (add test_pop3.py and
it runs). Each (binary, test class) runs in its own child process, several
at once; each server inside has its own temp dir and ephemeral ports.
Prints `integration: N passed, M failed` and exits 1 on any failure.
Sanitizer reports in a server's stderr fail the test that ran the server.
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_BINS = [os.path.join(ROOT, "build", "mailpopbox"), os.path.join(ROOT, "build", "mailpopbox-asan")]
MARK = "MPB-RESULT "


class _Result(unittest.TextTestResult):
    pass


def child(spec, pattern):
    """Run one module or class; print a JSON summary as the last line."""
    sys.path.insert(0, HERE)
    loader = unittest.TestLoader()
    if pattern:
        loader.testNamePatterns = ["*%s*" % pattern]
    suite = loader.loadTestsFromName(spec)
    runner = unittest.TextTestRunner(stream=sys.stderr, verbosity=2, resultclass=_Result)
    res = runner.run(suite)
    failed = [t.id() for t, _ in res.failures + res.errors] + [t.id() for t in res.unexpectedSuccesses]
    summary = {
        "run": res.testsRun,
        "failed": failed,
        "skipped": [(t.id(), why) for t, why in res.skipped],
        "xfail": [t.id() for t, _ in res.expectedFailures],
    }
    sys.stdout.write(MARK + json.dumps(summary) + "\n")
    sys.stdout.flush()


def discover(selection):
    """[(module_or_class_spec)] for the selection (default: every class of
    every test_*.py)."""
    sys.path.insert(0, HERE)
    mods = sorted(f[:-3] for f in os.listdir(HERE) if f.startswith("test_") and f.endswith(".py"))
    if selection:
        picked = []
        for s in selection:
            s = os.path.basename(s)
            s = s[:-3] if s.endswith(".py") else s
            picked.append(s)
    else:
        picked = mods
    specs = []
    for p in picked:
        if "." in p:
            specs.append(p)
            continue
        mod = __import__(p)
        classes = [n for n, v in vars(mod).items()
                   if isinstance(v, type) and issubclass(v, unittest.TestCase) and v.__module__ == p
                   and unittest.TestLoader().getTestCaseNames(v)]
        specs.extend("%s.%s" % (p, c) for c in sorted(classes))
    return specs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", help="server binary (repeatable); default both builds")
    ap.add_argument("-j", "--jobs", type=int, default=0, help="child processes at once")
    ap.add_argument("-k", dest="pattern", help="only tests whose name contains this")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every child's output")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("select", nargs="*", help="modules (test_smtp) or classes (test_smtp.Delivery)")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.pattern)
        return 0

    bins = [os.path.abspath(b) for b in (a.bin or [])]
    if not bins and os.environ.get("MAILPOPBOX_BIN"):
        bins = [os.path.abspath(os.environ["MAILPOPBOX_BIN"])]
    bins = bins or DEFAULT_BINS
    specs = discover(a.select)

    tmp = tempfile.mkdtemp(prefix="mpb-it-")
    env = dict(os.environ)
    env["MPB_TEST_TMP"] = tmp
    env["MPB_TEST_CERTS"] = os.path.join(tmp, "certs")
    sys.path.insert(0, HERE)
    import harness
    harness.make_certs(env["MPB_TEST_CERTS"])

    passed, failed, skipped, xfail = 0, [], [], []
    missing = [b for b in bins if not os.access(b, os.X_OK)]
    for b in missing:
        failed.append("%s: binary missing (make %s)" % (b, os.path.relpath(b, ROOT)))
    # Run private copies: other people rebuilding build/ mid-run must not
    # swap (or half-write) the binary under a test.
    snap = {}
    os.makedirs(os.path.join(tmp, "bin"), exist_ok=True)
    for b in bins:
        if b not in missing:
            snap[b] = os.path.join(tmp, "bin", os.path.basename(b))
            shutil.copy2(b, snap[b])
    jobs = [(snap[b], s) for b in bins if b not in missing for s in specs]
    # The slow classes first so that the pool drains evenly.
    slow = ("PowerCut", "Durability", "Shutdown", "Timeout", "Reload", "Errors")
    jobs.sort(key=lambda j: (not any(x in j[1] for x in slow), "asan" not in j[0]))
    n = a.jobs or max(4, 3 * (os.cpu_count() or 1))
    started = time.monotonic()

    def run_job(job):
        b, spec = job
        e = dict(env)
        e["MAILPOPBOX_BIN"] = b
        argv = [sys.executable, os.path.abspath(__file__), "--child", spec]
        if a.pattern:
            argv += ["-k", a.pattern]
        t0 = time.monotonic()
        try:
            p = subprocess.run(argv, capture_output=True, env=e, cwd=ROOT, timeout=600)
            out, err, rc = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), p.returncode
        except subprocess.TimeoutExpired as ex:
            out, err, rc = "", (ex.stderr or b"").decode(errors="replace") + "\nTIMEOUT", -1
        return b, spec, out, err, rc, time.monotonic() - t0

    with concurrent.futures.ThreadPoolExecutor(max_workers=n) as ex:
        for b, spec, out, err, rc, dt in ex.map(run_job, jobs):
            tag = "%s [%s]" % (spec, os.path.basename(b))
            summary = None
            for line in out.splitlines():
                if line.startswith(MARK):
                    summary = json.loads(line[len(MARK):])
            if summary is None:
                failed.append(tag + ": child crashed (rc=%s)" % rc)
                sys.stdout.write("== %s: CRASHED\n%s\n" % (tag, err[-6000:]))
                continue
            nf = len(summary["failed"])
            ns = len(summary["skipped"])
            passed += summary["run"] - nf - ns
            failed.extend("%s [%s]" % (t, os.path.basename(b)) for t in summary["failed"])
            skipped.extend("%s [%s]: %s" % (t, os.path.basename(b), why) for t, why in summary["skipped"])
            xfail.extend("%s [%s]" % (t, os.path.basename(b)) for t in summary["xfail"])
            status = "ok" if nf == 0 else "%d FAILED" % nf
            sys.stdout.write("== %-45s %s (%d tests, %.1fs)\n" % (tag, status, summary["run"], dt))
            if nf or a.verbose:
                sys.stdout.write(err if a.verbose else _failure_part(err))
                sys.stdout.write("\n")
            sys.stdout.flush()

    if skipped:
        print("skipped:")
        for s in skipped:
            print("  " + s)
    if xfail:
        print("expected failures (known server bugs, marked temporarily):")
        for s in xfail:
            print("  " + s)
    if failed:
        print("failed:")
        for s in failed:
            print("  " + s)
    print("integration: %d passed, %d failed (%d skipped, %d expected failures) in %.0fs"
          % (passed, len(failed), len(skipped), len(xfail), time.monotonic() - started))
    if not os.environ.get("MPB_KEEP"):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("kept " + tmp)
    return 1 if failed else 0


def _failure_part(err):
    """The unittest failure reports (from the first ====== on)."""
    i = err.find("\n======")
    return err[i:] if i >= 0 else err[-6000:]


if __name__ == "__main__":
    sys.exit(main())
