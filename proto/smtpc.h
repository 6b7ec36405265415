/*
 * smtpc: the SMTP client dialogue of the relay (RFC 5321, 1870, 2920, 3207,
 * 3461, 6152, 6531, 2034) as a pure state machine: one message, to the
 * recipients of one domain, over one connection.
 *
 * Same driving style as the server machine (proto/smtp.h): the core feeds
 * the bytes the server sent; the machine appends commands to an obuf, says
 * how much input it used, and returns at most one request for something only
 * the core can do. No syscalls, no clock, no allocation: the recipients and
 * their result fields belong to the caller.
 *
 *   core                                   machine
 *   smtpc_start()                      ->  (waits for the greeting)
 *   smtpc_feed("220 mx ESMTP\r\n")     ->  "EHLO me"
 *   smtpc_feed("250-mx\r\n250 ...")    ->  "MAIL FROM:<..>" "RCPT TO:<..>"...
 *   smtpc_feed("250 ..\r\n" x n)       ->  "DATA"
 *   smtpc_feed("354 go\r\n")           ->  SMTPC_REQ_BODY
 *   smtpc_body(file bytes) x k         ->  dot-stuffed text
 *   smtpc_complete(BODY, 0)            ->  "." (the end of the message)
 *   smtpc_feed("250 queued\r\n")       ->  results decided, "QUIT"
 *   smtpc_feed("221 bye\r\n")          ->  SMTPC_REQ_CLOSE
 *
 * The request protocol:
 *   SMTPC_REQ_NONE      nothing to do but flush the obuf and read more.
 *                       After the obuf was flushed, call smtpc_feed() again
 *                       (with n = 0 if nothing arrived): a pipelined batch
 *                       larger than the obuf is written in parts.
 *   SMTPC_REQ_STARTTLS  the server said 220 to STARTTLS. Flush the obuf,
 *                       discard every unused input octet (RFC 3207 6: a
 *                       server's plaintext cannot be trusted past this
 *                       point), handshake, then smtpc_complete(result: 0
 *                       ok, <0 failed). On failure every undecided recipient
 *                       fails temporarily (4.7.5) and CLOSE follows; with
 *                       relay.tls = opportunistic the core may try the host
 *                       again without TLS.
 *   SMTPC_REQ_BODY      the server said 354. Stream the queued message file
 *                       (CRLF lines, no stuffing) through smtpc_body(),
 *                       flushing as needed, then smtpc_complete(result 0);
 *                       the machine then ends the data with ".". A read
 *                       error: complete with <0, the machine gives up on the
 *                       connection (temporary failure, CLOSE: the message
 *                       must not be ended by a "." the server would take).
 *   SMTPC_REQ_CLOSE     flush the obuf, close the connection. Every
 *                       recipient is decided (smtpc_done() is true).
 *   SMTPC_REQ_IDLE      only when the core set s->keep: the end of data was
 *                       answered (any reply but 421), every recipient is
 *                       decided, and the connection may carry another
 *                       message: smtpc_next() starts one (its MAIL goes out
 *                       at the next smtpc_feed(), n = 0 is fine; no RSET
 *                       is needed, RFC 5321 4.1.1.4), smtpc_quit() ends the
 *                       session (feed until CLOSE), or the core just closes.
 *                       A connection the server dropped while idle shows at
 *                       the next message as a failure before MAIL was
 *                       answered (try_next_mx): the core then tries again
 *                       on a new connection.
 * While STARTTLS or BODY is outstanding the core feeds nothing.
 *
 * Time: the machine names what it waits for and how long it may take
 * (RFC 5321 4.5.3.2); smtpc_wait() returns it with a sequence number that
 * changes whenever a new wait starts, so the core re-arms its timer when the
 * number changes (for SMTPC_W_BODY: after each block it sent). When the timer
 * fires the core calls smtpc_timeout(). When the connection breaks (EOF,
 * reset, TLS error) it calls smtpc_eof(). Both return SMTPC_REQ_CLOSE.
 *
 * Results: each recipient ends as DELIVERED (2xx to the end of data), TEMP
 * (4xx at any stage, or no usable connection) or PERM (5xx, or a local
 * refusal: over the remote SIZE, 8-bit or UTF-8 content the server cannot
 * take). code/status/diag say why: code is the remote reply code (0 when
 * decided locally), status its RFC 3463 code (from the reply if it carries
 * one, else derived from the reply code), diag the full reply text, lines
 * joined with one space, or the local reason. stage says which command drew
 * the reply, for "in reply to ..." in logs and DSNs. A recipient DELIVERED to
 * a server that did not offer DSN (!(ext & SMTPC_EXT_DSN)) was "relayed" in
 * the sense of RFC 3461 5.2.2. The obuf must hold at least SMTPC_CMD_ROOM.
 */
#ifndef MPB_SMTPC_H
#define MPB_SMTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/obuf.h"
#include "proto/smtp.h" /* SMTP_NOTIFY_*, enum smtp_ret */

/* RFC 5321 4.5.3.1.5: a reply line is at most 512 octets with its CRLF. */
#define SMTPC_LINE_MAX 512
/* The room the machine wants free in the obuf before it writes a command:
 * a RCPT line with NOTIFY and ORCPT (RFC 3461 4: up to 500 octets more than
 * the 512 of RFC 5321). */
#define SMTPC_CMD_ROOM 1100
/* Room for a whole reply's text, lines joined; longer is cut. */
#define SMTPC_DIAG_MAX 1024

enum smtpc_tls {
	SMTPC_TLS_OPPORTUNISTIC, /* STARTTLS when offered; plaintext otherwise */
	SMTPC_TLS_REQUIRED,	 /* no STARTTLS offered or refused: temporary failure */
	SMTPC_TLS_NONE,		 /* never */
};

struct smtpc_policy {
	const char *hostname; /* our name, for EHLO/HELO */
	enum smtpc_tls tls;
};

enum smtpc_result {
	SMTPC_PENDING,	 /* undecided (private: ACCEPTED too, until the end of data) */
	SMTPC_DELIVERED, /* 2xx to the end of data */
	SMTPC_TEMP,	 /* retry later */
	SMTPC_PERM,	 /* give up: DSN */
};

/* What the machine waits for; also the stage of a result. */
enum smtpc_wait {
	SMTPC_W_NONE,	  /* nothing (closed, or between a request and its completion) */
	SMTPC_W_GREETING, /* 5 min */
	SMTPC_W_EHLO,	  /* EHLO or HELO: 5 min (as MAIL) */
	SMTPC_W_STARTTLS, /* the STARTTLS reply, then the handshake: 5 min */
	SMTPC_W_MAIL,	  /* 5 min */
	SMTPC_W_RCPT,	  /* 5 min */
	SMTPC_W_DATA,	  /* DATA initiation: 2 min */
	SMTPC_W_BODY,	  /* each data block sent: 3 min */
	SMTPC_W_DOT,	  /* DATA termination: 10 min */
	SMTPC_W_QUIT,	  /* 1 min; nothing is pending by then */
};

struct smtpc_rcpt {
	/* in: set by the core */
	const char *addr;  /* without <> */
	const char *orcpt; /* "addr-type;decoded value" (as smtp_rcpt.orcpt), or NULL */
	uint8_t notify;	   /* SMTP_NOTIFY_* bits, 0 = not given */
	/* out: set by the machine */
	uint8_t result;	 /* enum smtpc_result */
	uint8_t stage;	 /* enum smtpc_wait: the command that drew the reply */
	uint8_t priv;	 /* private to smtpc.c */
	uint16_t code;	 /* remote reply code; 0 = decided locally */
	char status[16]; /* "5.1.1" */
	char diag[SMTPC_DIAG_MAX];
};

/* The message; owned by the core, read-only for the machine except the
 * result fields of rcpt. */
struct smtpc_msg {
	const char *from;  /* "" for <> */
	const char *envid; /* decoded ENVID, or NULL */
	enum smtp_ret ret;
	uint64_t size;	/* the queued file's size: SIZE= (RFC 1870) */
	bool body_8bit; /* needs BODY=8BITMIME (RFC 6152) */
	bool smtputf8;	/* needs SMTPUTF8 (RFC 6531), besides any non-ASCII address */
	struct smtpc_rcpt *rcpt;
	unsigned nrcpt;
};

/* Service extensions the server offered (the last EHLO counts). */
enum {
	SMTPC_EXT_PIPELINING = 1 << 0,
	SMTPC_EXT_SIZE = 1 << 1,
	SMTPC_EXT_STARTTLS = 1 << 2,
	SMTPC_EXT_DSN = 1 << 3,
	SMTPC_EXT_8BITMIME = 1 << 4,
	SMTPC_EXT_SMTPUTF8 = 1 << 5,
	SMTPC_EXT_CHUNKING = 1 << 6,
	SMTPC_EXT_ENHANCEDSTATUSCODES = 1 << 7,
};

enum smtpc_req {
	SMTPC_REQ_NONE,
	SMTPC_REQ_STARTTLS,
	SMTPC_REQ_BODY,
	SMTPC_REQ_CLOSE,
	SMTPC_REQ_IDLE,
};

/* A streaming dot-stuffer for message text (RFC 5321 4.5.2): a "." that
 * starts a line is doubled; a bare LF or a bare CR becomes CRLF, so the data
 * is CRLF lines whatever the file holds. Chunks may be cut anywhere. */
struct smtpc_stuffer {
	uint8_t state; /* private */
};
void smtpc_stuff_init(struct smtpc_stuffer *st);
/* Returns the octets of in consumed: fewer than n only when out is full
 * (each input octet may need up to 3 octets of room). */
size_t smtpc_stuff(struct smtpc_stuffer *st, const char *in, size_t n, struct obuf *out);
/* Ends the last line if it was not, then ".\r\n". Needs 5 octets of room. */
void smtpc_stuff_end(struct smtpc_stuffer *st, struct obuf *out);

struct smtpc_session {
	const struct smtpc_policy *pol;
	struct smtpc_msg *msg;
	uint32_t ext;	      /* SMTPC_EXT_* */
	uint64_t remote_size; /* SIZE n; 0 = no limit stated */
	bool tls;	      /* set by smtpc_complete(STARTTLS, 0) */
	bool keep;	      /* set by the core: idle after a message, not QUIT */
	bool esmtp;	      /* EHLO was accepted (not HELO) */
	/* True when the failure concerned the host rather than the message
	 * (no greeting, EHLO refused, TLS, timeout or lost connection before
	 * MAIL was answered): RFC 5321 5.1 says try the next MX host. */
	bool try_next_mx;
	/* private: see smtpc.c */
	uint8_t state;
	uint8_t wait; /* enum smtpc_wait */
	uint8_t want; /* the command owed, written when the obuf has room */
	bool mail_answered;
	bool mail_ok;
	bool data_piped; /* DATA ended the pipelined batch; its reply is owed */
	uint32_t wait_seq;
	uint32_t outstanding; /* commands written, replies not yet read */
	int send_cur;	      /* -1 = MAIL, i = rcpt[i], nrcpt = all sent */
	int reply_cur;	      /* same, for the next reply */
	unsigned naccepted;
	struct smtpc_stuffer stuff;
	uint16_t mail_code; /* a refused MAIL: its reply decides every recipient */
	char mail_status[16];
	/* the reply being read */
	uint16_t code;
	uint16_t linelen;
	uint16_t replylen;
	uint32_t nlines;
	uint32_t ext_new;
	uint64_t size_new;
	char status[16]; /* of the reply being read */
	char line[SMTPC_LINE_MAX + 1];
	char reply[SMTPC_DIAG_MAX]; /* the current reply, lines joined */
	char mail_reply[SMTPC_DIAG_MAX];
};

/* Sets up S (zeroed by the caller) for MSG with POL; the machine then waits
 * for the greeting. Every recipient's result is reset to PENDING. */
void smtpc_start(struct smtpc_session *s, const struct smtpc_policy *pol, struct smtpc_msg *msg);

/* After SMTPC_REQ_IDLE: true until smtpc_next() or smtpc_quit(). */
bool smtpc_idle(const struct smtpc_session *s);
/* After SMTPC_REQ_IDLE: the next message on the same connection, with the
 * extensions of the EHLO already made. Its recipients' results are reset.
 * Does nothing unless idle. */
void smtpc_next(struct smtpc_session *s, struct smtpc_msg *msg);
/* After SMTPC_REQ_IDLE: QUIT at the next smtpc_feed(). */
void smtpc_quit(struct smtpc_session *s);

/* Consumes up to n octets of in (the server's replies); *used says how many.
 * Stops early when it returns a request, or when the obuf is short of
 * SMTPC_CMD_ROOM; unused octets must be fed again later (except after
 * STARTTLS, see above). n = 0 just lets it write what it still owes. */
enum smtpc_req smtpc_feed(struct smtpc_session *s, const char *in, size_t n, size_t *used,
			  struct obuf *out);

/* During SMTPC_REQ_BODY: dot-stuffs the next octets of the message into
 * out. Returns the octets consumed (fewer than n when out is full). */
size_t smtpc_body(struct smtpc_session *s, const char *in, size_t n, struct obuf *out);

/* The outcome of the request last returned (STARTTLS or BODY). */
enum smtpc_req smtpc_complete(struct smtpc_session *s, enum smtpc_req req, int result,
			      struct obuf *out);

/* The deadline in force: what is awaited, *seconds (0 = none), *seq. */
enum smtpc_wait smtpc_wait(const struct smtpc_session *s, unsigned *seconds, uint32_t *seq);

/* The deadline passed / the connection is gone: every undecided recipient
 * fails temporarily (4.4.2). No QUIT is sent. Returns SMTPC_REQ_CLOSE. */
enum smtpc_req smtpc_timeout(struct smtpc_session *s);
enum smtpc_req smtpc_eof(struct smtpc_session *s);

/* True once every recipient is decided (QUIT may still be in flight). */
bool smtpc_done(const struct smtpc_session *s);

/* The core's own verdict for every recipient of M, no server involved
 * (DNS, no host to try): code 0, stage NONE, the diagnostic from FMT. */
void smtpc_decide_local(struct smtpc_msg *m, enum smtpc_result res, const char *status,
			const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "EHLO", "MAIL FROM" ...: the command of a stage, for log lines. */
const char *smtpc_stage_name(enum smtpc_wait w);

/* Encodes p as xtext (RFC 3461 4) into out, NUL-terminated; returns its
 * length, or -1 when cap is too small. */
long smtpc_xtext_encode(const char *p, size_t n, char *out, size_t cap);

#endif
