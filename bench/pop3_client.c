/*
 * The POP3 client machine (RFC 1939): greeting, optional STLS (RFC 2595),
 * USER/PASS, STAT, LIST, UIDL, then RETR (and DELE) for every message,
 * then QUIT, whose +OK says the removals are done.
 *
 * With pipelining (RFC 2449 PIPELINING) up to `window` RETR+DELE pairs are
 * in flight; without it every command waits for its answer. Multi-line
 * answers are read line by line to their terminating "." and counted in
 * un-stuffed octets, which is what the message size is.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

enum kind { P_GREET = 1, P_STLS, P_USER, P_PASS, P_STAT, P_LIST, P_UIDL, P_RETR, P_DELE, P_QUIT };

enum { CODE_OK = 1, CODE_ERR = 2 };

static long limit_of(struct conn *c)
{
	return opt.messages > 0 && opt.messages < c->nmsgs ? opt.messages : c->nmsgs;
}

static void cmd(struct conn *c, int kind, int arg, bool multi, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void cmd(struct conn *c, int kind, int arg, bool multi, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	conn_send(c, buf, (size_t)n);
	struct pend *p = pend_push(c, kind, arg);
	p->multi = multi;
}

static void login(struct conn *c)
{
	char user[256];
	snprintf(user, sizeof user, opt.user, c->idx);
	c->tx_t0 = now_ns();
	cmd(c, P_USER, 0, false, "USER %s\r\n", user);
	if (opt.pipelining) cmd(c, P_PASS, 0, false, "PASS %s\r\n", opt.pass);
}

static void quit(struct conn *c)
{
	cmd(c, P_QUIT, 0, false, "QUIT\r\n");
}

/* Keep the pipeline full: each RETR (and its DELE) while the window allows. */
static void fill(struct conn *c)
{
	long lim = limit_of(c);
	int per = opt.dele ? 2 : 1;
	int window = opt.pipelining ? opt.window : 1;
	while (c->cur <= lim && c->pend_n < window * per) {
		cmd(c, P_RETR, (int)c->cur, true, "RETR %ld\r\n", c->cur);
		if (opt.dele && opt.pipelining)
			cmd(c, P_DELE, (int)c->cur, false, "DELE %ld\r\n", c->cur);
		c->cur++;
		if (!opt.pipelining) break;
	}
	if (c->cur > lim && c->pend_n == 0) quit(c);
}

static void fail(struct conn *c, const char *line, size_t len)
{
	struct stats *st = &c->w->st;
	if (!st->last_err[0])
		snprintf(st->last_err, sizeof st->last_err, "%.*s",
			 (int)(len > 150 ? 150 : len) - (len >= 2 ? 2 : 0), line);
}

/* A status line ("+OK"/"-ERR") for the oldest command; for multi-line
 * answers after +OK, the lines follow and end the command later. */
static void on_status(struct conn *c, bool ok, const char *line, size_t len)
{
	struct stats *st = &c->w->st;
	struct pend *p = pend_front(c);
	st->codes[ok ? CODE_OK : CODE_ERR]++;
	if (!ok) fail(c, line, len);
	if (p->multi && ok) {
		c->in_multi = true;
		c->ans_bytes = 0;
		return;
	}
	struct pend cur = *p;
	pend_pop(c);
	uint64_t t = now_ns();
	switch (cur.kind) {
	case P_GREET:
		if (!ok) {
			conn_close(c, false);
			return;
		}
		c->greeted = true;
		st->established++;
		hist_add(&st->h[M_CONNECT], t - c->t_connect);
		if (opt.starttls && !c->ssl)
			cmd(c, P_STLS, 0, false, "STLS\r\n");
		else
			login(c);
		return;
	case P_STLS:
		if (!ok) {
			quit(c);
			return;
		}
		conn_start_tls(c);
		return;
	case P_USER:
		if (!ok) {
			if (opt.pipelining) return; /* PASS answers too */
			quit(c);
			return;
		}
		if (!opt.pipelining) cmd(c, P_PASS, 0, false, "PASS %s\r\n", opt.pass);
		return;
	case P_PASS:
		if (!ok) {
			quit(c);
			return;
		}
		hist_add(&st->h[M_LOGIN], t - c->tx_t0);
		cmd(c, P_STAT, 0, false, "STAT\r\n");
		return;
	case P_STAT:
		if (!ok || sscanf(line, "+OK %ld", &c->nmsgs) != 1) {
			conn_err(c, E_PROTO);
			quit(c);
			return;
		}
		hist_add(&st->h[M_STAT], t - cur.t0);
		cmd(c, P_LIST, 0, true, "LIST\r\n");
		return;
	case P_LIST: /* -ERR: the answer was not multi-line */
	case P_UIDL:
	case P_RETR:
		conn_err(c, E_PROTO);
		quit(c);
		return;
	case P_DELE:
		if (ok) hist_add(&st->h[M_DELE], t - cur.t0);
		fill(c);
		return;
	case P_QUIT:
		if (ok) {
			hist_add(&st->h[M_QUIT], t - cur.t0);
			hist_add(&st->h[M_SESSION], t - c->t_connect);
			st->sessions++;
		}
		c->clean = true;
		conn_close(c, true);
		return;
	}
}

/* The "." that ends a multi-line answer. */
static void on_multi_end(struct conn *c)
{
	struct stats *st = &c->w->st;
	struct pend cur = *pend_front(c);
	pend_pop(c);
	c->in_multi = false;
	uint64_t t = now_ns();
	switch (cur.kind) {
	case P_LIST:
		hist_add(&st->h[M_LIST], t - cur.t0);
		cmd(c, P_UIDL, 0, true, "UIDL\r\n");
		return;
	case P_UIDL:
		hist_add(&st->h[M_UIDL], t - cur.t0);
		if (opt.list_only || limit_of(c) == 0) {
			quit(c);
			return;
		}
		c->cur = 1;
		fill(c);
		return;
	case P_RETR:
		hist_add(&st->h[M_RETR], t - cur.t0);
		st->msgs++;
		st->bytes += c->ans_bytes;
		if (opt.dele && !opt.pipelining)
			cmd(c, P_DELE, cur.arg, false, "DELE %d\r\n", cur.arg);
		else
			fill(c);
		return;
	}
}

static int pop3_input(struct conn *c)
{
	size_t off = 0;
	while (!c->closing && !c->tls_hs) {
		char *s = c->in + off;
		size_t avail = c->in_len - off;
		char *nl = memchr(s, '\n', avail);
		if (!nl) break;
		size_t len = (size_t)(nl - s) + 1;
		off += len;
		if (c->in_multi) {
			if (s[0] == '.') {
				if (len == 3 || (len == 2 && s[1] == '\n')) {
					on_multi_end(c);
					continue;
				}
				len--; /* dot-stuffing (RFC 1939 3) */
			}
			c->ans_bytes += len;
			continue;
		}
		if (!pend_front(c)) {
			conn_err(c, E_PROTO);
			conn_close(c, false);
			return -1;
		}
		if (len >= 3 && s[0] == '+' && s[1] == 'O' && s[2] == 'K') {
			on_status(c, true, s, len);
		} else if (len >= 4 && s[0] == '-' && s[1] == 'E' && s[2] == 'R' && s[3] == 'R') {
			on_status(c, false, s, len);
		} else {
			conn_err(c, E_PROTO);
			snprintf(c->w->st.last_err, sizeof c->w->st.last_err, "bad answer: %.*s",
				 (int)(len > 100 ? 100 : len), s);
			conn_close(c, false);
			return -1;
		}
		if (c->tls_hs) return 0;
	}
	conn_consume(c, off);
	return 0;
}

static void pop3_connected(struct conn *c)
{
	pend_push(c, P_GREET, 0);
}

static void pop3_tls_done(struct conn *c)
{
	login(c);
}

static void pop3_closed(struct conn *c, bool clean)
{
	c->dead = 1;
}

const struct proto pop3_proto = {
    .connected = pop3_connected,
    .input = pop3_input,
    .tls_done = pop3_tls_done,
    .closed = pop3_closed,
};

/* ---- idle: the greeting, then nothing ----------------------------------- */

static int idle_pop3_input(struct conn *c)
{
	char *nl = memchr(c->in, '\n', c->in_len);
	if (!nl) return 0;
	if (pend_front(c) && c->in[0] == '+') {
		pend_pop(c);
		c->greeted = true;
		c->w->st.established++;
		c->w->st.codes[CODE_OK]++;
		hist_add(&c->w->st.h[M_CONNECT], now_ns() - c->t_connect);
		c->state = 1;
		atomic_fetch_add(&idle_established, 1);
	}
	conn_consume(c, (size_t)(nl - c->in) + 1);
	return 0;
}

const struct proto idle_pop3_proto = {
    .connected = pop3_connected,
    .input = idle_pop3_input,
    .tls_done = pop3_tls_done,
    .closed = idle_closed,
};
