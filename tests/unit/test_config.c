/* Unit tests for core/config.c: every key into the struct, every semantic
 * error reported as PATH:LINE: message. Fixtures are written to a fresh
 * temporary directory per test. */
#include "core/config.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static char path[128];

static void setup(void)
{
	strcpy(dir, "/tmp/mpb-config-XXXXXX");
	cr_assert(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/mailpopbox.toml", dir);
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(p);
}

static void teardown(void)
{
	nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

TestSuite(config, .init = setup, .fini = teardown);

/* Writes DOC to the fixture path and loads it; *err gets what config_load
 * printed (caller frees). */
static int load(const char *doc, struct config *cfg, char **err)
{
	FILE *f = fopen(path, "w");
	cr_assert(f);
	fputs(doc, f);
	fclose(f);
	size_t n;
	FILE *es = open_memstream(err, &n);
	cr_assert(es);
	int rc = config_load(path, cfg, es);
	fclose(es);
	return rc;
}

static void load_ok(const char *doc, struct config *cfg)
{
	char *err;
	int rc = load(doc, cfg, &err);
	cr_assert_eq(rc, 0, "errors:\n%s--- for:\n%s", err, doc);
	cr_assert_str_eq(err, "");
	free(err);
}

/* Asserts that loading DOC fails with exactly NERR errors (-1: any number)
 * and that one of them is "PATH:LINE: MSG..." */
static void expect_error(const char *doc, int nerr, int line, const char *msg)
{
	struct config cfg;
	char *err, want[512];
	int rc = load(doc, &cfg, &err);
	snprintf(want, sizeof(want), "%s:%d: %s", path, line, msg);
	cr_expect(rc > 0, "accepted, should be refused:\n%s", doc);
	if (nerr >= 0) cr_expect_eq(rc, nerr, "%d errors, expected %d:\n%s", rc, nerr, err);
	cr_expect(strstr(err, want), "missing '%s' in:\n%s", want, err);
	/* Every line printed is one error, in the PATH:LINE: form. */
	int lines = 0;
	for (char *p = err; (p = strchr(p, '\n')); p++)
		lines++;
	cr_expect_eq(lines, rc, "%d lines for %d errors:\n%s", lines, rc, err);
	for (char *p = err; *p; p = strchr(p, '\n') + 1)
		cr_expect(strncmp(p, path, strlen(path)) == 0 && p[strlen(path)] == ':', "%s", p);
	/* On error the struct is left freed and zeroed. */
	cr_expect_null(cfg.hostname);
	cr_expect_null(cfg.domains);
	cr_expect_null(cfg.path);
	free(err);
}

#define DOMAIN "[[domain]]\nname = \"a.test\"\npassword = \"pw\"\nmaildrop = \"/tmp/a\"\n"
#define MINIMAL "hostname = \"mx.test\"\n" DOMAIN

static uint16_t port_of(const struct listen_addr *a)
{
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
}

/* ---- valid configs ---- */

Test(config, full_config_round_trips)
{
	struct config c;
	load_ok("hostname = \"mx.example.com\"\n"
		"workers = 4\n"
		"log_level = \"debug\"\n"
		"user = \"mail\"\n"
		"[smtp]\n"
		"listen = [\"0.0.0.0:25\", \"[::]:25\"]\n"
		"max_message_size = 10_485_760\n"
		"max_recipients = 50\n"
		"max_connections = 2000\n"
		"max_connections_per_ip = 20\n"
		"timeout = \"2m\"\n"
		"[submission]\n"
		"listen = [\"0.0.0.0:587\"]\n"
		"max_recipients = 10\n"
		"[submissions]\n"
		"listen = [\"[::1]:465\"]\n"
		"timeout = \"30s\"\n"
		"[pop3]\n"
		"listen = [\"0.0.0.0:110\"]\n"
		"allow_plaintext_auth = false\n"
		"timeout = \"10m\"\n"
		"max_connections = 300\n"
		"max_connections_per_ip = 3\n"
		"[pop3s]\n"
		"listen = [\"0.0.0.0:995\"]\n"
		"[tls]\n"
		"ktls = false\n"
		"[storage]\n"
		"sync = \"none\"\n"
		"[relay]\n"
		"queue = \"/var/lib/mailpopbox/queue\"\n"
		"nameservers = [\"127.0.0.53:53\", \"[2001:db8::1]:5353\"]\n"
		"port = 2525\n"
		"smarthost = \"smtp.relay.test:587\"\n"
		"retry = [\"30s\", \"2h\"]\n"
		"max_queue_time = \"2d\"\n"
		"tls = \"required\"\n"
		"[[domain]]\n"
		"name = \"Example.COM\"\n"
		"password = \"$y$j9T$salt$hash\"\n"
		"maildrop = \"/var/lib/mailpopbox/example.com\"\n"
		"tls_cert = \"/etc/mpb/example.crt\"\n"
		"tls_key = \"/etc/mpb/example.key\"\n"
		"blocked = [\"NoReply@Example.com\", \"bounce@example.com\"]\n"
		"[[domain]]\n"
		"name = \"other.test\"\n"
		"password = \"plain\"\n"
		"maildrop = \"var/other\"\n",
		&c);
	cr_expect_str_eq(c.path, path);
	cr_expect_str_eq(c.hostname, "mx.example.com");
	cr_expect_eq(c.workers, 4);
	cr_expect_eq(c.log_level, LOG_DEBUG);
	cr_expect_str_eq(c.user, "mail");

	const struct service_config *s = &c.svc[SVC_SMTP];
	cr_expect(s->enabled);
	cr_assert_eq(s->nlisten, 2);
	cr_expect_str_eq(s->listen[0].text, "0.0.0.0:25");
	cr_expect_eq(s->listen[0].ss.ss_family, AF_INET);
	cr_expect_eq(s->listen[0].len, sizeof(struct sockaddr_in));
	cr_expect_str_eq(s->listen[1].text, "[::]:25");
	cr_expect_eq(s->listen[1].ss.ss_family, AF_INET6);
	cr_expect_eq(s->listen[1].len, sizeof(struct sockaddr_in6));
	cr_expect_eq(port_of(&s->listen[1]), 25);
	cr_expect_eq(s->max_message_size, 10485760);
	cr_expect_eq(s->max_recipients, 50);
	cr_expect_eq(s->max_connections, 2000);
	cr_expect_eq(s->max_connections_per_ip, 20);
	cr_expect_eq(s->timeout_s, 120);

	s = &c.svc[SVC_SUBMISSION];
	cr_expect(s->enabled);
	cr_expect_eq(s->nlisten, 1);
	cr_expect_eq(s->max_recipients, 10);
	cr_expect_eq(s->max_message_size, 10485760); /* from [smtp] */
	cr_expect_eq(s->timeout_s, 120);
	s = &c.svc[SVC_SUBMISSIONS];
	cr_expect(s->enabled);
	cr_expect_eq(s->timeout_s, 30);
	cr_expect_eq(s->max_recipients, 50);
	cr_expect_eq(port_of(&s->listen[0]), 465);

	s = &c.svc[SVC_POP3];
	cr_expect(s->enabled);
	cr_expect_not(s->allow_plaintext_auth);
	cr_expect_eq(s->timeout_s, 600);
	cr_expect_eq(s->max_connections, 300);
	cr_expect_eq(s->max_connections_per_ip, 3);
	s = &c.svc[SVC_POP3S];
	cr_expect(s->enabled);
	cr_expect_eq(s->max_connections, 300);
	cr_expect_eq(s->max_connections_per_ip, 3);

	cr_expect_not(c.ktls);
	cr_expect_eq(c.sync, SYNC_NONE);

	cr_expect_str_eq(c.relay.queue, "/var/lib/mailpopbox/queue");
	cr_assert_eq(c.relay.nnameservers, 2);
	cr_expect_str_eq(c.relay.nameservers[0], "127.0.0.53:53");
	cr_expect_str_eq(c.relay.nameservers[1], "[2001:db8::1]:5353");
	cr_expect_eq(c.relay.port, 2525);
	cr_expect_str_eq(c.relay.smarthost, "smtp.relay.test:587");
	cr_assert_eq(c.relay.nretry, 2);
	cr_expect_eq(c.relay.retry_s[0], 30);
	cr_expect_eq(c.relay.retry_s[1], 7200);
	cr_expect_eq(c.relay.max_queue_time_s, 2 * 86400);
	cr_expect_eq(c.relay.tls, RELAY_TLS_REQUIRED);

	cr_assert_eq(c.ndomains, 2);
	const struct domain_config *d = &c.domains[0];
	cr_expect_str_eq(d->name, "example.com");
	cr_expect_str_eq(d->password, "$y$j9T$salt$hash");
	cr_expect(d->password_hashed);
	cr_expect_str_eq(d->maildrop, "/var/lib/mailpopbox/example.com");
	cr_expect_str_eq(d->tls_cert, "/etc/mpb/example.crt");
	cr_expect_str_eq(d->tls_key, "/etc/mpb/example.key");
	cr_assert_eq(d->nblocked, 2);
	cr_expect_str_eq(d->blocked[0], "noreply@example.com");
	cr_expect_str_eq(d->blocked[1], "bounce@example.com");
	cr_expect_eq(d->line, 38);
	d = &c.domains[1];
	cr_expect_str_eq(d->name, "other.test");
	cr_expect_not(d->password_hashed);
	cr_expect_str_eq(d->maildrop, "var/other");
	cr_expect_null(d->tls_cert);
	cr_expect_null(d->tls_key);
	cr_expect_eq(d->nblocked, 0);
	cr_expect_eq(d->line, 45);

	cr_expect_eq(config_find_domain(&c, "EXAMPLE.com", 11), 0);
	cr_expect_eq(config_find_domain(&c, "other.testXYZ", 10), 1);
	cr_expect_eq(config_find_domain(&c, "other.tes", 9), -1);
	cr_expect_eq(config_find_domain(&c, "nowhere.test", 12), -1);
	config_free(&c);
	cr_expect_null(c.domains);
	config_free(&c); /* twice is harmless */
}

Test(config, defaults)
{
	struct config c;
	load_ok(MINIMAL, &c);
	cr_expect_eq(c.workers, 0);
	cr_expect_eq(c.log_level, LOG_INFO);
	cr_expect_null(c.user);
	for (int k = 0; k < SVC_COUNT; k++) {
		cr_expect_not(c.svc[k].enabled, "%s", svc_names[k]);
		cr_expect_eq(c.svc[k].nlisten, 0);
		cr_expect_eq(c.svc[k].max_connections, 10000);
		cr_expect_eq(c.svc[k].max_connections_per_ip, 50);
		cr_expect_not(c.svc[k].allow_plaintext_auth);
	}
	for (int k = SVC_SMTP; k <= SVC_SUBMISSIONS; k++) {
		cr_expect_eq(c.svc[k].max_message_size, 41943040);
		cr_expect_eq(c.svc[k].max_recipients, 100);
		cr_expect_eq(c.svc[k].timeout_s, 300);
	}
	cr_expect_eq(c.svc[SVC_POP3].timeout_s, 600);
	cr_expect_eq(c.svc[SVC_POP3S].timeout_s, 600);
	cr_expect(c.ktls);
	cr_expect_eq(c.sync, SYNC_FULL);
	cr_expect_null(c.relay.queue);
	cr_expect_eq(c.relay.nnameservers, 0);
	cr_expect_eq(c.relay.port, 25);
	cr_expect_null(c.relay.smarthost);
	cr_assert_eq(c.relay.nretry, 5);
	uint32_t want[] = {60, 300, 900, 3600, 14400};
	for (int i = 0; i < 5; i++)
		cr_expect_eq(c.relay.retry_s[i], want[i]);
	cr_expect_eq(c.relay.max_queue_time_s, 432000);
	cr_expect_eq(c.relay.tls, RELAY_TLS_OPPORTUNISTIC);
	cr_expect_eq(c.ndomains, 1);
	cr_expect_eq(c.domains[0].line, 2);
	config_free(&c);
}

Test(config, inheritance)
{
	struct config c;
	load_ok(MINIMAL "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n"
			"[relay]\nqueue = \"q\"\n"
			"[submission]\n"
			"listen = [\"127.0.0.1:587\"]\n"
			"max_recipients = 9\n"
			"[smtp]\n" /* after submission: order does not matter */
			"max_message_size = 2048\n"
			"max_recipients = 7\n"
			"max_connections = 70\n"
			"max_connections_per_ip = 7\n"
			"timeout = \"1m\"\n"
			"[pop3s]\n"
			"listen = [\"127.0.0.1:995\"]\n"
			"max_connections = 5\n"
			"[pop3]\n"
			"timeout = \"2m\"\n"
			"allow_plaintext_auth = true\n"
			"max_connections_per_ip = 4\n",
		&c);
	const struct service_config *s = c.svc;
	cr_expect_not(s[SVC_SMTP].enabled); /* table present, no listen */
	cr_expect(s[SVC_SUBMISSION].enabled);
	cr_expect_eq(s[SVC_SUBMISSION].max_recipients, 9);
	cr_expect_eq(s[SVC_SUBMISSION].max_message_size, 2048);
	cr_expect_eq(s[SVC_SUBMISSION].max_connections, 70);
	cr_expect_eq(s[SVC_SUBMISSION].max_connections_per_ip, 7);
	cr_expect_eq(s[SVC_SUBMISSION].timeout_s, 60);
	cr_expect_not(s[SVC_SUBMISSIONS].enabled);
	cr_expect_eq(s[SVC_SUBMISSIONS].max_recipients, 7);
	cr_expect_eq(s[SVC_SUBMISSIONS].timeout_s, 60);
	cr_expect_not(s[SVC_POP3].enabled);
	cr_expect(s[SVC_POP3S].enabled);
	cr_expect_eq(s[SVC_POP3S].timeout_s, 120);
	cr_expect(s[SVC_POP3S].allow_plaintext_auth);
	cr_expect_eq(s[SVC_POP3S].max_connections, 5);
	cr_expect_eq(s[SVC_POP3S].max_connections_per_ip, 4);
	config_free(&c);
}

Test(config, empty_strings_mean_absent)
{
	struct config c;
	load_ok("hostname = \"h\"\nuser = \"\"\n[relay]\nsmarthost = \"\"\nqueue = \"\"\n"
		"[smtp]\nlisten = []\n" DOMAIN "tls_cert = \"\"\ntls_key = \"\"\n",
		&c);
	cr_expect_null(c.user);
	cr_expect_null(c.relay.smarthost);
	cr_expect_null(c.relay.queue);
	cr_expect_not(c.svc[SVC_SMTP].enabled);
	cr_expect_null(c.domains[0].tls_cert);
	config_free(&c);
}

Test(config, dotted_keys_and_blocked)
{
	struct config c;
	load_ok("hostname = \"h\"\nsmtp.listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n" DOMAIN
		"blocked = [\"A.B+tag@Sub.A.test\"]\n",
		&c);
	cr_expect_eq(c.svc[SVC_SMTP].nlisten, 2); /* port 0 twice is fine */
	cr_expect_eq(port_of(&c.svc[SVC_SMTP].listen[0]), 0);
	cr_expect_str_eq(c.domains[0].blocked[0], "a.b+tag@sub.a.test");
	config_free(&c);
}

Test(config, repository_default_config)
{
	/* Tests run from the repository root, where `make run` finds it. */
	struct config c;
	char *err;
	size_t n;
	FILE *es = open_memstream(&err, &n);
	int rc = config_load("mailpopbox.toml", &c, es);
	fclose(es);
	cr_assert_eq(rc, 0, "mailpopbox.toml:\n%s", err);
	free(err);
	cr_expect_str_eq(c.hostname, "localhost");
	cr_expect_eq(c.workers, 0);
	cr_expect_eq(c.log_level, LOG_INFO);
	cr_expect(c.svc[SVC_SMTP].enabled);
	cr_expect_str_eq(c.svc[SVC_SMTP].listen[0].text, "127.0.0.1:2525");
	cr_expect(c.svc[SVC_POP3].enabled);
	cr_expect_str_eq(c.svc[SVC_POP3].listen[0].text, "127.0.0.1:1110");
	cr_expect(c.svc[SVC_POP3].allow_plaintext_auth);
	cr_expect(c.svc[SVC_SUBMISSION].enabled);
	cr_expect_str_eq(c.svc[SVC_SUBMISSION].listen[0].text, "127.0.0.1:2587");
	cr_expect_str_eq(c.relay.queue, "var/queue");
	cr_expect_not(c.svc[SVC_SUBMISSIONS].enabled);
	cr_expect(c.svc[SVC_POP3S].enabled);
	cr_expect_str_eq(c.svc[SVC_POP3S].listen[0].text, "127.0.0.1:1995");
	cr_expect_eq(c.sync, SYNC_FULL);
	cr_assert_eq(c.ndomains, 1);
	cr_expect_str_eq(c.domains[0].name, "example.test");
	cr_expect_str_eq(c.domains[0].password, "demo-password");
	cr_expect_not(c.domains[0].password_hashed);
	cr_expect_str_eq(c.domains[0].maildrop, "var/example.test");
	config_free(&c);
}

/* The example of SPEC section 3, verbatim: the documented config loads. */
Test(config, spec_example)
{
	struct config c;
	load_ok(
	    "hostname = \"mx.example.com\"    # required: greetings, Received, DSN Reporting-MTA\n"
	    "workers  = 0                   # io_uring rings/threads; 0 = one per online CPU\n"
	    "log_level = \"info\"             # debug | info | warn | error\n"
	    "user = \"\"                      # when started as root: drop to this user after\n"
	    "                               # binding ports and reading keys\n"
	    "\n"
	    "[smtp]                         # inbound MX (port 25 in production)\n"
	    "listen = [\"0.0.0.0:25\", \"[::]:25\"]\n"
	    "max_message_size = 41943040    # advertised as SIZE; larger is refused with 552\n"
	    "max_recipients = 100           # more in one transaction: 452 4.5.3\n"
	    "max_connections = 10000        # per service, all workers together\n"
	    "max_connections_per_ip = 50\n"
	    "timeout = \"5m\"                 # idle time waiting for a command or data\n"
	    "\n"
	    "[submission]                   # RFC 6409, port 587: AUTH required before MAIL\n"
	    "listen = [\"0.0.0.0:587\"]\n"
	    "[submissions]                  # RFC 8314 implicit TLS, port 465\n"
	    "listen = [\"0.0.0.0:465\"]\n"
	    "\n"
	    "[pop3]                         # RFC 1939, port 110, with STLS\n"
	    "listen = [\"0.0.0.0:110\"]\n"
	    "allow_plaintext_auth = false   # true: USER/PASS/AUTH before STLS (tests only)\n"
	    "timeout = \"10m\"\n"
	    "[pop3s]                        # implicit TLS, port 995\n"
	    "listen = [\"0.0.0.0:995\"]\n"
	    "\n"
	    "[tls]\n"
	    "ktls = true                    # kernel TLS offload when the kernel has it\n"
	    "\n"
	    "[storage]\n"
	    "sync = \"full\"                  # full: 2xx only after file and directory fsync\n"
	    "                               # none: no fsync (benchmarks; loses mail on crash)\n"
	    "\n"
	    "[relay]\n"
	    "queue = \"/var/lib/mailpopbox/queue\"   # required when submission is enabled\n"
	    "nameservers = []               # \"IP:PORT\" list; empty = /etc/resolv.conf\n"
	    "port = 25                      # port dialed on MX hosts\n"
	    "smarthost = \"\"                 # \"host:port\": send everything there instead\n"
	    "retry = [\"1m\", \"5m\", \"15m\", \"1h\", \"4h\"]  # then every last interval\n"
	    "max_queue_time = \"5d\"\n"
	    "tls = \"opportunistic\"          # opportunistic | required | none\n"
	    "\n"
	    "[[domain]]\n"
	    "name = \"example.com\"\n"
	    "password = \"$y$...\"            # crypt(3) hash, or plaintext (warned at startup)\n"
	    "maildrop = \"/var/lib/mailpopbox/example.com\"   # created 0700 if missing\n"
	    "tls_cert = \"/etc/mailpopbox/mx.example.com.crt\" # PEM chain; optional\n"
	    "tls_key  = \"/etc/mailpopbox/mx.example.com.key\"\n"
	    "blocked  = [\"noreply@example.com\"]             # refused at RCPT\n",
	    &c);
	cr_expect_str_eq(c.hostname, "mx.example.com");
	cr_expect_eq(c.svc[SVC_SMTP].nlisten, 2);
	cr_expect(c.svc[SVC_SUBMISSION].enabled);
	cr_expect(c.svc[SVC_SUBMISSIONS].enabled);
	cr_expect(c.svc[SVC_POP3].enabled);
	cr_expect(c.svc[SVC_POP3S].enabled);
	cr_expect_eq(c.svc[SVC_POP3S].timeout_s, 600);
	cr_expect_eq(c.relay.nnameservers, 0);
	cr_expect_null(c.relay.smarthost);
	cr_expect(c.domains[0].password_hashed);
	cr_expect_str_eq(c.domains[0].blocked[0], "noreply@example.com");
	config_free(&c);
}

/* ---- errors ---- */

Test(config, unknown_keys_and_tables)
{
	expect_error(MINIMAL "[smtp]\nlisten = []\nfoo = 1\n", 1, 8, "unknown key 'foo' in [smtp]");
	expect_error("foo = 1\n" MINIMAL, 1, 1, "unknown key 'foo'\n");
	expect_error(MINIMAL "[imap]\nlisten = []\n", 1, 6, "unknown table [imap]");
	expect_error(MINIMAL "colour = \"blue\"\n", 1, 6, "unknown key 'colour' in [[domain]]");
	expect_error(MINIMAL "[pop3]\nmax_message_size = 1024\n", 1, 7,
		     "unknown key 'max_message_size' in [pop3]");
	expect_error(MINIMAL "[smtp]\nallow_plaintext_auth = true\n", 1, 7,
		     "unknown key 'allow_plaintext_auth' in [smtp]");
	expect_error(MINIMAL "[smtp.tls]\nx = 1\n", 1, 6, "unknown table [smtp.tls]");
	expect_error(MINIMAL "[relay]\nretries = []\n", 1, 7, "unknown key 'retries' in [relay]");
	expect_error(MINIMAL "[tls]\ncert = \"x\"\n", 1, 7, "unknown key 'cert' in [tls]");
	expect_error(MINIMAL "[storage]\nfsync = true\n", 1, 7, "unknown key 'fsync' in [storage]");
}

Test(config, hostname)
{
	expect_error(DOMAIN, 1, 1, "missing required key 'hostname'");
	expect_error("workers = 1\n" DOMAIN, 1, 1, "missing required key 'hostname'");
	expect_error("hostname = \"\"\n" DOMAIN, 1, 1, "hostname: '' is not a host name");
	expect_error("hostname = \"mx example\"\n" DOMAIN, 1, 1, "hostname: 'mx example'");
	expect_error("hostname = 5\n" DOMAIN, 1, 1, "hostname: must be a string, not an integer");
}

Test(config, domains)
{
	expect_error("hostname = \"h\"\n", 1, 1, "at least one [[domain]] is required");
	expect_error("hostname = \"h\"\ndomain = []\n", 1, 1,
		     "at least one [[domain]] is required");
	expect_error("hostname = \"h\"\ndomain = \"a.test\"\n", 2, 2,
		     "domain: must be an array of tables ([[domain]]), not a string");
	expect_error("hostname = \"h\"\n[domain]\nname = \"a.test\"\n", 2, 2,
		     "domain: must be an array of tables ([[domain]]), not a table");
	expect_error(MINIMAL "\n" DOMAIN, 1, 8,
		     "duplicate domain 'a.test' (first defined in the [[domain]] at line 2)");
	expect_error(MINIMAL "[[domain]]\nname = \"A.Test\"\npassword = \"x\"\nmaildrop = \"m\"\n",
		     1, 7, "duplicate domain 'a.test'");
	expect_error("hostname = \"h\"\n[[domain]]\npassword = \"x\"\n", 2, 2,
		     "[[domain]] has no 'name'");
	expect_error("hostname = \"h\"\n\n[[domain]]\nname = \"a.test\"\n", 2, 3,
		     "[[domain]] has no 'password'");
	expect_error("hostname = \"h\"\n\n[[domain]]\nname = \"a.test\"\n", 2, 3,
		     "[[domain]] has no 'maildrop'");
	expect_error("hostname = \"h\"\n[[domain]]\nname = \"a.test\"\npassword = \"\"\n"
		     "maildrop = \"m\"\n",
		     1, 4, "domain.password: must not be empty");
	expect_error("hostname = \"h\"\n[[domain]]\nname = \"a.test\"\npassword = \"p\"\n"
		     "maildrop = \"\"\n",
		     1, 5, "domain.maildrop: must not be empty");
	static const char *bad[] = {
	    "",	       ".a.test", "a.test.", "a..test",	 "a_b.test",
	    "-a.test", "a-.test", "a test",  "a.test/x", "xn--caf\xc3\xa9.test"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char doc[256];
		snprintf(doc, sizeof(doc),
			 "hostname = \"h\"\n[[domain]]\npassword = \"p\"\nmaildrop = \"m\"\n"
			 "name = \"%s\"\n",
			 bad[i]);
		expect_error(doc, 1, 5, "domain.name: '");
	}
	expect_error(MINIMAL "blocked = [\"nobody\", \"@a.test\", \"x@\", \"a b@a.test\", 3]\n", 5,
		     6, "domain.blocked: invalid address 'nobody'");
	expect_error(MINIMAL "blocked = [\"x@a.test\",\n 3]\n", 1, 7,
		     "domain.blocked: must be a string, not an integer");
}

Test(config, tls_cert_and_key)
{
	expect_error(MINIMAL "tls_cert = \"c.pem\"\n", 1, 6,
		     "domain.tls_cert is set but domain.tls_key is not");
	expect_error(MINIMAL "\ntls_key = \"k.pem\"\n", 1, 7,
		     "domain.tls_key is set but domain.tls_cert is not");
}

Test(config, services_needing_tls_or_queue)
{
	expect_error(MINIMAL "tls_cert = \"c\"\ntls_key = \"k\"\n[submission]\n"
			     "listen = [\"127.0.0.1:587\"]\n",
		     1, 8, "[submission] is enabled but relay.queue is not set");
	expect_error(MINIMAL "tls_cert = \"c\"\ntls_key = \"k\"\n[submissions]\n"
			     "listen = [\"127.0.0.1:465\"]\n",
		     1, 8, "[submissions] is enabled but relay.queue is not set");
	expect_error(MINIMAL "[relay]\nqueue = \"q\"\n[submission]\nlisten = [\"127.0.0.1:587\"]\n",
		     1, 8,
		     "[submission] needs a certificate (tls_cert and tls_key in a [[domain]]): "
		     "AUTH requires TLS");
	expect_error(MINIMAL
		     "[relay]\nqueue = \"q\"\n[submissions]\nlisten = [\"127.0.0.1:465\"]\n",
		     1, 8, "[submissions] needs a certificate");
	expect_error(MINIMAL "[pop3s]\nlisten = [\"127.0.0.1:995\"]\n", 1, 6,
		     "[pop3s] needs a certificate");
	/* Both problems of one service are reported. */
	expect_error(MINIMAL "[submission]\nlisten = [\"127.0.0.1:587\"]\n", 2, 6,
		     "[submission] needs a certificate");
	/* Present but not enabled: nothing needed. */
	struct config c;
	load_ok(MINIMAL "[submission]\nlisten = []\n[pop3s]\n", &c);
	config_free(&c);
	/* A cert on any domain satisfies every service. */
	load_ok(MINIMAL "\n"
			"[[domain]]\nname = \"b.test\"\npassword = \"p\"\nmaildrop = \"m\"\n"
			"tls_cert = \"c\"\ntls_key = \"k\"\n"
			"[relay]\nqueue = \"q\"\n[submission]\nlisten = [\"127.0.0.1:587\"]\n"
			"[pop3s]\nlisten = [\"127.0.0.1:995\"]\n",
		&c);
	config_free(&c);
}

Test(config, durations)
{
	expect_error(MINIMAL "[smtp]\ntimeout = \"5x\"\n", 1, 7,
		     "smtp.timeout: invalid duration '5x' (a whole number and a unit s, m, h or d");
	expect_error(MINIMAL "[pop3]\ntimeout = \"0s\"\n", 1, 7,
		     "pop3.timeout: duration must not be zero");
	expect_error(MINIMAL "[pop3]\ntimeout = 600\n", 1, 7,
		     "pop3.timeout: must be a string, not an integer");
	expect_error(MINIMAL "[relay]\nmax_queue_time = \"99999999999d\"\n", 1, 7,
		     "relay.max_queue_time: duration '99999999999d' is too long");
	expect_error(MINIMAL "[relay]\nretry = [\n  \"1m\",\n  \"5\",\n  \"1h\",\n  \"-1s\"\n]\n",
		     2, 9, "relay.retry: invalid duration '5'");
	expect_error(MINIMAL "[relay]\nretry = [\n  \"1m\",\n  \"5\",\n  \"1h\",\n  \"-1s\"\n]\n",
		     2, 11, "relay.retry: invalid duration '-1s'");
	expect_error(MINIMAL "[relay]\nretry = []\n", 1, 7,
		     "relay.retry: must list at least one interval");
	expect_error(MINIMAL "[relay]\nretry = \"1m\"\n", 1, 7,
		     "relay.retry: must be an array, not a string");
}

Test(config, addresses)
{
	static const char *bad[] = {
	    "127.0.0.1",     "127.0.0.1:",     "1.2.3:25",	   "::1:25",	    "[::1]:65536",
	    "[::1]25",	     "[::1]",	       "localhost:25",	   "127.0.0.1:+25", "127.0.0.1:25 ",
	    " 127.0.0.1:25", "[127.0.0.1]:25", "[::1:25",	   "256.0.0.1:25",  "127.0.0.1:-1",
	    "[]:25",	     "10.1:25",	       "[fe80::1%eth0]:25"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char doc[256], msg[128];
		snprintf(doc, sizeof(doc),
			 MINIMAL "[smtp]\nlisten = [\n\"127.0.0.1:25\",\n\"%s\"]\n", bad[i]);
		snprintf(msg, sizeof(msg), "smtp.listen: invalid address '%s' (expected", bad[i]);
		expect_error(doc, 1, 9, msg);
	}
	expect_error(MINIMAL "[pop3]\nlisten = \"127.0.0.1:110\"\n", 1, 7,
		     "pop3.listen: must be an array, not a string");
	expect_error(MINIMAL "[pop3]\nlisten = [110]\n", 1, 7,
		     "pop3.listen: must be a string, not an integer");
	/* The same address twice, in one service or across two. */
	expect_error(MINIMAL "[smtp]\nlisten = [\"127.0.0.1:25\", \"127.0.0.1:25\"]\n", 1, 7,
		     "smtp.listen: address '127.0.0.1:25' is already listed at line 7");
	expect_error(MINIMAL "[smtp]\nlisten = [\"[::1]:25\"]\n[pop3]\nlisten = [\"[0::1]:25\"]\n",
		     1, 9, "pop3.listen: address '[0::1]:25' is already listed at line 7");
	expect_error(MINIMAL "[relay]\nnameservers = [\"8.8.8.8\"]\n", 1, 7,
		     "relay.nameservers: invalid address '8.8.8.8'");
	expect_error(MINIMAL "[relay]\nnameservers = [\"8.8.8.8:0\"]\n", 1, 7,
		     "relay.nameservers: invalid address '8.8.8.8:0'");
}

Test(config, relay_values)
{
	static const char *bad[] = {"relay.test",   "relay.test:0", ":25",
				    "relay.test:x", "::1:25",	    "[::1:25",
				    "[x]:25",	    "a b:25",	    "relay.test:65536"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char doc[256], msg[128];
		snprintf(doc, sizeof(doc), MINIMAL "[relay]\nsmarthost = \"%s\"\n", bad[i]);
		snprintf(msg, sizeof(msg), "relay.smarthost: invalid '%s'", bad[i]);
		expect_error(doc, 1, 7, msg);
	}
	struct config c;
	load_ok(MINIMAL "[relay]\nsmarthost = \"[2001:db8::1]:25\"\n", &c);
	cr_expect_str_eq(c.relay.smarthost, "[2001:db8::1]:25");
	config_free(&c);
	load_ok(MINIMAL "[relay]\nsmarthost = \"192.0.2.1:2525\"\n", &c);
	config_free(&c);
	expect_error(MINIMAL "[relay]\nport = 0\n", 1, 7,
		     "relay.port: 0 is out of range (1 to 65535)");
	expect_error(MINIMAL "[relay]\nport = 65536\n", 1, 7, "relay.port: 65536 is out of range");
	expect_error(MINIMAL "[relay]\ntls = \"always\"\n", 1, 7,
		     "relay.tls: 'always' is not one of \"opportunistic\", \"required\", \"none\"");
	expect_error(MINIMAL "[relay]\nqueue = 1\n", 1, 7, "relay.queue: must be a string");
}

Test(config, types_and_ranges)
{
	expect_error("workers = \"4\"\n" MINIMAL, 1, 1,
		     "workers: must be an integer, not a string");
	expect_error("workers = 257\n" MINIMAL, 1, 1, "workers: 257 is out of range (0 to 256)");
	expect_error("workers = -1\n" MINIMAL, 1, 1, "workers: -1 is out of range");
	expect_error("log_level = \"verbose\"\n" MINIMAL, 1, 1,
		     "log_level: 'verbose' is not one of \"debug\", \"info\", \"warn\", \"error\"");
	expect_error("user = false\n" MINIMAL, 1, 1, "user: must be a string, not a boolean");
	expect_error("smtp = 1\n" MINIMAL, 1, 1, "smtp: must be a table, not an integer");
	expect_error(MINIMAL "[[smtp]]\n", 1, 6, "smtp: must be a table, not an array");
	expect_error("tls = true\n" MINIMAL, 1, 1, "tls: must be a table, not a boolean");
	expect_error(MINIMAL "[tls]\nktls = \"yes\"\n", 1, 7,
		     "tls.ktls: must be a boolean, not a string");
	expect_error(MINIMAL "[storage]\nsync = \"fast\"\n", 1, 7,
		     "storage.sync: 'fast' is not one of \"full\", \"none\"");
	expect_error(MINIMAL "[smtp]\nmax_message_size = 1023\n", 1, 7,
		     "smtp.max_message_size: 1023 is out of range");
	expect_error(MINIMAL "[smtp]\nmax_recipients = 0\n", 1, 7,
		     "smtp.max_recipients: 0 is out of range (1 to 10000)");
	expect_error(MINIMAL "[submission]\nmax_recipients = 10001\n", 1, 7,
		     "submission.max_recipients: 10001 is out of range");
	expect_error(MINIMAL "[pop3]\nmax_connections = 0\n", 1, 7,
		     "pop3.max_connections: 0 is out of range");
	expect_error(MINIMAL "[pop3s]\nmax_connections_per_ip = -5\n", 1, 7,
		     "pop3s.max_connections_per_ip: -5 is out of range");
	expect_error(MINIMAL "[pop3]\nallow_plaintext_auth = 1\n", 1, 7,
		     "pop3.allow_plaintext_auth: must be a boolean, not an integer");
	expect_error(MINIMAL "name2 = \"a\\u0000b\"\n", 1, 6, "unknown key 'name2' in [[domain]]");
	expect_error("hostname = \"a\\u0000b\"\n" DOMAIN, 1, 1,
		     "hostname: must not contain NUL characters");
}

Test(config, all_errors_collected)
{
	/* One run reports every semantic problem, in document order. */
	struct config c;
	char *err, want[2048];
	int rc = load("workers = 1000\n"
		      "log_level = \"loud\"\n"
		      "[smtp]\n"
		      "listen = [\"nowhere\"]\n"
		      "timeout = \"forever\"\n"
		      "bogus = true\n"
		      "[[domain]]\n"
		      "name = \"a.test\"\n",
		      &c, &err);
	snprintf(
	    want, sizeof(want),
	    "%1$s:1: workers: 1000 is out of range (0 to 256)\n"
	    "%1$s:2: log_level: 'loud' is not one of \"debug\", \"info\", \"warn\", \"error\"\n"
	    "%1$s:4: smtp.listen: invalid address 'nowhere' (expected \"IP:PORT\" or "
	    "\"[IPv6]:PORT\", port 0 to 65535)\n"
	    "%1$s:5: smtp.timeout: invalid duration 'forever' (a whole number and a unit s, m, "
	    "h or d, as in \"30s\", \"5m\", \"2h\", \"5d\")\n"
	    "%1$s:6: unknown key 'bogus' in [smtp]\n"
	    "%1$s:7: [[domain]] has no 'password'\n"
	    "%1$s:7: [[domain]] has no 'maildrop'\n"
	    "%1$s:1: missing required key 'hostname'\n",
	    path);
	cr_expect_eq(rc, 8);
	cr_expect_str_eq(err, want);
	free(err);
}

Test(config, toml_syntax_error)
{
	expect_error(MINIMAL "[smtp]\nlisten = [\"127.0.0.1:25\"\n", 1, 7, "unterminated array");
	expect_error("hostname = \"h\"\nhostname = \"h\"\n" DOMAIN, 1, 2,
		     "duplicate key 'hostname' (first defined at line 1)");
	expect_error(MINIMAL "[smtp]\ntimeout = 5m\n", 1, 7, "invalid integer '5m'");
	expect_error(MINIMAL "[smtp]\n[smtp]\n", 1, 7, "table [smtp] is defined twice");
}

Test(config, missing_file)
{
	struct config c;
	char *err;
	size_t n;
	FILE *es = open_memstream(&err, &n);
	snprintf(path, sizeof(path), "%s/does-not-exist.toml", dir);
	int rc = config_load(path, &c, es);
	fclose(es);
	cr_expect_eq(rc, 1);
	cr_expect(strstr(err, "does-not-exist.toml: cannot open: No such file or directory"), "%s",
		  err);
	cr_expect_null(c.hostname);
	free(err);
	config_free(&c);
}

/* ---- helpers ---- */

Test(config_parse, duration)
{
	cr_expect_eq(config_parse_duration("30s"), 30);
	cr_expect_eq(config_parse_duration("5m"), 300);
	cr_expect_eq(config_parse_duration("2h"), 7200);
	cr_expect_eq(config_parse_duration("5d"), 432000);
	cr_expect_eq(config_parse_duration("0s"), 0);
	cr_expect_eq(config_parse_duration("90m"), 5400);
	cr_expect_eq(config_parse_duration("9223372036854775807s"), INT64_MAX);
	static const char *bad[] = {"",
				    "5",
				    "5x",
				    "-1s",
				    "+1s",
				    " 5s",
				    "5s ",
				    "5 s",
				    "s",
				    "5ms",
				    "5ss",
				    "1.5h",
				    "5S",
				    "5M",
				    "0x10s",
				    "9223372036854775808s",
				    "106751991167301d"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cr_expect_eq(config_parse_duration(bad[i]), -1, "'%s'", bad[i]);
	cr_expect_eq(config_parse_duration(NULL), -1);
}

Test(config_parse, addr)
{
	struct listen_addr a;
	cr_assert_eq(config_parse_addr("192.0.2.7:8025", &a), 0);
	const struct sockaddr_in *sin = (const struct sockaddr_in *)&a.ss;
	cr_expect_eq(sin->sin_family, AF_INET);
	cr_expect_eq(ntohs(sin->sin_port), 8025);
	cr_expect_eq(ntohl(sin->sin_addr.s_addr), 0xc0000207);
	cr_expect_eq(a.len, sizeof(*sin));
	cr_expect_str_eq(a.text, "192.0.2.7:8025");

	cr_assert_eq(config_parse_addr("[2001:db8::5]:0", &a), 0);
	const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a.ss;
	struct in6_addr want;
	inet_pton(AF_INET6, "2001:db8::5", &want);
	cr_expect_eq(sin6->sin6_family, AF_INET6);
	cr_expect_eq(ntohs(sin6->sin6_port), 0);
	cr_expect(memcmp(&sin6->sin6_addr, &want, sizeof(want)) == 0);
	cr_expect_eq(a.len, sizeof(*sin6));
	cr_expect_str_eq(a.text, "[2001:db8::5]:0");

	cr_expect_eq(config_parse_addr("[::ffff:192.0.2.1]:65535", &a), 0);
	cr_expect_eq(config_parse_addr("0.0.0.0:65535", &a), 0);

	/* Longer than text[] can hold: refused, never truncated. */
	char longer[100];
	memset(longer, '1', sizeof(longer) - 1);
	longer[sizeof(longer) - 1] = '\0';
	memcpy(longer, "127.0.0.1:", 10);
	cr_expect_eq(config_parse_addr(longer, &a), -1);
	/* A failed parse leaves *out alone. */
	strcpy(a.text, "untouched");
	cr_expect_eq(config_parse_addr("bogus", &a), -1);
	cr_expect_str_eq(a.text, "untouched");
	cr_expect_eq(config_parse_addr("", &a), -1);
	cr_expect_eq(config_parse_addr("1.2.3.4:123456", &a), -1);
}

Test(config_parse, find_domain_and_names)
{
	struct config c;
	memset(&c, 0, sizeof(c));
	cr_expect_eq(config_find_domain(&c, "a", 1), -1);
	config_free(&c); /* on a zeroed struct */
	cr_expect_str_eq(svc_names[SVC_SMTP], "smtp");
	cr_expect_str_eq(svc_names[SVC_SUBMISSION], "submission");
	cr_expect_str_eq(svc_names[SVC_SUBMISSIONS], "submissions");
	cr_expect_str_eq(svc_names[SVC_POP3], "pop3");
	cr_expect_str_eq(svc_names[SVC_POP3S], "pop3s");
}
