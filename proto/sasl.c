#include "proto/sasl.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	if (c == '+') return 62;
	if (c == '/') return 63;
	return -1;
}

ssize_t b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	if (n % 4 != 0)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4], pad = 0;
		for (int k = 0; k < 4; k++) {
			unsigned char c = (unsigned char)in[i + k];
			if (c == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad) /* data after '=' */
				return -1;
			if ((v[k] = b64val(c)) < 0)
				return -1;
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		size_t take = 3 - (size_t)pad;
		if (o + take > cap)
			return -1;
		out[o++] = (unsigned char)(w >> 16);
		if (take > 1) out[o++] = (unsigned char)(w >> 8);
		if (take > 2) out[o++] = (unsigned char)w;
	}
	return (ssize_t)o;
}

size_t b64_encode(const unsigned char *in, size_t n, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t w = (uint32_t)in[i] << 16;
		if (i + 1 < n) w |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n) w |= in[i + 2];
		out[o++] = b64chars[w >> 18 & 63];
		out[o++] = b64chars[w >> 12 & 63];
		out[o++] = i + 1 < n ? b64chars[w >> 6 & 63] : '=';
		out[o++] = i + 2 < n ? b64chars[w & 63] : '=';
	}
	out[o] = '\0';
	return o;
}

int sasl_plain_parse(const unsigned char *msg, size_t n, struct sasl_plain *out)
{
	const unsigned char *nul1 = memchr(msg, 0, n);
	if (!nul1)
		return -1;
	const unsigned char *rest = nul1 + 1;
	size_t restn = n - (size_t)(rest - msg);
	const unsigned char *nul2 = memchr(rest, 0, restn);
	if (!nul2)
		return -1;
	out->authzid = (const char *)msg;
	out->authzid_len = (size_t)(nul1 - msg);
	out->authcid = (const char *)rest;
	out->authcid_len = (size_t)(nul2 - rest);
	out->passwd = (const char *)nul2 + 1;
	out->passwd_len = n - (size_t)(nul2 + 1 - msg);
	if (out->authcid_len == 0 || out->passwd_len == 0)
		return -1;
	if (memchr(out->passwd, 0, out->passwd_len)) /* a third NUL */
		return -1;
	return 0;
}

int sasl_identity_domain(const char *user, size_t n, const char *const *domains,
			 size_t stride, unsigned ndomains)
{
	static const char mb[] = "mailbox@";
	if (n <= sizeof mb - 1 || strncasecmp(user, mb, sizeof mb - 1) != 0)
		return -1;
	const char *dom = user + sizeof mb - 1;
	size_t dn = n - (sizeof mb - 1);
	for (unsigned i = 0; i < ndomains; i++) {
		const char *name = *(const char *const *)((const char *)domains + i * stride);
		if (strlen(name) == dn && strncasecmp(name, dom, dn) == 0)
			return (int)i;
	}
	return -1;
}

bool sasl_consttime_eq(const void *a, size_t alen, const void *b, size_t blen)
{
	const unsigned char *x = a, *y = b;
	unsigned char d = alen != blen;
	size_t n = alen < blen ? alen : blen;
	for (size_t i = 0; i < n; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}
