/*
 * The POP3 server machine. Reading order:
 *
 *   replies         the one table of fixed reply texts
 *   commands        cmd_<verb>(), then the command table and command()
 *   listings        LIST and UIDL without argument, resumable
 *   input framing   feed_line(), line_done()
 *   the interface   pop3_start/feed/complete and the accessors
 *   pop3_stuff      the dot-stuffing streamer for RETR and TOP
 *
 * Lines are framed as in proto/smtp.c: a line that arrived whole is parsed
 * in place in the caller's buffer; only a line cut by the end of a read is
 * copied into s->line. Nothing is allocated: the pending password lives in
 * s->line (free while a request is outstanding, since the core feeds nothing
 * then) and every other piece of state is a field of struct pop3_priv.
 *
 * Choices where the RFCs leave room (each is tested in test_pop3.c):
 * - A line may end in CRLF or in a bare LF (as Dovecot accepts): POP3 has
 *   no data phase a bare LF could smuggle anything into. The 255-octet
 *   limit (RFC 2449 4) counts the line with its terminator; an over-long
 *   line is answered as soon as it is known to be too long, then discarded
 *   up to its LF.
 * - USER answers +OK whatever the name (RFC 1939 7 allows it): whether an
 *   identity exists is told only by PASS, after the core's delay. An
 *   unknown identity still comes as POP3_REQ_AUTH, with domain -1.
 * - PASS takes the rest of the line after "PASS " verbatim, spaces
 *   included (RFC 1939 7: the password may contain spaces).
 * - USER, PASS and AUTH with a mechanism before TLS, without
 *   allow_plaintext_auth: -ERR [AUTH] (RFC 2595 2, SPEC 7). CAPA then
 *   omits USER and SASL's PLAIN, and AUTH without argument lists no
 *   mechanism, as Dovecot does (RFC 2449 6.3 allows it).
 * - An AUTH response line is held to the same 255 octets: the machine has
 *   no other buffer. A PLAIN response for mailbox@DOMAIN fits with room
 *   (domain and password together up to ~175 octets).
 * - QUIT in TRANSACTION always asks for UPDATE, even with nothing marked:
 *   the core decides what a no-op removal costs, and the "+OK" still means
 *   "nothing is left to do" (SPEC 7).
 * - TOP answers "+OK top of message follows" and no octet count: the size
 *   of the message is not the size of what follows.
 * - Every -ERR counts; the POP3_MAX_ERRORS-th is followed by
 *   "-ERR Too many errors" and the close (as Dovecot's bad-command limit).
 */
#include "proto/pop3.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "proto/sasl.h"

_Static_assert(sizeof(struct pop3_priv) <= sizeof(((struct pop3_session *)0)->priv),
	       "pop3_priv outgrew the space the session reserves");

/* s->state */
enum {
	ST_AUTHZ,     /* AUTHORIZATION (RFC 1939 4) */
	ST_AUTH_CONT, /* AUTHORIZATION, the line answering "+ " (RFC 5034 4) */
	ST_TRANS,     /* TRANSACTION (RFC 1939 5) */
	ST_WAIT,      /* a request is outstanding: nothing is read */
	ST_CLOSED,    /* CLOSE was returned */
};

/* A step that stopped because the obuf is short of POP3_REPLY_ROOM; it
 * always leaves at least one input octet unused. */
#define STALL (-1)

/* Room one listing line needs: "4294967295 " and a 70-octet UID, CRLF. */
#define LIST_LINE_ROOM 96

/* ------------------------------------------------------------------ */
/* replies */

enum reply {
	R_OK,
	R_USER_OK,
	R_STLS_GO,
	R_CAPA,
	R_AUTH_LIST,
	R_AUTH_CONT,
	R_TOP_OK,
	R_UNKNOWN,
	R_SYNTAX,
	R_NOT_AUTHED,
	R_AUTHED,
	R_NO_MSG,
	R_TOO_LONG,
	R_NUL,
	R_NEED_TLS,
	R_NO_USER,
	R_AUTH_FAILED,
	R_AUTH_MECH,
	R_AUTH_BAD,
	R_AUTH_CANCEL,
	R_IN_USE,
	R_OPEN_FAIL,
	R_TLS_ACTIVE,
	R_TLS_UNAVAIL,
	R_RETR_GONE,
	R_RETR_FAIL,
	R_UPDATE_FAIL,
	R_TOO_MANY,
	R_INTERNAL,
	R_TIMEOUT,
};

/* Response codes per RFC 2449 8 and RFC 3206: [AUTH] for credentials,
 * [IN-USE] for the maildrop lock, [SYS/TEMP] for what may work later. */
static const char *const replies[] = {
	[R_OK] = "+OK",
	[R_USER_OK] = "+OK send PASS",
	[R_STLS_GO] = "+OK Begin TLS negotiation",
	[R_CAPA] = "+OK Capability list follows",
	[R_AUTH_LIST] = "+OK SASL mechanisms follow",
	[R_AUTH_CONT] = "+ ",
	[R_TOP_OK] = "+OK top of message follows",
	[R_UNKNOWN] = "-ERR unknown command",
	[R_SYNTAX] = "-ERR invalid arguments",
	[R_NOT_AUTHED] = "-ERR not logged in",
	[R_AUTHED] = "-ERR already logged in",
	[R_NO_MSG] = "-ERR no such message",
	[R_TOO_LONG] = "-ERR line too long",
	[R_NUL] = "-ERR NUL octet in command line",
	[R_NEED_TLS] = ("-ERR [AUTH] Plaintext authentication disallowed on non-secure "
			"(SSL/TLS) connections"),
	[R_NO_USER] = "-ERR no USER given",
	[R_AUTH_FAILED] = "-ERR [AUTH] Authentication failed",
	[R_AUTH_MECH] = "-ERR unsupported authentication mechanism",
	[R_AUTH_BAD] = "-ERR invalid PLAIN response",
	[R_AUTH_CANCEL] = "-ERR authentication cancelled",
	[R_IN_USE] = "-ERR [IN-USE] maildrop is locked by another session",
	[R_OPEN_FAIL] = "-ERR [SYS/TEMP] cannot open the maildrop",
	[R_TLS_ACTIVE] = "-ERR TLS already active",
	[R_TLS_UNAVAIL] = "-ERR STLS not available",
	[R_RETR_GONE] = "-ERR no such message (removed by another tool)",
	[R_RETR_FAIL] = "-ERR [SYS/TEMP] cannot read the message",
	[R_UPDATE_FAIL] = "-ERR [SYS/TEMP] marked messages could not all be removed",
	[R_TOO_MANY] = "-ERR Too many errors, closing connection",
	[R_INTERNAL] = "-ERR [SYS/TEMP] internal error",
	[R_TIMEOUT] = "-ERR Disconnected for inactivity",
};

static void put_line(struct obuf *out, const char *text)
{
	obuf_puts(out, text);
	obuf_put(out, "\r\n", 2);
}

/* The reply that ends a command; -ERR replies are counted. */
static int reply(struct pop3_session *s, struct obuf *out, enum reply r)
{
	put_line(out, replies[r]);
	if (replies[r][0] == '-' && ++s->p.errors == POP3_MAX_ERRORS) {
		put_line(out, replies[R_TOO_MANY]);
		s->p.closing = true;
	}
	return POP3_REQ_NONE;
}

/* Every exit to the core passes here: the request is remembered so that
 * pop3_complete() can check it answers the right question. */
static enum pop3_req leave(struct pop3_session *s, int r)
{
	if (s->p.closing || r == POP3_REQ_CLOSE) {
		s->state = ST_CLOSED;
		s->p.list = 0;
		return POP3_REQ_CLOSE;
	}
	switch (r) {
	case POP3_REQ_STLS:
	case POP3_REQ_AUTH:
	case POP3_REQ_OPEN:
	case POP3_REQ_RETR:
	case POP3_REQ_UPDATE:
		s->p.req = (uint8_t)r;
		s->state = ST_WAIT;
		return (enum pop3_req)r;
	case STALL:
		return POP3_REQ_NONE;
	default:
		return (enum pop3_req)r;
	}
}

/* The core broke the protocol between us (fed during a request, completed
 * the wrong one): close rather than guess. */
static enum pop3_req internal_error(struct pop3_session *s, struct obuf *out)
{
	put_line(out, replies[R_INTERNAL]);
	s->state = ST_CLOSED;
	s->p.list = 0;
	return POP3_REQ_CLOSE;
}

static bool room(const struct obuf *out) { return obuf_room(out) >= POP3_REPLY_ROOM; }

/* RFC 2595 2 and SPEC 7: no credentials in the clear unless allowed. */
static bool creds_ok(const struct pop3_session *s)
{
	return s->tls || s->pol->allow_plaintext_auth;
}

static void wipe_password(struct pop3_session *s)
{
	explicit_bzero(s->line, sizeof s->line);
	s->p.pass_len = 0;
}

/* ------------------------------------------------------------------ */
/* small parsers */

static bool word_is(const char *p, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(p, w, n) == 0;
}

/* 1*DIGIT, saturating at max. */
static bool parse_num(const char *p, size_t n, uint64_t max, uint64_t *v)
{
	if (n == 0)
		return false;
	uint64_t x = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = (unsigned)(p[i] - '0');
		x = x > (max - d) / 10 ? max : x * 10 + d;
	}
	*v = x;
	return true;
}

/* A message number (RFC 1939 5: 1-based, never a deleted one): the
 * 0-based index, or -1. */
static long msg_index(const struct pop3_session *s, const char *p, size_t n)
{
	uint64_t v;
	if (!parse_num(p, n, UINT32_MAX, &v) || v == 0 || v > s->nmsgs || s->msgs[v - 1].deleted)
		return -1;
	return (long)(v - 1);
}

static void drop_stats(const struct pop3_session *s, unsigned *count, uint64_t *octets)
{
	*count = 0;
	*octets = 0;
	for (unsigned i = 0; i < s->nmsgs; i++) {
		if (!s->msgs[i].deleted) {
			++*count;
			*octets += s->msgs[i].size;
		}
	}
}

/* RFC 1939 5: "+OK maildrop has 2 messages (320 octets)". */
static void maildrop_ok(const struct pop3_session *s, struct obuf *out)
{
	unsigned count;
	uint64_t octets;
	drop_stats(s, &count, &octets);
	obuf_printf(out, "+OK maildrop has %u message%s (%llu octets)\r\n", count,
		    count == 1 ? "" : "s", (unsigned long long)octets);
}

/* ------------------------------------------------------------------ */
/* commands */

struct args {
	const char *rest; /* everything after "VERB ", untrimmed (PASS) */
	size_t restn;
	unsigned argc;    /* tokens; 3 means "more than 2" */
	const char *v[2];
	size_t n[2];
};

static int cmd_user(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	const struct pop3_policy *pol = s->pol;
	s->p.user_domain = pol->ndomains ? sasl_identity_domain(a->v[0], a->n[0],
								&pol->domains[0].name,
								sizeof pol->domains[0], pol->ndomains)
					 : -1;
	s->p.have_user = true;
	return reply(s, out, R_USER_OK);
}

static int cmd_pass(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	if (a->restn == 0)
		return reply(s, out, R_SYNTAX);
	if (!s->p.have_user)
		return reply(s, out, R_NO_USER);
	/* RFC 1939 7: a failed PASS leaves AUTHORIZATION to start over with
	   USER; a good one ends it. Either way this USER is used up. */
	s->p.have_user = false;
	s->p.pend_domain = s->p.user_domain;
	/* The line may sit in s->line already, hence memmove. */
	memmove(s->line, a->rest, a->restn);
	s->line[a->restn] = '\0';
	s->p.pass_len = (uint16_t)a->restn;
	return POP3_REQ_AUTH;
}

/* Decodes a PLAIN response (RFC 4616 2) and asks the core. */
static int auth_check(struct pop3_session *s, struct obuf *out, const char *b64, size_t n)
{
	const struct pop3_policy *pol = s->pol;
	unsigned char msg[POP3_LINE_MAX];
	struct sasl_plain pl;
	ssize_t k = b64_decode(b64, n, msg, sizeof msg - 1);
	s->state = ST_AUTHZ;
	if (k < 0 || sasl_plain_parse(msg, (size_t)k, &pl) < 0) {
		explicit_bzero(msg, sizeof msg);
		wipe_password(s);
		return reply(s, out, R_AUTH_BAD);
	}
	int d = pol->ndomains ? sasl_identity_domain(pl.authcid, pl.authcid_len,
						      &pol->domains[0].name,
						      sizeof pol->domains[0], pol->ndomains)
			      : -1;
	/* An authzid other than the authcid asks to act as someone else,
	   which a single-user server never grants; it fails like a wrong
	   password, so the answer tells nothing of which identities exist. */
	if (pl.authzid_len && (pl.authzid_len != pl.authcid_len ||
			       strncasecmp(pl.authzid, pl.authcid, pl.authcid_len) != 0))
		d = -1;
	s->p.have_user = false;
	s->p.pend_domain = d;
	memcpy(s->line, pl.passwd, pl.passwd_len);
	s->line[pl.passwd_len] = '\0';
	s->p.pass_len = (uint16_t)pl.passwd_len;
	explicit_bzero(msg, sizeof msg);
	return POP3_REQ_AUTH;
}

/* AUTH [mechanism [initial-response]] (RFC 5034 4). Without argument, the
 * list of mechanisms (RFC 1734's form, which clients still probe with). */
static int cmd_auth(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	if (a->argc == 0) {
		put_line(out, replies[R_AUTH_LIST]);
		if (creds_ok(s))
			put_line(out, "PLAIN");
		put_line(out, ".");
		return POP3_REQ_NONE;
	}
	if (!creds_ok(s))
		return reply(s, out, R_NEED_TLS);
	if (!word_is(a->v[0], a->n[0], "PLAIN"))
		return reply(s, out, R_AUTH_MECH);
	if (a->argc == 2)
		return auth_check(s, out, a->v[1], a->n[1]);
	put_line(out, replies[R_AUTH_CONT]);
	s->state = ST_AUTH_CONT;
	return POP3_REQ_NONE;
}

/* The line that answers "+ " (RFC 5034 4): "*" cancels. */
static int auth_response(struct pop3_session *s, struct obuf *out, const char *line, size_t n)
{
	s->state = ST_AUTHZ;
	if (n == 1 && line[0] == '*')
		return reply(s, out, R_AUTH_CANCEL);
	return auth_check(s, out, line, n);
}

/* RFC 2595 4: only in AUTHORIZATION, only before TLS. */
static int cmd_stls(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	if (s->tls)
		return reply(s, out, R_TLS_ACTIVE);
	if (!s->tls_available)
		return reply(s, out, R_TLS_UNAVAIL);
	put_line(out, replies[R_STLS_GO]);
	return POP3_REQ_STLS;
}

/* RFC 2449 5; the order of SPEC 7. */
static int cmd_capa(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	bool authz = s->state != ST_TRANS;
	put_line(out, replies[R_CAPA]);
	put_line(out, "TOP");
	put_line(out, "UIDL");
	if (authz && creds_ok(s)) {
		put_line(out, "USER");
		put_line(out, "SASL PLAIN");
	}
	if (authz && s->tls_available && !s->tls)
		put_line(out, "STLS");
	put_line(out, "RESP-CODES");
	put_line(out, "AUTH-RESP-CODE");
	put_line(out, "PIPELINING");
	put_line(out, "EXPIRE NEVER");
	put_line(out, "IMPLEMENTATION mailpopbox");
	put_line(out, ".");
	return POP3_REQ_NONE;
}

static int cmd_quit(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	if (s->state == ST_TRANS)
		return POP3_REQ_UPDATE; /* RFC 1939 6 */
	obuf_printf(out, "+OK %s POP3 server signing off\r\n", s->pol->hostname);
	return POP3_REQ_CLOSE;
}

static int cmd_stat(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	unsigned count;
	uint64_t octets;
	drop_stats(s, &count, &octets);
	obuf_printf(out, "+OK %u %llu\r\n", count, (unsigned long long)octets);
	return POP3_REQ_NONE;
}

static bool listing(struct pop3_session *s, struct obuf *out);

/* LIST and UIDL: one message, or all as a listing that may continue over
 * several calls (Dovecot's continuation: write while there is room). */
static int cmd_listing(struct pop3_session *s, struct obuf *out, const struct args *a, bool uidl)
{
	if (a->argc == 1) {
		long i = msg_index(s, a->v[0], a->n[0]);
		if (i < 0)
			return reply(s, out, R_NO_MSG);
		const struct pop3_msg *m = &s->msgs[i];
		if (uidl)
			obuf_printf(out, "+OK %ld %.*s\r\n", i + 1,
				    (int)strnlen(m->uid, POP3_UID_MAX), m->uid);
		else
			obuf_printf(out, "+OK %ld %llu\r\n", i + 1, (unsigned long long)m->size);
		return POP3_REQ_NONE;
	}
	if (uidl) {
		put_line(out, replies[R_OK]);
	} else {
		unsigned count;
		uint64_t octets;
		drop_stats(s, &count, &octets);
		obuf_printf(out, "+OK %u message%s (%llu octets)\r\n", count, count == 1 ? "" : "s",
			    (unsigned long long)octets);
	}
	s->p.list = uidl ? 'U' : 'L';
	s->p.list_next = 0;
	listing(s, out);
	return POP3_REQ_NONE;
}

static int cmd_list(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	return cmd_listing(s, out, a, false);
}

static int cmd_uidl(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	return cmd_listing(s, out, a, true);
}

static int cmd_retr(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	long i = msg_index(s, a->v[0], a->n[0]);
	if (i < 0)
		return reply(s, out, R_NO_MSG);
	s->p.retr_index = (uint32_t)i;
	s->p.retr_lines = -1;
	s->p.retr_top = false;
	s->p.retr_ok = false;
	return POP3_REQ_RETR;
}

/* TOP msg n (RFC 1939 7): the headers, the blank line, n body lines. */
static int cmd_top(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	long i = msg_index(s, a->v[0], a->n[0]);
	if (i < 0)
		return reply(s, out, R_NO_MSG);
	uint64_t lines;
	if (!parse_num(a->v[1], a->n[1], LONG_MAX, &lines))
		return reply(s, out, R_SYNTAX);
	s->p.retr_index = (uint32_t)i;
	s->p.retr_lines = (int64_t)lines;
	s->p.retr_top = true;
	s->p.retr_ok = false;
	return POP3_REQ_RETR;
}

static int cmd_dele(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	long i = msg_index(s, a->v[0], a->n[0]);
	if (i < 0)
		return reply(s, out, R_NO_MSG);
	s->msgs[i].deleted = true;
	obuf_printf(out, "+OK message %ld deleted\r\n", i + 1);
	return POP3_REQ_NONE;
}

static int cmd_noop(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	return reply(s, out, R_OK);
}

static int cmd_rset(struct pop3_session *s, struct obuf *out, const struct args *a)
{
	for (unsigned i = 0; i < s->nmsgs; i++)
		s->msgs[i].deleted = false;
	maildrop_ok(s, out);
	return POP3_REQ_NONE;
}

enum { IN_AUTHZ = 1, IN_TRANS = 2, C_CRED = 4 };

/* The command table (after OpenSMTPD's): the state a verb is valid in, how
 * many arguments it takes, and whether it carries credentials; what is
 * particular to a verb is in its function. PASS has amax 0xff: it reads
 * the raw rest of the line. */
static const struct pop3_cmd {
	const char *verb;
	uint8_t flags;
	uint8_t amin, amax;
	int (*fn)(struct pop3_session *, struct obuf *, const struct args *);
} cmds[] = {
	{"USER", IN_AUTHZ | C_CRED, 1, 1, cmd_user},
	{"PASS", IN_AUTHZ | C_CRED, 0, 0xff, cmd_pass},
	{"AUTH", IN_AUTHZ, 0, 2, cmd_auth},
	{"STLS", IN_AUTHZ, 0, 0, cmd_stls},
	{"CAPA", IN_AUTHZ | IN_TRANS, 0, 0, cmd_capa},
	{"QUIT", IN_AUTHZ | IN_TRANS, 0, 0, cmd_quit},
	{"STAT", IN_TRANS, 0, 0, cmd_stat},
	{"LIST", IN_TRANS, 0, 1, cmd_list},
	{"UIDL", IN_TRANS, 0, 1, cmd_uidl},
	{"RETR", IN_TRANS, 1, 1, cmd_retr},
	{"TOP", IN_TRANS, 2, 2, cmd_top},
	{"DELE", IN_TRANS, 1, 1, cmd_dele},
	{"NOOP", IN_TRANS, 0, 0, cmd_noop},
	{"RSET", IN_TRANS, 0, 0, cmd_rset},
};

static void split_args(const char *rest, size_t n, struct args *a)
{
	a->rest = rest;
	a->restn = n;
	a->argc = 0;
	while (n && (rest[n - 1] == ' ' || rest[n - 1] == '\t'))
		n--;
	size_t i = 0;
	while (a->argc < 3) {
		while (i < n && rest[i] == ' ')
			i++;
		if (i == n)
			break;
		size_t b = i;
		while (i < n && rest[i] != ' ')
			i++;
		if (a->argc < 2) {
			a->v[a->argc] = rest + b;
			a->n[a->argc] = i - b;
		}
		a->argc++;
	}
}

/* One command line, its line end removed. */
static int command(struct pop3_session *s, struct obuf *out, const char *line, size_t n)
{
	size_t v = 0;
	while (v < n && line[v] != ' ')
		v++;
	/* "STAT\t" and the like: a verb followed by blanks alone. */
	size_t vn = v;
	while (vn && line[vn - 1] == '\t')
		vn--;
	struct args a;
	split_args(line + (v < n ? v + 1 : n), v < n ? n - v - 1 : 0, &a);
	for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
		const struct pop3_cmd *c = &cmds[i];
		if (!word_is(line, vn, c->verb))
			continue;
		if (s->state == ST_TRANS && !(c->flags & IN_TRANS))
			return reply(s, out, R_AUTHED);
		if (s->state != ST_TRANS && !(c->flags & IN_AUTHZ))
			return reply(s, out, R_NOT_AUTHED);
		if ((c->flags & C_CRED) && !creds_ok(s))
			return reply(s, out, R_NEED_TLS);
		if (c->amax != 0xff && (a.argc < c->amin || a.argc > c->amax))
			return reply(s, out, R_SYNTAX);
		return c->fn(s, out, &a);
	}
	return reply(s, out, R_UNKNOWN);
}

/* ------------------------------------------------------------------ */
/* listings */

/* Writes listing lines while they fit; true once the final "." is out. */
static bool listing(struct pop3_session *s, struct obuf *out)
{
	while (s->p.list_next < s->nmsgs) {
		const struct pop3_msg *m = &s->msgs[s->p.list_next];
		if (!m->deleted) {
			if (obuf_room(out) < LIST_LINE_ROOM)
				return false;
			if (s->p.list == 'U')
				obuf_printf(out, "%u %.*s\r\n", s->p.list_next + 1,
					    (int)strnlen(m->uid, POP3_UID_MAX), m->uid);
			else
				obuf_printf(out, "%u %llu\r\n", s->p.list_next + 1,
					    (unsigned long long)m->size);
		}
		s->p.list_next++;
	}
	if (obuf_room(out) < 3)
		return false;
	put_line(out, ".");
	s->p.list = 0;
	return true;
}

/* ------------------------------------------------------------------ */
/* input framing */

/* A whole line, LF included. */
static int line_done(struct pop3_session *s, struct obuf *out, const char *line, size_t n)
{
	n--; /* LF */
	if (n && line[n - 1] == '\r')
		n--;
	if (memchr(line, '\0', n)) {
		if (s->state == ST_AUTH_CONT) {
			s->state = ST_AUTHZ;
			wipe_password(s);
		}
		return reply(s, out, R_NUL);
	}
	if (s->state == ST_AUTH_CONT)
		return auth_response(s, out, line, n);
	return command(s, out, line, n);
}

static int feed_line(struct pop3_session *s, const char *in, size_t n, size_t *i,
		     struct obuf *out)
{
	const char *p = in + *i;
	size_t avail = n - *i;
	const char *lf = memchr(p, '\n', avail);
	size_t take = lf ? (size_t)(lf - p) + 1 : avail;

	if (s->p.discard_line) {
		*i += take;
		s->p.discard_line = !lf;
		return POP3_REQ_NONE;
	}
	size_t total = s->linelen + take;
	/* Without its LF, a line that already has POP3_LINE_MAX octets is
	   longer (RFC 2449 4: 255 octets with the CRLF). */
	if (lf ? total > POP3_LINE_MAX : total >= POP3_LINE_MAX) {
		if (!room(out))
			return STALL;
		*i += take;
		s->linelen = 0;
		s->p.discard_line = !lf;
		if (s->state == ST_AUTH_CONT) {
			s->state = ST_AUTHZ;
			wipe_password(s);
		}
		return reply(s, out, R_TOO_LONG);
	}
	if (!lf) {
		memcpy(s->line + s->linelen, p, take);
		s->linelen = (uint16_t)total;
		*i = n;
		return POP3_REQ_NONE;
	}
	if (!room(out))
		return STALL;
	*i += take;
	if (s->linelen == 0)
		return line_done(s, out, p, take);
	memcpy(s->line + s->linelen, p, take);
	s->linelen = 0;
	return line_done(s, out, s->line, total);
}

/* ------------------------------------------------------------------ */
/* the interface */

void pop3_start(struct pop3_session *s, struct obuf *out)
{
	s->state = ST_AUTHZ;
	s->auth_domain = -1;
	s->p.user_domain = -1;
	s->p.pend_domain = -1;
	obuf_printf(out, "+OK POP3 (mailpopbox) server %s\r\n", s->pol->hostname);
}

enum pop3_req pop3_feed(struct pop3_session *s, const char *in, size_t n, size_t *used,
			struct obuf *out)
{
	size_t i = 0;
	int r = POP3_REQ_NONE;

	*used = 0;
	if (s->state == ST_CLOSED)
		return POP3_REQ_CLOSE;
	if (s->state == ST_WAIT)
		return internal_error(s, out);
	/* The listing answers a command before the ones pipelined after it. */
	if (s->p.list && !listing(s, out))
		return POP3_REQ_NONE;
	while (i < n && r == POP3_REQ_NONE && !s->p.closing && !s->p.list)
		r = feed_line(s, in, n, &i, out);
	*used = i;
	return leave(s, r);
}

enum pop3_req pop3_complete(struct pop3_session *s, enum pop3_req req, int result,
			    struct obuf *out)
{
	int r = POP3_REQ_NONE;

	if (s->state != ST_WAIT || s->p.req != req)
		return internal_error(s, out);
	s->p.req = POP3_REQ_NONE;
	switch (req) {
	case POP3_REQ_STLS:
		if (result < 0) /* half a handshake: nothing can be said */
			return leave(s, POP3_REQ_CLOSE);
		/* RFC 2595 4: AUTHORIZATION again, no new greeting; what was
		   said before TLS (a USER) is forgotten. */
		s->tls = true;
		s->state = ST_AUTHZ;
		s->p.have_user = false;
		s->p.user_domain = -1;
		s->linelen = 0;
		s->p.discard_line = false;
		break;
	case POP3_REQ_AUTH: {
		int d = s->p.pend_domain;
		wipe_password(s);
		s->state = ST_AUTHZ;
		if (result == 0 && d >= 0) {
			r = POP3_REQ_OPEN; /* pend_domain stays for pop3_auth_domain() */
		} else {
			s->p.pend_domain = -1;
			s->auth_failures++;
			reply(s, out, R_AUTH_FAILED);
		}
		break;
	}
	case POP3_REQ_OPEN:
		if (result == 0) {
			s->auth_domain = s->p.pend_domain;
			s->state = ST_TRANS;
			maildrop_ok(s, out);
		} else {
			s->msgs = NULL;
			s->nmsgs = 0;
			s->state = ST_AUTHZ;
			reply(s, out, result == -EAGAIN ? R_IN_USE : R_OPEN_FAIL);
		}
		s->p.pend_domain = -1;
		break;
	case POP3_REQ_RETR:
		s->state = ST_TRANS;
		if (result < 0) {
			/* After the "+OK" and part of the text nothing can be
			   said (RFC 1939 has no abort): the core closes. */
			if (s->p.retr_ok)
				return leave(s, POP3_REQ_CLOSE);
			reply(s, out, result == -ENOENT ? R_RETR_GONE : R_RETR_FAIL);
		}
		break;
	case POP3_REQ_UPDATE:
		/* RFC 1939 6: +OK only once the marked messages are gone. */
		if (result == 0)
			obuf_printf(out, "+OK %s POP3 server signing off\r\n", s->pol->hostname);
		else
			put_line(out, replies[R_UPDATE_FAIL]);
		return leave(s, POP3_REQ_CLOSE);
	default:
		return internal_error(s, out);
	}
	return leave(s, r);
}

void pop3_set_maildrop(struct pop3_session *s, struct pop3_msg *msgs, unsigned n)
{
	s->msgs = msgs;
	s->nmsgs = n;
}

bool pop3_output_pending(const struct pop3_session *s)
{
	return s->p.list != 0 && s->state != ST_CLOSED;
}

int pop3_auth_domain(const struct pop3_session *s)
{
	if (s->state == ST_WAIT && (s->p.req == POP3_REQ_AUTH || s->p.req == POP3_REQ_OPEN))
		return s->p.pend_domain;
	return s->auth_domain;
}

const char *pop3_auth_password(const struct pop3_session *s, size_t *len)
{
	if (s->state != ST_WAIT || s->p.req != POP3_REQ_AUTH) {
		*len = 0;
		return "";
	}
	*len = s->p.pass_len;
	return s->line;
}

unsigned pop3_retr_index(const struct pop3_session *s) { return s->p.retr_index; }

long pop3_retr_lines(const struct pop3_session *s) { return (long)s->p.retr_lines; }

void pop3_retr_ok(struct pop3_session *s, struct obuf *out)
{
	if (s->state != ST_WAIT || s->p.req != POP3_REQ_RETR || s->p.retr_ok)
		return;
	s->p.retr_ok = true;
	if (s->p.retr_top)
		put_line(out, replies[R_TOP_OK]);
	else
		obuf_printf(out, "+OK %llu octets\r\n",
			    (unsigned long long)s->msgs[s->p.retr_index].size);
}

void pop3_timeout(struct pop3_session *s, struct obuf *out)
{
	put_line(out, replies[R_TIMEOUT]);
	s->state = ST_CLOSED;
	s->p.list = 0;
}

/* ------------------------------------------------------------------ */
/* pop3_stuff: RFC 1939 3, a line of the message that starts with "." goes
 * out as ".."; the response ends with CRLF "." CRLF. Stored files are CRLF
 * (SPEC 6); octets are passed as they are, a bare LF ending a line too. */

/* st->state: the position in the line (low bits) and the header/body
 * flag. */
enum {
	SP_BOL,    /* at the start of a line */
	SP_BOL_CR, /* the line so far is one CR: a blank line if LF follows */
	SP_MID,    /* inside a line */
	SP_MID_CR, /* inside a line, after a CR */
	SP_POS = 3,
	SP_BODY = 4, /* past the blank line that ends the header block */
};

void pop3_stuff_init(struct pop3_stuffer *st, long lines)
{
	st->lines = lines;
	st->state = SP_BOL;
	st->done = false;
}

/* An LF went out; blank: the line held nothing else (but its CR). */
static void stuff_line_end(struct pop3_stuffer *st, bool blank)
{
	if (!(st->state & SP_BODY)) {
		if (blank) {
			st->state = SP_BODY | SP_BOL;
			if (st->lines == 0)
				st->done = true;
			return;
		}
	} else if (st->lines > 0 && --st->lines == 0) {
		st->done = true;
	}
	st->state = (uint8_t)((st->state & SP_BODY) | SP_BOL);
}

static void stuff_pos(struct pop3_stuffer *st, unsigned pos)
{
	st->state = (uint8_t)((st->state & SP_BODY) | pos);
}

size_t pop3_stuff(struct pop3_stuffer *st, const char *in, size_t n, struct obuf *out)
{
	size_t i = 0;
	while (i < n) {
		if (st->done)
			return n; /* TOP: the rest of the file is not sent */
		size_t rm = obuf_room(out);
		if (rm == 0)
			break;
		char c = in[i];
		switch (st->state & SP_POS) {
		case SP_BOL:
			if (c == '.') {
				if (rm < 2)
					return i;
				obuf_put(out, "..", 2);
				i++;
				stuff_pos(st, SP_MID);
			} else if (c == '\n') {
				obuf_put(out, "\n", 1);
				i++;
				stuff_line_end(st, true);
			} else if (c == '\r') {
				obuf_put(out, "\r", 1);
				i++;
				stuff_pos(st, SP_BOL_CR);
			} else {
				stuff_pos(st, SP_MID);
			}
			break;
		case SP_BOL_CR:
			if (c == '\n') {
				obuf_put(out, "\n", 1);
				i++;
				stuff_line_end(st, true);
			} else {
				stuff_pos(st, SP_MID);
			}
			break;
		default: {
			/* The bulk of the text: a span up to the end of the
			   line, or of what fits. */
			size_t k = n - i < rm ? n - i : rm;
			const char *lf = memchr(in + i, '\n', k);
			size_t len = lf ? (size_t)(lf - (in + i)) + 1 : k;
			obuf_put(out, in + i, len);
			i += len;
			if (lf)
				stuff_line_end(st, false);
			else
				stuff_pos(st, in[i - 1] == '\r' ? SP_MID_CR : SP_MID);
			break;
		}
		}
	}
	return st->done ? n : i;
}

void pop3_stuff_end(struct pop3_stuffer *st, struct obuf *out)
{
	if (!st->done) {
		switch (st->state & SP_POS) {
		case SP_MID: obuf_put(out, "\r\n", 2); break;
		case SP_MID_CR:
		case SP_BOL_CR: obuf_put(out, "\n", 1); break;
		default: break;
		}
	}
	obuf_put(out, ".\r\n", 3);
}

/* In place, for RETR (no line limit): the n octets at buf were read straight
 * into the output buffer; each line-initial "." gets its second "." by
 * shifting the text right, from the back, so nothing is copied for a message
 * without such lines (the common case). The caller leaves room: at most n/2 + 1
 * octets are added (lines "." LF are the densest case). */
size_t pop3_stuff_inplace(struct pop3_stuffer *st, char *buf, size_t n)
{
	if (n == 0)
		return 0;
	bool bol = (st->state & SP_POS) == SP_BOL;
	size_t k = 0;
	if (bol && buf[0] == '.')
		k++;
	for (const char *p = buf, *end = buf + n; (p = memchr(p, '\n', (size_t)(end - p)));) {
		if (++p == end)
			break;
		k += *p == '.';
	}
	size_t total = n + k;
	for (size_t i = n; k > 0 && i-- > 0;) {
		buf[i + k] = buf[i];
		if (buf[i] == '.' && (i == 0 ? bol : buf[i - 1] == '\n'))
			buf[i + --k] = '.';
	}
	/* Where the text stopped, for pop3_stuff_end's final CRLF. */
	char last = buf[total - 1];
	unsigned pos = last == '\n' ? SP_BOL : last == '\r' ? SP_MID_CR : SP_MID;
	st->state = (uint8_t)((st->state & SP_BODY) | pos);
	return total;
}
