/*
 * pop3_stuff_inplace against pop3_stuff: the same text, cut into chunks at
 * every boundary and at random, must come out byte for byte the same, with
 * the same final CRLF "." CRLF.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "proto/pop3.h"

static size_t ref(const char *in, size_t n, char *out, size_t cap)
{
	struct pop3_stuffer st;
	struct obuf o = {.p = out, .cap = cap, .len = 0};
	pop3_stuff_init(&st, -1);
	size_t used = pop3_stuff(&st, in, n, &o);
	cr_assert_eq(used, n);
	pop3_stuff_end(&st, &o);
	return o.len;
}

/* Feeds in chunks whose lengths come from cuts[] (0-terminated, the last
 * chunk takes the rest), each read "into" the output buffer, as the core
 * does. */
static size_t inplace(const char *in, size_t n, const size_t *cuts, char *out, size_t cap)
{
	struct pop3_stuffer st;
	pop3_stuff_init(&st, -1);
	size_t len = 0, off = 0;
	for (unsigned c = 0; off < n; c++) {
		size_t k = cuts && cuts[c] ? cuts[c] : n - off;
		if (k > n - off)
			k = n - off;
		cr_assert(len + k + k / 2 + 1 <= cap);
		memcpy(out + len, in + off, k);
		len += pop3_stuff_inplace(&st, out + len, k);
		off += k;
	}
	struct obuf o = {.p = out, .cap = cap, .len = len};
	pop3_stuff_end(&st, &o);
	return o.len;
}

static void same(const char *in, size_t n)
{
	size_t cap = 2 * n + 16;
	char *a = malloc(cap), *b = malloc(cap);
	size_t la = ref(in, n, a, cap);
	size_t lb = inplace(in, n, NULL, b, cap);
	cr_assert_eq(la, lb, "whole: %zu vs %zu", la, lb);
	cr_assert(memcmp(a, b, la) == 0, "whole");
	for (size_t cut = 1; cut < n; cut++) {
		size_t cuts[] = {cut, 0};
		lb = inplace(in, n, cuts, b, cap);
		cr_assert_eq(la, lb, "cut at %zu", cut);
		cr_assert(memcmp(a, b, la) == 0, "cut at %zu", cut);
	}
	free(a);
	free(b);
}

#define SAME(s) same(s, sizeof s - 1)

Test(pop3_stuff, inplace_examples)
{
	SAME("Subject: x\r\n\r\nplain\r\n");
	SAME(".\r\n");
	SAME("..\r\n.foo\r\n...\r\n.\r\n");
	SAME("a\r\n.\r\nb\r\n.");
	SAME("no final newline");
	SAME("ends in CR\r");
	SAME(".\n.\n.\n.\n");
	SAME("x.\r\n y\r\n\r\n.\r\n.");
	SAME("\r.\r\n\n.\n");
}

Test(pop3_stuff, inplace_empty)
{
	char out[16];
	size_t cuts[] = {0};
	cr_assert_eq(inplace("", 0, cuts, out, sizeof out), 3);
	cr_assert(memcmp(out, ".\r\n", 3) == 0);
	cr_assert_eq(ref("", 0, out, sizeof out), 3);
}

Test(pop3_stuff, inplace_random)
{
	static const char alphabet[] = ".\r\na";
	unsigned seed = 12345;
	char in[200];
	size_t cuts[64];
	for (int round = 0; round < 3000; round++) {
		size_t n = (size_t)(rand_r(&seed) % sizeof in);
		for (size_t i = 0; i < n; i++)
			in[i] = alphabet[rand_r(&seed) % 4];
		unsigned nc = 0;
		while (nc < 63 && rand_r(&seed) % 4)
			cuts[nc++] = 1 + (size_t)(rand_r(&seed) % 20);
		cuts[nc] = 0;
		char a[512], b[512];
		size_t la = ref(in, n, a, sizeof a);
		size_t lb = inplace(in, n, cuts, b, sizeof b);
		cr_assert_eq(la, lb, "round %d", round);
		cr_assert(memcmp(a, b, la) == 0, "round %d", round);
	}
}
