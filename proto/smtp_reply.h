/*
 * smtp_reply: every reply the SMTP server sends, in one table, each with its
 * reply code (RFC 5321 4.2) and enhanced status code (RFC 3463, RFC 2034).
 *
 * A reply's text may hold one "%s", replaced by the single string argument
 * (the hostname, a queue id, an octet count). It is a plain substitution,
 * not printf: client input never reaches a format string.
 */
#ifndef MPB_SMTP_REPLY_H
#define MPB_SMTP_REPLY_H

#include <stdbool.h>

#include "proto/obuf.h"

enum smtp_reply {
	/* positive */
	SMTP_R_GREETING,
	SMTP_R_HELO,
	SMTP_R_OK,
	SMTP_R_MAIL_OK,
	SMTP_R_RCPT_OK,
	SMTP_R_QUEUED,
	SMTP_R_BDAT_OK,
	SMTP_R_DATA_GO,
	SMTP_R_BYE,
	SMTP_R_HELP,
	SMTP_R_VRFY,
	SMTP_R_STARTTLS_GO,
	SMTP_R_AUTH_CONT,
	SMTP_R_AUTH_OK,
	/* command syntax and sequence */
	SMTP_R_UNKNOWN,
	SMTP_R_LINE_TOO_LONG,
	SMTP_R_BARE_LF,
	SMTP_R_NUL,
	SMTP_R_SYNTAX,
	SMTP_R_NEED_HELO,
	SMTP_R_NEED_EHLO,
	SMTP_R_NESTED_MAIL,
	SMTP_R_NEED_MAIL,
	SMTP_R_NEED_RCPT,
	SMTP_R_DATA_AFTER_BDAT,
	SMTP_R_DATA_BINARY,
	SMTP_R_IN_TX,
	SMTP_R_EXPN,
	/* addresses and parameters */
	SMTP_R_BAD_SENDER,
	SMTP_R_BAD_RCPT,
	SMTP_R_PARAM_UNKNOWN,
	SMTP_R_PARAM_DUP,
	SMTP_R_PARAM_BAD,
	SMTP_R_SIZE_EXCEEDED,
	SMTP_R_SENDER_LOCAL,
	SMTP_R_SENDER_NOT_OWNED,
	SMTP_R_RCPT_BLOCKED,
	SMTP_R_RELAY_DENIED,
	SMTP_R_TOO_MANY_RCPT,
	SMTP_R_NO_STORAGE,
	/* message */
	SMTP_R_MSG_TOO_BIG,
	SMTP_R_MSG_BARE_CRLF,
	SMTP_R_LOCAL_ERROR,
	/* TLS and AUTH */
	SMTP_R_TLS_ACTIVE,
	SMTP_R_TLS_UNAVAILABLE,
	SMTP_R_AUTH_AGAIN,
	SMTP_R_AUTH_NEED_TLS,
	SMTP_R_AUTH_MECH,
	SMTP_R_AUTH_CANCELLED,
	SMTP_R_AUTH_BAD_B64,
	SMTP_R_AUTH_TOO_LONG,
	SMTP_R_AUTH_TEMP,
	SMTP_R_AUTH_FAILED,
	SMTP_R_AUTH_REQUIRED,
	/* closing */
	SMTP_R_TOO_MANY_ERRORS,
	SMTP_R_TIMEOUT,
	SMTP_R_SHUTDOWN,
	SMTP_R_DESYNC,
	SMTP_R_INTERNAL,
	SMTP_R_COUNT
};

struct smtp_reply_def {
	unsigned short code; /* RFC 5321 4.2.3 */
	const char *esc;     /* RFC 3463 class.subject.detail, or NULL */
	const char *text;    /* may contain one %s */
};

extern const struct smtp_reply_def smtp_replies[SMTP_R_COUNT];

/* Appends "CODE ESC TEXT\r\n" ("CODE-..." when more is true: a line of a
 * multi-line reply, RFC 5321 4.2.1). arg replaces %s; NULL is "". */
void smtp_reply_put(struct obuf *out, enum smtp_reply r, const char *arg, bool more);

/* 4xx and 5xx: the replies SMTP_MAX_ERRORS counts. */
static inline bool smtp_reply_is_error(enum smtp_reply r) { return smtp_replies[r].code >= 400; }

#endif
