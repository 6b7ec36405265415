/* Unit tests for proto/sendas.c: the send-as rewrite of SPEC 4 and the
 * Date/Message-ID of RFC 6409 8.2/8.3, checked octet for octet. Every
 * successful rewrite is also rewritten a second time: when no tag is left,
 * the second pass must change nothing. */
#include "proto/sendas.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static const struct sendas_params P = {
    .domain = "example.com", .token = "tok1", .now = 1700000000, .tz_off_min = 60};

/* Present in most inputs so that nothing is added. */
#define DM "Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nMessage-ID: <m@x>\r\n"
#define F "From: A <a@example.com>\r\n"
#define FB "From: A <bob@example.com>\r\n"
#define ADDED_DATE "Date: Tue, 14 Nov 2023 23:13:20 +0100\r\n"
#define ADDED_MSGID "Message-ID: <tok1@example.com>\r\n"

static char out[65536], out2[65536];

static bool starts(const char *p, size_t n, const char *lit)
{
	return n >= strlen(lit) && memcmp(p, lit, strlen(lit)) == 0;
}
static struct sendas_result R;

static void rw(const char *in, const char *want, const char *sender)
{
	int rc = sendas_rewrite(&P, in, strlen(in), out, sizeof out, &R);
	cr_assert_eq(rc, SENDAS_OK, "%s", in);
	cr_expect(R.len == strlen(want) && memcmp(out, want, R.len) == 0,
		  "in:\n%s\nwant:\n%s\ngot:\n%.*s", in, want, (int)R.len, out);
	cr_expect_eq(R.tagged, sender != NULL, "%s", in);
	cr_expect_str_eq(R.sender, sender ? sender : "", "%s", in);

	struct sendas_result r2;
	rc = sendas_rewrite(&P, out, R.len, out2, sizeof out2, &r2);
	cr_assert_eq(rc, SENDAS_OK);
	if (!r2.tagged)
		cr_expect(r2.len == R.len && memcmp(out, out2, R.len) == 0,
			  "second pass changed:\n%.*s\ninto:\n%.*s", (int)R.len, out, (int)r2.len,
			  out2);
}

/* The same input with and without the tag in the Subject. */
#define SUBJ(in, want)                                                                             \
	rw(DM F "Subject: " in "\r\n\r\n", DM FB "Subject: " want "\r\n\r\n", "bob@example.com")

Test(sendas, untouched_without_tag)
{
	rw(DM "From: Alice <alice@example.com>\r\nSubject: hello\r\n\r\nbody\r\n",
	   DM "From: Alice <alice@example.com>\r\nSubject: hello\r\n\r\nbody\r\n", NULL);
	cr_expect_eq(R.changes, 0);
	/* no From and no tag: no From added (only send-as adds one) */
	rw(DM "Subject: hi\r\n\r\n", DM "Subject: hi\r\n\r\n", NULL);
	/* look-alikes are not tags */
	rw(DM "Subject: sendas:bob [send as:bob] [sendas bob]\r\n\r\n",
	   DM "Subject: sendas:bob [send as:bob] [sendas bob]\r\n\r\n", NULL);
}

Test(sendas, date_and_message_id_added)
{
	rw("From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n",
	   "From: a@example.com\r\nSubject: x\r\n" ADDED_DATE ADDED_MSGID "\r\nbody\r\n", NULL);
	cr_expect_eq(R.changes, SENDAS_ADDED_DATE | SENDAS_ADDED_MSGID);
	rw("Date: x\r\n\r\n", "Date: x\r\n" ADDED_MSGID "\r\n", NULL);
	rw("Message-ID: <a@b>\r\n\r\n", "Message-ID: <a@b>\r\n" ADDED_DATE "\r\n", NULL);
	/* names are case-insensitive, obsolete space before the colon counts */
	rw("DATE: x\r\nmessage-id: <a@b>\r\n\r\n", "DATE: x\r\nmessage-id: <a@b>\r\n\r\n", NULL);
	rw("Date : x\r\nMessage-Id:<a@b>\r\n\r\n", "Date : x\r\nMessage-Id:<a@b>\r\n\r\n", NULL);
	/* a message that starts with the empty line */
	rw("\r\nbody\r\n", ADDED_DATE ADDED_MSGID "\r\nbody\r\n", NULL);
	/* no empty line at all: after the last complete line */
	rw("Subject: x\r\n", "Subject: x\r\n" ADDED_DATE ADDED_MSGID, NULL);
	rw("Subject: x\r\nTo: y", "Subject: x\r\n" ADDED_DATE ADDED_MSGID "To: y", NULL);
	rw("", ADDED_DATE ADDED_MSGID, NULL);
	rw(" x", " x", NULL);
}

Test(sendas, date_format)
{
	struct sendas_params p = P;
	p.tz_off_min = -300;
	int rc = sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R);
	cr_assert_eq(rc, SENDAS_OK);
	cr_expect(starts(out, R.len, "Date: Tue, 14 Nov 2023 17:13:20 -0500\r\n"), "%.*s",
		  (int)R.len, out);
	p.now = 951782400; /* 2000-02-29, a leap day */
	p.tz_off_min = 330;
	sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R);
	cr_expect(starts(out, R.len, "Date: Tue, 29 Feb 2000 05:30:00 +0530\r\n"), "%.*s",
		  (int)R.len, out);
	p.now = 0;
	p.tz_off_min = -1;
	sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R);
	cr_expect(starts(out, R.len, "Date: Wed, 31 Dec 1969 23:59:00 -0001\r\n"), "%.*s",
		  (int)R.len, out);
}

Test(sendas, tag_positions_and_spaces)
{
	SUBJ("[sendas:bob] Hello", "Hello");
	SUBJ("Hello [sendas:bob]", "Hello");
	SUBJ("Hello [sendas:bob] world", "Hello world");
	SUBJ("Hello[sendas:bob]world", "Helloworld");
	SUBJ("Hello [sendas:bob]world", "Hello world");
	SUBJ("Hello[sendas:bob] world", "Hello world");
	SUBJ("Hello  [sendas:bob]", "Hello");
	SUBJ("a  [sendas:bob]  b", "a   b");
	SUBJ("Re: [sendas:bob] Fwd: x", "Re: Fwd: x");
	cr_expect_eq(R.changes, SENDAS_SUBJECT | SENDAS_FROM);
	rw(DM F "Subject:[sendas:bob] x\r\n\r\n", DM FB "Subject:x\r\n\r\n", "bob@example.com");
	rw(DM F "Subject:Re:[sendas:bob]\r\n\r\n", DM FB "Subject:Re:\r\n\r\n", "bob@example.com");
}

Test(sendas, empty_subject_stays)
{
	rw(DM F "Subject: [sendas:bob]\r\n\r\n", DM FB "Subject:\r\n\r\n", "bob@example.com");
	rw(DM F "Subject:[sendas:bob]\r\n\r\n", DM FB "Subject:\r\n\r\n", "bob@example.com");
	rw(DM F "Subject:   [sendas:bob]   \r\n\r\n", DM FB "Subject:\r\n\r\n", "bob@example.com");
	rw(DM F "Subject:\r\n [sendas:bob]\r\n\r\n", DM FB "Subject:\r\n\r\n", "bob@example.com");
}

Test(sendas, tag_syntax)
{
	SUBJ("[SendAs:bob] x", "x");
	SUBJ("[SENDAS:  bob] x", "x");
	SUBJ("[sendas:\tbob] x", "x");
	rw(DM "Subject: [sendas:Bob.Smith-1_x] x\r\nFrom: <a@b>\r\n\r\n",
	   DM "Subject: x\r\nFrom: <Bob.Smith-1_x@example.com>\r\n\r\n",
	   "Bob.Smith-1_x@example.com");
	/* 64 octets is the most a local part may have */
	rw(DM "Subject: "
	      "[sendas:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\r\n\r\n",
	   DM
	   "Subject:\r\nFrom: "
	   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com\r\n\r\n",
	   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.com");
	static const char *const bad[] = {
	    "[sendas:]",
	    "[sendas: ]",
	    "[sendas:b ob]",
	    "[sendas:bob",
	    "[sendas :bob]",
	    "[ sendas:bob]",
	    "[sendas:bob ]",
	    "[sendas:.bob]",
	    "[sendas:bob.]",
	    "[sendas:b..b]",
	    "[sendas:b+b]",
	    "[sendas:b@c]",
	    "[sendas:b\xc3\xa9]",
	    "[sendas:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]",
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		char in[256];
		snprintf(in, sizeof in, DM "Subject: x %s y\r\n\r\n", bad[i]);
		rw(in, in, NULL);
	}
	/* a bad tag does not hide a good one after it */
	SUBJ("[sendas:] [sendas:bob] x", "[sendas:] x");
}

Test(sendas, only_first_tag)
{
	rw(DM "Subject: [sendas:a] x [sendas:b]\r\n\r\n",
	   DM "Subject: x [sendas:b]\r\nFrom: a@example.com\r\n\r\n", "a@example.com");
	/* only the first Subject field is read */
	rw(DM "Subject: x\r\nSubject: [sendas:b] y\r\n\r\n",
	   DM "Subject: x\r\nSubject: [sendas:b] y\r\n\r\n", NULL);
	/* a tag elsewhere means nothing */
	rw(DM "X-Note: [sendas:b]\r\nSubject: y\r\n\r\n",
	   DM "X-Note: [sendas:b]\r\nSubject: y\r\n\r\n", NULL);
	rw(DM "Subject: y\r\n\r\n[sendas:b]\r\n", DM "Subject: y\r\n\r\n[sendas:b]\r\n", NULL);
}

Test(sendas, folded_subject)
{
	rw(DM F "Subject: Hello\r\n [sendas:bob] world\r\n\r\n",
	   DM FB "Subject: Hello\r\n world\r\n\r\n", "bob@example.com");
	rw(DM F "Subject: Hello\r\n [sendas:bob]\r\n\r\n", DM FB "Subject: Hello\r\n\r\n",
	   "bob@example.com");
	rw(DM F "Subject: Hello\r\n\t[sendas:bob]\r\n world\r\n\r\n",
	   DM FB "Subject: Hello\r\n\tworld\r\n\r\n", "bob@example.com");
	rw(DM F "Subject: [sendas:bob]\r\n world\r\n\r\n", DM FB "Subject: world\r\n\r\n",
	   "bob@example.com");
	/* the tag across a fold: the fold's white space sits after the colon */
	rw(DM F "Subject: Hello [sendas:\r\n bob] world\r\n\r\n",
	   DM FB "Subject: Hello world\r\n\r\n", "bob@example.com");
	/* a fold inside the name unfolds to a space, so it is no tag */
	rw(DM "Subject: [sendas:bo\r\n b] x\r\n\r\n", DM "Subject: [sendas:bo\r\n b] x\r\n\r\n",
	   NULL);
	/* the fold before a tag that ends the field goes with it */
	rw(DM F "Subject: one\r\n two\r\n [sendas:bob]\r\n\r\n",
	   DM FB "Subject: one\r\n two\r\n\r\n", "bob@example.com");
}

Test(sendas, from_forms)
{
#define FROM(in, want)                                                                             \
	rw(DM "From: " in "\r\nSubject: [sendas:bob] x\r\n\r\n",                                   \
	   DM "From: " want "\r\nSubject: x\r\n\r\n", "bob@example.com")
	FROM("Alice <alice@example.com>", "Alice <bob@example.com>");
	FROM("\"Smith, Alice\" <alice@example.com>", "\"Smith, Alice\" <bob@example.com>");
	FROM("\"A \\\"q\\\" <x@y>\" <alice@example.com>",
	     "\"A \\\"q\\\" <x@y>\" <bob@example.com>");
	FROM("alice@example.com", "bob@example.com");
	FROM("alice@example.com (Alice Smith)", "bob@example.com (Alice Smith)");
	FROM("(Alice) alice@example.com", "(Alice) bob@example.com");
	FROM("<alice@example.com>", "<bob@example.com>");
	FROM("Alice <\"al ice\"@example.com>", "Alice <bob@example.com>");
	FROM("Alice <@relay.example:alice@example.com>", "Alice <bob@example.com>");
	FROM("\"al ice\"@example.com", "bob@example.com");
	FROM("Alice (the (first)) <alice@example.com> (work)",
	     "Alice (the (first)) <bob@example.com> (work)");
	FROM("=?UTF-8?Q?Al=C3=AFce?= <alice@example.com>",
	     "=?UTF-8?Q?Al=C3=AFce?= <bob@example.com>");
	/* folded From: only the address changes, the fold stays */
	FROM("\"A Rather Long Display Name\"\r\n <alice@example.com>",
	     "\"A Rather Long Display Name\"\r\n <bob@example.com>");
	FROM("Alice <alice@\r\n example.com>", "Alice <bob@example.com>");
	/* not one mailbox: replaced */
	FROM("a@example.com, b@example.com", "bob@example.com");
	FROM("Friends: a@example.com;", "bob@example.com");
	FROM("Alice alice@example.com", "bob@example.com");
	FROM("\"Alice <alice@example.com>", "bob@example.com");
	FROM("Alice <alice@example.com", "bob@example.com");
	FROM("", "bob@example.com");
	rw(DM "FROM:alice@example.com\r\nSubject: [sendas:bob] x\r\n\r\n",
	   DM "FROM:bob@example.com\r\nSubject: x\r\n\r\n", "bob@example.com");
	cr_expect_eq(R.changes, SENDAS_FROM | SENDAS_SUBJECT);
	/* every From field, after or before the Subject */
	rw(DM F "Subject: [sendas:bob] x\r\nFrom: A <a@x>\r\nfrom: b@x\r\n\r\n",
	   DM FB "Subject: x\r\nFrom: A <bob@example.com>\r\nfrom: bob@example.com\r\n\r\n",
	   "bob@example.com");
}

Test(sendas, from_added)
{
	rw(DM "Subject: [sendas:bob] x\r\n\r\nbody\r\n",
	   DM "Subject: x\r\nFrom: bob@example.com\r\n\r\nbody\r\n", "bob@example.com");
	cr_expect_eq(R.changes, SENDAS_SUBJECT | SENDAS_ADDED_FROM);
	rw("Subject: [sendas:bob] x\r\n\r\n",
	   "Subject: x\r\nFrom: bob@example.com\r\n" ADDED_DATE ADDED_MSGID "\r\n",
	   "bob@example.com");
	/* a malformed From does not count as one, and is kept */
	rw(DM "From alice\r\nSubject: [sendas:bob] x\r\n\r\n",
	   DM "From alice\r\nSubject: x\r\nFrom: bob@example.com\r\n\r\n", "bob@example.com");
}

Test(sendas, encoded_words)
{
	/* Q and B, the result in the same charset and encoding */
	SUBJ("=?UTF-8?Q?[sendas:bob]_H=C3=A9llo?=", "=?UTF-8?Q?H=C3=A9llo?=");
	SUBJ("=?UTF-8?B?W3NlbmRhczpib2JdIEjDqWxsbw==?=", "=?UTF-8?B?SMOpbGxv?=");
	SUBJ("=?utf-8?q?H=C3=A9llo_[SENDAS:bob]?=", "=?utf-8?Q?H=C3=A9llo?=");
	SUBJ("=?ISO-8859-1?Q?caf=E9_[sendas:bob]_cr=E8me?=", "=?ISO-8859-1?Q?caf=E9_cr=E8me?=");
	SUBJ("=?UTF-8*en?Q?[sendas:bob]_x?=", "=?UTF-8?Q?x?=");
	/* the tag across two words, and the white space between them unseen */
	SUBJ("=?UTF-8?Q?[sendas:?=\r\n =?UTF-8?Q?bob]_Hi?=", "=?UTF-8?Q?Hi?=");
	/* plain text takes the encoding of the word before it */
	SUBJ("=?UTF-8?Q?[send?= =?UTF-8?B?YXM6Ym9iXQ==?= Hi", "=?UTF-8?B?SGk=?=");
	/* tag in plain text next to encoded words */
	SUBJ("[sendas:bob] =?UTF-8?Q?H=C3=A9?=", "=?UTF-8?Q?H=C3=A9?=");
	SUBJ("=?UTF-8?Q?H=C3=A9?= [sendas:bob] world", "=?UTF-8?Q?H=C3=A9_world?=");
	SUBJ("=?UTF-8?B?SMOp?= [sendas:bob]", "=?UTF-8?B?SMOp?=");
	/* becomes empty */
	rw(DM F "Subject: =?UTF-8?Q?[sendas:bob]?=\r\n\r\n", DM FB "Subject:\r\n\r\n",
	   "bob@example.com");
	rw(DM F "Subject: =?UTF-8?B?IFtzZW5kYXM6Ym9iXSA=?=\r\n\r\n", DM FB "Subject:\r\n\r\n",
	   "bob@example.com");
	/* a charset not decoded here stays as written; plain text beside it
	   is written as UTF-8 */
	SUBJ("=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?= [sendas:bob]",
	     "=?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=");
	SUBJ("[sendas:bob] Re: =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=",
	     "=?UTF-8?Q?Re:_?=\r\n =?ISO-2022-JP?B?GyRCJUYlOSVIGyhC?=");
	/* not encoded-words: plain text (RFC 2047 5, 6.3) */
	SUBJ("x=?UTF-8?Q?a?= [sendas:bob]", "x=?UTF-8?Q?a?=");
	SUBJ("=?UTF-8?Q?a=ZZ?= [sendas:bob]", "=?UTF-8?Q?a=ZZ?=");
	SUBJ("=?UTF-8?X?a?= [sendas:bob]", "=?UTF-8?X?a?=");
	SUBJ("=?UTF-8?B?YW=Jj?= [sendas:bob]", "=?UTF-8?B?YW=Jj?=");
	/* the tag is found in the decoded text, not in the raw one */
	rw(DM F "Subject: =?UTF-8?Q?=5Bsendas=3Abob=5D?=\r\n\r\n", DM FB "Subject:\r\n\r\n",
	   "bob@example.com");
}

/* Decodes the Q/B encoded-words of a re-encoded Subject line by line and
 * checks the RFC 2047 limits on the way. */
static size_t decode_subject(const char *s, size_t n, char *outp)
{
	size_t k = 0;
	const char *end = s + n;
	while (s < end) {
		const char *eol = strstr(s, "\r\n");
		cr_assert(eol && eol < end + 1);
		cr_expect_leq(eol - s, 76, "line too long: %.*s", (int)(eol - s), s);
		const char *w = strstr(s, "=?UTF-8?");
		cr_assert(w && w < eol);
		char enc = w[8];
		const char *t = w + 10, *te = strstr(t, "?=");
		cr_assert(te && te < eol);
		cr_expect_leq(te + 2 - w, 75);
		if (enc == 'Q') {
			for (const char *q = t; q < te; q++) {
				if (*q == '_') {
					outp[k++] = ' ';
				} else if (*q == '=') {
					unsigned v;
					sscanf(q + 1, "%2X", &v);
					outp[k++] = (char)v;
					q += 2;
				} else {
					outp[k++] = *q;
				}
			}
		} else {
			static const char b64[] =
			    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
			unsigned acc = 0, bits = 0;
			for (const char *q = t; q < te && *q != '='; q++) {
				acc = (acc << 6) | (unsigned)(strchr(b64, *q) - b64);
				bits += 6;
				if (bits >= 8) {
					bits -= 8;
					outp[k++] = (char)((acc >> bits) & 0xff);
				}
			}
		}
		/* each word is whole UTF-8: its last character complete */
		s = eol + 2;
	}
	return k;
}

static bool utf8_whole(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = (unsigned char)p[i];
		size_t len = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
		if (i + len > n) return false;
		i += len;
	}
	return true;
}

Test(sendas, long_encoded_subject_refolded)
{
	/* 40 x "é€" (2 + 3 octets) in words the client split freely */
	char text[1024] = "", in[4096], want[1024];
	for (int i = 0; i < 40; i++)
		strcat(text, "\xc3\xa9\xe2\x82\xac");
	for (int b = 0; b < 2; b++) {
		char enc = b ? 'B' : 'Q';
		/* input: the tag then the text, one Q or B word per 9 octets */
		char *p = in + sprintf(in, DM "Subject: =?UTF-8?Q?[sendas:bob]_?=");
		size_t tl = strlen(text);
		for (size_t i = 0; i < tl; i += 9) {
			size_t m = tl - i < 9 ? tl - i : 9;
			p += sprintf(p, "\r\n =?UTF-8?%c?", enc);
			if (enc == 'Q') {
				for (size_t j = 0; j < m; j++)
					p += sprintf(p, "=%02X", (unsigned char)text[i + j]);
			} else {
				static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmn"
							  "opqrstuvwxyz0123456789+/";
				for (size_t j = 0; j < m; j += 3) {
					unsigned x = (unsigned char)text[i + j] << 16;
					size_t r = m - j;
					if (r > 1) x |= (unsigned char)text[i + j + 1] << 8;
					if (r > 2) x |= (unsigned char)text[i + j + 2];
					*p++ = b64[x >> 18];
					*p++ = b64[(x >> 12) & 63];
					*p++ = r > 1 ? b64[(x >> 6) & 63] : '=';
					*p++ = r > 2 ? b64[x & 63] : '=';
				}
			}
			p += sprintf(p, "?=");
		}
		strcpy(p, "\r\n\r\n");
		int rc = sendas_rewrite(&P, in, strlen(in), out, sizeof out, &R);
		cr_assert_eq(rc, SENDAS_OK);
		cr_assert(R.tagged);
		const char *s = strstr(out, "Subject: ");
		cr_assert(s);
		const char *fe = s;
		while ((fe = strstr(fe, "\r\n")) && fe[2] == ' ')
			fe += 2;
		cr_assert(fe);
		size_t sl = (size_t)(fe + 2 - s);
		/* every word in the first word's encoding, each whole UTF-8 */
		const char *q = s;
		while ((q = strstr(q, "=?UTF-8?")) && q < s + sl) {
			cr_expect_eq(q[8], enc);
			const char *te = strstr(q + 10, "?=");
			char one[128];
			size_t k = decode_subject(q, (size_t)(strstr(q, "\r\n") + 2 - q), one);
			cr_expect(utf8_whole(one, k), "split character in %.*s", (int)(te - q), q);
			q = te;
		}
		size_t k = decode_subject(s, sl, want);
		cr_expect(k == strlen(text) && memcmp(want, text, k) == 0, "%.*s", (int)sl, s);
	}
}

Test(sendas, malformed_fields_kept)
{
	/* no colon, a continuation with nothing before it, a bare LF, a bare CR */
	rw(" folded\r\nnocolon\r\nSubject: [sendas:bob] x\r\n" DM "\r\n",
	   " folded\r\nnocolon\r\nSubject: x\r\n" DM "From: bob@example.com\r\n\r\n",
	   "bob@example.com");
	rw(DM "Subject: [sendas:bob]\nx\r\n\r\n", DM "Subject: [sendas:bob]\nx\r\n\r\n", NULL);
	rw(DM "Subject: [sendas:bob]\rx\r\n\r\n", DM "Subject: [sendas:bob]\rx\r\n\r\n", NULL);
	rw(DM "Subj ect: [sendas:bob]\r\n\r\n", DM "Subj ect: [sendas:bob]\r\n\r\n", NULL);
	/* an unterminated last line is kept after the added fields */
	rw("Subject: [sendas:bob] x", ADDED_DATE ADDED_MSGID "Subject: [sendas:bob] x", NULL);
	/* NUL octets are just octets */
	const char in[] = DM "Subject: a\0b [sendas:bob]\r\n\r\n";
	const char want[] = DM "Subject: a\0b\r\nFrom: bob@example.com\r\n\r\n";
	int rc = sendas_rewrite(&P, in, sizeof in - 1, out, sizeof out, &R);
	cr_assert_eq(rc, SENDAS_OK);
	cr_expect(R.len == sizeof want - 1 && memcmp(out, want, R.len) == 0);
}

Test(sendas, body_passes_through)
{
	rw(DM F
	   "Subject: [sendas:bob] x\r\nFrom: a@b\r\n\r\nSubject: [sendas:eve]\r\nFrom: c@d\r\n",
	   DM FB
	   "Subject: x\r\nFrom: bob@example.com\r\n\r\nSubject: [sendas:eve]\r\nFrom: c@d\r\n",
	   "bob@example.com");
}

Test(sendas, output_bounds)
{
	const char *in = "From: A <a@b>\r\nSubject: [sendas:bob] =?UTF-8?Q?H=C3=A9?=\r\n\r\nbody";
	int rc = sendas_rewrite(&P, in, strlen(in), out, sizeof out, &R);
	cr_assert_eq(rc, SENDAS_OK);
	size_t need = R.len;
	char full[1024];
	memcpy(full, out, need);
	static char buf[1024];
	for (size_t cap = 0; cap < need; cap++) {
		memset(buf, 0x5a, sizeof buf);
		rc = sendas_rewrite(&P, in, strlen(in), buf, cap, &R);
		cr_assert_eq(rc, SENDAS_ENOSPC, "cap %zu", cap);
		cr_expect_eq(R.len, need);
		cr_expect_not(R.tagged);
		for (size_t i = cap; i < sizeof buf; i++)
			cr_assert_eq(buf[i], 0x5a, "cap %zu: wrote at %zu", cap, i);
	}
	rc = sendas_rewrite(&P, in, strlen(in), buf, need, &R);
	cr_assert_eq(rc, SENDAS_OK);
	cr_expect(memcmp(buf, full, need) == 0);
	cr_expect_str_eq(R.sender, "bob@example.com");
}

Test(sendas, bad_params)
{
	struct sendas_params p = P;
	p.domain = "exa mple.com";
	cr_expect_eq(sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R), SENDAS_EINVAL);
	p.domain = "";
	cr_expect_eq(sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R), SENDAS_EINVAL);
	p = P;
	p.token = "a>b";
	cr_expect_eq(sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R), SENDAS_EINVAL);
	p.token = "";
	cr_expect_eq(sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R), SENDAS_EINVAL);
	p.token = "a..b";
	cr_expect_eq(sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R), SENDAS_EINVAL);
	p.token = "1700000000.Q12ab-c_d=e";
	cr_expect_eq(sendas_rewrite(&p, "\r\n", 2, out, sizeof out, &R), SENDAS_OK);
}

Test(sendas, header_end)
{
	cr_expect_eq(sendas_header_end("a: b\r\n\r\nbody", 13), 8);
	cr_expect_eq(sendas_header_end("\r\nbody", 6), 2);
	cr_expect_eq(sendas_header_end("a: b\r\n", 6), 0);
	cr_expect_eq(sendas_header_end("a: b\r\n\r", 7), 0);
	cr_expect_eq(sendas_header_end("a: b\r\n c\r\n\r\n", 12), 12);
	cr_expect_eq(sendas_header_end("a: \r\r\n\r\n", 8), 8);
	cr_expect_eq(sendas_header_end("", 0), 0);
}
