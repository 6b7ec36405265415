/*
 * mailpopbox-bench: command line, message templates, threads, and the
 * orchestration of a run (smtp, pop3, idle). See `--help`.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

struct opts opt = {
    .mode = MODE_SMTP,
    .host = "127.0.0.1",
    .port = 2525,
    .sessions = 1,
    .messages = 1000,
    .rcpts = 1,
    .pipelining = true,
    .reuse = true,
    .threads = 1,
    .domain = "example.test",
    .from = "sender@bench.client.test",
    .user = "mailbox@example.test",
    .pass = "demo-password",
    .verify_wait = 0,
    .verify_copies = 1,
    .hold = 1,
    .idle_proto = MODE_SMTP,
    .timeout = 300,
    .dele = true,
    .window = 8,
    .connect_window = 256,
};

struct msg_tmpl tmpls[16];
int ntmpls;
atomic_long msgs_claimed;
atomic_int idle_established, idle_failed;
atomic_bool run_stop;

static void usage(FILE *f)
{
	fputs("usage: mailpopbox-bench smtp|pop3|idle [options]\n"
	      "\n"
	      "  smtp   N sessions send M messages in total (MAIL, RCPT..., DATA)\n"
	      "  pop3   log in, STAT, LIST, UIDL, RETR every message, DELE, QUIT\n"
	      "  idle   open N sessions, read the greeting (and EHLO), hold them\n"
	      "\n"
	      "  -H, --host IP            server address (127.0.0.1)\n"
	      "  -p, --port N             server port (2525)\n"
	      "  -c, --sessions N         concurrent sessions (1)\n"
	      "  -n, --messages M         smtp: messages in total (1000);\n"
	      "                           pop3: RETR at most M per session (0 = all)\n"
	      "  -s, --size SPEC          message size: 1024, 4k, 1m, or a mix\n"
	      "                           SIZE:WEIGHT,... e.g. 1k:80,64k:15,1m:5 (1k)\n"
	      "  -r, --rcpts N            recipients per message (1)\n"
	      "  -P, --no-pipelining      one command at a time (smtp-source style)\n"
	      "  -S, --starttls           smtp: STARTTLS; pop3: STLS\n"
	      "  -T, --tls                implicit TLS (pop3s, submissions)\n"
	      "  -1, --one-per-conn       smtp: one message per connection\n"
	      "  -t, --threads N          threads, one ring each (1)\n"
	      "  -d, --domain D           recipient domain (example.test)\n"
	      "      --from ADDR          envelope sender\n"
	      "  -u, --user U             pop3 user; %d becomes the session number\n"
	      "  -w, --pass P             pop3 password\n"
	      "      --auth USER:PASS     smtp: AUTH PLAIN after EHLO (after STARTTLS\n"
	      "                           with -S), before the first MAIL\n"
	      "      --sni NAME           TLS server name (the domain)\n"
	      "      --window K           pop3: RETR(+DELE) in flight when pipelining (8)\n"
	      "      --no-dele            pop3: leave the messages\n"
	      "      --list-only          pop3: log in, STAT, LIST, UIDL, QUIT\n"
	      "      --verify-dir DIR     smtp: check the Maildir DIR afterwards\n"
	      "      --verify-wait SEC    wait up to SEC for asynchronous deliveries (0)\n"
	      "      --verify-copies K    files expected per message (1)\n"
	      "      --run-id ID          token prefix in X-Bench-Token (random)\n"
	      "      --idle-proto P       idle: smtp (default) or pop3\n"
	      "      --idle-ehlo          idle smtp: send EHLO before idling\n"
	      "      --hold SEC           idle: seconds to hold after all are up (1)\n"
	      "      --mem-pid PID[,PID]  measure Pss of these process trees\n"
	      "      --connect-window K   connects in flight per thread (256)\n"
	      "      --timeout SEC        give up after SEC (300)\n"
	      "      --label NAME         name of the run in the output\n"
	      "      --json FILE          also write the result as JSON ('-' = stdout)\n"
	      "  -q, --quiet              no table\n",
	      f);
}

static size_t parse_size(const char *s, char **end)
{
	double v = strtod(s, end);
	switch (**end) {
	case 'k':
	case 'K':
		v *= 1024;
		(*end)++;
		break;
	case 'm':
	case 'M':
		v *= 1024 * 1024;
		(*end)++;
		break;
	case 'g':
	case 'G':
		v *= 1024.0 * 1024 * 1024;
		(*end)++;
		break;
	}
	if (**end == 'i' || **end == 'B') (*end)++;
	if (**end == 'B') (*end)++;
	return (size_t)v;
}

static int parse_mix(const char *s, struct size_mix *m)
{
	memset(m, 0, sizeof *m);
	while (*s) {
		if (m->n == 16) return -1;
		char *end;
		size_t sz = parse_size(s, &end);
		unsigned w = 1;
		if (*end == ':') w = (unsigned)strtoul(end + 1, &end, 10);
		if (!sz || (*end && *end != ',')) return -1;
		m->size[m->n] = sz;
		m->weight[m->n] = w;
		m->total_weight += w;
		m->n++;
		s = *end ? end + 1 : end;
	}
	return m->n ? 0 : -1;
}

/* ---- messages ----------------------------------------------------------- */

/* The token has a fixed width so that every header block is the same size
 * and a message is exactly its nominal size. */
int msg_header(char *buf, size_t cap, long seq, const char *rcpt0)
{
	return snprintf(buf, cap,
			"From: <%s>\r\n"
			"To: <%s>\r\n"
			"Subject: mailpopbox-bench %s-%010ld\r\n"
			"Message-ID: <%s-%010ld@bench.client.test>\r\n"
			"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n"
			"X-Bench-Token: %s-%010ld\r\n"
			"\r\n",
			opt.from, rcpt0, opt.run_id, seq, opt.run_id, seq, opt.run_id, seq);
}

size_t msg_header_len(void)
{
	char buf[512], rcpt0[300];
	snprintf(rcpt0, sizeof rcpt0, "rcpt0@%s", opt.domain);
	return (size_t)msg_header(buf, sizeof buf, 0, rcpt0);
}

static void build_templates(void)
{
	static const char text[] = "the quick brown fox jumps over the lazy dog 0123456789 ";
	size_t hl = msg_header_len();
	ntmpls = opt.sizes.n;
	for (int i = 0; i < ntmpls; i++) {
		size_t size = opt.sizes.size[i];
		size_t n = size > hl + 2 ? size - hl : 2;
		char *b = malloc(n + 3);
		if (!b) abort();
		for (size_t j = 0; j < n; j++) {
			size_t col = j % 78;
			b[j] = col == 76   ? '\r'
			       : col == 77 ? '\n'
					   : text[(j / 78 + col) % (sizeof text - 1)];
		}
		if (n >= 2) { /* always: the body ends with a CRLF, never a bare CR */
			b[n - 2] = '\r';
			b[n - 1] = '\n';
		}
		if (n >= 3 && b[n - 3] == '\r') b[n - 3] = 'x';
		memcpy(b + n, ".\r\n", 3);
		tmpls[i].size = hl + n;
		tmpls[i].body = b;
		tmpls[i].body_len = n + 3;
	}
}

int msg_pick(uint64_t *rng)
{
	if (ntmpls == 1) return 0;
	/* xorshift64 */
	uint64_t x = *rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*rng = x;
	unsigned r = (unsigned)(x % opt.sizes.total_weight);
	for (int i = 0; i < ntmpls; i++) {
		if (r < opt.sizes.weight[i]) return i;
		r -= opt.sizes.weight[i];
	}
	return ntmpls - 1;
}

/* ---- run ---------------------------------------------------------------- */

static double secs_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e9;
}

static void sleep_s(double s)
{
	struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	enum {
		O_FROM = 256,
		O_SNI,
		O_WINDOW,
		O_NODELE,
		O_LISTONLY,
		O_VDIR,
		O_VWAIT,
		O_VCOPIES,
		O_RUNID,
		O_IDLEPROTO,
		O_IDLEEHLO,
		O_HOLD,
		O_MEMPID,
		O_CWIN,
		O_TIMEOUT,
		O_LABEL,
		O_JSON,
		O_AUTH
	};
	static const struct option lo[] = {
	    {"host", 1, 0, 'H'},
	    {"port", 1, 0, 'p'},
	    {"sessions", 1, 0, 'c'},
	    {"messages", 1, 0, 'n'},
	    {"size", 1, 0, 's'},
	    {"rcpts", 1, 0, 'r'},
	    {"no-pipelining", 0, 0, 'P'},
	    {"starttls", 0, 0, 'S'},
	    {"tls", 0, 0, 'T'},
	    {"one-per-conn", 0, 0, '1'},
	    {"threads", 1, 0, 't'},
	    {"domain", 1, 0, 'd'},
	    {"user", 1, 0, 'u'},
	    {"pass", 1, 0, 'w'},
	    {"quiet", 0, 0, 'q'},
	    {"help", 0, 0, 'h'},
	    {"from", 1, 0, O_FROM},
	    {"sni", 1, 0, O_SNI},
	    {"window", 1, 0, O_WINDOW},
	    {"no-dele", 0, 0, O_NODELE},
	    {"list-only", 0, 0, O_LISTONLY},
	    {"verify-dir", 1, 0, O_VDIR},
	    {"verify-wait", 1, 0, O_VWAIT},
	    {"verify-copies", 1, 0, O_VCOPIES},
	    {"run-id", 1, 0, O_RUNID},
	    {"idle-proto", 1, 0, O_IDLEPROTO},
	    {"idle-ehlo", 0, 0, O_IDLEEHLO},
	    {"hold", 1, 0, O_HOLD},
	    {"mem-pid", 1, 0, O_MEMPID},
	    {"connect-window", 1, 0, O_CWIN},
	    {"timeout", 1, 0, O_TIMEOUT},
	    {"label", 1, 0, O_LABEL},
	    {"json", 1, 0, O_JSON},
	    {"auth", 1, 0, O_AUTH},
	    {0, 0, 0, 0},
	};
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "smtp"))
		opt.mode = MODE_SMTP;
	else if (!strcmp(argv[1], "pop3"))
		opt.mode = MODE_POP3;
	else if (!strcmp(argv[1], "idle"))
		opt.mode = MODE_IDLE;
	else {
		usage(stderr);
		return 2;
	}
	bool port_set = false, messages_set = false;
	parse_mix("1k", &opt.sizes);
	int ch;
	optind = 2;
	while ((ch = getopt_long(argc, argv, "H:p:c:n:s:r:PST1t:d:u:w:qh", lo, NULL)) != -1) {
		switch (ch) {
		case 'H': opt.host = optarg; break;
		case 'p':
			opt.port = atoi(optarg);
			port_set = true;
			break;
		case 'c': opt.sessions = atoi(optarg); break;
		case 'n':
			opt.messages = atol(optarg);
			messages_set = true;
			break;
		case 's':
			if (parse_mix(optarg, &opt.sizes) < 0) {
				fprintf(stderr, "bench: bad --size %s\n", optarg);
				return 2;
			}
			break;
		case 'r': opt.rcpts = atoi(optarg); break;
		case 'P': opt.pipelining = false; break;
		case 'S': opt.starttls = true; break;
		case 'T': opt.tls = true; break;
		case '1': opt.reuse = false; break;
		case 't': opt.threads = atoi(optarg); break;
		case 'd': opt.domain = optarg; break;
		case 'u': opt.user = optarg; break;
		case 'w': opt.pass = optarg; break;
		case 'q': opt.quiet = true; break;
		case 'h': usage(stdout); return 0;
		case O_FROM: opt.from = optarg; break;
		case O_SNI: opt.sni = optarg; break;
		case O_WINDOW: opt.window = atoi(optarg); break;
		case O_NODELE: opt.dele = false; break;
		case O_LISTONLY: opt.list_only = true; break;
		case O_VDIR: opt.verify_dir = optarg; break;
		case O_VWAIT: opt.verify_wait = atof(optarg); break;
		case O_VCOPIES: opt.verify_copies = atoi(optarg); break;
		case O_RUNID: opt.run_id = optarg; break;
		case O_IDLEPROTO:
			opt.idle_proto = strcmp(optarg, "pop3") ? MODE_SMTP : MODE_POP3;
			break;
		case O_IDLEEHLO: opt.idle_ehlo = true; break;
		case O_HOLD: opt.hold = atof(optarg); break;
		case O_MEMPID: opt.mem_pids = optarg; break;
		case O_CWIN: opt.connect_window = atoi(optarg); break;
		case O_TIMEOUT: opt.timeout = atof(optarg); break;
		case O_LABEL: opt.label = optarg; break;
		case O_JSON: opt.json = optarg; break;
		case O_AUTH: {
			/* RFC 4616: [authzid] NUL authcid NUL passwd, base64 */
			const char *colon = strchr(optarg, ':');
			if (!colon || colon == optarg) {
				fprintf(stderr, "bench: --auth takes USER:PASS\n");
				return 2;
			}
			size_t ul = (size_t)(colon - optarg), pl = strlen(colon + 1);
			size_t rl = ul + pl + 2;
			unsigned char *raw = malloc(rl);
			char *b64 = malloc(4 * ((rl + 2) / 3) + 1);
			if (!raw || !b64) abort();
			raw[0] = 0;
			memcpy(raw + 1, optarg, ul);
			raw[1 + ul] = 0;
			memcpy(raw + 2 + ul, colon + 1, pl);
			EVP_EncodeBlock((unsigned char *)b64, raw, (int)rl);
			free(raw);
			opt.auth_plain = b64;
			break;
		}
		default: usage(stderr); return 2;
		}
	}
	if (!port_set &&
	    (opt.mode == MODE_POP3 || (opt.mode == MODE_IDLE && opt.idle_proto == MODE_POP3)))
		opt.port = opt.tls ? 1995 : 1110;
	if (opt.mode == MODE_POP3 && !messages_set)
		opt.messages = 0; /* every message in the maildrop */
	if (opt.sessions < 1 || opt.threads < 1 || opt.rcpts < 1 || opt.rcpts > 100 ||
	    opt.window < 1 || opt.window > 64 || opt.connect_window < 1) {
		fprintf(stderr,
			"bench: bad numbers (sessions, threads, rcpts 1..100, window 1..64)\n");
		return 2;
	}
	if (opt.threads > opt.sessions) opt.threads = opt.sessions;
	if (!opt.sni) opt.sni = opt.domain;
	static char idbuf[32];
	if (!opt.run_id) {
		snprintf(idbuf, sizeof idbuf, "r%lx%x", (unsigned long)time(NULL),
			 (unsigned)getpid());
		opt.run_id = idbuf;
	}
	memset(&opt.addr, 0, sizeof opt.addr);
	opt.addr.sin_family = AF_INET;
	opt.addr.sin_port = htons((uint16_t)opt.port);
	if (inet_pton(AF_INET, opt.host, &opt.addr.sin_addr) != 1) {
		fprintf(stderr, "bench: --host takes an IPv4 address\n");
		return 2;
	}
	/* Ten thousand sessions need ten thousand descriptors. */
	struct rlimit rl;
	if (!getrlimit(RLIMIT_NOFILE, &rl)) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
		if ((long)rl.rlim_cur < opt.sessions + 64)
			fprintf(stderr, "bench: warning: only %ld descriptors for %d sessions\n",
				(long)rl.rlim_cur, opt.sessions);
	}
	build_templates();

	const struct proto *proto = opt.mode == MODE_SMTP	  ? &smtp_proto
				    : opt.mode == MODE_POP3	  ? &pop3_proto
				    : opt.idle_proto == MODE_POP3 ? &idle_pop3_proto
								  : &idle_smtp_proto;
	struct worker *ws = calloc((size_t)opt.threads, sizeof *ws);
	if (!ws) abort();
	int per = opt.sessions / opt.threads, extra = opt.sessions % opt.threads, idx = 0;
	for (int t = 0; t < opt.threads; t++) {
		struct worker *w = &ws[t];
		w->id = t;
		w->nconns = per + (t < extra);
		w->conns = calloc((size_t)w->nconns, sizeof *w->conns);
		w->ssl_ctx = SSL_CTX_new(TLS_client_method());
		if (!w->conns || !w->ssl_ctx) abort();
		SSL_CTX_set_verify(w->ssl_ctx, SSL_VERIFY_NONE, NULL);
		SSL_CTX_set_session_cache_mode(w->ssl_ctx, SSL_SESS_CACHE_OFF);
		for (int i = 0; i < w->nconns; i++) {
			struct conn *c = &w->conns[i];
			c->w = w;
			c->proto = proto;
			c->fd = -1;
			c->idx = idx++;
			c->rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(c->idx + 1);
		}
	}

	struct result res;
	memset(&res, 0, sizeof res);
	res.idle_target = opt.sessions;
	if (opt.mem_pids && mem_measure(opt.mem_pids, &res.mem_before) == 0) res.have_mem = true;

	uint64_t t0 = now_ns();
	for (int t = 0; t < opt.threads; t++)
		if (pthread_create(&ws[t].thread, NULL, worker_main, &ws[t])) {
			perror("pthread_create");
			return 2;
		}
	if (opt.mode == MODE_IDLE) {
		while (atomic_load(&idle_established) + atomic_load(&idle_failed) < opt.sessions &&
		       secs_since(t0) < opt.timeout)
			sleep_s(0.05);
		res.elapsed_s = secs_since(t0);
		if (!opt.quiet)
			fprintf(stderr, "bench: %d sessions up, %d failed, in %.2f s\n",
				atomic_load(&idle_established), atomic_load(&idle_failed),
				res.elapsed_s);
		/* Let the server settle (lazy allocations, worker hand-offs). */
		sleep_s(0.5);
		if (res.have_mem) mem_measure(opt.mem_pids, &res.mem_after);
		sleep_s(opt.hold > 0.5 ? opt.hold - 0.5 : 0);
		struct mem_sample again;
		if (res.have_mem && mem_measure(opt.mem_pids, &again) == 0 &&
		    again.pss > res.mem_after.pss)
			res.mem_after = again;
		atomic_store(&run_stop, true);
	}
	for (int t = 0; t < opt.threads; t++)
		pthread_join(ws[t].thread, NULL);
	if (opt.mode != MODE_IDLE) {
		res.elapsed_s = secs_since(t0);
		if (res.have_mem) mem_measure(opt.mem_pids, &res.mem_after);
	}
	for (int t = 0; t < opt.threads; t++) {
		struct stats *s = &ws[t].st;
		for (int m = 0; m < M_COUNT; m++)
			hist_merge(&res.st.h[m], &s->h[m]);
		for (int i = 0; i < 1000; i++)
			res.st.codes[i] += s->codes[i];
		for (int e = 0; e < E_COUNT; e++)
			res.st.errs[e] += s->errs[e];
		res.st.msgs += s->msgs;
		res.st.msgs_failed += s->msgs_failed;
		res.st.bytes += s->bytes;
		res.st.sessions += s->sessions;
		res.st.established += s->established;
		if (!res.st.last_err[0]) memcpy(res.st.last_err, s->last_err, sizeof s->last_err);
	}
	if (opt.mode == MODE_SMTP && opt.verify_dir) {
		res.have_verify = true;
		res.expected = opt.messages;
		verify_maildir(opt.verify_dir, opt.run_id, opt.messages, opt.verify_copies,
			       opt.verify_wait, &res.vr);
	}
	if (!opt.quiet) report_table(&res);
	if (opt.json && report_json(&res, opt.json) < 0) {
		perror(opt.json);
		return 2;
	}
	bool ok = res.st.errs[E_CONNECT] + res.st.errs[E_IO] + res.st.errs[E_TLS] +
			  res.st.errs[E_PROTO] + res.st.errs[E_TIMEOUT] ==
		      0 &&
		  res.st.msgs_failed == 0;
	if (res.have_verify && (res.vr.missing || res.vr.duplicates)) ok = false;
	return ok ? 0 : 1;
}
