/*
 * libFuzzer target for proto/smtpc.c: a hostile or broken remote server.
 *
 * Input: 4 octets of setup, then what the server sends. Setup: the TLS
 * policy, the message's options (RET, ENVID, 8-bit, SMTPUTF8, NOTIFY, ORCPT,
 * 1..4 recipients), how the server's bytes are cut into reads, and whether
 * the simulated core's TLS handshake and body reads succeed. At the end of
 * the input the connection is lost (or times out).
 *
 * Each input runs twice: once a read at a time into a roomy obuf, once with
 * every read cut again into small pieces and an obuf barely over
 * SMTPC_CMD_ROOM. Both must write the same octets and reach the same
 * results. STARTTLS drops the rest of its read in both runs. Invariants:
 * *used <= n; only a short obuf stops the machine before its input ends;
 * every command line is a known verb, CRLF-terminated, with no CR or LF
 * inside, within SMTPC_CMD_ROOM; a decided recipient never changes; DATA only
 * after an accepted RCPT or at the end of a pipelined batch; the message
 * only after an accepted RCPT; DELIVERED only after the end of data was written;
 * CLOSE, timeout and EOF leave no recipient undecided; status and diag are
 * NUL-terminated printable text. With s->keep (a bit of the setup) the
 * machine may go idle after a message: the next message then starts on the
 * same session (up to three in all), and the same invariants hold for each.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtpc.h"
#include "tests/fuzz/fuzz.h"

#define NRCPT 4

struct run {
	struct smtpc_policy pol;
	struct smtpc_msg msg;
	struct smtpc_rcpt rcpt[NRCPT];
	struct smtpc_rcpt seen[NRCPT]; /* results as last seen */
	struct smtpc_session s;
	struct obuf out;
	char outbuf[1 << 14];
	struct rec tr; /* commands, requests, body, results: in order */
	bool closed, data_sent, dot_written;
	unsigned idles;
	bool tls_ok, body_ok;
};

static const char body[] = "Subject: x\r\n\r\n.line\r\n..\r\nlast\r\n";

static void note(struct run *r, const char *what)
{
	rec_put(&r->tr, what, strlen(what));
}

static bool starts(const char *p, size_t n, const char *w)
{
	size_t k = strlen(w);
	return n >= k && memcmp(p, w, k) == 0;
}

static bool accepted(const struct run *r)
{
	bool any = false;
	for (unsigned i = 0; i < r->msg.nrcpt; i++)
		any |= (r->rcpt[i].priv & 2) != 0; /* RCPT got 2xx */
	return any;
}

/* Command lines written outside the body. */
static void flush_cmds(struct run *r)
{
	const char *p = r->out.p, *end = p + r->out.len;
	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		CHECK(lf && lf > p && lf[-1] == '\r');
		size_t n = (size_t)(lf - p) + 1;
		CHECK(n <= SMTPC_CMD_ROOM);
		CHECK(!memchr(p, '\r', n - 2));
		CHECK(starts(p, n, "EHLO mx.example.com\r\n") ||
		      starts(p, n, "HELO mx.example.com\r\n") || starts(p, n, "STARTTLS\r\n") ||
		      starts(p, n, "MAIL FROM:<") || starts(p, n, "RCPT TO:<") ||
		      starts(p, n, "DATA\r\n") || starts(p, n, "QUIT\r\n") ||
		      starts(p, n, ".\r\n"));
		if (starts(p, n, "DATA\r\n")) {
			/* pipelined: it ends the batch, before any reply */
			CHECK(accepted(r) || (r->s.ext & SMTPC_EXT_PIPELINING));
			r->data_sent = true;
		}
		if (starts(p, n, ".\r\n")) r->dot_written = true;
		p = lf + 1;
	}
	rec_put(&r->tr, r->out.p, r->out.len);
	r->out.len = 0;
}

static bool printable(const char *s, size_t cap)
{
	size_t n = strnlen(s, cap);
	if (n == cap) return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f) return false;
	return true;
}

/* Decided recipients stay decided; results are well-formed. */
static void check_results(struct run *r)
{
	for (unsigned i = 0; i < r->msg.nrcpt; i++) {
		struct smtpc_rcpt *c = &r->rcpt[i], *o = &r->seen[i];
		CHECK(c->result <= SMTPC_PERM);
		if (o->result != SMTPC_PENDING) {
			CHECK(c->result == o->result && c->code == o->code);
			CHECK(!strcmp(c->diag, o->diag) && !strcmp(c->status, o->status));
		}
		if (c->result != SMTPC_PENDING) {
			CHECK(printable(c->status, sizeof c->status));
			CHECK(printable(c->diag, sizeof c->diag));
			CHECK(c->status[0] == (c->result == SMTPC_DELIVERED ? '2'
					       : c->result == SMTPC_TEMP    ? '4'
									    : '5') ||
			      (c->result == SMTPC_TEMP && c->code >= 500 &&
			       c->stage == SMTPC_W_GREETING));
			if (c->result == SMTPC_DELIVERED)
				CHECK(r->dot_written && c->code >= 200 && c->code < 300);
			if (c->code) CHECK(c->code >= 200 && c->code <= 599);
		}
		*o = *c;
	}
}

static bool handle(struct run *r, enum smtpc_req req)
{
	bool drop = false;
	while (req == SMTPC_REQ_STARTTLS || req == SMTPC_REQ_BODY) {
		flush_cmds(r);
		check_results(r);
		char tag[32];
		snprintf(tag, sizeof tag, "<req %d>", req);
		note(r, tag);
		if (req == SMTPC_REQ_STARTTLS) {
			drop = true;
			req = smtpc_complete(&r->s, req, r->tls_ok ? 0 : -1, &r->out);
		} else {
			CHECK(r->data_sent && accepted(r));
			size_t off = 0, n = sizeof body - 1;
			while (off < n) {
				size_t used = smtpc_body(&r->s, body + off, n - off, &r->out);
				CHECK(used > 0 || obuf_room(&r->out) < 3);
				off += used;
				rec_put(&r->tr, r->out.p, r->out.len);
				r->out.len = 0;
			}
			req = smtpc_complete(&r->s, req, r->body_ok ? 0 : -1, &r->out);
		}
		CHECK(r->out.len <= r->out.cap);
	}
	flush_cmds(r);
	check_results(r);
	if (req == SMTPC_REQ_CLOSE) {
		CHECK(smtpc_done(&r->s));
		note(r, "<close>");
		r->closed = true;
	} else if (req == SMTPC_REQ_IDLE) {
		CHECK(smtpc_done(&r->s) && smtpc_idle(&r->s) && r->dot_written);
		note(r, "<idle>");
		if (++r->idles < 3) {
			/* the next message on this session: results start over */
			smtpc_next(&r->s, &r->msg);
			CHECK(!smtpc_idle(&r->s));
			memcpy(r->seen, r->rcpt, sizeof r->seen);
			r->data_sent = r->dot_written = false;
		} else {
			smtpc_quit(&r->s);
		}
	} else {
		/* a live session always has a deadline */
		unsigned secs;
		smtpc_wait(&r->s, &secs, NULL);
		CHECK(secs > 0);
	}
	return drop;
}

/* Feeds one piece until used, dropped (STARTTLS) or closed. */
static bool feed(struct run *r, const char *in, size_t n)
{
	size_t off = 0;
	for (;;) {
		if (r->closed) return false;
		CHECK(r->out.len == 0);
		size_t used = (size_t)-1;
		enum smtpc_req req = smtpc_feed(&r->s, in + off, n - off, &used, &r->out);
		CHECK(used <= n - off);
		CHECK(r->out.len <= r->out.cap);
		bool wrote = r->out.len > 0;
		off += used;
		if (req == SMTPC_REQ_NONE && off < n) CHECK(obuf_room(&r->out) < SMTPC_CMD_ROOM);
		if (handle(r, req)) return true;
		if (off == n && !wrote) return false;
	}
}

static void run(struct run *r, const uint8_t *data, size_t size, bool fine)
{
	static const char *const addrs[NRCPT] = {"a@remote.test", "b@remote.test",
						 "j\xc3\xb6rg@remote.test", "c@remote.test"};
	uint8_t cfg = data[0], opt = data[1];
	r->pol =
	    (struct smtpc_policy){.hostname = "mx.example.com", .tls = (enum smtpc_tls)(cfg % 3)};
	r->msg = (struct smtpc_msg){
	    .from = cfg & 4 ? "" : "alice@example.com",
	    .envid = cfg & 8 ? "env id+1" : NULL,
	    .ret = (enum smtp_ret)(((cfg >> 4) & 3) % 3),
	    .size = cfg & 64 ? 100000 : 100,
	    .body_8bit = cfg & 128,
	    .smtputf8 = opt & 128,
	    .rcpt = r->rcpt,
	    .nrcpt = 1 + opt % NRCPT,
	};
	for (unsigned i = 0; i < NRCPT; i++)
		r->rcpt[i] = (struct smtpc_rcpt){
		    .addr = addrs[i],
		    .orcpt = (opt >> 2) & (1 << i) ? "rfc822;x+y@remote.test" : NULL,
		    .notify = (uint8_t)((opt >> 3) & 15),
		};
	r->tls_ok = data[3] & 1;
	r->body_ok = data[3] & 2;
	r->out =
	    (struct obuf){r->outbuf, 0, fine ? SMTPC_CMD_ROOM + (data[3] >> 2) : sizeof r->outbuf};
	smtpc_start(&r->s, &r->pol, &r->msg);
	r->s.keep = data[2] & 0x40;
	memcpy(r->seen, r->rcpt, sizeof r->seen);

	const char *in = (const char *)data + 4;
	size_t n = size - 4;
	uint32_t coarse = data[2], finer = data[3] | (uint32_t)data[2] << 8;
	unsigned maxread = 1u << (data[2] % 11);
	for (size_t off = 0; off < n && !r->closed;) {
		size_t len = 1 + lcg(&coarse) % maxread;
		if (len > n - off) len = n - off;
		if (!fine) {
			feed(r, in + off, len);
		} else {
			for (size_t k = 0; k < len && !r->closed;) {
				size_t piece = 1 + lcg(&finer) % 7;
				if (piece > len - k) piece = len - k;
				if (feed(r, in + off + k, piece)) break;
				k += piece;
			}
		}
		off += len;
	}
	if (!r->closed) {
		/* the input ends: the server hangs up or falls silent */
		CHECK((data[1] & 2 ? smtpc_timeout(&r->s) : smtpc_eof(&r->s)) == SMTPC_REQ_CLOSE);
		CHECK(smtpc_done(&r->s));
		check_results(r);
	}
	char res[64];
	for (unsigned i = 0; i < r->msg.nrcpt; i++) {
		snprintf(res, sizeof res, "<r%u %d %u %s>", i, r->rcpt[i].result, r->rcpt[i].code,
			 r->rcpt[i].status);
		note(r, res);
		note(r, r->rcpt[i].diag);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run a, b;
	if (size < 4) return 0;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	run(&a, data, size, false);
	run(&b, data, size, true);
	rec_same(&a.tr, &b.tr, "FUZZ_SMTPC_DUMP");
	free(a.tr.p);
	free(b.tr.p);
	return 0;
}
