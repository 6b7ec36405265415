/*
 * libFuzzer target for proto/pop3.c.
 *
 * Input: 4 octets of setup, then what the client sends. The client's bytes
 * arrive in "reads" whose sizes come from the setup; a simulated core answers
 * every request (password, maildrop open, RETR, UPDATE, TLS), succeeding or
 * failing as the next bits of the setup say. Message 1 of the maildrop is
 * the client's input itself, so that the dot-stuffer sees arbitrary text.
 *
 * Each input runs twice: once a read at a time into a roomy obuf, once with
 * every read cut again into small pieces and an obuf that holds barely one
 * reply. Besides the sanitizers' checks, the two runs must agree octet for
 * octet -- replies, requests, message text -- since neither the way TCP cuts
 * the input nor the room in the output buffer may change the dialogue. STLS
 * drops the rest of its read in both runs (RFC 2595 4).
 * Invariants checked on the way: *used <= n; only a full obuf or a pending
 * listing may stop the machine short of its input; every reply line is
 * printable ASCII ending in CRLF, at most 512 octets, and each answer starts
 * with "+" or "-"; a login only for the identity the core checked; RETR only
 * of a live message; a RETR's stuffed text, unstuffed, is the message (with
 * the final CRLF added when missing) and ends in CRLF "." CRLF.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pop3.h"
#include "tests/fuzz/fuzz.h"

/* Enough for UIDL to outgrow the small obuf: listings continue. */
#define NMSGS 40

struct run {
	struct pop3_session s;
	struct pop3_policy pol;
	struct obuf out;
	char outbuf[8192];
	struct rec tr;   /* replies, requests and message text, in order */
	struct rec body; /* the RETR text being streamed */
	struct pop3_msg msgs[NMSGS];
	const char *text[NMSGS];
	size_t textlen[NMSGS];
	bool closed;
	int auth_seen; /* the domain the core was asked about */
	const uint8_t *bits;
	size_t nbits, bit;
};

static const struct pop3_domain domains[] = {{"example.com"}, {"example.org"}};

static bool next_bit(struct run *r)
{
	if (r->nbits == 0)
		return true;
	size_t i = r->bit++ % (r->nbits * 8);
	return r->bits[i / 8] >> (i % 8) & 1;
}

/* Reply lines: printable, CRLF, bounded; an answer starts with + or -. */
static void check_replies(const char *p, size_t n, bool continuation)
{
	const char *end = p + n;
	if (n && !continuation)
		CHECK(p[0] == '+' || p[0] == '-');
	while (p < end) {
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		CHECK(lf && lf > p && lf[-1] == '\r');
		CHECK(lf + 1 - p <= 512);
		for (const char *q = p; q < lf - 1; q++)
			CHECK(*q >= 0x20 && *q <= 0x7e);
		p = lf + 1;
	}
}

static void flush(struct run *r, bool continuation)
{
	check_replies(r->out.p, r->out.len, continuation);
	rec_put(&r->tr, r->out.p, r->out.len);
	r->out.len = 0;
}

static void note(struct run *r, const char *what) { rec_put(&r->tr, what, strlen(what)); }

static enum pop3_req complete(struct run *r, enum pop3_req req, int result)
{
	enum pop3_req next = pop3_complete(&r->s, req, result, &r->out);
	CHECK(r->out.len <= r->out.cap);
	flush(r, false);
	return next;
}

/* The stuffed text, unstuffed, is the message with its final CRLF. */
static void check_stuffed(const struct rec *b, const char *text, size_t n)
{
	CHECK(b->len >= 3 && memcmp(b->p + b->len - 3, ".\r\n", 3) == 0);
	size_t blen = b->len - 3;
	CHECK(blen == 0 || b->p[blen - 1] == '\n');
	struct rec u = {0};
	bool bol = true;
	for (size_t i = 0; i < blen; i++) {
		char c = b->p[i];
		if (bol && c == '.') {
			CHECK(i + 1 < blen && b->p[i + 1] == '.');
			i++;
		}
		rec_put(&u, &b->p[i], 1);
		bol = b->p[i] == '\n';
	}
	size_t want = n;
	if (n && text[n - 1] != '\n')
		want += text[n - 1] == '\r' ? 1 : 2;
	CHECK(u.len == want);
	CHECK(n == 0 || memcmp(u.p, text, n) == 0);
	free(u.p);
}

/* pop3_stuff_inplace (the core's RETR path) must give what pop3_stuff
 * gave, whatever the chunks. */
static void check_inplace(const struct rec *b, const char *text, size_t n, uint32_t seed)
{
	char *buf = malloc(n + n / 2 + 8);
	CHECK(buf);
	struct pop3_stuffer st;
	pop3_stuff_init(&st, -1);
	size_t len = 0;
	for (size_t off = 0; off < n;) {
		size_t k = 1 + lcg(&seed) % 64;
		if (k > n - off)
			k = n - off;
		memcpy(buf + len, text + off, k);
		size_t m = pop3_stuff_inplace(&st, buf + len, k);
		CHECK(m >= k && m <= k + k / 2 + 1);
		len += m;
		off += k;
	}
	char tail[8];
	struct obuf o = {tail, 0, sizeof tail};
	pop3_stuff_end(&st, &o);
	CHECK(len + o.len == b->len);
	CHECK(memcmp(buf, b->p, len) == 0 && memcmp(tail, b->p + len, o.len) == 0);
	free(buf);
}

static enum pop3_req retr(struct run *r, bool ok, bool midway)
{
	unsigned i = pop3_retr_index(&r->s);
	long lines = pop3_retr_lines(&r->s);
	CHECK(i < r->s.nmsgs && !r->s.msgs[i].deleted);
	CHECK(lines >= -1);
	CHECK(r->out.len == 0);
	if (!ok)
		return complete(r, POP3_REQ_RETR, midway ? -ENOENT : -EIO);
	pop3_retr_ok(&r->s, &r->out);
	CHECK(r->out.len > 0);
	flush(r, false);
	if (midway && lines < 0 && r->textlen[i] > 0)
		return complete(r, POP3_REQ_RETR, -EIO); /* must close */
	struct pop3_stuffer st;
	pop3_stuff_init(&st, lines);
	r->body.len = 0;
	const char *t = r->text[i];
	size_t n = r->textlen[i], off = 0;
	while (off < n && !st.done) {
		size_t k = pop3_stuff(&st, t + off, n - off, &r->out);
		CHECK(k <= n - off);
		CHECK(r->out.len <= r->out.cap);
		CHECK(k == n - off || obuf_room(&r->out) < 2);
		off += k;
		rec_put(&r->body, r->out.p, r->out.len);
		rec_put(&r->tr, r->out.p, r->out.len);
		r->out.len = 0;
	}
	pop3_stuff_end(&st, &r->out);
	rec_put(&r->body, r->out.p, r->out.len);
	rec_put(&r->tr, r->out.p, r->out.len);
	r->out.len = 0;
	if (lines < 0) {
		check_stuffed(&r->body, t, n);
		check_inplace(&r->body, t, n, (uint32_t)n);
	}
	return complete(r, POP3_REQ_RETR, 0);
}

/* The simulated core. Returns true if STLS asked to drop the input. */
static bool handle(struct run *r, enum pop3_req req)
{
	bool drop = false;
	while (req != POP3_REQ_NONE) {
		flush(r, false);
		char tag[32];
		snprintf(tag, sizeof tag, "<req %d>", req);
		note(r, tag);
		bool ok = next_bit(r);
		switch (req) {
		case POP3_REQ_STLS:
			CHECK(!r->s.tls && r->s.tls_available);
			drop = true;
			req = complete(r, req, ok ? 0 : -1);
			break;
		case POP3_REQ_AUTH: {
			size_t len;
			const char *pw = pop3_auth_password(&r->s, &len);
			CHECK(strlen(pw) == len);
			CHECK(r->s.tls || r->pol.allow_plaintext_auth);
			int d = pop3_auth_domain(&r->s);
			CHECK(d >= -1 && d < (int)r->pol.ndomains);
			r->auth_seen = d;
			/* a core that says yes to an unknown identity must not
			   log it in either */
			req = complete(r, req, ok ? 0 : -1);
			if (req == POP3_REQ_OPEN)
				CHECK(d >= 0);
			break;
		}
		case POP3_REQ_OPEN: {
			CHECK(pop3_auth_domain(&r->s) == r->auth_seen);
			bool busy = next_bit(r);
			if (ok) {
				for (unsigned i = 0; i < NMSGS; i++)
					r->msgs[i].deleted = false;
				pop3_set_maildrop(&r->s, r->msgs, NMSGS);
			}
			req = complete(r, req, ok ? 0 : busy ? -EAGAIN : -EIO);
			CHECK(r->s.auth_domain == (ok ? r->auth_seen : -1));
			break;
		}
		case POP3_REQ_RETR:
			req = retr(r, ok, next_bit(r));
			break;
		case POP3_REQ_UPDATE: {
			CHECK(r->s.auth_domain >= 0);
			char del[NMSGS + 3] = "<";
			for (unsigned i = 0; i < NMSGS; i++)
				del[i + 1] = r->msgs[i].deleted ? 'D' : '-';
			strcat(del, ">");
			note(r, del);
			req = complete(r, req, ok ? 0 : -EIO);
			CHECK(req == POP3_REQ_CLOSE);
			break;
		}
		case POP3_REQ_CLOSE:
			r->closed = true;
			req = POP3_REQ_NONE;
			break;
		default:
			CHECK(!"unknown request");
		}
	}
	return drop;
}

/* Feeds one piece until it is used up, dropped or the session closed; a
 * pending listing is drained with empty feeds, as the core does. */
static bool feed(struct run *r, const char *in, size_t n)
{
	size_t off = 0;
	while ((off < n || pop3_output_pending(&r->s)) && !r->closed) {
		CHECK(r->out.len == 0);
		bool cont = pop3_output_pending(&r->s);
		size_t avail = n - off, used = (size_t)-1;
		enum pop3_req req = pop3_feed(&r->s, in + off, n - off, &used, &r->out);
		CHECK(used <= n - off);
		CHECK(r->out.len <= r->out.cap);
		off += used;
		if (req == POP3_REQ_NONE && off < n)
			CHECK(obuf_room(&r->out) < POP3_REPLY_ROOM || pop3_output_pending(&r->s));
		if (req == POP3_REQ_NONE && used == 0 && avail > 0 && !cont)
			CHECK(obuf_room(&r->out) < POP3_REPLY_ROOM);
		flush(r, cont);
		if (handle(r, req))
			return true;
		flush(r, false);
	}
	return false;
}

static void run(struct run *r, const uint8_t *data, size_t size, bool fine)
{
	uint8_t cfg = data[0];
	r->pol = (struct pop3_policy){
		.hostname = "pop.example.com",
		.domains = domains,
		.ndomains = 2,
		.allow_plaintext_auth = cfg & 4,
	};
	r->out = (struct obuf){r->outbuf, 0, fine ? POP3_REPLY_ROOM + (cfg >> 5) : sizeof r->outbuf};
	r->s.pol = &r->pol;
	r->s.tls = cfg & 1;
	r->s.tls_available = cfg & 2;
	r->bits = data + 1;
	r->nbits = 3;
	r->auth_seen = -2;

	const char *in = (const char *)data + 4;
	size_t n = size - 4;
	static const char *const fixed[4] = {
		NULL,
		"Subject: x\r\n\r\n.\r\n..\r\n.a\r\nb\r\n",
		"A: b\r\n",
		"",
	};
	for (unsigned i = 0; i < NMSGS; i++) {
		r->text[i] = i % 4 ? fixed[i % 4] : in;
		r->textlen[i] = i % 4 ? strlen(fixed[i % 4]) : n;
		r->msgs[i] = (struct pop3_msg){.size = r->textlen[i]};
		snprintf(r->msgs[i].uid, sizeof r->msgs[i].uid, "u%u.%s", i,
			 i % 4 == 1 ? "012345678901234567890123456789012345678901234567890123456789"
				    : "x");
	}
	pop3_start(&r->s, &r->out);
	flush(r, false);

	uint32_t coarse = data[2], finer = data[3] | (uint32_t)data[2] << 8;
	unsigned maxread = 1u << (data[2] % 13);
	for (size_t off = 0; off < n && !r->closed;) {
		size_t len = 1 + lcg(&coarse) % maxread;
		if (len > n - off)
			len = n - off;
		if (!fine) {
			feed(r, in + off, len);
		} else {
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
	if (!r->closed && (cfg & 64)) {
		pop3_timeout(&r->s, &r->out);
		flush(r, false);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run a, b;
	if (size < 4)
		return 0;
	_Static_assert(sizeof(struct pop3_session) <= 400, "the session grew");
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	run(&a, data, size, false);
	run(&b, data, size, true);
	rec_same(&a.tr, &b.tr, "FUZZ_POP3_DUMP");
	free(a.tr.p);
	free(b.tr.p);
	free(a.body.p);
	free(b.body.p);
	return 0;
}
