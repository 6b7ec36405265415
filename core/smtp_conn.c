/*
 * smtp_conn: drives proto/smtp.c for one connection. The machine decides
 * every reply; this file only carries out its requests (spool, password
 * check) and feeds it input while it is not waiting for one.
 */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/pool.h"
#include "core/server.h"

enum { JOB_AUTH = 1 };

static struct smtp_io io_of(struct conn *c)
{
	conn_out_alloc(c);
	return (struct smtp_io){.out = &c->out, .body = spool_body, .ctx = c};
}

static void handle(struct conn *c, enum smtp_req req);

static void complete(struct conn *c, enum smtp_req req, int result, const char *arg)
{
	struct smtp_io io = io_of(c);
	c->parked = 0;
	enum smtp_req next = smtp_complete(&c->smtp, req, result, arg, &io);
	if (next != SMTP_REQ_NONE)
		handle(c, next);
}

static void auth_start(struct conn *c)
{
	struct server *srv = c->w->srv;
	struct pool_job *j = calloc(1, sizeof *j);
	if (!j) {
		complete(c, SMTP_REQ_AUTH, -1, NULL);
		return;
	}
	size_t n;
	const char *pw = smtp_auth_password(&c->smtp, &n);
	int dom = smtp_auth_domain(&c->smtp);
	j->w = c->w;
	j->conn = c;
	j->kind = JOB_AUTH;
	j->fn = pool_auth_check;
	j->stored = dom >= 0 ? srv->cfg->domains[dom].password : NULL;
	j->pwlen = n < sizeof j->pw ? n : sizeof j->pw - 1;
	memcpy(j->pw, pw, j->pwlen);
	j->arg = (void *)(intptr_t)dom;
	c->flags |= CF_JOB;
	c->parked = SMTP_REQ_AUTH;
	pool_submit(j);
}

static void handle(struct conn *c, enum smtp_req req)
{
	switch (req) {
	case SMTP_REQ_NONE:
		return;
	case SMTP_REQ_CLOSE:
		conn_close(c);
		return;
	case SMTP_REQ_SPOOL_OPEN:
		c->parked = SMTP_REQ_SPOOL_OPEN;
		c->spool = spool_open(c);
		if (!c->spool)
			complete(c, SMTP_REQ_SPOOL_OPEN, -1, NULL);
		return;
	case SMTP_REQ_SPOOL_COMMIT:
		c->parked = SMTP_REQ_SPOOL_COMMIT;
		spool_commit(c->spool);
		return;
	case SMTP_REQ_SPOOL_ABORT:
		spool_abort(c->spool);
		c->spool = NULL;
		return;
	case SMTP_REQ_AUTH:
		auth_start(c);
		return;
	case SMTP_REQ_STARTTLS:
		if (!c->w->srv->tls_available) {
			complete(c, SMTP_REQ_STARTTLS, -1, NULL);
			return;
		}
		c->parked = SMTP_REQ_STARTTLS;
		conn_starttls(c);
		return;
	}
}

void smtp_conn_start(struct conn *c)
{
	struct server *srv = c->w->srv;
	unsigned k = c->svc == SVC_SMTP ? 0 : c->svc == SVC_SUBMISSION ? 1 : 2;
	c->smtp.pol = &srv->smtp_pol[k];
	c->smtp.auth_domain = -1;
	c->smtp.tls = c->tls != NULL; /* implicit TLS (submissions) */
	c->smtp.tls_available = srv->tls_available;
	struct smtp_io io = io_of(c);
	smtp_start(&c->smtp, &io);
}

static bool maybe_stop(struct conn *c)
{
	if (!c->w->stopping || c->parked || smtp_in_transaction(&c->smtp) ||
	    (c->flags & CF_CLOSING))
		return false;
	struct smtp_io io = io_of(c);
	smtp_shutdown(&c->smtp, &io);
	conn_close(c);
	return true;
}

void smtp_conn_input(struct conn *c)
{
	struct smtp_io io = io_of(c);
	while (!c->parked && !(c->flags & CF_CLOSING) && c->nin) {
		if (obuf_room(&c->out) < SMTP_REPLY_ROOM)
			break; /* the send completion brings us back */
		struct ichunk *ch = &c->in[c->inhead];
		if (c->spool)
			spool_input(c->spool, ch);
		size_t used = 0;
		enum smtp_req req =
			smtp_feed(&c->smtp, ch->p + ch->off, ch->len - ch->off, &used, &io);
		if (c->spool)
			spool_flush(c->spool);
		ch->off += (uint32_t)used;
		if (ch->off == ch->len)
			conn_pop_input(c);
		if (req != SMTP_REQ_NONE)
			handle(c, req);
		else if (used == 0)
			break;
	}
	maybe_stop(c);
}

void smtp_conn_tls_done(struct conn *c, int result)
{
	if (c->parked == SMTP_REQ_STARTTLS)
		complete(c, SMTP_REQ_STARTTLS, result, NULL);
	else
		smtp_conn_start(c); /* implicit TLS: the greeting now */
}

void smtp_conn_spool_done(struct conn *c, enum smtp_req req, int result, const char *id)
{
	complete(c, req, result, id);
	conn_resume(c);
}

void smtp_conn_job_done(struct conn *c, struct pool_job *j)
{
	int result = j->result;
	pool_job_free(j);
	if (result != 0) {
		/* A growing delay (1, 2, 4, 8 s) before the 535: guessing gets
		 * slow, and nobody's thread sleeps for it. */
		unsigned f = c->smtp.auth_failures;
		c->wake = c->w->now + (1u << (f < 3 ? f : 3));
		c->wake_result = -1;
		conn_timer_rearm(c);
		log_info("auth_failed", "conn=%u client=%s", c->id, c->smtp.peer);
		return;
	}
	log_info("auth", "conn=%u client=%s domain=%s", c->id, c->smtp.peer,
		 c->w->srv->cfg->domains[smtp_auth_domain(&c->smtp)].name);
	complete(c, SMTP_REQ_AUTH, 0, NULL);
	conn_resume(c);
}

void smtp_conn_timer(struct conn *c)
{
	struct worker *w = c->w;
	if (c->wake && w->now >= c->wake) {
		c->wake = 0;
		complete(c, SMTP_REQ_AUTH, c->wake_result, NULL);
		conn_touch(c);
		conn_timer_rearm(c);
		conn_resume(c);
		return;
	}
	if (maybe_stop(c))
		return;
	if (c->parked || (c->flags & CF_CLOSING)) {
		/* Waiting on the disk or a password check, not on the
		 * client: the idle clock does not run. */
		conn_touch(c);
		conn_timer_rearm(c);
		return;
	}
	if (w->now >= c->deadline) {
		struct smtp_io io = io_of(c);
		log_info("timeout", "conn=%u client=%s", c->id, c->smtp.peer);
		smtp_timeout(&c->smtp, &io);
		conn_close(c);
		return;
	}
	conn_timer_rearm(c);
}

void smtp_conn_stop(struct conn *c)
{
	/* The connection is closing: a message still in DATA is dropped, one
	 * being committed completes on its own. */
	spool_detach(c->spool);
	c->spool = NULL;
}

void smtp_conn_free(struct conn *c) { smtp_end(&c->smtp); }
