/*
 * sasl: base64 (RFC 4648) and the PLAIN mechanism (RFC 4616), shared by the
 * SMTP (RFC 4954) and POP3 (RFC 5034) machines.
 */
#ifndef MPB_SASL_H
#define MPB_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Strict decode: no whitespace, padding required, no trailing garbage.
 * Returns the decoded length, or -1 (malformed or does not fit in cap). */
ssize_t b64_decode(const char *in, size_t n, unsigned char *out, size_t cap);
/* Returns the encoded length (4*ceil(n/3)); out needs that much room + 1. */
size_t b64_encode(const unsigned char *in, size_t n, char *out);

/* RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd.
 * Slices point into the decoded message. */
struct sasl_plain {
	const char *authzid; size_t authzid_len;
	const char *authcid; size_t authcid_len;
	const char *passwd;  size_t passwd_len;
};
/* 0, or -1 when the message is not of that form (missing NULs, empty
 * authcid or passwd, a NUL inside a field). */
int sasl_plain_parse(const unsigned char *msg, size_t n, struct sasl_plain *out);

/* The identity rule of SPEC 4/7: USER must be "mailbox@DOMAIN" for one of
 * the ndomains lower-case names (both parts case-insensitive). domains points
 * at the first `const char *name` of an array of structs `stride` bytes apart.
 * Returns the domain index or -1. (An authzid, if given, must equal the
 * authcid: the caller checks that.) */
int sasl_identity_domain(const char *user, size_t n, const char *const *domains,
			 size_t stride, unsigned ndomains);

/* Constant-time equality of two byte strings (length leaks, content not). */
bool sasl_consttime_eq(const void *a, size_t alen, const void *b, size_t blen);

#endif
