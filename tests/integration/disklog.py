"""A disk that remembers, for the power-cut tests (test_powercut.py).

Run by the system's python3 (Debian's python3-fusepy), as its own process:

    disklog.py MOUNTPOINT SIZE LOGFILE

It mounts a FUSE file system holding two files: `disk`, SIZE octets that
start as zeros, for a loop device to sit on, and `ctl`, where writing a
name records a mark. A loop device turns the block layer's writes into
writes of `disk` and its cache flushes into fsync() of it (the kernel's
loop driver, with buffered I/O: lo_req_flush), so LOGFILE receives, in the
order they reach the disk, every write (offset and data), every flush and
every mark. Requests are served one at a time.

LOGFILE records: a header struct.pack("<cQI", kind, offset, length), then
length octets. kind b"W" a write at offset, b"F" a flush (the writes
before it are on stable storage), b"M" a mark (the octets are its name).
"""

import errno
import stat
import struct
import sys
import threading
import time

try:
    from fusepy import FUSE, FuseOSError, Operations
except ImportError:  # the tests' own python only reads logs (read_log)
    FUSE = FuseOSError = None
    Operations = object

REC = struct.Struct("<cQI")


class Disk(Operations):
    def __init__(self, size, log):
        self.size = size
        self.img = bytearray(size)
        self.log = log
        self.mu = threading.Lock()

    def _rec(self, kind, off, data):
        self.log.write(REC.pack(kind, off, len(data)))
        self.log.write(data)

    def getattr(self, path, fh=None):
        now = time.time()
        base = dict(st_nlink=1, st_ctime=now, st_mtime=now, st_atime=now)
        if path == "/":
            return dict(base, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
        if path == "/disk":
            return dict(base, st_mode=stat.S_IFREG | 0o600, st_size=self.size)
        if path == "/ctl":
            return dict(base, st_mode=stat.S_IFREG | 0o600, st_size=0)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", "..", "disk", "ctl"]

    def open(self, path, flags):
        if path not in ("/disk", "/ctl"):
            raise FuseOSError(errno.ENOENT)
        return 0

    def truncate(self, path, length, fh=None):
        if path == "/disk" and length != self.size:
            raise FuseOSError(errno.EINVAL)
        return 0

    def read(self, path, size, off, fh):
        with self.mu:
            return bytes(self.img[off:off + size]) if path == "/disk" else b""

    def write(self, path, data, off, fh):
        with self.mu:
            if path == "/ctl":
                self._rec(b"M", 0, bytes(data).strip())
                self.log.flush()
                return len(data)
            if off + len(data) > self.size:
                raise FuseOSError(errno.ENOSPC)
            self.img[off:off + len(data)] = data
            self._rec(b"W", off, bytes(data))
            return len(data)

    def fsync(self, path, datasync, fh):
        with self.mu:
            if path == "/disk":
                self._rec(b"F", 0, b"")
        return 0

    def flush(self, path, fh):
        return 0  # close(2), not a cache flush


def read_log(path):
    """The records of LOGFILE: a list of (kind, offset, data)."""
    out = []
    with open(path, "rb") as f:
        buf = f.read()
    i = 0
    while i + REC.size <= len(buf):
        kind, off, n = REC.unpack_from(buf, i)
        i += REC.size
        if i + n > len(buf):
            break  # cut short by the end of the run
        out.append((kind, off, buf[i:i + n]))
        i += n
    return out


def main():
    mnt, size, logpath = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(logpath, "wb", buffering=1 << 20) as log:
        FUSE(Disk(size, log), mnt, foreground=True, nothreads=True)


if __name__ == "__main__":
    main()
