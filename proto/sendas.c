#include "proto/sendas.h"
#include "proto/date.h"
#include "proto/wr.h"

#include <stdio.h>
#include <string.h>

/* --- output: counts what it would need even past cap, writes only within */

/* --- character classes */

static bool is_wsp(int c)
{
	return c == ' ' || c == '\t';
}
static bool is_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* RFC 5322 3.2.3 atext */
static bool is_atext(int c)
{
	return is_alnum(c) || (c && strchr("!#$%&'*+-/=?^_`{|}~", c));
}

static bool ieq(const char *a, size_t n, const char *lit)
{
	size_t m = strlen(lit);
	if (n != m) return false;
	for (size_t i = 0; i < n; i++)
		if (lower((unsigned char)a[i]) != lit[i]) return false;
	return true;
}

static bool iprefix(const char *a, size_t n, const char *lit)
{
	size_t m = strlen(lit);
	return n >= m && ieq(a, m, lit);
}

/* --- header fields */

enum kind { K_OTHER, K_FROM, K_SUBJECT, K_DATE, K_MSGID };

struct field {
	size_t start, end; /* raw octets of the whole field, line endings included */
	size_t val, vend;  /* the value: after ':', before the final CRLF */
	bool ok;	   /* well-formed: name ":" ... CRLF, CR and LF only paired */
	bool partial;	   /* the last line has no LF */
	enum kind kind;
};

/* The field at h[i] (i < n, not the empty line): its first line and every
 * following line that starts with WSP (RFC 5322 2.2.3). */
static void field_at(const char *h, size_t n, size_t i, struct field *f)
{
	memset(f, 0, sizeof *f);
	f->start = i;
	size_t j = i;
	for (;;) {
		const char *lf = memchr(h + j, '\n', n - j);
		if (!lf) {
			j = n;
			f->partial = true;
			break;
		}
		j = (size_t)(lf - h) + 1;
		if (j >= n || !is_wsp((unsigned char)h[j])) break;
	}
	f->end = j;
	if (f->partial) return;
	size_t k = i;
	while (k < j && h[k] != ':' && h[k] > ' ' && h[k] < 127)
		k++;
	size_t name_end = k;
	while (k < j && is_wsp((unsigned char)h[k])) /* obs-optional (RFC 5322 4.5) */
		k++;
	if (name_end == i || k >= j || h[k] != ':') return;
	if (j - i < 2 || h[j - 2] != '\r') return;
	for (size_t q = i; q < j; q++) {
		if (h[q] == '\r' && (q + 1 >= j || h[q + 1] != '\n')) return;
		if (h[q] == '\n' && (q == i || h[q - 1] != '\r')) return;
	}
	f->ok = true;
	f->val = k + 1;
	f->vend = j - 2;
	const char *name = h + i;
	size_t nl = name_end - i;
	f->kind = ieq(name, nl, "from")		? K_FROM
		  : ieq(name, nl, "subject")	? K_SUBJECT
		  : ieq(name, nl, "date")	? K_DATE
		  : ieq(name, nl, "message-id") ? K_MSGID
						: K_OTHER;
}

size_t sendas_header_end(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		if (n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n') return i + 2;
		const char *lf = memchr(p + i, '\n', n - i);
		if (!lf) return 0;
		i = (size_t)(lf - p) + 1;
	}
	return 0;
}

/* --- the Subject as a reader sees it: unfolded, encoded-words decoded.
 *
 * An iterator over the display octets of a raw value, each with the raw
 * position it came from. It is a small copyable struct, so the tag search
 * tries each start by copying it: no buffer for the decoded text is needed
 * however long the Subject is. */

#define CH_OPAQUE 256 /* an encoded-word in a charset we do not decode */
#define CS_MAX 40     /* longest charset name decoded (leaves room in a word) */

struct ew {
	size_t start, end; /* "=?" .. "?=" inclusive */
	const char *cs;	   /* charset name, without an RFC 2231 "*lang" */
	size_t cslen;
	size_t t, te; /* encoded text */
	char enc;     /* 'B' or 'Q' */
	bool opaque;
};

struct ch {
	int b;		/* octet, or CH_OPAQUE */
	size_t pos;	/* raw position (an encoded-word's octets: its start) */
	bool from_ew;	/* decoded from an encoded-word */
	const char *cs; /* its charset and encoding */
	size_t cslen;
	char enc;
};

struct sit {
	const char *v;
	size_t n, i;
	bool in_ew;
	struct ew e;
	size_t t;
	uint32_t acc;
	int bits;
};

static int hexval(int c)
{
	if (c >= '0' && c <= '9') return c - '0';
	c = lower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z') return c - 'A';
	if (c >= 'a' && c <= 'z') return c - 'a' + 26;
	if (c >= '0' && c <= '9') return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* RFC 2047 2: token = 1*<any CHAR except SPACE, CTLs, and especials> */
static bool is_ew_token(int c)
{
	return c > ' ' && c < 127 && !strchr("()<>@,;:\"/[]?.=", c);
}

static bool cs_decodable(const char *s, size_t n)
{
	return n <= CS_MAX &&
	       (ieq(s, n, "utf-8") || ieq(s, n, "us-ascii") || iprefix(s, n, "iso-8859-") ||
		iprefix(s, n, "windows-125") || iprefix(s, n, "koi8-"));
}

/* An encoded-word (RFC 2047 2, 4) at v[i], ended by white space, CR or the
 * end of the value (6.1: it must stand alone as a word). */
static bool ew_parse(const char *v, size_t n, size_t i, struct ew *e)
{
	size_t k = i;
	if (n - k < 8 || v[k] != '=' || v[k + 1] != '?') return false;
	k += 2;
	e->start = i;
	e->cs = v + k;
	while (k < n && is_ew_token((unsigned char)v[k]) && v[k] != '*')
		k++;
	e->cslen = (size_t)(v + k - e->cs);
	if (k < n && v[k] == '*') /* RFC 2231 5: charset*language */
		while (k < n && is_ew_token((unsigned char)v[k]))
			k++;
	if (e->cslen == 0 || n - k < 5 || v[k] != '?') return false;
	int enc = lower((unsigned char)v[k + 1]);
	e->enc = enc == 'b' ? 'B' : enc == 'q' ? 'Q' : 0;
	if (!e->enc || v[k + 2] != '?') return false;
	k += 3;
	e->t = k;
	while (k < n && v[k] > ' ' && v[k] < 127 && v[k] != '?')
		k++;
	e->te = k;
	if (n - k < 2 || v[k] != '?' || v[k + 1] != '=') return false;
	k += 2;
	if (k < n && !is_wsp((unsigned char)v[k]) && v[k] != '\r') return false;
	e->end = k;
	/* The encoded text must decode cleanly, or the word is plain text
	   (RFC 2047 6.3 lets a reader show it as it is). */
	if (e->enc == 'Q') {
		for (size_t q = e->t; q < e->te; q++)
			if (v[q] == '=') {
				if (e->te - q < 3 || hexval((unsigned char)v[q + 1]) < 0 ||
				    hexval((unsigned char)v[q + 2]) < 0)
					return false;
				q += 2;
			}
	} else {
		size_t q = e->t, data = 0;
		while (q < e->te && b64val((unsigned char)v[q]) >= 0)
			q++, data++;
		size_t pad = 0;
		while (q < e->te && v[q] == '=')
			q++, pad++;
		if (q != e->te || pad > 2 || data % 4 == 1 || (pad && (data + pad) % 4))
			return false;
	}
	e->opaque = !cs_decodable(e->cs, e->cslen);
	return true;
}

static void sit_init(struct sit *s, const char *v, size_t n)
{
	memset(s, 0, sizeof *s);
	s->v = v;
	s->n = n;
}

/* After an encoded-word: white space between two encoded-words is not
 * displayed (RFC 2047 6.2), so step over it when another one follows. */
static void sit_after_ew(struct sit *s, size_t end)
{
	size_t j = end;
	while (j < s->n) {
		if (is_wsp((unsigned char)s->v[j]))
			j++;
		else if (s->v[j] == '\r' && j + 1 < s->n && s->v[j + 1] == '\n')
			j += 2;
		else
			break;
	}
	struct ew e;
	s->i = (j > end && j < s->n && ew_parse(s->v, s->n, j, &e)) ? j : end;
}

static bool sit_next(struct sit *s, struct ch *c)
{
	for (;;) {
		if (s->in_ew) {
			struct ew *e = &s->e;
			int b = -1;
			if (e->enc == 'Q') {
				if (s->t < e->te) {
					char q = s->v[s->t];
					if (q == '_') {
						b = ' ';
						s->t++;
					} else if (q == '=') {
						b = hexval((unsigned char)s->v[s->t + 1]) * 16 +
						    hexval((unsigned char)s->v[s->t + 2]);
						s->t += 3;
					} else {
						b = (unsigned char)q;
						s->t++;
					}
				}
			} else {
				while (s->bits < 8 && s->t < e->te && s->v[s->t] != '=') {
					s->acc = (s->acc << 6) |
						 (uint32_t)b64val((unsigned char)s->v[s->t++]);
					s->bits += 6;
				}
				if (s->bits >= 8) {
					s->bits -= 8;
					b = (int)((s->acc >> s->bits) & 0xff);
				}
			}
			if (b >= 0) {
				*c = (struct ch){.b = b,
						 .pos = e->start,
						 .from_ew = true,
						 .cs = e->cs,
						 .cslen = e->cslen,
						 .enc = e->enc};
				return true;
			}
			s->in_ew = false;
			sit_after_ew(s, e->end);
			continue;
		}
		if (s->i >= s->n) return false;
		size_t i = s->i;
		if (s->v[i] == '\r' && i + 1 < s->n && s->v[i + 1] == '\n') { /* unfold */
			s->i += 2;
			continue;
		}
		if (s->v[i] == '=' && (i == 0 || is_wsp((unsigned char)s->v[i - 1])) &&
		    ew_parse(s->v, s->n, i, &s->e)) {
			if (s->e.opaque) {
				*c = (struct ch){.b = CH_OPAQUE,
						 .pos = i,
						 .from_ew = true,
						 .cs = s->e.cs,
						 .cslen = s->e.cslen,
						 .enc = s->e.enc};
				sit_after_ew(s, s->e.end);
				return true;
			}
			s->in_ew = true;
			s->t = s->e.t;
			s->acc = 0;
			s->bits = 0;
			continue;
		}
		*c = (struct ch){.b = (unsigned char)s->v[i], .pos = i};
		s->i++;
		return true;
	}
}

/* --- the tag */

struct tag {
	char name[SENDAS_NAME_MAX + 1];
	size_t name_len;
	/* the display octets removed: [first, last] by index */
	size_t first, last;
	size_t raw_a, raw_b; /* plain-text case: raw octets [raw_a, raw_b) go */
};

/* Matches the rest of "[sendas:" SP* NAME "]" after the "[" (consumed). */
static bool tag_rest(struct sit *it, struct tag *t, size_t *count)
{
	static const char lit[] = "sendas:";
	struct ch c;
	for (const char *l = lit; *l; l++) {
		if (!sit_next(it, &c) || lower(c.b) != *l) return false;
		++*count;
	}
	bool more = sit_next(it, &c);
	while (more && is_wsp(c.b)) {
		++*count;
		more = sit_next(it, &c);
	}
	t->name_len = 0;
	while (more && (is_alnum(c.b) || c.b == '.' || c.b == '-' || c.b == '_')) {
		if (t->name_len == SENDAS_NAME_MAX) return false;
		t->name[t->name_len++] = (char)c.b;
		++*count;
		more = sit_next(it, &c);
	}
	if (!more || c.b != ']' || t->name_len == 0) return false;
	++*count;
	t->name[t->name_len] = 0;
	/* RFC 5322 3.4.1: the local part is a dot-atom. */
	const char *nm = t->name;
	if (nm[0] == '.' || nm[t->name_len - 1] == '.' || strstr(nm, "..")) return false;
	return true;
}

/* Finds the first tag in the Subject value v[0..n) and what to remove: the
 * tag, and the space it leaves (SPEC 4): between two spaces one of them
 * goes (the one after), at the start the space after it, at the end the
 * space before it. A tag glued to a word on either side takes no space
 * with it ("Hello[t] world" -> "Hello world"). */
static bool tag_find(const char *v, size_t n, struct tag *t)
{
	struct sit it;
	sit_init(&it, v, n);
	struct ch c, prev = {.b = -1};
	size_t idx = 0;
	while (sit_next(&it, &c)) {
		if (c.b == '[') {
			struct sit m = it;
			size_t count = 1;
			if (tag_rest(&m, t, &count)) {
				struct sit peek = m;
				struct ch nx;
				bool has_next = sit_next(&peek, &nx);
				bool has_prev = prev.b >= 0;
				t->first = idx;
				t->last = idx + count - 1;
				size_t a = c.pos;
				if (has_next && is_wsp(nx.b) && (!has_prev || is_wsp(prev.b))) {
					t->last++;
					struct ch after;
					has_next = sit_next(&peek, &after);
					nx = after;
				} else if (!has_next && has_prev && is_wsp(prev.b)) {
					t->first--;
					a = prev.pos;
				}
				t->raw_a = a;
				t->raw_b = has_next ? nx.pos : n;
				return true;
			}
		}
		prev = c;
		idx++;
	}
	return false;
}

/* --- Subject output */

static bool all_space(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!is_wsp((unsigned char)v[i]) && v[i] != '\r' && v[i] != '\n') return false;
	return true;
}

/* The tag lay in plain text: drop its octets, keep every other one. */
static void subject_plain(struct wr *w, const char *h, const struct field *f, const struct tag *t)
{
	const char *v = h + f->val;
	size_t n = f->vend - f->val, a = t->raw_a, b = t->raw_b;
	/* the space removed began a continuation line: its fold goes too */
	if (a >= 2 && is_wsp((unsigned char)v[a]) && v[a - 2] == '\r' && v[a - 1] == '\n') a -= 2;
	if (b == n) /* the tag ended the Subject: so does the text before it */
		while (a > 0) {
			if (is_wsp((unsigned char)v[a - 1]))
				a--;
			else if (a >= 2 && v[a - 2] == '\r' && v[a - 1] == '\n')
				a -= 2;
			else
				break;
		}
	wr_put(w, h + f->start, f->val - f->start);
	if (!(all_space(v, a) && all_space(v + b, n - b))) {
		wr_put(w, v, a);
		wr_put(w, v + b, n - b);
	}
	wr_put(w, "\r\n", 2);
}

/* Encoded-word writer (RFC 2047 2, 4, 5). A word is at most 66 octets, so
 * the first fits after "Subject: " and each next one after a folding SP
 * within 76 octets. */
#define EW_MAX 66

struct enc {
	struct wr *w;
	const char *cs; /* charset and encoding of the word being built */
	size_t cslen;
	char enc;
	unsigned char buf[64];
	size_t len;
	bool any; /* a word was written: the next one needs a fold */
};

static bool q_literal(int b)
{
	return b > ' ' && b < 127 && b != '=' && b != '?' && b != '_';
}

static size_t q_len(const unsigned char *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += (q_literal(p[i]) || p[i] == ' ') ? 1 : 3;
	return k;
}

static void enc_sep(struct enc *e)
{
	if (e->any) wr_put(e->w, "\r\n ", 3);
	e->any = true;
}

static void enc_flush(struct enc *e)
{
	static const char hex[] = "0123456789ABCDEF";
	static const char b64[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	if (!e->len) return;
	enc_sep(e);
	wr_put(e->w, "=?", 2);
	wr_put(e->w, e->cs, e->cslen);
	wr_put(e->w, e->enc == 'B' ? "?B?" : "?Q?", 3);
	if (e->enc == 'Q') {
		for (size_t i = 0; i < e->len; i++) {
			unsigned char b = e->buf[i];
			if (b == ' ') {
				wr_put(e->w, "_", 1);
			} else if (q_literal(b)) {
				wr_put(e->w, &b, 1);
			} else {
				char x[3] = {'=', hex[b >> 4], hex[b & 15]};
				wr_put(e->w, x, 3);
			}
		}
	} else {
		for (size_t i = 0; i < e->len; i += 3) {
			uint32_t x = (uint32_t)e->buf[i] << 16;
			size_t r = e->len - i;
			if (r > 1) x |= (uint32_t)e->buf[i + 1] << 8;
			if (r > 2) x |= e->buf[i + 2];
			char o[4] = {b64[x >> 18], b64[(x >> 12) & 63],
				     r > 1 ? b64[(x >> 6) & 63] : '=', r > 2 ? b64[x & 63] : '='};
			wr_put(e->w, o, 4);
		}
	}
	wr_put(e->w, "?=", 2);
	e->len = 0;
}

static bool same_cs(const char *a, size_t an, const char *b, size_t bn)
{
	if (an != bn) return false;
	for (size_t i = 0; i < an; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return false;
	return true;
}

/* Adds one character (one UTF-8 sequence, or one octet) in the given
 * charset and encoding; a character is never split between words (RFC 2047
 * 5 (3)). */
static void enc_unit(struct enc *e, const unsigned char *u, size_t un, const struct ch *a)
{
	if (e->len && (e->enc != a->enc || !same_cs(e->cs, e->cslen, a->cs, a->cslen)))
		enc_flush(e);
	for (;;) {
		if (!e->len) {
			e->cs = a->cs;
			e->cslen = a->cslen;
			e->enc = a->enc;
		}
		size_t body = e->enc == 'Q' ? q_len(e->buf, e->len) + q_len(u, un)
					    : (e->len + un + 2) / 3 * 4;
		bool fits = 7 + e->cslen + body <= EW_MAX && e->len + un <= sizeof e->buf;
		if (fits || !e->len) break;
		enc_flush(e);
	}
	memcpy(e->buf + e->len, u, un);
	e->len += un;
}

/* Does the value hold an encoded-word (decodable or not)? */
static bool has_ew(const char *v, size_t n)
{
	struct sit it;
	struct ch c;
	sit_init(&it, v, n);
	while (sit_next(&it, &c))
		if (c.from_ew) return true;
	return false;
}

/* The Subject held encoded-words: write the whole display text again, tag
 * and its space removed, leading and trailing white space dropped, as
 * encoded-words in the charset and encoding each part came in. Plain text
 * takes those of the encoded-word before it, or of the first one, or UTF-8
 * and Q when every encoded-word is opaque. Re-encoding everything, rather
 * than only the words the tag touched, keeps the white space right: between
 * two encoded-words it is not shown, next to plain text it is (RFC 2047
 * 6.2), and a removal must not change which is which. */
static void subject_encoded(struct wr *w, const char *h, const struct field *f, const struct tag *t)
{
	const char *v = h + f->val;
	size_t n = f->vend - f->val;
	struct sit it;
	struct ch c;
	/* pass 1: the first and last display octet kept that is not white
	   space, and the attributes plain text starts with */
	size_t idx = 0, lo = SIZE_MAX, hi = 0;
	struct ch attr = {.cs = "UTF-8", .cslen = 5, .enc = 'Q'};
	bool have_attr = false;
	sit_init(&it, v, n);
	while (sit_next(&it, &c)) {
		if (c.from_ew && c.b != CH_OPAQUE && !have_attr) {
			attr = c;
			have_attr = true;
		}
		if ((idx < t->first || idx > t->last) && !is_wsp(c.b)) {
			if (lo == SIZE_MAX) lo = idx;
			hi = idx;
		}
		idx++;
	}
	wr_put(w, h + f->start, f->val - f->start);
	if (lo == SIZE_MAX) {
		wr_put(w, "\r\n", 2);
		return;
	}
	wr_put(w, " ", 1);
	struct enc e = {.w = w};
	unsigned char u[4];
	size_t un = 0;
	struct ch ua = attr; /* attributes of the character in u */
	idx = 0;
	sit_init(&it, v, n);
	while (sit_next(&it, &c)) {
		size_t k = idx++;
		if (c.from_ew && c.b != CH_OPAQUE) attr = c;
		if (k < lo || k > hi || (k >= t->first && k <= t->last)) continue;
		struct ch ca = attr;
		ca.from_ew = c.from_ew;
		/* a UTF-8 continuation octet joins the character before it */
		if (un && un < 4 && c.b >= 0x80 && c.b < 0xC0 && ieq(ua.cs, ua.cslen, "utf-8") &&
		    ca.from_ew == ua.from_ew && same_cs(ca.cs, ca.cslen, ua.cs, ua.cslen)) {
			u[un++] = (unsigned char)c.b;
			continue;
		}
		if (un) enc_unit(&e, u, un, &ua);
		un = 0;
		if (c.b == CH_OPAQUE) { /* kept as written, as a word of its own */
			struct ew ow;
			enc_flush(&e);
			if (ew_parse(v, n, c.pos, &ow)) {
				enc_sep(&e);
				wr_put(w, v + ow.start, ow.end - ow.start);
			}
			continue;
		}
		ua = ca;
		u[un++] = (unsigned char)c.b;
	}
	if (un) enc_unit(&e, u, un, &ua);
	enc_flush(&e);
	wr_put(w, "\r\n", 2);
}

/* --- From */

static bool skip_comment(const char *v, size_t n, size_t *i)
{
	int depth = 0;
	while (*i < n) {
		char c = v[(*i)++];
		if (c == '\\')
			(*i)++;
		else if (c == '(')
			depth++;
		else if (c == ')' && --depth == 0)
			return *i <= n;
	}
	return false;
}

static bool skip_quoted(const char *v, size_t n, size_t *i)
{
	(*i)++;
	while (*i < n) {
		char c = v[(*i)++];
		if (c == '\\')
			(*i)++;
		else if (c == '"')
			return *i <= n;
	}
	return false;
}

/* The octets of the one mailbox's address in a From value (RFC 5322 3.4):
 * inside "<>" for name-addr, or the addr-spec itself, comments and white
 * space around it excluded. False when the value is not one mailbox. */
static bool from_addr(const char *v, size_t n, size_t *s, size_t *e)
{
	size_t i = 0, first = SIZE_MAX, last = 0;
	bool angle = false, gap = false, bare_ok = true;
	int ats = 0;
	while (i < n) {
		char c = v[i];
		if (is_wsp((unsigned char)c) || c == '\r' || c == '\n') {
			gap = first != SIZE_MAX;
			i++;
			continue;
		}
		if (c == '(') {
			if (!skip_comment(v, n, &i)) return false;
			gap = first != SIZE_MAX;
			continue;
		}
		if (angle) return false; /* only CFWS may follow the angle-addr */
		size_t start = i;
		if (c == '"') {
			if (!skip_quoted(v, n, &i)) return false;
		} else if (c == '<') {
			size_t j = i + 1;
			while (j < n && v[j] != '>') {
				if (v[j] == '"') {
					if (!skip_quoted(v, n, &j)) return false;
				} else if (v[j] == '<') {
					return false;
				} else {
					j++;
				}
			}
			if (j >= n) return false;
			*s = i + 1;
			*e = j;
			angle = true;
			i = j + 1;
			continue;
		} else if (c && strchr(",;:>)\\", c)) {
			return false; /* a list, a group, or stray specials */
		} else {
			ats += c == '@';
			i++;
		}
		if (first == SIZE_MAX)
			first = start;
		else if (gap)
			bare_ok = false; /* "Name a@b" without angle brackets */
		last = i;
		gap = false;
	}
	if (angle) return true;
	if (first == SIZE_MAX || !bare_ok || ats != 1) return false;
	*s = first;
	*e = last;
	return true;
}

static void put_sender(struct wr *w, const struct tag *t, const char *domain)
{
	wr_put(w, t->name, t->name_len);
	wr_put(w, "@", 1);
	wr_puts(w, domain);
}

static void from_rewrite(struct wr *w, const char *h, const struct field *f, const struct tag *t,
			 const char *domain)
{
	const char *v = h + f->val;
	size_t n = f->vend - f->val, s, e;
	wr_put(w, h + f->start, f->val - f->start);
	if (from_addr(v, n, &s, &e)) {
		wr_put(w, v, s);
		put_sender(w, t, domain);
		wr_put(w, v + e, n - e);
	} else {
		wr_put(w, " ", 1);
		put_sender(w, t, domain);
	}
	wr_put(w, "\r\n", 2);
}

/* --- the rewrite */

static bool valid_domain(const char *d)
{
	size_t n = strlen(d);
	if (n == 0 || n > 255) return false;
	for (size_t i = 0; i < n; i++)
		if (!is_alnum((unsigned char)d[i]) && d[i] != '.' && d[i] != '-') return false;
	return true;
}

static bool valid_token(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > 200 || t[0] == '.' || t[n - 1] == '.' || strstr(t, "..")) return false;
	for (size_t i = 0; i < n; i++)
		if (!is_atext((unsigned char)t[i]) && t[i] != '.') return false;
	return true;
}

int sendas_rewrite(const struct sendas_params *p, const char *hdr, size_t n, char *out, size_t cap,
		   struct sendas_result *res)
{
	memset(res, 0, sizeof *res);
	if (!p->domain || !p->token || !valid_domain(p->domain) || !valid_token(p->token))
		return SENDAS_EINVAL;

	/* pass 1: what is there; where the block ends; the tag */
	size_t end = sendas_header_end(hdr, n);
	size_t block = end ? end - 2 : n; /* the fields: [0, block) */
	bool has_from = false, has_date = false, has_msgid = false, subject_seen = false;
	struct field subj = {0};
	struct tag tag = {0};
	size_t ins = block; /* where added fields go */
	for (size_t i = 0; i < block;) {
		struct field f;
		field_at(hdr, block, i, &f);
		if (f.partial && ins == block) ins = f.start;
		if (f.ok) {
			has_from |= f.kind == K_FROM;
			has_date |= f.kind == K_DATE;
			has_msgid |= f.kind == K_MSGID;
			if (f.kind == K_SUBJECT && !subject_seen) {
				subject_seen = true;
				subj = f;
				res->tagged = tag_find(hdr + f.val, f.vend - f.val, &tag);
			}
		}
		i = f.end;
	}

	/* pass 2: write */
	struct wr w = {.p = out, .cap = cap};
	for (size_t i = 0; i < ins;) {
		struct field f;
		field_at(hdr, block, i, &f);
		if (res->tagged && f.ok && f.start == subj.start) {
			if (has_ew(hdr + f.val, f.vend - f.val))
				subject_encoded(&w, hdr, &f, &tag);
			else
				subject_plain(&w, hdr, &f, &tag);
			res->changes |= SENDAS_SUBJECT;
		} else if (res->tagged && f.ok && f.kind == K_FROM) {
			from_rewrite(&w, hdr, &f, &tag, p->domain);
			res->changes |= SENDAS_FROM;
		} else {
			wr_put(&w, hdr + f.start, f.end - f.start);
		}
		i = f.end;
	}
	/* An unterminated line that starts with white space (possible only as
	   the first line) would make any field put before it its own
	   continuation: add nothing then. */
	bool can_add = !(ins < n && is_wsp((unsigned char)hdr[ins]));
	if (!can_add) has_from = has_date = has_msgid = true;
	if (res->tagged && !has_from) {
		wr_puts(&w, "From: ");
		put_sender(&w, &tag, p->domain);
		wr_put(&w, "\r\n", 2);
		res->changes |= SENDAS_ADDED_FROM;
	}
	if (!has_date) { /* RFC 6409 8.2 */
		wr_puts(&w, "Date: ");
		wr_date(&w, p->now, p->tz_off_min);
		wr_put(&w, "\r\n", 2);
		res->changes |= SENDAS_ADDED_DATE;
	}
	if (!has_msgid) { /* RFC 6409 8.3 */
		wr_puts(&w, "Message-ID: <");
		wr_puts(&w, p->token);
		wr_put(&w, "@", 1);
		wr_puts(&w, p->domain);
		wr_put(&w, ">\r\n", 3);
		res->changes |= SENDAS_ADDED_MSGID;
	}
	wr_put(&w, hdr + ins, n - ins); /* a partial last field, the empty line, the rest */
	res->len = w.len;
	if (w.over) {
		res->tagged = false;
		res->changes = 0;
		return SENDAS_ENOSPC;
	}
	if (res->tagged) {
		size_t dl = strlen(p->domain);
		memcpy(res->sender, tag.name, tag.name_len);
		res->sender[tag.name_len] = '@';
		memcpy(res->sender + tag.name_len + 1, p->domain, dl + 1);
	}
	return SENDAS_OK;
}
