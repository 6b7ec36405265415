/*
 * server: the engine's shared types. One `server` per process (config,
 * maildrops, limits shared by all workers); one `worker` per ring thread; one
 * `conn` per client connection, living and dying on one worker.
 *
 * Completions carry their kind in the low 4 bits of user_data, the object in
 * the rest (every object here is at least 16-byte aligned: jemalloc and
 * glibc both guarantee it), as in liburing's examples/proxy.c.
 */
#ifndef MPB_SERVER_H
#define MPB_SERVER_H

#include <liburing.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "proto/pop3.h"
#include "proto/smtp.h"
#include "store/maildir.h"

enum op {
	OP_IGNORE,      /* fire and forget (cancel, close, unlink) */
	OP_ACCEPT,      /* struct listener */
	OP_RECV,        /* struct conn */
	OP_SEND,        /* struct conn */
	OP_TICK,        /* struct worker: the 1 s timer */
	OP_NOTIFY,      /* struct worker: eventfd read (pool results, stop) */
	OP_SPOOL_OPEN,  /* struct spool_file */
	OP_SPOOL_WRITE, /* struct wbatch */
	OP_SPOOL_SYNC,  /* struct spool_file: fsync of the tmp file */
	OP_SPOOL_RENAME,/* struct spool_file: tmp/ -> new/ */
	OP_DIRSYNC,     /* struct mdcommit: the shared fsync of new/ */
	OP_FILE_READ,   /* struct conn: POP3 RETR chunk */
	OP_SPOOL_DONE,  /* struct spool: finish on the next turn (never re-enter) */
	OP_POLL,        /* struct conn: TLS handshake wants the socket */
	OP_KRECV,       /* struct conn: recvmsg on a kTLS-RX socket */
};
#define OP_MASK 15ULL

static inline uint64_t op_tag(void *p, enum op op) { return (uint64_t)(uintptr_t)p | op; }
static inline enum op op_of(uint64_t ud) { return (enum op)(ud & OP_MASK); }
static inline void *op_ptr(uint64_t ud) { return (void *)(uintptr_t)(ud & ~OP_MASK); }

/* Receive buffers: one provided-buffer ring per worker. */
#define RBUF_SIZE (16 * 1024)
#define RBUF_COUNT 512
#define RBUF_GROUP 1
/* Plaintext buffers for TLS (decrypted records, kTLS RX): ids after the
 * ring's, same reference counting, handed out from a free stack. */
#define PBUF_COUNT 256
#define BUF_TOTAL (RBUF_COUNT + PBUF_COUNT)

struct server;
struct worker;
struct spool;

struct listener {
	struct worker *w;
	int fd;
	enum svc_kind svc;
	bool armed;
	_Alignas(16) char pad[0];
};

/* A piece of received input not yet consumed by the machine. */
struct ichunk {
	char *p;
	uint32_t len;
	uint32_t off;
	int32_t bid; /* provided buffer id */
};
#define CONN_IN_MAX 32      /* queued chunks in the connection itself */
#define CONN_IN_HIGH 6      /* at this many, stop receiving (back-pressure) */

/* Chunks past CONN_IN_MAX: a multishot recv may post completions after its
 * cancel was queued. They hold ring buffers, so the ring bounds them. */
struct ichunk_node {
	struct ichunk_node *next;
	struct ichunk ch;
};

enum conn_flags {
	CF_RECV_ARMED = 1 << 0,  /* a multishot recv is outstanding */
	CF_RECV_WANTED = 1 << 1, /* re-arm when buffers free up */
	CF_SEND = 1 << 2,        /* a send is in flight */
	CF_CLOSING = 1 << 3,     /* flush, then close */
	CF_EOF = 1 << 4,         /* peer closed or errored: no more input */
	CF_READ = 1 << 5,        /* a file read is in flight */
	CF_JOB = 1 << 6,         /* a pool job holds the conn */
	CF_SHUT = 1 << 7,        /* shutdown(2) done */
	CF_CANCEL = 1 << 8,      /* recv cancel requested */
	CF_POLL = 1 << 9,        /* a handshake poll is in flight */
	CF_STARTTLS = 1 << 10,   /* STARTTLS/STLS: quiesce, then handshake */
	CF_HANDSHAKE = 1 << 11,  /* TLS handshake under way */
};

struct retr; /* POP3 RETR streaming state, core/pop3_conn.c */
struct tls_conn;

struct conn {
	struct worker *w;
	struct conn *next, *prev;     /* worker's list of connections */
	struct conn *tnext, *tprev;   /* timer wheel slot */
	int fd;
	uint32_t id;
	uint16_t flags;
	uint8_t svc;
	uint8_t nin, inhead;
	uint8_t tslot;                /* timer wheel slot */
	int parked;                   /* outstanding machine request, 0 = none */
	uint32_t deadline;            /* worker seconds: idle timeout */
	uint32_t wake;                /* worker seconds: delayed completion, 0 = none */
	int wake_result;
	struct ipnode *ip;            /* per-IP connection count */
	struct ichunk in[CONN_IN_MAX];
	struct ichunk_node *ovf, *ovf_tail; /* overflow, oldest first */
	struct obuf out;
	struct tls_conn *tls;         /* NULL on plaintext connections */
	struct spool *spool;          /* SMTP: the transaction's files */
	struct retr *retr;            /* POP3: RETR in progress */
	struct pop3_msg *msgs;        /* POP3: the snapshot */
	void *maildrop;               /* POP3: store/maildrop handle */
	union {
		struct smtp_session smtp;
		struct pop3_session pop3;
	};
};

/* A maildrop's commits on one worker (deliver.c, sync = "full"): the
 * files that reach the commit together share one batch on the pool
 * (bbusy, bwaiting); a lone file's fdatasync and rename go through the
 * ring and share one fsync of new/ with the others renamed in the same
 * loop iteration (inflight, waiting, running). */
struct mdcommit {
	struct worker *w;
	int dom;
	bool inflight;                     /* the fsync of new/ */
	struct spool_file *waiting, *running;
	bool bbusy;                        /* a batch is on the pool */
	struct spool_file *bwaiting;       /* files whose data is owed */
	_Alignas(16) char pad[0];
};

struct pool_job;

struct worker {
	struct server *srv;
	unsigned id;
	pthread_t thread;
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	char *bufs;
	uint16_t bufref[BUF_TOTAL];  /* holders of each buffer */
	unsigned bufs_out;           /* ring buffers handed to us, not yet returned */
	char *pbufs;
	int16_t pfree[PBUF_COUNT];
	unsigned npfree;
	struct listener *listeners;
	unsigned nlisteners;
	struct conn *conns;          /* all connections, for shutdown */
	unsigned nconns;
	struct conn *wheel[64];
	uint32_t now;                /* seconds since start, updated each tick */
	struct __kernel_timespec tick_ts;
	int efd;                     /* eventfd: pool results, stop */
	uint64_t efd_val;
	pthread_mutex_t done_lock;
	struct pool_job *done;       /* finished pool jobs for this worker */
	struct mdcommit *mdcommit;    /* one per domain */
	struct spool_file *qwaiting; /* relay queue entries owed a commit */
	bool qbusy;                  /* a commit of them is on the pool */
	unsigned nwant;              /* conns waiting for receive buffers */
	unsigned nspools;            /* spools alive (they may outlive their conn) */
	bool stopping;
	uint32_t stop_at;            /* now + 10 s once stopping */
	bool accept_paused;
	uint32_t accept_retry;
	uint32_t next_conn_id;
	_Alignas(16) char pad[0];
};

struct ipcount; /* core/limits.c */

struct server {
	struct config *cfg;
	struct maildir *maildirs;        /* one per domain */
	int qdirfd;                      /* the relay queue, -1 without one */
	struct smtp_domain *smtp_domains;
	struct smtp_policy smtp_pol[3];  /* smtp, submission, submissions */
	struct pop3_domain *pop3_domains;
	struct pop3_policy pop3_pol[2];  /* pop3, pop3s */
	bool tls_available;              /* a certificate is configured */
	unsigned nworkers;
	struct worker *workers;
	_Atomic uint32_t nconn[SVC_COUNT];
	struct ipcount *ips;
	_Atomic bool stop;
	int tz_off_min;
};

/* core/worker.c */
int worker_init(struct worker *w, struct server *srv, unsigned id);
void *worker_run(void *arg);
void worker_wake(struct worker *w);
struct io_uring_sqe *worker_sqe(struct worker *w);
void buf_release(struct worker *w, int32_t bid);
int32_t pbuf_get(struct worker *w); /* a plaintext buffer, or -1 */
char *buf_addr(struct worker *w, int32_t bid);
/* Queues input and takes the buffer bid; false only when memory ran out
 * (the buffer is released then, and the caller closes). */
bool conn_push_input(struct conn *c, char *p, uint32_t len, int32_t bid);
/* The head chunk is consumed: releases its buffer, refills from overflow. */
void conn_pop_input(struct conn *c);
void conn_starttls(struct conn *c); /* reply is queued: quiesce, handshake */
void conn_flush(struct conn *c);
bool conn_out_alloc(struct conn *c); /* the output buffer, made on demand */
void conn_close(struct conn *c);
void conn_resume(struct conn *c); /* a request completed: feed again */
void conn_touch(struct conn *c);  /* activity: push the idle deadline */
uint32_t conn_timeout(const struct conn *c);
void conn_timer_rearm(struct conn *c); /* after changing deadline or wake */

/* core/smtp_conn.c */
void smtp_conn_start(struct conn *c);
void smtp_conn_input(struct conn *c);
void smtp_conn_timer(struct conn *c);
void smtp_conn_stop(struct conn *c);
void smtp_conn_free(struct conn *c);
void smtp_conn_spool_done(struct conn *c, enum smtp_req req, int result, const char *id);
void smtp_conn_job_done(struct conn *c, struct pool_job *j);
void smtp_conn_tls_done(struct conn *c, int result);

/* core/pop3_conn.c */
void pop3_conn_start(struct conn *c);
void pop3_conn_input(struct conn *c);
void pop3_conn_timer(struct conn *c);
void pop3_conn_stop(struct conn *c);
void pop3_conn_free(struct conn *c);
void pop3_conn_read_done(struct conn *c, int res);
void pop3_conn_sent(struct conn *c);
void pop3_conn_job_done(struct conn *c, struct pool_job *j);
void pop3_conn_tls_done(struct conn *c, int result);

/* core/deliver.c */
struct spool *spool_open(struct conn *c);       /* SMTP_REQ_SPOOL_OPEN */
void spool_body(void *ctx, const char *p, size_t n);
void spool_input(struct spool *sp, const struct ichunk *ch); /* before a feed */
void spool_flush(struct spool *sp);                           /* after it */
void spool_commit(struct spool *sp);            /* SMTP_REQ_SPOOL_COMMIT */
void spool_abort(struct spool *sp);             /* refused or conn gone */
void spool_detach(struct spool *sp);            /* the conn is going away */
void spool_cqe(struct worker *w, enum op op, void *obj, int res);
void commits_submit(struct worker *w);

static inline bool svc_is_smtp(unsigned svc) { return svc <= SVC_SUBMISSIONS; }

#endif
