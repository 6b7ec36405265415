/*
 * The grammar is RFC 5321 4.1.2 as written, with the RFC 6531 3.3 additions
 * (atext, qtextSMTP and sub-domain may hold UTF-8) under ADDR_UTF8. A
 * source route (A-d-l) is parsed and dropped, as 4.1.2 and C require.
 */
#include "proto/addr.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

struct cur {
	const unsigned char *p;
	size_t n, i;
	unsigned flags;
	bool nonascii;
};

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

size_t addr_utf8_len(const unsigned char *p, size_t n)
{
	if (n == 0)
		return 0;
	unsigned char c = p[0];
	size_t len;
	unsigned char lo = 0x80, hi = 0xBF; /* range of the second octet */
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		if (c == 0xE0)
			lo = 0xA0; /* overlong */
		if (c == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		if (c == 0xF0)
			lo = 0x90; /* overlong */
		if (c == 0xF4)
			hi = 0x8F; /* above U+10FFFF */
	} else {
		return 0;
	}
	if (n < len || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t k = 2; k < len; k++)
		if (p[k] < 0x80 || p[k] > 0xBF)
			return 0;
	return len;
}

/* Octets of one UTF8-non-ascii character at the cursor if ADDR_UTF8 allows
 * it, else 0. */
static size_t utf8_at(struct cur *c)
{
	if (!(c->flags & ADDR_UTF8) || c->i >= c->n || c->p[c->i] < 0x80)
		return 0;
	size_t k = addr_utf8_len(c->p + c->i, c->n - c->i);
	if (k)
		c->nonascii = true;
	return k;
}

static bool at(const struct cur *c, unsigned char ch) { return c->i < c->n && c->p[c->i] == ch; }

/* atext (RFC 5322 3.2.3): the ASCII octets an Atom may hold. */
static bool is_atext(unsigned char ch)
{
	return is_alnum(ch) || (ch && strchr("!#$%&'*+-/=?^_`{|}~", ch));
}

/* Dot-string = Atom *("." Atom) */
static int dot_string(struct cur *c)
{
	for (;;) {
		size_t a = c->i;
		while (c->i < c->n) {
			if (is_atext(c->p[c->i])) {
				c->i++;
				continue;
			}
			size_t k = utf8_at(c);
			if (!k)
				break;
			c->i += k;
		}
		if (c->i == a)
			return -1;
		if (!at(c, '.'))
			return 0;
		c->i++;
	}
}

/* Quoted-string = DQUOTE *QcontentSMTP DQUOTE */
static int quoted_string(struct cur *c)
{
	c->i++;
	while (c->i < c->n) {
		unsigned char ch = c->p[c->i];
		if (ch == '"') {
			c->i++;
			return 0;
		}
		if (ch == '\\') { /* quoted-pairSMTP = "\" %d32-126 */
			if (c->i + 1 >= c->n || c->p[c->i + 1] < 32 || c->p[c->i + 1] > 126)
				return -1;
			c->i += 2;
		} else if (ch >= 32 && ch <= 126) {
			c->i++;
		} else {
			size_t k = utf8_at(c);
			if (!k)
				return -1;
			c->i += k;
		}
	}
	return -1;
}

/* Domain = sub-domain *("." sub-domain); sub-domain = Let-dig [Ldh-str],
 * or a U-label under ADDR_UTF8. An ASCII label is at most 63 octets
 * (RFC 1035 2.3.4). */
static int domain(struct cur *c)
{
	size_t start = c->i;
	for (;;) {
		size_t a = c->i;
		bool ascii = true;
		while (c->i < c->n) {
			unsigned char ch = c->p[c->i];
			if (is_alnum(ch) || ch == '-') {
				c->i++;
				continue;
			}
			size_t k = utf8_at(c);
			if (!k)
				break;
			c->i += k;
			ascii = false;
		}
		if (c->i == a || c->p[a] == '-' || c->p[c->i - 1] == '-')
			return -1;
		if (ascii && c->i - a > 63)
			return -1;
		if (!at(c, '.'))
			break;
		c->i++;
	}
	return c->i - start <= ADDR_DOMAIN_MAX ? 0 : -1;
}

/* Snum 3("." Snum), Snum = 1*3DIGIT in 0..255 */
static bool ipv4_literal(const unsigned char *p, size_t n)
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		if (part) {
			if (i >= n || p[i] != '.')
				return false;
			i++;
		}
		unsigned v = 0, digits = 0;
		while (i < n && is_digit(p[i]) && digits < 3) {
			v = v * 10 + (p[i++] - '0');
			digits++;
		}
		if (!digits || v > 255)
			return false;
	}
	return i == n;
}

/* address-literal = "[" ( IPv4-address-literal / IPv6-address-literal /
 * General-address-literal ) "]" */
static int address_literal(struct cur *c)
{
	const unsigned char *s = c->p + c->i + 1;
	size_t n = 0;
	/* dcontent = %d33-90 / %d94-126 */
	while (c->i + 1 + n < c->n && s[n] != ']') {
		if (s[n] < 33 || s[n] > 126 || s[n] == '[' || s[n] == '\\')
			return -1;
		n++;
	}
	if (c->i + 1 + n >= c->n || n == 0)
		return -1;
	c->i += n + 2;
	if (ipv4_literal(s, n))
		return 0;
	if (n > 5 && strncasecmp((const char *)s, "IPv6:", 5) == 0) {
		char buf[INET6_ADDRSTRLEN + 1];
		unsigned char bin[16];
		if (n - 5 >= sizeof buf)
			return -1;
		memcpy(buf, s + 5, n - 5);
		buf[n - 5] = '\0';
		return inet_pton(AF_INET6, buf, bin) == 1 ? 0 : -1;
	}
	/* General-address-literal = Standardized-tag ":" 1*dcontent */
	size_t t = 0;
	while (t < n && (is_alnum(s[t]) || s[t] == '-'))
		t++;
	if (t == 0 || s[t - 1] == '-' || t + 1 >= n || s[t] != ':')
		return -1;
	return 0;
}

ssize_t addr_parse_path(const char *p, size_t n, unsigned flags, struct addr_path *out)
{
	struct cur c = {.p = (const unsigned char *)p, .n = n, .i = 1, .flags = flags};

	memset(out, 0, sizeof *out);
	if (n < 2 || p[0] != '<')
		return -1;
	if (p[1] == '>') {
		if (!(flags & ADDR_NULL_OK))
			return -1;
		out->null = true;
		out->mbox = out->local = out->domain = "";
		return 2;
	}
	/* A-d-l = At-domain *( "," At-domain ) ":" -- accepted and ignored */
	if (at(&c, '@')) {
		for (;;) {
			c.i++;
			if (domain(&c) < 0)
				return -1;
			if (at(&c, ',') && c.i + 1 < n && p[c.i + 1] == '@') {
				c.i++;
				continue;
			}
			if (!at(&c, ':'))
				return -1;
			c.i++;
			break;
		}
	}
	size_t mbox = c.i;
	bool quoted = at(&c, '"');
	if ((quoted ? quoted_string(&c) : dot_string(&c)) < 0)
		return -1;
	size_t local_len = c.i - mbox;
	if (local_len > ADDR_LOCAL_MAX)
		return -1;
	out->local = p + mbox;
	out->local_len = local_len;
	if (at(&c, '>') && (flags & ADDR_POSTMASTER_OK) && !quoted && local_len == 10 &&
	    strncasecmp(p + mbox, "postmaster", 10) == 0) {
		out->postmaster = true;
		out->domain = "";
	} else {
		if (!at(&c, '@'))
			return -1;
		c.i++;
		size_t d = c.i;
		out->literal = at(&c, '[');
		if ((out->literal ? address_literal(&c) : domain(&c)) < 0)
			return -1;
		out->domain = p + d;
		out->domain_len = c.i - d;
	}
	if (!at(&c, '>'))
		return -1;
	out->mbox = p + mbox;
	out->mbox_len = c.i - mbox;
	out->nonascii = c.nonascii;
	c.i++;
	return c.i <= ADDR_PATH_MAX ? (ssize_t)c.i : -1;
}

static int hexval(unsigned char ch)
{
	if (is_digit(ch))
		return ch - '0';
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	if (ch >= 'a' && ch <= 'f') /* RFC 3461 says upper case; be liberal */
		return ch - 'a' + 10;
	return -1;
}

ssize_t addr_xtext_decode(const char *p, size_t n, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < n;) {
		unsigned char ch = (unsigned char)p[i];
		unsigned v;
		if (ch == '+') {
			if (i + 2 >= n)
				return -1;
			int h = hexval((unsigned char)p[i + 1]), l = hexval((unsigned char)p[i + 2]);
			if (h < 0 || l < 0)
				return -1;
			v = (unsigned)(h << 4 | l);
			i += 3;
		} else if (ch >= 33 && ch <= 126 && ch != '=') {
			v = ch;
			i++;
		} else {
			return -1;
		}
		if (v < 0x20 || v == 0x7F || o + 1 >= cap)
			return -1;
		out[o++] = (char)v;
	}
	if (o >= cap)
		return -1;
	out[o] = '\0';
	return (ssize_t)o;
}
