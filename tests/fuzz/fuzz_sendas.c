/*
 * libFuzzer target for proto/sendas.c.
 *
 * Input: a header block (anything: the rewrite must take any octets). It is
 * rewritten into a buffer of the size first reported, and checks:
 *  - no crash, no read or write out of bounds (the sanitizers);
 *  - the reported size is exact: one octet less gives SENDAS_ENOSPC with
 *    the same size and nothing written past the end of the buffer;
 *  - the envelope sender, when a tag was found, is NAME@DOMAIN with NAME
 *    from the tag's alphabet;
 *  - rewriting the output again finds Date and Message-ID present and, when
 *    it finds no further tag, changes nothing (idempotence).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/sendas.h"
#include "tests/fuzz/fuzz.h"

static const struct sendas_params P = {
    .domain = "example.com", .token = "fuzz.1", .now = 1700000000, .tz_off_min = -90};

/* Rewrites into exactly the room needed, checking the size report. */
static char *rewrite(const char *in, size_t n, struct sendas_result *r)
{
	char probe[64];
	int rc = sendas_rewrite(&P, in, n, probe, sizeof probe, r);
	CHECK(rc == SENDAS_OK || rc == SENDAS_ENOSPC);
	size_t need = r->len;
	CHECK(need > 0);
	/* one short: refused, nothing past the end (the guard stays) */
	char *buf = malloc(need + 16);
	CHECK(buf);
	memset(buf, 0xa5, need + 16);
	rc = sendas_rewrite(&P, in, n, buf, need - 1, r);
	CHECK(rc == SENDAS_ENOSPC);
	CHECK(r->len == need);
	CHECK(!r->tagged && r->sender[0] == 0);
	for (size_t i = need - 1; i < need + 16; i++)
		CHECK((unsigned char)buf[i] == 0xa5);
	rc = sendas_rewrite(&P, in, n, buf, need, r);
	CHECK(rc == SENDAS_OK);
	CHECK(r->len == need);
	CHECK((unsigned char)buf[need] == 0xa5);
	return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sendas_result r1, r2;
	char *o1 = rewrite((const char *)data, size, &r1);
	if (r1.tagged) {
		const char *at = strchr(r1.sender, '@');
		CHECK(at && at > r1.sender && at - r1.sender <= SENDAS_NAME_MAX);
		CHECK(strcmp(at + 1, "example.com") == 0);
		for (const char *p = r1.sender; p < at; p++)
			CHECK((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' || *p == '_');
		CHECK(r1.sender[0] != '.' && at[-1] != '.' && !strstr(r1.sender, ".."));
	} else {
		CHECK(!(r1.changes & (SENDAS_SUBJECT | SENDAS_FROM | SENDAS_ADDED_FROM)));
	}
	char *o2 = rewrite(o1, r1.len, &r2);
	CHECK(!(r2.changes & (SENDAS_ADDED_DATE | SENDAS_ADDED_MSGID)));
	if (!r2.tagged) CHECK(r2.len == r1.len && memcmp(o1, o2, r1.len) == 0);
	free(o1);
	free(o2);
	return 0;
}
