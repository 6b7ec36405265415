/*
 * mailpopbox-bench: an io_uring load generator for SMTP and POP3.
 *
 * One thread per ring; each thread drives a share of the sessions. A
 * session is a client state machine (smtp_client.c, pop3_client.c) fed by
 * the connection layer (loop.c), which owns the socket, the optional TLS
 * (OpenSSL over memory BIOs, so the ring sees only ciphertext) and the
 * output queue. Everything measured lands in per-thread counters and
 * histograms (hist.c) merged at the end (report.c).
 */
#ifndef BENCH_BENCH_H
#define BENCH_BENCH_H

#include <liburing.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/* ---- latency histograms (hist.c) ---------------------------------------- */

/* Log-linear buckets over nanoseconds: 16 sub-buckets per power of two,
 * so any percentile is within ~6% of the true value. */
#define HIST_SUB 16
#define HIST_BUCKETS (64 * HIST_SUB)

struct hist {
	uint64_t count;
	uint64_t sum_ns;
	uint64_t max_ns;
	uint64_t b[HIST_BUCKETS];
};

void hist_add(struct hist *h, uint64_t ns);
void hist_merge(struct hist *dst, const struct hist *src);
uint64_t hist_pct(const struct hist *h, double pct);

/* ---- what is measured --------------------------------------------------- */

enum metric {
	M_CONNECT, /* connect until greeting */
	M_TLS,	   /* TLS handshake (STARTTLS/STLS reply to done, or implicit) */
	M_EHLO,	   /* EHLO until its last 250 line */
	M_TX,	   /* SMTP: MAIL FROM until the reply to the end of data */
	M_SESSION, /* connect until the server's goodbye */
	M_LOGIN,   /* POP3 USER+PASS; SMTP AUTH PLAIN */
	M_STAT,
	M_LIST,
	M_UIDL,
	M_RETR,
	M_DELE,
	M_QUIT, /* POP3: QUIT (the UPDATE state: removals) */
	M_COUNT
};

extern const char *const metric_names[M_COUNT];

enum err {
	E_CONNECT, /* connect() failed */
	E_IO,	   /* reset, early EOF */
	E_TLS,	   /* handshake or record failure */
	E_PROTO,   /* a reply we could not parse or did not expect */
	E_TIMEOUT, /* run deadline hit with work outstanding */
	E_COUNT
};

extern const char *const err_names[E_COUNT];

struct stats {
	struct hist h[M_COUNT];
	uint64_t codes[1000]; /* replies by code: SMTP 2xx..5xx; POP3 -ERR as 999 */
	uint64_t errs[E_COUNT];
	uint64_t msgs;	      /* SMTP: messages accepted (250 after data); POP3: RETRs */
	uint64_t msgs_failed; /* SMTP transactions that ended in a non-2xx */
	uint64_t bytes;	      /* message octets accepted or retrieved */
	uint64_t sessions;    /* sessions that ended with the server's goodbye */
	uint64_t established; /* connections that saw a greeting */
	char last_err[160];   /* the text of one failure reply, for the report */
};

/* ---- options ------------------------------------------------------------ */

enum mode { MODE_SMTP, MODE_POP3, MODE_IDLE };

struct size_mix {
	int n;
	size_t size[16];
	unsigned weight[16];
	unsigned total_weight;
};

struct opts {
	enum mode mode;
	const char *host;
	int port;
	struct sockaddr_in addr;
	int sessions;
	long messages; /* SMTP: total across sessions; POP3: max RETR per session (0 = all) */
	struct size_mix sizes;
	int rcpts;
	bool pipelining;
	bool starttls; /* SMTP STARTTLS / POP3 STLS */
	bool tls;      /* implicit TLS */
	bool reuse;    /* SMTP: many messages per session */
	int threads;
	const char *domain;
	const char *from;
	const char *user; /* POP3; "%d" becomes the session number */
	const char *pass;
	const char *auth_plain; /* SMTP: base64 of "\0USER\0PASS" (--auth), or NULL */
	const char *sni;
	const char *verify_dir; /* Maildir to check after an SMTP run */
	double verify_wait;	/* seconds to wait for asynchronous deliveries */
	int verify_copies;	/* expected files per token (Postfix: one per rcpt) */
	const char *run_id;
	double hold;	      /* idle: seconds to hold the connections */
	enum mode idle_proto; /* idle: MODE_SMTP (EHLO then wait) or MODE_POP3 */
	bool idle_ehlo;
	const char *mem_pids; /* comma list: measure PSS of these pid trees */
	const char *json;
	const char *label;
	double timeout;	    /* whole run */
	bool dele;	    /* POP3 */
	bool list_only;	    /* POP3: login, STAT, LIST, UIDL, QUIT */
	int window;	    /* POP3 RETR pipelining depth */
	int connect_window; /* connects in flight per thread */
	bool quiet;
};

extern struct opts opt;

/* ---- message templates -------------------------------------------------- */

struct msg_tmpl {
	size_t size; /* nominal size: headers (with a fixed-width token) + body */
	char *body;  /* body lines and the ".\r\n" terminator, no headers */
	size_t body_len;
};

extern struct msg_tmpl tmpls[16];
extern int ntmpls;
int msg_header(char *buf, size_t cap, long seq, const char *rcpt0);
int msg_pick(uint64_t *rng);
size_t msg_header_len(void);

/* ---- connections (loop.c) ----------------------------------------------- */

struct worker;
struct conn;

/* What a protocol machine provides to the connection layer. */
struct proto {
	/* The connection is up (and TLS is up for implicit TLS). */
	void (*connected)(struct conn *c);
	/* Plaintext arrived: consume what is whole from c->in. Return -1 to close. */
	int (*input)(struct conn *c);
	/* TLS handshake (STARTTLS/STLS) finished. */
	void (*tls_done)(struct conn *c);
	/* The connection is gone (closed by either side); may start another. */
	void (*closed)(struct conn *c, bool clean);
};

struct chunk {
	char *p;
	size_t len;
	size_t cap; /* 0: borrowed (a message template), not freed */
};

#define PEND_MAX 256

/* One outstanding command whose reply we wait for. */
struct pend {
	uint8_t kind;
	uint8_t multi; /* POP3: a multi-line answer follows +OK */
	int32_t arg;
	uint64_t t0;
};

struct conn {
	struct worker *w;
	const struct proto *proto;
	int fd;
	int idx;      /* session number across the run */
	int inflight; /* SQEs not yet completed */
	bool closing;
	bool want_close; /* close once the output queue is drained */
	bool recv_armed, send_armed;
	bool connecting;
	bool greeted;
	bool clean;
	bool authed; /* SMTP: AUTH PLAIN accepted on this connection */

	/* TLS: memory BIOs; the socket carries ciphertext only. */
	SSL *ssl;
	BIO *rbio, *wbio;
	bool tls_hs; /* handshake in progress */
	uint64_t tls_t0;

	/* input: plaintext after TLS */
	char *in;
	size_t in_len, in_cap;
	char *rx; /* raw recv buffer (ciphertext under TLS, else == in tail) */
	size_t rx_cap;

	/* output */
	struct chunk *q;
	int qn, qcap;
	size_t q_off; /* bytes of q[0] already sent */
	struct iovec iov[16];
	struct msghdr mh;
	char *tx; /* TLS ciphertext being sent */
	size_t tx_len, tx_off, tx_cap;

	/* replies we wait for, oldest first */
	struct pend pend[PEND_MAX];
	int pend_head, pend_n;

	/* protocol state */
	int state;
	uint64_t t_connect;
	uint64_t rng;
	long seq; /* SMTP: message being sent */
	int tmpl;
	int nlines;	  /* multi-line reply/answer lines seen */
	long cur;	  /* POP3: next message number to request */
	long nmsgs;	  /* POP3: messages in the maildrop (STAT) */
	long done;	  /* POP3: answers received for RETR */
	size_t ans_bytes; /* POP3: octets of the current multi-line answer */
	bool in_multi;	  /* POP3: inside a multi-line answer */
	bool tx_ok;
	uint64_t tx_t0; /* SMTP: when MAIL FROM was queued */
	int rcpt_i;	/* SMTP without pipelining: next RCPT to send */
	int code;
	int dead; /* session needs no restart */
};

struct worker {
	int id;
	struct io_uring ring;
	struct conn *conns;
	int nconns;
	int active;	/* connections open or opening */
	int connecting; /* connects in flight */
	int next_start; /* next conn index to start (ramp-up) */
	struct stats st;
	SSL_CTX *ssl_ctx;
	pthread_t thread;
	uint64_t established_at;
	bool stop;
};

extern atomic_long msgs_claimed; /* SMTP: next message sequence number */
extern atomic_int idle_established, idle_failed;
void idle_closed(struct conn *c, bool clean);
extern atomic_bool run_stop;

uint64_t now_ns(void);
void *worker_main(void *arg);

void conn_send(struct conn *c, const void *p, size_t n);
void conn_sendf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void conn_send_borrowed(struct conn *c, const void *p, size_t n);
void conn_flush(struct conn *c);
void conn_close(struct conn *c, bool clean);
void conn_start_tls(struct conn *c);
void conn_consume(struct conn *c, size_t n);
void conn_err(struct conn *c, enum err e);

struct pend *pend_push(struct conn *c, int kind, int arg);
struct pend *pend_front(struct conn *c);
void pend_pop(struct conn *c);

extern const struct proto smtp_proto, pop3_proto, idle_smtp_proto, idle_pop3_proto;

/* ---- outside the ring (sys.c) ------------------------------------------- */

struct mem_sample {
	uint64_t pss; /* sum over the pid trees */
	uint64_t rss;
	uint64_t hwm; /* VmHWM of the first pid */
	int nproc;
};

int mem_measure(const char *pids, struct mem_sample *out);

struct verify_result {
	long files;
	long tokens_ok; /* distinct tokens seen exactly verify_copies times */
	long missing;
	long duplicates;
	long foreign;	 /* files without our token */
	double waited_s; /* time after the run until the count was reached */
};

int verify_maildir(const char *dir, const char *run_id, long expected, int copies, double wait_s,
		   struct verify_result *out);

/* ---- report.c ----------------------------------------------------------- */

struct result {
	struct stats st;
	double elapsed_s;
	bool have_mem;
	struct mem_sample mem_before, mem_after;
	int idle_target;
	bool have_verify;
	struct verify_result vr;
	long expected;
};

void report_table(const struct result *r);
int report_json(const struct result *r, const char *path);

#endif
