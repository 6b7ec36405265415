/*
 * maildir: the delivery side of a maildrop (SPEC 6).
 *
 * A maildrop is opened once at startup: the directories are created (0700)
 * and held open, so that delivery works relative to directory fds
 * (openat/renameat/fsync through the ring, driven by core/deliver.c). This
 * module owns the naming rules and the startup chores; it does no I/O on the
 * delivery path itself.
 *
 * Names follow the Maildir convention (cr.yp.to/proto/maildir.html, and
 * Dovecot's extension fields): "SEC.M<usec>P<pid>Q<n>.<host>" while in tmp/,
 * then "<that>,S=<size>" in new/. SEC/usec/pid/Q make the name unique for
 * this host; the host part keeps it unique across hosts that share the
 * maildrop over a network filesystem. Creation uses O_EXCL, so a clash (a
 * clock stepped back with a recycled pid) is detected, never overwritten.
 */
#ifndef MPB_MAILDIR_H
#define MPB_MAILDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct maildir {
	char *path;
	int dirfd;  /* the maildrop itself */
	int tmpfd;  /* tmp/ */
	int newfd;  /* new/ */
	int curfd;  /* cur/ */
};

/* Creates PATH and tmp/ new/ cur/ (0700) when missing, opens them. 0 or
 * -errno; on failure *md holds nothing open. */
int maildir_open(const char *path, struct maildir *md);
void maildir_close(struct maildir *md);

/* Removes files in tmp/ whose mtime is older than max_age seconds (SPEC 6:
 * 36 hours: whatever a crash left behind). Returns how many, or -errno. */
int maildir_clean_tmp(struct maildir *md, time_t now, time_t max_age);

/* Sets the host part of every name (from gethostname, '/' and ':' escaped as
 * the convention says). Call once at startup. */
void maildir_init_names(void);

/* Writes a fresh unique base name ("SEC.M<usec>P<pid>Q<n>.<host>") into buf.
 * Thread-safe (Q is a process-wide atomic counter). Returns its length. */
size_t maildir_unique(char *buf, size_t cap, const struct timespec *now);

/* "<base>,S=<size>" into buf; returns its length. plain: no line of the
 * file starts with "." and it ends in CRLF, recorded as "<base>,D=0,S=<size>"
 * (a field Maildir readers ignore; the name still ends in ",S=SIZE") so that
 * POP3 RETR can send the file as it is. */
size_t maildir_final_name(char *buf, size_t cap, const char *base, uint64_t size, bool plain);
/* The ",D=0" field in the base of a name (before ":2,"). */
bool maildir_name_plain(const char *base, size_t blen);

/* The Q counter of the last name made, for short queue ids in replies. */
#define MAILDIR_NAME_MAX 255

#endif
