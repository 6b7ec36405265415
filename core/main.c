/*
 * main: the command line (SPEC 2), startup, and the signal loop.
 *
 * Startup order matters: parse and check the config (exit 1), make sure
 * io_uring is usable, create the maildrops and bind every port (exit 2 on
 * failure, naming the cause), drop privileges, then start the workers. The
 * main thread then only waits on a signalfd: SIGTERM/SIGINT stop, SIGHUP
 * reloads.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <liburing.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "core/limits.h"
#include "core/log.h"
#include "core/pool.h"
#include "core/relay.h"
#include "core/server.h"
#include "core/tls.h"
#include "store/dir.h"
#include "store/queue.h"

#define MPB_VERSION "0.1.0"

pthread_barrier_t worker_ready;
_Atomic int worker_init_error;

static void usage(FILE *f)
{
	fprintf(f, "usage: mailpopbox [CONFIG]            run the server (default ./mailpopbox.toml)\n"
		   "       mailpopbox --check CONFIG      validate the configuration\n"
		   "       mailpopbox --hash-password     read a password on stdin, print its hash\n"
		   "       mailpopbox --version | --help\n");
}

static int hash_password(void)
{
	char pw[1024];
	bool tty = isatty(STDIN_FILENO);
	struct termios old, quiet;
	if (tty) {
		fprintf(stderr, "Password: ");
		tcgetattr(STDIN_FILENO, &old);
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
	}
	char *ok = fgets(pw, sizeof pw, stdin);
	if (tty) {
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	}
	if (!ok) {
		fprintf(stderr, "mailpopbox: no password on stdin\n");
		return 1;
	}
	pw[strcspn(pw, "\r\n")] = '\0';
	if (!pw[0]) {
		fprintf(stderr, "mailpopbox: empty password\n");
		return 1;
	}
	char hash[256];
	int rc = pool_hash_password(pw, hash, sizeof hash);
	explicit_bzero(pw, sizeof pw);
	if (rc) {
		fprintf(stderr, "mailpopbox: crypt(3) has no yescrypt here\n");
		return 1;
	}
	printf("%s\n", hash);
	return 0;
}

/* io_uring can be compiled out, disabled by sysctl, or filtered by a
 * container's seccomp profile; say which and how to allow it. */
static int probe_io_uring(void)
{
	struct io_uring ring;
	int rc = io_uring_queue_init(2, &ring, 0);
	if (rc == 0) {
		io_uring_queue_exit(&ring);
		return 0;
	}
	fprintf(stderr,
		"mailpopbox: io_uring is unavailable: %s\n"
		"  mailpopbox needs io_uring (Linux 6.1 or later). If the kernel has it, it is\n"
		"  switched off: check `sysctl kernel.io_uring_disabled` (set it to 0, or to 1\n"
		"  and run mailpopbox in the io_uring_group), and in a container allow the\n"
		"  io_uring_setup, io_uring_enter and io_uring_register syscalls in the\n"
		"  seccomp profile (Docker: --security-opt seccomp=<profile>).\n",
		strerror(-rc));
	return -1;
}

/* SO_REUSEPORT lets any process of the same user join a port: a second
 * mailpopbox started by mistake would silently share the first one's
 * connections. A bind without it fails on a port someone listens on, so it
 * goes first, alone, and is closed again (SO_REUSEADDR: TIME_WAIT is fine). */
static int port_free(struct sockaddr_storage *ss, socklen_t len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	int rc = bind(fd, (struct sockaddr *)ss, len) != 0 ? -errno : 0;
	close(fd);
	return rc;
}

static int bind_one(const struct listen_addr *la, struct sockaddr_storage *ss, socklen_t len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (ss->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)ss, len) != 0 || listen(fd, 4096) != 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	(void)la;
	return fd;
}

static uint16_t port_of(const struct sockaddr_storage *ss)
{
	return ntohs(ss->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)ss)->sin6_port
					       : ((const struct sockaddr_in *)ss)->sin_port);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons(port);
}

/* Every worker gets its own socket on each address (SO_REUSEPORT): the
 * kernel spreads connections, workers share nothing. Port 0 is resolved by
 * the first bind so that all workers share the same ephemeral port. */
static int bind_all(struct server *srv)
{
	struct config *cfg = srv->cfg;
	unsigned total = 0;
	for (int s = 0; s < SVC_COUNT; s++)
		if (cfg->svc[s].enabled)
			total += cfg->svc[s].nlisten;
	for (unsigned w = 0; w < srv->nworkers; w++) {
		srv->workers[w].listeners = calloc(total ? total : 1, sizeof(struct listener));
		if (!srv->workers[w].listeners)
			return -1;
	}
	for (int s = 0; s < SVC_COUNT; s++) {
		const struct service_config *sc = &cfg->svc[s];
		if (!sc->enabled)
			continue;
		for (unsigned a = 0; a < sc->nlisten; a++) {
			struct sockaddr_storage ss = sc->listen[a].ss;
			for (unsigned w = 0; w < srv->nworkers; w++) {
				int fd = w == 0 && port_of(&ss) != 0 ? port_free(&ss, sc->listen[a].len) : 0;
				if (fd == 0)
					fd = bind_one(&sc->listen[a], &ss, sc->listen[a].len);
				if (fd < 0) {
					fprintf(stderr, "mailpopbox: cannot listen on %s for %s: %s\n",
						sc->listen[a].text, svc_names[s], strerror(-fd));
					return -1;
				}
				if (w == 0 && port_of(&ss) == 0) {
					struct sockaddr_storage got;
					socklen_t gl = sizeof got;
					getsockname(fd, (struct sockaddr *)&got, &gl);
					set_port(&ss, port_of(&got));
				}
				struct worker *wk = &srv->workers[w];
				struct listener *l = &wk->listeners[wk->nlisteners++];
				l->w = wk;
				l->fd = fd;
				l->svc = (enum svc_kind)s;
			}
			char host[INET6_ADDRSTRLEN];
			ipcount_format(&ss, host, sizeof host);
			log_info("listening", "service=%s addr=%s%s%s:%u", svc_names[s],
				 ss.ss_family == AF_INET6 ? "[" : "", host,
				 ss.ss_family == AF_INET6 ? "]" : "", port_of(&ss));
		}
	}
	return 0;
}

/* The order of syncs keeps what was acknowledged through a power cut on a
 * file system that orders its own metadata (a journal). ext4 without one
 * does not: a cut while a directory grows can damage it, and e2fsck then
 * moves messages into lost+found (tests/integration/test_powercut.py). */
static void warn_unjournaled(const char *what, const char *path)
{
	char q[600];
	log_warn("storage_unjournaled",
		 "%s=%s hint=\"ext4 without a journal: after a power cut e2fsck may move "
		 "messages into lost+found; tune2fs -O has_journal\"",
		 what, log_q(q, sizeof q, path));
}

static int open_maildrops(struct server *srv)
{
	struct config *cfg = srv->cfg;
	srv->maildirs = calloc(cfg->ndomains, sizeof *srv->maildirs);
	if (!srv->maildirs)
		return -1;
	maildir_init_names();
	srv->qdirfd = -1;
	if (cfg->relay.queue) {
		/* Submissions to other domains are queued here (SPEC 5). */
		srv->qdirfd = queue_dir_open(cfg->relay.queue);
		if (srv->qdirfd < 0) {
			fprintf(stderr, "mailpopbox: cannot open relay queue %s: %s\n",
				cfg->relay.queue, strerror(-srv->qdirfd));
			return -1;
		}
	}
	if (srv->qdirfd >= 0 && dir_unjournaled(srv->qdirfd))
		warn_unjournaled("relay_queue", cfg->relay.queue);
	time_t now = time(NULL);
	for (unsigned i = 0; i < cfg->ndomains; i++) {
		int rc = maildir_open(cfg->domains[i].maildrop, &srv->maildirs[i]);
		if (rc) {
			fprintf(stderr, "mailpopbox: cannot open maildrop %s for %s: %s\n",
				cfg->domains[i].maildrop, cfg->domains[i].name, strerror(-rc));
			return -1;
		}
		if (dir_unjournaled(srv->maildirs[i].dirfd))
			warn_unjournaled("maildrop", cfg->domains[i].maildrop);
		/* SPEC 6: what a crash left in tmp/ goes after 36 hours. */
		int n = maildir_clean_tmp(&srv->maildirs[i], now, 36 * 3600);
		if (n > 0)
			log_info("tmp_cleaned", "maildrop=%s files=%d", cfg->domains[i].maildrop, n);
	}
	return 0;
}

static int build_policies(struct server *srv)
{
	struct config *cfg = srv->cfg;
	srv->smtp_domains = calloc(cfg->ndomains, sizeof *srv->smtp_domains);
	srv->pop3_domains = calloc(cfg->ndomains, sizeof *srv->pop3_domains);
	if (!srv->smtp_domains || !srv->pop3_domains)
		return -1;
	for (unsigned i = 0; i < cfg->ndomains; i++) {
		srv->smtp_domains[i].name = cfg->domains[i].name;
		srv->smtp_domains[i].blocked = (const char *const *)cfg->domains[i].blocked;
		srv->smtp_domains[i].nblocked = cfg->domains[i].nblocked;
		srv->pop3_domains[i].name = cfg->domains[i].name;
	}
	static const enum svc_kind smtp_svcs[3] = {SVC_SMTP, SVC_SUBMISSION, SVC_SUBMISSIONS};
	for (int k = 0; k < 3; k++) {
		const struct service_config *sc = &cfg->svc[smtp_svcs[k]];
		srv->smtp_pol[k] = (struct smtp_policy){
			.hostname = cfg->hostname,
			.max_message_size = sc->max_message_size,
			.max_recipients = sc->max_recipients,
			.submission = k > 0,
			.domains = srv->smtp_domains,
			.ndomains = cfg->ndomains,
		};
	}
	for (int k = 0; k < 2; k++) {
		const struct service_config *sc = &cfg->svc[k ? SVC_POP3S : SVC_POP3];
		srv->pop3_pol[k] = (struct pop3_policy){
			.hostname = cfg->hostname,
			.domains = srv->pop3_domains,
			.ndomains = cfg->ndomains,
			.allow_plaintext_auth = sc->allow_plaintext_auth,
		};
	}
	return 0;
}

static int drop_privileges(const char *user)
{
	if (!user || geteuid() != 0)
		return 0;
	struct passwd *pw = getpwnam(user);
	if (!pw) {
		fprintf(stderr, "mailpopbox: user %s does not exist\n", user);
		return -1;
	}
	if (initgroups(user, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
	    setuid(pw->pw_uid) != 0) {
		fprintf(stderr, "mailpopbox: cannot become %s: %s\n", user, strerror(errno));
		return -1;
	}
	log_info("privileges_dropped", "user=%s", user);
	return 0;
}

static void log_stats(struct server *srv)
{
	struct tls_stats t;
	tls_stats_get(&t);
	log_info("stats", "tls_handshakes=%llu tls_failures=%llu ktls_tx=%llu ktls_rx=%llu "
			  "user_tx=%llu user_rx=%llu",
		 (unsigned long long)t.handshakes, (unsigned long long)t.failures,
		 (unsigned long long)t.ktls_tx, (unsigned long long)t.ktls_rx,
		 (unsigned long long)t.user_tx, (unsigned long long)t.user_rx);
	(void)srv;
}

static int run(const char *path)
{
	struct config cfg;
	if (config_load(path, &cfg, stderr) != 0)
		return 1;
	log_min_level = cfg.log_level;
	for (unsigned i = 0; i < cfg.ndomains; i++)
		if (!cfg.domains[i].password_hashed)
			log_warn("plaintext_password", "domain=%s hint=\"use mailpopbox --hash-password\"",
				 cfg.domains[i].name);
	if (probe_io_uring() != 0) {
		config_free(&cfg);
		return 2;
	}

	static struct server srv;
	srv.cfg = &cfg;
	srv.ips = ipcount_new();
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	srv.nworkers = cfg.workers ? cfg.workers : (unsigned)(ncpu > 0 ? ncpu : 1);
	srv.workers = aligned_alloc(64, ((srv.nworkers * sizeof(struct worker)) + 63) / 64 * 64);
	if (!srv.ips || !srv.workers)
		return 2;
	memset(srv.workers, 0, srv.nworkers * sizeof(struct worker));
	if (open_maildrops(&srv) != 0 || build_policies(&srv) != 0)
		return 2;
	/* Keys are read now, before privileges are dropped. */
	if (tls_init(&srv) != 0)
		return 2;
	srv.tls_available = tls_have_certs();
	for (unsigned i = 0; i < srv.nworkers; i++)
		if (worker_init(&srv.workers[i], &srv, i) != 0) {
			fprintf(stderr, "mailpopbox: cannot set up worker %u\n", i);
			return 2;
		}
	if (bind_all(&srv) != 0)
		return 2;
	if (drop_privileges(cfg.user) != 0)
		return 2;

	/* Signals are taken by the signalfd below only: block them in every
	 * thread before any starts. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		fprintf(stderr, "mailpopbox: signalfd: %s\n", strerror(errno));
		return 2;
	}
	if (pool_start(8) != 0) {
		fprintf(stderr, "mailpopbox: cannot start helper threads\n");
		return 2;
	}
	/* Before the workers: its queue_load() must not race an enqueue. */
	if (cfg.relay.queue && relay_start(&srv) != 0)
		return 2;
	pthread_barrier_init(&worker_ready, NULL, srv.nworkers + 1);
	for (unsigned i = 0; i < srv.nworkers; i++) {
		if (pthread_create(&srv.workers[i].thread, NULL, worker_run, &srv.workers[i]) != 0) {
			fprintf(stderr, "mailpopbox: cannot start worker threads\n");
			return 2;
		}
		char name[16]; /* as top -H and ps -L show it */
		snprintf(name, sizeof name, "mpb-ring%u", (unsigned)(uint16_t)i);
		pthread_setname_np(srv.workers[i].thread, name);
	}
	pthread_barrier_wait(&worker_ready);
	if (atomic_load(&worker_init_error)) {
		fprintf(stderr, "mailpopbox: io_uring setup failed: %s\n",
			strerror(-atomic_load(&worker_init_error)));
		return 2;
	}
	log_info("started", "version=%s workers=%u sync=%s tls=%s ktls=%s", MPB_VERSION,
		 srv.nworkers, cfg.sync == SYNC_FULL ? "full" : "none",
		 srv.tls_available ? "on" : "off", tls_ktls_state());

	for (;;) {
		struct signalfd_siginfo si;
		ssize_t n = read(sfd, &si, sizeof si);
		if (n != sizeof si) {
			if (n < 0 && errno == EINTR)
				continue;
			break;
		}
		if (si.ssi_signo == SIGHUP) {
			tls_reload(&srv);
			log_stats(&srv);
			continue;
		}
		if (si.ssi_signo == SIGPIPE)
			continue;
		log_info("stopping", "signal=%s", si.ssi_signo == SIGTERM ? "TERM" : "INT");
		break;
	}
	atomic_store(&srv.stop, true);
	for (unsigned i = 0; i < srv.nworkers; i++)
		worker_wake(&srv.workers[i]);
	for (unsigned i = 0; i < srv.nworkers; i++)
		pthread_join(srv.workers[i].thread, NULL);
	pool_stop();
	relay_stop();
	log_stats(&srv);
	log_info("stopped", "status=0");
	for (unsigned i = 0; i < cfg.ndomains; i++)
		maildir_close(&srv.maildirs[i]);
	config_free(&cfg);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		usage(stdout);
		return 0;
	}
	if (argc >= 2 && !strcmp(argv[1], "--version")) {
		printf("mailpopbox %s\n", MPB_VERSION);
		return 0;
	}
	if (argc >= 2 && !strcmp(argv[1], "--hash-password"))
		return hash_password();
	if (argc >= 2 && !strcmp(argv[1], "--check")) {
		const char *path = argc >= 3 ? argv[2] : "mailpopbox.toml";
		struct config cfg;
		if (config_load(path, &cfg, stderr) != 0)
			return 1;
		config_free(&cfg);
		printf("ok\n");
		return 0;
	}
	if (argc >= 2 && argv[1][0] == '-' && argv[1][1]) {
		fprintf(stderr, "mailpopbox: unknown option %s\n", argv[1]);
		usage(stderr);
		return 1;
	}
	return run(argc >= 2 ? argv[1] : "mailpopbox.toml");
}
