#include "core/toml.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Table definition rules of TOML 1.0 ("Table" section): a table is defined
 * once, either by a [header] or by dotted keys, never both. A table that only
 * exists because a longer header named it ([a.b] creates a) is implicit and
 * may be defined later by its own header. These flags carry that history.
 */
enum {
	TF_EXPLICIT = 1, /* defined by [header] or as an element of [[header]] */
	TF_DOTTED = 2,	 /* created or extended by dotted keys */
	TF_AOT = 4,	 /* array made by [[header]]: the only kind that grows */
};

/* Bounds that keep recursion and key buffers small whatever the input. */
#define MAX_DEPTH 32 /* nested arrays */
#define MAX_PARTS 32 /* parts of one dotted key */

struct keypart {
	char *s;
	size_t len;
};

struct keypath {
	struct keypart part[MAX_PARTS];
	int n;
};

struct buf {
	char *p;
	size_t len, cap;
};

struct parser {
	const char *p, *end;
	int line;
	struct toml_error *err;
	bool failed;
	int depth;
	struct toml_node *root, *cur;
	char sect[96]; /* name of the current [section], for messages */
};

static void set_error(struct parser *P, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Only the first error is kept: later ones are consequences of it. */
static void set_error(struct parser *P, int line, const char *fmt, ...)
{
	if (P->failed) return;
	va_list ap;
	va_start(ap, fmt);
	P->err->line = line;
	vsnprintf(P->err->msg, sizeof(P->err->msg), fmt, ap);
	va_end(ap);
	P->failed = true;
}

/* Both evaluate to -1, visibly to the reader and to static analysers, which
 * do not look inside variadic functions. */
#define fail_at(P, line, ...) (set_error((P), (line), __VA_ARGS__), -1)
#define fail(P, ...) fail_at((P), (P)->line, __VA_ARGS__)

static bool at_end(const struct parser *P)
{
	return P->p >= P->end;
}

static int peek(const struct parser *P, size_t off)
{
	return P->p + off < P->end ? (unsigned char)P->p[off] : -1;
}

/* For messages: what sits at P->p, in words a user recognises. */
static const char *show_here(const struct parser *P, char buf[16])
{
	int c = peek(P, 0);
	if (c < 0) return "end of file";
	if (c == '\n' || c == '\r') return "end of line";
	if (c > 0x20 && c < 0x7f)
		snprintf(buf, 16, "'%c'", c);
	else
		snprintf(buf, 16, "byte 0x%02x", (unsigned)c);
	return buf;
}

/* Key text for messages: non-printable bytes shown as '?', long keys cut. */
static const char *show_key(const char *s, size_t len, char buf[48])
{
	size_t o = 0;
	for (size_t i = 0; i < len && o < 44; i++)
		buf[o++] = (unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f ? s[i] : '?';
	if (o < len && o == 44) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static const char *show_path(const struct keypath *k, int n, char buf[96])
{
	size_t o = 0;
	buf[0] = '\0';
	for (int i = 0; i < n && o < 80; i++) {
		char kb[48];
		o += (size_t)snprintf(buf + o, 96 - o, "%s%s", i ? "." : "",
				      show_key(k->part[i].s, k->part[i].len, kb));
	}
	return buf;
}

/* ---- nodes ---- */

static struct toml_node *node_new(struct parser *P, enum toml_type type, int line)
{
	struct toml_node *n = calloc(1, sizeof(*n));
	if (!n) {
		set_error(P, P->line, "out of memory");
		return NULL;
	}
	n->type = type;
	n->line = line;
	return n;
}

static int node_add(struct parser *P, struct toml_node *parent, struct toml_node *kid)
{
	if (parent->nkids == parent->cap) {
		size_t cap = parent->cap ? parent->cap * 2 : 8;
		struct toml_node **k = realloc(parent->kids, cap * sizeof(*k));
		if (!k) {
			toml_free(kid);
			return fail(P, "out of memory");
		}
		parent->kids = k;
		parent->cap = cap;
	}
	parent->kids[parent->nkids++] = kid;
	return 0;
}

static int node_set_key(struct parser *P, struct toml_node *n, const struct keypart *k)
{
	n->key = malloc(k->len + 1);
	if (!n->key) return fail(P, "out of memory");
	memcpy(n->key, k->s, k->len);
	n->key[k->len] = '\0';
	n->keylen = k->len;
	return 0;
}

static struct toml_node *table_find(const struct toml_node *t, const struct keypart *k)
{
	for (size_t i = 0; i < t->nkids; i++)
		if (t->kids[i]->keylen == k->len && memcmp(t->kids[i]->key, k->s, k->len) == 0)
			return t->kids[i];
	return NULL;
}

/* Adds an empty table named K to T. */
static struct toml_node *table_add_table(struct parser *P, struct toml_node *t,
					 const struct keypart *k, unsigned flags, int line)
{
	struct toml_node *n = node_new(P, TOML_TABLE, line);
	if (!n) return NULL;
	n->flags = flags;
	if (node_set_key(P, n, k) < 0) {
		toml_free(n);
		return NULL;
	}
	if (node_add(P, t, n) < 0) /* it freed n */
		return NULL;
	return n;
}

void toml_free(struct toml_node *n)
{
	if (!n) return;
	for (size_t i = 0; i < n->nkids; i++)
		toml_free(n->kids[i]);
	free(n->kids);
	free(n->key);
	if (n->type == TOML_STRING) free(n->v.str.s);
	free(n);
}

const struct toml_node *toml_get(const struct toml_node *table, const char *key)
{
	if (!table || table->type != TOML_TABLE) return NULL;
	struct keypart k = {(char *)key, strlen(key)};
	return table_find(table, &k);
}

const char *toml_type_name(enum toml_type t)
{
	switch (t) {
	case TOML_STRING: return "a string";
	case TOML_INT: return "an integer";
	case TOML_BOOL: return "a boolean";
	case TOML_ARRAY: return "an array";
	case TOML_TABLE: return "a table";
	}
	return "a value";
}

/* ---- growable byte buffer for string contents ---- */

static int buf_put(struct parser *P, struct buf *b, const char *s, size_t n)
{
	if (!b->p || b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 32;
		while (cap < b->len + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) return fail(P, "out of memory");
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
	return 0;
}

static int buf_putc(struct parser *P, struct buf *b, char c)
{
	return buf_put(P, b, &c, 1);
}

/* ---- lexical pieces ---- */

/*
 * TOML 1.0: "A TOML file must be a valid UTF-8 encoded Unicode document."
 * Checking it once up front lets the rest of the parser look at bytes and
 * only worry about ASCII control characters.
 */
static int check_utf8(struct parser *P)
{
	int line = 1;
	const unsigned char *s = (const unsigned char *)P->p, *e = (const unsigned char *)P->end;
	while (s < e) {
		unsigned c = *s;
		if (c < 0x80) {
			line += c == '\n';
			s++;
			continue;
		}
		size_t n;
		uint32_t cp, min;
		if ((c & 0xe0) == 0xc0) {
			n = 2, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			n = 3, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			n = 4, cp = c & 0x07, min = 0x10000;
		} else {
			return fail_at(P, line, "invalid UTF-8");
		}
		if ((size_t)(e - s) < n) return fail_at(P, line, "invalid UTF-8");
		for (size_t i = 1; i < n; i++) {
			if ((s[i] & 0xc0) != 0x80) return fail_at(P, line, "invalid UTF-8");
			cp = cp << 6 | (s[i] & 0x3f);
		}
		/* Overlong forms, UTF-16 surrogates and beyond U+10FFFF are not
		 * Unicode scalar values (RFC 3629 3). */
		if (cp < min || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return fail_at(P, line, "invalid UTF-8");
		s += n;
	}
	return 0;
}

/* TOML forbids U+0000..U+001F and U+007F in strings and comments, tab
 * excepted; newlines are handled by the callers. */
static bool is_ctl(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t') || c == 0x7f;
}

static bool is_bare(int c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static void skip_ws(struct parser *P)
{
	while (!at_end(P) && (*P->p == ' ' || *P->p == '\t'))
		P->p++;
}

static bool at_newline(const struct parser *P)
{
	return peek(P, 0) == '\n' || peek(P, 0) == '\r';
}

/* Consumes LF or CRLF. A CR alone is not a TOML newline. */
static int newline(struct parser *P)
{
	if (peek(P, 0) == '\r') {
		if (peek(P, 1) != '\n')
			return fail(P, "bare carriage return (CR not followed by LF)");
		P->p++;
	}
	P->p++;
	P->line++;
	return 0;
}

/* From '#' to the end of the line, newline not consumed. */
static int comment(struct parser *P)
{
	P->p++;
	while (!at_end(P) && *P->p != '\n') {
		int c = (unsigned char)*P->p;
		if (c == '\r') {
			if (peek(P, 1) == '\n') break;
			return fail(P, "bare carriage return (CR not followed by LF)");
		}
		if (is_ctl(c)) return fail(P, "control character 0x%02x in comment", (unsigned)c);
		P->p++;
	}
	return 0;
}

/* After a key/value pair or a header: blanks, maybe a comment, then the end
 * of the line. Anything else is garbage the user must hear about. */
static int end_of_line(struct parser *P, const char *after)
{
	char cb[16];
	skip_ws(P);
	if (peek(P, 0) == '#' && comment(P) < 0) return -1;
	if (at_end(P)) return 0;
	if (at_newline(P)) return newline(P);
	return fail(P, "unexpected %s after %s", show_here(P, cb), after);
}

/* Blanks, newlines and comments: what may separate array elements. */
static int skip_ws_nl(struct parser *P)
{
	for (;;) {
		skip_ws(P);
		if (peek(P, 0) == '#') {
			if (comment(P) < 0) return -1;
		} else if (at_newline(P)) {
			if (newline(P) < 0) return -1;
		} else {
			return 0;
		}
	}
}

/* ---- strings ---- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	return -1;
}

static int put_utf8(struct parser *P, struct buf *b, uint32_t cp)
{
	char u[4];
	size_t n;
	if (cp < 0x80) {
		u[0] = (char)cp, n = 1;
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
	} else {
		u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | (cp >> 12 & 0x3f));
		u[2] = (char)(0x80 | (cp >> 6 & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
	}
	return buf_put(P, b, u, n);
}

/* P->p at the backslash. TOML 1.0 escapes only: \b \t \n \f \r \" \\
 * \uXXXX \UXXXXXXXX, the latter two naming a Unicode scalar value. */
static int escape(struct parser *P, struct buf *b)
{
	int c = peek(P, 1);
	const char *simple = NULL;
	switch (c) {
	case 'b': simple = "\b"; break;
	case 't': simple = "\t"; break;
	case 'n': simple = "\n"; break;
	case 'f': simple = "\f"; break;
	case 'r': simple = "\r"; break;
	case '"': simple = "\""; break;
	case '\\': simple = "\\"; break;
	case 'u':
	case 'U': {
		int nd = c == 'u' ? 4 : 8;
		uint32_t cp = 0;
		for (int i = 0; i < nd; i++) {
			int h = hexval(peek(P, 2 + (size_t)i));
			if (h < 0)
				return fail(P, "invalid escape: \\%c needs %d hex digits", c, nd);
			cp = cp << 4 | (uint32_t)h;
		}
		if ((cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return fail(P, "invalid escape: U+%04X is not a Unicode scalar value", cp);
		P->p += 2 + nd;
		return put_utf8(P, b, cp);
	}
	default:
		if (c > 0x20 && c < 0x7f) return fail(P, "invalid escape '\\%c' in string", c);
		if (c < 0) return fail(P, "invalid escape in string (backslash at end of file)");
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			return fail(P, "invalid escape in string (backslash followed by a blank "
				       "or end of line)");
		return fail(P, "invalid escape in string (backslash followed by byte 0x%02x)",
			    (unsigned)c);
	}
	P->p += 2;
	return buf_put(P, b, simple, 1);
}

/*
 * One string of any of the four kinds, P->p at the opening quote. Multi-line
 * rules (TOML 1.0 "String"): a newline right after the opening delimiter is
 * dropped; in basic ones a backslash ending a line swallows the newline and
 * all blanks up to the next non-blank; one or two quotes may sit just before
 * the closing three. Newlines come out as LF whatever the file used.
 */
static int parse_string(struct parser *P, struct buf *b)
{
	char q = *P->p;
	bool basic = q == '"';
	bool multi = peek(P, 1) == q && peek(P, 2) == q;
	int start = P->line;

	P->p += multi ? 3 : 1;
	if (multi && at_newline(P) && newline(P) < 0) return -1;
	if (buf_put(P, b, "", 0) < 0) /* an empty string still gets storage */
		return -1;
	for (;;) {
		if (at_end(P)) {
			return fail_at(P, start, "unterminated %sstring",
				       multi ? "multi-line " : "");
		}
		int c = (unsigned char)*P->p;
		if (c == '\r' && peek(P, 1) != '\n')
			return fail(P, "bare carriage return (CR not followed by LF) in string");
		if (c == q) {
			if (!multi) {
				P->p++;
				return 0;
			}
			size_t n = 0;
			while (peek(P, n) == q)
				n++;
			if (n >= 3) {
				if (n > 5)
					return fail(P,
						    "too many quotes closing a multi-line string");
				/* """"" is two quotes of content, then the end. */
				for (size_t i = 0; i < n - 3; i++)
					if (buf_putc(P, b, q) < 0) return -1;
				P->p += n;
				return 0;
			}
			if (buf_put(P, b, P->p, n) < 0) return -1;
			P->p += n;
		} else if (c == '\\' && basic) {
			if (multi) {
				/* Line-ending backslash: "\" blanks newline. */
				size_t i = 1;
				while (peek(P, i) == ' ' || peek(P, i) == '\t')
					i++;
				if (peek(P, i) == '\n' || peek(P, i) == '\r') {
					P->p += i;
					if (newline(P) < 0) return -1;
					for (;;) {
						skip_ws(P);
						if (!at_newline(P)) break;
						if (newline(P) < 0) return -1;
					}
					continue;
				}
			}
			if (escape(P, b) < 0) return -1;
		} else if (c == '\n' || c == '\r') {
			if (!multi)
				return fail(
				    P,
				    "unterminated string (end of line before the closing quote)");
			if (newline(P) < 0) return -1;
			if (buf_putc(P, b, '\n') < 0) return -1;
		} else if (is_ctl(c)) {
			return fail(P, "control character 0x%02x in string%s", (unsigned)c,
				    basic ? " (write it as an escape)" : "");
		} else {
			if (buf_putc(P, b, (char)c) < 0) return -1;
			P->p++;
		}
	}
}

/* ---- keys ---- */

static void keypath_free(struct keypath *k)
{
	for (int i = 0; i < k->n; i++)
		free(k->part[i].s);
	k->n = 0;
}

/* key = simple-key *( ws "." ws simple-key ); simple keys are bare or quoted,
 * quoted ones single-line only. */
static int parse_key(struct parser *P, struct keypath *k)
{
	char cb[16];
	k->n = 0;
	for (;;) {
		struct buf b = {0};
		int c = peek(P, 0);
		if (k->n == MAX_PARTS)
			return fail(P, "key has more than %d dotted parts", MAX_PARTS);
		if (c == '"' || c == '\'') {
			if (peek(P, 1) == c && peek(P, 2) == c)
				return fail(P, "a multi-line string cannot be a key");
			if (parse_string(P, &b) < 0) {
				free(b.p);
				return -1;
			}
		} else if (is_bare(c)) {
			const char *s = P->p;
			while (is_bare(peek(P, 0)))
				P->p++;
			if (buf_put(P, &b, s, (size_t)(P->p - s)) < 0) return -1;
		} else {
			if (k->n)
				return fail(P, "expected a key after '.', found %s",
					    show_here(P, cb));
			return fail(P, "expected a key, found %s", show_here(P, cb));
		}
		k->part[k->n].s = b.p;
		k->part[k->n].len = b.len;
		k->n++;
		skip_ws(P);
		if (peek(P, 0) != '.') return 0;
		P->p++;
		skip_ws(P);
	}
}

/* ---- values ---- */

static bool tok_has(const char *s, size_t n, const char *set)
{
	for (size_t i = 0; i < n; i++)
		if (strchr(set, s[i])) return true;
	return false;
}

static bool is_digit(int c)
{
	return c >= '0' && c <= '9';
}

/*
 * Integers (TOML 1.0 "Integer"): decimal with an optional sign and no
 * leading zero; 0x, 0o, 0b unsigned with leading zeros allowed. An
 * underscore must sit between two digits. Anything number-like we do not
 * support (floats, dates) is named as such rather than called garbage.
 */
static int parse_number(struct parser *P, struct toml_node *n)
{
	const char *t = P->p;
	while (!at_end(P) && (is_bare(*P->p) || *P->p == '+' || *P->p == '.' || *P->p == ':'))
		P->p++;
	size_t len = (size_t)(P->p - t);
	char tb[48];
	const char *shown = show_key(t, len, tb);

	bool neg = t[0] == '-', sign = neg || t[0] == '+';
	const char *s = t + sign;
	size_t sl = len - sign;

	if ((sl == 3 && (!memcmp(s, "inf", 3) || !memcmp(s, "nan", 3))))
		return fail(P, "floating-point numbers are not supported ('%s')", shown);
	if (!sign && ((len >= 5 && is_digit(t[0]) && is_digit(t[1]) && is_digit(t[2]) &&
		       is_digit(t[3]) && t[4] == '-') ||
		      (len >= 3 && is_digit(t[0]) && is_digit(t[1]) && t[2] == ':')))
		return fail(P, "dates and times are not supported ('%s')", shown);

	unsigned base = 10;
	if (sl >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'o' || s[1] == 'b')) {
		base = s[1] == 'x' ? 16 : s[1] == 'o' ? 8 : 2;
		if (sign)
			return fail(P, "invalid integer '%s': no sign allowed with 0%c", shown,
				    s[1]);
		s += 2;
		sl -= 2;
	} else if (tok_has(s, sl, ".eE")) {
		return fail(P, "floating-point numbers are not supported ('%s')", shown);
	}
	if (sl == 0) return fail(P, "invalid integer '%s'", shown);
	if (base == 10 && s[0] == '0' && sl > 1)
		return fail(P, "invalid integer '%s': leading zeros are not allowed", shown);

	/* Accumulate the magnitude; INT64_MIN's is one more than INT64_MAX's. */
	uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX, v = 0;
	bool prev_digit = false;
	for (size_t i = 0; i < sl; i++) {
		int d = hexval((unsigned char)s[i]);
		if (s[i] == '_') {
			if (!prev_digit || i + 1 == sl)
				return fail(P, "invalid integer '%s': '_' must be between digits",
					    shown);
			prev_digit = false;
			continue;
		}
		if (d < 0 || (unsigned)d >= base) return fail(P, "invalid integer '%s'", shown);
		if (v > (limit - (unsigned)d) / base)
			return fail(P, "integer '%s' is out of range (64-bit signed)", shown);
		v = v * base + (unsigned)d;
		prev_digit = true;
	}
	n->v.i = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

static struct toml_node *parse_value(struct parser *P);

static int parse_array(struct parser *P, struct toml_node *a)
{
	char cb[16];
	int start = P->line;
	if (++P->depth > MAX_DEPTH) return fail(P, "arrays nested more than %d deep", MAX_DEPTH);
	P->p++;
	for (;;) {
		if (skip_ws_nl(P) < 0) return -1;
		if (peek(P, 0) == ']') break;
		if (at_end(P)) return fail_at(P, start, "unterminated array");
		struct toml_node *e = parse_value(P);
		if (!e || node_add(P, a, e) < 0) return -1;
		if (skip_ws_nl(P) < 0) return -1;
		if (peek(P, 0) == ',') {
			P->p++;
			continue;
		}
		if (peek(P, 0) == ']') break;
		if (at_end(P)) return fail_at(P, start, "unterminated array");
		return fail(P, "expected ',' or ']' in array, found %s", show_here(P, cb));
	}
	P->p++;
	P->depth--;
	return 0;
}

static bool match_word(const struct parser *P, const char *w)
{
	size_t n = strlen(w);
	return (size_t)(P->end - P->p) >= n && memcmp(P->p, w, n) == 0 && !is_bare(peek(P, n));
}

/* A value of any supported type, P->p at its first byte. */
static struct toml_node *parse_value(struct parser *P)
{
	char cb[16];
	int c = peek(P, 0);
	struct toml_node *n = node_new(P, TOML_STRING, P->line);
	if (!n) return NULL;
	int rc;
	if (c == '"' || c == '\'') {
		struct buf b = {0};
		rc = parse_string(P, &b);
		n->v.str.s = b.p;
		n->v.str.len = b.len;
	} else if (c == '[') {
		n->type = TOML_ARRAY;
		rc = parse_array(P, n);
	} else if (c == '{') {
		rc = fail(P, "inline tables ({...}) are not supported: use a [table]");
	} else if (match_word(P, "true") || match_word(P, "false")) {
		n->type = TOML_BOOL;
		n->v.b = *P->p == 't';
		P->p += n->v.b ? 4 : 5;
		rc = 0;
	} else if (match_word(P, "inf") || match_word(P, "nan")) {
		rc = fail(P, "floating-point numbers are not supported");
	} else if (is_digit(c) || c == '+' || c == '-') {
		n->type = TOML_INT;
		rc = parse_number(P, n);
	} else if (c < 0 || c == '\n' || c == '\r' || c == '#') {
		rc = fail(P, "missing value");
	} else {
		rc = fail(P, "invalid value starting with %s (strings need quotes)",
			  show_here(P, cb));
	}
	if (rc < 0) {
		toml_free(n);
		return NULL;
	}
	return n;
}

/* ---- structure ---- */

/* key = value, in table T (the current section). */
static int keyval(struct parser *P, struct toml_node *t)
{
	char cb[16], pb[96];
	struct keypath k;
	int line = P->line, rc = -1;

	if (parse_key(P, &k) < 0) goto out;
	skip_ws(P);
	if (peek(P, 0) != '=') {
		if (at_end(P) || at_newline(P) || peek(P, 0) == '#')
			set_error(P, P->line, "key '%s' has no value (expected '=')",
				  show_path(&k, k.n, pb));
		else
			set_error(P, P->line, "expected '=' after key '%s', found %s",
				  show_path(&k, k.n, pb), show_here(P, cb));
		goto out;
	}
	P->p++;
	skip_ws(P);
	if (at_end(P) || at_newline(P) || peek(P, 0) == '#') {
		set_error(P, P->line, "missing value for key '%s'", show_path(&k, k.n, pb));
		goto out;
	}

	/* Dotted keys create tables, or extend ones dotted keys created; they
	 * may not reopen a table a [header] defined. */
	for (int i = 0; i < k.n - 1; i++) {
		struct toml_node *x = table_find(t, &k.part[i]);
		if (!x) {
			x = table_add_table(P, t, &k.part[i], TF_DOTTED, line);
			if (!x) goto out;
		} else if (x->type != TOML_TABLE) {
			set_error(P, P->line,
				  "key '%s' is already defined at line %d as %s, not a table",
				  show_path(&k, i + 1, pb), x->line, toml_type_name(x->type));
			goto out;
		} else if (x->flags & TF_EXPLICIT) {
			set_error(
			    P, P->line,
			    "cannot add to table [%s%s%s] (defined at line %d) with dotted keys",
			    P->sect, P->sect[0] ? "." : "", show_path(&k, i + 1, pb), x->line);
			goto out;
		}
		x->flags |= TF_DOTTED;
		t = x;
	}
	struct toml_node *old = table_find(t, &k.part[k.n - 1]);
	if (old) {
		set_error(P, P->line, "duplicate key '%s' (first defined at line %d)",
			  show_path(&k, k.n, pb), old->line);
		goto out;
	}
	struct toml_node *v = parse_value(P);
	if (!v) goto out;
	v->line = line;
	if (node_set_key(P, v, &k.part[k.n - 1]) < 0) {
		toml_free(v);
		goto out;
	}
	rc = node_add(P, t, v);
out:
	keypath_free(&k);
	return rc;
}

/* [a.b.c] or [[a.b.c]]: makes the named table current. */
static int header(struct parser *P)
{
	char cb[16], pb[96];
	struct keypath k = {.n = 0};
	int line = P->line, rc = -1;
	bool aot = peek(P, 1) == '[';
	const char *br = aot ? "[[" : "[", *kt = aot ? "]]" : "]";

	P->p += aot ? 2 : 1;
	skip_ws(P);
	if (parse_key(P, &k) < 0) goto out;
	skip_ws(P);
	if (peek(P, 0) != ']' || (aot && peek(P, 1) != ']')) {
		set_error(P, P->line, "expected '%s' to close the table header, found %s", kt,
			  show_here(P, cb));
		goto out;
	}
	P->p += aot ? 2 : 1;

	/* Walk to the parent, creating implicit tables; an array of tables
	 * stands for its latest element (TOML 1.0 "Array of Tables"). */
	struct toml_node *t = P->root;
	for (int i = 0; i < k.n - 1; i++) {
		struct toml_node *x = table_find(t, &k.part[i]);
		if (!x) {
			x = table_add_table(P, t, &k.part[i], 0, line);
			if (!x) goto out;
		} else if (x->type == TOML_ARRAY && (x->flags & TF_AOT)) {
			x = x->kids[x->nkids - 1];
		} else if (x->type != TOML_TABLE) {
			set_error(P, P->line,
				  "key '%s' is already defined at line %d as %s, not a table",
				  show_path(&k, i + 1, pb), x->line, toml_type_name(x->type));
			goto out;
		}
		t = x;
	}

	struct keypart *last = &k.part[k.n - 1];
	struct toml_node *x = table_find(t, last);
	show_path(&k, k.n, pb);
	if (aot) {
		if (!x) {
			x = node_new(P, TOML_ARRAY, line);
			if (!x) goto out;
			x->flags = TF_AOT;
			if (node_set_key(P, x, last) < 0) {
				toml_free(x);
				goto out;
			}
			if (node_add(P, t, x) < 0) goto out;
		} else if (x->type == TOML_TABLE) {
			set_error(P, P->line, "[[%s]] conflicts with table [%s] defined at line %d",
				  pb, pb, x->line);
			goto out;
		} else if (x->type != TOML_ARRAY || !(x->flags & TF_AOT)) {
			set_error(P, P->line,
				  "[[%s]]: key '%s' is already defined at line %d as %s", pb, pb,
				  x->line, toml_type_name(x->type));
			goto out;
		}
		struct toml_node *e = node_new(P, TOML_TABLE, line);
		if (!e || node_add(P, x, e) < 0) goto out;
		e->flags = TF_EXPLICIT;
		x = e;
	} else if (!x) {
		x = table_add_table(P, t, last, TF_EXPLICIT, line);
		if (!x) goto out;
	} else if (x->type == TOML_TABLE && (x->flags & TF_EXPLICIT)) {
		set_error(P, P->line, "table [%s] is defined twice (first at line %d)", pb,
			  x->line);
		goto out;
	} else if (x->type == TOML_TABLE && (x->flags & TF_DOTTED)) {
		set_error(P, P->line, "table [%s] was already defined with dotted keys at line %d",
			  pb, x->line);
		goto out;
	} else if (x->type == TOML_TABLE) {
		/* Implicit until now: this header is its definition. */
		x->flags |= TF_EXPLICIT;
		x->line = line;
	} else if (x->flags & TF_AOT) {
		set_error(P, P->line,
			  "[%s] conflicts with array of tables [[%s]] defined at line %d", pb, pb,
			  x->line);
		goto out;
	} else {
		set_error(P, P->line, "%s%s%s: key '%s' is already defined at line %d as %s", br,
			  pb, kt, pb, x->line, toml_type_name(x->type));
		goto out;
	}
	P->cur = x;
	memcpy(P->sect, pb, sizeof(P->sect));
	rc = end_of_line(P, "the table header");
out:
	keypath_free(&k);
	return rc;
}

struct toml_node *toml_parse(const char *text, size_t len, struct toml_error *err)
{
	struct parser P = {.p = text, .end = text + len, .line = 1, .err = err};

	err->line = 0;
	err->msg[0] = '\0';
	/* Editors on some systems prepend a byte-order mark; it carries no
	 * meaning in UTF-8. */
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) P.p += 3;
	if (check_utf8(&P) < 0) return NULL;
	P.root = node_new(&P, TOML_TABLE, 1);
	if (!P.root) return NULL;
	P.root->flags = TF_EXPLICIT;
	P.cur = P.root;

	while (!P.failed) {
		skip_ws(&P);
		int c = peek(&P, 0);
		if (c < 0) break;
		if (c == '#') {
			if (comment(&P) < 0) break;
		} else if (c == '\n' || c == '\r') {
			newline(&P);
		} else if (c == '[') {
			header(&P);
		} else {
			if (keyval(&P, P.cur) == 0) end_of_line(&P, "the value");
		}
	}
	if (P.failed) {
		toml_free(P.root);
		return NULL;
	}
	return P.root;
}
