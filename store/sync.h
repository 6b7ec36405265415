/*
 * sync: making many freshly written files durable at once, for the commit
 * batches of the Maildir delivery (core/deliver.c) and of the relay queue
 * (store/queue.c).
 *
 * One syncfs() writes every dirty file of the file system with its inode
 * (inode-table and bitmap blocks of files created together once), where an
 * fsync per file costs a cache flush and its own metadata writes each. On
 * ext4 without a journal syncfs() writes the inode tables after its own
 * cache flush, so one fsync() follows it: after sync_all() returns 0, what
 * was written before the call is on stable storage.
 *
 * Errors: syncfs() reports the file system's write errors to a descriptor
 * opened for the call (sync_all opens its own), once per descriptor; a
 * file whose data another thread's syncfs wrote may have its failure
 * reported there instead. Each file's own failure stays recorded on it and
 * reaches its own descriptor (Linux >= 4.14): sync_error() asks for it.
 */
#ifndef MPB_SYNC_H
#define MPB_SYNC_H

/* syncfs() then a cache flush, for the file system of DIRFD: 0 or -errno. */
int sync_all(int dirfd);
/* After sync_all(): FD's own write error since it was opened, 0 or -errno. */
int sync_error(int fd);

#endif
