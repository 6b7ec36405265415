/* Unit tests for proto/pop3.c: the dialogue as transcripts, byte for byte,
 * and the dot-stuffing streamer.
 *
 * A transcript is a list of "C: " lines (sent by the client, CRLF added) and
 * "S: " lines (the exact replies expected, CRLF added). Consecutive C: lines
 * go out in one write, pipelined; the S: lines after them must be exactly
 * what the server wrote in answer. A mock core answers the machine's
 * requests (password check, maildrop open, RETR streaming, UPDATE, TLS) as
 * each test sets it. */
#include "proto/pop3.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/transcript.h"

#define HOST "pop.example.com"
#define GREETING "+OK POP3 (mailpopbox) server " HOST "\r\n"

/* The maildrop the mock core opens. */
#define M1 "Subject: one\r\n\r\nHello\r\n.hidden\r\n..two\r\n.\r\nend\r\n"
#define M2 "Subject: two\r\nFrom: a@b.example\r\n\r\nl1\r\n.l2\r\nl3\r\n"
#define M3 "X: y\r\n\r\nno final crlf"
static const char *const texts[] = {M1, M2, M3};

/* "\0mailbox@example.com\0secret" */
#define PLAIN_OK "AG1haWxib3hAZXhhbXBsZS5jb20Ac2VjcmV0"

struct harness {
	struct pop3_policy pol;
	struct pop3_domain dom[2];
	struct pop3_session s;
	struct obuf out;
	char outbuf[8192];
	/* what the server wrote, not yet checked */
	char tr[1 << 17];
	size_t trlen;
	/* the snapshot */
	struct pop3_msg msgs[300];
	const char *text[300];
	unsigned nmsgs;
	/* mock core settings */
	int tls_result, open_result, update_result, retr_result;
	bool retr_fail_midway;
	unsigned hold; /* 1 << request: leave it to the test */
	/* what the core saw */
	enum pop3_req pending;
	unsigned starttls, auths, opens, retrs, updates;
	int auth_domain_seen, open_domain_seen;
	char auth_pw_seen[300];
	bool deleted_at_update[300];
	unsigned retr_index_seen;
	long retr_lines_seen;
	bool closed, stalled;
	size_t discarded; /* input the core dropped after STLS */
};

static struct harness H;

static void flush(struct harness *h)
{
	cr_assert(h->trlen + h->out.len <= sizeof h->tr);
	memcpy(h->tr + h->trlen, h->out.p, h->out.len);
	h->trlen += h->out.len;
	h->out.len = 0;
}

static void set_drop(struct harness *h, unsigned n)
{
	h->nmsgs = n;
	for (unsigned i = 0; i < n; i++) {
		const char *t = i < 3 ? texts[i] : texts[i % 3];
		h->text[i] = t;
		h->msgs[i] = (struct pop3_msg){.size = strlen(t)};
		snprintf(h->msgs[i].uid, sizeof h->msgs[i].uid, "uid-%u", i + 1);
	}
}

static void setup_with(size_t outcap)
{
	struct harness *h = &H;
	memset(h, 0, sizeof *h);
	h->dom[0] = (struct pop3_domain){"example.com"};
	h->dom[1] = (struct pop3_domain){"example.org"};
	h->pol = (struct pop3_policy){
		.hostname = HOST,
		.domains = h->dom,
		.ndomains = 2,
	};
	h->out = (struct obuf){h->outbuf, 0, outcap};
	h->s.pol = &h->pol;
	h->s.tls_available = true;
	h->auth_domain_seen = h->open_domain_seen = -2;
	set_drop(h, 3);
	pop3_start(&h->s, &h->out);
	flush(h);
}

static void setup(void) { setup_with(sizeof H.outbuf); }

TestSuite(pop3, .init = setup);

static enum pop3_req complete(struct harness *h, enum pop3_req req, int result)
{
	h->pending = POP3_REQ_NONE;
	enum pop3_req r = pop3_complete(&h->s, req, result, &h->out);
	cr_assert_leq(h->out.len, h->out.cap);
	flush(h);
	return r;
}

/* The core's RETR: open (or not), "+OK", stream through pop3_stuff with
 * flushes whenever the obuf fills, the terminator, complete. */
static enum pop3_req retr(struct harness *h)
{
	unsigned i = pop3_retr_index(&h->s);
	h->retr_index_seen = i;
	h->retr_lines_seen = pop3_retr_lines(&h->s);
	cr_assert_lt(i, h->nmsgs);
	cr_assert_eq(h->out.len, 0, "RETR left text in the obuf");
	if (h->retr_result < 0)
		return complete(h, POP3_REQ_RETR, h->retr_result);
	pop3_retr_ok(&h->s, &h->out);
	struct pop3_stuffer st;
	pop3_stuff_init(&st, h->retr_lines_seen);
	const char *t = h->text[i];
	size_t n = strlen(t), off = 0;
	if (h->retr_fail_midway) {
		flush(h);
		return complete(h, POP3_REQ_RETR, -EIO);
	}
	while (off < n && !st.done) {
		off += pop3_stuff(&st, t + off, n - off, &h->out);
		cr_assert_leq(h->out.len, h->out.cap);
		flush(h);
	}
	pop3_stuff_end(&st, &h->out);
	flush(h);
	return complete(h, POP3_REQ_RETR, 0);
}

/* The mock core: answers requests until one is held or none is left. */
static void handle(struct harness *h, enum pop3_req r)
{
	while (r != POP3_REQ_NONE) {
		flush(h);
		if (h->hold & (1u << r) && r != POP3_REQ_CLOSE) {
			h->pending = r;
			return;
		}
		switch (r) {
		case POP3_REQ_STLS:
			h->starttls++;
			r = complete(h, r, h->tls_result);
			break;
		case POP3_REQ_AUTH: {
			size_t len;
			const char *pw = pop3_auth_password(&h->s, &len);
			h->auths++;
			h->auth_domain_seen = pop3_auth_domain(&h->s);
			cr_assert_eq(strlen(pw), len, "password not NUL-terminated");
			snprintf(h->auth_pw_seen, sizeof h->auth_pw_seen, "%s", pw);
			int ok = h->auth_domain_seen >= 0 && strcmp(pw, "secret") == 0;
			r = complete(h, r, ok ? 0 : -1);
			break;
		}
		case POP3_REQ_OPEN:
			h->opens++;
			h->open_domain_seen = pop3_auth_domain(&h->s);
			if (h->open_result == 0)
				pop3_set_maildrop(&h->s, h->msgs, h->nmsgs);
			r = complete(h, r, h->open_result);
			break;
		case POP3_REQ_RETR:
			h->retrs++;
			r = retr(h);
			break;
		case POP3_REQ_UPDATE:
			h->updates++;
			for (unsigned i = 0; i < h->nmsgs; i++)
				h->deleted_at_update[i] = h->msgs[i].deleted;
			r = complete(h, r, h->update_result);
			break;
		case POP3_REQ_CLOSE:
			h->closed = true;
			r = POP3_REQ_NONE;
			break;
		default:
			cr_assert_fail("unknown request %d", r);
		}
	}
}

/* Feeds everything like the core would: again after each request, after
 * each flush, and while output is pending, until all is used (or dropped
 * after STLS). */
static void drive(struct harness *h, const char *in, size_t n)
{
	size_t off = 0;
	for (;;) {
		bool more = pop3_output_pending(&h->s);
		if (!(off < n || more) || h->closed || h->pending != POP3_REQ_NONE)
			break;
		size_t used = 12345;
		enum pop3_req r = pop3_feed(&h->s, in + off, n - off, &used, &h->out);
		cr_assert_leq(used, n - off);
		cr_assert_leq(h->out.len, h->out.cap);
		off += used;
		if (r == POP3_REQ_NONE && off < n) {
			/* only a full obuf (or a listing) may stop the machine */
			cr_assert(obuf_room(&h->out) < POP3_REPLY_ROOM || pop3_output_pending(&h->s),
				  "stopped with room left");
			h->stalled = true;
		}
		if (r == POP3_REQ_STLS) {
			h->discarded += n - off; /* RFC 2595 4, as RFC 3207 4.2 */
			off = n;
		}
		handle(h, r);
		flush(h);
	}
	cr_assert(off == n || h->closed || h->pending != POP3_REQ_NONE,
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

#define NEED_TLS                                                                           \
	"S: -ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections"

/* Over TLS, logged in as mailbox@example.com; transcript empty. */
static void login(void)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: USER mailbox@example.com", "S: +OK send PASS", "C: PASS secret",
	       "S: +OK maildrop has 3 messages (116 octets)");
	cr_assert_eq(H.s.auth_domain, 0);
}

/* ------------------------------------------------------------------ */
/* greeting, CAPA */

Test(pop3, greeting)
{
	expect_str(&H, GREETING);
	cr_expect_eq(H.s.auth_domain, -1);
	cr_expect(!pop3_output_pending(&H.s));
	cr_expect_leq(sizeof(struct pop3_session), 400, "the session grew: %zu",
		      sizeof(struct pop3_session));
}

Test(pop3, capa_before_tls_without_plaintext)
{
	expect_str(&H, GREETING);
	DIALOG("C: CAPA",
	       "S: +OK Capability list follows",
	       "S: TOP",
	       "S: UIDL",
	       "S: STLS",
	       "S: RESP-CODES",
	       "S: AUTH-RESP-CODE",
	       "S: PIPELINING",
	       "S: EXPIRE NEVER",
	       "S: IMPLEMENTATION mailpopbox",
	       "S: .");
}

Test(pop3, capa_plaintext_allowed_no_certificate)
{
	H.pol.allow_plaintext_auth = true;
	H.s.tls_available = false;
	expect_str(&H, GREETING);
	DIALOG("C: capa",
	       "S: +OK Capability list follows",
	       "S: TOP",
	       "S: UIDL",
	       "S: USER",
	       "S: SASL PLAIN",
	       "S: RESP-CODES",
	       "S: AUTH-RESP-CODE",
	       "S: PIPELINING",
	       "S: EXPIRE NEVER",
	       "S: IMPLEMENTATION mailpopbox",
	       "S: .");
}

Test(pop3, capa_over_tls_and_in_transaction)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: CAPA",
	       "S: +OK Capability list follows",
	       "S: TOP",
	       "S: UIDL",
	       "S: USER",
	       "S: SASL PLAIN",
	       "S: RESP-CODES",
	       "S: AUTH-RESP-CODE",
	       "S: PIPELINING",
	       "S: EXPIRE NEVER",
	       "S: IMPLEMENTATION mailpopbox",
	       "S: .",
	       "C: USER mailbox@example.com",
	       "C: PASS secret",
	       "C: CAPA",
	       "S: +OK send PASS",
	       "S: +OK maildrop has 3 messages (116 octets)",
	       "S: +OK Capability list follows",
	       "S: TOP",
	       "S: UIDL",
	       "S: RESP-CODES",
	       "S: AUTH-RESP-CODE",
	       "S: PIPELINING",
	       "S: EXPIRE NEVER",
	       "S: IMPLEMENTATION mailpopbox",
	       "S: .");
}

/* ------------------------------------------------------------------ */
/* USER / PASS */

Test(pop3, user_pass_login)
{
	login();
	cr_expect_eq(H.auths, 1);
	cr_expect_eq(H.opens, 1);
	cr_expect_eq(H.auth_domain_seen, 0);
	cr_expect_eq(H.open_domain_seen, 0);
	cr_expect_str_eq(H.auth_pw_seen, "secret");
	cr_expect_eq(pop3_auth_domain(&H.s), 0);
	/* the password does not linger */
	size_t len = 99;
	cr_expect_str_eq(pop3_auth_password(&H.s, &len), "");
	cr_expect_eq(len, 0);
	for (size_t i = 0; i < sizeof H.s.line; i++)
		cr_assert_eq(H.s.line[i], 0, "password left in line[%zu]", i);
}

Test(pop3, user_is_case_insensitive_other_domain)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: user MailBox@Example.ORG", "S: +OK send PASS", "C: pass secret",
	       "S: +OK maildrop has 3 messages (116 octets)");
	cr_expect_eq(H.s.auth_domain, 1);
	cr_expect_eq(H.open_domain_seen, 1);
}

Test(pop3, bad_password_and_unknown_user)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: USER mailbox@example.com", "S: +OK send PASS", "C: PASS wrong",
	       "S: -ERR [AUTH] Authentication failed");
	cr_expect_eq(H.auth_domain_seen, 0);
	cr_expect_eq(H.s.auth_failures, 1);
	/* an unknown identity costs the same: it still goes to the core */
	DIALOG("C: USER someone@example.com", "S: +OK send PASS", "C: PASS secret",
	       "S: -ERR [AUTH] Authentication failed",
	       "C: USER mailbox@example.net", "S: +OK send PASS", "C: PASS secret",
	       "S: -ERR [AUTH] Authentication failed");
	cr_expect_eq(H.auths, 3);
	cr_expect_eq(H.auth_domain_seen, -1);
	cr_expect_eq(H.s.auth_failures, 3);
	cr_expect_eq(H.opens, 0);
	/* the failed PASS used the USER up */
	DIALOG("C: PASS secret", "S: -ERR no USER given");
	cr_expect_eq(H.auths, 3);
	cr_expect_eq(H.s.auth_domain, -1);
	DIALOG("C: STAT", "S: -ERR not logged in");
}

Test(pop3, core_saying_yes_to_unknown_identity_does_not_log_in)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	H.hold = 1u << POP3_REQ_AUTH;
	drive_str(&H, "USER nobody@example.com\r\nPASS x\r\n");
	cr_assert_eq(H.pending, POP3_REQ_AUTH);
	cr_assert_eq(pop3_auth_domain(&H.s), -1);
	complete(&H, POP3_REQ_AUTH, 0);
	expect_str(&H, "+OK send PASS\r\n-ERR [AUTH] Authentication failed\r\n");
	cr_expect_eq(H.s.auth_domain, -1);
}

Test(pop3, password_with_spaces_and_arguments)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: PASS", "S: -ERR invalid arguments",
	       "C: PASS secret", "S: -ERR no USER given",
	       "C: USER", "S: -ERR invalid arguments",
	       "C: USER a b", "S: -ERR invalid arguments",
	       "C: USER mailbox@example.com", "S: +OK send PASS",
	       "C: PASS  pass word ", "S: -ERR [AUTH] Authentication failed");
	cr_expect_str_eq(H.auth_pw_seen, " pass word ");
	/* USER again replaces the first */
	DIALOG("C: USER x@example.com", "S: +OK send PASS",
	       "C: USER mailbox@example.org", "S: +OK send PASS",
	       "C: PASS secret", "S: +OK maildrop has 3 messages (116 octets)");
	cr_expect_eq(H.s.auth_domain, 1);
}

Test(pop3, plaintext_credentials_refused_before_tls)
{
	expect_str(&H, GREETING);
	DIALOG("C: USER mailbox@example.com", NEED_TLS,
	       "C: PASS secret", NEED_TLS,
	       "C: AUTH PLAIN " PLAIN_OK, NEED_TLS,
	       "C: AUTH PLAIN", NEED_TLS,
	       "C: AUTH", "S: +OK SASL mechanisms follow", "S: .");
	cr_expect_eq(H.auths, 0);
	cr_expect_eq(H.s.auth_domain, -1);
}

Test(pop3, plaintext_allowed_by_policy)
{
	H.pol.allow_plaintext_auth = true;
	expect_str(&H, GREETING);
	DIALOG("C: USER mailbox@example.com", "S: +OK send PASS", "C: PASS secret",
	       "S: +OK maildrop has 3 messages (116 octets)");
	cr_expect_eq(H.s.auth_domain, 0);
	cr_expect(!H.s.tls);
}

/* ------------------------------------------------------------------ */
/* AUTH PLAIN (RFC 5034) */

Test(pop3, auth_plain_initial_response)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: AUTH", "S: +OK SASL mechanisms follow", "S: PLAIN", "S: .",
	       "C: auth plain " PLAIN_OK, "S: +OK maildrop has 3 messages (116 octets)");
	cr_expect_eq(H.s.auth_domain, 0);
	cr_expect_str_eq(H.auth_pw_seen, "secret");
	DIALOG("C: AUTH PLAIN " PLAIN_OK, "S: -ERR already logged in");
}

Test(pop3, auth_plain_continuation)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: AUTH PLAIN", "S: + ", "C: " PLAIN_OK,
	       "S: +OK maildrop has 3 messages (116 octets)");
	cr_expect_eq(H.s.auth_domain, 0);
}

Test(pop3, auth_plain_authzid)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	/* authzid = authcid: fine */
	DIALOG("C: AUTH PLAIN "
	       "bWFpbGJveEBleGFtcGxlLm9yZwBtYWlsYm94QGV4YW1wbGUub3JnAHNlY3JldA==",
	       "S: +OK maildrop has 3 messages (116 octets)");
	cr_expect_eq(H.s.auth_domain, 1);
}

Test(pop3, auth_plain_failures)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: AUTH PLAIN", "S: + ", "C: *", "S: -ERR authentication cancelled",
	       "C: AUTH PLAIN", "S: + ", "C: not base64!", "S: -ERR invalid PLAIN response",
	       "C: AUTH PLAIN =", "S: -ERR invalid PLAIN response",
	       /* no password */
	       "C: AUTH PLAIN AG1haWxib3hAZXhhbXBsZS5jb20A", "S: -ERR invalid PLAIN response",
	       "C: AUTH LOGIN", "S: -ERR unsupported authentication mechanism",
	       "C: AUTH PLAIN a b", "S: -ERR invalid arguments",
	       "C: AUTH PLAIN AG1haWxib3hAZXhhbXBsZS5jb20Ad3Jvbmc=",
	       "S: -ERR [AUTH] Authentication failed");
	cr_expect_eq(H.auths, 1);
	cr_expect_str_eq(H.auth_pw_seen, "wrong");
	/* acting as another identity fails like a wrong password */
	DIALOG("C: AUTH PLAIN b3RoZXJAZXhhbXBsZS5jb20AbWFpbGJveEBleGFtcGxlLmNvbQBzZWNyZXQ=",
	       "S: -ERR [AUTH] Authentication failed");
	cr_expect_eq(H.auths, 2);
	cr_expect_eq(H.auth_domain_seen, -1);
	cr_expect_eq(H.s.auth_failures, 2);
	/* a NUL or an over-long line ends the exchange too */
	DIALOG("C: AUTH PLAIN", "S: + ");
	drive(&H, "A\0B\r\n", 5);
	expect_str(&H, "-ERR NUL octet in command line\r\n");
	char line[400];
	memset(line, 'A', 300);
	strcpy(line + 300, "\r\nNOOP\r\n");
	DIALOG("C: AUTH PLAIN", "S: + ");
	drive_str(&H, line);
	expect_str(&H, "-ERR line too long\r\n-ERR not logged in\r\n");
	cr_expect_eq(H.s.auth_domain, -1);
}

/* ------------------------------------------------------------------ */
/* STLS (RFC 2595) */

Test(pop3, stls_discards_pipelined_input)
{
	expect_str(&H, GREETING);
	DIALOG("C: STLS", "C: USER mailbox@example.com", "S: +OK Begin TLS negotiation");
	cr_expect_eq(H.starttls, 1);
	cr_expect_eq(H.discarded, strlen("USER mailbox@example.com\r\n"));
	cr_expect(H.s.tls);
	/* no new greeting; AUTHORIZATION again, credentials now allowed */
	DIALOG("C: CAPA",
	       "S: +OK Capability list follows",
	       "S: TOP",
	       "S: UIDL",
	       "S: USER",
	       "S: SASL PLAIN",
	       "S: RESP-CODES",
	       "S: AUTH-RESP-CODE",
	       "S: PIPELINING",
	       "S: EXPIRE NEVER",
	       "S: IMPLEMENTATION mailpopbox",
	       "S: .",
	       "C: STLS", "S: -ERR TLS already active",
	       "C: USER mailbox@example.com", "S: +OK send PASS",
	       "C: PASS secret", "S: +OK maildrop has 3 messages (116 octets)",
	       "C: STLS", "S: -ERR already logged in");
}

Test(pop3, stls_forgets_user_and_partial_line)
{
	H.pol.allow_plaintext_auth = true;
	expect_str(&H, GREETING);
	DIALOG("C: USER mailbox@example.com", "S: +OK send PASS", "C: STLS",
	       "S: +OK Begin TLS negotiation", "C: PASS secret", "S: -ERR no USER given");
}

Test(pop3, stls_unavailable_args_and_failure)
{
	H.s.tls_available = false;
	expect_str(&H, GREETING);
	DIALOG("C: STLS", "S: -ERR STLS not available");
	H.s.tls_available = true;
	DIALOG("C: STLS now", "S: -ERR invalid arguments");
	H.tls_result = -1;
	DIALOG("C: STLS", "C: NOOP", "S: +OK Begin TLS negotiation");
	cr_expect(H.closed);
	cr_expect(!H.s.tls);
	size_t used = 7;
	cr_expect_eq(pop3_feed(&H.s, "NOOP\r\n", 6, &used, &H.out), POP3_REQ_CLOSE);
	cr_expect_eq(used, 0);
}

/* ------------------------------------------------------------------ */
/* the maildrop lock */

Test(pop3, in_use_and_open_failure)
{
	H.s.tls = true;
	H.open_result = -EAGAIN;
	expect_str(&H, GREETING);
	DIALOG("C: USER mailbox@example.com", "C: PASS secret", "C: STAT",
	       "S: +OK send PASS",
	       "S: -ERR [IN-USE] maildrop is locked by another session",
	       "S: -ERR not logged in");
	cr_expect_eq(H.s.auth_domain, -1);
	cr_expect_eq(pop3_auth_domain(&H.s), -1);
	cr_expect_eq(H.s.auth_failures, 0);
	H.open_result = -EIO;
	DIALOG("C: AUTH PLAIN " PLAIN_OK, "S: -ERR [SYS/TEMP] cannot open the maildrop");
	cr_expect_eq(H.s.auth_domain, -1);
	H.open_result = 0;
	DIALOG("C: AUTH PLAIN " PLAIN_OK, "S: +OK maildrop has 3 messages (116 octets)");
	cr_expect_eq(H.opens, 3);
	cr_expect_eq(H.s.auth_domain, 0);
}

/* ------------------------------------------------------------------ */
/* TRANSACTION */

Test(pop3, stat_list_uidl)
{
	login();
	DIALOG("C: STAT", "S: +OK 3 116",
	       "C: LIST", "S: +OK 3 messages (116 octets)", "S: 1 47", "S: 2 48", "S: 3 21", "S: .",
	       "C: LIST 2", "S: +OK 2 48",
	       "C: list   3  ", "S: +OK 3 21",
	       "C: LIST 0", "S: -ERR no such message",
	       "C: LIST 4", "S: -ERR no such message",
	       "C: LIST x", "S: -ERR no such message",
	       "C: LIST -1", "S: -ERR no such message",
	       "C: LIST 99999999999999999999999", "S: -ERR no such message",
	       "C: LIST 1 2", "S: -ERR invalid arguments",
	       "C: UIDL", "S: +OK", "S: 1 uid-1", "S: 2 uid-2", "S: 3 uid-3", "S: .",
	       "C: UIDL 3", "S: +OK 3 uid-3",
	       "C: UIDL 4", "S: -ERR no such message",
	       "C: NOOP", "S: +OK",
	       "C: NOOP x", "S: -ERR invalid arguments",
	       "C: STAT x", "S: -ERR invalid arguments");
}

Test(pop3, empty_maildrop)
{
	set_drop(&H, 0);
	H.s.tls = true;
	expect_str(&H, GREETING);
	DIALOG("C: USER mailbox@example.com", "C: PASS secret", "C: STAT", "C: LIST", "C: UIDL",
	       "C: RETR 1",
	       "S: +OK send PASS", "S: +OK maildrop has 0 messages (0 octets)", "S: +OK 0 0",
	       "S: +OK 0 messages (0 octets)", "S: .", "S: +OK", "S: .",
	       "S: -ERR no such message");
}

Test(pop3, retr_and_top)
{
	login();
	DIALOG("C: RETR 1",
	       "S: +OK 47 octets",
	       "S: Subject: one",
	       "S: ",
	       "S: Hello",
	       "S: ..hidden",
	       "S: ...two",
	       "S: ..",
	       "S: end",
	       "S: .");
	cr_expect_eq(H.retr_index_seen, 0);
	cr_expect_eq(H.retr_lines_seen, -1);
	DIALOG("C: RETR 3", "S: +OK 21 octets", "S: X: y", "S: ", "S: no final crlf", "S: .",
	       "C: TOP 2 0", "S: +OK top of message follows", "S: Subject: two",
	       "S: From: a@b.example", "S: ", "S: .",
	       "C: TOP 2 2", "S: +OK top of message follows", "S: Subject: two",
	       "S: From: a@b.example", "S: ", "S: l1", "S: ..l2", "S: .",
	       "C: top 2 99999999999999999999999", "S: +OK top of message follows",
	       "S: Subject: two", "S: From: a@b.example", "S: ", "S: l1", "S: ..l2", "S: l3",
	       "S: .");
	cr_expect_eq(H.retr_index_seen, 1);
	cr_expect_gt(H.retr_lines_seen, 1000000);
	DIALOG("C: RETR", "S: -ERR invalid arguments",
	       "C: RETR 4", "S: -ERR no such message",
	       "C: TOP 1", "S: -ERR invalid arguments",
	       "C: TOP 1 x", "S: -ERR invalid arguments",
	       "C: TOP 1 -1", "S: -ERR invalid arguments",
	       "C: TOP 5 1", "S: -ERR no such message");
	cr_expect_eq(H.retrs, 5);
}

Test(pop3, retr_pipelined_between_commands)
{
	login();
	DIALOG("C: STAT", "C: TOP 3 0", "C: NOOP", "C: LIST 1",
	       "S: +OK 3 116", "S: +OK top of message follows", "S: X: y", "S: ", "S: .",
	       "S: +OK", "S: +OK 1 47");
}

Test(pop3, retr_of_a_vanished_file)
{
	login();
	H.retr_result = -ENOENT;
	DIALOG("C: RETR 2", "C: TOP 2 1", "C: STAT",
	       "S: -ERR no such message (removed by another tool)",
	       "S: -ERR no such message (removed by another tool)",
	       "S: +OK 3 116");
	H.retr_result = -EMFILE;
	DIALOG("C: RETR 2", "S: -ERR [SYS/TEMP] cannot read the message");
	H.retr_result = 0;
	DIALOG("C: RETR 3", "S: +OK 21 octets", "S: X: y", "S: ", "S: no final crlf", "S: .");
}

Test(pop3, retr_failing_midway_closes)
{
	login();
	H.retr_fail_midway = true;
	DIALOG("C: RETR 1", "C: NOOP", "S: +OK 47 octets");
	cr_expect(H.closed);
	cr_expect_eq(H.updates, 0);
}

Test(pop3, dele_rset_quit_update)
{
	login();
	DIALOG("C: DELE 2", "S: +OK message 2 deleted",
	       "C: DELE 2", "S: -ERR no such message",
	       "C: RETR 2", "S: -ERR no such message",
	       "C: TOP 2 0", "S: -ERR no such message",
	       "C: LIST 2", "S: -ERR no such message",
	       "C: UIDL 2", "S: -ERR no such message",
	       "C: STAT", "S: +OK 2 68",
	       "C: LIST", "S: +OK 2 messages (68 octets)", "S: 1 47", "S: 3 21", "S: .",
	       "C: UIDL", "S: +OK", "S: 1 uid-1", "S: 3 uid-3", "S: .",
	       "C: RSET", "S: +OK maildrop has 3 messages (116 octets)",
	       "C: STAT", "S: +OK 3 116",
	       "C: DELE 1", "S: +OK message 1 deleted",
	       "C: DELE 3", "S: +OK message 3 deleted",
	       "C: RSET x", "S: -ERR invalid arguments",
	       "C: STAT", "S: +OK 1 48",
	       "C: QUIT", "C: NOOP", "S: +OK " HOST " POP3 server signing off");
	cr_expect(H.closed);
	cr_expect_eq(H.updates, 1);
	cr_expect(H.deleted_at_update[0]);
	cr_expect(!H.deleted_at_update[1]);
	cr_expect(H.deleted_at_update[2]);
}

Test(pop3, quit_with_nothing_marked_still_updates)
{
	login();
	DIALOG("C: QUIT", "S: +OK " HOST " POP3 server signing off");
	cr_expect(H.closed);
	cr_expect_eq(H.updates, 1);
}

Test(pop3, quit_update_failure)
{
	login();
	H.update_result = -EIO;
	DIALOG("C: DELE 1", "C: QUIT", "S: +OK message 1 deleted",
	       "S: -ERR [SYS/TEMP] marked messages could not all be removed");
	cr_expect(H.closed);
	cr_expect_eq(H.updates, 1);
}

Test(pop3, quit_in_authorization)
{
	expect_str(&H, GREETING);
	DIALOG("C: QUIT", "C: CAPA", "S: +OK " HOST " POP3 server signing off");
	cr_expect(H.closed);
	cr_expect_eq(H.updates, 0);
	DIALOG("C: QUIT x");
	expect_str(&H, "");
}

Test(pop3, quit_arguments)
{
	expect_str(&H, GREETING);
	DIALOG("C: QUIT now", "S: -ERR invalid arguments");
	cr_expect(!H.closed);
}

/* ------------------------------------------------------------------ */
/* every command in every state */

struct cell {
	const char *cmd;
	const char *authz; /* reply before login (first line) */
	const char *trans; /* reply after login (first line) */
};

static const struct cell matrix[] = {
	{"USER mailbox@example.com", "+OK send PASS", "-ERR already logged in"},
	{"PASS secret", "-ERR no USER given", "-ERR already logged in"},
	{"AUTH", "+OK SASL mechanisms follow", "-ERR already logged in"},
	{"AUTH LOGIN", "-ERR unsupported authentication mechanism", "-ERR already logged in"},
	{"STLS", "-ERR TLS already active", "-ERR already logged in"},
	{"CAPA", "+OK Capability list follows", "+OK Capability list follows"},
	{"STAT", "-ERR not logged in", "+OK 3 116"},
	{"LIST", "-ERR not logged in", "+OK 3 messages (116 octets)"},
	{"LIST 1", "-ERR not logged in", "+OK 1 47"},
	{"UIDL", "-ERR not logged in", "+OK"},
	{"UIDL 1", "-ERR not logged in", "+OK 1 uid-1"},
	{"RETR 3", "-ERR not logged in", "+OK 21 octets"},
	{"TOP 3 0", "-ERR not logged in", "+OK top of message follows"},
	{"DELE 9", "-ERR not logged in", "-ERR no such message"},
	{"NOOP", "-ERR not logged in", "+OK"},
	{"RSET", "-ERR not logged in", "+OK maildrop has 3 messages (116 octets)"},
	{"APOP mailbox@example.com 0123456789abcdef", "-ERR unknown command",
	 "-ERR unknown command"},
	{"XTND", "-ERR unknown command", "-ERR unknown command"},
	{"", "-ERR unknown command", "-ERR unknown command"},
	{"QUIT", "+OK " HOST " POP3 server signing off", "+OK " HOST " POP3 server signing off"},
};

static void check_cell(const char *cmd, const char *want, bool trans)
{
	char in[300];
	snprintf(in, sizeof in, "%s\r\n", cmd);
	H.trlen = 0;
	drive_str(&H, in);
	size_t n = strlen(want);
	cr_assert(H.trlen >= n + 2 && memcmp(H.tr, want, n) == 0 && H.tr[n] == '\r',
		  "%s in %s: got\n%s\nwant %s", cmd, trans ? "TRANSACTION" : "AUTHORIZATION",
		  tr_escape(H.tr, H.trlen), want);
}

Test(pop3, state_command_matrix)
{
	for (size_t i = 0; i < sizeof matrix / sizeof matrix[0]; i++) {
		for (int t = 0; t < 2; t++) {
			setup();
			if (t)
				login();
			else
				H.s.tls = true;
			check_cell(matrix[i].cmd, t ? matrix[i].trans : matrix[i].authz, t);
			/* the session goes on unless it was QUIT */
			bool quit = strcmp(matrix[i].cmd, "QUIT") == 0;
			cr_assert_eq(H.closed, quit, "%s", matrix[i].cmd);
			if (!quit && t) {
				check_cell("STAT", "+OK 3 116", true);
			}
		}
	}
}

/* ------------------------------------------------------------------ */
/* framing, errors */

Test(pop3, verbs_are_case_insensitive_and_bare_lf_ends_a_line)
{
	login();
	drive_str(&H, "stat\nNoOp\r\nsTaT \t\r\n");
	expect_str(&H, "+OK 3 116\r\n+OK\r\n+OK 3 116\r\n");
	drive_str(&H, "NOOP\r\r\n");
	expect_str(&H, "-ERR unknown command\r\n");
	drive(&H, "NO\0OP\r\n", 7);
	expect_str(&H, "-ERR NUL octet in command line\r\n");
}

Test(pop3, line_length_limit)
{
	login();
	char line[600];
	/* 255 octets with the CRLF: fine (trailing blanks are ignored) */
	memset(line, ' ', sizeof line);
	memcpy(line, "NOOP", 4);
	memcpy(line + 253, "\r\n", 3);
	drive_str(&H, line);
	expect_str(&H, "+OK\r\n");
	/* 256: too long, and the rest of the line is not executed */
	memcpy(line + 253, " \r\n", 4);
	drive_str(&H, line);
	expect_str(&H, "-ERR line too long\r\n");
	/* a bare LF line: 254 + LF fits, 255 + LF does not */
	memcpy(line + 253, " \n", 3);
	drive_str(&H, line);
	expect_str(&H, "+OK\r\n");
	memcpy(line + 253, "  \n", 4);
	drive_str(&H, line);
	expect_str(&H, "-ERR line too long\r\n");
	/* a long line in pieces: answered once, discarded to its LF */
	memset(line, 'X', sizeof line);
	drive(&H, line, 100);
	expect_str(&H, "");
	drive(&H, line, 200);
	expect_str(&H, "-ERR line too long\r\n");
	drive(&H, line, 300);
	drive_str(&H, "DELE 1\r\nSTAT\r\n");
	expect_str(&H, "+OK 3 116\r\n");
	cr_expect(!H.msgs[0].deleted);
}

Test(pop3, too_many_errors_close)
{
	login();
	for (int i = 1; i < POP3_MAX_ERRORS; i++) {
		drive_str(&H, "BOGUS\r\n");
		expect_str(&H, "-ERR unknown command\r\n");
	}
	drive_str(&H, "DELE 9\r\nNOOP\r\n");
	expect_str(&H, "-ERR no such message\r\n-ERR Too many errors, closing connection\r\n");
	cr_expect(H.closed);
	cr_expect_eq(H.updates, 0);
}

Test(pop3, failed_logins_count_as_errors)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	for (int i = 1; i < POP3_MAX_ERRORS; i++) {
		drive_str(&H, "AUTH PLAIN AG1haWxib3hAZXhhbXBsZS5jb20Ad3Jvbmc=\r\n");
		expect_str(&H, "-ERR [AUTH] Authentication failed\r\n");
	}
	drive_str(&H, "AUTH PLAIN AG1haWxib3hAZXhhbXBsZS5jb20Ad3Jvbmc=\r\n");
	expect_str(&H, "-ERR [AUTH] Authentication failed\r\n"
		       "-ERR Too many errors, closing connection\r\n");
	cr_expect(H.closed);
}

Test(pop3, core_protocol_errors)
{
	H.s.tls = true;
	expect_str(&H, GREETING);
	H.hold = 1u << POP3_REQ_AUTH;
	drive_str(&H, "AUTH PLAIN " PLAIN_OK "\r\n");
	cr_assert_eq(H.pending, POP3_REQ_AUTH);
	size_t used = 9;
	/* fed while a request is outstanding */
	cr_expect_eq(pop3_feed(&H.s, "NOOP\r\n", 6, &used, &H.out), POP3_REQ_CLOSE);
	cr_expect_eq(used, 0);
	flush(&H);
	expect_str(&H, "-ERR [SYS/TEMP] internal error\r\n");
	cr_expect_eq(pop3_complete(&H.s, POP3_REQ_AUTH, 0, &H.out), POP3_REQ_CLOSE);
}

Test(pop3, complete_of_the_wrong_request)
{
	login();
	cr_expect_eq(pop3_complete(&H.s, POP3_REQ_RETR, 0, &H.out), POP3_REQ_CLOSE);
	flush(&H);
	expect_str(&H, "-ERR [SYS/TEMP] internal error\r\n");
}

Test(pop3, timeout)
{
	login();
	pop3_timeout(&H.s, &H.out);
	flush(&H);
	expect_str(&H, "-ERR Disconnected for inactivity\r\n");
	size_t used = 1;
	cr_expect_eq(pop3_feed(&H.s, "QUIT\r\n", 6, &used, &H.out), POP3_REQ_CLOSE);
	cr_expect_eq(used, 0);
}

Test(pop3, retr_ok_outside_retr_is_ignored)
{
	login();
	pop3_retr_ok(&H.s, &H.out);
	cr_expect_eq(H.out.len, 0);
}

/* ------------------------------------------------------------------ */
/* listings longer than the obuf */

static void build_listing(char *want, size_t cap, unsigned n, bool uidl, unsigned skip)
{
	size_t len = 0;
	uint64_t total = 0;
	unsigned count = 0;
	for (unsigned i = 0; i < n; i++)
		if (i + 1 != skip) {
			total += H.msgs[i].size;
			count++;
		}
	if (uidl)
		len += (size_t)snprintf(want + len, cap - len, "+OK\r\n");
	else
		len += (size_t)snprintf(want + len, cap - len, "+OK %u messages (%llu octets)\r\n",
					count, (unsigned long long)total);
	for (unsigned i = 0; i < n; i++) {
		if (i + 1 == skip)
			continue;
		if (uidl)
			len += (size_t)snprintf(want + len, cap - len, "%u %s\r\n", i + 1,
						H.msgs[i].uid);
		else
			len += (size_t)snprintf(want + len, cap - len, "%u %llu\r\n", i + 1,
						(unsigned long long)H.msgs[i].size);
	}
	snprintf(want + len, cap - len, ".\r\n");
}

Test(pop3, long_listings_continue)
{
	setup_with(POP3_REPLY_ROOM + 40);
	set_drop(&H, 300);
	/* long UIDs: the widest listing lines */
	for (unsigned i = 0; i < 300; i++) {
		memset(H.msgs[i].uid, 'u', POP3_UID_MAX);
		H.msgs[i].uid[POP3_UID_MAX] = '\0';
		H.msgs[i].uid[0] = (char)('A' + i % 26);
	}
	H.s.tls = true;
	H.trlen = 0;
	drive_str(&H, "USER mailbox@example.com\r\nPASS secret\r\nDELE 7\r\n");
	H.trlen = 0;
	static char want[1 << 16], all[1 << 17];
	/* pipelined: STAT must come after the whole listing */
	drive_str(&H, "LIST\r\nSTAT\r\nUIDL\r\nNOOP\r\n");
	build_listing(want, sizeof want, 300, false, 7);
	strcpy(all, want);
	strcat(all, "+OK 299 ");
	char num[32];
	uint64_t total = 0;
	for (unsigned i = 0; i < 300; i++)
		if (i != 6)
			total += H.msgs[i].size;
	snprintf(num, sizeof num, "%llu\r\n", (unsigned long long)total);
	strcat(all, num);
	build_listing(want, sizeof want, 300, true, 7);
	strcat(all, want);
	strcat(all, "+OK\r\n");
	expect_str(&H, all);
	cr_expect(H.stalled);
	cr_expect(!pop3_output_pending(&H.s));
}

Test(pop3, listing_continues_with_no_input)
{
	setup_with(POP3_REPLY_ROOM);
	set_drop(&H, 300);
	H.s.tls = true;
	drive_str(&H, "USER mailbox@example.com\r\nPASS secret\r\n");
	H.trlen = 0;
	size_t used;
	cr_assert_eq(pop3_feed(&H.s, "LIST\r\n", 6, &used, &H.out), POP3_REQ_NONE);
	cr_assert_eq(used, 6);
	unsigned calls = 0;
	while (pop3_output_pending(&H.s)) {
		flush(&H);
		cr_assert_eq(pop3_feed(&H.s, NULL, 0, &used, &H.out), POP3_REQ_NONE);
		cr_assert_eq(used, 0);
		cr_assert_lt(++calls, 100);
	}
	flush(&H);
	cr_expect_gt(calls, 1);
	static char want[1 << 16];
	build_listing(want, sizeof want, 300, false, 0);
	expect_str(&H, want);
}

/* ------------------------------------------------------------------ */
/* the same dialogue whatever the cuts */

static const char script[] =
	"CAPA\r\nUSER mailbox@example.com\r\nPASS wrong\r\nAUTH PLAIN\r\n" PLAIN_OK "\r\n"
	"STAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\nTOP 2 1\r\nDELE 2\r\nBOGUS\r\n"
	"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
	"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
	"XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
	"XXXXXXXX\r\nnoop\nLIST 2\r\nRSET\r\nDELE 1\r\nQUIT\r\nNOOP\r\n";

static char *transcript_of(const size_t *cuts, size_t ncuts, size_t outcap, size_t *len)
{
	setup_with(outcap);
	H.s.tls = true;
	size_t n = sizeof script - 1, off = 0;
	for (size_t k = 0; k <= ncuts; k++) {
		size_t end = k < ncuts ? cuts[k] : n;
		drive(&H, script + off, end - off);
		off = end;
	}
	char *t = malloc(H.trlen);
	memcpy(t, H.tr, H.trlen);
	*len = H.trlen;
	cr_assert(H.closed);
	cr_assert_eq(H.updates, 1);
	return t;
}

Test(pop3, split_at_every_byte)
{
	size_t reflen;
	char *ref = transcript_of(NULL, 0, sizeof H.outbuf, &reflen);
	cr_assert(memmem(ref, reflen, "...two", 6));
	cr_assert(memmem(ref, reflen, "-ERR line too long", 18));
	size_t n = sizeof script - 1;
	for (size_t k = 1; k < n; k++) {
		size_t len;
		char *t = transcript_of(&k, 1, sizeof H.outbuf, &len);
		cr_assert(len == reflen && memcmp(t, ref, len) == 0, "cut at %zu:\n%s\n--- vs\n%s",
			  k, tr_escape(t, len), tr_escape(ref, reflen));
		free(t);
	}
	/* one byte at a time, into a small obuf */
	size_t cuts[sizeof script];
	for (size_t k = 0; k + 1 < n; k++)
		cuts[k] = k + 1;
	size_t len;
	char *t = transcript_of(cuts, n - 1, POP3_REPLY_ROOM, &len);
	cr_assert(len == reflen && memcmp(t, ref, len) == 0, "bytewise:\n%s\n--- vs\n%s",
		  tr_escape(t, len), tr_escape(ref, reflen));
	free(t);
	free(ref);
}

/* ------------------------------------------------------------------ */
/* pop3_stuff */

/* Stuffs `in` cut at `cut` (and again at every byte if bytewise), into an
 * obuf of `cap` bytes flushed when full. */
static size_t stuff(const char *in, size_t n, long lines, size_t cut, bool bytewise, size_t cap,
		    char *res, size_t rescap)
{
	char buf[64];
	struct obuf out = {buf, 0, cap};
	struct pop3_stuffer st;
	size_t rlen = 0;
	pop3_stuff_init(&st, lines);
	size_t off = 0;
	while (off < n) {
		size_t end = off < cut ? cut : n;
		if (bytewise)
			end = off + 1;
		size_t o = off;
		while (o < end) {
			size_t before = out.len;
			size_t k = pop3_stuff(&st, in + o, end - o, &out);
			cr_assert_leq(k, end - o);
			cr_assert_leq(out.len, out.cap);
			if (k < end - o)
				cr_assert(obuf_room(&out) < 2, "stopped with room");
			cr_assert(k > 0 || out.len > before || obuf_room(&out) < 2);
			o += k;
			cr_assert_leq(rlen + out.len, rescap);
			memcpy(res + rlen, out.p, out.len);
			rlen += out.len;
			out.len = 0;
		}
		off = end;
	}
	out.cap = sizeof buf; /* pop3_stuff_end needs 5 octets */
	pop3_stuff_end(&st, &out);
	memcpy(res + rlen, out.p, out.len);
	return rlen + out.len;
}

static void stuff_case(const char *in, long lines, const char *want)
{
	size_t n = strlen(in), wn = strlen(want);
	static char res[4096];
	static const size_t caps[] = {2, 3, 5, 64};
	for (size_t c = 0; c < sizeof caps / sizeof caps[0]; c++) {
		for (size_t cut = 0; cut <= n; cut++) {
			for (int bw = 0; bw < 2; bw++) {
				size_t len = stuff(in, n, lines, cut, bw, caps[c], res, sizeof res);
				cr_assert(len == wn && memcmp(res, want, wn) == 0,
					  "lines %ld cut %zu cap %zu bytewise %d:\n%s\n--- expected:\n%s",
					  lines, cut, caps[c], bw, tr_escape(res, len),
					  tr_escape(want, wn));
			}
		}
	}
}

Test(pop3, stuff_dots)
{
	stuff_case("", -1, ".\r\n");
	stuff_case(".\r\n", -1, "..\r\n.\r\n");
	stuff_case("..\r\n", -1, "...\r\n.\r\n");
	stuff_case(".foo\r\nbar.\r\n.\r\n", -1, "..foo\r\nbar.\r\n..\r\n.\r\n");
	stuff_case("a\r\n.\r\n.", -1, "a\r\n..\r\n..\r\n.\r\n");
	stuff_case(M1, -1,
		   "Subject: one\r\n\r\nHello\r\n..hidden\r\n...two\r\n..\r\nend\r\n.\r\n");
	/* a dot not at the start of a line is not stuffed; nor after a bare CR */
	stuff_case("a.b\r\n\r.x\r\n", -1, "a.b\r\n\r.x\r\n.\r\n");
	/* a bare LF ends a line too */
	stuff_case("x\n.y\n", -1, "x\n..y\n.\r\n");
}

Test(pop3, stuff_final_crlf)
{
	stuff_case("no end", -1, "no end\r\n.\r\n");
	stuff_case("cr end\r", -1, "cr end\r\n.\r\n");
	stuff_case("a\r\n\r", -1, "a\r\n\r\n.\r\n");
	stuff_case("a\r\n.", -1, "a\r\n..\r\n.\r\n");
	stuff_case(M3, -1, "X: y\r\n\r\nno final crlf\r\n.\r\n");
}

Test(pop3, stuff_top_limits)
{
	const char *m = "A: 1\r\nB: 2\r\n\r\nl1\r\n\r\n.l3\r\nl4\r\n";
	stuff_case(m, 0, "A: 1\r\nB: 2\r\n\r\n.\r\n");
	stuff_case(m, 1, "A: 1\r\nB: 2\r\n\r\nl1\r\n.\r\n");
	stuff_case(m, 2, "A: 1\r\nB: 2\r\n\r\nl1\r\n\r\n.\r\n");
	stuff_case(m, 3, "A: 1\r\nB: 2\r\n\r\nl1\r\n\r\n..l3\r\n.\r\n");
	stuff_case(m, 4, "A: 1\r\nB: 2\r\n\r\nl1\r\n\r\n..l3\r\nl4\r\n.\r\n");
	stuff_case(m, 100, "A: 1\r\nB: 2\r\n\r\nl1\r\n\r\n..l3\r\nl4\r\n.\r\n");
	/* no blank line: all headers */
	stuff_case("A: 1\r\nB: 2", 0, "A: 1\r\nB: 2\r\n.\r\n");
	/* the body's last line without CRLF */
	stuff_case("A: 1\r\n\r\nx", 5, "A: 1\r\n\r\nx\r\n.\r\n");
	/* a message that starts with the blank line */
	stuff_case("\r\nbody\r\nmore\r\n", 1, "\r\nbody\r\n.\r\n");
	/* bare LF blank line ends the headers too */
	stuff_case("A: 1\n\nb1\nb2\n", 1, "A: 1\n\nb1\n.\r\n");
}

Test(pop3, stuff_top_done_skips_the_rest)
{
	struct pop3_stuffer st;
	char buf[256];
	struct obuf out = {buf, 0, sizeof buf};
	pop3_stuff_init(&st, 0);
	const char *m = "A: 1\r\n\r\nbody\r\n";
	cr_expect_eq(pop3_stuff(&st, m, strlen(m), &out), strlen(m));
	cr_expect(st.done);
	cr_expect_eq(pop3_stuff(&st, "more", 4, &out), 4);
	pop3_stuff_end(&st, &out);
	cr_expect_eq(out.len, strlen("A: 1\r\n\r\n.\r\n"));
	cr_expect(memcmp(buf, "A: 1\r\n\r\n.\r\n", out.len) == 0);
}
