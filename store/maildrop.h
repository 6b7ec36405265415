/*
 * maildrop: the POP3 view of a Maildir (SPEC 6 and 7).
 *
 * Every call here blocks (directory scans, unlink, fsync, fcntl locks) and
 * runs on a pool thread, never on a ring thread. The results are plain
 * memory that the worker then owns.
 *
 *   maildrop_lock      exclusive POP3 lock, across processes: an OFD lock
 *                      (F_OFD_SETLK) on MAILDROP_LOCKFILE in the maildir
 *                      root; -EAGAIN when another session holds it. OFD
 *                      locks belong to the open file description, so two
 *                      sessions of one process exclude each other too.
 *   maildrop_snapshot  lists new/ and cur/ (regular files, names not
 *                      starting with '.'), oldest first (the leading
 *                      seconds of the name, then the name), sizes from the
 *                      ",S=" field of the name (a stat only when a name
 *                      lacks it), UIDs derived from the base name (the part
 *                      before ":2,"), so they survive restarts and the move
 *                      from new/ to cur/.
 *   maildrop_remove    unlinks the messages marked deleted (a file already
 *                      gone counts as removed), then fsyncs new/ and cur/;
 *                      0 only when every removal is durable.
 *
 * Another Maildir reader (Dovecot, mutt) does not honour our lock and may
 * move a message from new/ to cur/ or change its flags during a session:
 * maildrop_open and maildrop_remove then find it in cur/ by its base name.
 * Names without leading seconds sort last; a missing new/ or cur/ lists as
 * empty. Hashed UIDs are 'h' and 32 hex digits of the 128-bit FNV-1a of the
 * base name; within one snapshot a repeated UID (the same base in new/ and
 * cur/) is replaced, for the later message in listing order, by the hash of
 * its path, so every UID in a listing is unique.
 */
#ifndef MPB_MAILDROP_H
#define MPB_MAILDROP_H

#include <stddef.h>

#include "proto/pop3.h"

#define MAILDROP_LOCKFILE ".mailpopbox-pop3.lock"

struct maildrop_snap {
	struct pop3_msg *msgs; /* n entries, for pop3_set_maildrop */
	char **paths;          /* "new/NAME" or "cur/NAME", relative to the maildir */
	unsigned n;
};

/* Returns the lock's fd (close it to release) or -errno (-EAGAIN: held). */
int maildrop_lock(int dirfd);
void maildrop_unlock(int lockfd);

/* 0 or -errno; on success the caller frees with maildrop_snap_free. */
int maildrop_snapshot(int dirfd, struct maildrop_snap *snap);
void maildrop_snap_free(struct maildrop_snap *snap);

/* Opens message i read-only (O_CLOEXEC, O_NOFOLLOW); -ENOENT when it
 * vanished, -EINVAL when i >= snap->n. */
int maildrop_open(int dirfd, const struct maildrop_snap *snap, unsigned i);

/* Removes every msgs[i] with deleted set; fsync of the directories unless
 * nosync. 0 or -errno of the first failure (the rest is still attempted). */
int maildrop_remove(int dirfd, const struct maildrop_snap *snap, int nosync);
/* The same for messages [lo, hi) only: several ranges may be removed at
 * once from different threads (an unlink's inode release runs outside the
 * directory lock, so they overlap), then maildrop_sync makes it durable. */
int maildrop_remove_range(int dirfd, const struct maildrop_snap *snap, unsigned lo, unsigned hi,
			  int nosync);
/* fsync of new/ and cur/. 0 or the first -errno. */
int maildrop_sync(int dirfd);

/* The UID rule, exposed for tests: base name -> 1..70 chars in 0x21..0x7E.
 * Names that already qualify are used as they are; others become a stable
 * hash of the name. */
void maildrop_uid(const char *name, size_t n, char out[POP3_UID_MAX + 1]);

#endif
