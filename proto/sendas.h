/*
 * sendas: the header rewrite for authenticated submissions (SPEC 4
 * "Send-as", RFC 6409 8.2/8.3).
 *
 * The core holds the message's header block (a bounded amount, e.g. 64 KiB;
 * the body streams past untouched), calls sendas_rewrite() once, writes the
 * result to the spool instead of the header block, and uses res.sender as
 * the envelope sender when res.tagged. Pure: no syscalls, no clock, no
 * allocation; time, the Message-ID token and every buffer come from the
 * caller.
 *
 * What it does, in one pass over the fields:
 *
 *  - The first Subject field is searched for "[sendas:NAME]": the tag is
 *    case-insensitive, SP/HTAB may follow the colon, NAME is letters,
 *    digits, ".", "-", "_" and must make a valid dot-atom local part (no
 *    leading, trailing or doubled "."; at most 64 octets). The search sees
 *    the Subject as a reader does: unfolded (RFC 5322 2.2.3) and with RFC
 *    2047 encoded-words decoded (charsets UTF-8, US-ASCII, ISO-8859-*,
 *    Windows-125*, KOI8-*; words in other charsets are opaque to it and
 *    kept as they are). Only the first tag counts; a later one stays.
 *  - The tag is removed with the space it leaves: of two spaces around it
 *    the one after goes; at the start of the Subject the space after it,
 *    at the end the space before it; a tag glued to a word takes no space
 *    ("a[t] b" -> "a b"). If the tag lay in plain text, only those
 *    octets go (folds elsewhere are kept; a fold that would be left empty
 *    goes too, and trailing white space when the tag ended the Subject). If
 *    it touched an encoded-word, the whole Subject is re-encoded as
 *    encoded-words in the charset and encoding (B or Q) it was written in,
 *    folded to 76-octet lines, never splitting a UTF-8 character (RFC 2047
 *    2, 5). A Subject left empty (or only white space) becomes exactly
 *    "Subject:" CRLF -- an empty unstructured field, kept so that a reader
 *    still sees the message had one.
 *  - With a tag, every From field's address becomes NAME@DOMAIN and the rest
 *    of the field stays octet for octet: `Name <a@b>`, `"Q, N" <a@b>`,
 *    bare `a@b`, `a@b (comment)`, folded or not. A From that is not one
 *    mailbox (a list, a group, unbalanced quotes) is replaced by
 *    `From: NAME@DOMAIN`. No From field: `From: NAME@DOMAIN` is added.
 *    Without a tag, From is not touched (and not added).
 *  - Date and Message-ID (names case-insensitive) are added when missing:
 *    `Date:` the RFC 5322 3.3 date-time of now/tz_off_min,
 *    `Message-ID: <TOKEN@DOMAIN>`.
 *  - Added fields go, in the order From, Date, Message-ID, at the end of the
 *    header block: before the empty line, or when there is none, after the
 *    last complete line (nothing is added when the only line is an
 *    unterminated one that starts with white space: a field put before it
 *    would become part of it). Everything after the empty line is copied
 *    as is.
 *  - A field that is malformed (no "name:" on its first line, a bare CR or
 *    LF, an unterminated last line) is copied unchanged and counts as
 *    absent.
 */
#ifndef MPB_SENDAS_H
#define MPB_SENDAS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* RFC 5321 4.5.3.1.1: NAME is a local part. */
#define SENDAS_NAME_MAX 64
/* NAME "@" DOMAIN NUL (RFC 5321 4.5.3.1.1, 4.5.3.1.2) */
#define SENDAS_SENDER_MAX (64 + 1 + 255 + 1)

enum sendas_rc {
	SENDAS_OK = 0,
	SENDAS_ENOSPC = -1, /* cap too small: nothing usable in out; res->len is
			       the size needed, call again with that much */
	SENDAS_EINVAL = -2, /* params unusable: domain not an ASCII host name,
			       token empty or not dot-atom-text (RFC 5322 3.2.3) */
};

/* res->changes bits: what was done (for the log line). */
enum {
	SENDAS_SUBJECT = 1,	/* the tag was removed from Subject */
	SENDAS_FROM = 2,	/* a From field was rewritten */
	SENDAS_ADDED_FROM = 4,	/* no From field: one was added */
	SENDAS_ADDED_DATE = 8,	/* RFC 6409 8.2 */
	SENDAS_ADDED_MSGID = 16 /* RFC 6409 8.3 */
};

struct sendas_params {
	const char *domain; /* the authenticated domain, e.g. "example.com" */
	const char *token;  /* unique per message: Message-ID <TOKEN@DOMAIN> */
	int64_t now;	    /* seconds since the epoch */
	int tz_off_min;	    /* local offset from UTC in minutes, for Date: */
};

struct sendas_result {
	size_t len;			/* octets written (needed on ENOSPC) */
	bool tagged;			/* a [sendas:NAME] tag was found */
	char sender[SENDAS_SENDER_MAX]; /* NAME@DOMAIN when tagged, else "" */
	unsigned changes;		/* SENDAS_* bits */
};

/* Rewrites the header block hdr[0..n) (CRLF lines up to and including the
 * empty line; see sendas_header_end) into out[0..cap). Returns SENDAS_OK,
 * SENDAS_ENOSPC or SENDAS_EINVAL; never writes past out + cap. The output
 * is rarely much longer than the input (about 200 octets of added fields;
 * a re-encoded Subject may grow several times), so the caller tries with
 * some slack and, on SENDAS_ENOSPC, again with res->len octets. */
int sendas_rewrite(const struct sendas_params *p, const char *hdr, size_t n, char *out, size_t cap,
		   struct sendas_result *res);

/* Length of the header block at the start of a message: through the first
 * empty line ("\r\n" at a line start; a message may begin with it), or 0 if
 * p[0..n) holds no empty line yet. */
size_t sendas_header_end(const char *p, size_t n);

#endif
