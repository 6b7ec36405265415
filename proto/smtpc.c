/*
 * The SMTP client machine of the relay. Reading order:
 *
 *   smtpc_feed()   frames reply lines (read_line), joins a reply's lines,
 *                  then hands the whole reply to on_reply(), which switches
 *                  on the state: greeting, EHLO/HELO, STARTTLS, the
 *                  MAIL/RCPT batch, DATA, the end of data, QUIT.
 *   owe()          writes the command the dialogue owes, when the obuf has
 *                  room; a pipelined batch is written by tx_send().
 *   decide()       every result a recipient gets passes here.
 *
 * Choices where the RFCs leave room (each is tested in test_smtpc.c):
 * - A reply line may end in LF alone (the CR is optional): it costs nothing
 *   to accept and real servers send it. Anything else malformed (no 3-digit
 *   code, a code outside 2xx-5xx, a separator other than SP or "-", a code
 *   that changes within a reply, a line over 512 octets) is a protocol
 *   error: the connection is dropped and the undecided recipients fail
 *   temporarily (4.5.0).
 * - A 5xx greeting fails temporarily, as Postfix does by default
 *   (smtp_skip_5xx_greeting): it is the host refusing, not the recipients
 *   being refused, and another MX host may take the mail (RFC 5321 3.1).
 * - EHLO refused with 5xx: HELO (RFC 5321 3.2); then no extension is used.
 * - relay.tls = opportunistic: STARTTLS refused -> plaintext on the same
 *   session; required: temporary failure 4.7.4 (RFC 5248), whether STARTTLS
 *   is not offered or refused.
 * - 8-bit data to a server without 8BITMIME: permanent 5.6.3 (RFC 6152 3
 *   allows conversion or non-delivery; we do not convert). A non-ASCII
 *   address without SMTPUTF8: permanent 5.6.7 (RFC 6531 3.2), for the
 *   recipient alone or, for the sender, for all.
 * - With PIPELINING, MAIL, every RCPT and DATA go in one batch (RFC 2920
 *   3.1: DATA may end a group), one round trip fewer per message. A server
 *   answers DATA with 503/554 when no recipient was accepted; one that says
 *   354 all the same gets a lone "." (RFC 2920 3.1), whose reply does not
 *   count. Without PIPELINING, DATA goes only after the RCPT replies, and
 *   only when one was accepted. A refused MAIL decides every recipient,
 *   whatever the RCPT replies (which then are 503s) say.
 * - 421 at any point: every undecided recipient fails temporarily with that
 *   reply, and the connection is closed without QUIT (RFC 5321 3.8).
 * - Reply text goes into DSNs and logs: octets outside printable US-ASCII
 *   become '?' in the joined text.
 */
#include "proto/smtpc.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* s->state */
enum {
	ST_GREETING,
	ST_EHLO,
	ST_HELO,
	ST_STARTTLS,
	ST_TLS, /* SMTPC_REQ_STARTTLS outstanding */
	ST_TX,	/* MAIL and RCPTs */
	ST_DATA,
	ST_BODY, /* SMTPC_REQ_BODY outstanding */
	ST_DOT,
	ST_NULLDOT, /* a lone "." after 354 to a DATA without a recipient */
	ST_QUIT,
	ST_IDLE, /* SMTPC_REQ_IDLE returned: a message done, the link kept */
	ST_CLOSED,
};

/* s->want */
enum {
	CMD_NONE,
	CMD_EHLO,
	CMD_HELO,
	CMD_STARTTLS,
	CMD_TX,
	CMD_DATA,
	CMD_DOT,
	CMD_NULLDOT,
	CMD_QUIT
};

/* smtpc_rcpt.priv */
enum { RF_SENT = 1, RF_ACCEPTED = 2 };

/* stuffer states */
enum { SF_BOL, SF_TEXT, SF_CR };

/* ------------------------------------------------------------------ */
/* the stuffer */

void smtpc_stuff_init(struct smtpc_stuffer *st)
{
	st->state = SF_BOL;
}

size_t smtpc_stuff(struct smtpc_stuffer *st, const char *in, size_t n, struct obuf *out)
{
	size_t i = 0;
	while (i < n) {
		if (st->state == SF_TEXT) {
			/* the run of ordinary octets inside a line, copied at once */
			size_t j = i;
			while (j < n && in[j] != '\r' && in[j] != '\n')
				j++;
			size_t take = j - i;
			if (take > obuf_room(out)) take = obuf_room(out);
			obuf_put(out, in + i, take);
			i += take;
			if (i < j || i == n) break;
		}
		if (obuf_room(out) < 3) break;
		char c = in[i++];
		if (st->state == SF_CR) {
			obuf_put(out, "\n", 1);
			st->state = SF_BOL;
			if (c == '\n') continue;
		}
		if (c == '\r') {
			obuf_put(out, "\r", 1);
			st->state = SF_CR;
		} else if (c == '\n') {
			obuf_put(out, "\r\n", 2); /* a bare LF */
			st->state = SF_BOL;
		} else if (st->state == SF_BOL && c == '.') {
			obuf_put(out, "..", 2);
			st->state = SF_TEXT;
		} else {
			obuf_put(out, &c, 1);
			st->state = SF_TEXT;
		}
	}
	return i;
}

void smtpc_stuff_end(struct smtpc_stuffer *st, struct obuf *out)
{
	if (st->state == SF_CR)
		obuf_puts(out, "\n");
	else if (st->state == SF_TEXT)
		obuf_puts(out, "\r\n");
	obuf_puts(out, ".\r\n");
	st->state = SF_BOL;
}

/* ------------------------------------------------------------------ */
/* small helpers */

long smtpc_xtext_encode(const char *p, size_t n, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c >= 33 && c <= 126 && c != '+' && c != '=') {
			if (o + 1 >= cap) return -1;
			out[o++] = (char)c;
		} else {
			if (o + 3 >= cap) return -1;
			out[o++] = '+';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	if (o >= cap) return -1;
	out[o] = '\0';
	return (long)o;
}

static bool nonascii(const char *p)
{
	for (; *p; p++)
		if ((unsigned char)*p >= 0x80) return true;
	return false;
}

/* An address we may put between <> on a command line: no controls, no
 * brackets, no spaces that would end the path (RFC 5321 4.1.2 allows quoted
 * spaces, but a queue entry came through our own parser, so this only stops
 * a corrupt entry from injecting a command). */
static bool path_ok(const char *p)
{
	size_t n = strlen(p);
	if (n > SMTP_PATH_MAX - 2) return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c < 0x20 || c == 0x7f || c == '<' || c == '>') return false;
	}
	return true;
}

static const char *const stage_names[] = {
    [SMTPC_W_NONE] = "none",	     [SMTPC_W_GREETING] = "greeting", [SMTPC_W_EHLO] = "EHLO",
    [SMTPC_W_STARTTLS] = "STARTTLS", [SMTPC_W_MAIL] = "MAIL FROM",    [SMTPC_W_RCPT] = "RCPT TO",
    [SMTPC_W_DATA] = "DATA",	     [SMTPC_W_BODY] = "message data", [SMTPC_W_DOT] = "end of data",
    [SMTPC_W_QUIT] = "QUIT",
};

const char *smtpc_stage_name(enum smtpc_wait w)
{
	return (unsigned)w < sizeof stage_names / sizeof stage_names[0] ? stage_names[w] : "?";
}

/* RFC 5321 4.5.3.2 */
static const unsigned wait_seconds[] = {
    [SMTPC_W_NONE] = 0,	  [SMTPC_W_GREETING] = 300, [SMTPC_W_EHLO] = 300, [SMTPC_W_STARTTLS] = 300,
    [SMTPC_W_MAIL] = 300, [SMTPC_W_RCPT] = 300,	    [SMTPC_W_DATA] = 120, [SMTPC_W_BODY] = 180,
    [SMTPC_W_DOT] = 600,  [SMTPC_W_QUIT] = 60,
};

static void set_wait(struct smtpc_session *s, enum smtpc_wait w)
{
	s->wait = (uint8_t)w;
	s->wait_seq++;
}

static bool room(const struct obuf *out)
{
	return obuf_room(out) >= SMTPC_CMD_ROOM;
}

/* ------------------------------------------------------------------ */
/* results */

static void set_result(struct smtpc_rcpt *r, enum smtpc_result res, unsigned code,
		       const char *status, enum smtpc_wait stage, const char *diag)
{
	r->result = (uint8_t)res;
	r->code = (uint16_t)code;
	r->stage = (uint8_t)stage;
	snprintf(r->status, sizeof r->status, "%s", status);
	snprintf(r->diag, sizeof r->diag, "%s", diag);
}

static void decide(struct smtpc_session *s, struct smtpc_rcpt *r, enum smtpc_result res,
		   unsigned code, const char *status, enum smtpc_wait stage, const char *diag)
{
	if (r->result != SMTPC_PENDING) return;
	set_result(r, res, code, status, stage, diag);
	if (res == SMTPC_TEMP && !s->mail_answered) s->try_next_mx = true;
}

/* A local verdict (code 0) for every recipient of M: through decide()
 * (undecided ones only) within session S, or set outright when S is NULL
 * (the core's own, no session). */
static void decide_local_v(struct smtpc_session *s, struct smtpc_msg *m, enum smtpc_result res,
			   const char *status, enum smtpc_wait stage, const char *fmt, va_list ap)
{
	char diag[SMTPC_DIAG_MAX];
	vsnprintf(diag, sizeof diag, fmt, ap);
	for (unsigned i = 0; i < m->nrcpt; i++) {
		if (s)
			decide(s, &m->rcpt[i], res, 0, status, stage, diag);
		else
			set_result(&m->rcpt[i], res, 0, status, stage, diag);
	}
}

void smtpc_decide_local(struct smtpc_msg *m, enum smtpc_result res, const char *status,
			const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	decide_local_v(NULL, m, res, status, SMTPC_W_NONE, fmt, ap);
	va_end(ap);
}

static enum smtpc_result by_class(unsigned code)
{
	return code >= 500 ? SMTPC_PERM : code >= 400 ? SMTPC_TEMP : SMTPC_DELIVERED;
}

/* Every undecided recipient (ACCEPTED ones only, if only_accepted) gets the
 * reply just read. */
static void decide_all_reply(struct smtpc_session *s, enum smtpc_result res, enum smtpc_wait stage,
			     bool only_accepted)
{
	for (unsigned i = 0; i < s->msg->nrcpt; i++) {
		struct smtpc_rcpt *r = &s->msg->rcpt[i];
		if (only_accepted && !(r->priv & RF_ACCEPTED)) continue;
		decide(s, r, res, s->code, s->status, stage, s->reply);
	}
}

static void decide_all_local(struct smtpc_session *s, enum smtpc_result res, const char *status,
			     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void decide_all_local(struct smtpc_session *s, enum smtpc_result res, const char *status,
			     const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	decide_local_v(s, s->msg, res, status, (enum smtpc_wait)s->wait, fmt, ap);
	va_end(ap);
}

bool smtpc_done(const struct smtpc_session *s)
{
	for (unsigned i = 0; i < s->msg->nrcpt; i++)
		if (s->msg->rcpt[i].result == SMTPC_PENDING) return false;
	return true;
}

/* The exits that end the connection at once. */
static enum smtpc_req close_now(struct smtpc_session *s)
{
	s->state = ST_CLOSED;
	s->want = CMD_NONE;
	set_wait(s, SMTPC_W_NONE);
	return SMTPC_REQ_CLOSE;
}

static enum smtpc_req protocol_error(struct smtpc_session *s, const char *why)
{
	decide_all_local(s, SMTPC_TEMP, "4.5.0", "protocol error: %s", why);
	return close_now(s);
}

/* 421: the server is closing the channel (RFC 5321 3.8). */
static enum smtpc_req closing(struct smtpc_session *s)
{
	decide_all_reply(s, SMTPC_TEMP, (enum smtpc_wait)s->wait, false);
	return close_now(s);
}

static void quit(struct smtpc_session *s)
{
	s->want = CMD_QUIT;
}

/* ------------------------------------------------------------------ */
/* commands */

static void put_mail(struct smtpc_session *s, struct obuf *out, bool utf8)
{
	const struct smtpc_msg *m = s->msg;
	obuf_printf(out, "MAIL FROM:<%s>", m->from);
	if (s->ext & SMTPC_EXT_SIZE) obuf_printf(out, " SIZE=%llu", (unsigned long long)m->size);
	if (m->body_8bit) obuf_puts(out, " BODY=8BITMIME");
	if (utf8) obuf_puts(out, " SMTPUTF8");
	if (s->ext & SMTPC_EXT_DSN) {
		if (m->ret == SMTP_RET_FULL)
			obuf_puts(out, " RET=FULL");
		else if (m->ret == SMTP_RET_HDRS)
			obuf_puts(out, " RET=HDRS");
		/* RFC 3461 4.4: at most 100 characters, as xtext. */
		char x[101];
		if (m->envid && smtpc_xtext_encode(m->envid, strlen(m->envid), x, sizeof x) > 0)
			obuf_printf(out, " ENVID=%s", x);
	}
	obuf_puts(out, "\r\n");
}

static void put_rcpt(struct smtpc_session *s, struct obuf *out, const struct smtpc_rcpt *r)
{
	obuf_printf(out, "RCPT TO:<%s>", r->addr);
	if (s->ext & SMTPC_EXT_DSN) {
		if (r->notify & SMTP_NOTIFY_NEVER) {
			obuf_puts(out, " NOTIFY=NEVER");
		} else if (r->notify) {
			static const struct {
				uint8_t bit;
				const char *name;
			} n[] = {{SMTP_NOTIFY_SUCCESS, "SUCCESS"},
				 {SMTP_NOTIFY_FAILURE, "FAILURE"},
				 {SMTP_NOTIFY_DELAY, "DELAY"}};
			const char *sep = " NOTIFY=";
			for (unsigned i = 0; i < 3; i++)
				if (r->notify & n[i].bit) {
					obuf_printf(out, "%s%s", sep, n[i].name);
					sep = ",";
				}
		}
		/* ORCPT=addr-type ";" xtext, at most 500 characters (RFC 3461 4.2):
		 * one that would not fit, or has no valid addr-type, is left out
		 * rather than sent malformed. */
		const char *semi = r->orcpt ? strchr(r->orcpt, ';') : NULL;
		if (semi && semi > r->orcpt && semi - r->orcpt < 40) {
			size_t t = (size_t)(semi - r->orcpt);
			bool atom = true;
			for (size_t i = 0; i < t; i++) {
				char c = r->orcpt[i];
				atom &= (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
					(c >= '0' && c <= '9') || c == '-';
			}
			char x[501];
			if (atom &&
			    smtpc_xtext_encode(semi + 1, strlen(semi + 1), x, sizeof x - t - 1) > 0)
				obuf_printf(out, " ORCPT=%.*s;%s", (int)t, r->orcpt, x);
		}
	}
	obuf_puts(out, "\r\n");
}

static bool tx_utf8(const struct smtpc_session *s)
{
	if (!(s->ext & SMTPC_EXT_SMTPUTF8)) return false;
	if (s->msg->smtputf8 || nonascii(s->msg->from)) return true;
	for (unsigned i = 0; i < s->msg->nrcpt; i++)
		if (s->msg->rcpt[i].result == SMTPC_PENDING && nonascii(s->msg->rcpt[i].addr))
			return true;
	return false;
}

/* Recipients decided before they were sent (UTF-8, syntax) are skipped. */
static void skip_decided(struct smtpc_session *s)
{
	while (s->send_cur >= 0 && s->send_cur < (int)s->msg->nrcpt &&
	       s->msg->rcpt[s->send_cur].result != SMTPC_PENDING)
		s->send_cur++;
}

/* Writes what of MAIL and the RCPTs may go now: everything with PIPELINING,
 * else one command per reply. false: stalled on the obuf. */
static bool tx_send(struct smtpc_session *s, struct obuf *out)
{
	int n = (int)s->msg->nrcpt;
	bool pipe = s->ext & SMTPC_EXT_PIPELINING;
	for (skip_decided(s); s->send_cur < n && !s->mail_code; skip_decided(s)) {
		if (!pipe && s->outstanding) return true;
		if (!room(out)) return false;
		if (s->send_cur < 0) {
			put_mail(s, out, tx_utf8(s));
		} else {
			put_rcpt(s, out, &s->msg->rcpt[s->send_cur]);
			s->msg->rcpt[s->send_cur].priv |= RF_SENT;
		}
		s->send_cur++;
		if (s->outstanding++ == 0)
			set_wait(s, s->send_cur == 0 ? SMTPC_W_MAIL : SMTPC_W_RCPT);
	}
	if (pipe && s->send_cur >= n && !s->mail_code && !s->data_piped) {
		if (!room(out)) return false;
		obuf_puts(out, "DATA\r\n");
		s->data_piped = true;
		s->outstanding++;
	}
	s->want = CMD_NONE;
	return true;
}

/* Writes the command owed, if any. false: stalled on the obuf. */
static bool owe(struct smtpc_session *s, struct obuf *out)
{
	if (s->want == CMD_NONE) return true;
	if (s->want == CMD_TX) return tx_send(s, out);
	if (!room(out)) return false;
	switch (s->want) {
	case CMD_EHLO:
		obuf_printf(out, "EHLO %s\r\n", s->pol->hostname);
		s->state = ST_EHLO;
		set_wait(s, SMTPC_W_EHLO);
		break;
	case CMD_HELO:
		obuf_printf(out, "HELO %s\r\n", s->pol->hostname);
		s->state = ST_HELO;
		set_wait(s, SMTPC_W_EHLO);
		break;
	case CMD_STARTTLS:
		obuf_puts(out, "STARTTLS\r\n");
		s->state = ST_STARTTLS;
		set_wait(s, SMTPC_W_STARTTLS);
		break;
	case CMD_DATA:
		obuf_puts(out, "DATA\r\n");
		s->state = ST_DATA;
		set_wait(s, SMTPC_W_DATA);
		break;
	case CMD_DOT:
		smtpc_stuff_end(&s->stuff, out);
		s->state = ST_DOT;
		set_wait(s, SMTPC_W_DOT);
		break;
	case CMD_NULLDOT:
		obuf_puts(out, ".\r\n");
		s->state = ST_NULLDOT;
		set_wait(s, SMTPC_W_DOT);
		break;
	case CMD_QUIT:
		obuf_puts(out, "QUIT\r\n");
		s->state = ST_QUIT;
		set_wait(s, SMTPC_W_QUIT);
		break;
	}
	s->outstanding++;
	s->want = CMD_NONE;
	return true;
}

/* ------------------------------------------------------------------ */
/* the dialogue */

static void start_tx(struct smtpc_session *s)
{
	struct smtpc_msg *m = s->msg;
	bool utf8 = s->ext & SMTPC_EXT_SMTPUTF8;
	s->wait = SMTPC_W_MAIL; /* the stage of what is decided here */
	if (!path_ok(m->from)) {
		decide_all_local(s, SMTPC_PERM, "5.1.7", "malformed sender address in the queue");
	} else if ((m->smtputf8 || nonascii(m->from)) && !utf8) {
		decide_all_local(
		    s, SMTPC_PERM, "5.6.7",
		    "the message needs SMTPUTF8, which the remote server does not offer");
	} else if (m->body_8bit && !(s->ext & SMTPC_EXT_8BITMIME)) {
		decide_all_local(s, SMTPC_PERM, "5.6.3",
				 "8-bit message, and the remote server does not offer 8BITMIME");
	} else if ((s->ext & SMTPC_EXT_SIZE) && s->remote_size && m->size > s->remote_size) {
		decide_all_local(s, SMTPC_PERM, "5.3.4",
				 "message size %llu exceeds the remote limit of %llu",
				 (unsigned long long)m->size, (unsigned long long)s->remote_size);
	}
	for (unsigned i = 0; i < m->nrcpt; i++) {
		struct smtpc_rcpt *r = &m->rcpt[i];
		if (!path_ok(r->addr))
			decide(s, r, SMTPC_PERM, 0, "5.1.3", SMTPC_W_RCPT,
			       "malformed recipient address in the queue");
		else if (nonascii(r->addr) && !utf8)
			decide(s, r, SMTPC_PERM, 0, "5.6.7", SMTPC_W_RCPT,
			       "non-ASCII recipient address, and the remote server does not offer "
			       "SMTPUTF8");
	}
	if (smtpc_done(s)) {
		quit(s);
		return;
	}
	s->state = ST_TX;
	s->send_cur = s->reply_cur = -1;
	s->data_piped = false;
	s->want = CMD_TX;
}

static void after_hello(struct smtpc_session *s)
{
	if (!s->tls && s->pol->tls != SMTPC_TLS_NONE && (s->ext & SMTPC_EXT_STARTTLS)) {
		s->want = CMD_STARTTLS;
	} else if (!s->tls && s->pol->tls == SMTPC_TLS_REQUIRED) {
		decide_all_local(s, SMTPC_TEMP, "4.7.4",
				 "TLS is required, but the remote server does not offer STARTTLS");
		quit(s);
	} else {
		start_tx(s);
	}
}

/* A refused MAIL decides every recipient with its reply. */
static void decide_by_mail(struct smtpc_session *s)
{
	for (unsigned i = 0; i < s->msg->nrcpt; i++)
		decide(s, &s->msg->rcpt[i], by_class(s->mail_code), s->mail_code, s->mail_status,
		       SMTPC_W_MAIL, s->mail_reply);
}

/* The reply to DATA (not 421) with a recipient accepted: 354 asks for the
 * message, a refusal decides the accepted recipients. */
static enum smtpc_req data_reply(struct smtpc_session *s)
{
	unsigned c = s->code;
	if (c >= 300 && c < 400) {
		s->state = ST_BODY;
		smtpc_stuff_init(&s->stuff);
		set_wait(s, SMTPC_W_BODY);
		return SMTPC_REQ_BODY;
	}
	if (c < 300) return protocol_error(s, "unexpected 2xx reply to DATA");
	decide_all_reply(s, by_class(c), SMTPC_W_DATA, true);
	quit(s);
	return SMTPC_REQ_NONE;
}

/* The reply to the DATA that ended the batch, every other reply in. */
static enum smtpc_req piped_data_reply(struct smtpc_session *s)
{
	unsigned c = s->code;
	s->data_piped = false;
	if (!s->mail_code && s->naccepted) return data_reply(s);
	if (s->mail_code) decide_by_mail(s);
	if (c >= 300 && c < 400) {
		s->want = CMD_NULLDOT; /* no recipient, yet 354 */
		return SMTPC_REQ_NONE;
	}
	if (c < 300) return protocol_error(s, "unexpected 2xx reply to DATA");
	quit(s);
	return SMTPC_REQ_NONE;
}

/* The reply to MAIL, to the next RCPT sent, or to a pipelined DATA. */
static enum smtpc_req tx_reply(struct smtpc_session *s)
{
	unsigned c = s->code;
	if (c == 421) return closing(s);
	if (s->data_piped && s->outstanding == 0) return piped_data_reply(s);
	if (c < 400 && c >= 300) return protocol_error(s, "unexpected 3xx reply to MAIL or RCPT");
	if (s->reply_cur < 0) {
		s->mail_answered = true;
		s->reply_cur = 0;
		if (c < 300) {
			s->mail_ok = true;
		} else {
			s->mail_code = (uint16_t)c;
			memcpy(s->mail_status, s->status, sizeof s->mail_status);
			memcpy(s->mail_reply, s->reply, sizeof s->mail_reply);
		}
	} else {
		int n = (int)s->msg->nrcpt;
		int i = s->reply_cur;
		while (i < n && !(s->msg->rcpt[i].priv & RF_SENT))
			i++;
		if (i == n) return protocol_error(s, "more replies than commands");
		s->reply_cur = i + 1;
		struct smtpc_rcpt *r = &s->msg->rcpt[i];
		if (!s->mail_ok) {
			/* decided by the MAIL reply below */
		} else if (c < 300) {
			r->priv |= RF_ACCEPTED;
			s->naccepted++;
		} else {
			decide(s, r, by_class(c), c, s->status, SMTPC_W_RCPT, s->reply);
		}
	}
	if (s->outstanding)
		set_wait(s, s->data_piped && s->outstanding == 1 ? SMTPC_W_DATA : SMTPC_W_RCPT);
	skip_decided(s);
	if (s->send_cur < (int)s->msg->nrcpt && !s->mail_code) {
		s->want = CMD_TX;
		return SMTPC_REQ_NONE;
	}
	if (s->outstanding) return SMTPC_REQ_NONE;
	/* every reply is in */
	if (s->mail_code) {
		decide_by_mail(s);
		quit(s);
	} else if (s->naccepted) {
		s->want = CMD_DATA;
	} else {
		quit(s);
	}
	return SMTPC_REQ_NONE;
}

/* A whole reply is in: s->code, s->status, s->reply. */
static enum smtpc_req on_reply(struct smtpc_session *s)
{
	unsigned c = s->code;
	if (s->outstanding == 0) return protocol_error(s, "unexpected reply");
	s->outstanding--;
	switch (s->state) {
	case ST_GREETING:
		if (c == 421) return closing(s);
		if (c == 220) {
			s->want = CMD_EHLO;
		} else if (c >= 400) {
			decide_all_reply(s, SMTPC_TEMP, SMTPC_W_GREETING, false);
			quit(s);
		} else {
			return protocol_error(s, "unexpected greeting");
		}
		return SMTPC_REQ_NONE;
	case ST_EHLO:
	case ST_HELO:
		if (c == 421) return closing(s);
		if (c < 300) {
			s->esmtp = s->state == ST_EHLO;
			s->ext = s->esmtp ? s->ext_new : 0;
			s->remote_size = s->esmtp ? s->size_new : 0;
			after_hello(s);
		} else if (c >= 500 && s->state == ST_EHLO) {
			s->want = CMD_HELO; /* RFC 5321 3.2 */
		} else if (c >= 400) {
			decide_all_reply(s, by_class(c), SMTPC_W_EHLO, false);
			quit(s);
		} else {
			return protocol_error(s, "unexpected reply to EHLO");
		}
		return SMTPC_REQ_NONE;
	case ST_STARTTLS:
		if (c == 421) return closing(s);
		if (c == 220) {
			s->state = ST_TLS;
			set_wait(s, SMTPC_W_STARTTLS);
			return SMTPC_REQ_STARTTLS;
		}
		if (c < 400) return protocol_error(s, "unexpected reply to STARTTLS");
		if (s->pol->tls == SMTPC_TLS_REQUIRED) {
			decide_all_local(s, SMTPC_TEMP, "4.7.4",
					 "TLS is required, but STARTTLS was refused: %s", s->reply);
			quit(s);
		} else {
			start_tx(s); /* opportunistic: go on in plaintext */
		}
		return SMTPC_REQ_NONE;
	case ST_TX: return tx_reply(s);
	case ST_DATA:
		if (c == 421) return closing(s);
		return data_reply(s);
	case ST_DOT:
		if (c >= 300 && c < 400)
			return protocol_error(s, "unexpected 3xx reply to the end of data");
		decide_all_reply(s, by_class(c), SMTPC_W_DOT, true);
		if (c == 421) return close_now(s);
		if (s->keep) {
			/* RFC 5321 4.1.1.4: the reply ends the transaction; the
			 * next MAIL may follow on this connection. */
			s->state = ST_IDLE;
			s->want = CMD_NONE;
			set_wait(s, SMTPC_W_NONE);
			return SMTPC_REQ_IDLE;
		}
		quit(s);
		return SMTPC_REQ_NONE;
	case ST_NULLDOT:
		/* the recipients were decided by their own replies */
		if (c == 421) return close_now(s);
		quit(s);
		return SMTPC_REQ_NONE;
	case ST_QUIT: return close_now(s);
	default: return protocol_error(s, "reply in an unexpected state");
	}
}

/* ------------------------------------------------------------------ */
/* reading replies */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

/* One EHLO keyword line (RFC 5321 4.1.1.1): ehlo-keyword *(SP ehlo-param). */
static void ehlo_line(struct smtpc_session *s, const char *p, size_t n)
{
	size_t k = 0;
	while (k < n && p[k] != ' ')
		k++;
	static const struct {
		const char *kw;
		uint32_t bit;
	} kws[] = {
	    {"PIPELINING", SMTPC_EXT_PIPELINING},
	    {"SIZE", SMTPC_EXT_SIZE},
	    {"STARTTLS", SMTPC_EXT_STARTTLS},
	    {"DSN", SMTPC_EXT_DSN},
	    {"8BITMIME", SMTPC_EXT_8BITMIME},
	    {"SMTPUTF8", SMTPC_EXT_SMTPUTF8},
	    {"CHUNKING", SMTPC_EXT_CHUNKING},
	    {"ENHANCEDSTATUSCODES", SMTPC_EXT_ENHANCEDSTATUSCODES},
	};
	for (unsigned i = 0; i < sizeof kws / sizeof kws[0]; i++) {
		if (strlen(kws[i].kw) != k || strncasecmp(p, kws[i].kw, k) != 0) continue;
		s->ext_new |= kws[i].bit;
		if (kws[i].bit == SMTPC_EXT_SIZE) {
			/* RFC 1870 4: "SIZE" [SP number]; 0 or none = no limit stated */
			uint64_t v = 0;
			size_t j = k;
			while (j < n && p[j] == ' ')
				j++;
			for (; j < n && is_digit(p[j]); j++) {
				unsigned d = (unsigned)(p[j] - '0');
				v = v > (UINT64_MAX - d) / 10 ? UINT64_MAX : v * 10 + d;
			}
			s->size_new = j == n ? v : 0;
		}
	}
}

static size_t digits(const char *p, size_t n, size_t i)
{
	size_t j = i;
	while (j < n && is_digit(p[j]))
		j++;
	return j - i;
}

/* RFC 3463 2: class "." subject "." detail, the class matching the reply;
 * without one, the class of the reply code with ".0.0". */
static void parse_status(struct smtpc_session *s, const char *p, size_t n)
{
	bool ok = n >= 5 && p[0] == (char)('0' + s->code / 100) && p[1] == '.';
	size_t i = 2, d = digits(p, n, i);
	ok = ok && d >= 1 && d <= 3;
	i += d;
	ok = ok && i < n && p[i] == '.';
	i++;
	d = digits(p, n, i);
	ok = ok && d >= 1 && d <= 3;
	i += d;
	ok = ok && (i == n || p[i] == ' ');
	if (ok)
		snprintf(s->status, sizeof s->status, "%.*s", (int)i, p);
	else
		snprintf(s->status, sizeof s->status, "%u.0.0", (unsigned)s->code / 100);
}

/* Appends a reply line to the joined text, printable ASCII only. */
static void join_line(struct smtpc_session *s, const char *p, size_t n)
{
	size_t o = s->replylen;
	if (o && o + 1 < sizeof s->reply) s->reply[o++] = ' ';
	for (size_t i = 0; i < n && o + 1 < sizeof s->reply; i++) {
		unsigned char c = (unsigned char)p[i];
		s->reply[o++] = c == '\t' ? ' ' : c < 0x20 || c >= 0x7f ? '?' : (char)c;
	}
	s->reply[o] = '\0';
	s->replylen = (uint16_t)o;
}

/* A whole line is in s->line (LF included). */
static enum smtpc_req line_done(struct smtpc_session *s)
{
	size_t n = s->linelen;
	const char *p = s->line;
	s->linelen = 0;
	n--; /* LF */
	if (n && p[n - 1] == '\r') n--;
	if (n < 3 || p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '5' || !is_digit(p[2]))
		return protocol_error(s, "malformed reply line");
	if (n > 3 && p[3] != ' ' && p[3] != '-') return protocol_error(s, "malformed reply line");
	unsigned code = (unsigned)((p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0'));
	if (s->nlines == 0) {
		s->code = (uint16_t)code;
		s->replylen = 0;
		s->reply[0] = '\0';
		s->ext_new = 0;
		s->size_new = 0;
		parse_status(s, p + (n > 3 ? 4 : 3), n > 3 ? n - 4 : 0);
	} else if (code != s->code) {
		return protocol_error(s, "reply code changed within a multi-line reply");
	} else if (s->state == ST_EHLO && code == 250) {
		ehlo_line(s, p + 4, n > 3 ? n - 4 : 0);
	}
	join_line(s, p, n);
	if (n > 3 && p[3] == '-') {
		s->nlines++;
		return SMTPC_REQ_NONE;
	}
	s->nlines = 0;
	return on_reply(s);
}

/* ------------------------------------------------------------------ */
/* the interface */

static void reset_rcpts(struct smtpc_msg *msg)
{
	for (unsigned i = 0; i < msg->nrcpt; i++) {
		struct smtpc_rcpt *r = &msg->rcpt[i];
		r->result = SMTPC_PENDING;
		r->priv = 0;
		r->code = 0;
		r->stage = SMTPC_W_NONE;
		r->status[0] = r->diag[0] = '\0';
	}
}

void smtpc_start(struct smtpc_session *s, const struct smtpc_policy *pol, struct smtpc_msg *msg)
{
	s->pol = pol;
	s->msg = msg;
	s->state = ST_GREETING;
	s->outstanding = 1; /* the greeting */
	s->send_cur = s->reply_cur = -1;
	reset_rcpts(msg);
	set_wait(s, SMTPC_W_GREETING);
}

bool smtpc_idle(const struct smtpc_session *s)
{
	return s->state == ST_IDLE;
}

void smtpc_next(struct smtpc_session *s, struct smtpc_msg *msg)
{
	if (s->state != ST_IDLE) return;
	s->msg = msg;
	s->try_next_mx = false;
	s->mail_answered = s->mail_ok = false;
	s->naccepted = 0;
	s->mail_code = 0;
	s->mail_status[0] = s->mail_reply[0] = '\0';
	reset_rcpts(msg);
	start_tx(s); /* the MAIL/RCPT batch is written by the next smtpc_feed() */
}

void smtpc_quit(struct smtpc_session *s)
{
	if (s->state == ST_IDLE) quit(s);
}

enum smtpc_req smtpc_feed(struct smtpc_session *s, const char *in, size_t n, size_t *used,
			  struct obuf *out)
{
	*used = 0;
	if (s->state == ST_CLOSED) {
		*used = n;
		return SMTPC_REQ_CLOSE;
	}
	if (s->state == ST_TLS || s->state == ST_BODY) {
		/* the core fed us during a request: a broken contract, not input */
		decide_all_local(s, SMTPC_TEMP, "4.3.0", "internal error: input during a request");
		return close_now(s);
	}
	while (owe(s, out)) {
		if (*used == n || !room(out)) return SMTPC_REQ_NONE;
		const char *p = in + *used;
		size_t left = n - *used;
		const char *lf = memchr(p, '\n', left);
		size_t take = lf ? (size_t)(lf - p) + 1 : left;
		/* RFC 5321 4.5.3.1.5: 512 octets with the CRLF; a line still
		 * without its LF at 512 cannot end in time. */
		if (s->linelen + take > (lf ? SMTPC_LINE_MAX : SMTPC_LINE_MAX - 1)) {
			*used = n;
			return protocol_error(s, "reply line too long");
		}
		memcpy(s->line + s->linelen, p, take);
		s->linelen = (uint16_t)(s->linelen + take);
		*used += take;
		if (!lf) return SMTPC_REQ_NONE;
		enum smtpc_req r = line_done(s);
		if (r == SMTPC_REQ_CLOSE) *used = n;
		if (r != SMTPC_REQ_NONE) return r;
	}
	return SMTPC_REQ_NONE;
}

size_t smtpc_body(struct smtpc_session *s, const char *in, size_t n, struct obuf *out)
{
	if (s->state != ST_BODY) return 0;
	return smtpc_stuff(&s->stuff, in, n, out);
}

enum smtpc_req smtpc_complete(struct smtpc_session *s, enum smtpc_req req, int result,
			      struct obuf *out)
{
	if (req == SMTPC_REQ_STARTTLS && s->state == ST_TLS) {
		if (result < 0) {
			decide_all_local(s, SMTPC_TEMP, "4.7.5", "TLS handshake failed");
			return close_now(s);
		}
		/* RFC 3207 4.2: forget what was learnt before TLS; EHLO again */
		s->tls = true;
		s->ext = 0;
		s->remote_size = 0;
		s->want = CMD_EHLO;
	} else if (req == SMTPC_REQ_BODY && s->state == ST_BODY) {
		if (result < 0) {
			decide_all_local(s, SMTPC_TEMP, "4.3.0",
					 "local error reading the queued message");
			return close_now(s);
		}
		s->want = CMD_DOT;
	} else {
		decide_all_local(s, SMTPC_TEMP, "4.3.0", "internal error: unexpected completion");
		return close_now(s);
	}
	owe(s, out);
	return SMTPC_REQ_NONE;
}

enum smtpc_wait smtpc_wait(const struct smtpc_session *s, unsigned *seconds, uint32_t *seq)
{
	enum smtpc_wait w = s->state == ST_CLOSED ? SMTPC_W_NONE : (enum smtpc_wait)s->wait;
	if (seconds) *seconds = wait_seconds[w];
	if (seq) *seq = s->wait_seq;
	return w;
}

enum smtpc_req smtpc_timeout(struct smtpc_session *s)
{
	if (s->state != ST_CLOSED) {
		if (s->wait == SMTPC_W_BODY)
			decide_all_local(s, SMTPC_TEMP, "4.4.2", "timeout sending the message");
		else if (s->wait == SMTPC_W_GREETING)
			decide_all_local(s, SMTPC_TEMP, "4.4.2",
					 "timeout waiting for the greeting");
		else
			decide_all_local(s, SMTPC_TEMP, "4.4.2",
					 "timeout waiting for the reply to %s",
					 smtpc_stage_name((enum smtpc_wait)s->wait));
	}
	return close_now(s);
}

enum smtpc_req smtpc_eof(struct smtpc_session *s)
{
	if (s->state != ST_CLOSED) {
		if (s->wait == SMTPC_W_GREETING)
			decide_all_local(s, SMTPC_TEMP, "4.4.2",
					 "connection lost before the greeting");
		else
			decide_all_local(s, SMTPC_TEMP, "4.4.2", "connection lost during %s",
					 smtpc_stage_name((enum smtpc_wait)s->wait));
	}
	return close_now(s);
}
