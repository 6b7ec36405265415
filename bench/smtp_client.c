/*
 * The SMTP client machine: greeting, EHLO, optional STARTTLS (RFC 3207),
 * optional AUTH PLAIN (RFC 4954, --auth), then transactions until the
 * run's message count is used up, then QUIT.
 *
 * With pipelining (RFC 2920 3.1) MAIL, every RCPT and DATA go in one
 * write and the replies are matched in order; without it each command
 * waits for its reply, as smtp-source does. The body goes out after 354 in
 * one queued write: our headers (the token the verifier looks for) then
 * the shared body template, borrowed, not copied.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench.h"

enum kind {
	R_GREET = 1,
	R_EHLO,
	R_STARTTLS,
	R_AUTH,
	R_MAIL,
	R_RCPT,
	R_DATA,
	R_DOT,
	R_QUIT,
	R_RSET
};

static void send_ehlo(struct conn *c)
{
	conn_send(c, "EHLO bench.client.test\r\n", 24);
	pend_push(c, R_EHLO, 0);
}

static void send_rcpt(struct conn *c, int i)
{
	conn_sendf(c, "RCPT TO:<rcpt%d@%s>\r\n", i, opt.domain);
	pend_push(c, R_RCPT, i);
}

static void send_quit(struct conn *c)
{
	conn_send(c, "QUIT\r\n", 6);
	pend_push(c, R_QUIT, 0);
}

/* Claim the next message of the run, or say goodbye. */
static void start_tx(struct conn *c)
{
	long seq = atomic_fetch_add(&msgs_claimed, 1);
	if (seq >= opt.messages) {
		send_quit(c);
		return;
	}
	c->seq = seq;
	c->tmpl = msg_pick(&c->rng);
	c->tx_ok = true;
	c->tx_t0 = now_ns();
	conn_sendf(c, "MAIL FROM:<%s> SIZE=%zu\r\n", opt.from, tmpls[c->tmpl].size);
	pend_push(c, R_MAIL, 0);
	if (opt.pipelining) {
		for (int i = 0; i < opt.rcpts; i++)
			send_rcpt(c, i);
		conn_send(c, "DATA\r\n", 6);
		pend_push(c, R_DATA, 0);
	}
}

static void send_body(struct conn *c)
{
	char hdr[512];
	char rcpt0[300];
	snprintf(rcpt0, sizeof rcpt0, "rcpt0@%s", opt.domain);
	int n = msg_header(hdr, sizeof hdr, c->seq, rcpt0);
	conn_send(c, hdr, (size_t)n);
	conn_send_borrowed(c, tmpls[c->tmpl].body, tmpls[c->tmpl].body_len);
	pend_push(c, R_DOT, 0);
}

static void tx_failed(struct conn *c, int code, const char *line, size_t len)
{
	c->tx_ok = false;
	struct stats *st = &c->w->st;
	if (!st->last_err[0])
		snprintf(st->last_err, sizeof st->last_err, "%.*s", (int)(len > 150 ? 150 : len),
			 line);
	(void)code;
}

static void tx_end(struct conn *c)
{
	if (opt.reuse)
		start_tx(c);
	else
		send_quit(c);
}

/* One whole reply (its last line) for the oldest command in flight. */
static void on_reply(struct conn *c, int code, const char *line, size_t len)
{
	struct stats *st = &c->w->st;
	struct pend *p = pend_front(c);
	if (!p) {
		conn_err(c, E_PROTO);
		conn_close(c, false);
		return;
	}
	struct pend cur = *p;
	pend_pop(c);
	st->codes[code]++;
	uint64_t t = now_ns();
	switch (cur.kind) {
	case R_GREET:
		if (code != 220) {
			tx_failed(c, code, line, len);
			send_quit(c);
			return;
		}
		c->greeted = true;
		st->established++;
		hist_add(&st->h[M_CONNECT], t - c->t_connect);
		send_ehlo(c);
		return;
	case R_EHLO:
		if (code != 250) {
			tx_failed(c, code, line, len);
			send_quit(c);
			return;
		}
		hist_add(&st->h[M_EHLO], t - cur.t0);
		if (opt.starttls && !c->ssl) {
			conn_send(c, "STARTTLS\r\n", 10);
			pend_push(c, R_STARTTLS, 0);
			return;
		}
		if (opt.auth_plain && !c->authed) {
			/* RFC 4954 with the initial response: one round trip */
			conn_sendf(c, "AUTH PLAIN %s\r\n", opt.auth_plain);
			pend_push(c, R_AUTH, 0);
			return;
		}
		start_tx(c);
		return;
	case R_AUTH:
		if (code != 235) {
			conn_err(c, E_PROTO);
			tx_failed(c, code, line, len);
			send_quit(c);
			return;
		}
		c->authed = true;
		hist_add(&st->h[M_LOGIN], t - cur.t0);
		start_tx(c);
		return;
	case R_STARTTLS:
		if (code != 220) {
			tx_failed(c, code, line, len);
			send_quit(c);
			return;
		}
		conn_start_tls(c);
		return;
	case R_MAIL:
		if (code / 100 != 2) tx_failed(c, code, line, len);
		if (!opt.pipelining) {
			if (!c->tx_ok) {
				st->msgs_failed++;
				tx_end(c);
				return;
			}
			c->rcpt_i = 0;
			send_rcpt(c, c->rcpt_i++);
		}
		return;
	case R_RCPT:
		if (code / 100 != 2) tx_failed(c, code, line, len);
		if (!opt.pipelining) {
			if (c->rcpt_i < opt.rcpts) {
				send_rcpt(c, c->rcpt_i++);
			} else {
				conn_send(c, "DATA\r\n", 6);
				pend_push(c, R_DATA, 0);
			}
		}
		return;
	case R_DATA:
		if (code != 354) {
			tx_failed(c, code, line, len);
			st->msgs_failed++;
			tx_end(c);
			return;
		}
		send_body(c);
		return;
	case R_DOT:
		if (code / 100 == 2 && c->tx_ok) {
			st->msgs++;
			st->bytes += tmpls[c->tmpl].size;
			hist_add(&st->h[M_TX], t - c->tx_t0);
		} else {
			if (code / 100 != 2) tx_failed(c, code, line, len);
			st->msgs_failed++;
		}
		tx_end(c);
		return;
	case R_QUIT:
		if (code == 221) {
			st->sessions++;
			hist_add(&st->h[M_SESSION], t - c->t_connect);
		}
		c->clean = true;
		conn_close(c, true);
		return;
	}
}

/* Replies: "ddd-text" continues, "ddd text" (or "ddd") ends (RFC 5321 4.2.1). */
static int smtp_input(struct conn *c)
{
	size_t off = 0;
	while (!c->closing && !c->tls_hs) {
		char *s = c->in + off;
		char *nl = memchr(s, '\n', c->in_len - off);
		if (!nl) break;
		size_t len = (size_t)(nl - s) + 1;
		off += len;
		if (len < 5 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' ||
		    s[2] > '9' || (s[3] != ' ' && s[3] != '-' && s[3] != '\r')) {
			conn_err(c, E_PROTO);
			snprintf(c->w->st.last_err, sizeof c->w->st.last_err, "bad reply: %.*s",
				 (int)(len > 100 ? 100 : len), s);
			conn_close(c, false);
			return -1;
		}
		if (s[3] == '-') continue;
		int code = (s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0');
		on_reply(c, code, s, len);
		if (c->tls_hs) /* STARTTLS began: the rest of the input is void */
			return 0;
	}
	conn_consume(c, off);
	return 0;
}

static void smtp_connected(struct conn *c)
{
	pend_push(c, R_GREET, 0);
}

static void smtp_tls_done(struct conn *c)
{
	send_ehlo(c);
}

static void smtp_closed(struct conn *c, bool clean)
{
	/* One message per connection: reconnect while messages are left. */
	if (opt.reuse || !clean || atomic_load(&msgs_claimed) >= opt.messages) c->dead = 1;
}

const struct proto smtp_proto = {
    .connected = smtp_connected,
    .input = smtp_input,
    .tls_done = smtp_tls_done,
    .closed = smtp_closed,
};

/* ---- idle: greeting (and EHLO), then nothing until the run ends --------- */

static int idle_smtp_input(struct conn *c)
{
	size_t off = 0;
	while (!c->closing) {
		char *s = c->in + off;
		char *nl = memchr(s, '\n', c->in_len - off);
		if (!nl) break;
		size_t len = (size_t)(nl - s) + 1;
		off += len;
		if (len >= 4 && s[3] == '-') continue;
		struct pend *p = pend_front(c);
		if (!p) continue; /* e.g. 421 at the server's timeout: counted at EOF */
		int code = len >= 3 ? atoi(s) : 0;
		if (code < 0 || code > 999) code = 0;
		c->w->st.codes[code]++;
		int kind = p->kind;
		pend_pop(c);
		if (kind == R_GREET) {
			if (code != 220) {
				conn_close(c, false);
				break;
			}
			c->greeted = true;
			c->w->st.established++;
			hist_add(&c->w->st.h[M_CONNECT], now_ns() - c->t_connect);
			if (opt.idle_ehlo) {
				send_ehlo(c);
				continue;
			}
		} else if (kind == R_EHLO) {
			hist_add(&c->w->st.h[M_EHLO], now_ns() - p->t0);
		}
		c->state = 1;
		atomic_fetch_add(&idle_established, 1);
	}
	conn_consume(c, off);
	return 0;
}

void idle_closed(struct conn *c, bool clean)
{
	if (c->state != 1) atomic_fetch_add(&idle_failed, 1);
	c->state = 2;
	c->dead = 1;
}

const struct proto idle_smtp_proto = {
    .connected = smtp_connected,
    .input = idle_smtp_input,
    .tls_done = smtp_tls_done,
    .closed = idle_closed,
};
