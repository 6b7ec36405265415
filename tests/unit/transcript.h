/*
 * transcript: the byte-for-byte dialogue helpers the machine tests share
 * (test_smtp, test_pop3, test_smtpc). A script is a NULL-terminated list of
 * lines "C: ..." and "S: ..." (CRLF added); each run of input lines is fed
 * to the machine at once and the output lines that follow must be exactly
 * what it wrote.
 */
#ifndef MPB_TEST_TRANSCRIPT_H
#define MPB_TEST_TRANSCRIPT_H

#include <criterion/criterion.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Printable form for failure messages: CR as \r, LF as \n plus a line
 * break, other controls as \xNN. Two buffers, used in turn. */
static inline char *tr_escape(const char *p, size_t n)
{
	static char bufs[2][1 << 19];
	static int which;
	char *o = bufs[which++ & 1], *q = o;
	if (n > sizeof bufs[0] / 4 - 1)
		n = sizeof bufs[0] / 4 - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\n')
			q += sprintf(q, "\\n\n");
		else if (c == '\r')
			q += sprintf(q, "\\r");
		else if (c < 32 || c > 126)
			q += sprintf(q, "\\x%02x", c);
		else
			*q++ = (char)c;
	}
	*q = '\0';
	return o;
}

static inline void tr_check(const char *who, const char *got, size_t gotn, const char *want,
			    size_t n)
{
	if (gotn != n || memcmp(got, want, n) != 0) {
		char *g = tr_escape(got, gotn), *w = tr_escape(want, n);
		cr_assert_fail("%s wrote:\n%s\n--- expected:\n%s", who, g, w);
	}
}

/* Runs a script: lines starting with `in` ("C: " when testing a server)
 * are fed, the others must start with `out` and are expected. */
static inline void tr_script(const char *const *lines, const char *in, const char *out,
			     void (*feed)(void *ctx, const char *p, size_t n),
			     void (*expect)(void *ctx, const char *p, size_t n), void *ctx)
{
	static char ibuf[1 << 16], want[1 << 17];
	size_t inlen = 0, wantlen = 0;
	bool saw_out = false;
	for (const char *const *l = lines;; l++) {
		bool is_in = *l && strncmp(*l, in, 3) == 0;
		if (!*l || (is_in && saw_out)) {
			feed(ctx, ibuf, inlen);
			expect(ctx, want, wantlen);
			inlen = wantlen = 0;
			saw_out = false;
		}
		if (!*l)
			break;
		size_t n = strlen(*l) - 3;
		if (is_in) {
			cr_assert(inlen + n + 2 <= sizeof ibuf, "script input too long");
			memcpy(ibuf + inlen, *l + 3, n);
			memcpy(ibuf + inlen + n, "\r\n", 2);
			inlen += n + 2;
		} else {
			cr_assert(strncmp(*l, out, 3) == 0, "bad script line %s", *l);
			cr_assert(wantlen + n + 2 <= sizeof want, "script output too long");
			memcpy(want + wantlen, *l + 3, n);
			memcpy(want + wantlen + n, "\r\n", 2);
			wantlen += n + 2;
			saw_out = true;
		}
	}
}

#endif
