/* Unit tests for proto/dsn.c: each DSN is assembled the way the delivery
 * layer will (prefix, the original or its header block found a chunk at a
 * time, suffix), then parsed back with the small MIME reader below: the
 * multipart/report frame (RFC 6522), the parts' types, and the
 * message/delivery-status fields per recipient (RFC 3464). Also RFC 3461
 * NOTIFY semantics (dsn_wanted). */
#include "proto/dsn.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* --- a tiny MIME reader: just enough to check what we write */

struct span {
	const char *p;
	size_t n;
};

/* Header block and body of an entity. */
static void split_entity(struct span e, struct span *hdr, struct span *body)
{
	const char *end = memmem(e.p, e.n, "\r\n\r\n", 4);
	cr_assert(end, "no empty line in entity: %.*s", (int)e.n, e.p);
	*hdr = (struct span){e.p, (size_t)(end - e.p) + 2};
	*body = (struct span){end + 4, e.n - (size_t)(end + 4 - e.p)};
}

/* The unfolded value of the first field NAME in a header block (RFC 5322
 * 2.2.3: CRLF before WSP removed), leading white space trimmed. */
static bool field(struct span h, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	const char *p = h.p, *end = h.p + h.n;
	while (p < end) {
		const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
		cr_assert(eol);
		if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
			const char *v = p + nl + 1;
			size_t k = 0;
			while (*v == ' ' || *v == '\t')
				v++;
			for (;;) {
				while (v < eol && k + 1 < cap)
					out[k++] = *v++;
				if (eol + 2 < end && (eol[2] == ' ' || eol[2] == '\t')) {
					v = eol + 2;
					eol = memmem(v, (size_t)(end - v), "\r\n", 2);
					cr_assert(eol);
					continue;
				}
				break;
			}
			out[k] = 0;
			return true;
		}
		p = eol + 2;
	}
	return false;
}

static bool contains(struct span s, const char *lit)
{
	return memmem(s.p, s.n, lit, strlen(lit)) != NULL;
}

static bool has_field(struct span h, const char *name)
{
	char tmp[4096];
	return field(h, name, tmp, sizeof tmp);
}

static void expect_field(struct span h, const char *name, const char *want)
{
	char got[8192];
	cr_assert(field(h, name, got, sizeof got), "no %s in:\n%.*s", name, (int)h.n, h.p);
	cr_expect_str_eq(got, want, "%s", name);
}

/* Every line ends in CRLF and has at most 998 octets before it. */
static void check_lines(const char *p, size_t n)
{
	size_t col = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\n') {
			cr_assert(i > 0 && p[i - 1] == '\r', "bare LF at %zu", i);
			col = 0;
		} else if (p[i] == '\r') {
			cr_assert(i + 1 < n && p[i + 1] == '\n', "bare CR at %zu", i);
		} else {
			col++;
			cr_assert_leq(col, 998, "line too long at %zu", i);
		}
	}
}

#define MAXPARTS 8
struct mime {
	struct span hdr, body;
	char boundary[128];
	unsigned nparts;
	struct span part_hdr[MAXPARTS], part_body[MAXPARTS];
	char *buf;
	size_t len;
};

static void parse(struct mime *m, char *msg, size_t n)
{
	memset(m, 0, sizeof *m);
	m->buf = msg;
	m->len = n;
	check_lines(msg, n);
	split_entity((struct span){msg, n}, &m->hdr, &m->body);
	char ct[512];
	cr_assert(field(m->hdr, "Content-Type", ct, sizeof ct));
	cr_assert(strncmp(ct, "multipart/report;", 17) == 0, "%s", ct);
	cr_assert(strstr(ct, "report-type=delivery-status"), "%s", ct);
	const char *b = strstr(ct, "boundary=\"");
	cr_assert(b, "%s", ct);
	b += 10;
	const char *be = strchr(b, '"');
	cr_assert(be && be - b < 71 && be > b);
	snprintf(m->boundary, sizeof m->boundary, "\r\n--%.*s", (int)(be - b), b);
	size_t bl = strlen(m->boundary);
	/* RFC 2046 5.1.1: parts sit between delimiter lines; the last one is
	   followed by "--" */
	const char *p = m->body.p, *end = m->body.p + m->body.n;
	const char *d = memmem(p - 2, (size_t)(end - p) + 2, m->boundary, bl);
	cr_assert(d, "no first delimiter");
	for (;;) {
		const char *after = d + bl;
		if (end - after >= 2 && after[0] == '-' && after[1] == '-') {
			cr_expect(end - after == 4 && memcmp(after, "--\r\n", 4) == 0,
				  "junk after the close delimiter");
			break;
		}
		cr_assert(end - after >= 2 && after[0] == '\r' && after[1] == '\n');
		const char *start = after + 2;
		const char *next = memmem(start, (size_t)(end - start), m->boundary, bl);
		cr_assert(next, "part %u not closed", m->nparts);
		cr_assert_lt(m->nparts, MAXPARTS);
		split_entity((struct span){start, (size_t)(next - start)}, &m->part_hdr[m->nparts],
			     &m->part_body[m->nparts]);
		m->nparts++;
		d = next;
	}
}

/* The delivery-status body: groups of fields separated by empty lines; the
 * first is per message, the others per recipient (RFC 3464 2.1). */
#define MAXGROUPS 8
static unsigned status_groups(struct span body, struct span *g)
{
	unsigned k = 0;
	const char *p = body.p, *end = body.p + body.n;
	while (p < end && k < MAXGROUPS) {
		const char *e = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
		const char *ge = e ? e + 2 : end;
		g[k++] = (struct span){p, (size_t)(ge - p)};
		p = e ? e + 4 : end;
	}
	return k;
}

/* --- building */

static const char ORIG[] = "From: Alice <alice@example.com>\r\n"
			   "To: bob@remote.test\r\n"
			   "Subject: hello\r\n"
			   "\r\n"
			   "body line 1\r\n"
			   "--not-a-boundary\r\n";
#define ORIG_HDRS_LEN 72 /* through the empty line */

static struct dsn_rcpt rc1 = {
    .addr = "bob@remote.test",
    .orcpt = "rfc822;Bob@Remote.test",
    .action = DSN_FAILED,
    .status = "5.1.1",
    .remote_mta = "mx.remote.test",
    .diagnostic = "550 5.1.1 <bob@remote.test>: Recipient address rejected",
    .last_attempt = 1700000300,
};

static struct dsn_report base(const struct dsn_rcpt *rc, unsigned n)
{
	return (struct dsn_report){
	    .reporting_mta = "mx.example.com",
	    .sender = "alice@example.com",
	    .envid = NULL,
	    .ret = SMTP_RET_UNSET,
	    .arrival = 1700000000,
	    .now = 1700000400,
	    .tz_off_min = 0,
	    .token = "Q1700000400.abc-1",
	    .rcpt = rc,
	    .nrcpt = n,
	};
}

/* prefix + original (whole or headers, found in chunks of `chunk`) + suffix */
static size_t build(const struct dsn_report *r, const char *orig, size_t olen, size_t chunk,
		    char *out, size_t cap)
{
	size_t len, k;
	int rc = dsn_prefix(r, out, cap, &len);
	cr_assert_eq(rc, DSN_OK);
	k = len;
	if (dsn_headers_only(r)) {
		unsigned st = 0;
		for (size_t i = 0; i < olen && st != DSN_HDRS_DONE; i += chunk) {
			size_t m = olen - i < chunk ? olen - i : chunk;
			size_t u = dsn_headers_scan(&st, orig + i, m);
			cr_assert_leq(u, m);
			memcpy(out + k, orig + i, u);
			k += u;
		}
	} else {
		memcpy(out + k, orig, olen);
		k += olen;
	}
	rc = dsn_suffix(r, out + k, cap - k, &len);
	cr_assert_eq(rc, DSN_OK);
	return k + len;
}

static char msg[1 << 17];
static struct mime M;

static void build_parse(const struct dsn_report *r)
{
	size_t n = build(r, ORIG, sizeof ORIG - 1, 7, msg, sizeof msg);
	parse(&M, msg, n);
	cr_assert_eq(M.nparts, 3);
}

Test(dsn, failure_full)
{
	struct dsn_report r = base(&rc1, 1);
	build_parse(&r);
	/* the message: no Return-Path (the delivery layer's), starts with From */
	cr_expect(strncmp(msg, "From: ", 6) == 0);
	cr_expect_not(has_field(M.hdr, "Return-Path"));
	expect_field(M.hdr, "From", "MAILER-DAEMON@mx.example.com (Mail Delivery System)");
	expect_field(M.hdr, "To", "alice@example.com");
	expect_field(M.hdr, "Subject", "Undelivered Mail Returned to Sender");
	expect_field(M.hdr, "Date", "Tue, 14 Nov 2023 22:20:00 +0000");
	expect_field(M.hdr, "Message-ID", "<Q1700000400.abc-1@mx.example.com>");
	expect_field(M.hdr, "Auto-Submitted", "auto-replied");
	expect_field(M.hdr, "MIME-Version", "1.0");
	expect_field(M.hdr, "Content-Type",
		     "multipart/report; report-type=delivery-status;"
		     "\tboundary=\"=_mpb_Q1700000400.abc-1_=\"");
	cr_expect_not(has_field(M.hdr, "Content-Transfer-Encoding"));

	/* part 1: for people */
	expect_field(M.part_hdr[0], "Content-Type", "text/plain; charset=utf-8");
	cr_expect(contains(M.part_body[0],
			   "<bob@remote.test>: failed (5.1.1)\r\n    host mx.remote.test said: 550 "
			   "5.1.1 <bob@remote.test>: Recipient address\r\n    rejected\r\n"),
		  "%.*s", (int)M.part_body[0].n, M.part_body[0].p);

	/* part 2: for programs */
	expect_field(M.part_hdr[1], "Content-Type", "message/delivery-status");
	struct span g[MAXGROUPS];
	cr_assert_eq(status_groups(M.part_body[1], g), 2);
	expect_field(g[0], "Reporting-MTA", "dns; mx.example.com");
	expect_field(g[0], "Arrival-Date", "Tue, 14 Nov 2023 22:13:20 +0000");
	cr_expect_not(has_field(g[0], "Original-Envelope-Id"));
	expect_field(g[1], "Original-Recipient", "rfc822; Bob@Remote.test");
	expect_field(g[1], "Final-Recipient", "rfc822; bob@remote.test");
	expect_field(g[1], "Action", "failed");
	expect_field(g[1], "Status", "5.1.1");
	expect_field(g[1], "Remote-MTA", "dns; mx.remote.test");
	expect_field(g[1], "Diagnostic-Code",
		     "smtp; 550 5.1.1 <bob@remote.test>: Recipient address rejected");
	expect_field(g[1], "Last-Attempt-Date", "Tue, 14 Nov 2023 22:18:20 +0000");
	cr_expect_not(has_field(g[1], "Will-Retry-Until"));

	/* part 3: the whole original, octet for octet (RET unset + failure) */
	expect_field(M.part_hdr[2], "Content-Type", "message/rfc822");
	cr_expect_eq(M.part_body[2].n, sizeof ORIG - 1);
	cr_expect(memcmp(M.part_body[2].p, ORIG, sizeof ORIG - 1) == 0);
}

Test(dsn, ret_hdrs_sends_headers_only)
{
	struct dsn_report r = base(&rc1, 1);
	r.ret = SMTP_RET_HDRS;
	cr_assert(dsn_headers_only(&r));
	for (size_t chunk = 1; chunk < sizeof ORIG; chunk++) {
		size_t n = build(&r, ORIG, sizeof ORIG - 1, chunk, msg, sizeof msg);
		parse(&M, msg, n);
		cr_assert_eq(M.nparts, 3);
		expect_field(M.part_hdr[2], "Content-Type", "text/rfc822-headers");
		/* exactly the header block, the body nowhere */
		cr_expect_eq(M.part_body[2].n, ORIG_HDRS_LEN, "chunk %zu", chunk);
		cr_expect(memcmp(M.part_body[2].p, ORIG, ORIG_HDRS_LEN) == 0);
		cr_expect_null(memmem(msg, n, "body line", 9));
	}
	expect_field(M.part_hdr[2], "Content-Description", "Undelivered Message Headers");
	cr_expect(contains(M.part_body[0], "Its headers are attached"));
	r.ret = SMTP_RET_FULL;
	cr_expect_not(dsn_headers_only(&r));
}

Test(dsn, several_recipients_mixed)
{
	struct dsn_rcpt rc[3] = {
	    rc1,
	    {.addr = "carol@slow.test",
	     .action = DSN_DELAYED,
	     .status = "4.4.1",
	     .remote_mta = "mx.slow.test",
	     .diagnostic = "421 4.4.1 try later",
	     .last_attempt = 1700000350,
	     .retry_until = 1700432000},
	    {.addr = "dave@example.com",
	     .orcpt = "rfc822;dave@example.com",
	     .action = DSN_DELIVERED,
	     .status = "2.0.0"},
	};
	struct dsn_report r = base(rc, 3);
	r.envid = "QQ314159";
	r.tz_off_min = -300;
	build_parse(&r);
	expect_field(M.hdr, "Subject", "Undelivered Mail Returned to Sender");
	expect_field(M.hdr, "Date", "Tue, 14 Nov 2023 17:20:00 -0500");
	struct span g[MAXGROUPS];
	cr_assert_eq(status_groups(M.part_body[1], g), 4);
	expect_field(g[0], "Original-Envelope-Id", "QQ314159");
	expect_field(g[0], "Arrival-Date", "Tue, 14 Nov 2023 17:13:20 -0500");
	expect_field(g[1], "Action", "failed");
	expect_field(g[2], "Final-Recipient", "rfc822; carol@slow.test");
	cr_expect_not(has_field(g[2], "Original-Recipient"));
	expect_field(g[2], "Action", "delayed");
	expect_field(g[2], "Status", "4.4.1");
	expect_field(g[2], "Diagnostic-Code", "smtp; 421 4.4.1 try later");
	expect_field(g[2], "Will-Retry-Until", "Sun, 19 Nov 2023 17:13:20 -0500");
	expect_field(g[3], "Original-Recipient", "rfc822; dave@example.com");
	expect_field(g[3], "Action", "delivered");
	expect_field(g[3], "Status", "2.0.0");
	cr_expect_not(has_field(g[3], "Remote-MTA"));
	cr_expect_not(has_field(g[3], "Diagnostic-Code"));
	cr_expect_not(has_field(g[3], "Last-Attempt-Date"));
	struct span t = M.part_body[0];
	cr_expect(contains(t, "could not be delivered"));
	cr_expect(contains(t, "retried until Sun, 19 Nov 2023 17:13:20 -0500"));
	cr_expect(contains(t, "<dave@example.com>: delivered (2.0.0)\r\n"));
}

Test(dsn, delay_and_success_reports)
{
	struct dsn_rcpt d = {
	    .addr = "carol@slow.test", .action = DSN_DELAYED, .retry_until = 1700432000};
	struct dsn_report r = base(&d, 1);
	cr_expect(dsn_headers_only(&r)); /* RET unset and nobody failed */
	build_parse(&r);
	expect_field(M.hdr, "Subject", "Delayed Mail (still being retried)");
	expect_field(M.part_hdr[2], "Content-Type", "text/rfc822-headers");
	expect_field(M.part_hdr[2], "Content-Description", "Delayed Message Headers");
	struct span g[MAXGROUPS];
	cr_assert_eq(status_groups(M.part_body[1], g), 2);
	expect_field(g[1], "Status", "4.0.0"); /* NULL status: per action */

	struct dsn_rcpt s[2] = {
	    {.addr = "dave@example.com", .action = DSN_DELIVERED},
	    {.addr = "erin@legacy.test", .action = DSN_RELAYED, .remote_mta = "mx.legacy.test"}};
	r = base(s, 2);
	r.ret = SMTP_RET_FULL; /* asked for: the whole message even on success */
	build_parse(&r);
	expect_field(M.hdr, "Subject", "Successful Mail Delivery Report");
	expect_field(M.part_hdr[2], "Content-Type", "message/rfc822");
	cr_assert_eq(status_groups(M.part_body[1], g), 3);
	expect_field(g[1], "Action", "delivered");
	expect_field(g[1], "Status", "2.0.0");
	expect_field(g[2], "Action", "relayed");
	expect_field(g[2], "Remote-MTA", "dns; mx.legacy.test");
	cr_expect(contains(M.part_body[0], "does not report delivery"));
}

/* RFC 3464 2.3.6: "smtp" types an SMTP reply; a reason of our own (no MX,
 * DNS failure, refused locally) carries our own type. */
Test(dsn, local_diagnostic_has_its_own_type)
{
	struct dsn_rcpt d[2] = {
	    {.addr = "x@null.test", .action = DSN_FAILED, .status = "5.1.10", .local = true,
	     .diagnostic = "domain null.test accepts no mail (null MX, RFC 7505)"},
	    rc1};
	struct dsn_report r = base(d, 2);
	build_parse(&r);
	struct span g[MAXGROUPS];
	cr_assert_eq(status_groups(M.part_body[1], g), 3);
	expect_field(g[1], "Diagnostic-Code",
		     "X-mailpopbox; domain null.test accepts no mail (null MX, RFC 7505)");
	expect_field(g[2], "Diagnostic-Code",
		     "smtp; 550 5.1.1 <bob@remote.test>: Recipient address rejected");
	cr_expect(!contains(g[1], "Remote-MTA"));
}

Test(dsn, long_multiline_diagnostic_is_folded)
{
	/* a multi-line reply, every line over 300 octets, 10 lines */
	static char diag[8192];
	static char joined[8192];
	char *p = diag, *q = joined;
	for (int i = 0; i < 10; i++) {
		char line[400];
		int k = snprintf(line, sizeof line, "550%c5.7.1 line %d", i < 9 ? '-' : ' ', i);
		for (int j = 0; j < 30; j++)
			k += snprintf(line + k, sizeof line - (size_t)k, " word%02d-%d", j, i);
		p += sprintf(p, "%s\r\n", line);
		q += sprintf(q, "%s%s", i ? " " : "", line);
	}
	struct dsn_rcpt rc = rc1;
	rc.diagnostic = diag;
	struct dsn_report r = base(&rc, 1);
	build_parse(&r); /* checks every line <= 998 and CRLF */
	struct span g[MAXGROUPS];
	cr_assert_eq(status_groups(M.part_body[1], g), 2);
	char want[8300];
	snprintf(want, sizeof want, "smtp; %s", joined);
	/* unfolding only drops the CRLFs: folds fall where spaces were */
	char got[8300];
	cr_assert(field(g[1], "Diagnostic-Code", got, sizeof got));
	cr_expect_str_eq(got, want);
	/* and it is folded to short lines, as RFC 5322 2.1.1 asks */
	const char *dc = memmem(M.part_body[1].p, M.part_body[1].n, "Diagnostic-Code:", 16);
	cr_assert(dc);
	const char *eol = strstr(dc, "\r\n");
	cr_expect_leq(eol - dc, 78);

	/* one 3000-octet word: broken under 998 anyway */
	static char word[3100];
	memset(word, 'x', 3000);
	memcpy(word, "550 ", 4);
	word[3000] = 0;
	rc.diagnostic = word;
	build_parse(&r);
	cr_assert_eq(status_groups(M.part_body[1], g), 2);
	cr_assert(field(g[1], "Diagnostic-Code", got, sizeof got));
	size_t xs = 0;
	for (const char *a = got; *a; a++)
		xs += *a == 'x';
	cr_expect_eq(xs, 2996);
}

Test(dsn, remote_text_cannot_inject)
{
	struct dsn_rcpt rc = rc1;
	rc.diagnostic = "550 no\r\nX-Injected: yes\n\r\nAlso: this\x01\x7f\xff end";
	rc.remote_mta = "mx\r\nX-Injected: host";
	struct dsn_report r = base(&rc, 1);
	build_parse(&r);
	cr_expect_null(memmem(msg, 2000, "\r\nX-Injected", 12));
	cr_expect_null(memmem(msg, 2000, "\r\nAlso", 6));
	struct span g[MAXGROUPS];
	cr_assert_eq(status_groups(M.part_body[1], g), 2);
	expect_field(g[1], "Diagnostic-Code", "smtp; 550 no X-Injected: yes Also: this ? end");
	expect_field(g[1], "Remote-MTA", "dns; mx X-Injected: host");
}

Test(dsn, utf8_addresses)
{
	struct dsn_rcpt rc = rc1;
	rc.addr = "b\xc3\xa9"
		  "b@r\xc3\xa9mote.test";
	rc.orcpt = "utf-8;b\xc3\xa9"
		   "b+x=y@r\xc3\xa9mote.test";
	struct dsn_report r = base(&rc, 1);
	r.sender = "al\xc3\xaf"
		   "ce@example.com";
	r.orig_8bit = true;
	r.envid = "a+b c";
	build_parse(&r);
	expect_field(M.hdr, "To",
		     "al\xc3\xaf"
		     "ce@example.com");
	expect_field(M.hdr, "Content-Transfer-Encoding", "8bit");
	expect_field(M.part_hdr[0], "Content-Transfer-Encoding", "8bit");
	expect_field(M.part_hdr[2], "Content-Transfer-Encoding", "8bit");
	struct span g[MAXGROUPS];
	cr_assert_eq(status_groups(M.part_body[1], g), 2);
	/* RFC 6533 3: utf-8-addr-xtext; the delivery-status stays ASCII */
	expect_field(g[1], "Final-Recipient", "utf-8; b\\x{E9}b@r\\x{E9}mote.test");
	expect_field(g[1], "Original-Recipient",
		     "utf-8; b\\x{E9}b\\x{2B}x\\x{3D}y@r\\x{E9}mote.test");
	expect_field(g[0], "Original-Envelope-Id", "a+2Bb+20c");
	for (size_t i = 0; i < M.part_body[1].n; i++)
		cr_assert_lt((unsigned char)M.part_body[1].p[i], 0x80);
	/* broken UTF-8 becomes U+FFFD, never raw octets */
	rc.addr = "x\xff@y";
	build_parse(&r);
	cr_assert_eq(status_groups(M.part_body[1], g), 2);
	expect_field(g[1], "Final-Recipient", "utf-8; x\\x{FFFD}@y");
}

Test(dsn, invalid_reports)
{
	char buf[8192];
	size_t len;
	struct dsn_report r = base(&rc1, 1);
	cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_OK);
	r.sender = "";
	cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_EINVAL);
	r.sender = "a@b\r\nBcc: x@y";
	cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_EINVAL);
	r = base(&rc1, 0);
	cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_EINVAL);
	r = base(&rc1, 1);
	r.reporting_mta = "mx example";
	cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_EINVAL);
	r = base(&rc1, 1);
	static const char *const toks[] = {
	    "", "a b", "a\"b", "a/b",
	    "0123456789012345678901234567890123456789012345678901234567890"};
	for (size_t i = 0; i < sizeof toks / sizeof *toks; i++) {
		r.token = toks[i];
		cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_EINVAL, "%s", toks[i]);
		cr_expect_eq(dsn_suffix(&r, buf, sizeof buf, &len), DSN_EINVAL, "%s", toks[i]);
	}
	static const char *const st[] = {"",	   "5",	       "5.1",  "5.1.", "3.1.1",
					 "5.1.1 ", "5.1234.1", "5..1", "x.1.1"};
	for (size_t i = 0; i < sizeof st / sizeof *st; i++) {
		struct dsn_rcpt rc = rc1;
		rc.status = st[i];
		r = base(&rc, 1);
		cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_EINVAL, "%s", st[i]);
	}
	struct dsn_rcpt rc = rc1;
	rc.status = "4.123.999";
	r = base(&rc, 1);
	cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_OK);
	rc.addr = "";
	cr_expect_eq(dsn_prefix(&r, buf, sizeof buf, &len), DSN_EINVAL);
}

Test(dsn, output_bounds)
{
	struct dsn_report r = base(&rc1, 1);
	static char full[8192], buf[8192];
	size_t need, len;
	cr_assert_eq(dsn_prefix(&r, full, sizeof full, &need), DSN_OK);
	for (size_t cap = 0; cap < need; cap += 7) {
		memset(buf, 0x5a, sizeof buf);
		cr_assert_eq(dsn_prefix(&r, buf, cap, &len), DSN_ENOSPC);
		cr_expect_eq(len, need);
		for (size_t i = cap; i < sizeof buf; i++)
			cr_assert_eq(buf[i], 0x5a, "cap %zu: wrote at %zu", cap, i);
	}
	cr_assert_eq(dsn_prefix(&r, buf, need, &len), DSN_OK);
	cr_expect(len == need && memcmp(buf, full, need) == 0);
	cr_assert_eq(dsn_suffix(&r, buf, sizeof buf, &need), DSN_OK);
	cr_expect_eq(need, strlen("\r\n--=_mpb_Q1700000400.abc-1_=--\r\n"));
	cr_expect(memcmp(buf, "\r\n--=_mpb_Q1700000400.abc-1_=--\r\n", need) == 0);
	cr_expect_eq(dsn_suffix(&r, buf, need - 1, &len), DSN_ENOSPC);
	cr_expect_eq(len, need);
}

Test(dsn, headers_scan)
{
	unsigned st = 0;
	cr_expect_eq(dsn_headers_scan(&st, "a: b\r\n\r\nbody", 12), 8);
	cr_expect_eq(st, DSN_HDRS_DONE);
	cr_expect_eq(dsn_headers_scan(&st, "more", 4), 0);
	st = 0;
	cr_expect_eq(dsn_headers_scan(&st, "\r\nbody", 6), 2); /* no header at all */
	cr_expect_eq(st, DSN_HDRS_DONE);
	st = 0;
	cr_expect_eq(dsn_headers_scan(&st, "a: b\r\n", 6), 6);
	cr_expect_eq(dsn_headers_scan(&st, "\r", 1), 1);
	cr_expect_neq(st, DSN_HDRS_DONE);
	cr_expect_eq(dsn_headers_scan(&st, "\nx", 2), 1);
	cr_expect_eq(st, DSN_HDRS_DONE);
	/* a CR inside a line, CR CR LF, a folded field: not the end */
	st = 0;
	const char *h = "a: \rb\r\nc: d\r\r\n e\r\n\r\n";
	cr_expect_eq(dsn_headers_scan(&st, h, strlen(h)), strlen(h));
	cr_expect_eq(st, DSN_HDRS_DONE);
	/* never an end: all of it is header */
	st = 0;
	cr_expect_eq(dsn_headers_scan(&st, "a: b\r\nc: d", 10), 10);
	cr_expect_neq(st, DSN_HDRS_DONE);
}

Test(dsn, notify_semantics)
{
	/* RFC 3461 4.1: no NOTIFY = FAILURE (delay only when asked, SPEC 5) */
	cr_expect(dsn_wanted(0, DSN_FAILED));
	cr_expect_not(dsn_wanted(0, DSN_DELAYED));
	cr_expect_not(dsn_wanted(0, DSN_DELIVERED));
	cr_expect_not(dsn_wanted(0, DSN_RELAYED));
	/* NEVER: nothing */
	for (int a = DSN_FAILED; a <= DSN_EXPANDED; a++)
		cr_expect_not(dsn_wanted(SMTP_NOTIFY_NEVER, (enum dsn_action)a));
	cr_expect(dsn_wanted(SMTP_NOTIFY_FAILURE, DSN_FAILED));
	cr_expect_not(dsn_wanted(SMTP_NOTIFY_FAILURE, DSN_DELAYED));
	cr_expect_not(dsn_wanted(SMTP_NOTIFY_FAILURE, DSN_DELIVERED));
	cr_expect(dsn_wanted(SMTP_NOTIFY_DELAY, DSN_DELAYED));
	cr_expect_not(dsn_wanted(SMTP_NOTIFY_DELAY, DSN_FAILED));
	/* SUCCESS: delivered, relayed (5.2.2), expanded (5.2.7) */
	cr_expect(dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_DELIVERED));
	cr_expect(dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_RELAYED));
	cr_expect(dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_EXPANDED));
	cr_expect_not(dsn_wanted(SMTP_NOTIFY_SUCCESS, DSN_FAILED));
	unsigned all = SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY;
	for (int a = DSN_FAILED; a <= DSN_EXPANDED; a++)
		cr_expect(dsn_wanted(all, (enum dsn_action)a));
}
