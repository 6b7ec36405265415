/* Unit tests for core/toml.c: every accepted form, and every malformed one
 * refused with the line a user would look at. */
#include "core/toml.h"

#include <criterion/criterion.h>
#include <string.h>

static struct toml_node *parse_ok(const char *doc)
{
	struct toml_error e;
	struct toml_node *r = toml_parse(doc, strlen(doc), &e);
	cr_assert(r, "unexpected error: %d: %s\n--- document:\n%s", e.line, e.msg, doc);
	return r;
}

/* Parses one line "v = ..." and returns the value node (the tree leaks
 * into *root for the caller to free). */
static const struct toml_node *val(struct toml_node **root, const char *doc)
{
	*root = parse_ok(doc);
	const struct toml_node *v = toml_get(*root, "v");
	cr_assert(v, "no key v in: %s", doc);
	return v;
}

static void refused(const char *doc, int line, const char *needle)
{
	struct toml_error e;
	struct toml_node *r = toml_parse(doc, strlen(doc), &e);
	if (r) toml_free(r);
	cr_assert_null(r, "accepted, should be refused:\n%s", doc);
	cr_expect_eq(e.line, line, "line %d, expected %d (%s) for:\n%s", e.line, line, e.msg, doc);
	cr_expect(strstr(e.msg, needle), "message '%s' lacks '%s' for:\n%s", e.msg, needle, doc);
}

static int64_t int_of(const char *doc)
{
	struct toml_node *r;
	const struct toml_node *v = val(&r, doc);
	cr_assert_eq(v->type, TOML_INT, "%s", doc);
	int64_t i = v->v.i;
	toml_free(r);
	return i;
}

static void str_is(const char *doc, const char *want, size_t wantlen)
{
	struct toml_node *r;
	const struct toml_node *v = val(&r, doc);
	cr_assert_eq(v->type, TOML_STRING, "%s", doc);
	cr_expect_eq(v->v.str.len, wantlen, "len %zu, want %zu: %s", v->v.str.len, wantlen, doc);
	cr_expect(v->v.str.len == wantlen && memcmp(v->v.str.s, want, wantlen) == 0,
		  "got '%s' for %s", v->v.str.s, doc);
	cr_expect_eq(v->v.str.s[v->v.str.len], '\0');
	toml_free(r);
}

#define STR_IS(doc, lit) str_is(doc, lit, sizeof(lit) - 1)

/* ---- strings ---- */

Test(strings, basic_and_every_escape)
{
	STR_IS("v = \"plain\"", "plain");
	STR_IS("v = \"\"", "");
	STR_IS("v = \"\\b\\t\\n\\f\\r\\\"\\\\\"", "\b\t\n\f\r\"\\");
	STR_IS("v = \"caf\\u00e9\"", "caf\xc3\xa9");
	STR_IS("v = \"\\u00E9\\u20AC\"", "\xc3\xa9\xe2\x82\xac");
	STR_IS("v = \"\\U0001F600\"", "\xf0\x9f\x98\x80");
	STR_IS("v = \"\\U0010FFFF\"", "\xf4\x8f\xbf\xbf");
	STR_IS("v = \"a\\u0000b\"", "a\0b");
	STR_IS("v = \"tab\there\"", "tab\there");
	STR_IS("v = \"caf\xc3\xa9 # not a comment\"", "caf\xc3\xa9 # not a comment");
	STR_IS("v = \"'single' inside\"", "'single' inside");
}

Test(strings, literal)
{
	STR_IS("v = 'C:\\Users\\n\\u0000'", "C:\\Users\\n\\u0000");
	STR_IS("v = ''", "");
	STR_IS("v = 'say \"hi\"'", "say \"hi\"");
}

Test(strings, multiline_basic)
{
	STR_IS("v = \"\"\"\nline1\nline2\"\"\"", "line1\nline2");
	STR_IS("v = \"\"\"\r\nline1\r\nline2\r\n\"\"\"", "line1\nline2\n");
	STR_IS("v = \"\"\"one \\\n     two \\\n\n   three\"\"\"", "one two three");
	STR_IS("v = \"\"\"trail \\   \n  x\"\"\"", "trail x");
	STR_IS("v = \"\"\"a\"b\"\"c\"\"\"", "a\"b\"\"c");
	STR_IS("v = \"\"\"quote at end\"\"\"\"", "quote at end\"");
	STR_IS("v = \"\"\"two at end\"\"\"\"\"", "two at end\"\"");
	STR_IS("v = \"\"\"esc \\t \\u00e9\"\"\"", "esc \t \xc3\xa9");
	STR_IS("v = \"\"\"\"\"\"", "");
}

Test(strings, multiline_literal)
{
	STR_IS("v = '''\nraw \\n\n'''", "raw \\n\n");
	STR_IS("v = '''it's'''", "it's");
	STR_IS("v = ''''quoted'''''", "'quoted''");
}

Test(strings, multiline_lines_counted)
{
	struct toml_node *r = parse_ok("a = \"\"\"\n1\n2\n\"\"\"\nb = '''x\n'''\nc = 1\n");
	cr_expect_eq(toml_get(r, "a")->line, 1);
	cr_expect_eq(toml_get(r, "b")->line, 5);
	cr_expect_eq(toml_get(r, "c")->line, 7);
	toml_free(r);
}

Test(strings, bad_escapes)
{
	refused("v = \"\\x41\"", 1, "invalid escape '\\x'");
	refused("a = 1\nv = \"\\e\"", 2, "invalid escape '\\e'");
	refused("v = \"\\u12\"", 1, "4 hex digits");
	refused("v = \"\\u12G4\"", 1, "4 hex digits");
	refused("v = \"\\U0001F60\"", 1, "8 hex digits");
	refused("v = \"\\uD800\"", 1, "not a Unicode scalar value");
	refused("v = \"\\uDFFF\"", 1, "not a Unicode scalar value");
	refused("v = \"\\U00110000\"", 1, "not a Unicode scalar value");
	refused("v = \"a\\ b\"", 1, "invalid escape");
	refused("v = \"a\\", 1, "invalid escape");
	refused("v = \"\"\"x\\ y\"\"\"", 1, "invalid escape");
}

Test(strings, unterminated)
{
	refused("v = \"abc", 1, "unterminated string");
	refused("a = 1\nv = \"abc\nb = 2\n", 2, "unterminated string");
	refused("v = 'abc\n'", 1, "unterminated string");
	refused("a = 1\nv = \"\"\"abc\n\ndef\n", 2, "unterminated multi-line string");
	refused("v = '''abc\n\n", 1, "unterminated multi-line string");
	refused("v = \"\"\"abc\"\"\"\"\"\"", 1, "too many quotes");
}

Test(strings, control_characters)
{
	refused("v = \"a\x01\" \"b\"", 1, "control character 0x01");
	refused("v = \"a\x7f\"", 1, "control character 0x7f");
	refused("v = 'a\x1b'", 1, "control character 0x1b");
	{
		struct toml_error e;
		cr_expect_null(toml_parse("v = \"a\0b\"", 9, &e));
		cr_expect(strstr(e.msg, "control character 0x00"), "%s", e.msg);
	}
	refused("x = 1\nv = \"\"\"a\x02\"\"\"", 2, "control character 0x02");
	refused("v = \"a\rb\"", 1, "bare carriage return");
	refused("v = \"\"\"a\rb\"\"\"", 1, "bare carriage return");
}

/* ---- integers ---- */

Test(integers, decimal)
{
	cr_expect_eq(int_of("v = 0"), 0);
	cr_expect_eq(int_of("v = +0"), 0);
	cr_expect_eq(int_of("v = -0"), 0);
	cr_expect_eq(int_of("v = 42"), 42);
	cr_expect_eq(int_of("v = +17"), 17);
	cr_expect_eq(int_of("v = -17"), -17);
	cr_expect_eq(int_of("v = 1_000"), 1000);
	cr_expect_eq(int_of("v = 5_349_221"), 5349221);
	cr_expect_eq(int_of("v = 1_2_3_4_5"), 12345);
	cr_expect_eq(int_of("v = 9223372036854775807"), INT64_MAX);
	cr_expect_eq(int_of("v = -9223372036854775808"), INT64_MIN);
	cr_expect_eq(int_of("v = 41943040 # bytes"), 41943040);
}

Test(integers, prefixed)
{
	cr_expect_eq(int_of("v = 0xDEADbeef"), 0xdeadbeef);
	cr_expect_eq(int_of("v = 0xdead_beef"), 0xdeadbeef);
	cr_expect_eq(int_of("v = 0x00ff"), 255);
	cr_expect_eq(int_of("v = 0o755"), 0755);
	cr_expect_eq(int_of("v = 0b1101_0110"), 0xd6);
	cr_expect_eq(int_of("v = 0x7FFFFFFFFFFFFFFF"), INT64_MAX);
}

Test(integers, malformed)
{
	refused("v = 01", 1, "leading zeros");
	refused("v = +01", 1, "leading zeros");
	refused("v = -007", 1, "leading zeros");
	refused("v = 1__2", 1, "'_' must be between digits");
	refused("v = 1_", 1, "'_' must be between digits");
	refused("v = _1", 1, "invalid value");
	refused("v = +_1", 1, "'_' must be between digits");
	refused("v = 0x_1", 1, "'_' must be between digits");
	refused("v = -0x1", 1, "no sign allowed");
	refused("v = +0b1", 1, "no sign allowed");
	refused("v = 0x", 1, "invalid integer");
	refused("v = 0b102", 1, "invalid integer");
	refused("v = 0o8", 1, "invalid integer");
	refused("v = 0X1F", 1, "invalid integer");
	refused("v = 12abc", 1, "invalid integer");
	refused("v = +", 1, "invalid integer");
	refused("v = -", 1, "invalid integer");
	refused("v = 1 2", 1, "unexpected '2' after the value");
}

Test(integers, overflow)
{
	refused("v = 9223372036854775808", 1, "out of range");
	refused("v = -9223372036854775809", 1, "out of range");
	refused("v = 99999999999999999999999", 1, "out of range");
	refused("v = 0x8000000000000000", 1, "out of range");
	refused("v = 0xFFFFFFFFFFFFFFFFF", 1, "out of range");
}

Test(integers, floats_and_dates_not_supported)
{
	refused("v = 1.5", 1, "floating-point numbers are not supported");
	refused("v = -0.1", 1, "floating-point numbers are not supported");
	refused("v = 1e5", 1, "floating-point numbers are not supported");
	refused("v = 6.626E-34", 1, "floating-point numbers are not supported");
	refused("v = inf", 1, "floating-point numbers are not supported");
	refused("v = -inf", 1, "floating-point numbers are not supported");
	refused("v = nan", 1, "floating-point numbers are not supported");
	refused("v = 1979-05-27", 1, "dates and times are not supported");
	refused("v = 1979-05-27T07:32:00Z", 1, "dates and times are not supported");
	refused("v = 1979-05-27 07:32:00", 1, "dates and times are not supported");
	refused("v = 07:32:00", 1, "dates and times are not supported");
}

/* ---- booleans ---- */

Test(booleans, values)
{
	struct toml_node *r = parse_ok("t = true\nf = false # no\n");
	cr_expect_eq(toml_get(r, "t")->type, TOML_BOOL);
	cr_expect(toml_get(r, "t")->v.b);
	cr_expect_not(toml_get(r, "f")->v.b);
	toml_free(r);
	refused("v = True", 1, "invalid value");
	refused("v = truee", 1, "invalid value");
	refused("v = yes", 1, "strings need quotes");
	refused("v = true false", 1, "unexpected 'f'");
}

/* ---- arrays ---- */

Test(arrays, forms)
{
	struct toml_node *r = parse_ok("e = []\n"
				       "s = [\"a\", 'b']\n"
				       "t = [1, 2, 3,]\n"
				       "m = [ # comment after bracket\n"
				       "  \"x\", # after an element\n"
				       "\n"
				       "  # a whole comment line\n"
				       "  \"y\"\n"
				       "  ,\n"
				       "]\n"
				       "n = [[1, 2], [\"a\"], []]\n"
				       "x = [1, \"mixed\", true]\n");
	const struct toml_node *v = toml_get(r, "e");
	cr_assert_eq(v->type, TOML_ARRAY);
	cr_expect_eq(v->nkids, 0);
	v = toml_get(r, "s");
	cr_assert_eq(v->nkids, 2);
	cr_expect_str_eq(v->kids[1]->v.str.s, "b");
	cr_expect_null(v->kids[0]->key);
	v = toml_get(r, "t");
	cr_assert_eq(v->nkids, 3);
	cr_expect_eq(v->kids[2]->v.i, 3);
	v = toml_get(r, "m");
	cr_assert_eq(v->nkids, 2);
	cr_expect_eq(v->line, 4);
	cr_expect_eq(v->kids[0]->line, 5);
	cr_expect_eq(v->kids[1]->line, 8);
	cr_expect_str_eq(v->kids[1]->v.str.s, "y");
	/* TOML 1.0 allows nested and mixed arrays; the config checks types. */
	v = toml_get(r, "n");
	cr_assert_eq(v->nkids, 3);
	cr_expect_eq(v->kids[0]->type, TOML_ARRAY);
	cr_expect_eq(v->kids[0]->kids[1]->v.i, 2);
	cr_expect_eq(v->kids[2]->nkids, 0);
	v = toml_get(r, "x");
	cr_assert_eq(v->nkids, 3);
	cr_expect_eq(v->kids[1]->type, TOML_STRING);
	cr_expect_eq(v->kids[2]->type, TOML_BOOL);
	cr_expect_eq(toml_get(r, "x")->line, 12);
	toml_free(r);
}

Test(arrays, malformed)
{
	refused("v = [1, 2", 1, "unterminated array");
	refused("a = 1\nv = [\n1,\n2\n", 2, "unterminated array");
	refused("v = [1 2]", 1, "expected ',' or ']'");
	refused("v = [\n1\n2]", 3, "expected ',' or ']'");
	refused("v = [,]", 1, "invalid value starting with ','");
	refused("v = [1,,2]", 1, "invalid value starting with ','");
	refused("v = [1] 2", 1, "unexpected '2'");
	refused("v = [\"a\" \"b\"]", 1, "expected ',' or ']'");
	refused("v = [1, {a = 1}]", 1, "inline tables");
	refused("v = [\n  \"a\",\n  \"b\n]", 3, "unterminated string");
	refused("v = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]", 1,
		"nested");
}

/* ---- keys and tables ---- */

Test(tables, keys)
{
	struct toml_node *r = parse_ok("bare_key-1 = 1\n"
				       "1234 = 2\n"
				       "\"quoted key\" = 3\n"
				       "'lit.key' = 4\n"
				       "\"\" = 5\n"
				       "\"\\u00e9\" = 6\n"
				       "a . \"b\" . c = 7\n"
				       "true = 8\n");
	cr_expect_eq(toml_get(r, "bare_key-1")->v.i, 1);
	cr_expect_eq(toml_get(r, "1234")->v.i, 2);
	cr_expect_eq(toml_get(r, "quoted key")->v.i, 3);
	cr_expect_eq(toml_get(r, "lit.key")->v.i, 4);
	cr_expect_eq(toml_get(r, "")->v.i, 5);
	cr_expect_eq(toml_get(r, "\xc3\xa9")->v.i, 6);
	const struct toml_node *a = toml_get(r, "a");
	cr_assert_eq(a->type, TOML_TABLE);
	cr_expect_eq(a->line, 7);
	cr_expect_eq(toml_get(toml_get(a, "b"), "c")->v.i, 7);
	cr_expect_eq(toml_get(r, "true")->v.i, 8);
	cr_expect_null(toml_get(r, "missing"));
	cr_expect_null(toml_get(toml_get(r, "true"), "x"));
	toml_free(r);
}

Test(tables, headers)
{
	struct toml_node *r = parse_ok("top = 1\n"
				       "\n"
				       "[smtp]\n"
				       "listen = [\"127.0.0.1:25\"]\n"
				       "[ x . \"y z\" ]   # spaced\n"
				       "k = 2\n"
				       "[x]\n"
				       "j = 3\n"
				       "[fruit]\n"
				       "apple.color = \"red\"\n"
				       "apple.taste.sweet = true\n"
				       "[fruit.apple.texture]\n"
				       "smooth = true\n");
	const struct toml_node *s = toml_get(r, "smtp");
	cr_assert_eq(s->type, TOML_TABLE);
	cr_expect_eq(s->line, 3);
	cr_expect_eq(toml_get(s, "listen")->line, 4);
	const struct toml_node *x = toml_get(r, "x");
	/* x was implicit (line 5) until its own header on line 7 defined it. */
	cr_expect_eq(x->line, 7);
	cr_expect_eq(toml_get(toml_get(x, "y z"), "k")->v.i, 2);
	cr_expect_eq(toml_get(toml_get(x, "y z"), "k")->line, 6);
	cr_expect_eq(toml_get(x, "j")->v.i, 3);
	const struct toml_node *apple = toml_get(toml_get(r, "fruit"), "apple");
	cr_expect_str_eq(toml_get(apple, "color")->v.str.s, "red");
	cr_expect(toml_get(toml_get(apple, "taste"), "sweet")->v.b);
	cr_expect(toml_get(toml_get(apple, "texture"), "smooth")->v.b);
	cr_expect_eq(toml_get(r, "top")->v.i, 1);
	toml_free(r);
}

Test(tables, arrays_of_tables)
{
	struct toml_node *r = parse_ok("[[domain]]\n"
				       "name = \"a.example\"\n"
				       "\n"
				       "[[domain]] # second\n"
				       "name = \"b.example\"\n"
				       "[domain.extra]\n"
				       "k = 1\n"
				       "[[domain.alias]]\n"
				       "n = 1\n"
				       "[[domain.alias]]\n"
				       "n = 2\n"
				       "[[ other ]]\n");
	const struct toml_node *d = toml_get(r, "domain");
	cr_assert_eq(d->type, TOML_ARRAY);
	cr_assert_eq(d->nkids, 2);
	cr_expect_eq(d->kids[0]->type, TOML_TABLE);
	cr_expect_eq(d->kids[0]->line, 1);
	cr_expect_eq(d->kids[1]->line, 4);
	cr_expect_str_eq(toml_get(d->kids[0], "name")->v.str.s, "a.example");
	cr_expect_str_eq(toml_get(d->kids[1], "name")->v.str.s, "b.example");
	cr_expect_null(toml_get(d->kids[0], "extra"));
	cr_expect_eq(toml_get(toml_get(d->kids[1], "extra"), "k")->v.i, 1);
	const struct toml_node *al = toml_get(d->kids[1], "alias");
	cr_assert_eq(al->nkids, 2);
	cr_expect_eq(toml_get(al->kids[1], "n")->v.i, 2);
	cr_expect_eq(toml_get(r, "other")->nkids, 1);
	toml_free(r);
}

Test(tables, redefinitions_refused)
{
	refused("[a]\nx = 1\n[b]\n[a]\n", 4, "table [a] is defined twice (first at line 1)");
	refused("[a.b]\n[a]\n[a]\n", 3, "defined twice (first at line 2)");
	refused("[a]\nb.c = 1\n[a.b]\n", 3, "already defined with dotted keys at line 2");
	refused("a.b = 1\n[a]\n", 2, "already defined with dotted keys");
	refused("[a.b]\nx = 1\n[a]\nb.y = 2\n", 4, "cannot add to table [a.b]");
	refused("a = 1\n[a]\n", 2, "already defined at line 1 as an integer");
	refused("a = 1\n[a.b]\n", 2, "already defined at line 1 as an integer");
	refused("a = [1]\n[[a]]\n", 2, "already defined at line 1 as an array");
	refused("a = []\n[a.b]\n", 2, "already defined at line 1 as an array");
	refused("[a]\n[[a]]\n", 2, "conflicts with table [a]");
	refused("[[a]]\n[a]\n", 2, "conflicts with array of tables [[a]]");
	refused("a = 1\na.b = 2\n", 2, "already defined at line 1 as an integer");
	refused("a.b = 1\na.b.c = 2\n", 2, "already defined at line 1 as an integer");
	refused("[[d]]\n[s]\n[[d]]\nx=1\n[d.s]\n[d.s]\n", 6, "defined twice (first at line 5)");
}

Test(tables, duplicate_keys)
{
	refused("a = 1\nb = 2\na = 3\n", 3, "duplicate key 'a' (first defined at line 1)");
	refused("[t]\nx = 1\n\"x\" = 2\n", 3, "duplicate key 'x'");
	refused("[t]\nx = 1\n'x' = 2\n", 3, "duplicate key 'x'");
	refused("a.b = 1\na.b = 2\n", 2, "duplicate key 'a.b'");
	refused("[a.b]\n[a]\nb = 1\n", 3, "duplicate key 'b'");
	refused("[[d]]\nn = 1\nn = 2\n", 3, "duplicate key 'n'");
	/* Same key in two elements of an array of tables is fine. */
	toml_free(parse_ok("[[d]]\nn = 1\n[[d]]\nn = 2\n"));
}

Test(tables, header_syntax)
{
	refused("[a\nx=1\n", 1, "expected ']' to close");
	refused("x = 1\n[]\n", 2, "expected a key");
	refused("[[a]\n", 1, "expected ']]' to close");
	refused("[[a] ]\n", 1, "expected ']]' to close");
	refused("[ [a] ]\n", 1, "expected a key, found '['");
	refused("[a] x = 1\n", 1, "unexpected 'x' after the table header");
	refused("[a]]\n", 1, "unexpected ']'");
	refused("[a.]\n", 1, "expected a key after '.'");
	refused("[a b]\n", 1, "expected ']'");
	refused("[\"\"\"a\"\"\"]\n", 1, "multi-line string cannot be a key");
}

Test(tables, keyval_syntax)
{
	refused("a = 1\nkey\n", 2, "key 'key' has no value");
	refused("key # comment\n", 1, "key 'key' has no value");
	refused("a =\n", 1, "missing value for key 'a'");
	refused("a = # nothing\n", 1, "missing value for key 'a'");
	refused("a = ", 1, "missing value");
	refused("= 1\n", 1, "expected a key, found '='");
	refused("a b = 1\n", 1, "expected '=' after key 'a', found 'b'");
	refused("a.b. = 1\n", 1, "expected a key after '.'");
	refused("a = \"x\" y\n", 1, "unexpected 'y' after the value");
	refused("a = 'x'z\n", 1, "unexpected 'z'");
	refused("a = \"x\" \"y\"\n", 1, "unexpected '\"'");
	refused("a = {b = 1}\n", 1, "inline tables ({...}) are not supported");
	refused("a = hello\n", 1, "strings need quotes");
	refused("\"\"\"k\"\"\" = 1\n", 1, "multi-line string cannot be a key");
	refused("\"k\n", 1, "unterminated string");
	refused("a = 1\r\nb = 2\n\xff = 3\n", 3, "invalid UTF-8");
	refused("a = \"\xc0\xaf\"\n", 1, "invalid UTF-8");	   /* overlong */
	refused("a = \"\xed\xa0\x80\"\n", 1, "invalid UTF-8");	   /* surrogate */
	refused("a = \"\xf4\x90\x80\x80\"\n", 1, "invalid UTF-8"); /* > U+10FFFF */
	refused("a = \"\xe2\x82\"", 1, "invalid UTF-8");	   /* truncated */
}

/* ---- comments, whitespace, newlines ---- */

Test(comments, everywhere)
{
	struct toml_node *r = parse_ok("# leading comment\n"
				       "   # indented comment\n"
				       "\t\n"
				       "a = 1 # trailing\n"
				       "b = \"#not\" #c\n"
				       "[t] # after header\n"
				       "  x = [ # in array\n"
				       "    1, # after element\n"
				       "    # own line\n"
				       "  ] # after array\n"
				       "[[d]]#tight\n"
				       "# tab\tand caf\xc3\xa9 in comment\n"
				       "y = 2 # no newline at end");
	cr_expect_eq(toml_get(r, "a")->v.i, 1);
	cr_expect_str_eq(toml_get(r, "b")->v.str.s, "#not");
	cr_expect_eq(toml_get(toml_get(r, "t"), "x")->nkids, 1);
	const struct toml_node *d = toml_get(r, "d");
	cr_expect_eq(toml_get(d->kids[0], "y")->line, 13);
	toml_free(r);
	toml_free(parse_ok(""));
	toml_free(parse_ok("# only a comment"));
	toml_free(parse_ok("\n\n\n"));
}

Test(comments, control_characters_refused)
{
	refused("a = 1\n# bell \x07 here\n", 2, "control character 0x07 in comment");
	refused("a = 1 # del \x7f\n", 1, "control character 0x7f in comment");
	refused("# a\rb\n", 1, "bare carriage return");
}

Test(newlines, crlf_and_bare_cr)
{
	struct toml_node *r = parse_ok("a = 1\r\n# c\r\n[t]\r\nb = [\r\n 1,\r\n]\r\nc = 3\r\n");
	const struct toml_node *t = toml_get(r, "t");
	cr_expect_eq(t->line, 3);
	cr_expect_eq(toml_get(t, "c")->line, 7);
	toml_free(r);
	refused("a = 1\rb = 2\n", 1, "bare carriage return");
	refused("a = 1\n\r\n\rb = 2\n", 3, "bare carriage return");
	refused("a = [1,\r2]\n", 1, "bare carriage return");
	refused("a = 1 # x\r", 1, "bare carriage return");
}

Test(misc, bom_and_type_names)
{
	toml_free(parse_ok("\xef\xbb\xbf"
			   "a = 1\n"));
	cr_expect_str_eq(toml_type_name(TOML_STRING), "a string");
	cr_expect_str_eq(toml_type_name(TOML_INT), "an integer");
	cr_expect_str_eq(toml_type_name(TOML_BOOL), "a boolean");
	cr_expect_str_eq(toml_type_name(TOML_ARRAY), "an array");
	cr_expect_str_eq(toml_type_name(TOML_TABLE), "a table");
	toml_free(NULL);
}

Test(misc, not_nul_terminated)
{
	/* The parser must honour len, not look for a NUL. */
	char doc[] = "a = 12345";
	struct toml_error e;
	struct toml_node *r = toml_parse(doc, 6, &e);
	cr_assert(r, "%s", e.msg);
	cr_expect_eq(toml_get(r, "a")->v.i, 12);
	toml_free(r);
}
