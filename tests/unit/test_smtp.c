/* Unit tests for proto/smtp.c: the dialogue as transcripts, byte for byte.
 *
 * A transcript is a list of "C: " lines (sent by the client, CRLF added) and
 * "S: " lines (the exact replies expected, CRLF added). Consecutive C: lines
 * go out in one write, pipelined; the S: lines after them must be exactly
 * what the server wrote in answer. A mock core answers the machine's
 * requests (spool open/commit, password check, TLS) as each test sets it. */
#include "proto/smtp.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/sasl.h"
#include "tests/unit/transcript.h"

#define HOST "mx.example.com"

struct msg {
	char from[300];
	unsigned nrcpt;
	char rcpt[8][300];
	int domain[8];
	uint8_t notify[8];
	char orcpt[8][300];
	char *body;
	size_t len;
	bool bdat;
};

struct harness {
	struct smtp_policy pol;
	struct smtp_domain dom[2];
	struct smtp_session s;
	struct obuf out;
	char outbuf[8192];
	struct smtp_io io;
	/* what the server wrote, not yet checked */
	char tr[1 << 16];
	size_t trlen;
	/* the message being spooled */
	char *body;
	size_t bodylen, bodycap;
	unsigned body_calls;
	bool spool_open;
	/* mock core settings */
	int open_result, commit_result, tls_result;
	unsigned hold; /* 1 << request: leave it to the test */
	/* what the core saw */
	enum smtp_req pending;
	unsigned opens, commits, aborts, starttls, auths;
	int auth_domain_seen;
	char auth_pw_seen[256];
	bool closed, stalled;
	struct msg msgs[8];
	unsigned nmsgs;
	size_t discarded; /* input the core dropped after STARTTLS */
};

static struct harness H;
static const char *const blocked0[] = {"noreply@example.com"};

static void flush(struct harness *h);

static void body_cb(void *ctx, const char *p, size_t n)
{
	struct harness *h = ctx;
	cr_assert(h->spool_open, "body bytes while no spool is open");
	cr_assert(n > 0, "empty body span");
	if (h->bodylen + n > h->bodycap) {
		h->bodycap = (h->bodylen + n) * 2;
		h->body = realloc(h->body, h->bodycap);
	}
	memcpy(h->body + h->bodylen, p, n);
	h->bodylen += n;
	h->body_calls++;
}

static void setup_with(size_t outcap)
{
	struct harness *h = &H;
	memset(h, 0, sizeof *h);
	h->dom[0] = (struct smtp_domain){"example.com", blocked0, 1};
	h->dom[1] = (struct smtp_domain){"example.org", NULL, 0};
	h->pol = (struct smtp_policy){
		.hostname = HOST,
		.max_message_size = 1000,
		.max_recipients = 3,
		.domains = h->dom,
		.ndomains = 2,
	};
	h->out = (struct obuf){h->outbuf, 0, outcap};
	h->io = (struct smtp_io){&h->out, body_cb, h};
	h->s.pol = &h->pol;
	strcpy(h->s.peer, "192.0.2.1");
	h->s.tls_available = true;
	h->auth_domain_seen = -2;
	smtp_start(&h->s, &h->io);
	flush(h);
}

static void setup(void) { setup_with(sizeof H.outbuf); }

static void teardown(void)
{
	smtp_end(&H.s);
	free(H.body);
	for (unsigned i = 0; i < H.nmsgs; i++)
		free(H.msgs[i].body);
}

TestSuite(smtp, .init = setup, .fini = teardown);

static void flush(struct harness *h)
{
	cr_assert(h->trlen + h->out.len <= sizeof h->tr);
	memcpy(h->tr + h->trlen, h->out.p, h->out.len);
	h->trlen += h->out.len;
	h->out.len = 0;
}

static void snapshot(struct harness *h)
{
	cr_assert(h->nmsgs < 8);
	struct msg *m = &h->msgs[h->nmsgs++];
	snprintf(m->from, sizeof m->from, "%s", smtp_tx_from(&h->s));
	m->nrcpt = smtp_tx_nrcpt(&h->s);
	for (unsigned i = 0; i < m->nrcpt && i < 8; i++) {
		const struct smtp_rcpt *r = smtp_tx_rcpt(&h->s, i);
		snprintf(m->rcpt[i], sizeof m->rcpt[i], "%s", r->addr);
		snprintf(m->orcpt[i], sizeof m->orcpt[i], "%s", r->orcpt ? r->orcpt : "");
		m->domain[i] = r->domain;
		m->notify[i] = r->notify;
	}
	m->body = h->body;
	m->len = h->bodylen;
	h->body = NULL;
	h->bodylen = h->bodycap = 0;
}

static enum smtp_req complete(struct harness *h, enum smtp_req req, int result, const char *arg)
{
	if (req == SMTP_REQ_SPOOL_OPEN)
		h->spool_open = result == 0;
	if (req == SMTP_REQ_SPOOL_COMMIT) {
		h->spool_open = false;
		if (result == 0)
			snapshot(h);
		else
			h->bodylen = 0;
	}
	h->pending = SMTP_REQ_NONE;
	enum smtp_req r = smtp_complete(&h->s, req, result, arg, &h->io);
	flush(h);
	return r;
}

/* The mock core: answers requests until one is held or none is left. */
static void handle(struct harness *h, enum smtp_req r)
{
	while (r != SMTP_REQ_NONE) {
		flush(h);
		if (h->hold & (1u << r) && r != SMTP_REQ_CLOSE && r != SMTP_REQ_SPOOL_ABORT) {
			h->pending = r;
			return;
		}
		switch (r) {
		case SMTP_REQ_STARTTLS:
			h->starttls++;
			r = complete(h, r, h->tls_result, NULL);
			break;
		case SMTP_REQ_AUTH: {
			size_t len;
			const char *pw = smtp_auth_password(&h->s, &len);
			h->auths++;
			h->auth_domain_seen = smtp_auth_domain(&h->s);
			cr_assert_eq(strlen(pw), len, "password not NUL-terminated");
			snprintf(h->auth_pw_seen, sizeof h->auth_pw_seen, "%s", pw);
			int ok = h->auth_domain_seen >= 0 && strcmp(pw, "secret") == 0;
			r = complete(h, r, ok ? 0 : -1, NULL);
			break;
		}
		case SMTP_REQ_SPOOL_OPEN:
			h->opens++;
			cr_assert(smtp_in_transaction(&h->s));
			r = complete(h, r, h->open_result, NULL);
			break;
		case SMTP_REQ_SPOOL_COMMIT:
			h->commits++;
			r = complete(h, r, h->commit_result, "QID1");
			break;
		case SMTP_REQ_SPOOL_ABORT:
			h->aborts++;
			cr_assert(h->spool_open, "abort without an open spool");
			h->spool_open = false;
			h->bodylen = 0;
			/* the transaction is still readable for the log line */
			cr_assert(!smtp_in_transaction(&h->s));
			r = SMTP_REQ_NONE;
			break;
		case SMTP_REQ_CLOSE:
			h->closed = true;
			h->spool_open = false;
			r = SMTP_REQ_NONE;
			break;
		default:
			cr_assert_fail("unknown request %d", r);
		}
	}
}

/* Feeds everything like the core would: again after each request and
 * after each flush, until all is used (or dropped after STARTTLS). */
static void drive(struct harness *h, const char *in, size_t n)
{
	size_t off = 0;
	while (off < n && !h->closed && h->pending == SMTP_REQ_NONE) {
		size_t used = 12345;
		enum smtp_req r = smtp_feed(&h->s, in + off, n - off, &used, &h->io);
		cr_assert_leq(used, n - off);
		cr_assert_leq(h->out.len, h->out.cap);
		off += used;
		if (r == SMTP_REQ_NONE && off < n) {
			/* only a full obuf may stop the machine */
			cr_assert_lt(obuf_room(&h->out), SMTP_REPLY_ROOM, "stopped with room left");
			h->stalled = true;
		}
		if (r == SMTP_REQ_STARTTLS) {
			h->discarded += n - off; /* RFC 3207 4.2 */
			off = n;
		}
		handle(h, r);
		flush(h);
	}
	cr_assert(off == n || h->closed || h->pending != SMTP_REQ_NONE,
		  "input left over: %zu of %zu", n - off, n);
}

static void drive_str(struct harness *h, const char *in) { drive(h, in, strlen(in)); }

/* What the machine wrote since the last check, exactly (transcript.h). */
static void expect_out(struct harness *h, const char *want, size_t n)
{
	tr_check("server", h->tr, h->trlen, want, n);
	h->trlen = 0;
}

static void expect_str(struct harness *h, const char *want) { expect_out(h, want, strlen(want)); }

/* Runs a transcript (NULL-terminated lines). */
static void feed_cb(void *h, const char *p, size_t n) { drive(h, p, n); }
static void expect_cb(void *h, const char *p, size_t n) { expect_out(h, p, n); }

static void dialog_(struct harness *h, const char *const *lines)
{
	tr_script(lines, "C: ", "S: ", feed_cb, expect_cb, h);
}

#define DIALOG(...) dialog_(&H, (const char *const[]){__VA_ARGS__, NULL})

#define GREETING "220 " HOST " ESMTP mailpopbox\r\n"

/* After the greeting: EHLO done, transcript empty. */
static void ehlo(void)
{
	expect_str(&H, GREETING);
	drive_str(&H, "EHLO client.example\r\n");
	H.trlen = 0;
}

/* TLS and AUTH as mailbox@example.com. */
static void login(void)
{
	H.s.tls = true;
	ehlo();
	/* "\0mailbox@example.com\0secret" */
	DIALOG("C: AUTH PLAIN AG1haWxib3hAZXhhbXBsZS5jb20Ac2VjcmV0",
	       "S: 235 2.7.0 Authentication successful");
}

static const char *b64(const char *p, size_t n)
{
	static char buf[4096];
	b64_encode((const unsigned char *)p, n, buf);
	return buf;
}

/* ------------------------------------------------------------------ */
/* greeting, EHLO, simple commands */

Test(smtp, greeting_and_ehlo)
{
	expect_str(&H, GREETING);
	DIALOG("C: EHLO client.example",
	       "S: 250-mx.example.com",
	       "S: 250-PIPELINING",
	       "S: 250-SIZE 1000",
	       "S: 250-8BITMIME",
	       "S: 250-ENHANCEDSTATUSCODES",
	       "S: 250-SMTPUTF8",
	       "S: 250-CHUNKING",
	       "S: 250-DSN",
	       "S: 250 STARTTLS");
	cr_expect(H.s.esmtp);
	cr_expect_str_eq(H.s.helo, "client.example");
}

Test(smtp, ehlo_without_certificate)
{
	H.s.tls_available = false;
	expect_str(&H, GREETING);
	DIALOG("C: ehlo client.example",
	       "S: 250-mx.example.com",
	       "S: 250-PIPELINING",
	       "S: 250-SIZE 1000",
	       "S: 250-8BITMIME",
	       "S: 250-ENHANCEDSTATUSCODES",
	       "S: 250-SMTPUTF8",
	       "S: 250-CHUNKING",
	       "S: 250 DSN",
	       "C: STARTTLS",
	       "S: 502 5.5.1 STARTTLS not available");
}

Test(smtp, ehlo_over_tls)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: EHLO client.example",
	       "S: 250-mx.example.com",
	       "S: 250-PIPELINING",
	       "S: 250-SIZE 1000",
	       "S: 250-8BITMIME",
	       "S: 250-ENHANCEDSTATUSCODES",
	       "S: 250-SMTPUTF8",
	       "S: 250-CHUNKING",
	       "S: 250-DSN",
	       "S: 250 AUTH PLAIN",
	       "C: STARTTLS",
	       "S: 503 5.5.1 TLS already active");
}

Test(smtp, helo_and_missing_arguments)
{
	expect_str(&H, GREETING);
	DIALOG("C: EHLO",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "C: HELO",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "C: EHLO   ",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "C: HELO client.example",
	       "S: 250 mx.example.com");
	cr_expect(!H.s.esmtp);
	/* no extensions after HELO: parameters are unknown */
	DIALOG("C: MAIL FROM:<a@b.example> SIZE=10",
	       "S: 555 5.5.4 Unsupported parameter",
	       "C: MAIL FROM:<a@b.example>",
	       "S: 250 2.1.0 Ok",
	       "C: RCPT TO:<x@example.com> NOTIFY=NEVER",
	       "S: 555 5.5.4 Unsupported parameter",
	       "C: AUTH PLAIN",
	       "S: 503 5.5.1 Send EHLO first");
}

Test(smtp, helo_text_is_sanitised)
{
	expect_str(&H, GREETING);
	DIALOG("C: EHLO bad(host)\x01name [1.2.3.4] \xc3\xa9", "S: 250-mx.example.com",
	       "S: 250-PIPELINING", "S: 250-SIZE 1000", "S: 250-8BITMIME",
	       "S: 250-ENHANCEDSTATUSCODES", "S: 250-SMTPUTF8", "S: 250-CHUNKING", "S: 250-DSN",
	       "S: 250 STARTTLS");
	cr_expect_str_eq(H.s.helo, "bad?host??name?[1.2.3.4]???");
}

Test(smtp, simple_commands)
{
	expect_str(&H, GREETING);
	DIALOG("C: NOOP",
	       "S: 250 2.0.0 Ok",
	       "C: noop anything",
	       "S: 250 2.0.0 Ok",
	       "C: RSET",
	       "S: 250 2.0.0 Ok",
	       "C: RSET now",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "C: HELP",
	       "S: 214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY "
	       "STARTTLS AUTH",
	       "C: VRFY someone",
	       "S: 252 2.5.0 Cannot VRFY user",
	       "C: VRFY",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "C: EXPN list",
	       "S: 502 5.5.1 EXPN not supported",
	       "C: FOO bar",
	       "S: 500 5.5.1 Command unrecognized",
	       "C: ",
	       "S: 500 5.5.1 Command unrecognized",
	       "C: MAILFROM:<a@b.example>",
	       "S: 500 5.5.1 Command unrecognized",
	       "C: QUIT now",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "C: quit",
	       "S: 221 2.0.0 Bye");
	cr_expect(H.closed);
	cr_expect_eq(H.s.errors, 7);
}

Test(smtp, quit_stops_reading)
{
	expect_str(&H, GREETING);
	DIALOG("C: QUIT", "C: NOOP", "S: 221 2.0.0 Bye");
	cr_expect(H.closed);
	size_t used = 99;
	cr_expect_eq(smtp_feed(&H.s, "NOOP\r\n", 6, &used, &H.io), SMTP_REQ_CLOSE);
	cr_expect_eq(used, 0);
	cr_expect_eq(H.out.len, 0);
}

/* ------------------------------------------------------------------ */
/* line framing */

Test(smtp, line_length_limit)
{
	char line[600];
	expect_str(&H, GREETING);
	/* 510 octets + CRLF = 512: fine (RFC 5321 4.5.3.1.4) */
	memset(line, 'x', sizeof line);
	memcpy(line, "NOOP ", 5);
	memcpy(line + 510, "\r\n", 2);
	drive(&H, line, 512);
	expect_str(&H, "250 2.0.0 Ok\r\n");
	/* 511 + CRLF = 513: refused, and the rest of the line skipped */
	memcpy(line + 510, "x\r\nNOOP\r\n", 9);
	drive(&H, line, 519);
	expect_str(&H, "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	/* the same, arriving in pieces: the reply comes at octet 512 */
	drive(&H, line, 300);
	expect_str(&H, "");
	drive(&H, line + 300, 212);
	expect_str(&H, "500 5.5.2 Line too long\r\n");
	drive(&H, line + 512, 7);
	expect_str(&H, "250 2.0.0 Ok\r\n");
	/* very long: one reply, nothing executed inside */
	for (int i = 0; i < 100; i++)
		drive_str(&H, "QUIT QUIT QUIT QUIT QUIT QUIT QUIT QUIT QUIT QUIT ");
	drive_str(&H, "\r\nNOOP\r\n");
	expect_str(&H, "500 5.5.2 Line too long\r\n250 2.0.0 Ok\r\n");
	cr_expect(!H.closed);
	cr_expect_eq(H.s.errors, 3);
}

Test(smtp, bare_lf_and_nul)
{
	expect_str(&H, GREETING);
	drive_str(&H, "NOOP\nNOOP\r\nRSET\r\r\n");
	expect_str(&H, "500 5.5.2 Bare LF not allowed\r\n250 2.0.0 Ok\r\n"
		       "500 5.5.1 Command unrecognized\r\n");
	drive(&H, "NO\0OP\r\n\n", 8);
	expect_str(&H, "500 5.5.2 NUL not allowed\r\n500 5.5.2 Bare LF not allowed\r\n");
	/* a bare LF does not end a command that goes on after it */
	drive_str(&H, "EHLO a\nMAIL FROM:<x@y.example>\r\n");
	expect_str(&H, "500 5.5.2 Bare LF not allowed\r\n503 5.5.1 Send HELO or EHLO first\r\n");
}

/* ------------------------------------------------------------------ */
/* MAIL */

Test(smtp, mail_sequence)
{
	expect_str(&H, GREETING);
	DIALOG("C: MAIL FROM:<a@b.example>",
	       "S: 503 5.5.1 Send HELO or EHLO first",
	       "C: RCPT TO:<a@example.com>",
	       "S: 503 5.5.1 Send HELO or EHLO first",
	       "C: DATA",
	       "S: 503 5.5.1 Send HELO or EHLO first",
	       "C: EHLO c",
	       "C: MAIL FROM:<a@b.example>",
	       "C: MAIL FROM:<a@b.example>",
	       "C: MAIL",
	       "C: MAIL TO:<a@b.example>",
	       "S: 250-mx.example.com",
	       "S: 250-PIPELINING",
	       "S: 250-SIZE 1000",
	       "S: 250-8BITMIME",
	       "S: 250-ENHANCEDSTATUSCODES",
	       "S: 250-SMTPUTF8",
	       "S: 250-CHUNKING",
	       "S: 250-DSN",
	       "S: 250 STARTTLS",
	       "S: 250 2.1.0 Ok",
	       "S: 503 5.5.1 Nested MAIL command",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "S: 503 5.5.1 Nested MAIL command");
	cr_expect(smtp_in_transaction(&H.s));
	/* EHLO ends the transaction (RFC 5321 4.1.4) */
	drive_str(&H, "EHLO c\r\n");
	H.trlen = 0;
	cr_expect(!smtp_in_transaction(&H.s));
	DIALOG("C: mail from: <>", "S: 250 2.1.0 Ok");
	cr_expect_str_eq(smtp_tx_from(&H.s), "");
}

Test(smtp, mail_addresses)
{
	ehlo();
	static const char *const bad[] = {
		"MAIL FROM:a@b.example",	  "MAIL FROM:<a@b.example",
		"MAIL FROM:<a@b.example>x",	  "MAIL FROM:<@b.example>",
		"MAIL FROM:<a@>",		  "MAIL FROM:<a..b@c.example>",
		"MAIL FROM:<a@-b.example>",	  "MAIL FROM:<a@b_c.example>",
		"MAIL FROM:<postmaster>",	  "MAIL FROM:<a b@c.example>",
		"MAIL FROM:<\"a\x01\"@c.example>", "MAIL FROM:<\xc3\xa9@c.example>",
		"MAIL FROM:<a@[1.2.3.256]>",	  "MAIL FROM:<a@[IPv6:1::2::3]>",
		"MAIL FROM:",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		drive_str(&H, bad[i]);
		drive_str(&H, "\r\n");
		expect_str(&H, "501 5.1.7 Bad sender address syntax\r\n");
	}
	static const char *const good[] = {
		"MAIL FROM:<a@b.example>",
		"MAIL FROM:<\"john doe\\\"x\"@b.example>",
		"MAIL FROM:<@relay.example,@r2.example:a@b.example>",
		"MAIL FROM:<a.b+c@[192.0.2.1]>",
		"MAIL FROM:<a@[IPv6:2001:db8::1]>",
		"MAIL FROM:<a@[x-tag:anything]>",
		"MAIL FROM:<\xc3\xa9t\xc3\xa9@b\xc3\xa9.example> SMTPUTF8",
		"Mail From:<a@b.example>   ",
	};
	static const char *const stored[] = {
		"a@b.example",	       "\"john doe\\\"x\"@b.example",
		"a@b.example",	       "a.b+c@[192.0.2.1]",
		"a@[IPv6:2001:db8::1]", "a@[x-tag:anything]",
		"\xc3\xa9t\xc3\xa9@b\xc3\xa9.example", "a@b.example",
	};
	for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
		drive_str(&H, good[i]);
		drive_str(&H, "\r\n");
		expect_str(&H, "250 2.1.0 Ok\r\n");
		cr_expect_str_eq(smtp_tx_from(&H.s), stored[i]);
		drive_str(&H, "RSET\r\n");
		H.trlen = 0;
	}
}

Test(smtp, mail_parameters)
{
	ehlo();
	DIALOG("C: MAIL FROM:<a@b.example> SIZE=1000 BODY=8bitmime RET=HDRS ENVID=ab+2Bc SMTPUTF8",
	       "S: 250 2.1.0 Ok");
	cr_expect_eq(smtp_tx_body_type(&H.s), SMTP_BODY_8BITMIME);
	cr_expect_eq(smtp_tx_ret(&H.s), SMTP_RET_HDRS);
	cr_expect_str_eq(smtp_tx_envid(&H.s), "ab+c");
	cr_expect(smtp_tx_smtputf8(&H.s));
	DIALOG("C: RSET",
	       "S: 250 2.0.0 Ok",
	       "C: MAIL FROM:<a@b.example>",
	       "S: 250 2.1.0 Ok");
	cr_expect_null(smtp_tx_envid(&H.s));
	cr_expect_eq(smtp_tx_ret(&H.s), SMTP_RET_UNSET);
	cr_expect_eq(smtp_tx_body_type(&H.s), SMTP_BODY_7BIT);
	cr_expect(!smtp_tx_smtputf8(&H.s));
	DIALOG("C: RSET",
	       "C: MAIL FROM:<a@b.example> SIZE=1001",
	       "C: MAIL FROM:<a@b.example> SIZE=99999999999999999999",
	       "C: MAIL FROM:<a@b.example> SIZE=1x",
	       "C: MAIL FROM:<a@b.example> SIZE",
	       "C: MAIL FROM:<a@b.example> BODY=9BIT",
	       "C: MAIL FROM:<a@b.example> SMTPUTF8=yes",
	       "C: MAIL FROM:<a@b.example> RET=ALL",
	       "C: MAIL FROM:<a@b.example> ENVID=a+zz",
	       "C: MAIL FROM:<a@b.example> ENVID=a+0A",
	       "C: MAIL FROM:<a@b.example> FOO=bar",
	       "C: MAIL FROM:<a@b.example> NOTIFY=NEVER",
	       "C: MAIL FROM:<a@b.example> RET=FULL RET=FULL",
	       "C: MAIL FROM:<a@b.example> SIZE=",
	       "C: MAIL FROM:<a@b.example> -X=1",
	       "C: MAIL FROM:<a@b.example> BODY=BINARYMIME",
	       "S: 250 2.0.0 Ok",
	       "S: 552 5.3.4 Message size exceeds fixed limit",
	       "S: 552 5.3.4 Message size exceeds fixed limit",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 555 5.5.4 Unsupported parameter",
	       "S: 555 5.5.4 Unsupported parameter",
	       "S: 501 5.5.4 Duplicate parameter",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "S: 250 2.1.0 Ok");
	cr_expect_eq(smtp_tx_body_type(&H.s), SMTP_BODY_BINARYMIME);
	/* ENVID is at most 100 characters (RFC 3461 4.4) */
	char line[200];
	drive_str(&H, "RSET\r\n");
	snprintf(line, sizeof line, "MAIL FROM:<a@b.example> ENVID=%0100d\r\n", 0);
	drive_str(&H, line);
	snprintf(line, sizeof line, "MAIL FROM:<a@b.example> ENVID=%0101d\r\n", 0);
	drive_str(&H, "RSET\r\n");
	drive_str(&H, line);
	expect_str(&H, "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n250 2.0.0 Ok\r\n"
		       "501 5.5.4 Bad parameter value\r\n");
}

Test(smtp, mail_sender_policy)
{
	ehlo();
	DIALOG("C: MAIL FROM:<me@example.com>",
	       "S: 550 5.7.1 Sender address rejected: authentication required",
	       "C: MAIL FROM:<me@EXAMPLE.ORG>",
	       "S: 550 5.7.1 Sender address rejected: authentication required",
	       "C: MAIL FROM:<me@sub.example.com>",
	       "S: 250 2.1.0 Ok");
}

Test(smtp, submission_needs_auth)
{
	H.pol.submission = true;
	ehlo();
	DIALOG("C: MAIL FROM:<mailbox@example.com>", "S: 530 5.7.0 Authentication required");
}

/* ------------------------------------------------------------------ */
/* RCPT */

Test(smtp, rcpt_policy)
{
	ehlo();
	DIALOG("C: RCPT TO:<a@example.com>",
	       "S: 503 5.5.1 Need MAIL command",
	       "C: MAIL FROM:<a@b.example>",
	       "C: RCPT TO:<a@EXAMPLE.com>",
	       "C: RCPT TO:<NoReply@Example.COM>",
	       "C: RCPT TO:<a@elsewhere.example>",
	       "C: RCPT TO:<a@[192.0.2.9]>",
	       "C: RCPT TO:<PostMaster>",
	       "C: RCPT TO:<a@example.com>",
	       "C: RCPT TO:<a@example.COM>",
	       "C: rcpt to: <b@example.org> NOTIFY=success,delay ORCPT=rfc822;b+40example.org",
	       "C: RCPT TO:<c@example.org>",
	       "C: RCPT TO:<b@example.org>",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 550 5.1.1 Recipient address rejected: mailbox unavailable",
	       "S: 550 5.7.1 Relay access denied",
	       "S: 550 5.7.1 Relay access denied",
	       "S: 250 2.1.5 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 452 4.5.3 Too many recipients",
	       "S: 250 2.1.5 Ok");
	cr_assert_eq(smtp_tx_nrcpt(&H.s), 3);
	const struct smtp_rcpt *r = smtp_tx_rcpt(&H.s, 0);
	cr_expect_str_eq(r->addr, "a@EXAMPLE.com");
	cr_expect_eq(r->domain, 0);
	cr_expect_null(r->orcpt);
	cr_expect_eq(r->notify, 0);
	r = smtp_tx_rcpt(&H.s, 1);
	cr_expect_str_eq(r->addr, "PostMaster");
	cr_expect_eq(r->domain, 0);
	r = smtp_tx_rcpt(&H.s, 2);
	cr_expect_str_eq(r->addr, "b@example.org");
	cr_expect_eq(r->domain, 1);
	cr_expect_str_eq(r->orcpt, "rfc822;b@example.org");
	cr_expect_eq(r->notify, SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY);
	cr_expect_null(smtp_tx_rcpt(&H.s, 3));
}

Test(smtp, rcpt_syntax)
{
	ehlo();
	DIALOG("C: MAIL FROM:<>",
	       "C: RCPT TO:<>",
	       "C: RCPT TO:a@example.com",
	       "C: RCPT TO:<a@example.com",
	       "C: RCPT TO:<postmaster@>",
	       "C: RCPT TO:<\xc3\xa9@example.com>",
	       "C: RCPT TO:<\"postmaster\">",
	       "C: RCPT <a@example.com>",
	       "C: RCPT TO:<a@example.com> NOTIFY=NEVER,SUCCESS",
	       "C: RCPT TO:<a@example.com> NOTIFY=SOMETIMES",
	       "C: RCPT TO:<a@example.com> NOTIFY=",
	       "C: RCPT TO:<a@example.com> NOTIFY=SUCCESS,",
	       "C: RCPT TO:<a@example.com> NOTIFY=NEVER NOTIFY=NEVER",
	       "C: RCPT TO:<a@example.com> ORCPT=rfc822",
	       "C: RCPT TO:<a@example.com> ORCPT=;a@b",
	       "C: RCPT TO:<a@example.com> SIZE=10",
	       "C: RCPT TO:<a@example.com> NOTIFY=NEVER",
	       "S: 250 2.1.0 Ok",
	       "S: 501 5.1.3 Bad recipient address syntax",
	       "S: 501 5.1.3 Bad recipient address syntax",
	       "S: 501 5.1.3 Bad recipient address syntax",
	       "S: 501 5.1.3 Bad recipient address syntax",
	       "S: 501 5.1.3 Bad recipient address syntax",
	       "S: 501 5.1.3 Bad recipient address syntax",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Duplicate parameter",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 501 5.5.4 Bad parameter value",
	       "S: 555 5.5.4 Unsupported parameter",
	       "S: 250 2.1.5 Ok");
	cr_expect_eq(smtp_tx_rcpt(&H.s, 0)->notify, SMTP_NOTIFY_NEVER);
}

Test(smtp, rcpt_local_part_is_case_sensitive)
{
	ehlo();
	DIALOG("C: MAIL FROM:<>",
	       "C: RCPT TO:<a@example.com>",
	       "C: RCPT TO:<A@example.com>",
	       "C: RCPT TO:<postmaster>",
	       "C: RCPT TO:<POSTMASTER>",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 250 2.1.5 Ok");
	cr_expect_eq(smtp_tx_nrcpt(&H.s), 3);
}

Test(smtp, rcpt_utf8_needs_smtputf8)
{
	ehlo();
	DIALOG("C: MAIL FROM:<a@b.example> SMTPUTF8",
	       "C: RCPT TO:<\xc3\xa9@example.com>",
	       "C: RCPT TO:<\xff@example.com>",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 501 5.1.3 Bad recipient address syntax");
}

/* ------------------------------------------------------------------ */
/* DATA */

#define ENVELOPE "EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n"
#define ENVELOPE_REPLIES                                                                   \
	"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"      \
	"250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"           \
	"250 STARTTLS\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"

static void expect_body(unsigned i, const char *want)
{
	cr_assert_gt(H.nmsgs, i, "message %u was not committed", i);
	struct msg *m = &H.msgs[i];
	if (m->len != strlen(want) || (m->len && memcmp(m->body, want, m->len) != 0)) {
		char *g = tr_escape(m->body, m->len), *w = tr_escape(want, strlen(want));
		cr_assert_fail("body:\n%s\n--- expected:\n%s", g, w);
	}
}

Test(smtp, data_sequence)
{
	ehlo();
	DIALOG("C: DATA",
	       "S: 503 5.5.1 Need MAIL command",
	       "C: MAIL FROM:<a@b.example>",
	       "C: RCPT TO:<a@elsewhere.example>",
	       "C: DATA",
	       "S: 250 2.1.0 Ok",
	       "S: 550 5.7.1 Relay access denied",
	       "S: 503 5.5.1 Need RCPT command",
	       "C: RCPT TO:<a@example.com>",
	       "C: DATA now",
	       "S: 250 2.1.5 Ok",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "C: DATA",
	       "S: 354 End data with <CR><LF>.<CR><LF>",
	       "C: Subject: hi",
	       "C: ",
	       "C: body",
	       "C: .",
	       "S: 250 2.0.0 Ok: queued as QID1",
	       "C: DATA",
	       "S: 503 5.5.1 Need MAIL command");
	cr_expect_eq(H.opens, 1);
	cr_expect_eq(H.commits, 1);
	expect_body(0, "Subject: hi\r\n\r\nbody\r\n");
	cr_expect_str_eq(H.msgs[0].from, "a@b.example");
	cr_expect_eq(H.msgs[0].nrcpt, 1);
	cr_expect_str_eq(H.msgs[0].rcpt[0], "a@example.com");
	cr_expect(!smtp_in_transaction(&H.s));
}

Test(smtp, data_dot_unstuffing)
{
	expect_str(&H, GREETING);
	drive_str(&H, ENVELOPE "DATA\r\n"
			       ".\r\n");
	drive_str(&H, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n"
		      "..\r\n"
		      ".foo\r\n"
		      "...\r\n"
		      "a.b\r\n"
		      ". \r\n"
		      "..\r\n"
		      "\r\n"
		      ".\r\n");
	expect_str(&H, ENVELOPE_REPLIES "354 End data with <CR><LF>.<CR><LF>\r\n"
					"250 2.0.0 Ok: queued as QID1\r\n"
					"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
					"354 End data with <CR><LF>.<CR><LF>\r\n"
					"250 2.0.0 Ok: queued as QID1\r\n");
	expect_body(0, "");
	expect_body(1, ".\r\nfoo\r\n..\r\na.b\r\n \r\n.\r\n\r\n");
}

Test(smtp, data_body_in_few_spans)
{
	static char big[900];
	size_t n = 0;
	expect_str(&H, GREETING);
	drive_str(&H, ENVELOPE "DATA\r\n");
	while (n + 20 < sizeof big)
		n += (size_t)sprintf(big + n, "line %04zu abcdefg\r\n", n);
	drive(&H, big, n);
	drive_str(&H, ".\r\n");
	cr_expect_eq(H.body_calls, 1, "%u calls for one read", H.body_calls);
	cr_assert_eq(H.msgs[0].len, n);
}

Test(smtp, data_open_and_commit_failures)
{
	H.open_result = -5;
	expect_str(&H, GREETING);
	drive_str(&H, ENVELOPE "DATA\r\n");
	expect_str(&H, ENVELOPE_REPLIES "451 4.3.0 Local error in processing\r\n");
	cr_expect(!smtp_in_transaction(&H.s));
	H.open_result = 0;
	H.commit_result = -28;
	DIALOG("C: MAIL FROM:<a@b.example>",
	       "C: RCPT TO:<x@example.com>",
	       "C: DATA",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 354 End data with <CR><LF>.<CR><LF>",
	       "C: hello",
	       "C: .",
	       "S: 451 4.3.0 Local error in processing",
	       "C: RCPT TO:<x@example.com>",
	       "S: 503 5.5.1 Need MAIL command");
	cr_expect_eq(H.nmsgs, 0);
}

/* RFC 5321 4.1.1.4 and SPEC 4: only CRLF.CRLF ends DATA; anything with a bare
 * CR or LF is refused after the real end, and nothing is committed. */
Test(smtp, data_smuggling)
{
	static const char *const variants[] = {
		"a\n.\nMAIL FROM:<evil@x.example>\n",
		"a\r\n.\nMAIL FROM:<evil@x.example>\r\n",
		"a\n.\r\nMAIL FROM:<evil@x.example>\r\n",
		"a\r.\r\nMAIL FROM:<evil@x.example>\r\n",
		"a\r.\rMAIL FROM:<evil@x.example>\r\n",
		"a\r\n.\r\rMAIL\r\n",
		"bare\rCR\r\n",
		"bare\nLF\r\n",
		"\n",
		"\r\r\n",
		".\n",
		"..\n",
	};
	expect_str(&H, GREETING);
	drive_str(&H, "EHLO c\r\n");
	H.trlen = 0;
	for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
		drive_str(&H, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n");
		drive_str(&H, variants[i]);
		expect_str(&H, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n"
			       "354 End data with <CR><LF>.<CR><LF>\r\n");
		drive_str(&H, "\r\n.\r\nNOOP\r\n");
		expect_str(&H, "550 5.6.0 Message contains bare CR or LF\r\n250 2.0.0 Ok\r\n");
		cr_expect_eq(H.aborts, i + 1, "variant %zu", i);
		cr_expect_eq(H.commits, 0, "variant %zu", i);
		cr_expect(!smtp_in_transaction(&H.s));
	}
}

Test(smtp, data_size_limit)
{
	char body[1100];
	expect_str(&H, GREETING);
	/* exactly the limit: 998 + CRLF = 1000 */
	memset(body, 'a', sizeof body);
	memcpy(body + 998, "\r\n.\r\n", 5);
	drive_str(&H, ENVELOPE "DATA\r\n");
	drive(&H, body, 1003);
	expect_str(&H, ENVELOPE_REPLIES "354 End data with <CR><LF>.<CR><LF>\r\n"
					"250 2.0.0 Ok: queued as QID1\r\n");
	cr_expect_eq(H.msgs[0].len, 1000);
	/* one more octet: read to the end, then 552 */
	memset(body, 'a', sizeof body);
	memcpy(body + 999, "\r\n.\r\nNOOP\r\n", 11);
	drive_str(&H, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nDATA\r\n");
	drive(&H, body, 500);
	drive(&H, body + 500, 510);
	expect_str(&H, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
		       "552 5.3.4 Message too big\r\n250 2.0.0 Ok\r\n");
	cr_expect_eq(H.aborts, 1);
	cr_expect_eq(H.commits, 1);
}

/* ------------------------------------------------------------------ */
/* BDAT (RFC 3030) */

Test(smtp, bdat_chunks)
{
	expect_str(&H, GREETING);
	drive_str(&H, ENVELOPE "BDAT 5\r\nab\r\ncBDAT 3\r\n\r\n.BDAT 0 LAST\r\n");
	expect_str(&H, ENVELOPE_REPLIES "250 2.0.0 5 octets received\r\n"
					"250 2.0.0 3 octets received\r\n"
					"250 2.0.0 Ok: queued as QID1\r\n");
	cr_expect_eq(H.opens, 1);
	expect_body(0, "ab\r\nc\r\n.");
	/* binary and bare line ends pass as they are; LAST in any case */
	static const char bin[] = "MAIL FROM:<a@b.example> BODY=BINARYMIME\r\n"
				  "RCPT TO:<x@example.com>\r\nBDAT 4 last\r\n\n\r.\0";
	drive(&H, bin, sizeof bin - 1);
	expect_str(&H, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as QID1\r\n");
	cr_assert_eq(H.msgs[1].len, 4);
	cr_expect(memcmp(H.msgs[1].body, "\n\r.\0", 4) == 0);
	/* an empty message */
	drive_str(&H, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nBDAT 0 LAST\r\n");
	expect_str(&H, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Ok: queued as QID1\r\n");
	cr_expect_eq(H.msgs[2].len, 0);
	cr_expect_eq(H.opens, 3);
}

Test(smtp, bdat_refused_chunks_are_read)
{
	expect_str(&H, GREETING);
	/* before EHLO, before MAIL, before RCPT: each chunk is read, then 503 */
	drive_str(&H, "BDAT 6\r\nRSET\r\nBDAT 4 LAST\r\nQUIT");
	expect_str(&H, "503 5.5.1 Send HELO or EHLO first\r\n503 5.5.1 Send HELO or EHLO first\r\n");
	drive_str(&H, "EHLO c\r\nBDAT 6\r\nQUIT\r\n");
	H.trlen = 0;
	drive_str(&H, "MAIL FROM:<a@b.example>\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n");
	expect_str(&H, "250 2.1.0 Ok\r\n503 5.5.1 Need RCPT command\r\n250 2.0.0 Ok\r\n");
	/* bad syntax with a readable size: read, then 501 */
	drive_str(&H, "RCPT TO:<x@example.com>\r\nBDAT 6 FIRST\r\nQUIT\r\nNOOP\r\n");
	expect_str(&H, "250 2.1.5 Ok\r\n501 5.5.4 Syntax error in parameters or arguments\r\n"
		       "250 2.0.0 Ok\r\n");
	cr_expect(!H.closed);
	cr_expect_eq(H.opens, 0);
	/* DATA does not mix with BDAT (RFC 3030 2) */
	drive_str(&H, "BDAT 2\r\nhiDATA\r\nBDAT 1 LAST\r\n!");
	expect_str(&H, "250 2.0.0 2 octets received\r\n503 5.5.1 DATA not allowed after BDAT\r\n"
		       "250 2.0.0 Ok: queued as QID1\r\n");
	expect_body(0, "hi!");
	/* BINARYMIME needs BDAT (RFC 3030 3) */
	DIALOG("C: MAIL FROM:<a@b.example> BODY=BINARYMIME",
	       "C: RCPT TO:<x@example.com>",
	       "C: DATA",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 503 5.5.1 BODY=BINARYMIME needs BDAT");
}

Test(smtp, bdat_unreadable_size_closes)
{
	ehlo();
	drive_str(&H, "BDAT x\r\nQUIT\r\n");
	expect_str(&H, "501 5.5.4 Syntax error in parameters or arguments\r\n"
		       "421 4.5.0 mx.example.com Lost the BDAT chunk boundary, closing\r\n");
	cr_expect(H.closed);
}

Test(smtp, bdat_unreadable_size_variants)
{
	static const char *const bad[] = {"BDAT", "BDAT -1", "BDAT 1x", "BDAT 123456789012345678901",
					  "BDAT 18446744073709551615"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		teardown();
		setup();
		ehlo();
		drive_str(&H, bad[i]);
		drive_str(&H, "\r\n");
		cr_expect(H.closed, "%s", bad[i]);
	}
}

Test(smtp, bdat_size_limit_and_open_failure)
{
	char chunk[600];
	memset(chunk, 'z', sizeof chunk);
	expect_str(&H, GREETING);
	drive_str(&H, ENVELOPE "BDAT 600\r\n");
	drive(&H, chunk, 600);
	drive_str(&H, "BDAT 600 LAST\r\n");
	drive(&H, chunk, 600);
	expect_str(&H, ENVELOPE_REPLIES "250 2.0.0 600 octets received\r\n"
					"552 5.3.4 Message too big\r\n");
	cr_expect_eq(H.aborts, 1);
	cr_expect_eq(H.commits, 0);
	H.open_result = -1;
	drive_str(&H, "MAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\nBDAT 3\r\nabcBDAT 2 LAST\r\n"
		      "deNOOP\r\n");
	expect_str(&H, "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n451 4.3.0 Local error in processing\r\n"
		       "503 5.5.1 Need MAIL command\r\n250 2.0.0 Ok\r\n");
	cr_expect(!smtp_in_transaction(&H.s));
}

/* ------------------------------------------------------------------ */
/* errors, timeouts */

Test(smtp, twentieth_error_closes)
{
	expect_str(&H, GREETING);
	char want[4096] = "";
	for (int i = 0; i < 19; i++) {
		drive_str(&H, "BOGUS\r\n");
		strcat(want, "500 5.5.1 Command unrecognized\r\n");
	}
	drive_str(&H, "NOOP\r\nMAIL FROM:<a@b.example>\r\nNOOP\r\nNOOP\r\n");
	strcat(want, "250 2.0.0 Ok\r\n503 5.5.1 Send HELO or EHLO first\r\n421 4.7.0 Too many errors\r\n");
	expect_str(&H, want);
	cr_expect(H.closed);
	cr_expect_eq(H.s.errors, 20);
}

Test(smtp, twentieth_error_in_data_closes)
{
	expect_str(&H, GREETING);
	for (int i = 0; i < 19; i++)
		drive_str(&H, "VRFY\r\n");
	H.trlen = 0;
	drive_str(&H, ENVELOPE "DATA\r\nbare\n\r\n.\r\n");
	expect_str(&H, ENVELOPE_REPLIES "354 End data with <CR><LF>.<CR><LF>\r\n"
					"550 5.6.0 Message contains bare CR or LF\r\n"
					"421 4.7.0 Too many errors\r\n");
	/* the refusal comes as CLOSE, which discards the spool */
	cr_expect(H.closed);
	cr_expect_eq(H.aborts, 0);
	cr_expect_eq(H.commits, 0);
}

Test(smtp, timeout_and_shutdown)
{
	expect_str(&H, GREETING);
	smtp_timeout(&H.s, &H.io);
	flush(&H);
	expect_str(&H, "421 4.4.2 mx.example.com Error: timeout exceeded\r\n");
	teardown();
	setup();
	expect_str(&H, GREETING);
	cr_expect(!smtp_in_transaction(&H.s));
	drive_str(&H, "EHLO c\r\nMAIL FROM:<>\r\n");
	cr_expect(smtp_in_transaction(&H.s));
	drive_str(&H, "RSET\r\n");
	cr_expect(!smtp_in_transaction(&H.s));
	H.trlen = 0;
	smtp_shutdown(&H.s, &H.io);
	flush(&H);
	expect_str(&H, "421 4.3.2 mx.example.com Service shutting down\r\n");
}

/* ------------------------------------------------------------------ */
/* STARTTLS (RFC 3207) */

Test(smtp, starttls)
{
	expect_str(&H, GREETING);
	drive_str(&H, "EHLO c\r\nSTARTTLS now\r\nSTARTTLS\r\nMAIL FROM:<evil@x.example>\r\nQUIT\r\n");
	expect_str(&H, "250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
		       "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n"
		       "250 STARTTLS\r\n501 5.5.4 Syntax error in parameters or arguments\r\n"
		       "220 2.0.0 Ready to start TLS\r\n");
	/* the pipelined commands after STARTTLS were dropped, unread */
	cr_expect_eq(H.starttls, 1);
	cr_expect_eq(H.discarded, strlen("MAIL FROM:<evil@x.example>\r\nQUIT\r\n"));
	cr_expect(H.s.tls);
	/* reset: EHLO needed again, now with AUTH and without STARTTLS */
	DIALOG("C: MAIL FROM:<a@b.example>",
	       "S: 503 5.5.1 Send HELO or EHLO first",
	       "C: EHLO c",
	       "S: 250-mx.example.com",
	       "S: 250-PIPELINING",
	       "S: 250-SIZE 1000",
	       "S: 250-8BITMIME",
	       "S: 250-ENHANCEDSTATUSCODES",
	       "S: 250-SMTPUTF8",
	       "S: 250-CHUNKING",
	       "S: 250-DSN",
	       "S: 250 AUTH PLAIN",
	       "C: STARTTLS",
	       "S: 503 5.5.1 TLS already active");
}

Test(smtp, starttls_partial_line_dropped)
{
	expect_str(&H, GREETING);
	/* a partial command before STARTTLS's completion is not kept */
	drive_str(&H, "EHLO c\r\nSTARTTLS\r\n");
	H.trlen = 0;
	drive_str(&H, "EHLO d\r\n");
	cr_expect_str_eq(H.s.helo, "d");
	cr_expect_eq(H.s.linelen, 0);
}

Test(smtp, starttls_in_transaction_and_failure)
{
	ehlo();
	DIALOG("C: MAIL FROM:<a@b.example>",
	       "C: STARTTLS",
	       "S: 250 2.1.0 Ok",
	       "S: 503 5.5.1 Not allowed during a mail transaction",
	       "C: RSET",
	       "C: STARTTLS",
	       "S: 250 2.0.0 Ok",
	       "S: 220 2.0.0 Ready to start TLS");
	cr_expect(H.s.tls);
	teardown();
	setup();
	H.tls_result = -1;
	ehlo();
	DIALOG("C: STARTTLS", "S: 220 2.0.0 Ready to start TLS");
	cr_expect(H.closed);
}

/* ------------------------------------------------------------------ */
/* AUTH PLAIN (RFC 4954, 4616) */

#define PLAIN_OK "AG1haWxib3hAZXhhbXBsZS5jb20Ac2VjcmV0" /* \0mailbox@example.com\0secret */

Test(smtp, auth_needs_tls_and_ehlo)
{
	expect_str(&H, GREETING);
	DIALOG("C: AUTH PLAIN " PLAIN_OK,
	       "S: 503 5.5.1 Send EHLO first",
	       "C: EHLO c",
	       "C: AUTH PLAIN " PLAIN_OK,
	       "C: AUTH",
	       "S: 250-mx.example.com",
	       "S: 250-PIPELINING",
	       "S: 250-SIZE 1000",
	       "S: 250-8BITMIME",
	       "S: 250-ENHANCEDSTATUSCODES",
	       "S: 250-SMTPUTF8",
	       "S: 250-CHUNKING",
	       "S: 250-DSN",
	       "S: 250 STARTTLS",
	       "S: 538 5.7.11 Encryption required for requested authentication mechanism",
	       "S: 501 5.5.4 Syntax error in parameters or arguments");
	cr_expect_eq(H.auths, 0);
}

Test(smtp, auth_initial_response)
{
	login();
	cr_expect_eq(H.auths, 1);
	cr_expect_eq(H.auth_domain_seen, 0);
	cr_expect_str_eq(H.auth_pw_seen, "secret");
	cr_expect_eq(H.s.auth_domain, 0);
	cr_expect_eq(smtp_auth_domain(&H.s), 0);
	cr_expect_null(H.s.p.auth, "credentials kept after AUTH");
	for (size_t i = 0; i < sizeof H.s.line; i++)
		cr_assert_eq(H.s.line[i], 0, "AUTH line left in the line buffer");
	DIALOG("C: AUTH PLAIN " PLAIN_OK, "S: 503 5.5.1 Already authenticated");
	cr_expect_eq(H.auths, 1);
}

Test(smtp, auth_continuation)
{
	H.s.tls = true;
	ehlo();
	DIALOG("C: AUTH plain",
	       "S: 334 ",
	       "C: " PLAIN_OK,
	       "S: 235 2.7.0 Authentication successful");
	cr_expect_eq(H.s.auth_domain, 0);
}

Test(smtp, auth_failures)
{
	H.s.tls = true;
	ehlo();
	/* wrong password; authzid equal to authcid (any case) is fine */
	const char m1[] = "MailBox@Example.COM\0mailbox@example.com\0wrong";
	/* unknown identity, mismatched authzid: the core is still asked, with
	   domain -1, so that they cost what a wrong password costs */
	const char m2[] = "\0someone@example.com\0secret";
	const char m3[] = "other@example.com\0mailbox@example.com\0secret";
	const char m4[] = "\0mailbox@example.net\0secret";
	char line[4200]; /* room for any b64() result */
	snprintf(line, sizeof line, "AUTH PLAIN %s\r\n", b64(m1, sizeof m1 - 1));
	drive_str(&H, line);
	expect_str(&H, "535 5.7.8 Authentication credentials invalid\r\n");
	cr_expect_eq(H.auth_domain_seen, 0);
	cr_expect_str_eq(H.auth_pw_seen, "wrong");
	snprintf(line, sizeof line, "AUTH PLAIN %s\r\n", b64(m2, sizeof m2 - 1));
	drive_str(&H, line);
	expect_str(&H, "535 5.7.8 Authentication credentials invalid\r\n");
	cr_expect_eq(H.auth_domain_seen, -1);
	snprintf(line, sizeof line, "AUTH PLAIN\r\n%s\r\n", b64(m3, sizeof m3 - 1));
	drive_str(&H, line);
	expect_str(&H, "334 \r\n535 5.7.8 Authentication credentials invalid\r\n");
	cr_expect_eq(H.auth_domain_seen, -1);
	cr_expect_str_eq(H.auth_pw_seen, "secret");
	snprintf(line, sizeof line, "AUTH PLAIN %s\r\n", b64(m4, sizeof m4 - 1));
	drive_str(&H, line);
	expect_str(&H, "535 5.7.8 Authentication credentials invalid\r\n");
	cr_expect_eq(H.auth_domain_seen, -1);
	cr_expect_eq(H.auths, 4);
	cr_expect_eq(H.s.auth_failures, 4);
	cr_expect_eq(H.s.auth_domain, -1);
	cr_expect_null(H.s.p.auth);
	/* the core must never be asked about malformed exchanges */
	const char m5[] = "\0mailbox@example.com\0"; /* empty password */
	snprintf(line, sizeof line, "AUTH PLAIN %s\r\n", b64(m5, sizeof m5 - 1));
	drive_str(&H, line);
	DIALOG("C: AUTH PLAIN",
	       "C: *",
	       "C: AUTH PLAIN",
	       "C: not base64!",
	       "C: AUTH PLAIN AG1haWxib3hAZXhhbXBsZS5jb20Ac2VjcmV0=",
	       "C: AUTH PLAIN =",
	       "C: AUTH PLAIN a b",
	       "C: AUTH LOGIN",
	       "C: AUTH CRAM-MD5 abc",
	       "S: 501 5.5.2 Cannot decode response",
	       "S: 334 ",
	       "S: 501 5.5.2 Authentication cancelled",
	       "S: 334 ",
	       "S: 501 5.5.2 Cannot decode response",
	       "S: 501 5.5.2 Cannot decode response",
	       "S: 501 5.5.2 Cannot decode response",
	       "S: 501 5.5.4 Syntax error in parameters or arguments",
	       "S: 504 5.5.4 Unrecognized authentication type",
	       "S: 504 5.5.4 Unrecognized authentication type");
	cr_expect_eq(H.auths, 4);
	cr_expect_null(H.s.p.auth);
	/* then it still works */
	DIALOG("C: AUTH PLAIN " PLAIN_OK, "S: 235 2.7.0 Authentication successful");
}

Test(smtp, auth_long_response_line)
{
	H.s.tls = true;
	ehlo();
	/* a 1000-octet password: its response line is over 512 (RFC 4954 4) */
	char m[1100], line[4200];
	size_t n = (size_t)sprintf(m, "%cmailbox@example.com%c", 0, 0);
	memset(m + n, 'p', 1000);
	n += 1000;
	snprintf(line, sizeof line, "AUTH PLAIN\r\n%s\r\n", b64(m, n));
	drive_str(&H, line);
	expect_str(&H, "334 \r\n535 5.7.8 Authentication credentials invalid\r\n");
	cr_expect_eq(strlen(H.auth_pw_seen), 255); /* the harness's copy */
	/* over SMTP_AUTH_LINE_MAX: 500 5.5.6, the rest of the line dropped */
	memset(line, 'A', sizeof line);
	memcpy(line, "AUTH PLAIN\r\n", 12);
	memcpy(line + 2090, "\r\nNOOP\r\n", 8);
	drive(&H, line, 2098);
	expect_str(&H, "334 \r\n500 5.5.6 Authentication Exchange line is too long\r\n"
		       "250 2.0.0 Ok\r\n");
	cr_expect_null(H.s.p.auth);
	cr_expect_eq(H.auths, 1);
}

Test(smtp, auth_bare_lf_ends_exchange)
{
	H.s.tls = true;
	ehlo();
	drive_str(&H, "AUTH PLAIN\r\n" PLAIN_OK "\nNOOP\r\n");
	expect_str(&H, "334 \r\n500 5.5.2 Bare LF not allowed\r\n250 2.0.0 Ok\r\n");
	cr_expect_null(H.s.p.auth);
}

Test(smtp, auth_in_transaction)
{
	H.s.tls = true;
	ehlo();
	DIALOG("C: MAIL FROM:<a@b.example>",
	       "C: AUTH PLAIN " PLAIN_OK,
	       "S: 250 2.1.0 Ok",
	       "S: 503 5.5.1 Not allowed during a mail transaction");
}

Test(smtp, authenticated_sender_and_relay)
{
	login();
	DIALOG("C: MAIL FROM:<a@b.example>",
	       "S: 550 5.7.1 Sender address rejected: not owned by user",
	       "C: MAIL FROM:<a@example.org>",
	       "S: 550 5.7.1 Sender address rejected: not owned by user",
	       "C: MAIL FROM:<Anyone@EXAMPLE.com>",
	       "C: RCPT TO:<friend@elsewhere.example>",
	       "C: RCPT TO:<x@example.org>",
	       "C: RCPT TO:<noreply@example.com>",
	       "C: RSET",
	       "C: MAIL FROM:<>",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 550 5.1.1 Recipient address rejected: mailbox unavailable",
	       "S: 250 2.0.0 Ok",
	       "S: 250 2.1.0 Ok");
}

Test(smtp, submission_after_auth)
{
	H.pol.submission = true;
	login();
	DIALOG("C: MAIL FROM:<mailbox@example.com>",
	       "C: RCPT TO:<friend@elsewhere.example>",
	       "C: DATA",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 354 End data with <CR><LF>.<CR><LF>",
	       "C: hi",
	       "C: .",
	       "S: 250 2.0.0 Ok: queued as QID1");
	cr_expect_eq(H.msgs[0].domain[0], -1);
}

/* ------------------------------------------------------------------ */
/* pipelining, split reads, back-pressure */

static const char pipelined[] =
	"EHLO client.example\r\n"
	"MAIL FROM:<a@b.example> SIZE=100\r\n"
	"RCPT TO:<x@example.com>\r\n"
	"RCPT TO:<y@elsewhere.example>\r\n"
	"RCPT TO:<y@example.org> NOTIFY=FAILURE\r\n"
	"DATA\r\n"
	"Subject: split\r\n"
	"\r\n"
	"..dot\r\n"
	".\r\n"
	"MAIL FROM:<>\r\n"
	"RCPT TO:<postmaster>\r\n"
	"BDAT 7\r\n"
	"a\r\n.\r\nbBDAT 3 LAST\r\n"
	"\r\n.MAIL FROM:<>\r\n"
	"RCPT TO:<z@example.com>\r\n"
	"DATA\r\n"
	"x\r\n.\n"
	"\r\n.\r\n"
	"NOOP\r\n"
	"QUIT\r\n";

static const char pipelined_replies[] =
	"250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n"
	"250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250 STARTTLS\r\n"
	"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.7.1 Relay access denied\r\n250 2.1.5 Ok\r\n"
	"354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as QID1\r\n"
	"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 7 octets received\r\n"
	"250 2.0.0 Ok: queued as QID1\r\n"
	"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
	"550 5.6.0 Message contains bare CR or LF\r\n250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n";

static void check_pipelined(const char *how)
{
	if (H.trlen != sizeof pipelined_replies - 1 ||
	    memcmp(H.tr, pipelined_replies, H.trlen) != 0) {
		char *g = tr_escape(H.tr, H.trlen);
		cr_assert_fail("%s: server wrote:\n%s", how, g);
	}
	cr_assert_eq(H.nmsgs, 2, "%s", how);
	cr_assert_eq(H.msgs[0].len, 24, "%s", how);
	cr_assert(memcmp(H.msgs[0].body, "Subject: split\r\n\r\n.dot\r\n", 24) == 0, "%s", how);
	cr_assert_eq(H.msgs[0].nrcpt, 2, "%s", how);
	cr_assert_eq(H.msgs[0].notify[1], SMTP_NOTIFY_FAILURE, "%s", how);
	cr_assert_eq(H.msgs[1].len, 10, "%s", how);
	cr_assert(memcmp(H.msgs[1].body, "a\r\n.\r\nb\r\n.", 10) == 0, "%s", how);
	cr_assert_str_eq(H.msgs[1].rcpt[0], "postmaster", "%s", how);
	cr_assert_eq(H.aborts, 1, "%s", how);
	cr_assert(H.closed, "%s", how);
}

static void restart(size_t outcap)
{
	teardown();
	setup_with(outcap);
	expect_str(&H, GREETING);
}

Test(smtp, pipelined_whole)
{
	restart(sizeof H.outbuf);
	drive(&H, pipelined, sizeof pipelined - 1);
	check_pipelined("whole");
}

Test(smtp, pipelined_split_at_every_octet)
{
	size_t n = sizeof pipelined - 1;
	for (size_t i = 1; i < n; i++) {
		char how[32];
		restart(sizeof H.outbuf);
		drive(&H, pipelined, i);
		drive(&H, pipelined + i, n - i);
		snprintf(how, sizeof how, "split at %zu", i);
		check_pipelined(how);
	}
}

Test(smtp, pipelined_split_at_every_pair)
{
	/* three reads: every pair of cut points in the DATA/BDAT region */
	size_t n = sizeof pipelined - 1;
	size_t from = (size_t)(strstr(pipelined, "DATA") - pipelined);
	size_t to = (size_t)(strstr(pipelined, "RCPT TO:<z@") - pipelined);
	for (size_t i = from; i < to; i++) {
		for (size_t j = i + 1; j < to; j++) {
			char how[32];
			restart(sizeof H.outbuf);
			drive(&H, pipelined, i);
			drive(&H, pipelined + i, j - i);
			drive(&H, pipelined + j, n - j);
			snprintf(how, sizeof how, "split at %zu,%zu", i, j);
			check_pipelined(how);
		}
	}
}

Test(smtp, pipelined_octet_by_octet)
{
	restart(sizeof H.outbuf);
	for (size_t i = 0; i < sizeof pipelined - 1; i++)
		drive(&H, pipelined + i, 1);
	check_pipelined("octet by octet");
}

Test(smtp, pipelined_back_pressure)
{
	/* an obuf that holds one reply at a time: the machine must stop and
	   resume, never overflow, never lose a reply */
	restart(SMTP_REPLY_ROOM + 1);
	drive(&H, pipelined, sizeof pipelined - 1);
	check_pipelined("small obuf");
	cr_expect(H.stalled);
}

Test(smtp, back_pressure_at_end_of_data_and_chunk)
{
	/* the obuf is short exactly when the reply-bearing octet comes */
	restart(SMTP_REPLY_ROOM + 100);
	drive_str(&H, ENVELOPE);
	H.trlen = 0;
	drive_str(&H, "DATA\r\n");
	H.out.len = 200; /* the core has not flushed yet */
	size_t used;
	enum smtp_req r = smtp_feed(&H.s, "x\r\n.\r\n", 6, &used, &H.io);
	cr_expect_eq(r, SMTP_REQ_NONE);
	cr_expect_eq(used, 5, "the final LF must wait for room");
	H.out.len = 0;
	r = smtp_feed(&H.s, "\n", 1, &used, &H.io);
	cr_expect_eq(r, SMTP_REQ_SPOOL_COMMIT);
	cr_expect_eq(used, 1);
	handle(&H, r);
	expect_body(0, "x\r\n");
	H.trlen = 0;
	drive_str(&H, "MAIL FROM:<>\r\nRCPT TO:<x@example.com>\r\nBDAT 3\r\n");
	H.out.len = 200;
	r = smtp_feed(&H.s, "abc", 3, &used, &H.io);
	cr_expect_eq(r, SMTP_REQ_NONE);
	cr_expect_eq(used, 2, "the last octet must wait for room");
	H.out.len = 0;
	r = smtp_feed(&H.s, "c", 1, &used, &H.io);
	cr_expect_eq(used, 1);
	cr_expect_eq(H.out.len, strlen("250 2.0.0 3 octets received\r\n"));
}

/* ------------------------------------------------------------------ */
/* protocol violations by the core */

Test(smtp, core_misuse_closes)
{
	ehlo();
	drive_str(&H, "MAIL FROM:<>\r\nRCPT TO:<x@example.com>\r\n");
	H.trlen = 0;
	size_t used;
	cr_assert_eq(smtp_feed(&H.s, "DATA\r\n", 6, &used, &H.io), SMTP_REQ_SPOOL_OPEN);
	/* feeding while a request is outstanding */
	cr_expect_eq(smtp_feed(&H.s, "x", 1, &used, &H.io), SMTP_REQ_CLOSE);
	cr_expect_eq(used, 0);
	flush(&H);
	expect_str(&H, "421 4.3.0 mx.example.com Internal error, closing\r\n");
	teardown();
	setup();
	ehlo();
	/* completing what was not asked */
	cr_expect_eq(smtp_complete(&H.s, SMTP_REQ_AUTH, 0, NULL, &H.io), SMTP_REQ_CLOSE);
	cr_expect_eq(H.s.auth_domain, -1);
}

/* ------------------------------------------------------------------ */
/* trace headers */

Test(smtp, trace_headers)
{
	H.hold = 1u << SMTP_REQ_SPOOL_COMMIT;
	expect_str(&H, GREETING);
	drive_str(&H, "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\n"
		      "RCPT TO:<x@example.com>\r\nRCPT TO:<y@EXAMPLE.com>\r\nRCPT TO:<x@Example.com>\r\n"
		      "RCPT TO:<z@example.org>\r\nDATA\r\nhi\r\n.\r\n");
	cr_assert_eq(H.pending, SMTP_REQ_SPOOL_COMMIT);
	char buf[2048];
	/* 2026-11-24 11:28:27 UTC */
	size_t n = smtp_trace_headers(buf, sizeof buf, &H.s, 0, "QID1", 1795519707, 0);
	buf[n] = '\0';
	cr_expect_str_eq(buf, "Return-Path: <a@b.example>\r\n"
			      "Delivered-To: x@example.com\r\n"
			      "Delivered-To: y@EXAMPLE.com\r\n"
			      "Received: from client.example ([192.0.2.1])\r\n"
			      "\tby mx.example.com (mailpopbox) with ESMTP id QID1;\r\n"
			      "\tTue, 24 Nov 2026 11:28:27 +0000\r\n");
	n = smtp_trace_headers(buf, sizeof buf, &H.s, 1, "QID1", 1795519707, -330);
	buf[n] = '\0';
	cr_expect_str_eq(buf, "Return-Path: <a@b.example>\r\n"
			      "Delivered-To: z@example.org\r\n"
			      "Received: from client.example ([192.0.2.1])\r\n"
			      "\tby mx.example.com (mailpopbox) with ESMTP id QID1\r\n"
			      "\tfor <z@example.org>; Tue, 24 Nov 2026 05:58:27 -0530\r\n");
	/* too small: nothing */
	cr_expect_eq(smtp_trace_headers(buf, 100, &H.s, 0, "QID1", 1795519707, 0), 0);
	complete(&H, SMTP_REQ_SPOOL_COMMIT, 0, "QID1");
}

Test(smtp, trace_headers_tls_auth_relay)
{
	H.hold = 1u << SMTP_REQ_SPOOL_OPEN;
	strcpy(H.s.peer, "2001:db8::7");
	login();
	drive_str(&H, "MAIL FROM:<>\r\nRCPT TO:<far@elsewhere.example>\r\nDATA\r\n");
	cr_assert_eq(H.pending, SMTP_REQ_SPOOL_OPEN);
	char buf[1024];
	/* the relay copy: no Return-Path, no Delivered-To; 1 Jan 2000 +0100 */
	size_t n = smtp_trace_headers(buf, sizeof buf, &H.s, -1, "Q2", 946681200, 60);
	buf[n] = '\0';
	cr_expect_str_eq(buf, "Received: from client.example ([IPv6:2001:db8::7])\r\n"
			      "\tby mx.example.com (mailpopbox) with ESMTPSA id Q2\r\n"
			      "\tfor <far@elsewhere.example>; Sat, 1 Jan 2000 00:00:00 +0100\r\n");
	complete(&H, SMTP_REQ_SPOOL_OPEN, -1, NULL);
}

Test(smtp, trace_headers_helo_and_utf8)
{
	H.hold = 1u << SMTP_REQ_SPOOL_OPEN;
	expect_str(&H, GREETING);
	drive_str(&H, "HELO old.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.com>\r\n"
		      "DATA\r\n");
	char buf[1024];
	/* before the epoch; 1900 is not a leap year */
	size_t n = smtp_trace_headers(buf, sizeof buf, &H.s, 0, "Q3", -2203891200, 0);
	buf[n] = '\0';
	cr_expect(strstr(buf, "with SMTP id Q3\r\n\tfor <x@example.com>; Thu, 1 Mar 1900 00:00:00 "
			      "+0000\r\n"),
		  "%s", buf);
	complete(&H, SMTP_REQ_SPOOL_OPEN, -1, NULL);
	H.s.tls = true;
	drive_str(&H, "EHLO c\r\nMAIL FROM:<a@b.example> SMTPUTF8\r\nRCPT TO:<x@example.com>\r\n"
		      "DATA\r\n");
	n = smtp_trace_headers(buf, sizeof buf, &H.s, 0, "Q4", 1709210096, 0);
	buf[n] = '\0';
	cr_expect(strstr(buf, "with UTF8SMTPS id Q4\r\n\tfor <x@example.com>; Thu, 29 Feb 2024 "
			      "12:34:56 +0000\r\n"),
		  "%s", buf);
	complete(&H, SMTP_REQ_SPOOL_OPEN, -1, NULL);
}

Test(smtp, session_size)
{
	/* DESIGN: under 4 KiB per idle connection, all included */
	cr_log_info("sizeof(struct smtp_session) = %zu", sizeof(struct smtp_session));
	cr_expect_leq(sizeof(struct smtp_session), 1536);
}
