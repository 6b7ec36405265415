/*
 * libFuzzer target for proto/smtp.c.
 *
 * Input: 4 octets of setup, then what the client sends. The client's bytes
 * arrive in "reads" whose sizes come from the setup; a simulated core answers
 * every request, succeeding or failing as the next bit of the setup says.
 *
 * Each input runs twice: once a read at a time into a roomy obuf, once with
 * every read cut again into small pieces and an obuf that holds barely one
 * reply. Besides the sanitizers' checks (no overflow, no leak), the two runs
 * must agree octet for octet -- replies, requests, stored bodies -- since
 * neither the way TCP cuts the input nor the pace of sending may change the
 * dialogue. STARTTLS drops the rest of its read in both runs (RFC 3207 4.2).
 * Invariants checked on the way: *used <= n; only a full obuf may stop the
 * machine short of its input; body octets only while a spool is open; no
 * spool left open once the transaction is over; every
 * reply line is "DDD" SP/"-" text CRLF; a DATA body is CRLF lines only.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/smtp.h"
#include "tests/fuzz/fuzz.h"

struct run {
	struct smtp_session s;
	struct smtp_io io;
	struct obuf out;
	char outbuf[8192];
	struct rec tr;   /* replies, requests and bodies, in order */
	struct rec body; /* the message being spooled */
	bool spool_open, closed;
	bool data; /* the open spool is for DATA, not BDAT */
	const uint8_t *bits;
	size_t nbits, bit;
};

static bool next_bit(struct run *r)
{
	if (r->nbits == 0)
		return true;
	size_t i = r->bit++ % (r->nbits * 8);
	return r->bits[i / 8] >> (i % 8) & 1;
}

static void body_cb(void *ctx, const char *p, size_t n)
{
	struct run *r = ctx;
	CHECK(r->spool_open);
	CHECK(n > 0);
	rec_put(&r->body, p, n);
}

static void flush(struct run *r)
{
	/* Every reply line: three digits, SP or "-", text without CR or LF. */
	const char *p = r->out.p, *end = p + r->out.len;
	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		CHECK(lf && lf - p >= 5 && lf[-1] == '\r');
		CHECK(p[0] >= '2' && p[0] <= '5' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
		      p[2] <= '9' && (p[3] == ' ' || p[3] == '-'));
		CHECK(!memchr(p, '\r', (size_t)(lf - 1 - p)));
		p = lf + 1;
	}
	rec_put(&r->tr, r->out.p, r->out.len);
	r->out.len = 0;
}

static void note(struct run *r, const char *what) { rec_put(&r->tr, what, strlen(what)); }

static enum smtp_req complete(struct run *r, enum smtp_req req, int result, const char *arg)
{
	enum smtp_req next = smtp_complete(&r->s, req, result, arg, &r->io);
	CHECK(r->out.len <= r->out.cap);
	flush(r);
	return next;
}

/* A DATA body is what DATA could have stored: CRLF lines only. */
static void check_data_body(const struct rec *b)
{
	for (size_t i = 0; i < b->len; i++) {
		if (b->p[i] == '\r')
			CHECK(i + 1 < b->len && b->p[i + 1] == '\n');
		if (b->p[i] == '\n')
			CHECK(i > 0 && b->p[i - 1] == '\r');
	}
	CHECK(b->len == 0 || (b->len >= 2 && b->p[b->len - 1] == '\n'));
}

/* The simulated core. Returns true if STARTTLS asked to drop the input. */
static bool handle(struct run *r, enum smtp_req req)
{
	bool drop = false;
	while (req != SMTP_REQ_NONE) {
		flush(r);
		char tag[32];
		snprintf(tag, sizeof tag, "<req %d>", req);
		note(r, tag);
		bool ok = next_bit(r);
		switch (req) {
		case SMTP_REQ_STARTTLS:
			drop = true;
			req = complete(r, req, ok ? 0 : -1, NULL);
			break;
		case SMTP_REQ_AUTH: {
			size_t len;
			const char *pw = smtp_auth_password(&r->s, &len);
			CHECK(strlen(pw) == len);
			int d = smtp_auth_domain(&r->s);
			CHECK(d >= -1 && d < (int)r->s.pol->ndomains);
			/* a core that says yes to an unknown identity must not
			   log it in either */
			req = complete(r, req, ok ? 0 : -1, NULL);
			CHECK(r->s.auth_domain == -1 || r->s.auth_domain == d);
			break;
		}
		case SMTP_REQ_SPOOL_OPEN: {
			CHECK(smtp_in_transaction(&r->s));
			CHECK(smtp_tx_nrcpt(&r->s) > 0);
			char hdr[2048];
			size_t n = smtp_trace_headers(hdr, sizeof hdr, &r->s, 0, "ID", 1795519707, 60);
			CHECK(n <= sizeof hdr);
			n = smtp_trace_headers(hdr, 40, &r->s, -1, "ID", -1, -61);
			CHECK(n <= 40);
			r->body.len = 0;
			r->spool_open = ok;
			size_t mark = r->tr.len;
			req = complete(r, req, ok ? 0 : -1, NULL);
			r->data = r->tr.len > mark && r->tr.p[mark] == '3'; /* 354 */
			break;
		}
		case SMTP_REQ_SPOOL_COMMIT:
			CHECK(r->spool_open);
			CHECK(r->body.len <= r->s.pol->max_message_size);
			if (r->data)
				check_data_body(&r->body);
			for (unsigned i = 0; i < smtp_tx_nrcpt(&r->s); i++)
				CHECK(strlen(smtp_tx_rcpt(&r->s, i)->addr) < SMTP_PATH_MAX);
			note(r, "<body>");
			rec_put(&r->tr, r->body.p, r->body.len);
			note(r, "</body>");
			r->spool_open = false;
			req = complete(r, req, ok ? 0 : -1, "QUEUEID");
			break;
		case SMTP_REQ_SPOOL_ABORT:
			CHECK(r->spool_open);
			CHECK(!smtp_in_transaction(&r->s));
			(void)strlen(smtp_tx_from(&r->s)); /* still readable */
			r->spool_open = false;
			req = SMTP_REQ_NONE;
			break;
		case SMTP_REQ_CLOSE:
			r->closed = true;
			r->spool_open = false;
			req = SMTP_REQ_NONE;
			break;
		default:
			CHECK(!"unknown request");
		}
	}
	return drop;
}

/* Feeds one piece until it is used up, dropped or the session closed. */
static bool feed(struct run *r, const char *in, size_t n)
{
	size_t off = 0;
	while (off < n && !r->closed) {
		CHECK(r->out.len == 0);
		size_t used = (size_t)-1;
		enum smtp_req req = smtp_feed(&r->s, in + off, n - off, &used, &r->io);
		CHECK(used <= n - off);
		CHECK(r->out.len <= r->out.cap);
		off += used;
		if (req == SMTP_REQ_NONE && off < n) {
			/* stopped short: only for want of obuf room, and never
			   before doing anything with an empty obuf */
			CHECK(obuf_room(&r->out) < SMTP_REPLY_ROOM);
			CHECK(used > 0);
		}
		bool drop = handle(r, req);
		/* a spool is open exactly while a transaction is */
		CHECK(!r->spool_open || smtp_in_transaction(&r->s));
		if (drop)
			return true;
		flush(r);
	}
	return false;
}

static const char *const blocked[] = {"noreply@example.com"};
static const struct smtp_domain domains[] = {
	{"example.com", blocked, 1},
	{"example.org", NULL, 0},
};

static void run(struct run *r, const uint8_t *data, size_t size, bool fine)
{
	static struct smtp_policy pols[8];
	static const uint64_t sizes[4] = {0, 40, 1000, 40u << 20};
	uint8_t cfg = data[0];
	struct smtp_policy *pol = &pols[fine];
	*pol = (struct smtp_policy){
		.hostname = "mx.example.com",
		.max_message_size = sizes[cfg >> 3 & 3],
		.max_recipients = data[1] % 5,
		.submission = cfg & 4,
		.domains = domains,
		.ndomains = 2,
	};
	r->out = (struct obuf){r->outbuf, 0, fine ? SMTP_REPLY_ROOM + (cfg >> 5) : sizeof r->outbuf};
	r->io = (struct smtp_io){&r->out, body_cb, r};
	r->s.pol = pol;
	strcpy(r->s.peer, cfg & 32 ? "2001:db8::1" : "192.0.2.1");
	r->s.tls = cfg & 1;
	r->s.tls_available = cfg & 2;
	r->bits = data + 1;
	r->nbits = 3;
	smtp_start(&r->s, &r->io);
	flush(r);

	const char *in = (const char *)data + 4;
	size_t n = size - 4;
	uint32_t coarse = data[2], finer = data[3] | (uint32_t)data[2] << 8;
	unsigned maxread = 1u << (data[2] % 13);
	for (size_t off = 0; off < n && !r->closed;) {
		size_t len = 1 + lcg(&coarse) % maxread;
		if (len > n - off)
			len = n - off;
		if (!fine) {
			feed(r, in + off, len);
		} else {
			/* the same read, cut again; STARTTLS drops the rest of
			   the read, as in the coarse run */
			for (size_t k = 0; k < len && !r->closed;) {
				size_t piece = 1 + lcg(&finer) % 7;
				if (piece > len - k)
					piece = len - k;
				if (feed(r, in + off + k, piece))
					break;
				k += piece;
			}
		}
		off += len;
	}
	if (!r->closed) {
		if (cfg & 64)
			smtp_timeout(&r->s, &r->io);
		else if (!smtp_in_transaction(&r->s))
			smtp_shutdown(&r->s, &r->io);
		flush(r);
	}
	smtp_end(&r->s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run a, b;
	if (size < 4)
		return 0;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	run(&a, data, size, false);
	run(&b, data, size, true);
	rec_same(&a.tr, &b.tr, "FUZZ_SMTP_DUMP");
	free(a.tr.p);
	free(b.tr.p);
	free(a.body.p);
	free(b.body.p);
	return 0;
}
