/*
 * queue: the durable relay queue (SPEC 5), a directory of entries.
 *
 * Every call here blocks (plain write/fsync/rename) and runs on a helper
 * thread, never on a ring thread. An entry is one file, ID.msg: the message
 * as it goes out (CRLF lines, no dot-stuffing), then the entry's state as
 * it was at acceptance, padding (spaces, a newline) up to a whole number of
 * 4 KiB blocks, then a fixed-width footer giving the length of that state
 * text and padding (the message is the file's first `size` octets). It is
 * written as ID.msg.tmp, fdatasynced, renamed into place and the directory
 * fsynced: ID.msg appearing is what makes an entry exist, and
 * queue_commit() returns only after that is durable. One file (a spare
 * reused, or a new one), one fdatasync and one rename per entry. A crash leaves at worst *.tmp
 * files, which were never acknowledged: queue_load() removes them. A
 * finished entry's file is kept as a spare (.spare.N) and the next entry
 * is written over it: a busy queue of like-sized messages allocates no
 * inode and no block, and its fdatasync writes the data alone (see
 * spare_put and queue_commit in queue.c).
 *
 * After an attempt the state goes to a second file, ID.env, rewritten
 * atomically and durably (queue_update); when it exists it supersedes the
 * trailer, so a recipient recorded as done is never sent again after a
 * kill -9. (Version-1 queues kept the state only in ID.env; those entries
 * load unchanged.) Removal unlinks ID.msg first, then ID.env: a crash in
 * between leaves a state file alone, which queue_load() removes.
 *
 * The fast path (queue_discard): an entry whose attempt left every
 * recipient final with no DSN owed is removed without rewriting its state
 * and without a directory fsync. A crash before the unlink reaches the disk
 * brings the entry back with its last recorded state, and it is sent
 * again: a duplicate, never a loss (the same trade-off Postfix makes).
 *
 * The state file is line-based "key value" text, versioned by its first
 * line and closed by "end": a file cut short anywhere is detected. Values
 * are %-escaped (every octet outside 0x21..0x7E, and '%', as %XX), so any
 * address survives and no value spans lines. See queue.c for the keys.
 */
#ifndef MPB_QUEUE_H
#define MPB_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QUEUE_ID_MAX 64
#define QUEUE_VERSION_LINE "mailpopbox-queue 1"
/* queue_next_try(): the entry has been queued for max_queue_time. */
#define QUEUE_EXPIRED (-1)
/* queue_group_by_domain(): a recipient that is not pending. */
#define QUEUE_NO_GROUP (~0u)

enum queue_state { QUEUE_PENDING, QUEUE_DONE, QUEUE_FAILED };

/* Per-recipient bookkeeping bits for the DSN logic; stored as they are. */
enum {
	QUEUE_F_DELAY_SENT = 1, /* a DELAY notification went out (RFC 3461 4.1) */
	QUEUE_F_RELAYED = 2,	/* delivered to a server without DSN (RFC 3461 5.2.2) */
	QUEUE_F_DSN_DONE = 4,	/* the final DSN for this recipient went out */
};

/* Every string is malloc'd and owned by the entry (NULL = absent);
 * queue_entry_free() frees them. */
struct queue_rcpt {
	char *addr;	   /* without <> */
	char *orcpt;	   /* "addr-type;value" (ORCPT, decoded), or NULL */
	uint8_t notify;	   /* SMTP_NOTIFY_* bits */
	uint8_t state;	   /* enum queue_state */
	uint32_t attempts; /* attempts that reached a verdict for it */
	uint32_t flags;	   /* QUEUE_F_* */
	int64_t last_try;  /* seconds since the epoch; 0 = never */
	char *status;	   /* RFC 3463 code of the last result, e.g. "4.2.0" */
	char *remote;	   /* the host that gave it (Remote-MTA) */
	char *reply;	   /* the last reply text, or the local reason */
};

struct queue_entry {
	char id[QUEUE_ID_MAX]; /* set by queue_commit() / queue_load() */
	char *from;	       /* "" for <> */
	char *envid;	       /* ENVID, decoded, or NULL */
	uint8_t ret;	       /* enum smtp_ret */
	uint8_t body;	       /* enum smtp_body_type */
	bool smtputf8;
	int64_t arrival; /* seconds since the epoch (DSN Arrival-Date) */
	int64_t next_try;
	uint64_t size;	   /* octets of the message; set by queue_commit() */
	char *auth_domain; /* the submitting session's domain, or NULL */
	struct queue_rcpt *rcpt;
	unsigned nrcpt;
	/* queue_load() only: 0, -EBADMSG (the state file is malformed or cut
	 * short; only id is set) or -ENOENT (the message file is missing or
	 * not of the recorded size). */
	int error;
};

/* --- building an entry */
/* Replaces *field by a copy of value (NULL frees it). 0 or -ENOMEM. */
int queue_strset(char **field, const char *value);
/* Appends a pending recipient. 0 or -ENOMEM. */
int queue_add_rcpt(struct queue_entry *e, const char *addr, const char *orcpt, uint8_t notify);
/* Frees what the entry owns and zeroes it. */
void queue_entry_free(struct queue_entry *e);
void queue_entries_free(struct queue_entry *v, unsigned n);

/* Creates PATH (and its parents) when missing, 0700, and opens it:
 * the directory fd, or -errno. */
int queue_dir_open(const char *path);

/* --- writing a new entry: open, write the message in chunks, commit */
struct queue_writer {
	int qdirfd;
	int fd; /* the file named tmp */
	uint64_t size;
	uint64_t was; /* a spare's size when taken (its old content), else 0 */
	char id[QUEUE_ID_MAX];
	char tmp[QUEUE_ID_MAX + 16]; /* ID.msg.tmp, or a spare file reused */
	bool spare;                  /* tmp is a spare */
};
/* Picks a fresh id (from NOW, the clock's microseconds, pid and a counter:
 * taken only if the clock stepped back onto a recycled pid, which the
 * commit's RENAME_NOREPLACE then refuses) and opens a file to write: a
 * spare (the file of a finished entry, written over from offset 0) or a
 * new ID.msg.tmp. 0 or -errno. */
int queue_open(int qdirfd, int64_t now, struct queue_writer *w);
/* queue_open's choice without the open, for a caller that opens through
 * io_uring: sets up W (id, the file's name in w->tmp: a spare when SPARE
 * and the pool has one) and returns the open(2) flags for w->tmp (mode
 * 0600), then the caller sets w->fd. A spare that fails to open is
 * unlinked by the caller and another pick made without SPARE (a new
 * file's EEXIST, the rare case above, queue_open also picks again for). */
int queue_pick(int qdirfd, int64_t now, struct queue_writer *w, bool spare);
/* 0 or -errno (then call queue_abort). */
int queue_write(struct queue_writer *w, const void *p, size_t n);
/* Sets e->id and e->size, appends the state, makes the entry durable. 0 only once
 * the entry will survive a crash; on error nothing of it remains. The
 * writer is finished either way. */
int queue_commit(struct queue_writer *w, struct queue_entry *e);
/* N entries at once (queue_commit for each, rcs[i] its result), sharing
 * one syncfs() and one directory fsync: fewer cache flushes than N
 * commits (one entry alone is just queue_commit). All writers in one
 * queue directory. */
void queue_commit_batch(struct queue_writer *const *ws, struct queue_entry *const *es, int *rcs,
			unsigned n);
void queue_abort(struct queue_writer *w);
/* All of it at once: open, write msg, commit. */
int queue_create(int qdirfd, struct queue_entry *e, const void *msg, size_t n, int64_t now);

/* --- the life of an entry */
/* Scans the queue at startup: removes *.tmp files (never acknowledged) and
 * state files without a message file (a removal cut short), loads every
 * entry, oldest first. *out
 * is malloc'd (free with queue_entries_free); entries that cannot be used
 * are included with ->error set, and their files left for the operator.
 * 0 or -errno. Not to be run while queue_commit() may run on the same
 * directory. */
int queue_load(int qdirfd, struct queue_entry **out, unsigned *n);
/* Writes ID.env from e, atomically and durably. 0 or -errno. */
int queue_update(int qdirfd, const struct queue_entry *e);
/* Removes the entry (message file first), durably. 0 or -errno; an entry
 * already gone is not an error. */
int queue_remove(int qdirfd, const char *id);
/* Removes the entry (message file first) WITHOUT making the removal durable:
 * for an entry that is finished (every recipient final, no DSN owed), so
 * that a crash can at worst send it again (see the top of this file).
 * 0 or -errno; an entry already gone is not an error. */
int queue_discard(int qdirfd, const char *id);
/* Reads entry ID: its state from ID.env when there is one, else from
 * ID.msg's trailer, and checks the message's size. 0 with *e filled
 * (e->error set, only e->id valid, when the state is corrupt: -EBADMSG, or
 * the message is not of the recorded size: -ENOENT); -ENOENT when ID.msg
 * does not exist; -ENOMEM. Removes nothing: a message file without a
 * readable state (no ID.env, no trailer: corruption, or a version-1 file
 * left between its two renames) is reported, not deleted. */
int queue_read_entry(int qdirfd, const char *id, struct queue_entry *e);
/* Whether entry ID exists (its ID.msg is there). */
bool queue_exists(int qdirfd, const char *id);
/* Opens ID.msg for reading: the fd, or -errno. The message is its first
 * e->size octets; what follows is the trailer. */
int queue_open_msg(int qdirfd, const char *id);

/* --- the state file itself (exposed for tests and tools) */
/* The text of the state file; malloc'd, NUL-terminated, *len without the
 * NUL. NULL on ENOMEM. */
char *queue_format(const struct queue_entry *e, size_t *len);
/* Parses a state file's text into e (zeroed first). 0, -EBADMSG or -ENOMEM;
 * on error e holds nothing. Never reads past n. */
int queue_parse(const char *p, size_t n, struct queue_entry *e);

/* --- policy helpers (pure) */
/* When to try next after `attempts` attempts that ended in a temporary
 * failure: attempts 0 -> now (every entry gets a first try); then the
 * retry[attempts-1]-th interval (the last one repeats; 300 s if nretry is
 * 0) from now, but never past arrival + max_queue_time, so that a last try
 * happens at the deadline. Once now has reached the deadline:
 * QUEUE_EXPIRED. */
int64_t queue_next_try(const uint32_t *retry, unsigned nretry, uint32_t max_queue_time,
		       unsigned attempts, int64_t arrival, int64_t now);

/* The domain part of an address (after the last '@'; "" if none). */
const char *queue_addr_domain(const char *addr);
/* Groups the PENDING recipients of e by domain (ASCII case-insensitive):
 * group[i] (e->nrcpt slots) gets a group number, 0.. in order of first
 * appearance, or QUEUE_NO_GROUP. Returns the number of groups. */
unsigned queue_group_by_domain(const struct queue_entry *e, unsigned *group);

#endif
