/*
 * The SMTP server machine. Reading order:
 *
 *   smtp_feed()     splits the input by mode: command lines (feed_line),
 *                   DATA text (feed_data), BDAT octets (feed_chunk)
 *   command()       the command table: one row per verb, the state checks
 *                   every row shares, then cmd_<verb>()
 *   smtp_complete() resumes after the core answered a request
 *   trace headers   Return-Path, Delivered-To, Received
 *
 * Lines are framed like nginx's mail parser: a line that arrived whole is
 * parsed in place in the caller's buffer; only a line cut by the end of a
 * read is copied into s->line, to be finished by the next feed. The state
 * that outlives a feed is small: the mode (s->state), the partial line, and
 * for DATA one scanner position (tx->dot).
 *
 * Choices where the RFCs leave room (each is tested in test_smtp.c):
 * - A command line ending in a bare LF is refused with 500 5.5.2, as
 *   Postfix's smtpd_forbid_bare_newline does, and not executed: a line is
 *   ended by CRLF (RFC 5321 2.3.8), and accepting LF alone is what SMTP
 *   smuggling relies on. 500 rather than 501 because the line as a whole is
 *   malformed, not its arguments. The session goes on.
 * - An over-long line is answered as soon as it is known to be too long
 *   (512 octets without LF), then discarded up to its LF.
 * - Paths need their angle brackets (RFC 5321 4.1.2); spaces after "FROM:"
 *   and "TO:" are tolerated, as by Postfix.
 * - MAIL FROM:<> after AUTH is accepted: RFC 3798 3 asks MDNs to have a
 *   null envelope sender, and mail with <> cannot cause bounces.
 * - BDAT whose size cannot be read: 501, then 421 and close. The client
 *   sends the chunk anyway (RFC 3030 2) and without its size we cannot
 *   tell where the chunk ends; reading it as commands would execute
 *   whatever it contains. With a readable size, any other problem gets its
 *   reply after the chunk was read and dropped.
 * - Bare CR and bare LF are refused in DATA only: BDAT carries exact
 *   octets, binary if BODY=BINARYMIME (RFC 3030 3), and has no end marker
 *   to smuggle.
 * - Over-size: the reply comes after the end of the message (SPEC 4), for
 *   BDAT after the LAST chunk; earlier chunks still get 250.
 * - A duplicate recipient (same local part, domain in any case) gets 250
 *   and is stored once.
 */
#include "proto/smtp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "proto/addr.h"
#include "proto/date.h"
#include "proto/wr.h"
#include "proto/sasl.h"
#include "proto/smtp_reply.h"

/* s->state: what the next input octets are. */
enum {
	ST_CMD,    /* command lines */
	ST_AUTH,   /* the client's AUTH PLAIN response line (RFC 4954 4) */
	ST_DATA,   /* message text up to CRLF.CRLF (RFC 5321 4.1.1.4) */
	ST_BDAT,   /* the octets of a BDAT chunk (RFC 3030 2) */
	ST_WAIT,   /* a request is outstanding: nothing is read */
	ST_CLOSED, /* CLOSE was returned */
};

/* tx->dot: where the DATA scanner stands with respect to CRLF.CRLF. The
 * CRLF that precedes "." is message text; what follows is held back until
 * it is known not to be the end. */
enum {
	D_BOL,    /* just after CRLF */
	D_DOT,    /* "." at the start of a line: dropped (RFC 5321 4.5.2) */
	D_DOT_CR, /* ".\r" at the start of a line: the CR is held back */
	D_TEXT,   /* inside a line */
	D_CR,     /* a CR inside a line; LF must follow */
};

#define UNUSED __attribute__((unused))

/* A step of smtp_feed() that stopped because the obuf is short of
 * SMTP_REPLY_ROOM. Always leaves at least one input octet unused, so that
 * the core, seeing *used < n, flushes and feeds again. */
#define STALL (-1)

struct smtp_tx {
	struct smtp_rcpt *rcpt;
	unsigned nrcpt, rcpt_cap;
	uint64_t body_size; /* octets given to the body callback */
	uint8_t ret;        /* enum smtp_ret */
	uint8_t body_type;  /* enum smtp_body_type */
	uint8_t dot;        /* D_* */
	bool smtputf8;
	bool bdat;          /* BDAT was used: DATA may not be (RFC 3030 2) */
	bool spool;         /* the core has a spool open for it */
	bool bare;          /* a bare CR or LF in the DATA text */
	bool too_big;
	bool has_envid;
	char envid[101];    /* RFC 3461 4.4: at most 100 characters */
	char from[SMTP_PATH_MAX];
};

struct smtp_auth {
	int domain;
	size_t passwd_len;
	const char *passwd; /* into msg */
	char line[SMTP_AUTH_LINE_MAX];
	unsigned char msg[SMTP_AUTH_LINE_MAX / 4 * 3 + 1];
};

_Static_assert(sizeof(struct smtp_priv) <= sizeof(((struct smtp_session *)0)->priv),
	       "smtp_priv outgrew the space the session reserves");

/* ------------------------------------------------------------------ */
/* replies and exits */

static void reply(struct smtp_session *s, struct smtp_io *io, enum smtp_reply r, const char *arg)
{
	smtp_reply_put(io->out, r, arg, false);
	/* Counting every refusal bounds what one connection can probe
	   (addresses, passwords) and how long a confused client is kept. */
	if (smtp_reply_is_error(r) && ++s->errors == SMTP_MAX_ERRORS) {
		smtp_reply_put(io->out, SMTP_R_TOO_MANY_ERRORS, NULL, false);
		s->p.closing = true;
	}
}

/* The reply that ends a command. */
static int answer(struct smtp_session *s, struct smtp_io *io, enum smtp_reply r)
{
	reply(s, io, r, NULL);
	return SMTP_REQ_NONE;
}

/* Every exit to the core passes here: the request is remembered so that
 * smtp_complete() can check it is answering the right question. */
static enum smtp_req leave(struct smtp_session *s, int r)
{
	if (s->p.closing || r == SMTP_REQ_CLOSE) {
		s->state = ST_CLOSED;
		return SMTP_REQ_CLOSE;
	}
	switch (r) {
	case SMTP_REQ_STARTTLS:
	case SMTP_REQ_AUTH:
	case SMTP_REQ_SPOOL_OPEN:
	case SMTP_REQ_SPOOL_COMMIT:
		s->p.req = (uint8_t)r;
		s->state = ST_WAIT;
		return (enum smtp_req)r;
	case STALL:
		return SMTP_REQ_NONE;
	default:
		return (enum smtp_req)r;
	}
}

/* The core broke the protocol between us (fed during a request, completed
 * the wrong one): close this connection rather than guess. */
static enum smtp_req internal_error(struct smtp_session *s, struct smtp_io *io)
{
	smtp_reply_put(io->out, SMTP_R_INTERNAL, s->pol->hostname, false);
	s->state = ST_CLOSED;
	return SMTP_REQ_CLOSE;
}

static bool room(const struct smtp_io *io) { return obuf_room(io->out) >= SMTP_REPLY_ROOM; }

static bool greeted(const struct smtp_session *s) { return s->helo[0] != '\0'; }

/* ------------------------------------------------------------------ */
/* transaction and AUTH state */

static void tx_end(struct smtp_session *s)
{
	struct smtp_tx *tx = s->tx;
	if (tx) {
		for (unsigned i = 0; i < tx->nrcpt; i++)
			free(tx->rcpt[i].addr); /* orcpt shares the block */
		free(tx->rcpt);
		free(tx);
	}
	s->tx = NULL;
	s->p.tx_done = false;
}

/* SPOOL_ABORT leaves the transaction readable until the next call. */
static void tx_reap(struct smtp_session *s)
{
	if (s->p.tx_done)
		tx_end(s);
}

/* RSET or EHLO/HELO ends the transaction; between BDAT chunks the core
 * holds a spool for it, which must be discarded. */
static int tx_drop(struct smtp_session *s)
{
	if (s->tx && s->tx->spool) {
		s->p.tx_done = true;
		return SMTP_REQ_SPOOL_ABORT;
	}
	tx_end(s);
	return SMTP_REQ_NONE;
}

static void auth_end(struct smtp_session *s)
{
	if (s->p.auth) {
		explicit_bzero(s->p.auth, sizeof *s->p.auth);
		free(s->p.auth);
		s->p.auth = NULL;
	}
	/* The initial response may have been assembled here. */
	explicit_bzero(s->line, sizeof s->line);
}

/* ------------------------------------------------------------------ */
/* small parsers */

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static bool is_alnum(char c)
{
	return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool word_is(const char *p, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(p, w, n) == 0;
}

/* 1*20DIGIT; saturates at UINT64_MAX. false if not all digits. */
static bool parse_u64(const char *p, size_t n, uint64_t *v)
{
	if (n == 0 || n > 20)
		return false;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(p[i]))
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		x = x > (UINT64_MAX - d) / 10 ? UINT64_MAX : x * 10 + d;
	}
	*v = x;
	return true;
}

struct param {
	const char *key, *val;
	size_t klen, vlen;
	bool has_val;
};

/* The next esmtp-param (RFC 5321 4.1.2) of [*pp, end): 1, 0 at the end, -1
 * if malformed. esmtp-value may hold UTF-8 (RFC 6531 3.3). */
static int param_next(const char **pp, const char *end, struct param *pr)
{
	const char *p = *pp;
	while (p < end && *p == ' ')
		p++;
	if (p == end)
		return 0;
	const char *t = p;
	while (p < end && *p != ' ')
		p++;
	*pp = p;
	const char *eq = memchr(t, '=', (size_t)(p - t));
	pr->key = t;
	pr->klen = (size_t)((eq ? eq : p) - t);
	pr->has_val = eq != NULL;
	pr->val = eq ? eq + 1 : p;
	pr->vlen = (size_t)(p - pr->val);
	if (pr->klen == 0 || !is_alnum(t[0]))
		return -1;
	for (size_t i = 1; i < pr->klen; i++)
		if (!is_alnum(t[i]) && t[i] != '-')
			return -1;
	if (eq && pr->vlen == 0)
		return -1;
	for (size_t i = 0; i < pr->vlen; i++) {
		unsigned char c = (unsigned char)pr->val[i];
		if (c < 33 || c == '=' || c == 127)
			return -1;
	}
	return 1;
}

static int domain_index(const struct smtp_policy *pol, const char *d, size_t n)
{
	for (unsigned i = 0; i < pol->ndomains; i++)
		if (word_is(d, n, pol->domains[i].name))
			return (int)i;
	return -1;
}

/* The local part compares exactly, the domain in any case (RFC 5321 2.4);
 * a bare postmaster in any case. */
static bool same_mailbox(const char *a, const char *b)
{
	const char *da = strrchr(a, '@'), *db = strrchr(b, '@');
	if (!da || !db)
		return !da && !db && strcasecmp(a, b) == 0;
	return da - a == db - b && memcmp(a, b, (size_t)(da - a)) == 0 && strcasecmp(da, db) == 0;
}

static bool blocked(const struct smtp_domain *d, const char *addr, size_t n)
{
	char low[SMTP_PATH_MAX];
	if (n >= sizeof low)
		return false;
	for (size_t i = 0; i < n; i++)
		low[i] = (addr[i] >= 'A' && addr[i] <= 'Z') ? (char)(addr[i] + 32) : addr[i];
	low[n] = '\0';
	for (unsigned i = 0; i < d->nblocked; i++)
		if (strcmp(d->blocked[i], low) == 0)
			return true;
	return false;
}

/* ------------------------------------------------------------------ */
/* commands */

static int cmd_hello(struct smtp_session *s, struct smtp_io *io, const char *arg, size_t n,
		     bool esmtp)
{
	/* RFC 5321 4.1.4: a new EHLO/HELO resets the transaction, like RSET. */
	int r = tx_drop(s);
	/* Kept for Received and the logs: printable domain-ish octets only,
	   so that neither can be made to carry anything else. */
	size_t k = n < sizeof s->helo - 1 ? n : sizeof s->helo - 1;
	for (size_t i = 0; i < k; i++) {
		char c = arg[i];
		s->helo[i] = is_alnum(c) || (c && strchr(".-_:[]", c)) ? c : '?';
	}
	s->helo[k] = '\0';
	s->esmtp = esmtp;
	if (!esmtp) {
		reply(s, io, SMTP_R_HELO, s->pol->hostname);
		return r;
	}
	char size[32];
	snprintf(size, sizeof size, "SIZE %llu", (unsigned long long)s->pol->max_message_size);
	const char *ext[12];
	unsigned next = 0;
	ext[next++] = s->pol->hostname;
	ext[next++] = "PIPELINING";
	ext[next++] = size;
	ext[next++] = "8BITMIME";
	ext[next++] = "ENHANCEDSTATUSCODES";
	ext[next++] = "SMTPUTF8";
	ext[next++] = "CHUNKING";
	ext[next++] = "DSN";
	if (!s->tls && s->tls_available)
		ext[next++] = "STARTTLS";
	if (s->tls) /* RFC 4954 4 and SPEC 4: no credentials in the clear */
		ext[next++] = "AUTH PLAIN";
	for (unsigned i = 0; i < next; i++)
		smtp_reply_put(io->out, SMTP_R_HELO, ext[i], i + 1 < next);
	return r;
}

static int cmd_ehlo(struct smtp_session *s, struct smtp_io *io, const char *arg, size_t n)
{
	return cmd_hello(s, io, arg, n, true);
}

static int cmd_helo(struct smtp_session *s, struct smtp_io *io, const char *arg, size_t n)
{
	return cmd_hello(s, io, arg, n, false);
}

/* "FROM:" or "TO:" then optional spaces: the start of the path, or NULL. */
static const char *path_start(const char *arg, size_t n, const char *kw)
{
	size_t k = strlen(kw);
	if (n < k || strncasecmp(arg, kw, k) != 0)
		return NULL;
	const char *p = arg + k;
	while (p < arg + n && *p == ' ')
		p++;
	return p;
}

enum { P_SIZE = 1, P_BODY = 2, P_SMTPUTF8 = 4, P_RET = 8, P_ENVID = 16, P_NOTIFY = 32, P_ORCPT = 64 };

static const struct {
	const char *name;
	unsigned bit;
} param_names[] = {
	{"SIZE", P_SIZE},   {"BODY", P_BODY},     {"SMTPUTF8", P_SMTPUTF8}, {"RET", P_RET},
	{"ENVID", P_ENVID}, {"NOTIFY", P_NOTIFY}, {"ORCPT", P_ORCPT},
};

/* The parameter's bit if it is one of `allowed`, else 0 (555). */
static unsigned param_bit(const struct param *pr, unsigned allowed)
{
	for (size_t i = 0; i < sizeof param_names / sizeof param_names[0]; i++)
		if (word_is(pr->key, pr->klen, param_names[i].name))
			return param_names[i].bit & allowed;
	return 0;
}

static int cmd_mail(struct smtp_session *s, struct smtp_io *io, const char *arg, size_t n)
{
	const struct smtp_policy *pol = s->pol;
	const char *end = arg + n;

	if (s->tx)
		return answer(s, io, SMTP_R_NESTED_MAIL);
	/* RFC 6409 4.3 and SPEC 4: submission is for authenticated users. */
	if (pol->submission && s->auth_domain < 0)
		return answer(s, io, SMTP_R_AUTH_REQUIRED);
	const char *p = path_start(arg, n, "FROM:");
	if (!p)
		return answer(s, io, SMTP_R_SYNTAX);
	struct addr_path a;
	ssize_t k = addr_parse_path(p, (size_t)(end - p), ADDR_NULL_OK | ADDR_UTF8, &a);
	if (k < 0 || (p + k < end && p[k] != ' '))
		return answer(s, io, SMTP_R_BAD_SENDER);

	uint8_t ret = SMTP_RET_UNSET, body = SMTP_BODY_7BIT;
	bool utf8 = false;
	char envid[101];
	unsigned seen = 0;
	struct param pr;
	const char *q = p + k;
	int r;
	while ((r = param_next(&q, end, &pr)) > 0) {
		/* RFC 5321 4.1.1.11: parameters are an EHLO privilege. */
		unsigned bit = s->esmtp ? param_bit(&pr, P_SIZE | P_BODY | P_SMTPUTF8 | P_RET | P_ENVID)
					: 0;
		if (!bit)
			return answer(s, io, SMTP_R_PARAM_UNKNOWN);
		if (seen & bit)
			return answer(s, io, SMTP_R_PARAM_DUP);
		seen |= bit;
		bool ok = pr.has_val;
		uint64_t size;
		switch (bit) {
		case P_SIZE: /* RFC 1870 6 */
			ok = ok && parse_u64(pr.val, pr.vlen, &size);
			if (ok && size > pol->max_message_size)
				return answer(s, io, SMTP_R_SIZE_EXCEEDED);
			break;
		case P_BODY: /* RFC 6152 2, RFC 3030 3 */
			if (word_is(pr.val, pr.vlen, "7BIT"))
				body = SMTP_BODY_7BIT;
			else if (word_is(pr.val, pr.vlen, "8BITMIME"))
				body = SMTP_BODY_8BITMIME;
			else if (word_is(pr.val, pr.vlen, "BINARYMIME"))
				body = SMTP_BODY_BINARYMIME;
			else
				ok = false;
			break;
		case P_SMTPUTF8: /* RFC 6531 3.4: no value */
			ok = !pr.has_val;
			utf8 = true;
			break;
		case P_RET: /* RFC 3461 4.3 */
			if (word_is(pr.val, pr.vlen, "FULL"))
				ret = SMTP_RET_FULL;
			else if (word_is(pr.val, pr.vlen, "HDRS"))
				ret = SMTP_RET_HDRS;
			else
				ok = false;
			break;
		case P_ENVID: /* RFC 3461 4.4 */
			ok = ok && pr.vlen <= 100 &&
			     addr_xtext_decode(pr.val, pr.vlen, envid, sizeof envid) >= 0;
			break;
		}
		if (!ok)
			return answer(s, io, SMTP_R_PARAM_BAD);
	}
	if (r < 0)
		return answer(s, io, SMTP_R_SYNTAX);
	/* RFC 6531 3.3: UTF-8 in the address only with SMTPUTF8. */
	if (a.nonascii && !utf8)
		return answer(s, io, SMTP_R_BAD_SENDER);

	if (!a.null) {
		int d = a.literal ? -1 : domain_index(pol, a.domain, a.domain_len);
		/* Our own domains are spoofed by spam; only the owner, logged in,
		   may use them, and a logged-in owner only their own. */
		if (s->auth_domain < 0 && d >= 0)
			return answer(s, io, SMTP_R_SENDER_LOCAL);
		if (s->auth_domain >= 0 && d != s->auth_domain)
			return answer(s, io, SMTP_R_SENDER_NOT_OWNED);
	}

	struct smtp_tx *tx = calloc(1, sizeof *tx);
	if (!tx)
		return answer(s, io, SMTP_R_NO_STORAGE);
	memcpy(tx->from, a.mbox, a.mbox_len);
	tx->from[a.mbox_len] = '\0';
	tx->ret = ret;
	tx->body_type = body;
	tx->smtputf8 = utf8;
	if (seen & P_ENVID) {
		tx->has_envid = true;
		memcpy(tx->envid, envid, sizeof envid);
	}
	s->tx = tx;
	reply(s, io, SMTP_R_MAIL_OK, NULL);
	return SMTP_REQ_NONE;
}

/* NOTIFY=NEVER / NOTIFY=1#(SUCCESS / FAILURE / DELAY) (RFC 3461 4.1) */
static bool parse_notify(const char *p, size_t n, uint8_t *out)
{
	static const struct {
		const char *name;
		uint8_t bit;
	} kw[] = {{"NEVER", SMTP_NOTIFY_NEVER},
		  {"SUCCESS", SMTP_NOTIFY_SUCCESS},
		  {"FAILURE", SMTP_NOTIFY_FAILURE},
		  {"DELAY", SMTP_NOTIFY_DELAY}};
	uint8_t v = 0;
	for (size_t i = 0; i <= n;) {
		const char *c = memchr(p + i, ',', n - i);
		size_t len = (size_t)((c ? c : p + n) - (p + i));
		uint8_t bit = 0;
		for (size_t k = 0; k < sizeof kw / sizeof kw[0]; k++)
			if (word_is(p + i, len, kw[k].name))
				bit = kw[k].bit;
		if (!bit)
			return false;
		v |= bit;
		i += len + 1;
	}
	if ((v & SMTP_NOTIFY_NEVER) && v != SMTP_NOTIFY_NEVER)
		return false;
	*out = v;
	return true;
}

/* ORCPT=addr-type ";" xtext (RFC 3461 4.2), kept as "addr-type;decoded". */
static bool parse_orcpt(const char *p, size_t n, char *out, size_t cap)
{
	const char *semi = memchr(p, ';', n);
	if (n > 500 || !semi || semi == p || (size_t)(semi - p) + 1 >= cap)
		return false;
	size_t t = (size_t)(semi - p);
	for (size_t i = 0; i < t; i++)
		if (!is_alnum(p[i]) && p[i] != '-')
			return false;
	memcpy(out, p, t + 1);
	return addr_xtext_decode(semi + 1, n - t - 1, out + t + 1, cap - t - 1) > 0;
}

static bool rcpt_add(struct smtp_tx *tx, const char *addr, size_t n, const char *orcpt, int domain,
		     uint8_t notify)
{
	if (tx->nrcpt == tx->rcpt_cap) {
		unsigned cap = tx->rcpt_cap ? tx->rcpt_cap * 2 : 4;
		struct smtp_rcpt *r = realloc(tx->rcpt, cap * sizeof *r);
		if (!r)
			return false;
		tx->rcpt = r;
		tx->rcpt_cap = cap;
	}
	size_t olen = orcpt ? strlen(orcpt) + 1 : 0;
	char *m = malloc(n + 1 + olen);
	if (!m)
		return false;
	memcpy(m, addr, n);
	m[n] = '\0';
	if (orcpt)
		memcpy(m + n + 1, orcpt, olen);
	tx->rcpt[tx->nrcpt++] = (struct smtp_rcpt){
		.addr = m, .orcpt = orcpt ? m + n + 1 : NULL, .domain = domain, .notify = notify};
	return true;
}

static int cmd_rcpt(struct smtp_session *s, struct smtp_io *io, const char *arg, size_t n)
{
	const struct smtp_policy *pol = s->pol;
	struct smtp_tx *tx = s->tx;
	const char *end = arg + n;

	if (!tx)
		return answer(s, io, SMTP_R_NEED_MAIL);
	const char *p = path_start(arg, n, "TO:");
	if (!p)
		return answer(s, io, SMTP_R_SYNTAX);
	struct addr_path a;
	ssize_t k = addr_parse_path(p, (size_t)(end - p), ADDR_POSTMASTER_OK | ADDR_UTF8, &a);
	if (k < 0 || (p + k < end && p[k] != ' ') || (a.nonascii && !tx->smtputf8))
		return answer(s, io, SMTP_R_BAD_RCPT);

	uint8_t notify = 0;
	char orcpt[512];
	unsigned seen = 0;
	struct param pr;
	const char *q = p + k;
	int r;
	while ((r = param_next(&q, end, &pr)) > 0) {
		unsigned bit = s->esmtp ? param_bit(&pr, P_NOTIFY | P_ORCPT) : 0;
		if (!bit)
			return answer(s, io, SMTP_R_PARAM_UNKNOWN);
		if (seen & bit)
			return answer(s, io, SMTP_R_PARAM_DUP);
		seen |= bit;
		bool ok = pr.has_val && (bit == P_NOTIFY
						 ? parse_notify(pr.val, pr.vlen, &notify)
						 : parse_orcpt(pr.val, pr.vlen, orcpt, sizeof orcpt));
		if (!ok)
			return answer(s, io, SMTP_R_PARAM_BAD);
	}
	if (r < 0)
		return answer(s, io, SMTP_R_SYNTAX);

	/* RFC 5321 4.1.1.3 and SPEC 4: <postmaster> is the first domain's. */
	int d = a.postmaster ? (pol->ndomains ? 0 : -1)
		: a.literal  ? -1
			     : domain_index(pol, a.domain, a.domain_len);
	if (!a.postmaster && d >= 0 && blocked(&pol->domains[d], a.mbox, a.mbox_len))
		return answer(s, io, SMTP_R_RCPT_BLOCKED);
	if (d < 0 && s->auth_domain < 0)
		return answer(s, io, SMTP_R_RELAY_DENIED);
	char addr[SMTP_PATH_MAX];
	memcpy(addr, a.mbox, a.mbox_len);
	addr[a.mbox_len] = '\0';
	for (unsigned i = 0; i < tx->nrcpt; i++)
		if (same_mailbox(tx->rcpt[i].addr, addr))
			return answer(s, io, SMTP_R_RCPT_OK);
	if (tx->nrcpt >= pol->max_recipients) /* RFC 5321 4.5.3.1.10 */
		return answer(s, io, SMTP_R_TOO_MANY_RCPT);
	if (!rcpt_add(tx, addr, a.mbox_len, (seen & P_ORCPT) ? orcpt : NULL, d, notify))
		return answer(s, io, SMTP_R_NO_STORAGE);
	reply(s, io, SMTP_R_RCPT_OK, NULL);
	return SMTP_REQ_NONE;
}

static int cmd_data(struct smtp_session *s, struct smtp_io *io, const char *arg UNUSED,
		     size_t n UNUSED)
{
	struct smtp_tx *tx = s->tx;
	enum smtp_reply r = !tx			       ? SMTP_R_NEED_MAIL
			    : tx->nrcpt == 0	       ? SMTP_R_NEED_RCPT
			    : tx->bdat		       ? SMTP_R_DATA_AFTER_BDAT
			    : tx->body_type == SMTP_BODY_BINARYMIME ? SMTP_R_DATA_BINARY
								    : SMTP_R_COUNT;
	if (r != SMTP_R_COUNT)
		return answer(s, io, r);
	return SMTP_REQ_SPOOL_OPEN;
}

/* The end of a BDAT chunk: its reply, or the commit after LAST. */
static int chunk_done(struct smtp_session *s, struct smtp_io *io)
{
	s->state = ST_CMD;
	if (s->p.chunk_discard) {
		s->p.chunk_discard = false;
		reply(s, io, (enum smtp_reply)s->p.chunk_reply, NULL);
		return SMTP_REQ_NONE;
	}
	if (s->p.chunk_last) {
		if (s->tx->too_big) {
			reply(s, io, SMTP_R_MSG_TOO_BIG, NULL);
			s->p.tx_done = true;
			return SMTP_REQ_SPOOL_ABORT;
		}
		return SMTP_REQ_SPOOL_COMMIT;
	}
	char num[24];
	snprintf(num, sizeof num, "%llu", (unsigned long long)s->p.chunk_size);
	reply(s, io, SMTP_R_BDAT_OK, num);
	return SMTP_REQ_NONE;
}

/* Reads and drops the chunk, then answers r (RFC 3030 2: the octets follow
 * the command whatever the server thinks of it). */
static int chunk_refuse(struct smtp_session *s, struct smtp_io *io, enum smtp_reply r)
{
	s->p.chunk_discard = true;
	s->p.chunk_reply = (uint8_t)r;
	s->state = ST_BDAT;
	return s->p.chunk_left ? SMTP_REQ_NONE : chunk_done(s, io);
}

/* BDAT chunk-size [SP "LAST"] (RFC 3030 2) */
static int cmd_bdat(struct smtp_session *s, struct smtp_io *io, const char *arg, size_t n)
{
	size_t d = 0;
	while (d < n && arg[d] != ' ')
		d++;
	uint64_t size;
	if (!parse_u64(arg, d, &size) || size == UINT64_MAX) {
		reply(s, io, SMTP_R_SYNTAX, NULL);
		if (!s->p.closing)
			smtp_reply_put(io->out, SMTP_R_DESYNC, s->pol->hostname, false);
		return SMTP_REQ_CLOSE;
	}
	const char *rest = arg + d;
	while (rest < arg + n && *rest == ' ')
		rest++;
	size_t rn = (size_t)(arg + n - rest);
	s->p.chunk_left = s->p.chunk_size = size;
	s->p.chunk_last = word_is(rest, rn, "LAST");
	struct smtp_tx *tx = s->tx;
	if (rn && !s->p.chunk_last)
		return chunk_refuse(s, io, SMTP_R_SYNTAX);
	if (!greeted(s))
		return chunk_refuse(s, io, SMTP_R_NEED_HELO);
	if (!tx)
		return chunk_refuse(s, io, SMTP_R_NEED_MAIL);
	if (tx->nrcpt == 0)
		return chunk_refuse(s, io, SMTP_R_NEED_RCPT);
	s->p.chunk_discard = false;
	if (!tx->bdat) {
		tx->bdat = true;
		return SMTP_REQ_SPOOL_OPEN;
	}
	s->state = ST_BDAT;
	return size ? SMTP_REQ_NONE : chunk_done(s, io);
}

static int cmd_rset(struct smtp_session *s, struct smtp_io *io, const char *arg UNUSED,
		     size_t n UNUSED)
{
	reply(s, io, SMTP_R_OK, NULL);
	return tx_drop(s);
}

static int cmd_quit(struct smtp_session *s, struct smtp_io *io, const char *arg UNUSED,
		     size_t n UNUSED)
{
	reply(s, io, SMTP_R_BYE, NULL);
	return SMTP_REQ_CLOSE;
}

static int cmd_starttls(struct smtp_session *s, struct smtp_io *io, const char *arg UNUSED,
		         size_t n UNUSED)
{
	enum smtp_reply r = s->tls		  ? SMTP_R_TLS_ACTIVE
			    : !s->tls_available ? SMTP_R_TLS_UNAVAILABLE
			    : s->tx		  ? SMTP_R_IN_TX
						  : SMTP_R_STARTTLS_GO;
	reply(s, io, r, NULL);
	return r == SMTP_R_STARTTLS_GO ? SMTP_REQ_STARTTLS : SMTP_REQ_NONE;
}

/* Decodes an AUTH PLAIN response (RFC 4616 2) and asks the core. */
static int auth_check(struct smtp_session *s, struct smtp_io *io, const char *b64, size_t n)
{
	const struct smtp_policy *pol = s->pol;
	struct smtp_auth *a = s->p.auth;
	struct sasl_plain pl;
	ssize_t k = b64_decode(b64, n, a->msg, sizeof a->msg - 1);
	if (k < 0 || sasl_plain_parse(a->msg, (size_t)k, &pl) < 0) {
		auth_end(s);
		reply(s, io, SMTP_R_AUTH_BAD_B64, NULL);
		return SMTP_REQ_NONE;
	}
	a->msg[k] = '\0';
	int d = pol->ndomains ? sasl_identity_domain(pl.authcid, pl.authcid_len,
						      &pol->domains[0].name,
						      sizeof pol->domains[0], pol->ndomains)
			      : -1;
	/* An authzid other than the authcid asks to act as someone else,
	   which a single-user server never grants. It fails like a wrong
	   password: the answer must not tell which identities exist. */
	if (pl.authzid_len && (pl.authzid_len != pl.authcid_len ||
			       strncasecmp(pl.authzid, pl.authcid, pl.authcid_len) != 0))
		d = -1;
	a->domain = d;
	a->passwd = pl.passwd;
	a->passwd_len = pl.passwd_len;
	return SMTP_REQ_AUTH;
}

/* AUTH PLAIN [initial-response] (RFC 4954 4) */
static int cmd_auth(struct smtp_session *s, struct smtp_io *io, const char *arg, size_t n)
{
	size_t m = 0;
	while (m < n && arg[m] != ' ')
		m++;
	const char *ir = arg + m;
	while (ir < arg + n && *ir == ' ')
		ir++;
	size_t irn = (size_t)(arg + n - ir);
	enum smtp_reply r = !s->esmtp		? SMTP_R_NEED_EHLO
			    : s->auth_domain >= 0 ? SMTP_R_AUTH_AGAIN
			    : s->tx		? SMTP_R_IN_TX
			    : !s->tls		? SMTP_R_AUTH_NEED_TLS
			    : !word_is(arg, m, "PLAIN") ? SMTP_R_AUTH_MECH
			    : memchr(ir, ' ', irn)	? SMTP_R_SYNTAX
							: SMTP_R_COUNT;
	if (r != SMTP_R_COUNT)
		return answer(s, io, r);
	/* Only for the exchange: an idle session does not pay for it. */
	s->p.auth = malloc(sizeof *s->p.auth);
	if (!s->p.auth)
		return answer(s, io, SMTP_R_AUTH_TEMP);
	if (irn)
		return auth_check(s, io, ir, irn);
	reply(s, io, SMTP_R_AUTH_CONT, NULL);
	s->state = ST_AUTH;
	return SMTP_REQ_NONE;
}

/* The line that answers "334 " (RFC 4954 4). */
static int auth_response(struct smtp_session *s, struct smtp_io *io, const char *line, size_t n)
{
	s->state = ST_CMD;
	if (n == 1 && line[0] == '*') {
		auth_end(s);
		reply(s, io, SMTP_R_AUTH_CANCELLED, NULL);
		return SMTP_REQ_NONE;
	}
	return auth_check(s, io, line, n);
}

enum { C_HELO = 1, C_NOARG = 2, C_ARG = 4 };

/* The command table (after OpenSMTPD's): the flags are the checks every
 * row shares; what is particular to a verb is in its function, or, for
 * verbs that only answer, in its reply. */
static const struct smtp_cmd {
	const char *verb;
	uint8_t flags;
	int (*fn)(struct smtp_session *, struct smtp_io *, const char *, size_t);
	enum smtp_reply fixed; /* the reply, when fn is NULL */
} cmds[] = {
	{"EHLO", C_ARG, cmd_ehlo, 0},
	{"HELO", C_ARG, cmd_helo, 0},
	{"MAIL", C_HELO | C_ARG, cmd_mail, 0},
	{"RCPT", C_HELO | C_ARG, cmd_rcpt, 0},
	{"DATA", C_HELO | C_NOARG, cmd_data, 0},
	/* BDAT checks for itself: its chunk must be read whatever the verdict */
	{"BDAT", 0, cmd_bdat, 0},
	{"RSET", C_NOARG, cmd_rset, 0},
	{"NOOP", 0, NULL, SMTP_R_OK}, /* RFC 5321 4.1.1.9: an argument is allowed */
	{"QUIT", C_NOARG, cmd_quit, 0},
	{"HELP", 0, NULL, SMTP_R_HELP},
	{"VRFY", C_ARG, NULL, SMTP_R_VRFY}, /* RFC 5321 3.5.3 */
	{"EXPN", 0, NULL, SMTP_R_EXPN},
	{"STARTTLS", C_NOARG, cmd_starttls, 0},
	{"AUTH", C_ARG, cmd_auth, 0},
};

/* One command line, CRLF removed. */
static int command(struct smtp_session *s, struct smtp_io *io, const char *line, size_t n)
{
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	size_t v = 0;
	while (v < n && line[v] != ' ')
		v++;
	const char *arg = line + v;
	size_t an = n - v;
	while (an && *arg == ' ')
		arg++, an--;
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		const struct smtp_cmd *c = &cmds[i];
		if (!word_is(line, v, c->verb))
			continue;
		enum smtp_reply r = (c->flags & C_HELO) && !greeted(s) ? SMTP_R_NEED_HELO
				    : (c->flags & C_NOARG) && an	   ? SMTP_R_SYNTAX
				    : (c->flags & C_ARG) && !an		   ? SMTP_R_SYNTAX
									   : SMTP_R_COUNT;
		if (r == SMTP_R_COUNT && !c->fn)
			r = c->fixed;
		if (r != SMTP_R_COUNT)
			return answer(s, io, r);
		return c->fn(s, io, arg, an);
	}
	reply(s, io, SMTP_R_UNKNOWN, NULL);
	return SMTP_REQ_NONE;
}

/* ------------------------------------------------------------------ */
/* input framing */

/* A whole line, LF included. */
static int line_done(struct smtp_session *s, struct smtp_io *io, const char *line, size_t n)
{
	bool auth = s->state == ST_AUTH;
	enum smtp_reply r = SMTP_R_COUNT;
	if (n < 2 || line[n - 2] != '\r')
		r = SMTP_R_BARE_LF;
	else if (memchr(line, '\0', n))
		r = SMTP_R_NUL;
	if (r != SMTP_R_COUNT) {
		if (auth) {
			auth_end(s);
			s->state = ST_CMD;
		}
		reply(s, io, r, NULL);
		return SMTP_REQ_NONE;
	}
	return auth ? auth_response(s, io, line, n - 2) : command(s, io, line, n - 2);
}

static int feed_line(struct smtp_session *s, const char *in, size_t n, size_t *i,
		     struct smtp_io *io)
{
	const char *p = in + *i;
	size_t avail = n - *i;
	const char *lf = memchr(p, '\n', avail);
	size_t take = lf ? (size_t)(lf - p) + 1 : avail;

	if (s->p.discard_line) {
		*i += take;
		s->p.discard_line = !lf;
		return SMTP_REQ_NONE;
	}
	bool auth = s->state == ST_AUTH;
	size_t limit = auth ? SMTP_AUTH_LINE_MAX : SMTP_LINE_MAX;
	char *buf = auth ? s->p.auth->line : s->line;
	size_t total = s->linelen + take;
	/* Without its LF, a line that already has `limit` octets is longer. */
	if (lf ? total > limit : total >= limit) {
		if (!room(io))
			return STALL;
		*i += take;
		s->linelen = 0;
		s->p.discard_line = !lf;
		if (auth) {
			auth_end(s);
			s->state = ST_CMD;
		}
		reply(s, io, auth ? SMTP_R_AUTH_TOO_LONG : SMTP_R_LINE_TOO_LONG, NULL);
		return SMTP_REQ_NONE;
	}
	if (!lf) {
		memcpy(buf + s->linelen, p, take);
		s->linelen = (uint16_t)total;
		*i = n;
		return SMTP_REQ_NONE;
	}
	if (!room(io))
		return STALL;
	*i += take;
	if (s->linelen == 0)
		return line_done(s, io, p, take);
	memcpy(buf + s->linelen, p, take);
	s->linelen = 0;
	return line_done(s, io, buf, total);
}

/* Stores n message octets, or stops storing once the message is too big
 * (the reading goes on to the end; the refusal comes then). */
static void emit(struct smtp_session *s, struct smtp_io *io, const char *p, size_t n)
{
	struct smtp_tx *tx = s->tx;
	if (n == 0 || tx->too_big)
		return;
	if (n > s->pol->max_message_size - tx->body_size) {
		tx->too_big = true;
		return;
	}
	tx->body_size += n;
	io->body(io->ctx, p, n);
}

/* The end of DATA text: commit, or refuse what cannot be stored. */
static int data_end(struct smtp_session *s, struct smtp_io *io)
{
	struct smtp_tx *tx = s->tx;
	s->state = ST_CMD;
	if (tx->too_big || tx->bare) {
		/* RFC 5321 4.1.1.4 and 2.3.8: CR and LF only as CRLF. A server
		   that took LF alone as a line end would see a different end
		   of data than the next hop: SMTP smuggling. */
		reply(s, io, tx->too_big ? SMTP_R_MSG_TOO_BIG : SMTP_R_MSG_BARE_CRLF, NULL);
		s->p.tx_done = true;
		return SMTP_REQ_SPOOL_ABORT;
	}
	return SMTP_REQ_SPOOL_COMMIT;
}

/* DATA text: spans of the input go to the body callback as they are; a
 * span is cut only around what is not stored (a stuffing dot, the end
 * marker), so a 40 MB message is a few calls per read, not per line. */
static int feed_data(struct smtp_session *s, const char *in, size_t n, size_t *i,
		     struct smtp_io *io)
{
	struct smtp_tx *tx = s->tx;
	const char *p = in + *i, *end = in + n, *span = p;

	while (p < end) {
		switch (tx->dot) {
		case D_TEXT: {
			const char *cr = memchr(p, '\r', (size_t)(end - p));
			const char *stop = cr ? cr : end;
			if (!tx->bare && memchr(p, '\n', (size_t)(stop - p)))
				tx->bare = true;
			p = cr ? cr + 1 : end;
			if (cr)
				tx->dot = D_CR;
			break;
		}
		case D_CR:
			if (*p == '\n') {
				p++;
				tx->dot = D_BOL;
			} else {
				tx->bare = true; /* looked at again as text */
				tx->dot = D_TEXT;
			}
			break;
		case D_BOL:
			if (*p == '.') {
				emit(s, io, span, (size_t)(p - span));
				span = ++p;
				tx->dot = D_DOT;
			} else {
				tx->dot = D_TEXT;
			}
			break;
		case D_DOT:
			if (*p == '\r') {
				emit(s, io, span, (size_t)(p - span));
				span = ++p;
				tx->dot = D_DOT_CR;
			} else {
				tx->dot = D_TEXT; /* a stuffed line: the dot is gone */
			}
			break;
		case D_DOT_CR:
			if (*p == '\n') {
				if (!room(io)) {
					*i = (size_t)(p - in);
					return STALL;
				}
				*i = (size_t)(p + 1 - in);
				return data_end(s, io);
			}
			/* ".\r" then not LF: the CR was bare; it is text after
			   all, and may have been held over from the last read. */
			emit(s, io, "\r", 1);
			tx->bare = true;
			tx->dot = D_TEXT;
			break;
		}
	}
	emit(s, io, span, (size_t)(p - span));
	*i = n;
	return SMTP_REQ_NONE;
}

/* BDAT octets: exactly chunk_left of them, stored as they are. */
static int feed_chunk(struct smtp_session *s, const char *in, size_t n, size_t *i,
		      struct smtp_io *io)
{
	uint64_t left = s->p.chunk_left;
	size_t take = n - *i < left ? n - *i : (size_t)left;
	bool stall = false;
	if (take == left && !room(io)) {
		take--; /* keep the last octet until the reply fits */
		stall = true;
	}
	if (!s->p.chunk_discard)
		emit(s, io, in + *i, take);
	*i += take;
	s->p.chunk_left -= take;
	if (stall)
		return STALL;
	return s->p.chunk_left ? SMTP_REQ_NONE : chunk_done(s, io);
}

/* ------------------------------------------------------------------ */
/* the interface */

void smtp_start(struct smtp_session *s, struct smtp_io *io)
{
	s->auth_domain = -1;
	s->state = ST_CMD;
	smtp_reply_put(io->out, SMTP_R_GREETING, s->pol->hostname, false);
}

enum smtp_req smtp_feed(struct smtp_session *s, const char *in, size_t n, size_t *used,
			struct smtp_io *io)
{
	size_t i = 0;
	int r = SMTP_REQ_NONE;

	*used = 0;
	tx_reap(s);
	if (s->state == ST_CLOSED)
		return SMTP_REQ_CLOSE;
	if (s->state == ST_WAIT)
		return internal_error(s, io);
	while (i < n && r == SMTP_REQ_NONE && !s->p.closing) {
		switch (s->state) {
		case ST_CMD:
		case ST_AUTH:
			r = feed_line(s, in, n, &i, io);
			break;
		case ST_DATA:
			r = feed_data(s, in, n, &i, io);
			break;
		case ST_BDAT:
			r = feed_chunk(s, in, n, &i, io);
			break;
		}
	}
	*used = i;
	return leave(s, r);
}

enum smtp_req smtp_complete(struct smtp_session *s, enum smtp_req req, int result,
			    const char *arg, struct smtp_io *io)
{
	int r = SMTP_REQ_NONE;

	tx_reap(s);
	if (s->state != ST_WAIT || s->p.req != req)
		return internal_error(s, io);
	s->p.req = SMTP_REQ_NONE;
	s->state = ST_CMD;
	switch (req) {
	case SMTP_REQ_STARTTLS:
		if (result < 0) /* half a handshake: nothing can be said */
			return leave(s, SMTP_REQ_CLOSE);
		/* RFC 3207 4.2: forget what the client said before TLS. */
		s->tls = true;
		s->helo[0] = '\0';
		s->esmtp = false;
		s->linelen = 0;
		s->p.discard_line = false;
		break;
	case SMTP_REQ_AUTH: {
		int d = s->p.auth->domain;
		auth_end(s);
		if (result == 0 && d >= 0) {
			s->auth_domain = d;
			reply(s, io, SMTP_R_AUTH_OK, NULL);
		} else {
			s->auth_failures++;
			reply(s, io, SMTP_R_AUTH_FAILED, NULL);
		}
		break;
	}
	case SMTP_REQ_SPOOL_OPEN:
		if (s->tx->bdat) {
			/* The chunk is on its way whatever happened: read it,
			   then answer. */
			if (result < 0) {
				tx_end(s);
				s->p.chunk_discard = true;
				s->p.chunk_reply = SMTP_R_LOCAL_ERROR;
			} else {
				s->tx->spool = true;
			}
			s->state = ST_BDAT;
			if (s->p.chunk_left == 0)
				r = chunk_done(s, io);
		} else if (result < 0) {
			tx_end(s);
			reply(s, io, SMTP_R_LOCAL_ERROR, NULL);
		} else {
			s->tx->spool = true;
			s->tx->dot = D_BOL; /* the DATA line's CRLF */
			s->state = ST_DATA;
			reply(s, io, SMTP_R_DATA_GO, NULL);
		}
		break;
	case SMTP_REQ_SPOOL_COMMIT:
		tx_end(s);
		if (result < 0)
			reply(s, io, SMTP_R_LOCAL_ERROR, NULL);
		else
			reply(s, io, SMTP_R_QUEUED, arg);
		break;
	default:
		return internal_error(s, io);
	}
	return leave(s, r);
}

void smtp_timeout(struct smtp_session *s, struct smtp_io *io)
{
	smtp_reply_put(io->out, SMTP_R_TIMEOUT, s->pol->hostname, false);
	s->state = ST_CLOSED;
}

void smtp_shutdown(struct smtp_session *s, struct smtp_io *io)
{
	smtp_reply_put(io->out, SMTP_R_SHUTDOWN, s->pol->hostname, false);
	s->state = ST_CLOSED;
}

bool smtp_in_transaction(const struct smtp_session *s) { return s->tx && !s->p.tx_done; }

void smtp_end(struct smtp_session *s)
{
	tx_end(s);
	auth_end(s);
}

const char *smtp_tx_from(const struct smtp_session *s) { return s->tx ? s->tx->from : ""; }

void smtp_tx_set_from(struct smtp_session *s, const char *from)
{
	if (!s->tx)
		return;
	size_t n = strlen(from);
	if (n >= sizeof s->tx->from)
		n = sizeof s->tx->from - 1;
	memcpy(s->tx->from, from, n);
	s->tx->from[n] = '\0';
}

unsigned smtp_tx_nrcpt(const struct smtp_session *s) { return s->tx ? s->tx->nrcpt : 0; }

const struct smtp_rcpt *smtp_tx_rcpt(const struct smtp_session *s, unsigned i)
{
	return s->tx && i < s->tx->nrcpt ? &s->tx->rcpt[i] : NULL;
}

const char *smtp_tx_envid(const struct smtp_session *s)
{
	return s->tx && s->tx->has_envid ? s->tx->envid : NULL;
}

enum smtp_ret smtp_tx_ret(const struct smtp_session *s)
{
	return s->tx ? (enum smtp_ret)s->tx->ret : SMTP_RET_UNSET;
}

enum smtp_body_type smtp_tx_body_type(const struct smtp_session *s)
{
	return s->tx ? (enum smtp_body_type)s->tx->body_type : SMTP_BODY_7BIT;
}

bool smtp_tx_smtputf8(const struct smtp_session *s) { return s->tx && s->tx->smtputf8; }

int smtp_auth_domain(const struct smtp_session *s)
{
	return s->p.auth ? s->p.auth->domain : s->auth_domain;
}

const char *smtp_auth_password(const struct smtp_session *s, size_t *len)
{
	if (!s->p.auth || !s->p.auth->passwd) {
		*len = 0;
		return "";
	}
	*len = s->p.auth->passwd_len;
	return s->p.auth->passwd;
}

/* ------------------------------------------------------------------ */
/* trace headers */

size_t smtp_trace_headers(char *buf, size_t cap, const struct smtp_session *s, int domain,
			  const char *id, int64_t now, int tz_off_min)
{
	struct wr w = {.p = buf, .cap = cap};
	const struct smtp_tx *tx = s->tx;
	unsigned nrcpt = tx ? tx->nrcpt : 0;
	const char *only = NULL;
	unsigned count = 0;

	for (unsigned i = 0; i < nrcpt; i++) {
		if (tx->rcpt[i].domain != domain)
			continue;
		only = tx->rcpt[i].addr;
		count++;
	}
	if (domain >= 0) {
		wr_puts(&w, "Return-Path: <");
		wr_puts(&w, smtp_tx_from(s));
		wr_puts(&w, ">\r\n");
		/* Recipients are stored once each (cmd_rcpt), so this is one
		   line per distinct address. */
		for (unsigned i = 0; i < nrcpt; i++) {
			if (tx->rcpt[i].domain != domain)
				continue;
			/* bare, as Postfix and Dovecot write it */
			wr_puts(&w, "Delivered-To: ");
			wr_puts(&w, tx->rcpt[i].addr);
			wr_puts(&w, "\r\n");
		}
	}
	/* RFC 5321 4.4 and 3848: "from" is the EHLO name with the address it
	   came from as TCP-info; we do no reverse lookup, so there is no
	   name to put beside it. RFC 6531 3.7.3: UTF8SMTP* for SMTPUTF8. */
	wr_puts(&w, "Received: from ");
	wr_puts(&w, s->helo);
	wr_puts(&w, strchr(s->peer, ':') ? " ([IPv6:" : " ([");
	wr_puts(&w, s->peer);
	wr_puts(&w, "])\r\n\tby ");
	wr_puts(&w, s->pol->hostname);
	wr_puts(&w, " (mailpopbox) with ");
	if (!s->esmtp) {
		wr_puts(&w, "SMTP");
	} else {
		wr_puts(&w, tx && tx->smtputf8 ? "UTF8SMTP" : "ESMTP");
		if (s->tls)
			wr_puts(&w, "S");
		if (s->auth_domain >= 0)
			wr_puts(&w, "A");
	}
	wr_puts(&w, " id ");
	wr_puts(&w, id ? id : "");
	if (count == 1) {
		/* RFC 5321 4.4: "for" only when it reveals no other recipient */
		wr_puts(&w, "\r\n\tfor <");
		wr_puts(&w, only);
		wr_puts(&w, ">; ");
	} else {
		wr_puts(&w, ";\r\n\t");
	}
	wr_date(&w, now, tz_off_min);
	wr_puts(&w, "\r\n");
	return w.over ? 0 : w.len;
}
