/*
 * smtp: the SMTP server dialogue (RFC 5321, 1870, 2920, 3030, 3207, 3461,
 * 4954, 6152, 6531, 2034) as a pure state machine.
 *
 * The core feeds it the bytes that arrived; it appends replies to an obuf,
 * hands message bytes to a body callback, and at most once per call returns a
 * request for something only the core can do (open a spool file, commit it,
 * check a password, start TLS, close). While a request is outstanding the core
 * feeds nothing; when the request is done it calls smtp_complete() and then
 * resumes feeding the unconsumed input. No syscalls, no clock, no allocation
 * except the transaction (smtp_tx), made at MAIL and freed at its end.
 *
 *   core                              machine
 *   smtp_start()                  ->  "220 HOST ESMTP mailpopbox"
 *   smtp_feed("EHLO a\r\nMAIL..") ->  replies, *used, SMTP_REQ_NONE
 *   smtp_feed("DATA\r\n")         ->  SMTP_REQ_SPOOL_OPEN  (no reply yet)
 *   smtp_complete(OPEN, 0)        ->  "354 ..."
 *   smtp_feed(body...)            ->  body(ctx, span) calls
 *   smtp_feed("\r\n.\r\n")        ->  SMTP_REQ_SPOOL_COMMIT
 *   smtp_complete(COMMIT, 0, id)  ->  "250 2.0.0 Ok: queued as ID"
 */
#ifndef MPB_SMTP_H
#define MPB_SMTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/obuf.h"

/* RFC 5321 4.5.3.1.4: a command line is at most 512 octets with its CRLF. */
#define SMTP_LINE_MAX 512
/* Room a machine wants free in the obuf before it handles one more command
 * (the longest single reply, EHLO's, is well under this). */
#define SMTP_REPLY_ROOM 1024
/* The 20th error reply of a session is followed by 421 and the close. */
#define SMTP_MAX_ERRORS 20
/* RFC 5321 4.5.3.1.3: a path is at most 256 octets. */
#define SMTP_PATH_MAX 256
/* RFC 4954 4: the lines of an AUTH exchange are not held to 512 octets;
 * PLAIN needs far less than this (1536 decoded octets), CRLF included. */
#define SMTP_AUTH_LINE_MAX 2048

struct smtp_domain {
	const char *name;            /* lower-case */
	const char *const *blocked;  /* lower-case full addresses, refused at RCPT */
	unsigned nblocked;
};

/* What the machine knows of the server; shared, read-only, owned by core. */
struct smtp_policy {
	const char *hostname;
	uint64_t max_message_size;
	unsigned max_recipients;
	bool submission;      /* MAIL before AUTH gets 530 5.7.0 */
	const struct smtp_domain *domains;
	unsigned ndomains;
};

enum smtp_req {
	SMTP_REQ_NONE,
	SMTP_REQ_STARTTLS,     /* "220 Ready" is in the obuf: flush it, discard
	                          every unconsumed input byte, handshake, then
	                          smtp_complete(result 0 ok / <0 failed). */
	SMTP_REQ_AUTH,         /* check smtp_auth_*(): complete 0 = ok, <0 = bad */
	SMTP_REQ_SPOOL_OPEN,   /* create the spool for the transaction:
	                          complete 0 = ok (-> 354 / BDAT goes on), <0 -> 451 */
	SMTP_REQ_SPOOL_COMMIT, /* all body bytes were given: make it durable,
	                          complete 0 + id -> 250, <0 -> 451 4.3.0 */
	SMTP_REQ_SPOOL_ABORT,  /* the message was refused (reply already in the
	                          obuf): discard the spool; no smtp_complete.
	                          smtp_tx_*() still answer until the next call
	                          into the machine (for the log line). */
	SMTP_REQ_CLOSE,        /* flush the obuf, then close the connection; a
	                          spool that is open and not committed is
	                          discarded (the 20th error may be the refusal
	                          of a message, which then comes as CLOSE, not
	                          as SPOOL_ABORT). */
};

/* Message body bytes: CRLF lines, dot-stuffing removed, exactly as they must
 * be stored, in order. ctx is smtp_io.ctx. */
typedef void (*smtp_body_fn)(void *ctx, const char *p, size_t n);

struct smtp_io {
	struct obuf *out;
	smtp_body_fn body;
	void *ctx;
};

/* RFC 3461 NOTIFY bits. 0 = not given (default: FAILURE, and DELAY allowed). */
enum { SMTP_NOTIFY_NEVER = 1, SMTP_NOTIFY_SUCCESS = 2, SMTP_NOTIFY_FAILURE = 4, SMTP_NOTIFY_DELAY = 8 };
enum smtp_ret { SMTP_RET_UNSET, SMTP_RET_FULL, SMTP_RET_HDRS };
enum smtp_body_type { SMTP_BODY_7BIT, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };

struct smtp_rcpt {
	char *addr;       /* as given, without <>; NUL-terminated */
	char *orcpt;      /* ORCPT=, xtext-decoded, or NULL */
	int domain;       /* index into policy domains, or -1 (relay) */
	uint8_t notify;   /* SMTP_NOTIFY_* bits */
};

struct smtp_tx;       /* opaque: MAIL..end of message */
struct smtp_auth;     /* opaque: a pending AUTH PLAIN exchange */

/* Private to smtp.c: the state that outlives one smtp_feed() call besides
 * the partial line. Declared here only so that the session stays one flat
 * allocation. */
struct smtp_priv {
	uint64_t chunk_left;     /* BDAT octets still to come */
	uint64_t chunk_size;     /* the BDAT size, echoed in its reply */
	struct smtp_auth *auth;  /* malloc'd during AUTH only */
	uint8_t req;             /* the request outstanding, if any */
	uint8_t chunk_reply;     /* reply owed when a discarded chunk ends */
	bool chunk_discard;      /* the chunk is read but not stored */
	bool chunk_last;         /* BDAT ... LAST */
	bool discard_line;       /* skipping the rest of an over-long line */
	bool closing;            /* the 20th error: 421 sent, close */
	bool tx_done;            /* tx ended by SPOOL_ABORT; freed on next call */
};

struct smtp_session {
	const struct smtp_policy *pol;
	char peer[48];        /* client IP as text, set by core before start */
	char helo[256];       /* EHLO/HELO argument */
	uint8_t state;        /* private to smtp.c */
	bool esmtp;           /* EHLO, not HELO */
	bool tls;             /* set by smtp_complete(STARTTLS) or by core for implicit TLS */
	bool tls_available;   /* a certificate exists: advertise STARTTLS */
	int auth_domain;      /* -1 until AUTH succeeds */
	unsigned errors;
	unsigned auth_failures;
	struct smtp_tx *tx;
	/* private parser state: partial command line, DATA scanner, BDAT count,
	   pending AUTH credentials... (see smtp.c) */
	uint16_t linelen;
	char line[SMTP_LINE_MAX + 2];
	union {
		uint64_t priv[8];
		struct smtp_priv p;
	};
};

/* Sets up S (zeroed by the caller, pol/peer/tls/tls_available filled) and
 * appends the greeting. */
void smtp_start(struct smtp_session *s, struct smtp_io *io);

/* Consumes up to n bytes of in; *used says how many. Stops early when it
 * needs the core (a request), when the obuf is short of SMTP_REPLY_ROOM, or
 * after SMTP_REQ_CLOSE. Bytes not used must be fed again later. */
enum smtp_req smtp_feed(struct smtp_session *s, const char *in, size_t n, size_t *used,
			struct smtp_io *io);

/* The outcome of the request last returned. arg: the queue id for COMMIT. */
enum smtp_req smtp_complete(struct smtp_session *s, enum smtp_req req, int result,
			    const char *arg, struct smtp_io *io);

/* Idle timeout: appends "421 4.4.2 ..."; the core then closes. */
void smtp_timeout(struct smtp_session *s, struct smtp_io *io);
/* Shutdown: appends "421 4.3.2 ... shutting down" (only between transactions). */
void smtp_shutdown(struct smtp_session *s, struct smtp_io *io);
/* True while a transaction is under way (MAIL given, not yet finished). */
bool smtp_in_transaction(const struct smtp_session *s);

/* Frees the transaction, if any. */
void smtp_end(struct smtp_session *s);

/* --- the transaction, for the core (valid from SPOOL_OPEN to COMMIT/ABORT) */
const char *smtp_tx_from(const struct smtp_session *s);      /* "" for <> */
/* Send-as (SPEC 4): the envelope sender becomes the rewritten From. */
void smtp_tx_set_from(struct smtp_session *s, const char *from);
unsigned smtp_tx_nrcpt(const struct smtp_session *s);
const struct smtp_rcpt *smtp_tx_rcpt(const struct smtp_session *s, unsigned i);
const char *smtp_tx_envid(const struct smtp_session *s);     /* or NULL */
enum smtp_ret smtp_tx_ret(const struct smtp_session *s);
enum smtp_body_type smtp_tx_body_type(const struct smtp_session *s);
bool smtp_tx_smtputf8(const struct smtp_session *s);

/* --- pending AUTH PLAIN credentials, for the core (valid during SMTP_REQ_AUTH;
 * wiped by smtp_complete). An unknown identity or a mismatched authorization
 * identity still comes as SMTP_REQ_AUTH, with domain -1, so that it takes the
 * same time and path as a wrong password: the core must complete it with <0.
 * Outside SMTP_REQ_AUTH, smtp_auth_domain() is the authenticated domain. */
int smtp_auth_domain(const struct smtp_session *s);          /* index or -1 */
/* NUL-terminated as well (PLAIN passwords hold no NUL, RFC 4616 2). */
const char *smtp_auth_password(const struct smtp_session *s, size_t *len);

/* --- trace headers (RFC 5321 4.4), written at the top of each stored copy:
 * Return-Path, one Delivered-To per recipient of DOMAIN, Received. Returns
 * the length written (0 if cap is too small). now: seconds since the epoch;
 * tz_off_min: the local offset from UTC in minutes. DOMAIN -1 is the copy
 * for the relay queue: Received only, since Return-Path belongs to the final
 * delivery (RFC 5321 4.4) and Delivered-To names a local maildrop. */
size_t smtp_trace_headers(char *buf, size_t cap, const struct smtp_session *s, int domain,
			  const char *id, int64_t now, int tz_off_min);

#endif
