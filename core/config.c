#include "core/config.h"

#include "core/toml.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

const char *const svc_names[SVC_COUNT] = {"smtp", "submission", "submissions", "pop3", "pop3s"};

/* A config is a few kilobytes; a file this large is a mistake, not a config. */
#define CONFIG_MAX_BYTES (1 << 20)

/* Which service keys were written, so that unset ones can be inherited
 * (submission and submissions from smtp, pop3s from pop3). */
enum {
	SET_SIZE = 1 << 0,
	SET_RCPT = 1 << 1,
	SET_CONN = 1 << 2,
	SET_CONN_IP = 1 << 3,
	SET_TIMEOUT = 1 << 4,
	SET_PLAIN = 1 << 5,
};

/* Every listen address seen so far, to catch one listed twice: with
 * SO_REUSEPORT a second bind would not even fail, the kernel would just
 * split connections between two services. */
struct seen_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	int line;
};

struct loader {
	const char *path;
	FILE *err;
	int nerr;
	struct config *cfg;
	int svc_line[SVC_COUNT];
	unsigned set[SVC_COUNT];
	bool retry_set;
	bool any_cert;
	struct seen_addr *seen;
	size_t nseen;
};

static void cfg_error(struct loader *L, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void cfg_error(struct loader *L, int line, const char *fmt, ...)
{
	va_list ap;
	fprintf(L->err, "%s:%d: ", L->path, line);
	va_start(ap, fmt);
	vfprintf(L->err, fmt, ap);
	fputc('\n', L->err);
	va_end(ap);
	L->nerr++;
}

/* User text inside a message: quoted by the caller, made printable here, cut
 * when long, so a stray byte cannot garble a terminal or a log line. */
static const char *shown(const char *s, char buf[72])
{
	size_t o = 0;
	for (; *s && o < 64; s++)
		buf[o++] = (unsigned char)*s >= 0x20 && (unsigned char)*s != 0x7f ? *s : '?';
	if (*s) {
		memcpy(buf + o, "...", 3);
		o += 3;
	}
	buf[o] = '\0';
	return buf;
}

static char *dup_str(struct loader *L, int line, const char *s)
{
	char *d = strdup(s);
	if (!d) cfg_error(L, line, "out of memory");
	return d;
}

static bool want(struct loader *L, const struct toml_node *v, enum toml_type t, const char *ctx)
{
	if (v->type == t) return true;
	cfg_error(L, v->line, "%s: must be %s, not %s", ctx, toml_type_name(t),
		  toml_type_name(v->type));
	return false;
}

/* A string value, or NULL after reporting why not. NULs are refused: every
 * consumer takes C strings and would silently cut them. */
static const char *get_str(struct loader *L, const struct toml_node *v, const char *ctx)
{
	if (!want(L, v, TOML_STRING, ctx)) return NULL;
	if (strlen(v->v.str.s) != v->v.str.len) {
		cfg_error(L, v->line, "%s: must not contain NUL characters", ctx);
		return NULL;
	}
	return v->v.str.s;
}

static bool get_int(struct loader *L, const struct toml_node *v, const char *ctx, int64_t min,
		    int64_t max, int64_t *out)
{
	if (!want(L, v, TOML_INT, ctx)) return false;
	if (v->v.i < min || v->v.i > max) {
		cfg_error(L, v->line, "%s: %lld is out of range (%lld to %lld)", ctx,
			  (long long)v->v.i, (long long)min, (long long)max);
		return false;
	}
	*out = v->v.i;
	return true;
}

static bool get_bool(struct loader *L, const struct toml_node *v, const char *ctx, bool *out)
{
	if (!want(L, v, TOML_BOOL, ctx)) return false;
	*out = v->v.b;
	return true;
}

/* Durations are at least one second (a zero timeout or retry interval
 * would spin) and fit the uint32_t seconds of the struct. */
static bool get_duration(struct loader *L, const struct toml_node *v, const char *ctx,
			 uint32_t *out)
{
	char b[72];
	const char *s = get_str(L, v, ctx);
	if (!s) return false;
	int64_t d = config_parse_duration(s);
	if (d < 0) {
		cfg_error(L, v->line,
			  "%s: invalid duration '%s' (a whole number and a unit s, m, h or d, "
			  "as in \"30s\", \"5m\", \"2h\", \"5d\")",
			  ctx, shown(s, b));
		return false;
	}
	if (d == 0) {
		cfg_error(L, v->line, "%s: duration must not be zero", ctx);
		return false;
	}
	if (d > UINT32_MAX) {
		cfg_error(L, v->line, "%s: duration '%s' is too long", ctx, shown(s, b));
		return false;
	}
	*out = (uint32_t)d;
	return true;
}

/* One of NAMES (NULL-terminated); its index, or -1 after reporting. */
static int get_enum(struct loader *L, const struct toml_node *v, const char *ctx,
		    const char *const *names, const char *list)
{
	char b[72];
	const char *s = get_str(L, v, ctx);
	if (!s) return -1;
	for (int i = 0; names[i]; i++)
		if (strcmp(s, names[i]) == 0) return i;
	cfg_error(L, v->line, "%s: '%s' is not one of %s", ctx, shown(s, b), list);
	return -1;
}

/* SECT is the section's name ("smtp", "domain", "" at the top), ARRAY
 * whether it is an array of tables, for "in [[domain]]". */
static void unknown(struct loader *L, const struct toml_node *kid, const char *sect, bool array)
{
	char b[72];
	const char *k = shown(kid->key, b);
	if (kid->type == TOML_TABLE)
		cfg_error(L, kid->line, "unknown table [%s%s%s]", sect, *sect ? "." : "", k);
	else if (*sect)
		cfg_error(L, kid->line, "unknown key '%s' in %s%s%s", k, array ? "[[" : "[", sect,
			  array ? "]]" : "]");
	else
		cfg_error(L, kid->line, "unknown key '%s'", k);
}

static bool is_key(const struct toml_node *kid, const char *k)
{
	return kid->keylen == strlen(k) && memcmp(kid->key, k, kid->keylen) == 0;
}

static void lower(char *s)
{
	for (; *s; s++)
		if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
}

/*
 * Host name syntax (RFC 1035 2.3.1 as relaxed by RFC 1123 2.1): labels of
 * letters, digits and hyphens, not starting or ending with a hyphen, 1 to 63
 * octets, 253 in all. A single label ("localhost") is allowed for tests.
 */
static bool is_domain(const char *s)
{
	size_t n = strlen(s), label = 0;
	if (n == 0 || n > 253) return false;
	for (size_t i = 0; i <= n; i++) {
		char c = s[i];
		if (c == '.' || c == '\0') {
			if (label == 0 || label > 63 || s[i - 1] == '-') return false;
			label = 0;
			continue;
		}
		bool alnum =
		    (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && !(c == '-' && label > 0)) return false;
		label++;
	}
	return true;
}

/* local@domain as it could appear at RCPT: a non-empty local part without
 * blanks, controls or angle brackets (UTF-8 allowed, RFC 6531), and a
 * domain that is a host name. */
static bool is_address(const char *s)
{
	const char *at = strrchr(s, '@');
	if (!at || at == s || at - s > 64) return false;
	for (const char *p = s; p < at; p++) {
		unsigned char c = (unsigned char)*p;
		if (c <= 0x20 || c == 0x7f || c == '<' || c == '>') return false;
	}
	return is_domain(at + 1);
}

/* ---- public parsers ---- */

int64_t config_parse_duration(const char *s)
{
	int64_t v = 0, mult;
	const char *p = s;
	if (!s || *p < '0' || *p > '9') return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		int d = *p - '0';
		if (v > (INT64_MAX - d) / 10) return -1;
		v = v * 10 + d;
	}
	switch (*p) {
	case 's': mult = 1; break;
	case 'm': mult = 60; break;
	case 'h': mult = 3600; break;
	case 'd': mult = 86400; break;
	default: return -1;
	}
	if (p[1] != '\0' || v > INT64_MAX / mult) return -1;
	return v * mult;
}

/* 0..65535, digits only: no sign, no blanks, nothing after. */
static int parse_port(const char *s)
{
	long v = 0;
	size_t n = 0;
	for (; s[n]; n++) {
		if (s[n] < '0' || s[n] > '9' || n == 5) return -1;
		v = v * 10 + (s[n] - '0');
	}
	return n == 0 || v > 65535 ? -1 : (int)v;
}

int config_parse_addr(const char *s, struct listen_addr *out)
{
	struct listen_addr a;
	char host[INET6_ADDRSTRLEN];
	const char *hs, *portp;
	size_t hl, n = strlen(s);
	int port;

	memset(&a, 0, sizeof(a));
	if (n == 0 || n >= sizeof(a.text)) return -1;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':') return -1;
		hs = s + 1;
		hl = (size_t)(rb - hs);
		portp = rb + 2;
	} else {
		/* An IPv6 address needs brackets, or its last group would read
		 * as the port. */
		const char *colon = strchr(s, ':');
		if (!colon || strchr(colon + 1, ':')) return -1;
		hs = s;
		hl = (size_t)(colon - s);
		portp = colon + 1;
	}
	if (hl == 0 || hl >= sizeof(host) || (port = parse_port(portp)) < 0) return -1;
	memcpy(host, hs, hl);
	host[hl] = '\0';
	if (s[0] == '[') {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a.ss;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		a.len = sizeof(*sin6);
	} else {
		/* inet_pton(AF_INET) takes only the dotted quad: no "10.1",
		 * no octal, unlike inet_aton. */
		struct sockaddr_in *sin = (struct sockaddr_in *)&a.ss;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons((uint16_t)port);
		a.len = sizeof(*sin);
	}
	memcpy(a.text, s, n + 1);
	*out = a;
	return 0;
}

static uint16_t addr_port(const struct listen_addr *a)
{
	const struct sockaddr_storage *ss = &a->ss;
	if (ss->ss_family == AF_INET6) return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

int config_find_domain(const struct config *cfg, const char *name, size_t n)
{
	for (unsigned i = 0; i < cfg->ndomains; i++) {
		const char *d = cfg->domains[i].name;
		if (d && strlen(d) == n && strncasecmp(d, name, n) == 0) return (int)i;
	}
	return -1;
}

/* ---- sections ---- */

static void load_listen(struct loader *L, struct service_config *s, const struct toml_node *v,
			const char *ctx)
{
	char b[72];
	if (!want(L, v, TOML_ARRAY, ctx)) return;
	if (v->nkids == 0) return;
	s->listen = calloc(v->nkids, sizeof(*s->listen));
	if (!s->listen) {
		cfg_error(L, v->line, "out of memory");
		return;
	}
	for (size_t i = 0; i < v->nkids; i++) {
		const struct toml_node *e = v->kids[i];
		const char *str = get_str(L, e, ctx);
		struct listen_addr *a = &s->listen[s->nlisten];
		if (!str) continue;
		if (config_parse_addr(str, a) < 0) {
			cfg_error(L, e->line,
				  "%s: invalid address '%s' (expected \"IP:PORT\" or "
				  "\"[IPv6]:PORT\", port 0 to 65535)",
				  ctx, shown(str, b));
			continue;
		}
		s->nlisten++;
		if (addr_port(a) == 0) /* ephemeral: every bind gets its own port */
			continue;
		bool dup = false;
		for (size_t j = 0; j < L->nseen && !dup; j++) {
			if (L->seen[j].len == a->len &&
			    memcmp(&L->seen[j].ss, &a->ss, a->len) == 0) {
				cfg_error(L, e->line,
					  "%s: address '%s' is already listed at line %d", ctx,
					  shown(str, b), L->seen[j].line);
				dup = true;
			}
		}
		struct seen_addr *ns = realloc(L->seen, (L->nseen + 1) * sizeof(*ns));
		if (!ns) {
			cfg_error(L, e->line, "out of memory");
			continue;
		}
		L->seen = ns;
		ns[L->nseen].ss = a->ss;
		ns[L->nseen].len = a->len;
		ns[L->nseen].line = e->line;
		L->nseen++;
	}
}

static void load_service(struct loader *L, enum svc_kind k, const struct toml_node *t)
{
	struct service_config *s = &L->cfg->svc[k];
	bool smtp_like = k == SVC_SMTP || k == SVC_SUBMISSION || k == SVC_SUBMISSIONS;
	char ctx[64];
	int64_t i;

	L->svc_line[k] = t->line;
	for (size_t n = 0; n < t->nkids; n++) {
		const struct toml_node *v = t->kids[n];
		snprintf(ctx, sizeof(ctx), "%s.%s", svc_names[k], v->key);
		if (is_key(v, "listen")) {
			load_listen(L, s, v, ctx);
		} else if (smtp_like && is_key(v, "max_message_size")) {
			if (get_int(L, v, ctx, 1024, INT64_MAX, &i))
				s->max_message_size = (uint64_t)i;
			L->set[k] |= SET_SIZE;
		} else if (smtp_like && is_key(v, "max_recipients")) {
			if (get_int(L, v, ctx, 1, 10000, &i)) s->max_recipients = (uint32_t)i;
			L->set[k] |= SET_RCPT;
		} else if (is_key(v, "max_connections")) {
			if (get_int(L, v, ctx, 1, 1000000, &i)) s->max_connections = (uint32_t)i;
			L->set[k] |= SET_CONN;
		} else if (is_key(v, "max_connections_per_ip")) {
			if (get_int(L, v, ctx, 1, 1000000, &i))
				s->max_connections_per_ip = (uint32_t)i;
			L->set[k] |= SET_CONN_IP;
		} else if (is_key(v, "timeout")) {
			get_duration(L, v, ctx, &s->timeout_s);
			L->set[k] |= SET_TIMEOUT;
		} else if (!smtp_like && is_key(v, "allow_plaintext_auth")) {
			get_bool(L, v, ctx, &s->allow_plaintext_auth);
			L->set[k] |= SET_PLAIN;
		} else {
			unknown(L, v, svc_names[k], false);
		}
	}
	s->enabled = s->nlisten > 0;
}

/* Values not written in TO's table come from FROM's (already resolved). */
static void inherit(struct loader *L, enum svc_kind to, enum svc_kind from)
{
	struct service_config *d = &L->cfg->svc[to];
	const struct service_config *s = &L->cfg->svc[from];
	unsigned set = L->set[to];

	if (!(set & SET_SIZE)) d->max_message_size = s->max_message_size;
	if (!(set & SET_RCPT)) d->max_recipients = s->max_recipients;
	if (!(set & SET_CONN)) d->max_connections = s->max_connections;
	if (!(set & SET_CONN_IP)) d->max_connections_per_ip = s->max_connections_per_ip;
	if (!(set & SET_TIMEOUT)) d->timeout_s = s->timeout_s;
	if (!(set & SET_PLAIN)) d->allow_plaintext_auth = s->allow_plaintext_auth;
}

static void load_tls(struct loader *L, const struct toml_node *t)
{
	for (size_t n = 0; n < t->nkids; n++) {
		const struct toml_node *v = t->kids[n];
		if (is_key(v, "ktls"))
			get_bool(L, v, "tls.ktls", &L->cfg->ktls);
		else
			unknown(L, v, "tls", false);
	}
}

static void load_storage(struct loader *L, const struct toml_node *t)
{
	static const char *const modes[] = {"full", "none", NULL};
	for (size_t n = 0; n < t->nkids; n++) {
		const struct toml_node *v = t->kids[n];
		int m;
		if (!is_key(v, "sync"))
			unknown(L, v, "storage", false);
		else if ((m = get_enum(L, v, "storage.sync", modes, "\"full\", \"none\"")) >= 0)
			L->cfg->sync = m == 0 ? SYNC_FULL : SYNC_NONE;
	}
}

/* "host:port": a host name, an IPv4 address or a bracketed IPv6 address,
 * and a port a connection can be made to. */
static bool is_hostport(const char *s)
{
	const char *colon = strrchr(s, ':');
	char host[256];
	size_t hl;

	if (!colon || parse_port(colon + 1) <= 0) return false;
	hl = (size_t)(colon - s);
	if (hl == 0 || hl >= sizeof(host)) return false;
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (host[0] == '[') {
		struct in6_addr a6;
		if (hl < 3 || host[hl - 1] != ']') return false;
		host[hl - 1] = '\0';
		return inet_pton(AF_INET6, host + 1, &a6) == 1;
	}
	return is_domain(host);
}

static void load_retry(struct loader *L, const struct toml_node *v)
{
	struct relay_config *r = &L->cfg->relay;
	L->retry_set = true;
	if (!want(L, v, TOML_ARRAY, "relay.retry")) return;
	if (v->nkids == 0) {
		cfg_error(L, v->line, "relay.retry: must list at least one interval");
		return;
	}
	r->retry_s = calloc(v->nkids, sizeof(*r->retry_s));
	if (!r->retry_s) {
		cfg_error(L, v->line, "out of memory");
		return;
	}
	for (size_t i = 0; i < v->nkids; i++)
		if (get_duration(L, v->kids[i], "relay.retry", &r->retry_s[r->nretry])) r->nretry++;
}

static void load_nameservers(struct loader *L, const struct toml_node *v)
{
	struct relay_config *r = &L->cfg->relay;
	char b[72];
	if (!want(L, v, TOML_ARRAY, "relay.nameservers") || v->nkids == 0) return;
	r->nameservers = calloc(v->nkids, sizeof(*r->nameservers));
	if (!r->nameservers) {
		cfg_error(L, v->line, "out of memory");
		return;
	}
	for (size_t i = 0; i < v->nkids; i++) {
		const struct toml_node *e = v->kids[i];
		const char *s = get_str(L, e, "relay.nameservers");
		struct listen_addr a;
		if (!s) continue;
		if (config_parse_addr(s, &a) < 0 || addr_port(&a) == 0) {
			cfg_error(L, e->line,
				  "relay.nameservers: invalid address '%s' (expected \"IP:PORT\" "
				  "or \"[IPv6]:PORT\", port 1 to 65535)",
				  shown(s, b));
			continue;
		}
		if ((r->nameservers[r->nnameservers] = dup_str(L, e->line, s))) r->nnameservers++;
	}
}

static void load_relay(struct loader *L, const struct toml_node *t)
{
	static const char *const tls_modes[] = {"opportunistic", "required", "none", NULL};
	static const enum relay_tls tls_vals[] = {RELAY_TLS_OPPORTUNISTIC, RELAY_TLS_REQUIRED,
						  RELAY_TLS_NONE};
	struct relay_config *r = &L->cfg->relay;
	char b[72];
	const char *s;
	int64_t i;
	int m;

	for (size_t n = 0; n < t->nkids; n++) {
		const struct toml_node *v = t->kids[n];
		if (is_key(v, "queue")) {
			if ((s = get_str(L, v, "relay.queue")) && *s)
				r->queue = dup_str(L, v->line, s);
		} else if (is_key(v, "nameservers")) {
			load_nameservers(L, v);
		} else if (is_key(v, "port")) {
			if (get_int(L, v, "relay.port", 1, 65535, &i)) r->port = (uint16_t)i;
		} else if (is_key(v, "smarthost")) {
			if (!(s = get_str(L, v, "relay.smarthost")) || !*s) continue;
			if (!is_hostport(s))
				cfg_error(L, v->line,
					  "relay.smarthost: invalid '%s' (expected \"host:port\", "
					  "port 1 to 65535)",
					  shown(s, b));
			else
				r->smarthost = dup_str(L, v->line, s);
		} else if (is_key(v, "retry")) {
			load_retry(L, v);
		} else if (is_key(v, "max_queue_time")) {
			get_duration(L, v, "relay.max_queue_time", &r->max_queue_time_s);
		} else if (is_key(v, "tls")) {
			m = get_enum(L, v, "relay.tls", tls_modes,
				     "\"opportunistic\", \"required\", \"none\"");
			if (m >= 0) r->tls = tls_vals[m];
		} else {
			unknown(L, v, "relay", false);
		}
	}
}

static void load_blocked(struct loader *L, struct domain_config *d, const struct toml_node *v)
{
	char b[72];
	if (!want(L, v, TOML_ARRAY, "domain.blocked") || v->nkids == 0) return;
	d->blocked = calloc(v->nkids, sizeof(*d->blocked));
	if (!d->blocked) {
		cfg_error(L, v->line, "out of memory");
		return;
	}
	for (size_t i = 0; i < v->nkids; i++) {
		const struct toml_node *e = v->kids[i];
		const char *s = get_str(L, e, "domain.blocked");
		if (!s) continue;
		if (!is_address(s)) {
			cfg_error(
			    L, e->line,
			    "domain.blocked: invalid address '%s' (expected \"local@domain\")",
			    shown(s, b));
			continue;
		}
		char *a = dup_str(L, e->line, s);
		if (!a) continue;
		/* Matched against RCPT case-insensitively: store one case. */
		lower(a);
		d->blocked[d->nblocked++] = a;
	}
}

/* A path string for a domain: present and non-empty. "" for tls_cert and
 * tls_key means absent, as it does for user and smarthost. */
static void load_path(struct loader *L, const struct toml_node *v, const char *ctx, char **out,
		      bool empty_ok)
{
	const char *s = get_str(L, v, ctx);
	if (!s) return;
	if (!*s) {
		if (!empty_ok) cfg_error(L, v->line, "%s: must not be empty", ctx);
		return;
	}
	*out = dup_str(L, v->line, s);
}

static void load_domain(struct loader *L, const struct toml_node *t)
{
	struct config *cfg = L->cfg;
	struct domain_config *d = &cfg->domains[cfg->ndomains++];
	int name_line = t->line, cert_line = 0, key_line = 0;
	char b[72];
	const char *s;

	d->line = t->line;
	for (size_t n = 0; n < t->nkids; n++) {
		const struct toml_node *v = t->kids[n];
		if (is_key(v, "name")) {
			name_line = v->line;
			if (!(s = get_str(L, v, "domain.name"))) continue;
			if (!is_domain(s)) {
				cfg_error(L, v->line,
					  "domain.name: '%s' is not a domain name (labels of "
					  "letters, digits and hyphens, separated by dots)",
					  shown(s, b));
				continue;
			}
			if (!(d->name = dup_str(L, v->line, s))) continue;
			lower(d->name);
		} else if (is_key(v, "password")) {
			/* load_path never quotes the value back: a password must
			 * not end up in a terminal or a log, even when wrong. */
			load_path(L, v, "domain.password", &d->password, false);
		} else if (is_key(v, "maildrop")) {
			load_path(L, v, "domain.maildrop", &d->maildrop, false);
		} else if (is_key(v, "tls_cert")) {
			cert_line = v->line;
			load_path(L, v, "domain.tls_cert", &d->tls_cert, true);
		} else if (is_key(v, "tls_key")) {
			key_line = v->line;
			load_path(L, v, "domain.tls_key", &d->tls_key, true);
		} else if (is_key(v, "blocked")) {
			load_blocked(L, d, v);
		} else {
			unknown(L, v, "domain", true);
		}
	}
	if (d->password) d->password_hashed = d->password[0] == '$';

	/* Missing keys point at the [[domain]] header: there is no better
	 * line for something that is not there. */
	if (!toml_get(t, "name")) cfg_error(L, d->line, "[[domain]] has no 'name'");
	if (!toml_get(t, "password")) cfg_error(L, d->line, "[[domain]] has no 'password'");
	if (!toml_get(t, "maildrop")) cfg_error(L, d->line, "[[domain]] has no 'maildrop'");
	if (d->tls_cert && !d->tls_key)
		cfg_error(L, cert_line,
			  "domain.tls_cert is set but domain.tls_key is not: "
			  "a certificate needs its key");
	if (d->tls_key && !d->tls_cert)
		cfg_error(L, key_line, "domain.tls_key is set but domain.tls_cert is not");
	if (d->tls_cert) L->any_cert = true;

	if (d->name) {
		for (unsigned i = 0; i + 1 < cfg->ndomains; i++) {
			if (cfg->domains[i].name && strcmp(cfg->domains[i].name, d->name) == 0) {
				cfg_error(L, name_line,
					  "duplicate domain '%s' (first defined in the "
					  "[[domain]] at line %d)",
					  shown(d->name, b), cfg->domains[i].line);
				break;
			}
		}
	}
}

static void load_domains(struct loader *L, const struct toml_node *v)
{
	struct config *cfg = L->cfg;
	if (v->type != TOML_ARRAY) {
		cfg_error(L, v->line, "domain: must be an array of tables ([[domain]]), not %s",
			  toml_type_name(v->type));
		return;
	}
	if (v->nkids == 0) return;
	cfg->domains = calloc(v->nkids, sizeof(*cfg->domains));
	if (!cfg->domains) {
		cfg_error(L, v->line, "out of memory");
		return;
	}
	for (size_t i = 0; i < v->nkids; i++) {
		if (v->kids[i]->type != TOML_TABLE)
			cfg_error(L, v->kids[i]->line,
				  "domain: must be an array of tables ([[domain]]), not an array "
				  "holding %s",
				  toml_type_name(v->kids[i]->type));
		else
			load_domain(L, v->kids[i]);
	}
}

static void load_top(struct loader *L, const struct toml_node *root)
{
	static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
	struct config *cfg = L->cfg;
	bool have_hostname = false;
	char b[72];
	const char *s;
	int64_t i;
	int m;

	for (size_t n = 0; n < root->nkids; n++) {
		const struct toml_node *v = root->kids[n];
		int k;
		for (k = 0; k < SVC_COUNT; k++)
			if (is_key(v, svc_names[k])) break;
		if (k < SVC_COUNT) {
			if (want(L, v, TOML_TABLE, svc_names[k]))
				load_service(L, (enum svc_kind)k, v);
		} else if (is_key(v, "hostname")) {
			have_hostname = true;
			if (!(s = get_str(L, v, "hostname"))) continue;
			bool ok = *s && strlen(s) <= 253;
			for (const char *p = s; *p && ok; p++)
				ok = (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f;
			if (!ok)
				cfg_error(
				    L, v->line,
				    "hostname: '%s' is not a host name (non-empty, no blanks)",
				    shown(s, b));
			else
				cfg->hostname = dup_str(L, v->line, s);
		} else if (is_key(v, "workers")) {
			if (get_int(L, v, "workers", 0, 256, &i)) cfg->workers = (unsigned)i;
		} else if (is_key(v, "log_level")) {
			if ((m = get_enum(L, v, "log_level", levels,
					  "\"debug\", \"info\", \"warn\", \"error\"")) >= 0)
				cfg->log_level = (enum log_level)m;
		} else if (is_key(v, "user")) {
			if ((s = get_str(L, v, "user")) && *s) cfg->user = dup_str(L, v->line, s);
		} else if (is_key(v, "tls")) {
			if (want(L, v, TOML_TABLE, "tls")) load_tls(L, v);
		} else if (is_key(v, "storage")) {
			if (want(L, v, TOML_TABLE, "storage")) load_storage(L, v);
		} else if (is_key(v, "relay")) {
			if (want(L, v, TOML_TABLE, "relay")) load_relay(L, v);
		} else if (is_key(v, "domain")) {
			load_domains(L, v);
		} else {
			unknown(L, v, "", false);
		}
	}
	if (!have_hostname) cfg_error(L, 1, "missing required key 'hostname'");
}

static void set_defaults(struct config *cfg)
{
	cfg->log_level = LOG_INFO;
	cfg->ktls = true;
	cfg->sync = SYNC_FULL;
	cfg->relay.port = 25;
	cfg->relay.max_queue_time_s = 5 * 86400;
	cfg->relay.tls = RELAY_TLS_OPPORTUNISTIC;
	for (int k = 0; k < SVC_COUNT; k++) {
		struct service_config *s = &cfg->svc[k];
		bool smtp_like = k == SVC_SMTP || k == SVC_SUBMISSION || k == SVC_SUBMISSIONS;
		if (smtp_like) {
			s->max_message_size = 41943040;
			s->max_recipients = 100;
		}
		s->max_connections = 10000;
		s->max_connections_per_ip = 50;
		s->timeout_s = smtp_like ? 5 * 60 : 10 * 60;
	}
}

/* Rules that involve several sections; run after all of them are read. */
static void check_global(struct loader *L)
{
	struct config *cfg = L->cfg;
	const struct service_config *svc = cfg->svc;

	if (cfg->ndomains == 0) cfg_error(L, 1, "at least one [[domain]] is required");

	/* Submitted mail to other domains goes through the queue (SPEC 4). */
	for (int k = SVC_SUBMISSION; k <= SVC_SUBMISSIONS; k++)
		if (svc[k].enabled && !cfg->relay.queue)
			cfg_error(L, L->svc_line[k],
				  "[%s] is enabled but relay.queue is not set: submitted mail "
				  "is queued there for relay",
				  svc_names[k]);

	/* Implicit TLS cannot start without a certificate; submission could
	 * start, but AUTH requires TLS (SPEC 4), so no one could ever send. */
	if (!L->any_cert) {
		if (svc[SVC_SUBMISSION].enabled)
			cfg_error(L, L->svc_line[SVC_SUBMISSION],
				  "[submission] needs a certificate (tls_cert and tls_key in a "
				  "[[domain]]): AUTH requires TLS");
		if (svc[SVC_SUBMISSIONS].enabled)
			cfg_error(L, L->svc_line[SVC_SUBMISSIONS],
				  "[submissions] needs a certificate (tls_cert and tls_key in a "
				  "[[domain]]): it is implicit TLS");
		if (svc[SVC_POP3S].enabled)
			cfg_error(L, L->svc_line[SVC_POP3S],
				  "[pop3s] needs a certificate (tls_cert and tls_key in a "
				  "[[domain]]): it is implicit TLS");
	}
}

static int read_file(struct loader *L, char **text, size_t *len)
{
	FILE *f = fopen(L->path, "r");
	if (!f) {
		fprintf(L->err, "%s: cannot open: %s\n", L->path, strerror(errno));
		return -1;
	}
	char *buf = malloc(CONFIG_MAX_BYTES + 1);
	size_t n = buf ? fread(buf, 1, CONFIG_MAX_BYTES + 1, f) : 0;
	int rerr = ferror(f) ? errno : 0;
	fclose(f);
	if (!buf) {
		fprintf(L->err, "%s: out of memory\n", L->path);
		return -1;
	}
	if (rerr) {
		fprintf(L->err, "%s: cannot read: %s\n", L->path, strerror(rerr));
		free(buf);
		return -1;
	}
	if (n > CONFIG_MAX_BYTES) {
		fprintf(L->err, "%s: too large (over %d bytes)\n", L->path, CONFIG_MAX_BYTES);
		free(buf);
		return -1;
	}
	*text = buf;
	*len = n;
	return 0;
}

int config_load(const char *path, struct config *cfg, FILE *err)
{
	struct loader L = {.path = path, .err = err ? err : stderr, .cfg = cfg};
	struct toml_error te;
	char *text;
	size_t len;

	memset(cfg, 0, sizeof(*cfg));
	if (read_file(&L, &text, &len) < 0) return 1;
	struct toml_node *root = toml_parse(text, len, &te);
	free(text);
	if (!root) {
		cfg_error(&L, te.line, "%s", te.msg);
		return L.nerr;
	}

	set_defaults(cfg);
	cfg->path = dup_str(&L, 1, path);
	load_top(&L, root);
	toml_free(root);

	inherit(&L, SVC_SUBMISSION, SVC_SMTP);
	inherit(&L, SVC_SUBMISSIONS, SVC_SMTP);
	inherit(&L, SVC_POP3S, SVC_POP3);
	if (!L.retry_set) {
		static const uint32_t def[] = {60, 300, 900, 3600, 4 * 3600};
		cfg->relay.retry_s = malloc(sizeof(def));
		if (cfg->relay.retry_s) {
			memcpy(cfg->relay.retry_s, def, sizeof(def));
			cfg->relay.nretry = sizeof(def) / sizeof(def[0]);
		} else {
			cfg_error(&L, 1, "out of memory");
		}
	}
	check_global(&L);
	free(L.seen);

	if (L.nerr) config_free(cfg);
	return L.nerr;
}

void config_free(struct config *cfg)
{
	free(cfg->path);
	free(cfg->hostname);
	free(cfg->user);
	for (int k = 0; k < SVC_COUNT; k++)
		free(cfg->svc[k].listen);
	free(cfg->relay.queue);
	for (unsigned i = 0; i < cfg->relay.nnameservers; i++)
		free(cfg->relay.nameservers[i]);
	free(cfg->relay.nameservers);
	free(cfg->relay.smarthost);
	free(cfg->relay.retry_s);
	for (unsigned i = 0; i < cfg->ndomains; i++) {
		struct domain_config *d = &cfg->domains[i];
		free(d->name);
		free(d->password);
		free(d->maildrop);
		free(d->tls_cert);
		free(d->tls_key);
		for (unsigned j = 0; j < d->nblocked; j++)
			free(d->blocked[j]);
		free(d->blocked);
	}
	free(cfg->domains);
	memset(cfg, 0, sizeof(*cfg));
}
