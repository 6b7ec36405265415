/*
 * addr: SMTP paths and mailboxes (RFC 5321 4.1.2, 4.5.3.1), with the UTF-8
 * extensions of RFC 6531 3.3, and xtext (RFC 3461 4).
 *
 * The parsers work in place on (pointer, length) slices and never allocate;
 * results are slices of the input.
 */
#ifndef MPB_ADDR_H
#define MPB_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* RFC 5321 4.5.3.1.1 and 4.5.3.1.2 */
#define ADDR_LOCAL_MAX 64
#define ADDR_DOMAIN_MAX 255
/* RFC 5321 4.5.3.1.3: "<" and ">" included. */
#define ADDR_PATH_MAX 256

enum {
	ADDR_NULL_OK = 1,       /* "<>" (Reverse-path) */
	ADDR_POSTMASTER_OK = 2, /* "<Postmaster>" without a domain (4.1.1.3) */
	ADDR_UTF8 = 4,          /* UTF-8 in local part and domain (RFC 6531 3.3) */
};

struct addr_path {
	const char *mbox; /* Mailbox without "<>" and source route; "" for <> */
	size_t mbox_len;
	const char *local; /* Local-part as written (quotes kept) */
	size_t local_len;
	const char *domain; /* Domain or address literal ("[...]" kept); */
	size_t domain_len;  /* 0 for <> and <postmaster> */
	bool null;
	bool postmaster;
	bool literal;  /* the domain is an address literal */
	bool nonascii; /* some octet >= 0x80 (then ADDR_UTF8 was given) */
};

/* Parses a Path starting at p[0] == '<' and returns the octets it took
 * (through '>'), or -1 if p does not start with a valid path within n. */
ssize_t addr_parse_path(const char *p, size_t n, unsigned flags, struct addr_path *out);

/* Decodes xtext (RFC 3461 4: "+" and two upper-case hex digits, other
 * octets 0x21..0x7E but "+" and "=") into out, NUL-terminated. Refuses
 * decoded control characters, which could not be printed back safely in a
 * DSN. Returns the decoded length, or -1 (malformed, or cap too small). */
ssize_t addr_xtext_decode(const char *p, size_t n, char *out, size_t cap);

/* Length of the well-formed UTF-8 sequence at p (1..4), or 0 (RFC 3629 4). */
size_t addr_utf8_len(const unsigned char *p, size_t n);

#endif
