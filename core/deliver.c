/*
 * deliver: a transaction's message on its way into the maildrops (SPEC 6),
 * all through the ring.
 *
 *   spool_open    openat(tmp/NAME, O_EXCL) per maildrop, then the trace
 *                 headers (Return-Path, Delivered-To, Received) at offset 0
 *   spool_body    message bytes, as spans of the receive buffers: staged into
 *                 an iovec batch that holds a reference on its buffer, then
 *                 one positional writev per file. Nothing is copied except
 *                 the few bytes the machine hands over from elsewhere.
 *   spool_commit  when every write is done: fsync(file) -> renameat into
 *                 new/NAME,S=SIZE -> one fsync(new/) shared with every other
 *                 delivery that got there in the same loop turn -> 250.
 *                 Files that reach it together commit as one batch: one
 *                 syncfs() for their data, then the renames and one fsync
 *                 of new/ (batch_job).
 *   spool_abort   close and unlink: nothing partial is ever in new/.
 *
 * A spool may outlive its connection: a client that hangs up after the
 * final dot still gets its message delivered (it may resend; a duplicate is
 * better than a loss), and one that hangs up mid-DATA gets its tmp file
 * removed. A multi-domain transaction writes one file per maildrop, each
 * with its own Delivered-To lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/pool.h"
#include "core/server.h"
#include "proto/sendas.h"
#include "store/queue.h"
#include "store/sync.h"

#define STAGE_IOV 64
#define STAGE_COPY 256
/* Authenticated messages: the header block is held (up to this much) for
 * the send-as rewrite and the Date/Message-ID fields (SPEC 4). */
#define HOLD_MAX (64 * 1024)

enum spool_phase { SP_OPENING, SP_OPEN, SP_COMMITTING, SP_SYNCING, SP_ABORTING };

struct spool_file {
	struct spool *sp;
	struct spool_file *dsnext; /* a struct mdcommit list */
	int dom;                   /* maildrop, or -1: the relay queue */
	int fd;
	bool renamed;              /* in new/, or committed to the queue */
	int err;                   /* in a commit batch: 0, -errno */
	struct queue_writer qw;    /* dom -1 */
	uint64_t off;              /* bytes written (or submitted): the size */
	char base[MAILDIR_NAME_MAX + 1];
	_Alignas(16) char pad[0];
};

struct wbatch {
	struct spool *sp;
	int32_t bid;       /* receive buffer held, -1 none */
	int file;          /* -1: every file; else just that one (headers) */
	uint16_t niov;
	uint16_t left;     /* writes outstanding */
	size_t total;
	size_t copy_used;  /* of copybuf: bytes that live nowhere else */
	char *own;         /* a malloc'd span (headers), freed with it */
	struct iovec iov[STAGE_IOV];
	_Alignas(16) char copybuf[];
};

struct spool {
	struct conn *c;        /* NULL once the connection went away */
	struct worker *w;
	enum spool_phase phase;
	int error;             /* first failure, -errno */
	unsigned pending;      /* opens and writes in flight */
	unsigned opening;
	unsigned waiting;      /* files still on their way to new/ */
	unsigned nfiles;
	uint64_t body;
	struct wbatch *stage;
	const struct ichunk *cur;
	int auth;              /* the authenticated domain, or -1 */
	bool hold;             /* collecting the header block */
	char *hdr;             /* HOLD_MAX */
	size_t hlen;
	size_t hls;            /* a line start in hdr with no empty line before */
	struct queue_entry qe; /* the relay recipients' envelope */
	bool qstarted;         /* its commit has begun (or was skipped) */
	bool dotline;          /* a stored line starts with "." */
	bool mid_line;         /* the text so far does not end in LF */
	char id[40];
	_Alignas(16) struct spool_file f[];
};

static void set_error(struct spool *sp, int err)
{
	if (!sp->error)
		sp->error = err ? err : -EIO;
}

static struct wbatch *wbatch_new(struct spool *sp, size_t copy_cap)
{
	struct wbatch *b = malloc(sizeof *b + copy_cap);
	if (!b)
		return NULL;
	b->sp = sp;
	b->bid = -1;
	b->file = -1;
	b->niov = 0;
	b->left = 0;
	b->total = 0;
	b->copy_used = 0;
	b->own = NULL;
	return b;
}

/* A batch that starts with SPAN (malloc'd, N octets; owned from here on,
 * also on failure) for file FILE (-1: every file), with COPY_CAP octets of
 * room for body bytes copied later. NULL (and the spool's error set) when
 * SPAN is missing or memory is short. */
static struct wbatch *wbatch_span(struct spool *sp, char *span, size_t n, int file,
				  size_t copy_cap)
{
	struct wbatch *b = span && n ? wbatch_new(sp, copy_cap) : NULL;
	if (!b) {
		free(span);
		set_error(sp, -ENOMEM);
		return NULL;
	}
	b->own = span;
	b->file = file;
	b->iov[0] = (struct iovec){span, n};
	b->niov = 1;
	b->total = n;
	return b;
}

static void wbatch_free(struct worker *w, struct wbatch *b)
{
	buf_release(w, b->bid);
	free(b->own);
	free(b);
}

/* Submits b to its file(s); b is freed when the last write completes. */
static void wbatch_submit(struct spool *sp, struct wbatch *b)
{
	for (unsigned i = 0; i < sp->nfiles; i++) {
		struct spool_file *f = &sp->f[i];
		if (f->fd < 0 || (b->file >= 0 && (unsigned)b->file != i))
			continue;
		struct io_uring_sqe *sqe = worker_sqe(sp->w);
		io_uring_prep_writev(sqe, f->fd, b->iov, b->niov, f->off);
		io_uring_sqe_set_data64(sqe, op_tag(b, OP_SPOOL_WRITE));
		f->off += b->total;
		b->left++;
		sp->pending++;
	}
	if (!b->left)
		wbatch_free(sp->w, b);
}

static void stage_submit(struct spool *sp)
{
	struct wbatch *b = sp->stage;
	sp->stage = NULL;
	if (!b)
		return;
	if (b->niov == 0 || sp->error) {
		wbatch_free(sp->w, b);
		return;
	}
	wbatch_submit(sp, b);
}

static size_t trace_for(struct spool *sp, struct spool_file *f, char **out);
static void scan_dots(struct spool *sp, const char *p, size_t n);

/* The header block is complete (end > 0), too big to hold (end 0), or the
 * message ended (final): rewrite it (send-as, Date, Message-ID), then write
 * each file's trace headers, the block and what followed it, in one batch
 * per file, ahead of the rest of the body. */
static void hold_release(struct spool *sp, size_t end)
{
	struct server *srv = sp->w->srv;
	struct smtp_session *s = &sp->c->smtp;
	sp->hold = false;
	char *out = NULL;
	size_t olen = 0;
	if (end) {
		time_t now = time(NULL);
		struct tm tm;
		localtime_r(&now, &tm);
		struct sendas_params prm = {
			.domain = srv->cfg->domains[sp->auth].name,
			.token = sp->id,
			.now = (int64_t)now,
			.tz_off_min = (int)(tm.tm_gmtoff / 60),
		};
		struct sendas_result res;
		size_t cap = end + 2048;
		for (int tries = 0; tries < 2; tries++) {
			out = malloc(cap);
			if (!out)
				break;
			int rc = sendas_rewrite(&prm, sp->hdr, end, out, cap, &res);
			if (rc == SENDAS_OK) {
				olen = res.len;
				break;
			}
			free(out);
			out = NULL;
			if (rc != SENDAS_ENOSPC)
				break;
			cap = res.len;
		}
		if (out && res.tagged) {
			char q[400];
			log_info("sendas", "conn=%u id=%s from=%s", sp->c->id, sp->id,
				 log_q(q, sizeof q, res.sender));
			smtp_tx_set_from(s, res.sender);
		}
	}
	if (!out) {
		/* Too big to rewrite (or out of memory): as it came. */
		end = 0;
	}
	for (unsigned i = 0; i < sp->nfiles && !sp->error; i++) {
		struct spool_file *f = &sp->f[i];
		char *trace = NULL;
		size_t tn = trace_for(sp, f, &trace);
		size_t total = tn + (out ? olen : 0) + (sp->hlen - end);
		char *buf = tn ? malloc(total) : NULL;
		if (!buf) {
			free(trace);
			set_error(sp, -ENOMEM);
			break;
		}
		memcpy(buf, trace, tn);
		free(trace);
		if (out)
			memcpy(buf + tn, out, olen);
		memcpy(buf + tn + (out ? olen : 0), sp->hdr + end, sp->hlen - end);
		if (i == 0)
			scan_dots(sp, buf + tn, total - tn);
		struct wbatch *b = wbatch_span(sp, buf, total, (int)i, 0);
		if (!b)
			break;
		wbatch_submit(sp, b);
	}
	free(out);
	free(sp->hdr);
	sp->hdr = NULL;
	sp->hlen = 0;
}

/* Watches what is stored for lines that start with "." (POP3 must stuff
 * those): a file without any is named plain and RETR sends it as it is. */
static void scan_dots(struct spool *sp, const char *p, size_t n)
{
	if (n == 0)
		return;
	if (!sp->dotline && ((!sp->mid_line && p[0] == '.') || memmem(p, n, "\n.", 2)))
		sp->dotline = true;
	sp->mid_line = p[n - 1] != '\n';
}

/* The end of the held header block, or 0. Searches only from the last
 * line start not yet looked at, so a block that arrives in many small
 * pieces costs one pass, not one per piece. */
static size_t header_end_from(struct spool *sp)
{
	size_t end = sendas_header_end(sp->hdr + sp->hls, sp->hlen - sp->hls);
	if (end)
		return sp->hls + end;
	for (size_t i = sp->hlen; i > sp->hls + 1; i--)
		if (sp->hdr[i - 1] == '\n' && sp->hdr[i - 2] == '\r') {
			sp->hls = i;
			break;
		}
	return 0;
}

/* The body callback of struct smtp_io (ctx = the conn). */
void spool_body(void *ctx, const char *p, size_t n)
{
	struct conn *c = ctx;
	struct spool *sp = c->spool;
	if (!sp || sp->phase != SP_OPEN)
		return;
	sp->body += n;
	if (sp->error)
		return; /* keep reading to the end; the commit answers 451 */
	if (sp->hold) {
		size_t take = n < HOLD_MAX - sp->hlen ? n : HOLD_MAX - sp->hlen;
		memcpy(sp->hdr + sp->hlen, p, take);
		/* No LF in what came: no line ended, nothing to look at. */
		bool nl = memchr(sp->hdr + sp->hlen, '\n', take) != NULL;
		sp->hlen += take;
		p += take;
		n -= take;
		size_t end = nl ? header_end_from(sp) : 0;
		if (end || sp->hlen == HOLD_MAX)
			hold_release(sp, end);
		if (!n || sp->error)
			return;
	}
	scan_dots(sp, p, n);
	const struct ichunk *ch = sp->cur;
	bool in_chunk = ch && p >= ch->p && p + n <= ch->p + ch->len;
	while (n) {
		struct wbatch *b = sp->stage;
		if (!b && !(b = sp->stage = wbatch_new(sp, STAGE_COPY))) {
			set_error(sp, -ENOMEM);
			return;
		}
		if (b->niov == STAGE_IOV) {
			stage_submit(sp);
			continue;
		}
		const char *src = p;
		size_t take = n;
		if (in_chunk) {
			if (b->bid < 0) {
				b->bid = ch->bid;
				sp->w->bufref[ch->bid]++;
			}
		} else {
			/* Bytes the machine holds itself (a CR it kept back
			 * across reads, say): copy, they may not stay put. */
			size_t room = STAGE_COPY - b->copy_used;
			if (room == 0) {
				stage_submit(sp);
				continue;
			}
			take = n < room ? n : room;
			memcpy(b->copybuf + b->copy_used, p, take);
			src = b->copybuf + b->copy_used;
			b->copy_used += take;
		}
		struct iovec *last = b->niov ? &b->iov[b->niov - 1] : NULL;
		if (last && (const char *)last->iov_base + last->iov_len == src)
			last->iov_len += take; /* contiguous: one span */
		else
			b->iov[b->niov++] = (struct iovec){(void *)src, take};
		b->total += take;
		p += take;
		n -= take;
	}
}

void spool_input(struct spool *sp, const struct ichunk *ch) { sp->cur = ch; }

/* Spans staged from this chunk go out now, each batch holding a reference
 * on the chunk's buffer, so the buffer may be released by the caller. */
void spool_flush(struct spool *sp)
{
	stage_submit(sp);
	sp->cur = NULL;
}

static void spool_free(struct spool *sp)
{
	if (sp->stage)
		wbatch_free(sp->w, sp->stage);
	sp->w->nspools--;
	free(sp->hdr);
	queue_entry_free(&sp->qe);
	free(sp);
}

/* Closes what is open and removes every tmp file that never reached new/. */
static void spool_discard(struct spool *sp)
{
	struct server *srv = sp->w->srv;
	for (unsigned i = 0; i < sp->nfiles; i++) {
		struct spool_file *f = &sp->f[i];
		if (f->fd >= 0) {
			struct io_uring_sqe *sqe = worker_sqe(sp->w);
			io_uring_prep_close(sqe, f->fd);
			io_uring_sqe_set_data64(sqe, OP_IGNORE);
			f->fd = -1;
		}
		if (!f->renamed && f->base[0]) {
			struct io_uring_sqe *sqe = worker_sqe(sp->w);
			/* The name is copied by the kernel at submit time
			 * (IORING_FEAT_SUBMIT_STABLE); submit before freeing. */
			if (f->dom >= 0)
				io_uring_prep_unlinkat(sqe, srv->maildirs[f->dom].tmpfd, f->base, 0);
			else
				io_uring_prep_unlinkat(sqe, srv->qdirfd, f->base, 0);
			io_uring_sqe_set_data64(sqe, OP_IGNORE);
		}
	}
	io_uring_submit(&sp->w->ring);
}

/* Finishing is always a completion of its own, so a connection is never
 * re-entered from inside its own feed loop. */
static void finish_later(struct spool *sp)
{
	struct io_uring_sqe *sqe = worker_sqe(sp->w);
	io_uring_prep_nop(sqe);
	io_uring_sqe_set_data64(sqe, op_tag(sp, OP_SPOOL_DONE));
}

static size_t trace_for(struct spool *sp, struct spool_file *f, char **out)
{
	const struct smtp_session *s = &sp->c->smtp;
	size_t cap = 1024 + strlen(smtp_tx_from(s)) + strlen(s->helo);
	for (unsigned i = 0; i < smtp_tx_nrcpt(s); i++)
		cap += strlen(smtp_tx_rcpt(s, i)->addr) + 20;
	time_t now = time(NULL);
	struct tm tm;
	localtime_r(&now, &tm);
	for (int tries = 0; tries < 4; tries++, cap *= 2) {
		char *buf = malloc(cap);
		if (!buf)
			return 0;
		size_t n = smtp_trace_headers(buf, cap, s, f->dom, sp->id, (int64_t)now,
					      (int)(tm.tm_gmtoff / 60));
		if (n) {
			*out = buf;
			return n;
		}
		free(buf);
	}
	return 0;
}

static void on_open(struct spool *sp, struct spool_file *f, int res)
{
	sp->pending--;
	sp->opening--;
	if (res < 0) {
		log_error("spool_open_failed", "id=%s maildrop=%s error=\"%s\"", sp->id,
			  f->dom >= 0 ? sp->w->srv->maildirs[f->dom].path : "(relay queue)",
			  strerror(-res));
		f->base[0] = '\0'; /* nothing to unlink */
		set_error(sp, res);
	} else {
		f->fd = res;
		if (sp->phase == SP_OPENING && sp->c && !sp->hold) {
			char *hdr = NULL;
			size_t n = trace_for(sp, f, &hdr);
			if (sp->nfiles == 1) {
				/* One file: the trace headers open the stage, so
				 * that they and the first body spans make one
				 * writev (a small message costs one write). */
				sp->stage = wbatch_span(sp, hdr, n, -1, STAGE_COPY);
			} else {
				struct wbatch *b = wbatch_span(sp, hdr, n, (int)(f - sp->f), 0);
				if (b)
					wbatch_submit(sp, b);
			}
		}
	}
	if (sp->opening)
		return;
	if (sp->phase == SP_ABORTING) {
		if (!sp->pending) {
			spool_discard(sp);
			spool_free(sp);
		}
		return;
	}
	struct conn *c = sp->c;
	if (sp->error) {
		/* The connection hears 451 now; the spool waits for its
		 * header writes before it goes. */
		c->spool = NULL;
		sp->c = NULL;
		sp->phase = SP_ABORTING;
		if (!sp->pending) {
			spool_discard(sp);
			spool_free(sp);
		}
		smtp_conn_spool_done(c, SMTP_REQ_SPOOL_OPEN, -1, NULL);
		return;
	}
	sp->phase = SP_OPEN;
	smtp_conn_spool_done(c, SMTP_REQ_SPOOL_OPEN, 0, NULL);
}

/* The relay queue's file: picked by queue_pick (a spare to write over, or
 * a new ID.msg.tmp) and opened through the ring like a maildrop file; the
 * commit blocks (fsync, rename, directory fsync), so it runs on the pool. */
static void qopen_submit(struct spool_file *f, bool spare)
{
	struct worker *w = f->sp->w;
	int flags = queue_pick(w->srv->qdirfd, (int64_t)time(NULL), &f->qw, spare);
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_openat(sqe, w->srv->qdirfd, f->qw.tmp, flags, 0600);
	io_uring_sqe_set_data64(sqe, op_tag(f, OP_SPOOL_OPEN));
}

/* Its open came back (RES: the fd or -errno): true to go on, false when a
 * spare that could not be opened was dropped and a new file asked for. */
static bool qopened(struct spool_file *f, int res)
{
	if (res >= 0) {
		f->qw.fd = res;
		/* discard unlinks f->base if the message never commits */
		snprintf(f->base, sizeof f->base, "%s", f->qw.tmp);
		return true;
	}
	if (!f->qw.spare)
		return true;
	struct worker *w = f->sp->w;
	struct io_uring_sqe *sqe = worker_sqe(w);
	io_uring_prep_unlinkat(sqe, w->srv->qdirfd, f->qw.tmp, 0);
	io_uring_sqe_set_data64(sqe, OP_IGNORE);
	io_uring_submit(&w->ring); /* its path is read now: qw.tmp changes */
	qopen_submit(f, false);
	return false;
}

/* Weak: a build without the relay runner still queues durably. */
__attribute__((weak)) void relay_enqueued(struct queue_entry *e) { (void)e; }

/* Queue entries committed together share one syncfs() and one fsync of
 * the queue directory (queue_commit_batch): the entries that reach their
 * commit in the same loop turns go as one job. One job at a time per
 * worker, newcomers wait for the next (two at once cost the pool threads
 * a third more CPU per message for the same rate). */
static void file_done(struct spool *sp);

static int qcommit_job(struct pool_job *j)
{
	enum { CHUNK = 64 }; /* entries per queue_commit_batch call */
	struct queue_writer *ws[CHUNK];
	struct queue_entry *es[CHUNK];
	int rcs[CHUNK];
	for (struct spool_file *f = j->arg, *first; (first = f);) {
		unsigned n = 0;
		for (; f && n < CHUNK; f = f->dsnext, n++) {
			f->qw.size = f->off;
			ws[n] = &f->qw;
			es[n] = &f->sp->qe;
		}
		queue_commit_batch(ws, es, rcs, n);
		n = 0;
		for (struct spool_file *g = first; g != f; g = g->dsnext)
			g->err = rcs[n++];
	}
	return 0;
}

static void qcommitted(struct spool_file *f)
{
	struct spool *sp = f->sp;
	int res = f->err;
	f->fd = -1; /* queue_commit closed it */
	if (res < 0) {
		log_error("queue_failed", "id=%s error=\"%s\"", sp->id, strerror(-res));
		f->base[0] = '\0'; /* queue_commit removed what it wrote */
		set_error(sp, res);
	} else {
		f->renamed = true;
		log_info("queued", "conn=%u id=%s queue_id=%s rcpts=%u size=%llu",
			 sp->c ? sp->c->id : 0, sp->id, f->qw.id, sp->qe.nrcpt,
			 (unsigned long long)f->off);
		relay_enqueued(&sp->qe); /* takes it: the relay needs no re-read */
	}
	file_done(sp);
}

static void qcommit_done(struct pool_job *j)
{
	struct spool_file *f = j->arg;
	j->w->qbusy = false;
	pool_job_free(j);
	for (struct spool_file *next; f; f = next) {
		next = f->dsnext;
		qcommitted(f);
	}
}

static void queue_commit_start(struct spool *sp, struct spool_file *f)
{
	f->dsnext = sp->w->qwaiting;
	sp->w->qwaiting = f;
}

static void qcommit_submit(struct worker *w)
{
	struct spool_file *f = w->qwaiting;
	if (!f || w->qbusy)
		return;
	w->qwaiting = NULL;
	if (pool_call(w, qcommit_job, qcommit_done, f) == 0) {
		w->qbusy = true;
		return;
	}
	for (struct spool_file *next; f; f = next) {
		next = f->dsnext;
		set_error(f->sp, -ENOMEM); /* the discard removes its file */
		file_done(f->sp);
	}
}

/* The envelope of the relay recipients, taken while the session is here. */
static int queue_entry_from_tx(struct spool *sp)
{
	const struct smtp_session *s = &sp->c->smtp;
	struct queue_entry *e = &sp->qe;
	const char *envid = smtp_tx_envid(s);
	if (queue_strset(&e->from, smtp_tx_from(s)) || (envid && queue_strset(&e->envid, envid)) ||
	    queue_strset(&e->auth_domain, sp->w->srv->cfg->domains[sp->auth].name))
		return -ENOMEM;
	e->ret = (uint8_t)smtp_tx_ret(s);
	e->body = (uint8_t)smtp_tx_body_type(s);
	e->smtputf8 = smtp_tx_smtputf8(s);
	e->arrival = e->next_try = (int64_t)time(NULL);
	for (unsigned i = 0; i < smtp_tx_nrcpt(s); i++) {
		const struct smtp_rcpt *r = smtp_tx_rcpt(s, i);
		if (r->domain >= 0 && !(r->notify & SMTP_NOTIFY_SUCCESS))
			continue;
		if (queue_add_rcpt(e, r->addr, r->orcpt, r->notify))
			return -ENOMEM;
		if (r->domain >= 0) {
			/* Delivered here (the entry is committed after the
			 * maildrops): the relay only writes the SUCCESS DSN,
			 * "Action: delivered" (RFC 3461 5.2.2, SPEC 5). */
			struct queue_rcpt *q = &e->rcpt[e->nrcpt - 1];
			q->state = QUEUE_DONE;
			q->attempts = 1;
			q->last_try = e->arrival;
			if (queue_strset(&q->status, "2.0.0"))
				return -ENOMEM;
		}
	}
	return 0;
}

struct spool *spool_open(struct conn *c)
{
	const struct smtp_session *s = &c->smtp;
	struct server *srv = c->w->srv;
	int doms[64];
	unsigned nd = 0;
	bool relay = false;
	for (unsigned i = 0; i < smtp_tx_nrcpt(s); i++) {
		int d = smtp_tx_rcpt(s, i)->domain;
		if (d < 0) {
			/* Only an authenticated session gets here with one
			 * (the machine refuses relaying otherwise). */
			if (srv->qdirfd < 0) {
				log_warn("relay_unavailable", "conn=%u reason=\"no relay.queue\"", c->id);
				return NULL;
			}
			relay = true;
			continue;
		}
		/* A SUCCESS notice for a local delivery is written by the relay
		 * from a queue entry (authenticated senders: their maildrop). */
		if ((smtp_tx_rcpt(s, i)->notify & SMTP_NOTIFY_SUCCESS) && smtp_auth_domain(s) >= 0 &&
		    srv->qdirfd >= 0)
			relay = true;
		bool seen = false;
		for (unsigned k = 0; k < nd; k++)
			seen |= doms[k] == d;
		if (!seen && nd < 64)
			doms[nd++] = d;
	}
	unsigned nf = nd + relay;
	if (nf == 0)
		return NULL;
	struct spool *sp = calloc(1, sizeof *sp + nf * sizeof(struct spool_file));
	if (!sp)
		return NULL;
	sp->c = c;
	sp->w = c->w;
	sp->nfiles = nf;
	sp->phase = SP_OPENING;
	sp->auth = smtp_auth_domain(s);
	if (sp->auth >= 0) {
		sp->hdr = malloc(HOLD_MAX);
		if (!sp->hdr) {
			free(sp);
			return NULL;
		}
		sp->hold = true;
	}
	c->w->nspools++;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	/* The queue id: the unique part of a fresh name, up to the host. */
	char idname[MAILDIR_NAME_MAX + 1];
	maildir_unique(idname, sizeof idname, &ts);
	const char *dot = strchr(strchr(idname, '.') + 1, '.');
	size_t idn = dot ? (size_t)(dot - idname) : strlen(idname);
	if (idn >= sizeof sp->id)
		idn = sizeof sp->id - 1;
	memcpy(sp->id, idname, idn);
	sp->id[idn] = '\0';
	if (relay) {
		struct spool_file *f = &sp->f[nd];
		f->sp = sp;
		f->dom = -1;
		f->fd = -1;
		f->qw.fd = -1;
		qopen_submit(f, true);
		sp->pending++;
		sp->opening++;
	}
	for (unsigned i = 0; i < nd; i++) {
		struct spool_file *f = &sp->f[i];
		f->sp = sp;
		f->dom = doms[i];
		f->fd = -1;
		maildir_unique(f->base, sizeof f->base, &ts);
		struct io_uring_sqe *sqe = worker_sqe(c->w);
		io_uring_prep_openat(sqe, srv->maildirs[f->dom].tmpfd, f->base,
				     O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		io_uring_sqe_set_data64(sqe, op_tag(f, OP_SPOOL_OPEN));
		sp->pending++;
		sp->opening++;
	}
	return sp;
}

/* new/'s name for F: read off fields that no longer change once the
 * commit began (also by a batch on the pool). */
static void final_name(const struct spool_file *f, char *buf, size_t cap)
{
	maildir_final_name(buf, cap, f->base, f->off, !f->sp->dotline && !f->sp->mid_line);
}

static void rename_file(struct spool *sp, struct spool_file *f)
{
	struct server *srv = sp->w->srv;
	char final[MAILDIR_NAME_MAX + 32];
	final_name(f, final, sizeof final);
	struct io_uring_sqe *sqe = worker_sqe(sp->w);
	io_uring_prep_renameat(sqe, srv->maildirs[f->dom].tmpfd, f->base, srv->maildirs[f->dom].newfd,
			       final, 0);
	io_uring_sqe_set_data64(sqe, op_tag(f, OP_SPOOL_RENAME));
	/* renameat's paths are read at submit time: submit while final[]
	 * is still on the stack. */
	io_uring_submit(&sp->w->ring);
}

static void commit_step(struct spool *sp)
{
	if (sp->error) {
		finish_later(sp);
		return;
	}
	sp->phase = SP_SYNCING;
	sp->waiting = sp->nfiles;
	bool full = sp->w->srv->cfg->sync == SYNC_FULL;
	for (unsigned i = 0; i < sp->nfiles; i++) {
		struct spool_file *f = &sp->f[i];
		if (f->dom < 0) {
			/* The queue entry goes last, once the maildrops have the
			 * message (file_done): a failure there answers 451, and
			 * nothing may then go out or be reported delivered. */
			if (sp->nfiles == 1) {
				sp->qstarted = true;
				queue_commit_start(sp, f);
			}
			continue;
		}
		if (full) {
			/* commits_submit() makes its data durable */
			struct mdcommit *ds = &sp->w->mdcommit[f->dom];
			f->dsnext = ds->bwaiting;
			ds->bwaiting = f;
		} else {
			rename_file(sp, f);
		}
	}
}

void spool_commit(struct spool *sp)
{
	if (sp->hold && !sp->error) {
		/* The whole message was its header block. */
		size_t end = header_end_from(sp);
		hold_release(sp, end ? end : sp->hlen);
	}
	if (!sp->error && sp->f[sp->nfiles - 1].dom < 0 && queue_entry_from_tx(sp) != 0)
		set_error(sp, -ENOMEM);
	stage_submit(sp);
	sp->phase = SP_COMMITTING;
	if (!sp->pending)
		commit_step(sp);
}

void spool_abort(struct spool *sp)
{
	if (!sp)
		return;
	if (sp->stage) {
		/* Nothing of a refused message needs writing. */
		wbatch_free(sp->w, sp->stage);
		sp->stage = NULL;
	}
	if (sp->c)
		sp->c->spool = NULL;
	sp->c = NULL;
	sp->phase = SP_ABORTING;
	if (!sp->pending) {
		spool_discard(sp);
		spool_free(sp);
	}
}

void spool_detach(struct spool *sp)
{
	if (!sp)
		return;
	if (sp->phase == SP_OPENING || sp->phase == SP_OPEN) {
		spool_abort(sp);
		return;
	}
	/* Committing: the message is complete, finish the delivery. */
	sp->c->spool = NULL;
	sp->c = NULL;
}

static void file_done(struct spool *sp)
{
	sp->waiting--;
	struct spool_file *q = &sp->f[sp->nfiles - 1];
	if (q->dom < 0 && !sp->qstarted && sp->waiting == 1) {
		sp->qstarted = true;
		if (!sp->error) {
			queue_commit_start(sp, q);
			return;
		}
		sp->waiting--; /* never committed: the discard removes it */
	}
	if (sp->waiting == 0)
		finish_later(sp);
}

static void finish(struct spool *sp)
{
	struct server *srv = sp->w->srv;
	struct conn *c = sp->c;
	for (unsigned i = 0; i < sp->nfiles; i++) {
		struct spool_file *f = &sp->f[i];
		/* (a queue entry logs "queued" when it is committed) */
		if (f->renamed && !sp->error && f->dom >= 0)
			log_info("delivered", "conn=%u id=%s domain=%s size=%llu", c ? c->id : 0,
				 sp->id, srv->cfg->domains[f->dom].name, (unsigned long long)f->off);
	}
	if (sp->error)
		log_error("delivery_failed", "conn=%u id=%s error=\"%s\"", c ? c->id : 0, sp->id,
			  strerror(-sp->error));
	spool_discard(sp); /* closes; unlinks what did not reach new/ */
	int err = sp->error;
	char id[sizeof sp->id];
	memcpy(id, sp->id, sizeof id);
	if (c)
		c->spool = NULL;
	spool_free(sp);
	if (c)
		smtp_conn_spool_done(c, SMTP_REQ_SPOOL_COMMIT, err ? -1 : 0, id);
}

/* F's data is durable (RES 0) or could not be made so. */
static void synced(struct spool_file *f, int res)
{
	if (res < 0) {
		set_error(f->sp, res);
		file_done(f->sp);
	} else {
		rename_file(f->sp, f);
	}
}

void spool_cqe(struct worker *w, enum op op, void *obj, int res)
{
	switch (op) {
	case OP_SPOOL_OPEN: {
		struct spool_file *f = obj;
		if (f->dom < 0 && !qopened(f, res))
			return;
		on_open(f->sp, f, res);
		return;
	}
	case OP_SPOOL_WRITE: {
		struct wbatch *b = obj;
		struct spool *sp = b->sp;
		sp->pending--;
		if (res < 0)
			set_error(sp, res);
		else if ((size_t)res != b->total)
			set_error(sp, -ENOSPC); /* a short write to a file: full */
		if (--b->left == 0)
			wbatch_free(w, b);
		if (sp->pending)
			return;
		if (sp->phase == SP_COMMITTING)
			commit_step(sp);
		else if (sp->phase == SP_ABORTING) {
			spool_discard(sp);
			spool_free(sp);
		}
		return;
	}
	case OP_SPOOL_SYNC:
		synced(obj, res);
		return;
	case OP_SPOOL_RENAME: {
		struct spool_file *f = obj;
		struct spool *sp = f->sp;
		if (res < 0) {
			set_error(sp, res);
			file_done(sp);
			return;
		}
		f->renamed = true;
		if (w->srv->cfg->sync == SYNC_FULL) {
			struct mdcommit *ds = &w->mdcommit[f->dom];
			f->dsnext = ds->waiting;
			ds->waiting = f;
		} else {
			file_done(sp);
		}
		return;
	}
	case OP_DIRSYNC: {
		struct mdcommit *ds = obj;
		ds->inflight = false;
		struct spool_file *f = ds->running;
		ds->running = NULL;
		while (f) {
			struct spool_file *next = f->dsnext;
			if (res < 0)
				set_error(f->sp, res);
			file_done(f->sp);
			f = next;
		}
		return;
	}
	case OP_SPOOL_DONE:
		finish(obj);
		return;
	default:
		return;
	}
}

/* A commit batch (sync = "full", two or more files of one maildrop at
 * once), on the pool: their data made durable together (store/sync.h: one
 * syncfs and a flush; each file's own write error checked), then each file
 * is renamed into new/ and one fsync of new/ makes the names durable. Two
 * or three cache flushes per batch, where a file's own fdatasync costs a
 * flush, an inode-table write and one of tmp/ each. What sync_all reports
 * (an error anywhere on the file system) fails the whole batch.
 *
 * One batch at a time per maildrop and worker: newcomers wait for the
 * next, so batches grow with the disk's latency. Two at once (one syncing
 * while the other renames) measured 10 to 20% slower at 50 sessions, and
 * four slower still: fewer, bigger batches cost less CPU per message. */

static int batch_job(struct pool_job *j)
{
	struct spool_file *f = j->arg;
	const struct maildir *md = &j->w->srv->maildirs[f->dom];
	int rc = sync_all(md->tmpfd);
	if (rc)
		return rc;
	for (struct spool_file *g = f; g; g = g->dsnext)
		g->err = sync_error(g->fd);
	for (; f; f = f->dsnext) {
		char final[MAILDIR_NAME_MAX + 32];
		final_name(f, final, sizeof final);
		if (!f->err && renameat(md->tmpfd, f->base, md->newfd, final) == 0)
			f->renamed = true;
		else if (!f->err)
			f->err = -errno;
	}
	return fsync(md->newfd) == 0 ? 0 : -errno;
}

static void batch_done(struct pool_job *j)
{
	struct spool_file *f = j->arg;
	int res = j->result;
	j->w->mdcommit[f->dom].bbusy = false;
	pool_job_free(j);
	for (struct spool_file *next; f; f = next) {
		next = f->dsnext;
		if (f->err || res)
			set_error(f->sp, f->err ? f->err : res);
		file_done(f->sp);
	}
}

/* The files whose data is owed: a lone one gets its own fdatasync through
 * the ring (then renameat and the shared fsync of new/ below), two or more
 * go to the pool as one batch. While one runs, newcomers wait: a batch
 * grows as much as the disk is slow. */
static void batch_submit(struct worker *w, struct mdcommit *ds)
{
	struct spool_file *f = ds->bwaiting;
	if (ds->bbusy || !f)
		return;
	ds->bwaiting = NULL;
	if (!f->dsnext) {
		struct io_uring_sqe *sqe = worker_sqe(w);
		io_uring_prep_fsync(sqe, f->fd, IORING_FSYNC_DATASYNC);
		io_uring_sqe_set_data64(sqe, op_tag(f, OP_SPOOL_SYNC));
		return;
	}
	for (struct spool_file *g = f; g; g = g->dsnext)
		g->err = 0;
	if (pool_call(w, batch_job, batch_done, f) == 0) {
		ds->bbusy = true;
		return;
	}
	for (struct spool_file *next; f; f = next) {
		next = f->dsnext;
		synced(f, -ENOMEM);
	}
}

/* Once per loop turn: the group commits. Relay queue entries and maildrop
 * files owed a commit go to the pool in batches; every file renamed into
 * new/ through the ring since the last round shares one fsync of the
 * directory. While one runs, newcomers queue for the next: a batch grows
 * exactly as much as the disk is slow. */
void commits_submit(struct worker *w)
{
	struct server *srv = w->srv;
	qcommit_submit(w);
	for (unsigned d = 0; d < srv->cfg->ndomains; d++) {
		struct mdcommit *ds = &w->mdcommit[d];
		batch_submit(w, ds);
		if (ds->inflight || !ds->waiting)
			continue;
		ds->running = ds->waiting;
		ds->waiting = NULL;
		ds->inflight = true;
		struct io_uring_sqe *sqe = worker_sqe(w);
		io_uring_prep_fsync(sqe, srv->maildirs[d].newfd, 0);
		io_uring_sqe_set_data64(sqe, op_tag(ds, OP_DIRSYNC));
	}
}
