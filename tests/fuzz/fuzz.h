/*
 * What the libFuzzer targets share: the invariant check, a growable record
 * of what a machine wrote (compared between the two runs of an input that
 * feed it cut in different ways), and the small generator that decides
 * the cuts.
 */
#ifndef MPB_FUZZ_H
#define MPB_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                                   \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #c);  \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

struct rec {
	char *p;
	size_t len, cap;
};

static inline void rec_put(struct rec *r, const void *p, size_t n)
{
	if (n == 0) return;
	if (r->len + n > r->cap) {
		r->cap = (r->len + n) * 2 + 64;
		r->p = realloc(r->p, r->cap);
		CHECK(r->p);
	}
	memcpy(r->p + r->len, p, n);
	r->len += n;
}

/* The two runs of an input (one read at a time, then cut in pieces) must
 * have written the same. The environment variable DUMP, when set, prints
 * what the first run wrote (to read what an input does). */
static inline void rec_same(const struct rec *a, const struct rec *b, const char *dump)
{
	if (getenv(dump)) fprintf(stderr, "%.*s\n", (int)a->len, a->p);
	if (a->len != b->len || (a->len && memcmp(a->p, b->p, a->len) != 0)) {
		fprintf(stderr, "--- one read at a time:\n%.*s\n--- in pieces:\n%.*s\n",
			(int)a->len, a->p, (int)b->len, b->p);
		CHECK(!"the dialogue depends on how the input was cut");
	}
}

/* A linear congruential generator: the same cuts for the same seed. */
static inline uint32_t lcg(uint32_t *x)
{
	*x = *x * 1103515245u + 12345u;
	return *x >> 16;
}

#endif
