/*
 * pool: a few helper threads for work that must not run on a ring thread:
 * yescrypt (tens of milliseconds of CPU by design), directory scans and
 * unlink+fsync for POP3. A job runs job->fn on a helper thread, then goes
 * back to its worker's `done` list and the worker's eventfd is poked; the
 * worker finishes it on its own thread, so connection state is only ever
 * touched by its worker. Password checks wait on a queue of their own and
 * never take the last two threads: storage work does not queue behind a
 * flood of AUTH attempts.
 */
#ifndef MPB_POOL_H
#define MPB_POOL_H

#include <stdbool.h>
#include <stddef.h>

struct worker;
struct conn;

struct pool_job {
	struct pool_job *next;
	struct worker *w;
	struct conn *conn;
	int (*fn)(struct pool_job *j); /* runs on a helper thread */
	/* Back on the worker: jobs without a conn (conn NULL) finish here. */
	void (*done)(struct pool_job *j);
	int result;                     /* fn's return value */
	int kind;                       /* the submitter's tag */
	void *arg;                      /* the submitter's data */
	/* AUTH: the stored secret and the candidate (wiped after use) */
	const char *stored;
	size_t pwlen;
	char pw[512];
};

int pool_start(unsigned nthreads);
void pool_stop(void);
/* Takes ownership of j until it comes back through the worker. */
void pool_submit(struct pool_job *j);
/* A job without a conn: FN(job) on a helper thread, then DONE(job) on W's
 * thread (which frees it), ARG in job->arg. -1 when out of memory. */
int pool_call(struct worker *w, int (*fn)(struct pool_job *j), void (*done)(struct pool_job *j),
	      void *arg);
/* Wipes and frees. */
void pool_job_free(struct pool_job *j);

/* Job body: checks j->pw against j->stored (crypt(3) hash if it starts with
 * '$', else plaintext; NULL = unknown user, which burns the same time and
 * fails). 0 = match. */
int pool_auth_check(struct pool_job *j);
/* crypt(3) yescrypt hash of pw into out; 0 or -1. */
int pool_hash_password(const char *pw, char *out, size_t cap);

#endif
