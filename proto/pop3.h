/*
 * pop3: the POP3 server dialogue (RFC 1939, 2449, 2595, 5034) as a pure
 * state machine, driven like proto/smtp.h: the core feeds input, the machine
 * appends replies to an obuf and returns at most one request at a time.
 *
 * Message listings come from a snapshot the core hands over after
 * POP3_REQ_OPEN (an array of pop3_msg it owns). Message text is not the
 * machine's business: for RETR/TOP it returns POP3_REQ_RETR with nothing in
 * the obuf; the core opens the file, calls pop3_retr_ok() (which appends the
 * "+OK"), streams the file through pop3_stuff (dot-stuffing, TOP's line
 * limit, the final ".\r\n") and calls pop3_complete when done. If the file
 * cannot be opened (another tool removed it), the core skips pop3_retr_ok()
 * and completes with <0: the machine answers -ERR and the session goes on.
 *
 *   core                              machine
 *   pop3_start()                  ->  "+OK POP3 (mailpopbox) server HOST"
 *   pop3_feed("USER ..\r\nPASS ..") ->  "+OK", POP3_REQ_AUTH
 *   pop3_complete(AUTH, 0)        ->  POP3_REQ_OPEN
 *   pop3_set_maildrop(); pop3_complete(OPEN, 0) -> "+OK maildrop has ..."
 *   pop3_feed("RETR 1\r\n")       ->  POP3_REQ_RETR (obuf untouched)
 *   open ok: pop3_retr_ok()       ->  "+OK 1234 octets"
 *   pop3_stuff()... pop3_stuff_end(); pop3_complete(RETR, 0)
 *   pop3_feed("QUIT\r\n")         ->  POP3_REQ_UPDATE
 *   pop3_complete(UPDATE, 0)      ->  "+OK ... signing off", POP3_REQ_CLOSE
 */
#ifndef MPB_POP3_H
#define MPB_POP3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/obuf.h"

/* RFC 2449 3: a command line is at most 255 octets with its CRLF. */
#define POP3_LINE_MAX 255
#define POP3_REPLY_ROOM 512
/* UIDL: 1..70 characters in 0x21..0x7E (RFC 1939 7). */
#define POP3_UID_MAX 70
/* The 20th -ERR of a session is followed by "-ERR Too many errors" and the
 * close (as SMTP_MAX_ERRORS). */
#define POP3_MAX_ERRORS 20

struct pop3_msg {
	uint64_t size;                 /* exact octets of the stored message */
	char uid[POP3_UID_MAX + 1];
	bool deleted;                  /* DELE marks; RSET clears */
	bool plain;                    /* no line starts with "." and it ends in
	                                  CRLF: RETR may send the file as is */
};

struct pop3_domain {
	const char *name;              /* lower-case */
};

struct pop3_policy {
	const char *hostname;
	const struct pop3_domain *domains;
	unsigned ndomains;
	bool allow_plaintext_auth;     /* credentials before TLS */
};

enum pop3_req {
	POP3_REQ_NONE,
	POP3_REQ_STLS,     /* "+OK" is in the obuf: flush, discard unconsumed input,
	                      handshake, complete(0 ok / <0 failed) */
	POP3_REQ_AUTH,     /* check pop3_auth_*(): complete 0 ok, <0 bad (the
	                      core applies the failure delay before completing) */
	POP3_REQ_OPEN,     /* lock + snapshot the maildrop of pop3_auth_domain():
	                      core calls pop3_set_maildrop() then complete(0);
	                      <0 -> -ERR [IN-USE] (-EAGAIN) or [SYS/TEMP] */
	POP3_REQ_RETR,     /* stream message pop3_retr_index(), limited to
	                      pop3_retr_lines() body lines (-1 = all). Nothing is
	                      in the obuf: once the file is open the core calls
	                      pop3_retr_ok() (appends "+OK ..."), streams, and
	                      completes 0 when the terminator is queued. Open
	                      failed (no pop3_retr_ok): complete <0 -> "-ERR no
	                      such message (removed by another tool)" for
	                      -ENOENT, "-ERR [SYS/TEMP] ..." otherwise, and the
	                      session goes on. <0 after pop3_retr_ok (read error
	                      mid-stream): the machine returns POP3_REQ_CLOSE */
	POP3_REQ_UPDATE,   /* QUIT in TRANSACTION: remove the messages marked
	                      deleted; complete(0) -> "+OK", <0 -> -ERR [SYS/TEMP];
	                      then complete returns POP3_REQ_CLOSE. Requested on
	                      every QUIT in TRANSACTION, even with nothing marked
	                      (the core's removal is then a no-op) */
	POP3_REQ_CLOSE,    /* flush and close */
};

/* Private to pop3.c: declared here only so that the session stays one flat
 * allocation (it overlays priv[]). */
struct pop3_priv {
	int64_t retr_lines;   /* TOP's limit, -1 for RETR */
	uint32_t retr_index;  /* 0-based */
	uint32_t list_next;   /* the listing in progress: next message */
	int32_t user_domain;  /* USER's identity (-1 unknown) */
	int32_t pend_domain;  /* during AUTH and OPEN */
	uint16_t pass_len;    /* the password in line[] during AUTH */
	uint8_t req;          /* the request outstanding, if any */
	uint8_t list;         /* the listing in progress: 0, 'L' or 'U' */
	uint8_t errors;       /* -ERR replies so far */
	bool have_user;       /* USER given, PASS may follow */
	bool discard_line;    /* skipping the rest of an over-long line */
	bool closing;         /* too many errors: close */
	bool retr_ok;         /* pop3_retr_ok() was called */
	bool retr_top;        /* the RETR request is for TOP */
};

struct pop3_session {
	const struct pop3_policy *pol;
	uint8_t state;          /* private */
	bool tls;
	bool tls_available;     /* advertise STLS */
	int auth_domain;        /* -1 until logged in */
	unsigned auth_failures;
	struct pop3_msg *msgs;  /* snapshot, owned by the core */
	unsigned nmsgs;
	/* private parser state */
	uint16_t linelen;
	char line[POP3_LINE_MAX + 2];
	union {
		uint64_t priv[8];
		struct pop3_priv p;
	};
};

void pop3_start(struct pop3_session *s, struct obuf *out);
enum pop3_req pop3_feed(struct pop3_session *s, const char *in, size_t n, size_t *used,
			struct obuf *out);
enum pop3_req pop3_complete(struct pop3_session *s, enum pop3_req req, int result,
			    struct obuf *out);
/* For POP3_REQ_OPEN: the snapshot (owned by the core; freed after close). */
void pop3_set_maildrop(struct pop3_session *s, struct pop3_msg *msgs, unsigned n);
/* Long listings (LIST, UIDL with no argument) continue across calls: while
 * this is true the core calls pop3_feed again (with n = 0 if it has no input)
 * once the obuf has drained. */
bool pop3_output_pending(const struct pop3_session *s);

int pop3_auth_domain(const struct pop3_session *s);
const char *pop3_auth_password(const struct pop3_session *s, size_t *len);
unsigned pop3_retr_index(const struct pop3_session *s);     /* 0-based */
long pop3_retr_lines(const struct pop3_session *s);         /* -1 = whole */
/* During POP3_REQ_RETR, once the message file is open: appends "+OK <size>
 * octets" (RETR) or "+OK top of message follows" (TOP). Needs 64 bytes of
 * obuf room (the core calls it before any message text, so it has them). */
void pop3_retr_ok(struct pop3_session *s, struct obuf *out);
/* Idle timeout: appends "-ERR Disconnected for inactivity"; the core then
 * closes (no UPDATE: SPEC 7). */
void pop3_timeout(struct pop3_session *s, struct obuf *out);

/* Dot-stuffing of a stored message, streaming: feed the file in chunks of
 * any size; out receives the stuffed bytes. TOP: after the header block,
 * only `lines` body lines pass (-1: all). pop3_stuff_end appends the final
 * CRLF if the message did not end in one, then ".\r\n". Returns the bytes of
 * in consumed (less than n only when out is full). */
struct pop3_stuffer {
	long lines;       /* body lines still allowed, -1 = unlimited */
	uint8_t state;    /* private */
	bool done;        /* TOP limit reached: the rest of the file is skipped */
};
void pop3_stuff_init(struct pop3_stuffer *st, long lines);
size_t pop3_stuff(struct pop3_stuffer *st, const char *in, size_t n, struct obuf *out);
void pop3_stuff_end(struct pop3_stuffer *st, struct obuf *out); /* needs 5 bytes */
/* RETR without a line limit: the n octets at buf (read straight into the
 * output buffer) are stuffed in place; returns the new length, at most
 * n + n/2 + 1 (a file of lines "." LF), which the caller must have room
 * for. No copy at all when no line starts with ".". Same state as
 * pop3_stuff: the two may alternate. */
size_t pop3_stuff_inplace(struct pop3_stuffer *st, char *buf, size_t n);

#endif
