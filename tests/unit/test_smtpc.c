/* Unit tests for proto/smtpc.c: the relay's client dialogue, byte for byte.
 *
 * A transcript is a list of "S: " lines (what the remote server sends, CRLF
 * added) and "C: " lines (exactly what the client must write in answer, CRLF
 * added). Consecutive S: lines arrive in one read; the C: lines after them
 * must be what the client wrote. A mock core answers the machine's requests:
 * STARTTLS (succeeds or fails as the test sets), BODY (streams H.body in
 * chunks through smtpc_body), CLOSE. */
#include "proto/smtpc.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tests/unit/transcript.h"

#define ME "mx.example.com"

struct harness {
	struct smtpc_policy pol;
	struct smtpc_msg msg;
	struct smtpc_rcpt rcpt[16];
	struct smtpc_session s;
	struct obuf out;
	char outbuf[1 << 16];
	char tr[1 << 17]; /* what the client wrote, not yet checked */
	size_t trlen;
	const char *body; /* the queued message file */
	size_t body_chunk;  /* how the core reads it */
	size_t read_chunk;  /* how the core cuts the server's bytes (0 = whole) */
	int tls_result, body_result;
	unsigned starttls, bodies, idles;
	bool closed;
	size_t discarded;   /* input dropped after STARTTLS */
	uint32_t seqs[64];  /* wait changes seen */
	enum smtpc_wait waits[64];
	unsigned nwaits;
};

static struct harness H;

static void note_wait(struct harness *h)
{
	uint32_t seq;
	enum smtpc_wait w = smtpc_wait(&h->s, NULL, &seq);
	if (h->nwaits && h->seqs[h->nwaits - 1] == seq)
		return;
	if (h->nwaits < 64) {
		h->seqs[h->nwaits] = seq;
		h->waits[h->nwaits++] = w;
	}
}

static void flush(struct harness *h)
{
	cr_assert_leq(h->out.len, h->out.cap);
	cr_assert(h->trlen + h->out.len <= sizeof h->tr);
	memcpy(h->tr + h->trlen, h->out.p, h->out.len);
	h->trlen += h->out.len;
	h->out.len = 0;
}

static void setup_rcpts(struct harness *h, unsigned n)
{
	static char addrs[16][64];
	for (unsigned i = 0; i < n; i++) {
		snprintf(addrs[i], sizeof addrs[i], "%s@remote.test",
			 i == 0 ? "bob" : i == 1 ? "carol" : "r");
		if (i >= 2)
			snprintf(addrs[i], sizeof addrs[i], "r%u@remote.test", i);
		h->rcpt[i] = (struct smtpc_rcpt){.addr = addrs[i]};
	}
	h->msg.nrcpt = n;
}

static void start(struct harness *h)
{
	memset(&h->s, 0, sizeof h->s);
	smtpc_start(&h->s, &h->pol, &h->msg);
	note_wait(h);
}

static void setup_with(size_t outcap)
{
	struct harness *h = &H;
	memset(h, 0, sizeof *h);
	h->pol = (struct smtpc_policy){.hostname = ME, .tls = SMTPC_TLS_OPPORTUNISTIC};
	h->msg = (struct smtpc_msg){.from = "alice@example.com", .size = 100, .rcpt = h->rcpt};
	setup_rcpts(h, 2);
	h->out = (struct obuf){h->outbuf, 0, outcap};
	h->body = "Subject: hi\r\n\r\n.dot line\r\nend\r\n";
	h->body_chunk = 7;
	start(h);
}

static void setup(void) { setup_with(sizeof H.outbuf); }

TestSuite(smtpc, .init = setup);

static enum smtpc_req handle(struct harness *h, enum smtpc_req r)
{
	while (r == SMTPC_REQ_STARTTLS || r == SMTPC_REQ_BODY) {
		flush(h);
		note_wait(h);
		if (r == SMTPC_REQ_STARTTLS) {
			h->starttls++;
			r = smtpc_complete(&h->s, r, h->tls_result, &h->out);
		} else {
			h->bodies++;
			size_t len = strlen(h->body), p = 0;
			while (p < len) {
				size_t k = len - p < h->body_chunk ? len - p : h->body_chunk;
				size_t used = smtpc_body(&h->s, h->body + p, k, &h->out);
				cr_assert(used > 0 || obuf_room(&h->out) < 3, "body stalled with room");
				p += used;
				flush(h);
			}
			r = smtpc_complete(&h->s, r, h->body_result, &h->out);
		}
	}
	if (r == SMTPC_REQ_CLOSE) {
		cr_assert(smtpc_done(&h->s), "CLOSE with undecided recipients");
		h->closed = true;
	}
	if (r == SMTPC_REQ_IDLE) {
		cr_assert(smtpc_done(&h->s), "IDLE with undecided recipients");
		cr_assert(smtpc_idle(&h->s));
		h->idles++;
	}
	flush(h);
	note_wait(h);
	return r;
}

/* Feeds like the core: in reads of read_chunk octets, again after every
 * request and every flush, until all is used and nothing more is written. */
static void drive(struct harness *h, const char *in, size_t n)
{
	size_t off = 0;
	while (!h->closed) {
		size_t piece = n - off;
		if (h->read_chunk && piece > h->read_chunk)
			piece = h->read_chunk;
		size_t used = 12345;
		enum smtpc_req r = smtpc_feed(&h->s, in + off, piece, &used, &h->out);
		cr_assert_leq(used, piece);
		bool wrote = h->out.len > 0;
		off += used;
		if (r == SMTPC_REQ_NONE && used < piece)
			cr_assert_lt(obuf_room(&h->out), SMTPC_CMD_ROOM, "stopped with room left");
		if (r == SMTPC_REQ_STARTTLS) {
			h->discarded += n - off; /* RFC 3207: nothing read before TLS counts */
			off = n;
		}
		r = handle(h, r);
		if (off == n && r == SMTPC_REQ_NONE && !wrote)
			break;
	}
}

static void drive_str(struct harness *h, const char *in) { drive(h, in, strlen(in)); }

static void expect_out(struct harness *h, const char *want, size_t n)
{
	tr_check("client", h->tr, h->trlen, want, n);
	h->trlen = 0;
}

static void expect_str(struct harness *h, const char *want) { expect_out(h, want, strlen(want)); }

static void feed_cb(void *h, const char *p, size_t n) { drive(h, p, n); }
static void expect_cb(void *h, const char *p, size_t n) { expect_out(h, p, n); }

static void dialog_(struct harness *h, const char *const *lines)
{
	tr_script(lines, "S: ", "C: ", feed_cb, expect_cb, h);
}

#define DIALOG(...) dialog_(&H, (const char *const[]){__VA_ARGS__, NULL})

static void check_rcpt(unsigned i, enum smtpc_result res, unsigned code, const char *status,
		       enum smtpc_wait stage, const char *diag)
{
	const struct smtpc_rcpt *r = &H.rcpt[i];
	cr_assert_eq(r->result, res, "rcpt %u: result %d, want %d (%s)", i, r->result, res,
		     r->diag);
	cr_assert_eq(r->code, code, "rcpt %u: code %u, want %u", i, r->code, code);
	cr_assert_str_eq(r->status, status, "rcpt %u", i);
	cr_assert_eq(r->stage, stage, "rcpt %u: stage %d, want %d", i, r->stage, stage);
	if (diag)
		cr_assert_str_eq(r->diag, diag, "rcpt %u", i);
}

#define GREET "S: 220 mx.remote.test ESMTP"
#define BODY_OUT "C: Subject: hi", "C: ", "C: ..dot line", "C: end", "C: ."

/* ------------------------------------------------------------------ */
/* the whole dialogue */

Test(smtpc, plain_one_command_at_a_time)
{
	DIALOG(GREET,
	       "C: EHLO mx.example.com",
	       "S: 250-mx.remote.test hello",
	       "S: 250 HELP",
	       "C: MAIL FROM:<alice@example.com>",
	       "S: 250 2.1.0 Ok",
	       "C: RCPT TO:<bob@remote.test>",
	       "S: 250 2.1.5 Ok",
	       "C: RCPT TO:<carol@remote.test>",
	       "S: 250 2.1.5 Ok",
	       "C: DATA",
	       "S: 354 End data with <CR><LF>.<CR><LF>",
	       BODY_OUT,
	       "S: 250 2.0.0 Ok: queued as 4Xyz",
	       "C: QUIT");
	cr_assert(smtpc_done(&H.s));
	cr_assert(!H.closed);
	DIALOG("S: 221 2.0.0 Bye");
	cr_assert(H.closed);
	cr_assert_eq(H.bodies, 1);
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT,
			   "250 2.0.0 Ok: queued as 4Xyz");
	cr_assert(H.s.esmtp);
	cr_assert_eq(H.s.ext, 0);
	cr_assert(!H.s.try_next_mx);
}

Test(smtpc, pipelining_batches_mail_and_rcpts)
{
	DIALOG(GREET,
	       "C: EHLO mx.example.com",
	       "S: 250-mx.remote.test",
	       "S: 250-PIPELINING",
	       "S: 250 8BITMIME",
	       "C: MAIL FROM:<alice@example.com>",
	       "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>",
	       "C: DATA",
	       "S: 250 2.1.0 Ok",
	       "S: 250 2.1.5 Ok",
	       "S: 550 5.1.1 <carol@remote.test>: Recipient address rejected",
	       "S: 354 go ahead",
	       BODY_OUT,
	       "S: 250 2.0.0 Ok: queued",
	       "C: QUIT",
	       "S: 221 Bye");
	cr_assert(H.closed);
	check_rcpt(0, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT, "250 2.0.0 Ok: queued");
	check_rcpt(1, SMTPC_PERM, 550, "5.1.1", SMTPC_W_RCPT,
		   "550 5.1.1 <carol@remote.test>: Recipient address rejected");
	cr_assert_eq(H.s.ext, SMTPC_EXT_PIPELINING | SMTPC_EXT_8BITMIME);
}

Test(smtpc, pipelining_replies_may_trickle_in)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 PIPELINING",
	       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>", "C: DATA");
	uint32_t seq0, seq1;
	cr_assert_eq(smtpc_wait(&H.s, NULL, &seq0), SMTPC_W_MAIL);
	drive_str(&H, "250 ok\r\n");
	cr_assert_eq(smtpc_wait(&H.s, NULL, &seq1), SMTPC_W_RCPT);
	cr_assert_neq(seq0, seq1);
	drive_str(&H, "451 4.3.0 try later\r\n");
	expect_str(&H, "");
	drive_str(&H, "250 ok\r\n");
	cr_assert_eq(smtpc_wait(&H.s, NULL, NULL), SMTPC_W_DATA);
	DIALOG("S: 354 go", BODY_OUT, "S: 250 done", "C: QUIT");
	check_rcpt(0, SMTPC_TEMP, 451, "4.3.0", SMTPC_W_RCPT, "451 4.3.0 try later");
	check_rcpt(1, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT, "250 done");
}

/* bob refused for good, carol greylisted, and no message text went out. */
static void check_both_refused(void)
{
	cr_assert(H.closed);
	cr_assert_eq(H.bodies, 0);
	check_rcpt(0, SMTPC_PERM, 550, "5.1.1", SMTPC_W_RCPT, "550 5.1.1 no");
	check_rcpt(1, SMTPC_TEMP, 450, "4.2.0", SMTPC_W_RCPT, "450 4.2.0 greylisted");
}

#define BOTH_REFUSED_PIPELINED                                                                     \
	GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 PIPELINING",                          \
	    "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",                     \
	    "C: RCPT TO:<carol@remote.test>", "C: DATA", "S: 250 ok", "S: 550 5.1.1 no",           \
	    "S: 450 4.2.0 greylisted"

/* No recipient accepted: without PIPELINING no DATA is sent; with it, the
 * DATA that ended the batch is refused (RFC 2920 3.1), or, when a server
 * says 354 all the same, a lone "." ends it. No body goes out either way,
 * and the RCPT replies decide. */
Test(smtpc, no_recipient_accepted_means_no_data)
{
	DIALOG(BOTH_REFUSED_PIPELINED, "S: 554 5.5.1 no valid recipients", "C: QUIT",
	       "S: 221 bye");
	check_both_refused();

	setup();
	DIALOG(BOTH_REFUSED_PIPELINED, "S: 354 go ahead anyway", "C: .",
	       "S: 250 2.0.0 queued, to nobody", "C: QUIT", "S: 221 bye");
	check_both_refused();

	setup();
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 250 ok", "C: RCPT TO:<bob@remote.test>", "S: 550 5.1.1 no",
	       "C: RCPT TO:<carol@remote.test>", "S: 450 4.2.0 greylisted", "C: QUIT",
	       "S: 221 bye");
	check_both_refused();
}

Test(smtpc, refused_mail_decides_everyone_pipelined)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 PIPELINING",
	       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>", "C: DATA", "S: 550 5.7.1 sender rejected",
	       "S: 503 5.5.1 need MAIL", "S: 503 5.5.1 need MAIL", "S: 503 5.5.1 need RCPT",
	       "C: QUIT");
	cr_assert_eq(H.bodies, 0);
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_PERM, 550, "5.7.1", SMTPC_W_MAIL, "550 5.7.1 sender rejected");
	cr_assert(!H.s.try_next_mx);
}

Test(smtpc, refused_mail_one_at_a_time)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 451 4.3.0 local trouble", "C: QUIT", "S: 221 bye");
	cr_assert(H.closed);
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_TEMP, 451, "4.3.0", SMTPC_W_MAIL, "451 4.3.0 local trouble");
}

Test(smtpc, null_sender)
{
	H.msg.from = "";
	H.msg.nrcpt = 1;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<>", "S: 250 ok",
	       "C: RCPT TO:<bob@remote.test>", "S: 250 ok", "C: DATA");
}

/* ------------------------------------------------------------------ */
/* extensions: SIZE, DSN, 8BITMIME, SMTPUTF8 */

Test(smtpc, dsn_parameters_when_offered)
{
	H.msg.ret = SMTP_RET_HDRS;
	H.msg.envid = "env+id=1 x";
	H.rcpt[0].notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE;
	H.rcpt[0].orcpt = "rfc822;bob+tag@remote.test";
	H.rcpt[1].notify = SMTP_NOTIFY_NEVER;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250-DSN", "S: 250-SIZE 5000",
	       "S: 250 PIPELINING",
	       "C: MAIL FROM:<alice@example.com> SIZE=100 RET=HDRS ENVID=env+2Bid+3D1+20x",
	       "C: RCPT TO:<bob@remote.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;bob+2Btag@remote.test",
	       "C: RCPT TO:<carol@remote.test> NOTIFY=NEVER", "C: DATA");
	cr_assert_eq(H.s.remote_size, 5000);
}

Test(smtpc, dsn_parameters_all_notify_bits)
{
	H.msg.ret = SMTP_RET_FULL;
	H.msg.nrcpt = 1;
	H.rcpt[0].notify = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY;
	H.rcpt[0].orcpt = "bogus-no-type";
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 dsn",
	       "C: MAIL FROM:<alice@example.com> RET=FULL",
	       "S: 250 ok", "C: RCPT TO:<bob@remote.test> NOTIFY=SUCCESS,FAILURE,DELAY");
}

Test(smtpc, no_dsn_parameters_without_dsn)
{
	H.msg.ret = SMTP_RET_HDRS;
	H.msg.envid = "abc";
	H.rcpt[0].notify = SMTP_NOTIFY_SUCCESS;
	H.rcpt[0].orcpt = "rfc822;bob@remote.test";
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 PIPELINING",
	       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>", "C: DATA");
	cr_assert(!(H.s.ext & SMTPC_EXT_DSN));
}

Test(smtpc, size_over_the_remote_limit_fails_without_sending)
{
	H.msg.size = 5001;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 SIZE 5000", "C: QUIT", "S: 221 bye");
	cr_assert(H.closed);
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_PERM, 0, "5.3.4", SMTPC_W_MAIL,
			   "message size 5001 exceeds the remote limit of 5000");
}

Test(smtpc, size_at_the_limit_and_without_a_number)
{
	H.msg.size = 5000;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 SIZE 5000",
	       "C: MAIL FROM:<alice@example.com> SIZE=5000");
	setup();
	H.msg.size = 1 << 30;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 size",
	       "C: MAIL FROM:<alice@example.com> SIZE=1073741824");
	setup();
	H.msg.size = 1 << 30;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 SIZE 0",
	       "C: MAIL FROM:<alice@example.com> SIZE=1073741824");
}

Test(smtpc, eightbit_body)
{
	H.msg.body_8bit = true;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 8BITMIME",
	       "C: MAIL FROM:<alice@example.com> BODY=8BITMIME");
	setup();
	H.msg.body_8bit = true;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: QUIT");
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_PERM, 0, "5.6.3", SMTPC_W_MAIL, NULL);
}

Test(smtpc, smtputf8)
{
	H.msg.smtputf8 = true;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 SMTPUTF8",
	       "C: MAIL FROM:<alice@example.com> SMTPUTF8");
	setup();
	H.msg.smtputf8 = true;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: QUIT");
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_PERM, 0, "5.6.7", SMTPC_W_MAIL, NULL);
}

Test(smtpc, non_ascii_recipient_alone_without_smtputf8)
{
	H.rcpt[0].addr = "j\xc3\xb6rg@remote.test";
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 PIPELINING",
	       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<carol@remote.test>", "C: DATA",
	       "S: 250 ok", "S: 250 ok");
	check_rcpt(0, SMTPC_PERM, 0, "5.6.7", SMTPC_W_RCPT, NULL);
	setup();
	H.rcpt[0].addr = "j\xc3\xb6rg@remote.test";
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 SMTPUTF8",
	       "C: MAIL FROM:<alice@example.com> SMTPUTF8", "S: 250 ok",
	       "C: RCPT TO:<j\xc3\xb6rg@remote.test>");
}

Test(smtpc, corrupt_addresses_are_never_sent)
{
	H.rcpt[0].addr = "bob@remote.test>\r\nRSET";
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 250 ok", "C: RCPT TO:<carol@remote.test>");
	check_rcpt(0, SMTPC_PERM, 0, "5.1.3", SMTPC_W_RCPT, NULL);
	setup();
	H.msg.from = "a\r\nb";
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: QUIT");
	check_rcpt(0, SMTPC_PERM, 0, "5.1.7", SMTPC_W_MAIL, NULL);
}

Test(smtpc, ehlo_keywords_are_case_insensitive_and_exact)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250-pipelining", "S: 250-Dsn",
	       "S: 250-8bitmime", "S: 250-CHUNKING", "S: 250-ENHANCEDSTATUSCODES",
	       "S: 250-SMTPUTF8", "S: 250-STARTTLSX", "S: 250-PIPELINING2", "S: 250 AUTH PLAIN",
	       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>", "C: DATA");
	cr_assert_eq(H.s.ext, SMTPC_EXT_PIPELINING | SMTPC_EXT_DSN | SMTPC_EXT_8BITMIME |
				      SMTPC_EXT_CHUNKING | SMTPC_EXT_ENHANCEDSTATUSCODES |
				      SMTPC_EXT_SMTPUTF8);
}

/* ------------------------------------------------------------------ */
/* HELO fallback, greeting */

Test(smtpc, helo_after_ehlo_5xx)
{
	H.msg.ret = SMTP_RET_FULL;
	H.rcpt[0].notify = SMTP_NOTIFY_NEVER;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 502 5.5.1 command not implemented", "C: HELO mx.example.com",
	       "S: 250 mx.remote.test", "C: MAIL FROM:<alice@example.com>", "S: 250 ok",
	       "C: RCPT TO:<bob@remote.test>");
	cr_assert(!H.s.esmtp);
	cr_assert_eq(H.s.ext, 0);
}

Test(smtpc, helo_refused_too)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 500 what", "C: HELO mx.example.com", "S: 550 go away", "C: QUIT",
	       "S: 221 bye");
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_PERM, 550, "5.0.0", SMTPC_W_EHLO, "550 go away");
}

Test(smtpc, ehlo_4xx)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 451 4.3.2 busy", "C: QUIT");
	check_rcpt(0, SMTPC_TEMP, 451, "4.3.2", SMTPC_W_EHLO, "451 4.3.2 busy");
	cr_assert(H.s.try_next_mx);
}

Test(smtpc, greeting_5xx_is_temporary)
{
	DIALOG("S: 554-5.7.1 no service", "S: 554 5.7.1 for you", "C: QUIT", "S: 221 bye");
	cr_assert(H.closed);
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_TEMP, 554, "5.7.1", SMTPC_W_GREETING,
			   "554-5.7.1 no service 554 5.7.1 for you");
	cr_assert(H.s.try_next_mx);
}

Test(smtpc, greeting_421_closes_without_quit)
{
	DIALOG("S: 421 4.3.2 shutting down");
	cr_assert(H.closed);
	check_rcpt(1, SMTPC_TEMP, 421, "4.3.2", SMTPC_W_GREETING, "421 4.3.2 shutting down");
}

Test(smtpc, multiline_greeting)
{
	DIALOG("S: 220-mx.remote.test ESMTP", "S: 220-more", "S: 220 end", "C: EHLO mx.example.com");
}

/* ------------------------------------------------------------------ */
/* STARTTLS */

Test(smtpc, starttls_opportunistic)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250-PIPELINING", "S: 250 STARTTLS",
	       "C: STARTTLS");
	/* bytes after 220 are injected plaintext: dropped (RFC 3207 6) */
	drive_str(&H, "220 2.0.0 go ahead\r\n250 injected\r\n");
	cr_assert_eq(H.starttls, 1);
	cr_assert_eq(H.discarded, strlen("250 injected\r\n"));
	cr_assert(H.s.tls);
	expect_str(&H, "EHLO " ME "\r\n");
	/* what was learnt before TLS is forgotten: no PIPELINING now */
	DIALOG("S: 250-x", "S: 250 STARTTLS", "C: MAIL FROM:<alice@example.com>");
	cr_assert_eq(H.s.ext, SMTPC_EXT_STARTTLS);
}

Test(smtpc, starttls_not_offered_opportunistic_goes_plain)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>");
	cr_assert(!H.s.tls);
}

Test(smtpc, starttls_never_with_policy_none)
{
	H.pol.tls = SMTPC_TLS_NONE;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 STARTTLS",
	       "C: MAIL FROM:<alice@example.com>");
}

Test(smtpc, starttls_required_not_offered)
{
	H.pol.tls = SMTPC_TLS_REQUIRED;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: QUIT", "S: 221 bye");
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_TEMP, 0, "4.7.4", SMTPC_W_EHLO,
			   "TLS is required, but the remote server does not offer STARTTLS");
	cr_assert(H.s.try_next_mx);
}

Test(smtpc, starttls_required_refused)
{
	H.pol.tls = SMTPC_TLS_REQUIRED;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 STARTTLS", "C: STARTTLS",
	       "S: 454 4.7.0 TLS not available", "C: QUIT");
	check_rcpt(0, SMTPC_TEMP, 0, "4.7.4", SMTPC_W_STARTTLS,
		   "TLS is required, but STARTTLS was refused: 454 4.7.0 TLS not available");
}

Test(smtpc, starttls_refused_opportunistic_goes_plain)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 STARTTLS", "C: STARTTLS",
	       "S: 454 4.7.0 TLS not available", "C: MAIL FROM:<alice@example.com>");
	cr_assert(!H.s.tls);
}

Test(smtpc, starttls_handshake_failure)
{
	H.tls_result = -1;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 STARTTLS", "C: STARTTLS",
	       "S: 220 go");
	cr_assert(H.closed);
	check_rcpt(0, SMTPC_TEMP, 0, "4.7.5", SMTPC_W_STARTTLS, "TLS handshake failed");
	cr_assert(H.s.try_next_mx);
}

Test(smtpc, starttls_required_and_done)
{
	H.pol.tls = SMTPC_TLS_REQUIRED;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 STARTTLS", "C: STARTTLS", "S: 220 go",
	       "C: EHLO mx.example.com", "S: 250-x", "S: 250 SIZE 1000",
	       "C: MAIL FROM:<alice@example.com> SIZE=100");
}

/* ------------------------------------------------------------------ */
/* DATA and the end of data */

Test(smtpc, data_refused)
{
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 250 ok", "C: RCPT TO:<bob@remote.test>", "S: 550 no",
	       "C: RCPT TO:<carol@remote.test>", "S: 250 ok", "C: DATA",
	       "S: 554 5.5.1 no valid recipients", "C: QUIT");
	check_rcpt(0, SMTPC_PERM, 550, "5.0.0", SMTPC_W_RCPT, "550 no");
	check_rcpt(1, SMTPC_PERM, 554, "5.5.1", SMTPC_W_DATA, NULL);
	setup();
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 pipelining",
	       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>", "C: DATA", "S: 250 ok", "S: 250 ok", "S: 250 ok",
	       "S: 451 4.3.0 later", "C: QUIT");
	check_rcpt(0, SMTPC_TEMP, 451, "4.3.0", SMTPC_W_DATA, NULL);
	check_rcpt(1, SMTPC_TEMP, 451, "4.3.0", SMTPC_W_DATA, NULL);
}

Test(smtpc, end_of_data_refused)
{
	static const char *const replies[] = {"452 4.3.1 full", "554 5.6.0 content refused"};
	for (int k = 0; k < 2; k++) {
		setup();
		char srv[64];
		snprintf(srv, sizeof srv, "S: %s", replies[k]);
		DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 pipelining",
		       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
		       "C: RCPT TO:<carol@remote.test>", "C: DATA", "S: 250 ok", "S: 250 ok",
		       "S: 250 ok", "S: 354 go", BODY_OUT, srv, "C: QUIT");
		for (unsigned i = 0; i < 2; i++)
			check_rcpt(i, k ? SMTPC_PERM : SMTPC_TEMP, k ? 554 : 452,
				   k ? "5.6.0" : "4.3.1", SMTPC_W_DOT, replies[k]);
	}
}

Test(smtpc, end_of_data_421)
{
	H.msg.nrcpt = 1;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 250 ok", "C: RCPT TO:<bob@remote.test>", "S: 250 ok", "C: DATA",
	       "S: 354 go", BODY_OUT, "S: 421 4.4.2 timeout");
	cr_assert(H.closed);
	check_rcpt(0, SMTPC_TEMP, 421, "4.4.2", SMTPC_W_DOT, NULL);
}

Test(smtpc, body_read_error_never_ends_the_data)
{
	H.msg.nrcpt = 1;
	H.body_result = -5;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 250 ok", "C: RCPT TO:<bob@remote.test>", "S: 250 ok", "C: DATA",
	       "S: 354 go", "C: Subject: hi", "C: ", "C: ..dot line", "C: end");
	cr_assert(H.closed);
	check_rcpt(0, SMTPC_TEMP, 0, "4.3.0", SMTPC_W_BODY, NULL);
}

Test(smtpc, rcpt_421_mid_batch)
{
	setup_rcpts(&H, 3);
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250-x", "S: 250 pipelining",
	       "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>", "C: RCPT TO:<r2@remote.test>", "C: DATA",
	       "S: 250 ok", "S: 550 5.1.1 unknown", "S: 421 4.7.0 too many errors");
	cr_assert(H.closed);
	check_rcpt(0, SMTPC_PERM, 550, "5.1.1", SMTPC_W_RCPT, NULL);
	check_rcpt(1, SMTPC_TEMP, 421, "4.7.0", SMTPC_W_RCPT, "421 4.7.0 too many errors");
	check_rcpt(2, SMTPC_TEMP, 421, "4.7.0", SMTPC_W_RCPT, NULL);
}

/* ------------------------------------------------------------------ */
/* reply syntax */

Test(smtpc, multiline_reply_text_is_joined)
{
	H.msg.nrcpt = 1;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 250 ok", "C: RCPT TO:<bob@remote.test>",
	       "S: 550-5.1.1 The email account that you tried to reach does not exist.",
	       "S: 550-5.1.1 Please try double-checking",
	       "S: 550 5.1.1 https://support.example/ x-y",
	       "C: QUIT");
	check_rcpt(0, SMTPC_PERM, 550, "5.1.1", SMTPC_W_RCPT,
		   "550-5.1.1 The email account that you tried to reach does not exist. "
		   "550-5.1.1 Please try double-checking 550 5.1.1 https://support.example/ x-y");
}

Test(smtpc, status_codes_only_when_well_formed)
{
	static const struct {
		const char *line, *status;
	} cases[] = {
		{"550 5.1.1 x", "5.1.1"},      {"550 5.123.456", "5.123.456"},
		{"550 4.1.1 x", "5.0.0"},      {"550 5.1 x", "5.0.0"},
		{"550 5.1.1234 x", "5.0.0"},   {"550 5.1.1x", "5.0.0"},
		{"550", "5.0.0"},              {"550 ", "5.0.0"},
		{"550 5..1", "5.0.0"},         {"451 4.7.25 x", "4.7.25"},
	};
	for (unsigned k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		setup();
		H.msg.nrcpt = 1;
		char srv[64];
		snprintf(srv, sizeof srv, "S: %s", cases[k].line);
		DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
		       "S: 250 ok", "C: RCPT TO:<bob@remote.test>", srv, "C: QUIT");
		cr_assert_str_eq(H.rcpt[0].status, cases[k].status, "%s", cases[k].line);
	}
}

Test(smtpc, reply_text_is_sanitised)
{
	H.msg.nrcpt = 1;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>",
	       "S: 250 ok", "C: RCPT TO:<bob@remote.test>", "S: 550 a\tb\x01\xc3\xa9", "C: QUIT");
	check_rcpt(0, SMTPC_PERM, 550, "5.0.0", SMTPC_W_RCPT, "550 a b???");
}

Test(smtpc, bare_lf_reply_lines_are_accepted)
{
	drive_str(&H, "220-x\n220 y\n");
	expect_str(&H, "EHLO " ME "\r\n");
	drive_str(&H, "250 ok\n");
	expect_str(&H, "MAIL FROM:<alice@example.com>\r\n");
}

static void protocol_error_case(const char *bad)
{
	setup();
	drive_str(&H, "220 x\r\n");
	expect_str(&H, "EHLO " ME "\r\n");
	drive_str(&H, bad);
	cr_assert(H.closed, "not closed on %s", tr_escape(bad, strlen(bad)));
	expect_str(&H, "");
	for (unsigned i = 0; i < 2; i++) {
		cr_assert_eq(H.rcpt[i].result, SMTPC_TEMP);
		cr_assert_str_eq(H.rcpt[i].status, "4.5.0");
		cr_assert(strncmp(H.rcpt[i].diag, "protocol error: ", 16) == 0);
	}
}

Test(smtpc, malformed_replies_are_protocol_errors)
{
	static const char *const bad[] = {
		"abc\r\n",      "25\r\n",        "250x\r\n",          "150 x\r\n",
		"650 x\r\n",    "260 x\r\n",     "2a0 x\r\n",         "\r\n",
		"250-a\r\n251 b\r\n", "354 go\r\n", "250-a\r\n250x\r\n",
	};
	for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++)
		protocol_error_case(bad[i]);
}

Test(smtpc, reply_line_length_limit)
{
	char line[600];
	/* 512 octets with CRLF: fine */
	memset(line, 'a', sizeof line);
	memcpy(line, "250 ", 4);
	memcpy(line + 510, "\r\n", 3);
	drive_str(&H, "220 x\r\n");
	expect_str(&H, "EHLO " ME "\r\n");
	drive_str(&H, line);
	cr_assert(!H.closed);
	expect_str(&H, "MAIL FROM:<alice@example.com>\r\n");
	/* 513: too long */
	memset(line, 'a', sizeof line);
	memcpy(line, "250 ", 4);
	memcpy(line + 511, "\r\n", 3);
	protocol_error_case(line);
	cr_assert_str_eq(H.rcpt[0].diag, "protocol error: reply line too long");
	/* 512 octets and still no LF */
	memset(line, 'a', sizeof line);
	memcpy(line, "250 ", 4);
	line[512] = '\0';
	protocol_error_case(line);
}

/* ------------------------------------------------------------------ */
/* time and connection loss */

Test(smtpc, deadlines_per_stage)
{
	unsigned secs;
	cr_assert_eq(smtpc_wait(&H.s, &secs, NULL), SMTPC_W_GREETING);
	cr_assert_eq(secs, 300);
	H.msg.nrcpt = 1;
	DIALOG(GREET, "C: EHLO mx.example.com");
	cr_assert_eq(smtpc_wait(&H.s, &secs, NULL), SMTPC_W_EHLO);
	cr_assert_eq(secs, 300);
	DIALOG("S: 250 x", "C: MAIL FROM:<alice@example.com>");
	cr_assert_eq(smtpc_wait(&H.s, &secs, NULL), SMTPC_W_MAIL);
	cr_assert_eq(secs, 300);
	DIALOG("S: 250 ok", "C: RCPT TO:<bob@remote.test>");
	cr_assert_eq(smtpc_wait(&H.s, &secs, NULL), SMTPC_W_RCPT);
	cr_assert_eq(secs, 300);
	DIALOG("S: 250 ok", "C: DATA");
	cr_assert_eq(smtpc_wait(&H.s, &secs, NULL), SMTPC_W_DATA);
	cr_assert_eq(secs, 120);
	DIALOG("S: 354 go", BODY_OUT);
	cr_assert_eq(smtpc_wait(&H.s, &secs, NULL), SMTPC_W_DOT);
	cr_assert_eq(secs, 600);
	/* the core saw BODY (3 min per block) between DATA and the dot */
	bool body = false;
	for (unsigned i = 0; i < H.nwaits; i++)
		body |= H.waits[i] == SMTPC_W_BODY;
	cr_assert(body);
	cr_assert_eq(smtpc_timeout(&H.s), SMTPC_REQ_CLOSE);
	check_rcpt(0, SMTPC_TEMP, 0, "4.4.2", SMTPC_W_DOT,
		   "timeout waiting for the reply to end of data");
	cr_assert_eq(smtpc_wait(&H.s, &secs, NULL), SMTPC_W_NONE);
	cr_assert_eq(secs, 0);
}

Test(smtpc, timeout_at_greeting_and_rcpt)
{
	cr_assert_eq(smtpc_timeout(&H.s), SMTPC_REQ_CLOSE);
	check_rcpt(0, SMTPC_TEMP, 0, "4.4.2", SMTPC_W_GREETING, "timeout waiting for the greeting");
	cr_assert(H.s.try_next_mx);
	setup();
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>", "S: 250 ok",
	       "C: RCPT TO:<bob@remote.test>", "S: 250 ok", "C: RCPT TO:<carol@remote.test>");
	smtpc_timeout(&H.s);
	check_rcpt(0, SMTPC_TEMP, 0, "4.4.2", SMTPC_W_RCPT, "timeout waiting for the reply to RCPT TO");
	check_rcpt(1, SMTPC_TEMP, 0, "4.4.2", SMTPC_W_RCPT, NULL);
	cr_assert(!H.s.try_next_mx);
	/* a closed session stays closed */
	size_t used;
	cr_assert_eq(smtpc_feed(&H.s, "250 ok\r\n", 8, &used, &H.out), SMTPC_REQ_CLOSE);
	cr_assert_eq(H.out.len, 0);
}

Test(smtpc, connection_lost)
{
	cr_assert_eq(smtpc_eof(&H.s), SMTPC_REQ_CLOSE);
	check_rcpt(0, SMTPC_TEMP, 0, "4.4.2", SMTPC_W_GREETING,
		   "connection lost before the greeting");
	setup();
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>", "S: 250 ok",
	       "C: RCPT TO:<bob@remote.test>", "S: 550 no", "C: RCPT TO:<carol@remote.test>",
	       "S: 250 ok", "C: DATA", "S: 354 go", BODY_OUT);
	smtpc_eof(&H.s);
	check_rcpt(0, SMTPC_PERM, 550, "5.0.0", SMTPC_W_RCPT, "550 no");
	check_rcpt(1, SMTPC_TEMP, 0, "4.4.2", SMTPC_W_DOT, "connection lost during end of data");
}

Test(smtpc, connection_lost_after_the_last_reply_changes_nothing)
{
	H.msg.nrcpt = 1;
	DIALOG(GREET, "C: EHLO mx.example.com", "S: 250 x", "C: MAIL FROM:<alice@example.com>", "S: 250 ok",
	       "C: RCPT TO:<bob@remote.test>", "S: 250 ok", "C: DATA", "S: 354 go", BODY_OUT,
	       "S: 250 ok", "C: QUIT");
	smtpc_eof(&H.s);
	check_rcpt(0, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT, "250 ok");
	cr_assert_eq(smtpc_timeout(&H.s), SMTPC_REQ_CLOSE);
	check_rcpt(0, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT, "250 ok");
}

/* ------------------------------------------------------------------ */
/* the way TCP cuts the input, the obuf's size */

#define FULL_SCRIPT_PIPE                                                                   \
	"220-mx.remote.test ESMTP\r\n220 hi\r\n"                                           \
	"250-mx.remote.test\r\n250-PIPELINING\r\n250-DSN\r\n250 SIZE 99999\r\n"            \
	"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n"          \
	"451 4.7.1 greylisted\r\n"                                                         \
	"354 go\r\n250 2.0.0 queued\r\n221 bye\r\n"

#define FULL_SCRIPT_PLAIN                                                                  \
	"220 mx ESMTP\r\n"                                                                 \
	"500 5.5.1 no EHLO\r\n250 mx\r\n"                                                  \
	"250 ok\r\n250 ok\r\n550-no\n550 such user\r\n452 4.5.3 too many\r\n"              \
	"354 go\r\n250 2.0.0 queued\r\n221 bye\r\n"

struct outcome {
	char tr[4096];
	size_t trlen;
	struct smtpc_rcpt rcpt[3];
};

static void run_split(const char *script, size_t k, size_t chunk, struct outcome *o)
{
	setup();
	setup_rcpts(&H, 3);
	H.rcpt[0].notify = SMTP_NOTIFY_FAILURE;
	H.read_chunk = chunk;
	size_t n = strlen(script);
	drive(&H, script, k);
	drive(&H, script + k, n - k);
	cr_assert(H.closed, "split at %zu/%zu: not closed", k, chunk);
	cr_assert_lt(H.trlen, sizeof o->tr);
	memcpy(o->tr, H.tr, H.trlen);
	o->trlen = H.trlen;
	memcpy(o->rcpt, H.rcpt, sizeof o->rcpt);
}

static void same_outcome(const char *script)
{
	static struct outcome whole, cut;
	run_split(script, 0, 0, &whole);
	size_t n = strlen(script);
	for (size_t k = 0; k <= n; k++) {
		for (size_t chunk = 0; chunk < 3; chunk += 1 + (k % 2)) {
			run_split(script, k, chunk, &cut);
			cr_assert(cut.trlen == whole.trlen && !memcmp(cut.tr, whole.tr, whole.trlen),
				  "split at %zu, reads of %zu: client wrote\n%s\nnot\n%s", k, chunk,
				  tr_escape(cut.tr, cut.trlen), tr_escape(whole.tr, whole.trlen));
			for (int i = 0; i < 3; i++) {
				cr_assert_eq(cut.rcpt[i].result, whole.rcpt[i].result);
				cr_assert_eq(cut.rcpt[i].code, whole.rcpt[i].code);
				cr_assert_str_eq(cut.rcpt[i].diag, whole.rcpt[i].diag);
			}
		}
	}
}

Test(smtpc, split_input_at_every_byte_pipelined)
{
	same_outcome(FULL_SCRIPT_PIPE);
	struct outcome o;
	run_split(FULL_SCRIPT_PIPE, 0, 0, &o);
	const char *want = "EHLO " ME "\r\n"
			   "MAIL FROM:<alice@example.com> SIZE=100\r\n"
			   "RCPT TO:<bob@remote.test> NOTIFY=FAILURE\r\n"
			   "RCPT TO:<carol@remote.test>\r\n"
			   "RCPT TO:<r2@remote.test>\r\n"
			   "DATA\r\n"
			   "Subject: hi\r\n\r\n..dot line\r\nend\r\n.\r\n"
			   "QUIT\r\n";
	cr_assert(o.trlen == strlen(want) && !memcmp(o.tr, want, o.trlen), "%s",
		  tr_escape(o.tr, o.trlen));
	cr_assert_eq(o.rcpt[0].result, SMTPC_DELIVERED);
	cr_assert_eq(o.rcpt[1].result, SMTPC_PERM);
	cr_assert_str_eq(o.rcpt[1].diag, "550-5.1.1 no 550 5.1.1 such user");
	cr_assert_eq(o.rcpt[2].result, SMTPC_TEMP);
}

Test(smtpc, split_input_at_every_byte_one_at_a_time)
{
	same_outcome(FULL_SCRIPT_PLAIN);
	struct outcome o;
	run_split(FULL_SCRIPT_PLAIN, 0, 0, &o);
	const char *want = "EHLO " ME "\r\n"
			   "HELO " ME "\r\n"
			   "MAIL FROM:<alice@example.com>\r\n"
			   "RCPT TO:<bob@remote.test>\r\n"
			   "RCPT TO:<carol@remote.test>\r\n"
			   "RCPT TO:<r2@remote.test>\r\n"
			   "DATA\r\n"
			   "Subject: hi\r\n\r\n..dot line\r\nend\r\n.\r\n"
			   "QUIT\r\n";
	cr_assert(o.trlen == strlen(want) && !memcmp(o.tr, want, o.trlen), "%s",
		  tr_escape(o.tr, o.trlen));
	cr_assert_str_eq(o.rcpt[1].diag, "550-no 550 such user");
	cr_assert_str_eq(o.rcpt[2].status, "4.5.3");
}

Test(smtpc, small_obuf_writes_the_batch_in_parts)
{
	setup_with(SMTPC_CMD_ROOM + 40);
	setup_rcpts(&H, 12);
	drive_str(&H, "220 x\r\n250-x\r\n250 PIPELINING\r\n");
	char want[4096];
	size_t n = (size_t)sprintf(want, "EHLO " ME "\r\nMAIL FROM:<alice@example.com>\r\n"
					 "RCPT TO:<bob@remote.test>\r\nRCPT TO:<carol@remote.test>\r\n");
	for (unsigned i = 2; i < 12; i++)
		n += (size_t)sprintf(want + n, "RCPT TO:<r%u@remote.test>\r\n", i);
	n += (size_t)sprintf(want + n, "DATA\r\n");
	expect_out(&H, want, n);
	char srv[1024];
	n = 0;
	for (unsigned i = 0; i < 13; i++)
		n += (size_t)sprintf(srv + n, "250 ok\r\n");
	n += (size_t)sprintf(srv + n, "354 go\r\n");
	drive(&H, srv, n);
	cr_assert_eq(H.bodies, 1);
}

/* ------------------------------------------------------------------ */
/* the stuffer, xtext */

static size_t stuff_all(const char *const *chunks, char *out, size_t cap)
{
	struct smtpc_stuffer st;
	smtpc_stuff_init(&st);
	struct obuf o = {out, 0, cap};
	for (; *chunks; chunks++) {
		size_t n = strlen(*chunks);
		cr_assert_eq(smtpc_stuff(&st, *chunks, n, &o), n);
	}
	smtpc_stuff_end(&st, &o);
	return o.len;
}

#define STUFF(want, ...)                                                                   \
	do {                                                                               \
		char buf_[256];                                                            \
		size_t n_ = stuff_all((const char *const[]){__VA_ARGS__, NULL}, buf_,     \
				      sizeof buf_);                                        \
		cr_assert(n_ == strlen(want) && !memcmp(buf_, want, n_), "got %s",         \
			  tr_escape(buf_, n_));                                               \
	} while (0)

Test(smtpc, stuffer)
{
	STUFF(".\r\n", "");
	STUFF("..\r\n.\r\n", ".\r\n");
	STUFF("a\r\n..b\r\n.\r\n", "a\r\n.b\r\n");
	STUFF("a\r\n..b\r\n.\r\n", "a\r", "\n", ".b\r\n");
	STUFF("a\r\n..b\r\n.\r\n", "a\r\n", ".", "b", "\r\n");
	STUFF("a.b\r\n.\r\n", "a.b");                 /* the last line ended */
	STUFF("a\r\nb\r\n..\r\n.\r\n", "a\nb\n.\n");   /* bare LF */
	STUFF("a\r\n..b\r\n.\r\n", "a\r.b\r");         /* bare CR */
	STUFF("a\r\n..\r\n.\r\n", "a\r", ".");         /* bare CR at a cut */
	STUFF("\r\n\r\n...\r\n.\r\n", "\r\n\r\n..\r\n");
}

Test(smtpc, stuffer_stops_when_the_obuf_is_full)
{
	const char *in = "..........\r\n..........\r\n";
	char big[256], small[8];
	struct smtpc_stuffer a, b;
	smtpc_stuff_init(&a);
	smtpc_stuff_init(&b);
	struct obuf oa = {big, 0, sizeof big};
	smtpc_stuff(&a, in, strlen(in), &oa);
	char got[256];
	size_t glen = 0, off = 0, n = strlen(in);
	while (off < n) {
		struct obuf ob = {small, 0, sizeof small};
		size_t used = smtpc_stuff(&b, in + off, n - off, &ob);
		cr_assert(used > 0);
		off += used;
		memcpy(got + glen, small, ob.len);
		glen += ob.len;
	}
	cr_assert(glen == oa.len && !memcmp(got, big, glen));
}

Test(smtpc, body_outside_the_request_is_refused)
{
	cr_assert_eq(smtpc_body(&H.s, "x", 1, &H.out), 0);
	cr_assert_eq(H.out.len, 0);
}

Test(smtpc, xtext)
{
	char out[32];
	cr_assert_eq(smtpc_xtext_encode("a+b=c d\x80", 8, out, sizeof out), 16);
	cr_assert_str_eq(out, "a+2Bb+3Dc+20d+80");
	cr_assert_eq(smtpc_xtext_encode("abc", 3, out, 3), -1);
	cr_assert_eq(smtpc_xtext_encode("abc", 3, out, 4), 3);
	cr_assert_eq(smtpc_xtext_encode("+", 1, out, 3), -1);
	cr_assert_eq(smtpc_xtext_encode("", 0, out, 1), 0);
}

Test(smtpc, stage_names)
{
	cr_assert_str_eq(smtpc_stage_name(SMTPC_W_RCPT), "RCPT TO");
	cr_assert_str_eq(smtpc_stage_name((enum smtpc_wait)99), "?");
}

/* ------------------------------------------------------------------ */
/* connection reuse (s->keep): one connection, several messages */

#define PIPE_HELLO GREET, "C: EHLO mx.example.com", "S: 250-mx.remote.test", "S: 250 PIPELINING"

/* The first message of a kept session, up to the reply FINAL to its end of
 * data. */
#define FIRST_MESSAGE(final)                                                                       \
	DIALOG(PIPE_HELLO, "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",     \
	       "C: RCPT TO:<carol@remote.test>", "C: DATA", "S: 250 ok", "S: 250 ok", "S: 250 ok", \
	       "S: 354 go", BODY_OUT, final)

/* The second message of the connection (dave to erin): straight to MAIL
 * (no greeting, no EHLO, no RSET), pipelined as the EHLO said. */
static void second_message(void)
{
	H.msg.from = "dave@example.com";
	H.rcpt[0] = (struct smtpc_rcpt){.addr = "erin@remote.test"};
	H.msg.nrcpt = 1;
	smtpc_next(&H.s, &H.msg);
	cr_assert(!smtpc_idle(&H.s));
	cr_assert_eq(H.rcpt[0].result, SMTPC_PENDING);
	drive_str(&H, "");
	expect_str(&H, "MAIL FROM:<dave@example.com>\r\nRCPT TO:<erin@remote.test>\r\nDATA\r\n");
}

Test(smtpc, keep_idles_after_the_message_then_carries_the_next)
{
	H.s.keep = true;
	FIRST_MESSAGE("S: 250 2.0.0 queued as A");
	/* no QUIT: the machine waits for the core's choice */
	cr_assert_eq(H.idles, 1);
	cr_assert(!H.closed);
	cr_assert_eq(smtpc_wait(&H.s, NULL, NULL), SMTPC_W_NONE);
	check_rcpt(0, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT, "250 2.0.0 queued as A");
	check_rcpt(1, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT, "250 2.0.0 queued as A");

	second_message();
	DIALOG("S: 250 ok", "S: 250 ok", "S: 354 go", BODY_OUT, "S: 250 2.0.0 queued as B");
	cr_assert_eq(H.idles, 2);
	check_rcpt(0, SMTPC_DELIVERED, 250, "2.0.0", SMTPC_W_DOT, "250 2.0.0 queued as B");
	cr_assert_eq(H.bodies, 2);

	/* done with it: QUIT, then CLOSE */
	smtpc_quit(&H.s);
	drive_str(&H, "");
	expect_str(&H, "QUIT\r\n");
	DIALOG("S: 221 bye");
	cr_assert(H.closed);
}

Test(smtpc, keep_idles_after_a_refused_message_but_not_after_421)
{
	H.s.keep = true;
	FIRST_MESSAGE("S: 554 5.7.1 content rejected");
	cr_assert_eq(H.idles, 1);
	check_rcpt(0, SMTPC_PERM, 554, "5.7.1", SMTPC_W_DOT, "554 5.7.1 content rejected");
	second_message();
	DIALOG("S: 250 ok", "S: 250 ok", "S: 354 go", BODY_OUT, "S: 421 4.3.2 shutting down");
	/* 421: the channel is closing (RFC 5321 3.8), not idle */
	cr_assert_eq(H.idles, 1);
	cr_assert(H.closed);
	check_rcpt(0, SMTPC_TEMP, 421, "4.3.2", SMTPC_W_DOT, "421 4.3.2 shutting down");
}

/* A connection the server dropped while it was idle: the next message
 * fails before MAIL is answered, marked try_next_mx, so the core knows
 * to start again on a fresh connection rather than defer. */
Test(smtpc, reused_connection_gone_is_a_host_failure)
{
	H.s.keep = true;
	FIRST_MESSAGE("S: 250 ok");
	second_message();
	cr_assert_eq(smtpc_eof(&H.s), SMTPC_REQ_CLOSE);
	cr_assert(smtpc_done(&H.s));
	cr_assert_eq(H.rcpt[0].result, SMTPC_TEMP);
	cr_assert(H.s.try_next_mx);
	/* and the same when the server's idle timeout came as a 421 */
	setup();
	H.s.keep = true;
	FIRST_MESSAGE("S: 250 ok");
	second_message();
	DIALOG("S: 421 4.4.2 idle timeout");
	cr_assert(H.closed);
	cr_assert_eq(H.rcpt[0].result, SMTPC_TEMP);
	cr_assert(H.s.try_next_mx);
}

/* Without keep nothing changes: QUIT after the message, and smtpc_next()
 * on a session that is not idle does nothing. */
Test(smtpc, without_keep_the_session_quits)
{
	DIALOG(PIPE_HELLO, "C: MAIL FROM:<alice@example.com>", "C: RCPT TO:<bob@remote.test>",
	       "C: RCPT TO:<carol@remote.test>", "C: DATA", "S: 250 ok", "S: 250 ok", "S: 250 ok",
	       "S: 354 go", BODY_OUT, "S: 250 ok", "C: QUIT");
	cr_assert_eq(H.idles, 0);
	cr_assert(!smtpc_idle(&H.s));
	smtpc_next(&H.s, &H.msg);
	cr_assert_eq(H.rcpt[0].result, SMTPC_DELIVERED);
}

/* The core's own verdict (no server): every recipient, code 0, stage NONE,
 * the diagnostic formatted. */
Test(smtpc, decide_local_sets_every_recipient)
{
	smtpc_decide_local(&H.msg, SMTPC_PERM, "5.1.10", "domain %s: null MX", "x.test");
	for (unsigned i = 0; i < 2; i++)
		check_rcpt(i, SMTPC_PERM, 0, "5.1.10", SMTPC_W_NONE, "domain x.test: null MX");
	cr_assert(smtpc_done(&H.s));
}
