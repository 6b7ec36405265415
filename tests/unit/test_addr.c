/* Unit tests for proto/addr.c: RFC 5321 4.1.2 paths, RFC 6531 UTF-8, the
 * length limits of 4.5.3.1, and RFC 3461 xtext. */
#include "proto/addr.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static struct addr_path A;

static ssize_t parse(const char *p, unsigned flags) { return addr_parse_path(p, strlen(p), flags, &A); }

static void good(const char *p, unsigned flags, const char *mbox, const char *local,
		 const char *domain)
{
	ssize_t n = parse(p, flags);
	cr_assert_eq(n, (ssize_t)strlen(p), "%s: %zd", p, n);
	cr_expect_eq(A.mbox_len, strlen(mbox), "%s", p);
	cr_expect(memcmp(A.mbox, mbox, A.mbox_len) == 0, "%s", p);
	cr_expect_eq(A.local_len, strlen(local), "%s", p);
	cr_expect(memcmp(A.local, local, A.local_len) == 0, "%s", p);
	cr_expect_eq(A.domain_len, strlen(domain), "%s", p);
	cr_expect(memcmp(A.domain, domain, A.domain_len) == 0, "%s", p);
}

static void bad(const char *p, unsigned flags)
{
	cr_expect_eq(parse(p, flags), -1, "accepted: %s", p);
}

Test(addr, mailboxes)
{
	good("<a@b>", 0, "a@b", "a", "b");
	good("<first.last+tag@sub.example.com>", 0, "first.last+tag@sub.example.com",
	     "first.last+tag", "sub.example.com");
	good("<!#$%&'*+-/=?^_`{|}~@x-y.example>", 0, "!#$%&'*+-/=?^_`{|}~@x-y.example",
	     "!#$%&'*+-/=?^_`{|}~", "x-y.example");
	good("<1@2.3>", 0, "1@2.3", "1", "2.3");
	bad("a@b", 0);
	bad("<a@b", 0);
	bad("<a>", 0);
	bad("<@b>", 0);
	bad("<a@>", 0);
	bad("<.a@b>", 0);
	bad("<a.@b>", 0);
	bad("<a..b@b>", 0);
	bad("<a@b.>", 0);
	bad("<a@.b>", 0);
	bad("<a@b..c>", 0);
	bad("<a@-b>", 0);
	bad("<a@b->", 0);
	bad("<a@b_c>", 0);
	bad("<a b@c>", 0);
	bad("<a@b c>", 0);
	bad("<a(b)@c>", 0);
	bad("<a@b@c>", 0);
	bad("< a@b>", 0);
	bad("<", 0);
	bad("", 0);
}

Test(addr, only_the_path_is_taken)
{
	cr_expect_eq(parse("<a@b> SIZE=1", 0), 5);
	cr_expect_eq(parse("<a@b>>", 0), 5);
}

Test(addr, null_path_and_postmaster)
{
	bad("<>", 0);
	cr_expect_eq(parse("<>", ADDR_NULL_OK), 2);
	cr_expect(A.null);
	cr_expect_eq(A.mbox_len, 0);
	cr_expect_str_eq(A.mbox, "");
	bad("<postmaster>", ADDR_NULL_OK);
	good("<PostMaster>", ADDR_POSTMASTER_OK, "PostMaster", "PostMaster", "");
	cr_expect(A.postmaster);
	good("<postmaster@example.com>", ADDR_POSTMASTER_OK, "postmaster@example.com", "postmaster",
	     "example.com");
	cr_expect(!A.postmaster);
	bad("<\"postmaster\">", ADDR_POSTMASTER_OK);
	bad("<postmaster.x>", ADDR_POSTMASTER_OK);
	bad("<>", ADDR_POSTMASTER_OK);
}

Test(addr, source_routes_are_dropped)
{
	good("<@a.example:u@b.example>", 0, "u@b.example", "u", "b.example");
	good("<@a.example,@c.example:u@b.example>", 0, "u@b.example", "u", "b.example");
	bad("<@a.example u@b.example>", 0);
	bad("<@a.example,c.example:u@b.example>", 0);
	bad("<@:u@b.example>", 0);
	bad("<@a.example:>", 0);
}

Test(addr, quoted_local_parts)
{
	good("<\"a b\"@c>", 0, "\"a b\"@c", "\"a b\"", "c");
	good("<\"\"@c>", 0, "\"\"@c", "\"\"", "c");
	good("<\"a\\\"b\\\\c@d\"@e>", 0, "\"a\\\"b\\\\c@d\"@e", "\"a\\\"b\\\\c@d\"", "e");
	good("<\"a>b\"@c>", 0, "\"a>b\"@c", "\"a>b\"", "c");
	bad("<\"a@c>", 0);
	bad("<\"a\"b@c>", 0);
	bad("<\"a\\\x01\"@c>", 0);
	bad("<\"a\tb\"@c>", 0);
	bad("<\"a\x7f\"@c>", 0);
}

Test(addr, address_literals)
{
	good("<a@[192.0.2.1]>", 0, "a@[192.0.2.1]", "a", "[192.0.2.1]");
	cr_expect(A.literal);
	good("<a@[0.0.0.0]>", 0, "a@[0.0.0.0]", "a", "[0.0.0.0]");
	good("<a@[255.255.255.255]>", 0, "a@[255.255.255.255]", "a", "[255.255.255.255]");
	good("<a@[IPv6:2001:db8::1]>", 0, "a@[IPv6:2001:db8::1]", "a", "[IPv6:2001:db8::1]");
	good("<a@[ipv6:::ffff:192.0.2.1]>", 0, "a@[ipv6:::ffff:192.0.2.1]", "a",
	     "[ipv6:::ffff:192.0.2.1]");
	good("<a@[x-tag:any!thing]>", 0, "a@[x-tag:any!thing]", "a", "[x-tag:any!thing]");
	bad("<a@[]>", 0);
	bad("<a@[1.2.3]>", 0);
	bad("<a@[1.2.3.4.5]>", 0);
	bad("<a@[1.2.3.256]>", 0);
	bad("<a@[1.2.3.1234]>", 0);
	bad("<a@[IPv6:1::2::3]>", 0);
	bad("<a@[IPv6:12345::]>", 0);
	bad("<a@[IPv6:]>", 0);
	bad("<a@[x-tag:]>", 0);
	bad("<a@[-:x]>", 0);
	bad("<a@[1.2.3.4>", 0);
	bad("<a@[a b]>", 0);
	bad("<a@[a[b]>", 0);
	bad("<a@x.[1.2.3.4]>", 0);
}

Test(addr, length_limits)
{
	char p[600], local[100], label[100];
	/* local part: 64 octets (RFC 5321 4.5.3.1.1) */
	memset(local, 'l', 64);
	local[64] = '\0';
	snprintf(p, sizeof p, "<%s@b>", local);
	cr_expect_gt(parse(p, 0), 0);
	snprintf(p, sizeof p, "<%sl@b>", local);
	bad(p, 0);
	/* a DNS label: 63 octets */
	memset(label, 'd', 63);
	label[63] = '\0';
	snprintf(p, sizeof p, "<a@%s.example>", label);
	cr_expect_gt(parse(p, 0), 0);
	snprintf(p, sizeof p, "<a@%sd.example>", label);
	bad(p, 0);
	/* the whole path: 256 octets with the brackets (4.5.3.1.3) */
	snprintf(p, sizeof p, "<%s@%s.%s.%.*s>", local, label, label, 61, label);
	cr_assert_eq(strlen(p), 256);
	cr_expect_eq(parse(p, 0), 256);
	snprintf(p, sizeof p, "<%s@%s.%s.%.*s>", local, label, label, 62, label);
	bad(p, 0);
	/* (so a domain never reaches its own limit of 255 in a path) */
	snprintf(p, sizeof p, "<a@%s.%s.%s.%s.ddd>", label, label, label, label);
	bad(p, 0);
}

Test(addr, utf8)
{
	bad("<\xc3\xa9@b.example>", 0);
	good("<\xc3\xa9@b.example>", ADDR_UTF8, "\xc3\xa9@b.example", "\xc3\xa9", "b.example");
	cr_expect(A.nonascii);
	good("<a@\xe4\xbe\x8b\xe3\x81\x88.example>", ADDR_UTF8, "a@\xe4\xbe\x8b\xe3\x81\x88.example",
	     "a", "\xe4\xbe\x8b\xe3\x81\x88.example");
	good("<\"\xf0\x9f\x98\x80 x\"@b>", ADDR_UTF8, "\"\xf0\x9f\x98\x80 x\"@b",
	     "\"\xf0\x9f\x98\x80 x\"", "b");
	good("<a@b>", ADDR_UTF8, "a@b", "a", "b");
	cr_expect(!A.nonascii);
	bad("<\xc0\x80@b>", ADDR_UTF8);         /* overlong */
	bad("<\xe0\x80\xaf@b>", ADDR_UTF8);     /* overlong */
	bad("<\xed\xa0\x80@b>", ADDR_UTF8);     /* surrogate */
	bad("<\xf4\x90\x80\x80@b>", ADDR_UTF8); /* > U+10FFFF */
	bad("<\xf5\x80\x80\x80@b>", ADDR_UTF8);
	bad("<\x80@b>", ADDR_UTF8);
	bad("<\xc3@b>", ADDR_UTF8);
	bad("<a@[\xc3\xa9]>", ADDR_UTF8); /* literals stay ASCII */
}

Test(addr, utf8_len)
{
	cr_expect_eq(addr_utf8_len((const unsigned char *)"a", 1), 1);
	cr_expect_eq(addr_utf8_len((const unsigned char *)"\xc3\xa9", 2), 2);
	cr_expect_eq(addr_utf8_len((const unsigned char *)"\xc3\xa9", 1), 0);
	cr_expect_eq(addr_utf8_len((const unsigned char *)"\xef\xbf\xbf", 3), 3);
	cr_expect_eq(addr_utf8_len((const unsigned char *)"\xf4\x8f\xbf\xbf", 4), 4);
	cr_expect_eq(addr_utf8_len((const unsigned char *)"\xc1\xbf", 2), 0);
	cr_expect_eq(addr_utf8_len((const unsigned char *)"", 0), 0);
}

Test(addr, xtext)
{
	char out[16];
	cr_expect_eq(addr_xtext_decode("a+2Bb+3Dc", 9, out, sizeof out), 5);
	cr_expect_str_eq(out, "a+b=c");
	cr_expect_eq(addr_xtext_decode("+2b", 3, out, sizeof out), 1);
	cr_expect_eq(addr_xtext_decode("", 0, out, sizeof out), 0);
	cr_expect_str_eq(out, "");
	cr_expect_eq(addr_xtext_decode("a+", 2, out, sizeof out), -1);
	cr_expect_eq(addr_xtext_decode("a+2", 3, out, sizeof out), -1);
	cr_expect_eq(addr_xtext_decode("a+2G", 4, out, sizeof out), -1);
	cr_expect_eq(addr_xtext_decode("a=b", 3, out, sizeof out), -1);
	cr_expect_eq(addr_xtext_decode("a b", 3, out, sizeof out), -1);
	cr_expect_eq(addr_xtext_decode("a+0Ab", 5, out, sizeof out), -1); /* LF */
	cr_expect_eq(addr_xtext_decode("a+7F", 4, out, sizeof out), -1);
	cr_expect_eq(addr_xtext_decode("a+C3+A9", 7, out, sizeof out), 3);
	cr_expect_eq(addr_xtext_decode("0123456789abcdef", 16, out, sizeof out), -1);
	cr_expect_eq(addr_xtext_decode("0123456789abcde", 15, out, sizeof out), 15);
}
