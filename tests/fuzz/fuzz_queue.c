/*
 * libFuzzer target for the relay queue's state text (store/queue.c): what
 * queue_parse() reads back from a message file's trailer or an ID.env file,
 * which a disk error or an operator's editor may have mangled.
 *
 * Input: any octets, parsed as a state text. Checks:
 *  - no crash, no read past the input (the sanitizers; the input is copied
 *    to a buffer of exactly its size);
 *  - what parses formats again, and the formatted text parses to an entry
 *    that formats to the same text (queue_format is a fixpoint of parse);
 *  - the parse of the formatted text, with padding after "end" (spaces and
 *    newlines, as queue_commit() writes), gives the same entry again;
 *  - a formatted text cut anywhere short of its end is refused.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/queue.h"
#include "tests/fuzz/fuzz.h"

static char *format_of(const struct queue_entry *e, size_t *n)
{
	char *t = queue_format(e, n);
	CHECK(t);
	return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *in = malloc(size ? size : 1);
	CHECK(in);
	memcpy(in, data, size);
	struct queue_entry e;
	int rc = queue_parse(in, size, &e);
	free(in);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	if (rc != 0) return 0;

	size_t n1, n2;
	char *t1 = format_of(&e, &n1);
	struct queue_entry f;
	CHECK(queue_parse(t1, n1, &f) == 0);
	char *t2 = format_of(&f, &n2);
	CHECK(n1 == n2 && memcmp(t1, t2, n1) == 0);

	/* padded as in a message file's trailer */
	char *padded = malloc(n1 + 70);
	CHECK(padded);
	memcpy(padded, t1, n1);
	memset(padded + n1, ' ', 69);
	padded[n1 + 69] = '\n';
	struct queue_entry g;
	CHECK(queue_parse(padded, n1 + 70, &g) == 0);
	size_t n3;
	char *t3 = format_of(&g, &n3);
	CHECK(n3 == n1 && memcmp(t3, t1, n1) == 0);

	/* cut short: never a whole entry */
	for (size_t cut = 0; cut < n1; cut += 1 + cut / 8) {
		struct queue_entry h;
		CHECK(queue_parse(t1, cut, &h) != 0);
	}

	free(padded);
	free(t1);
	free(t2);
	free(t3);
	queue_entry_free(&e);
	queue_entry_free(&f);
	queue_entry_free(&g);
	return 0;
}
