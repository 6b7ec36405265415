/*
 * toml: a small, strict TOML 1.0 parser for mailpopbox.toml.
 *
 * The whole document is parsed into a tree of struct toml_node. A malformed
 * document yields no tree and exactly one error (line + message): the first
 * problem found, since after a syntax error the rest cannot be trusted.
 *
 *	struct toml_error e;
 *	struct toml_node *root = toml_parse(text, len, &e);
 *	if (!root)
 *		fprintf(stderr, "%s:%d: %s\n", path, e.line, e.msg);
 *	const struct toml_node *v = toml_get(root, "hostname");
 *	...
 *	toml_free(root);
 *
 * Supported: comments; bare, quoted and dotted keys; basic and literal
 * strings, single- and multi-line, with every TOML escape; integers
 * (decimal, 0x, 0o, 0b; underscores between digits); booleans; arrays
 * (multi-line, trailing comma, comments inside, nested, mixed types as
 * TOML 1.0 allows: the consumer checks element types); [tables] and
 * [[arrays of tables]] with the TOML 1.0 rules on defining a table once.
 *
 * Refused with a message saying so: floats, dates and times, inline tables
 * ({...}). The config has no use for them; refusing is clearer than a tree
 * node nobody reads.
 *
 * Every node records the line it was defined on: a key/value pair its key's
 * line, an array element the line it starts on, a table the line of its
 * [header] (or of the first dotted key or header that created it).
 */
#ifndef MPB_TOML_H
#define MPB_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum toml_type { TOML_STRING, TOML_INT, TOML_BOOL, TOML_ARRAY, TOML_TABLE };

struct toml_node {
	enum toml_type type;
	int line;
	/* Member of a table: its key (NUL-terminated; keylen because a quoted
	 * key may hold "\u0000"). NULL for array elements and the root. */
	char *key;
	size_t keylen;
	union {
		struct {
			char *s; /* NUL-terminated, UTF-8; may contain NULs */
			size_t len;
		} str;
		int64_t i;
		bool b;
	} v;
	/* TOML_TABLE: members in document order. TOML_ARRAY: elements; an
	 * array of tables ([[x]]) is a TOML_ARRAY of TOML_TABLEs. */
	struct toml_node **kids;
	size_t nkids;

	/* Parser bookkeeping; consumers ignore these. */
	size_t cap;
	unsigned flags;
};

struct toml_error {
	int line; /* 1-based */
	char msg[160];
};

/* Parses len bytes of TEXT (need not be NUL-terminated). Returns the root
 * table, or NULL with *err filled in. */
struct toml_node *toml_parse(const char *text, size_t len, struct toml_error *err);
void toml_free(struct toml_node *n);

/* Member KEY of TABLE, or NULL (also when TABLE is not a table). */
const struct toml_node *toml_get(const struct toml_node *table, const char *key);

/* "a string", "an integer", ...: for messages such as "must be a string,
 * not an integer". */
const char *toml_type_name(enum toml_type t);

#endif
