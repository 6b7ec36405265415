#include "proto/smtp_reply.h"

#include <stdio.h>
#include <string.h>

/* RFC 2034 3: enhanced codes go on 2xx, 4xx and 5xx replies to commands, so
 * the greeting, the EHLO/HELO lines and the intermediate 354/334 have none. */
const struct smtp_reply_def smtp_replies[SMTP_R_COUNT] = {
	[SMTP_R_GREETING] = {220, NULL, "%s ESMTP mailpopbox"},
	[SMTP_R_HELO] = {250, NULL, "%s"},
	[SMTP_R_OK] = {250, "2.0.0", "Ok"},
	[SMTP_R_MAIL_OK] = {250, "2.1.0", "Ok"},
	[SMTP_R_RCPT_OK] = {250, "2.1.5", "Ok"},
	[SMTP_R_QUEUED] = {250, "2.0.0", "Ok: queued as %s"},
	[SMTP_R_BDAT_OK] = {250, "2.0.0", "%s octets received"},
	[SMTP_R_DATA_GO] = {354, NULL, "End data with <CR><LF>.<CR><LF>"},
	[SMTP_R_BYE] = {221, "2.0.0", "Bye"},
	[SMTP_R_HELP] = {214, "2.0.0",
			 "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY "
			 "STARTTLS AUTH"},
	[SMTP_R_VRFY] = {252, "2.5.0", "Cannot VRFY user"},
	[SMTP_R_STARTTLS_GO] = {220, "2.0.0", "Ready to start TLS"},
	/* RFC 4954 4: PLAIN has an empty challenge, so "334 " and nothing. */
	[SMTP_R_AUTH_CONT] = {334, NULL, ""},
	[SMTP_R_AUTH_OK] = {235, "2.7.0", "Authentication successful"},

	[SMTP_R_UNKNOWN] = {500, "5.5.1", "Command unrecognized"},
	[SMTP_R_LINE_TOO_LONG] = {500, "5.5.2", "Line too long"},
	[SMTP_R_BARE_LF] = {500, "5.5.2", "Bare LF not allowed"},
	[SMTP_R_NUL] = {500, "5.5.2", "NUL not allowed"},
	[SMTP_R_SYNTAX] = {501, "5.5.4", "Syntax error in parameters or arguments"},
	[SMTP_R_NEED_HELO] = {503, "5.5.1", "Send HELO or EHLO first"},
	[SMTP_R_NEED_EHLO] = {503, "5.5.1", "Send EHLO first"},
	[SMTP_R_NESTED_MAIL] = {503, "5.5.1", "Nested MAIL command"},
	[SMTP_R_NEED_MAIL] = {503, "5.5.1", "Need MAIL command"},
	[SMTP_R_NEED_RCPT] = {503, "5.5.1", "Need RCPT command"},
	/* RFC 3030 2 and 3: DATA and BDAT do not mix in one transaction, and
	   BODY=BINARYMIME can only travel by BDAT. */
	[SMTP_R_DATA_AFTER_BDAT] = {503, "5.5.1", "DATA not allowed after BDAT"},
	[SMTP_R_DATA_BINARY] = {503, "5.5.1", "BODY=BINARYMIME needs BDAT"},
	[SMTP_R_IN_TX] = {503, "5.5.1", "Not allowed during a mail transaction"},
	[SMTP_R_EXPN] = {502, "5.5.1", "EXPN not supported"},

	[SMTP_R_BAD_SENDER] = {501, "5.1.7", "Bad sender address syntax"},
	[SMTP_R_BAD_RCPT] = {501, "5.1.3", "Bad recipient address syntax"},
	[SMTP_R_PARAM_UNKNOWN] = {555, "5.5.4", "Unsupported parameter"},
	[SMTP_R_PARAM_DUP] = {501, "5.5.4", "Duplicate parameter"},
	[SMTP_R_PARAM_BAD] = {501, "5.5.4", "Bad parameter value"},
	/* RFC 1870 6.1 */
	[SMTP_R_SIZE_EXCEEDED] = {552, "5.3.4", "Message size exceeds fixed limit"},
	[SMTP_R_SENDER_LOCAL] = {550, "5.7.1", "Sender address rejected: authentication required"},
	[SMTP_R_SENDER_NOT_OWNED] = {550, "5.7.1", "Sender address rejected: not owned by user"},
	[SMTP_R_RCPT_BLOCKED] = {550, "5.1.1", "Recipient address rejected: mailbox unavailable"},
	[SMTP_R_RELAY_DENIED] = {550, "5.7.1", "Relay access denied"},
	[SMTP_R_TOO_MANY_RCPT] = {452, "4.5.3", "Too many recipients"},
	[SMTP_R_NO_STORAGE] = {452, "4.3.1", "Insufficient system storage"},

	[SMTP_R_MSG_TOO_BIG] = {552, "5.3.4", "Message too big"},
	[SMTP_R_MSG_BARE_CRLF] = {550, "5.6.0", "Message contains bare CR or LF"},
	[SMTP_R_LOCAL_ERROR] = {451, "4.3.0", "Local error in processing"},

	[SMTP_R_TLS_ACTIVE] = {503, "5.5.1", "TLS already active"},
	[SMTP_R_TLS_UNAVAILABLE] = {502, "5.5.1", "STARTTLS not available"},
	/* RFC 4954 6 */
	[SMTP_R_AUTH_AGAIN] = {503, "5.5.1", "Already authenticated"},
	[SMTP_R_AUTH_NEED_TLS] = {538, "5.7.11",
				  "Encryption required for requested authentication mechanism"},
	[SMTP_R_AUTH_MECH] = {504, "5.5.4", "Unrecognized authentication type"},
	[SMTP_R_AUTH_CANCELLED] = {501, "5.5.2", "Authentication cancelled"},
	[SMTP_R_AUTH_BAD_B64] = {501, "5.5.2", "Cannot decode response"},
	[SMTP_R_AUTH_TOO_LONG] = {500, "5.5.6", "Authentication Exchange line is too long"},
	[SMTP_R_AUTH_TEMP] = {454, "4.7.0", "Temporary authentication failure"},
	[SMTP_R_AUTH_FAILED] = {535, "5.7.8", "Authentication credentials invalid"},
	[SMTP_R_AUTH_REQUIRED] = {530, "5.7.0", "Authentication required"},

	[SMTP_R_TOO_MANY_ERRORS] = {421, "4.7.0", "Too many errors"},
	[SMTP_R_TIMEOUT] = {421, "4.4.2", "%s Error: timeout exceeded"},
	[SMTP_R_SHUTDOWN] = {421, "4.3.2", "%s Service shutting down"},
	[SMTP_R_DESYNC] = {421, "4.5.0", "%s Lost the BDAT chunk boundary, closing"},
	[SMTP_R_INTERNAL] = {421, "4.3.0", "%s Internal error, closing"},
};

void smtp_reply_put(struct obuf *out, enum smtp_reply r, const char *arg, bool more)
{
	const struct smtp_reply_def *d = &smtp_replies[r];
	char head[16];
	int n = snprintf(head, sizeof head, "%03u%c", d->code, more ? '-' : ' ');
	obuf_put(out, head, (size_t)n);
	if (d->esc) {
		obuf_puts(out, d->esc);
		obuf_put(out, " ", 1);
	}
	const char *pct = strstr(d->text, "%s");
	if (pct) {
		obuf_put(out, d->text, (size_t)(pct - d->text));
		obuf_puts(out, arg ? arg : "");
		obuf_puts(out, pct + 2);
	} else {
		obuf_puts(out, d->text);
	}
	obuf_put(out, "\r\n", 2);
}
