/*
 * pop3_conn: drives proto/pop3.c for one connection. The machine decides
 * every reply; this file carries out its requests:
 *
 *   AUTH    the password check on a pool thread, a growing delay on failure
 *   OPEN    lock + snapshot of the maildrop (store/maildrop.c) on a pool
 *           thread: directory scans and fcntl locks may block
 *   RETR    the file opened and read through the ring, dot-stuffed by
 *           pop3_stuff into the output buffer in bounded memory: a 40 MB
 *           message costs one read buffer and one output buffer
 *   UPDATE  unlink + directory fsync on a pool thread, "+OK" only after
 *   STLS    the shared STARTTLS path of the worker
 *
 * A session that ends in any way other than QUIT removes nothing: the
 * snapshot and the lock are simply dropped.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/pool.h"
#include "core/server.h"
#include "core/tls.h"
#include "store/maildrop.h"

enum { JOB_AUTH = 1, JOB_OPEN, JOB_UPDATE, JOB_REOPEN, JOB_UPDATE_PART, JOB_SYNC };

/* QUIT with many deletions: the unlinks go in this many ranges at once
 * (each unlink frees its inode outside the directory lock, so they overlap
 * on the pool's threads), then one fsync of the directories. */
#define UPDATE_PARTS 4
#define UPDATE_SPLIT_MIN 256

/* Output while streaming a message: sends of this size keep the socket busy
 * without holding much per connection. */
#define RETR_OUT_CAP (128 * 1024)
#define RETR_READ_CAP (32 * 1024)
#define SPLICE_MIN (64 * 1024)

struct retr {
	int fd;
	bool reading;      /* a read is in flight */
	bool eof;
	bool opening;      /* the openat is in flight */
	bool reopen;       /* the pool's second look for a moved file */
	bool top;          /* TOP: through buf and pop3_stuff */
	/* RETR of a plain file (no line starts with "."; store/maildir.h) on a
	 * socket the kernel writes (plaintext, kTLS TX): the file goes to the
	 * socket by splice through a pipe, never through user space. */
	bool splice;
	bool want_poll;    /* the socket was full: wait for POLLOUT first */
	uint8_t nexp, hexp;
	uint8_t exp[4];    /* completions expected, in order (linked SQEs) */
	int pipe[2];
	uint64_t size;     /* the file's size (its S=) */
	uint64_t inpipe;   /* octets in the pipe, not yet on the socket */
	uint64_t off;      /* file offset of the next read */
	uint32_t asked;    /* octets the read in flight asked for */
	uint32_t len, pos; /* bytes in buf, bytes of them consumed */
	struct pop3_stuffer st;
	char buf[RETR_READ_CAP];
};

/* The maildrop a logged-in session holds. */
struct drop {
	int dom;
	int lockfd;
	unsigned parts;    /* UPDATE ranges still being removed */
	int part_err;      /* the first failure among them */
	struct maildrop_snap snap;
};

static void handle(struct conn *c, enum pop3_req req);

static void complete(struct conn *c, enum pop3_req req, int result)
{
	conn_out_alloc(c);
	c->parked = 0;
	enum pop3_req next = pop3_complete(&c->pop3, req, result, &c->out);
	if (next != POP3_REQ_NONE)
		handle(c, next);
}

/* ---- jobs ---------------------------------------------------------------- */

static struct pool_job *job_new(struct conn *c, int kind, int (*fn)(struct pool_job *))
{
	struct pool_job *j = calloc(1, sizeof *j);
	if (!j)
		return NULL;
	j->w = c->w;
	j->conn = c;
	j->kind = kind;
	j->fn = fn;
	return j;
}

static void job_submit(struct conn *c, struct pool_job *j, enum pop3_req req)
{
	c->flags |= CF_JOB;
	c->parked = req;
	pool_submit(j);
}

static void auth_start(struct conn *c)
{
	struct server *srv = c->w->srv;
	struct pool_job *j = job_new(c, JOB_AUTH, pool_auth_check);
	if (!j) {
		complete(c, POP3_REQ_AUTH, -1);
		return;
	}
	size_t n;
	const char *pw = pop3_auth_password(&c->pop3, &n);
	int dom = pop3_auth_domain(&c->pop3);
	j->stored = dom >= 0 ? srv->cfg->domains[dom].password : NULL;
	j->pwlen = n < sizeof j->pw ? n : sizeof j->pw - 1;
	memcpy(j->pw, pw, j->pwlen);
	j->arg = (void *)(intptr_t)dom;
	job_submit(c, j, POP3_REQ_AUTH);
}

/* Pool thread: the lock first, then the listing it protects. */
static int open_job(struct pool_job *j)
{
	struct drop *d = j->arg;
	int dirfd = j->w->srv->maildirs[d->dom].dirfd;
	d->lockfd = maildrop_lock(dirfd);
	if (d->lockfd < 0)
		return d->lockfd;
	int rc = maildrop_snapshot(dirfd, &d->snap);
	if (rc < 0) {
		maildrop_unlock(d->lockfd);
		d->lockfd = -1;
	}
	return rc;
}

static void open_start(struct conn *c)
{
	struct drop *d = calloc(1, sizeof *d);
	struct pool_job *j = d ? job_new(c, JOB_OPEN, open_job) : NULL;
	if (!j) {
		free(d);
		complete(c, POP3_REQ_OPEN, -ENOMEM);
		return;
	}
	d->dom = pop3_auth_domain(&c->pop3);
	d->lockfd = -1;
	j->arg = d;
	job_submit(c, j, POP3_REQ_OPEN);
}

static int update_job(struct pool_job *j)
{
	struct drop *d = j->arg;
	struct server *srv = j->w->srv;
	return maildrop_remove(srv->maildirs[d->dom].dirfd, &d->snap, srv->cfg->sync == SYNC_NONE);
}

/* The session is over once QUIT is answered: the lock goes before the
 * "+OK", so that a client logging in again right away is not refused. */
static void unlock_drop(struct drop *d)
{
	if (d && d->lockfd >= 0) {
		maildrop_unlock(d->lockfd);
		d->lockfd = -1;
	}
}

static int update_part_job(struct pool_job *j)
{
	struct drop *d = j->arg;
	unsigned lo = (unsigned)(j->pwlen & 0xffffffffu), hi = (unsigned)(j->pwlen >> 32);
	return maildrop_remove_range(j->w->srv->maildirs[d->dom].dirfd, &d->snap, lo, hi, 1);
}

static int sync_job(struct pool_job *j)
{
	struct drop *d = j->arg;
	return maildrop_sync(j->w->srv->maildirs[d->dom].dirfd);
}

/* Many deletions: UPDATE_PARTS ranges with about as many deletions each. */
static bool update_split(struct conn *c, struct drop *d, unsigned ndel)
{
	struct pool_job *jobs[UPDATE_PARTS];
	unsigned k = 0;
	for (; k < UPDATE_PARTS; k++)
		if (!(jobs[k] = job_new(c, JOB_UPDATE_PART, update_part_job)))
			break;
	if (k < UPDATE_PARTS) {
		while (k)
			pool_job_free(jobs[--k]);
		return false;
	}
	unsigned per = (ndel + UPDATE_PARTS - 1) / UPDATE_PARTS, lo = 0, seen = 0;
	d->parts = UPDATE_PARTS;
	d->part_err = 0;
	for (k = 0; k < UPDATE_PARTS; k++) {
		unsigned hi = lo;
		while (hi < d->snap.n && (seen < per * (k + 1) || k == UPDATE_PARTS - 1))
			seen += d->snap.msgs[hi++].deleted;
		jobs[k]->arg = d;
		jobs[k]->pwlen = (size_t)lo | (size_t)hi << 32;
		lo = hi;
	}
	c->flags |= CF_JOB;
	c->parked = POP3_REQ_UPDATE;
	for (k = 0; k < UPDATE_PARTS; k++)
		pool_submit(jobs[k]);
	return true;
}

static void update_start(struct conn *c)
{
	struct drop *d = c->maildrop;
	unsigned ndel = 0;
	for (unsigned i = 0; d && i < d->snap.n; i++)
		ndel += d->snap.msgs[i].deleted;
	if (!ndel) {
		unlock_drop(d);
		complete(c, POP3_REQ_UPDATE, 0);
		return;
	}
	if (ndel >= UPDATE_SPLIT_MIN && update_split(c, d, ndel))
		return;
	struct pool_job *j = job_new(c, JOB_UPDATE, update_job);
	if (!j) {
		complete(c, POP3_REQ_UPDATE, -ENOMEM);
		return;
	}
	j->arg = d;
	job_submit(c, j, POP3_REQ_UPDATE);
}

static int reopen_job(struct pool_job *j)
{
	struct drop *d = j->arg;
	return maildrop_open(j->w->srv->maildirs[d->dom].dirfd, &d->snap, (unsigned)j->pwlen);
}

static void drop_free(struct drop *d)
{
	if (!d)
		return;
	if (d->lockfd >= 0)
		maildrop_unlock(d->lockfd); /* close(2) of a lock file: never blocks */
	maildrop_snap_free(&d->snap);
	free(d);
}

/* ---- RETR / TOP ----------------------------------------------------------- */

/* RETR reads straight into the output buffer, behind what is queued there,
 * and pop3_stuff_inplace doubles the line-initial dots where they are: a
 * message without such lines is never copied in user space. The read may
 * only start while no send is in flight (a partial send moves the buffer's
 * contents), and conn_flush waits while it runs (see worker.c). TOP goes
 * through a read buffer and pop3_stuff, for its line limit. */
static void retr_read(struct conn *c)
{
	struct retr *r = c->retr;
	char *dst;
	size_t n;
	if (r->top) {
		dst = r->buf;
		n = RETR_READ_CAP;
	} else {
		dst = c->out.p + c->out.len;
		n = (c->out.cap - c->out.len - 8) * 2 / 3; /* room for the dots */
	}
	r->asked = (uint32_t)n;
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_read(sqe, r->fd, dst, (unsigned)n, r->off);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_FILE_READ));
	c->flags |= CF_READ;
	r->reading = true;
}

static void retr_end(struct conn *c)
{
	struct retr *r = c->retr;
	if (!r)
		return;
	if (r->fd >= 0)
		close(r->fd);
	if (r->splice) {
		close(r->pipe[0]);
		close(r->pipe[1]);
	}
	free(r);
	c->retr = NULL;
}

enum { K_IN, K_OUT, K_POLL };
#define SPLICE_CHUNK (256 * 1024)

static void splice_sqe(struct conn *c, int kind, int in, int64_t off, int out, unsigned n,
		       bool link)
{
	struct retr *r = c->retr;
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	if (kind == K_POLL)
		io_uring_prep_poll_add(sqe, c->fd, POLLOUT);
	else
		io_uring_prep_splice(sqe, in, off, out, -1, n, 0);
	if (link)
		sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_FILE_READ));
	r->exp[(r->hexp + r->nexp++) % 4] = (uint8_t)kind;
	c->flags |= CF_READ;
}

/* One round: what the pipe holds goes out first (after POLLOUT if the
 * socket was full), else the next chunk of the file goes in and out in one
 * linked pair. A short splice into the pipe breaks the link; the next
 * round then drains the pipe. */
static void splice_step(struct conn *c)
{
	struct retr *r = c->retr;
	if (r->nexp || c->out.len || (c->flags & CF_SEND))
		return; /* the "+OK" goes first */
	if (r->inpipe) {
		unsigned n = r->inpipe > SPLICE_CHUNK ? SPLICE_CHUNK : (unsigned)r->inpipe;
		if (r->want_poll)
			splice_sqe(c, K_POLL, -1, 0, -1, 0, true);
		r->want_poll = false;
		splice_sqe(c, K_OUT, r->pipe[0], -1, c->fd, n, false);
		return;
	}
	if (r->off < r->size) {
		uint64_t left = r->size - r->off;
		unsigned n = left > SPLICE_CHUNK ? SPLICE_CHUNK : (unsigned)left;
		splice_sqe(c, K_IN, r->fd, (int64_t)r->off, r->pipe[1], n, true);
		splice_sqe(c, K_OUT, r->pipe[0], -1, c->fd, n, false);
		return;
	}
	obuf_put(&c->out, ".\r\n", 3); /* a plain file ends in CRLF */
	retr_end(c);
	complete(c, POP3_REQ_RETR, 0);
}

/* A completion of the splice chain; false when the connection must go. */
static bool splice_done(struct conn *c, int kind, int res)
{
	struct retr *r = c->retr;
	switch (kind) {
	case K_IN:
		if (res <= 0 && res != -ECANCELED) {
			/* Shorter than its S= says, or unreadable: the "+OK"
			 * is out, so the only honest end is the close. */
			log_warn("retr_failed", "conn=%u error=\"%s\"", c->id,
				 res == 0 ? "file shorter than its size" : strerror(-res));
			return false;
		}
		if (res > 0) {
			r->off += (uint64_t)res;
			r->inpipe += (uint64_t)res;
		}
		return true;
	case K_OUT:
		if (res > 0) {
			r->inpipe -= (uint64_t)res;
			conn_touch(c);
		} else if (res == -EAGAIN) {
			r->want_poll = true;
		} else if (res != -ECANCELED) {
			return false; /* the client is gone */
		}
		return true;
	default:
		return true; /* POLLOUT fired (or was cancelled with the link) */
	}
}

/* Moves what has been read into the output buffer, asks for more, and
 * finishes the command at the end of the file. */
static void retr_step(struct conn *c)
{
	struct retr *r = c->retr;
	if (!r || r->opening || r->reading)
		return;
	if (r->splice) {
		splice_step(c);
		return;
	}
	if (r->top) {
		if (r->pos < r->len && !r->st.done)
			r->pos += (uint32_t)pop3_stuff(&r->st, r->buf + r->pos, r->len - r->pos,
						       &c->out);
		if (r->st.done) {
			/* TOP: the rest of the file is not needed. */
			r->pos = r->len;
			r->eof = true;
		}
		if (r->pos < r->len)
			return;
		if (!r->eof) {
			if (c->out.cap - c->out.len >= RETR_READ_CAP / 2 || c->out.len == 0)
				retr_read(c);
			return;
		}
	} else if (!r->eof) {
		/* With TLS in user space the plaintext is taken by SSL_write
		 * before the send: reading may overlap sending. */
		bool user_tls = c->tls && c->tls->wmem;
		if ((user_tls || !(c->flags & CF_SEND)) &&
		    c->out.cap - c->out.len >= RETR_OUT_CAP / 4)
			retr_read(c);
		return;
	}
	if (c->out.cap - c->out.len < 8)
		return;
	pop3_stuff_end(&r->st, &c->out);
	retr_end(c);
	complete(c, POP3_REQ_RETR, 0);
}

static void retr_start(struct conn *c)
{
	struct drop *d = c->maildrop;
	unsigned i = pop3_retr_index(&c->pop3);
	long lines = pop3_retr_lines(&c->pop3);
	/* Only TOP needs the read buffer. */
	struct retr *r = malloc(lines < 0 ? offsetof(struct retr, buf) : sizeof *r);
	if (!r || !d || i >= d->snap.n) {
		free(r);
		complete(c, POP3_REQ_RETR, -ENOMEM);
		return;
	}
	r->fd = -1;
	r->reading = r->eof = r->reopen = false;
	r->opening = true;
	r->off = 0;
	r->len = r->pos = 0;
	r->top = lines >= 0;
	r->splice = r->want_poll = false;
	r->nexp = r->hexp = 0;
	r->inpipe = 0;
	r->size = d->snap.msgs[i].size;
	/* Splice needs the kernel to write the socket: plaintext or kTLS TX. */
	/* Small files: a read from the page cache completes inline, cheaper
	 * than two splices handed to io-wq. */
	if (!r->top && d->snap.msgs[i].plain && r->size >= SPLICE_MIN && !(c->tls && c->tls->wmem) &&
	    pipe2(r->pipe, O_CLOEXEC) == 0) {
		r->splice = true;
		(void)fcntl(r->pipe[1], F_SETPIPE_SZ, SPLICE_CHUNK);
	}
	log_debug("retr", "conn=%u msg=%u size=%llu mode=%s", c->id, i + 1,
		  (unsigned long long)r->size, r->splice ? "splice" : r->top ? "top" : "stream");
	pop3_stuff_init(&r->st, lines);
	c->retr = r;
	c->parked = POP3_REQ_RETR;
	/* A bigger output buffer for the stream (given back once idle). */
	if (c->out.cap < RETR_OUT_CAP) {
		char *p = realloc(c->out.p, RETR_OUT_CAP);
		if (p) {
			c->out.p = p;
			c->out.cap = RETR_OUT_CAP;
		}
	}
	struct io_uring_sqe *sqe = worker_sqe(c->w);
	io_uring_prep_openat(sqe, c->w->srv->maildirs[d->dom].dirfd, d->snap.paths[i],
			     O_RDONLY | O_CLOEXEC, 0);
	io_uring_sqe_set_data64(sqe, op_tag(c, OP_FILE_READ));
	c->flags |= CF_READ;
}

void pop3_conn_read_done(struct conn *c, int res)
{
	struct retr *r = c->retr;
	if (!r)
		return;
	if (r->nexp) {
		/* The splice chain: completions arrive in submission order. */
		int kind = r->exp[r->hexp];
		r->hexp = (uint8_t)((r->hexp + 1) % 4);
		r->nexp--;
		if (r->nexp)
			c->flags |= CF_READ; /* more of the chain to come */
		if (c->flags & CF_CLOSING) {
			if (!r->nexp)
				retr_end(c);
			return;
		}
		if (!splice_done(c, kind, res)) {
			c->out.len = 0;
			if (!r->nexp)
				retr_end(c);
			c->parked = 0;
			conn_close(c);
			return;
		}
		if (r->nexp)
			return;
		retr_step(c);
		conn_resume(c);
		return;
	}
	if (c->flags & CF_CLOSING) {
		/* The connection went while the ring worked for it. */
		if (r->opening && res >= 0)
			close(res);
		retr_end(c);
		return;
	}
	if (r->opening) {
		if (res == -ENOENT && !r->reopen) {
			/* Another client (Dovecot, mutt) may have moved it to
			 * cur/: maildrop_open looks there, off the ring. */
			struct pool_job *j = job_new(c, JOB_REOPEN, reopen_job);
			if (j) {
				r->reopen = true;
				j->arg = c->maildrop;
				j->pwlen = pop3_retr_index(&c->pop3);
				job_submit(c, j, POP3_REQ_RETR);
				return;
			}
		}
		r->opening = false;
		if (res < 0) {
			/* Gone since the snapshot (another tool removed it): the
			 * machine answers -ERR and the session goes on. */
			log_info("retr_missing", "conn=%u msg=%u error=\"%s\"", c->id,
				 pop3_retr_index(&c->pop3) + 1, strerror(-res));
			retr_end(c);
			complete(c, POP3_REQ_RETR, res);
			conn_resume(c);
			return;
		}
		r->fd = res;
		pop3_retr_ok(&c->pop3, &c->out);
		retr_step(c);
		conn_resume(c);
		return;
	}
	r->reading = false;
	if (res < 0) {
		/* The "+OK" and part of the text are out: the only honest end
		 * is to drop the connection (RFC 1939 has no way to abort). */
		log_warn("retr_failed", "conn=%u error=\"%s\"", c->id, strerror(-res));
		retr_end(c);
		c->parked = 0;
		conn_close(c);
		return;
	}
	/* A regular file reads short only at its end: no read for the 0. */
	if ((uint32_t)res < r->asked)
		r->eof = true;
	r->off += (uint64_t)res;
	if (r->top) {
		r->len = (uint32_t)res;
		r->pos = 0;
	} else {
		c->out.len += pop3_stuff_inplace(&r->st, c->out.p + c->out.len, (size_t)res);
	}
	retr_step(c);
	conn_resume(c);
}

void pop3_conn_sent(struct conn *c)
{
	if (c->retr && !(c->flags & CF_CLOSING)) {
		conn_touch(c); /* a client reading a long message is not idle */
		retr_step(c);
	}
}

/* ---- requests and input ---------------------------------------------------- */

static void handle(struct conn *c, enum pop3_req req)
{
	switch (req) {
	case POP3_REQ_NONE:
		return;
	case POP3_REQ_CLOSE:
		conn_close(c);
		return;
	case POP3_REQ_AUTH:
		auth_start(c);
		return;
	case POP3_REQ_OPEN:
		open_start(c);
		return;
	case POP3_REQ_RETR:
		retr_start(c);
		return;
	case POP3_REQ_UPDATE:
		update_start(c);
		return;
	case POP3_REQ_STLS:
		if (!c->w->srv->tls_available) {
			complete(c, POP3_REQ_STLS, -1);
			return;
		}
		c->parked = POP3_REQ_STLS;
		conn_starttls(c);
		return;
	}
}

void pop3_conn_start(struct conn *c)
{
	struct server *srv = c->w->srv;
	c->pop3.pol = &srv->pop3_pol[c->svc == SVC_POP3S ? 1 : 0];
	c->pop3.auth_domain = -1;
	c->pop3.tls = c->tls != NULL; /* implicit TLS (pop3s) */
	c->pop3.tls_available = srv->tls_available;
	conn_out_alloc(c);
	pop3_start(&c->pop3, &c->out);
}

void pop3_conn_input(struct conn *c)
{
	if (!conn_out_alloc(c))
		return;
	while (!c->parked && !(c->flags & CF_CLOSING)) {
		if (obuf_room(&c->out) < POP3_REPLY_ROOM)
			break; /* the send completion brings us back */
		bool more = pop3_output_pending(&c->pop3);
		if (!c->nin && !more)
			break;
		size_t used = 0;
		enum pop3_req req;
		if (c->nin) {
			struct ichunk *ch = &c->in[c->inhead];
			req = pop3_feed(&c->pop3, ch->p + ch->off, ch->len - ch->off, &used, &c->out);
			ch->off += (uint32_t)used;
			if (ch->off == ch->len)
				conn_pop_input(c);
		} else {
			req = pop3_feed(&c->pop3, NULL, 0, &used, &c->out);
		}
		if (req != POP3_REQ_NONE)
			handle(c, req);
		else if (used == 0 && (!more || pop3_output_pending(&c->pop3)))
			break;
	}
}

void pop3_conn_tls_done(struct conn *c, int result)
{
	if (c->parked == POP3_REQ_STLS)
		complete(c, POP3_REQ_STLS, result);
	else
		pop3_conn_start(c); /* implicit TLS: the greeting now */
}

void pop3_conn_job_done(struct conn *c, struct pool_job *j)
{
	struct server *srv = c->w->srv;
	int result = j->result;
	int kind = j->kind;
	void *arg = j->arg;
	pool_job_free(j);
	if (kind == JOB_UPDATE_PART) {
		struct drop *d = arg;
		d->parts--;
		if (result < 0 && !d->part_err)
			d->part_err = result;
		if (d->parts) {
			c->flags |= CF_JOB; /* the other ranges still hold the conn */
			return;
		}
		if (c->flags & CF_CLOSING)
			return;
		if (srv->cfg->sync == SYNC_FULL && !d->part_err) {
			struct pool_job *sj = job_new(c, JOB_SYNC, sync_job);
			if (sj) {
				sj->arg = d;
				job_submit(c, sj, POP3_REQ_UPDATE);
				return;
			}
			d->part_err = -ENOMEM;
		}
		kind = JOB_UPDATE;
		result = d->part_err;
	} else if (kind == JOB_SYNC) {
		kind = JOB_UPDATE;
	}
	if (c->flags & CF_CLOSING) {
		/* The connection went while the job ran: release what the job
		 * took (a lock held by nobody would lock the owner out). */
		if (kind == JOB_OPEN)
			drop_free(arg);
		else if (kind == JOB_REOPEN && result >= 0)
			close(result);
		return;
	}
	switch (kind) {
	case JOB_AUTH:
		if (result != 0) {
			/* 1, 2, 4, 8 s before the -ERR [AUTH]: no thread sleeps. */
			unsigned f = c->pop3.auth_failures;
			c->wake = c->w->now + (1u << (f < 3 ? f : 3));
			c->wake_result = -1;
			conn_timer_rearm(c);
			log_info("auth_failed", "service=%s conn=%u", svc_names[c->svc], c->id);
			return;
		}
		complete(c, POP3_REQ_AUTH, 0);
		break;
	case JOB_OPEN: {
		struct drop *d = arg;
		if (result < 0) {
			log_info("login_failed", "service=%s conn=%u domain=%s error=\"%s\"",
				 svc_names[c->svc], c->id, srv->cfg->domains[d->dom].name,
				 result == -EAGAIN ? "maildrop in use" : strerror(-result));
			drop_free(d);
			complete(c, POP3_REQ_OPEN, result);
			break;
		}
		uint64_t bytes = 0;
		for (unsigned i = 0; i < d->snap.n; i++)
			bytes += d->snap.msgs[i].size;
		log_info("login", "service=%s conn=%u domain=%s messages=%u bytes=%llu",
			 svc_names[c->svc], c->id, srv->cfg->domains[d->dom].name, d->snap.n,
			 (unsigned long long)bytes);
		c->maildrop = d;
		pop3_set_maildrop(&c->pop3, d->snap.msgs, d->snap.n);
		complete(c, POP3_REQ_OPEN, 0);
		break;
	}
	case JOB_REOPEN:
		pop3_conn_read_done(c, result); /* an fd or -errno, as from the ring */
		return;
	case JOB_UPDATE: {
		struct drop *d = arg;
		unsigned ndel = 0;
		for (unsigned i = 0; i < d->snap.n; i++)
			ndel += d->snap.msgs[i].deleted;
		if (result < 0)
			log_error("update_failed", "conn=%u domain=%s error=\"%s\"", c->id,
				  srv->cfg->domains[d->dom].name, strerror(-result));
		else
			log_info("update", "conn=%u domain=%s deleted=%u", c->id,
				 srv->cfg->domains[d->dom].name, ndel);
		unlock_drop(d);
		complete(c, POP3_REQ_UPDATE, result);
		break;
	}
	}
	conn_resume(c);
}

void pop3_conn_timer(struct conn *c)
{
	struct worker *w = c->w;
	if (c->wake && w->now >= c->wake) {
		c->wake = 0;
		complete(c, POP3_REQ_AUTH, c->wake_result);
		conn_touch(c);
		conn_timer_rearm(c);
		conn_resume(c);
		return;
	}
	if (c->flags & CF_CLOSING)
		return;
	if (w->stopping && !c->parked) {
		/* SPEC 8: shutting down; no UPDATE for a session cut short. */
		conn_out_alloc(c);
		obuf_puts(&c->out, "-ERR [SYS/TEMP] Server shutting down\r\n");
		conn_close(c);
		return;
	}
	if (c->parked && c->parked != POP3_REQ_RETR) {
		/* Waiting on a password check or the disk, not on the client. */
		conn_touch(c);
		conn_timer_rearm(c);
		return;
	}
	if (w->now >= c->deadline) {
		/* RFC 1939 3: the autologout timer ends the session without
		 * entering UPDATE. A RETR the client stopped reading ends too. */
		log_info("timeout", "service=%s conn=%u", svc_names[c->svc], c->id);
		if (!c->retr && conn_out_alloc(c) && obuf_room(&c->out) > 64)
			pop3_timeout(&c->pop3, &c->out);
		conn_close(c);
		return;
	}
	conn_timer_rearm(c);
}

void pop3_conn_stop(struct conn *c)
{
	/* The session is over (timeout, drop, shutdown): the lock goes now,
	 * before the client sees the close, unless a removal job still works
	 * on the maildrop (then it goes when the connection is freed). A file
	 * read in flight still completes (CF_READ holds the conn). */
	if (!(c->flags & CF_JOB))
		unlock_drop(c->maildrop);
}

void pop3_conn_free(struct conn *c)
{
	retr_end(c);
	drop_free(c->maildrop);
	c->maildrop = NULL;
}
