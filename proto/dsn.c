#include "proto/dsn.h"
#include "proto/date.h"
#include "proto/wr.h"

#include <stdio.h>
#include <string.h>

#include "proto/addr.h"

/* --- output: counts what it would need even past cap, writes only within */

static const char HEX[] = "0123456789ABCDEF";

/* Concatenates NULL-terminated string pieces. */
static void putv(struct wr *w, const char *const *v)
{
	for (; *v; v++)
		wr_puts(w, *v);
}
#define PUTS(w, ...) putv(w, (const char *const[]){__VA_ARGS__, NULL})

/* --- folding (RFC 5322 2.2.3): words of remote text, joined by one space,
 * wrapped before column 78 where a space allows and before 998 always. */

#define FOLD_AT 78
#define HARD_AT 900 /* well under 998, leaving room for the fold itself */

static bool is_sep(unsigned char c)
{
	return c <= ' ' || c == 0x7f;
}

/* Appends the words of s[0..n) (any run of white space or control octets
 * separates words), each non-ASCII octet as '?' when ascii, continuing
 * lines with cont ("\r\n " in a header, "\r\n    " in text). */
static void put_words(struct wr *w, const char *s, size_t n, const char *cont, bool ascii,
		      bool first_glued)
{
	size_t i = 0, cl = strlen(cont) - 2;
	bool first = true;
	while (i < n) {
		while (i < n && is_sep((unsigned char)s[i]))
			i++;
		size_t b = i;
		while (i < n && !is_sep((unsigned char)s[i]))
			i++;
		if (i == b) break;
		size_t wl = i - b;
		if (!(first && first_glued)) {
			if (!first && w->col + 1 + wl > FOLD_AT && w->col > cl)
				wr_puts(w, cont);
			else if (!first || w->col > 0)
				wr_put(w, " ", 1);
		}
		first = false;
		for (size_t k = b; k < i; k++) {
			if (w->col >= HARD_AT) wr_puts(w, cont);
			char c = s[k];
			if (ascii && (unsigned char)c >= 0x80) c = '?';
			wr_put(w, &c, 1);
		}
	}
}

/* --- addresses in delivery-status fields (RFC 3464 2.3.2, RFC 6533 3) */

static bool plain_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f) return false;
	return true;
}

/* "TYPE; address": rfc822 (or the ORCPT's own type) when the address is
 * printable ASCII; otherwise "utf-8" with utf-8-addr-xtext, every octet
 * outside it written as \x{HEX} of its code point (U+FFFD for an octet
 * that is not UTF-8). */
static void put_typed_addr(struct wr *w, const char *type, size_t tlen, const char *a)
{
	if (plain_ascii(a)) {
		wr_put(w, type, tlen);
		wr_put(w, "; ", 2);
		put_words(w, a, strlen(a), "\r\n ", true, true);
		return;
	}
	wr_puts(w, "utf-8; ");
	const unsigned char *p = (const unsigned char *)a;
	size_t n = strlen(a);
	for (size_t i = 0; i < n;) {
		if (w->col >= HARD_AT) wr_puts(w, "\r\n ");
		unsigned char c = p[i];
		if (c > ' ' && c < 0x7f && c != '+' && c != '=' && c != '\\') {
			wr_put(w, &c, 1);
			i++;
			continue;
		}
		uint32_t cp = c;
		size_t l = c >= 0x80 ? addr_utf8_len(p + i, n - i) : 1;
		if (l == 0) {
			cp = 0xFFFD;
			l = 1;
		} else if (l > 1) {
			cp = c & (0x7f >> l);
			for (size_t k = 1; k < l; k++)
				cp = (cp << 6) | (p[i + k] & 0x3f);
		}
		char x[16];
		int k = snprintf(x, sizeof x, "\\x{%02X}", (unsigned)cp);
		wr_put(w, x, (size_t)k);
		i += l;
	}
}

/* --- validation */

static bool good_token(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > DSN_TOKEN_MAX) return false;
	for (size_t i = 0; i < n; i++) {
		char c = t[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* Header-safe: no controls, no space, not empty (UTF-8 allowed: RFC 6532). */
static bool good_word(const char *s)
{
	if (!s || !*s || strlen(s) > 255) return false;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f) return false;
	return true;
}

/* RFC 3463 2: class "." subject "." detail, class 2, 4 or 5, 1-3 digits. */
static bool good_status(const char *s)
{
	if (s[0] != '2' && s[0] != '4' && s[0] != '5') return false;
	if (s[1] != '.') return false;
	s += 2;
	for (int part = 0; part < 2; part++) {
		int d = 0;
		while (*s >= '0' && *s <= '9' && d < 4)
			s++, d++;
		if (d == 0 || d > 3) return false;
		if (part == 0 && *s++ != '.') return false;
	}
	return *s == 0;
}

static const char *status_of(const struct dsn_rcpt *rc)
{
	if (rc->status) return rc->status;
	return rc->action == DSN_FAILED ? "5.0.0" : rc->action == DSN_DELAYED ? "4.0.0" : "2.0.0";
}

static int check(const struct dsn_report *r)
{
	if (!r->nrcpt || !r->rcpt || !r->token || !good_token(r->token) ||
	    !good_word(r->reporting_mta) || !good_word(r->sender))
		return DSN_EINVAL;
	for (unsigned i = 0; i < r->nrcpt; i++) {
		const struct dsn_rcpt *rc = &r->rcpt[i];
		if (!rc->addr || !*rc->addr || (unsigned)rc->action > DSN_EXPANDED ||
		    !good_status(status_of(rc)))
			return DSN_EINVAL;
	}
	return DSN_OK;
}

static bool any_action(const struct dsn_report *r, enum dsn_action a)
{
	for (unsigned i = 0; i < r->nrcpt; i++)
		if (r->rcpt[i].action == a) return true;
	return false;
}

static bool any_nonascii(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s >= 0x80) return true;
	return false;
}

bool dsn_headers_only(const struct dsn_report *r)
{
	if (r->ret == SMTP_RET_FULL) return false;
	if (r->ret == SMTP_RET_HDRS) return true;
	return !any_action(r, DSN_FAILED);
}

static int finish(struct wr *w, size_t *len)
{
	*len = w->len;
	return w->over ? DSN_ENOSPC : DSN_OK;
}

static void put_boundary(struct wr *w, const struct dsn_report *r)
{
	wr_puts(w, "=_mpb_");
	wr_puts(w, r->token);
	wr_puts(w, "_=");
}

/* --- the human-readable part */

static const char *action_word(enum dsn_action a)
{
	static const char *const words[] = {"failed", "delayed", "delivered", "relayed",
					    "expanded"};
	return words[a];
}

static void put_text(struct wr *w, const struct dsn_report *r, bool hdrs)
{
	PUTS(w, "This is the mail system at host ", r->reporting_mta, ".\r\n\r\n");
	if (any_action(r, DSN_FAILED)) {
		wr_puts(w, "Your message could not be delivered to one or more recipients.\r\n");
		wr_puts(w, hdrs ? "Its headers are attached below.\r\n\r\n"
				: "It is attached below.\r\n\r\n");
	}
	if (any_action(r, DSN_DELAYED)) {
		int64_t until = 0;
		for (unsigned i = 0; i < r->nrcpt; i++)
			if (r->rcpt[i].action == DSN_DELAYED && r->rcpt[i].retry_until > until)
				until = r->rcpt[i].retry_until;
		wr_puts(w,
			"Your message has not yet been delivered to one or more recipients.\r\n");
		if (until) {
			wr_puts(w, "Delivery will be retried until ");
			wr_date(w, until, r->tz_off_min);
			wr_puts(w, ";\r\nyou need not send it again.\r\n\r\n");
		} else {
			wr_puts(w, "Delivery will be retried; you need not send it again.\r\n\r\n");
		}
	}
	if (any_action(r, DSN_DELIVERED) || any_action(r, DSN_EXPANDED))
		wr_puts(w,
			"Your message was delivered to the recipients marked delivered.\r\n\r\n");
	if (any_action(r, DSN_RELAYED))
		wr_puts(
		    w,
		    "Your message was passed on for the recipients marked relayed to a\r\n"
		    "system that does not report delivery; no further notice will come.\r\n\r\n");
	for (unsigned i = 0; i < r->nrcpt; i++) {
		const struct dsn_rcpt *rc = &r->rcpt[i];
		wr_puts(w, "<");
		put_words(w, rc->addr, strlen(rc->addr), "\r\n    ", false, true);
		PUTS(w, ">: ", action_word(rc->action), " (", status_of(rc), ")");
		if (rc->diagnostic) {
			wr_puts(w, "\r\n   ");
			if (rc->remote_mta) {
				wr_puts(w, " host");
				put_words(w, rc->remote_mta, strlen(rc->remote_mta), "\r\n    ",
					  true, false);
				wr_puts(w, " said:");
			}
			put_words(w, rc->diagnostic, strlen(rc->diagnostic), "\r\n    ", true,
				  false);
		}
		wr_puts(w, "\r\n");
	}
}

/* --- message/delivery-status (RFC 3464 2.2, 2.3) */

static void put_status(struct wr *w, const struct dsn_report *r)
{
	if (r->envid) { /* 2.2.1; printed as decoded, but never as raw octets */
		wr_puts(w, "Original-Envelope-Id: ");
		for (const char *p = r->envid; *p; p++) {
			unsigned char c = (unsigned char)*p;
			if (c > ' ' && c < 0x7f && c != '+' && c != '=')
				wr_put(w, &c, 1);
			else
				wr_put(w, (char[3]){'+', HEX[c >> 4], HEX[c & 15]}, 3); /* xtext */
			if (w->col >= HARD_AT) wr_puts(w, "\r\n ");
		}
		wr_puts(w, "\r\n");
	}
	PUTS(w, "Reporting-MTA: dns; ", r->reporting_mta, "\r\n");
	wr_puts(w, "Arrival-Date: ");
	wr_date(w, r->arrival, r->tz_off_min);
	wr_puts(w, "\r\n");
	for (unsigned i = 0; i < r->nrcpt; i++) {
		const struct dsn_rcpt *rc = &r->rcpt[i];
		wr_puts(w, "\r\n");
		if (rc->orcpt) { /* 2.3.1 */
			const char *semi = strchr(rc->orcpt, ';');
			wr_puts(w, "Original-Recipient: ");
			bool typed = semi && semi > rc->orcpt && semi - rc->orcpt <= 64;
			for (const char *t = rc->orcpt; typed && t < semi; t++)
				typed = (unsigned char)*t > ' ' && (unsigned char)*t < 0x7f;
			if (typed)
				put_typed_addr(w, rc->orcpt, (size_t)(semi - rc->orcpt), semi + 1);
			else
				put_typed_addr(w, "rfc822", 6, semi ? semi + 1 : rc->orcpt);
			wr_puts(w, "\r\n");
		}
		wr_puts(w, "Final-Recipient: "); /* 2.3.2 */
		put_typed_addr(w, "rfc822", 6, rc->addr);
		PUTS(w, "\r\nAction: ", action_word(rc->action), "\r\n");
		PUTS(w, "Status: ", status_of(rc), "\r\n");
		if (rc->remote_mta) { /* 2.3.5 */
			wr_puts(w, "Remote-MTA: dns;");
			put_words(w, rc->remote_mta, strlen(rc->remote_mta), "\r\n ", true, false);
			wr_puts(w, "\r\n");
		}
		if (rc->diagnostic) { /* 2.3.6 */
			wr_puts(w, rc->local ? "Diagnostic-Code: X-mailpopbox;"
					     : "Diagnostic-Code: smtp;");
			put_words(w, rc->diagnostic, strlen(rc->diagnostic), "\r\n ", true, false);
			wr_puts(w, "\r\n");
		}
		if (rc->last_attempt) { /* 2.3.7 */
			wr_puts(w, "Last-Attempt-Date: ");
			wr_date(w, rc->last_attempt, r->tz_off_min);
			wr_puts(w, "\r\n");
		}
		if (rc->action == DSN_DELAYED && rc->retry_until) { /* 3.3.8 */
			wr_puts(w, "Will-Retry-Until: ");
			wr_date(w, rc->retry_until, r->tz_off_min);
			wr_puts(w, "\r\n");
		}
	}
}

int dsn_prefix(const struct dsn_report *r, char *buf, size_t cap, size_t *len)
{
	*len = 0;
	int rc = check(r);
	if (rc) return rc;
	struct wr w = {.p = buf, .cap = cap};
	bool failed = any_action(r, DSN_FAILED), delayed = any_action(r, DSN_DELAYED);
	bool hdrs = dsn_headers_only(r);
	bool eight = r->orig_8bit || any_nonascii(r->sender);
	for (unsigned i = 0; i < r->nrcpt; i++)
		eight |= any_nonascii(r->rcpt[i].addr) || any_nonascii(r->rcpt[i].orcpt);

	PUTS(&w, "From: MAILER-DAEMON@", r->reporting_mta, " (Mail Delivery System)\r\n");
	PUTS(&w, "To: ", r->sender, "\r\n");
	PUTS(&w, "Subject: ",
	     failed    ? "Undelivered Mail Returned to Sender"
	     : delayed ? "Delayed Mail (still being retried)"
		       : "Successful Mail Delivery Report",
	     "\r\n");
	wr_puts(&w, "Date: ");
	wr_date(&w, r->now, r->tz_off_min);
	PUTS(&w, "\r\nMessage-ID: <", r->token, "@", r->reporting_mta, ">\r\n");
	wr_puts(&w, "Auto-Submitted: auto-replied\r\n"); /* RFC 3834 5 */
	wr_puts(&w, "MIME-Version: 1.0\r\n");
	wr_puts(&w,
		"Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"");
	put_boundary(&w, r);
	wr_puts(&w, "\"\r\n");
	if (eight) wr_puts(&w, "Content-Transfer-Encoding: 8bit\r\n");
	wr_puts(&w, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	wr_puts(&w, "--");
	put_boundary(&w, r);
	wr_puts(&w, "\r\nContent-Description: Notification\r\n"
		    "Content-Type: text/plain; charset=utf-8\r\n");
	if (eight) wr_puts(&w, "Content-Transfer-Encoding: 8bit\r\n");
	wr_puts(&w, "\r\n");
	put_text(&w, r, hdrs);

	wr_puts(&w, "\r\n--");
	put_boundary(&w, r);
	wr_puts(&w, "\r\nContent-Description: Delivery report\r\n"
		    "Content-Type: message/delivery-status\r\n\r\n");
	put_status(&w, r);

	wr_puts(&w, "\r\n--");
	put_boundary(&w, r);
	PUTS(&w, "\r\nContent-Description: ",
	     failed    ? "Undelivered"
	     : delayed ? "Delayed"
		       : "Delivered",
	     " Message", hdrs ? " Headers" : "", "\r\n");
	wr_puts(&w, hdrs ? "Content-Type: text/rfc822-headers\r\n"
			 : "Content-Type: message/rfc822\r\n");
	if (r->orig_8bit) wr_puts(&w, "Content-Transfer-Encoding: 8bit\r\n");
	wr_puts(&w, "\r\n");
	return finish(&w, len);
}

int dsn_suffix(const struct dsn_report *r, char *buf, size_t cap, size_t *len)
{
	*len = 0;
	if (!r->token || !good_token(r->token)) return DSN_EINVAL;
	struct wr w = {.p = buf, .cap = cap};
	wr_puts(&w, "\r\n--");
	put_boundary(&w, r);
	wr_puts(&w, "--\r\n");
	return finish(&w, len);
}

/* States: at a line start, CR at a line start, inside a line, CR inside a
 * line, done. Only CRLF CRLF ends the block (a message from SMTP has no
 * bare LF, SPEC 4). */
size_t dsn_headers_scan(unsigned *state, const char *p, size_t n)
{
	enum { BOL, BOL_CR, MID, MID_CR };
	unsigned s = *state;
	if (s == DSN_HDRS_DONE) return 0;
	for (size_t i = 0; i < n; i++) {
		char c = p[i];
		switch (s) {
		case BOL_CR:
			if (c == '\n') {
				*state = DSN_HDRS_DONE;
				return i + 1;
			}
			s = c == '\r' ? MID_CR : MID;
			break;
		case BOL:
		case MID:
		case MID_CR:
			if (c == '\r')
				s = s == BOL ? BOL_CR : MID_CR;
			else if (c == '\n')
				s = BOL;
			else
				s = MID;
			break;
		default: s = MID;
		}
	}
	*state = s;
	return n;
}

bool dsn_wanted(unsigned notify, enum dsn_action action)
{
	if (notify & SMTP_NOTIFY_NEVER) return false;
	if (notify == 0) notify = SMTP_NOTIFY_FAILURE;
	switch (action) {
	case DSN_FAILED: return notify & SMTP_NOTIFY_FAILURE;
	case DSN_DELAYED: return notify & SMTP_NOTIFY_DELAY;
	case DSN_DELIVERED:
	case DSN_RELAYED:
	case DSN_EXPANDED: return notify & SMTP_NOTIFY_SUCCESS;
	}
	return false;
}
