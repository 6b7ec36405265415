/*
 * dsn: delivery status notifications (RFC 3464 multipart/report, RFC 3461
 * NOTIFY and RET, RFC 6522 report framing) as text, for SPEC 5.
 *
 * The original message can be large, so the builder never sees it. It
 * writes the DSN in two pieces around it:
 *
 *   dsn_prefix()  headers, the human-readable part, the
 *                 message/delivery-status part, and the headers of the
 *                 third part (message/rfc822 or text/rfc822-headers)
 *   ...           the caller copies the original, whole or (when
 *                 dsn_headers_only()) its header block, which
 *                 dsn_headers_scan() finds a chunk at a time
 *   dsn_suffix()  the closing boundary
 *
 * The output starts with From:; the delivery layer puts `Return-Path: <>`
 * (and its trace fields) above it. Every line ends in CRLF and is at most
 * 998 octets (RFC 5322 2.1.1): long Diagnostic-Code values and long text
 * lines are folded at white space (a run of over 900 octets without any is
 * broken, which adds a space when unfolded). Text from the remote side (its
 * reply, its host name) has control characters replaced by spaces.
 *
 * Pure: no syscalls, no clock, no allocation. Time and the unique token
 * (Message-ID and MIME boundary) come from the caller.
 */
#ifndef MPB_DSN_H
#define MPB_DSN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/smtp.h" /* SMTP_NOTIFY_* bits, enum smtp_ret */

/* RFC 3464 2.3.3 */
enum dsn_action { DSN_FAILED, DSN_DELAYED, DSN_DELIVERED, DSN_RELAYED, DSN_EXPANDED };

enum dsn_rc {
	DSN_OK = 0,
	DSN_ENOSPC = -1, /* cap too small: *len is the size needed */
	DSN_EINVAL = -2, /* see dsn_prefix */
};

/* Longest token: the boundary "=_mpb_TOKEN_=" stays under RFC 2046 5.1.1's
 * 70 characters. */
#define DSN_TOKEN_MAX 60

struct dsn_rcpt {
	const char *addr;  /* Final-Recipient: the address as tried, no <> */
	const char *orcpt; /* ORCPT as smtp_rcpt.orcpt holds it,
			      "addr-type;address" xtext-decoded, or NULL */
	enum dsn_action action;
	const char *status;	/* RFC 3463 "5.1.1"; NULL: 5.0.0, 4.0.0 or 2.0.0
				   per action */
	const char *remote_mta; /* host the diagnostic came from, or NULL */
	const char *diagnostic; /* the remote SMTP reply as received, its lines
				   ("550-5.1.1 a" CRLF "550 5.1.1 b") joined by a
				   space; or our own reason; or NULL */
	bool local;		/* diagnostic is our own reason, not an SMTP
				   reply: typed "X-mailpopbox", not "smtp"
				   (RFC 3464 2.3.6) */
	int64_t last_attempt;	/* Last-Attempt-Date; 0: omitted */
	int64_t retry_until;	/* Will-Retry-Until, DSN_DELAYED only; 0: omitted */
};

struct dsn_report {
	const char *reporting_mta; /* our host name: Reporting-MTA, From */
	const char *sender;	   /* the original envelope sender: To (never "":
				      no DSN is sent for a null reverse-path,
				      RFC 5321 6.1) */
	const char *envid;	   /* ENVID, xtext-decoded (smtp_tx_envid), or NULL */
	enum smtp_ret ret;	   /* RET; UNSET: FULL when some recipient
				      failed (the message must come back to be
				      resent), headers otherwise (a delay or
				      success report needs no copy) */
	bool orig_8bit;		   /* the original is 8BITMIME: say so */
	int64_t arrival;	   /* Arrival-Date: when we accepted it */
	int64_t now;		   /* Date */
	int tz_off_min;		   /* for every date: local offset from UTC */
	const char *token;	   /* unique per DSN: Message-ID <TOKEN@host> and the
				      boundary; letters, digits, ".", "-", "_",
				      at most DSN_TOKEN_MAX */
	const struct dsn_rcpt *rcpt;
	unsigned nrcpt; /* at least 1 */
};

/* Writes everything up to where the original goes into buf[0..cap) and sets
 * *len. DSN_EINVAL: no recipient, empty sender, a token, host name or
 * sender with octets that cannot go in a header, a status not "d.d.d" with
 * a class of 2, 4 or 5. DSN_ENOSPC: *len is the size needed. Never writes
 * past buf + cap. */
int dsn_prefix(const struct dsn_report *r, char *buf, size_t cap, size_t *len);

/* The closing boundary (it starts with its own CRLF, so the original need
 * not end with one). Same return codes. */
int dsn_suffix(const struct dsn_report *r, char *buf, size_t cap, size_t *len);

/* True when the caller copies only the original's header block (RET=HDRS,
 * or RET unset and nobody failed); false: the whole message. */
bool dsn_headers_only(const struct dsn_report *r);

/* Finds the end of the original's header block, a chunk at a time. *state
 * starts at 0. Returns how many octets of p[0..n) belong to the header
 * block (through the empty line); after the empty line *state is
 * DSN_HDRS_DONE and the caller stops copying. A message without an empty
 * line is all header. */
#define DSN_HDRS_DONE 4u
size_t dsn_headers_scan(unsigned *state, const char *p, size_t n);

/* RFC 3461 4.1 and 5.2: is a DSN wanted for a recipient whose NOTIFY was
 * these SMTP_NOTIFY_* bits and whose outcome is ACTION? NEVER: never.
 * SUCCESS covers delivered, relayed (to a next hop without DSN, 5.2.2) and
 * expanded (5.2.7); FAILURE failed; DELAY delayed. No NOTIFY (0) means
 * FAILURE: the MTA may add DELAY, and this one does not (SPEC 5 sends delay
 * reports only when asked). */
bool dsn_wanted(unsigned notify, enum dsn_action action);

#endif
