/*
 * The relay runner (SPEC 5). Reading order: the module state and the
 * scheduler (which entry is due), how new entries become known
 * (relay_enqueued() hands over one entry, the directory scan behind
 * relay_kick() finds the rest),
 * one attempt for one entry (group by domain, deliver, record, DSN,
 * remove), then the network layer under it: DNS with c-ares, connect, TLS,
 * and the loop that drives proto/smtpc over the socket.
 *
 * Threads and blocking. None of this runs on a ring thread: the relay has
 * its own scheduler thread and RELAY_THREADS delivery threads, and there
 * blocking I/O is acceptable, always bounded: every wait is a poll() with
 * a deadline (the machine's RFC 5321 4.5.3.2 timeouts, CONNECT_TIMEOUT,
 * c-ares' own query timeouts) that also watches `stopfd`, an eventfd that
 * relay_stop() makes readable for good. Disk writes (queue state files,
 * DSN files) are plain blocking write/fsync/rename, as in store/queue.
 *
 * Ownership. The entry list (sorted by id, so a scan finds known ids by
 * binary search) and each entry's `st` belong to the mutex. An entry in
 * state BUSY belongs to the one delivery thread that took it: it changes
 * the entry's contents without the lock and hands it back by setting IDLE
 * (or removing it) under the lock. The mutex is never held across a read,
 * a write or a network wait (only a scan's stat of one state file), so
 * relay_enqueued() and relay_kick() can be called from anywhere without
 * waiting on a disk or a network.
 *
 * The module state is one static struct (there is one queue per process),
 * so that the engine can hand over an entry without a handle.
 *
 * Crash safety: results are applied to the entry and made durable with
 * queue_update() after each attempt, before any DSN; a DSN is written (and
 * made durable) before the flags that say it went out. A kill -9 therefore
 * never loses a result; at worst a DSN is written twice.
 *
 * The exception, for speed: an attempt that leaves every recipient final
 * with no DSN owed (the common case: relayed at once, nobody asked for a
 * notification) records nothing and removes the entry with queue_discard(),
 * without a directory fsync. A crash before those unlinks are durable
 * brings the entry back as it was and it is sent again: a duplicate, never
 * a loss (Postfix makes the same trade). Partial results, retries and
 * anything that owes a DSN still go through queue_update() first.
 */
#include "core/relay.h"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "core/server.h"
#include "proto/dsn.h"
#include "proto/smtpc.h"
#include "store/dir.h"
#include "store/maildir.h"
#include "store/queue.h"

/* RFC 5321 4.5.3.2 gives no connect timeout; Postfix uses 30 s. */
#define CONNECT_TIMEOUT_MS 30000
/* TLS handshake after 220 to STARTTLS: as the STARTTLS reply itself. */
#define HANDSHAKE_TIMEOUT_MS 300000
/* Addresses tried per domain and attempt (Postfix smtp_mx_address_limit). */
#define MAX_ADDRS 5
#define MAX_MX 16
#define OBUF_CAP (64 * 1024)
#define IBUF_CAP (16 * 1024)
#define FBUF_CAP (32 * 1024)
/* A DSN that could not be stored is tried again this much later. */
#define DSN_RETRY_S 60

enum rstate {
	R_IDLE,	 /* waiting for next_try */
	R_READY, /* due, in the ready FIFO */
	R_BUSY,	 /* a delivery thread owns it */
	R_BAD,	 /* unusable (logged once); left for the operator */
};

struct rentry {
	struct queue_entry e;
	uint8_t st;
	struct rentry *rnext; /* ready FIFO */
};

static struct relay {
	pthread_mutex_t lock;
	pthread_cond_t sched_cv; /* kick, stop, an entry back from a thread */
	pthread_cond_t wcv[RELAY_THREADS]; /* per delivery thread: work, stop */
	unsigned parked[RELAY_THREADS];	   /* waiting threads, last parked on top */
	unsigned nparked;
	bool started, stop, kicked;
	struct server *srv;
	const struct relay_config *rc;
	int qdirfd;
	int stopfd;
	struct rentry **v; /* sorted by id */
	unsigned n, cap;
	struct rentry *ready, *ready_tail;
	pthread_t sched;
	pthread_t workers[RELAY_THREADS];
	unsigned nworkers;
	struct smtpc_policy pol;   /* relay.tls as configured */
	struct smtpc_policy plain; /* opportunistic, after a failed handshake */
	SSL_CTX *tls_verify; /* relay.tls = required: verify chain and name */
	SSL_CTX *tls_any;    /* opportunistic: encrypt, verify nothing */
	char *ns_csv;	     /* relay.nameservers joined, or NULL */
} R = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .sched_cv = PTHREAD_COND_INITIALIZER,
    .qdirfd = -1,
    .stopfd = -1,
};

static int64_t now_s(void)
{
	return (int64_t)time(NULL);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ */
/* the entry list (lock held) */

static int id_cmp(const char *id, const struct rentry *r)
{
	return strcmp(id, r->e.id);
}

/* Index of id, or -(insertion point) - 1. */
static long list_find(const char *id)
{
	size_t lo = 0, hi = R.n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = id_cmp(id, R.v[mid]);
		if (c == 0) return (long)mid;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -(long)lo - 1;
}

static int list_insert(struct rentry *r)
{
	long at = list_find(r->e.id);
	if (at >= 0) return -EEXIST;
	size_t pos = (size_t)(-at - 1);
	if (R.n == R.cap) {
		unsigned cap = R.cap ? R.cap * 2 : 64;
		struct rentry **nv = realloc(R.v, cap * sizeof(struct rentry *));
		if (!nv) return -ENOMEM;
		R.v = nv;
		R.cap = cap;
	}
	memmove(&R.v[pos + 1], &R.v[pos], (R.n - pos) * sizeof(struct rentry *));
	R.v[pos] = r;
	R.n++;
	return 0;
}

static void list_remove(struct rentry *r)
{
	long at = list_find(r->e.id);
	if (at < 0) return;
	memmove(&R.v[at], &R.v[at + 1], (R.n - (size_t)at - 1) * sizeof(struct rentry *));
	R.n--;
}

static void entry_free(struct rentry *r)
{
	queue_entry_free(&r->e);
	free(r);
}

static void log_bad(const struct queue_entry *e)
{
	log_error("queue_entry_bad", "id=%s error=%s hint=\"left in the queue for the operator\"",
		  e->id, e->error == -ENOENT ? "message_missing" : "state_file_corrupt");
}

/* ------------------------------------------------------------------ */
/* new entries: handed over (relay_enqueued) or the directory scan (relay_kick) */

/* Loads the entry ID and adds it to the list unless it is known already.
 * Called without the lock. 0 (added), -EEXIST (known, or gone meanwhile),
 * -ENOMEM, or -errno when its message file cannot be opened. Insertion
 * re-checks, under the lock, that the id is still unknown and its message
 * file still there (a delivery thread unlinks the file before it drops
 * the entry from the list), so a finished entry never comes back. */
static int add_one(const char *id)
{
	pthread_mutex_lock(&R.lock);
	bool known = list_find(id) >= 0;
	pthread_mutex_unlock(&R.lock);
	if (known) return -EEXIST;
	struct rentry *r = calloc(1, sizeof *r);
	if (!r) return -ENOMEM;
	/* as queue_load() does, but removing nothing: an enqueue may be
	 * writing its *.tmp files right now */
	int rc = queue_read_entry(R.qdirfd, id, &r->e);
	if (rc != 0) {
		free(r);
		return rc;
	}
	r->st = r->e.error ? R_BAD : R_IDLE;
	pthread_mutex_lock(&R.lock);
	bool ok = list_find(id) < 0 && queue_exists(R.qdirfd, id) && (rc = list_insert(r)) == 0;
	pthread_mutex_unlock(&R.lock);
	if (!ok) {
		entry_free(r);
		return rc == -ENOMEM ? rc : -EEXIST;
	}
	if (r->st == R_BAD) log_bad(&r->e);
	return 0;
}

/* Finds *.msg files whose id is not in the list and adds them. Called
 * without the lock. An entry removed by a delivery thread while the scan
 * reads is not brought back: insertion re-checks, under the lock, that the
 * id is still unknown and its message file still there (a delivery thread
 * unlinks the file before it drops the entry from the list). */
static void scan(void)
{
	DIR *d = dir_open(R.qdirfd, ".");
	if (!d) {
		log_error("relay_scan_failed", "error=%s",
			  log_q((char[64]){0}, 64, strerror(errno)));
		return;
	}
	char(*ids)[QUEUE_ID_MAX] = NULL;
	size_t nids = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		size_t len = strlen(de->d_name);
		if (de->d_name[0] == '.' || len <= 4 || len - 4 >= QUEUE_ID_MAX ||
		    strcmp(de->d_name + len - 4, ".msg") != 0)
			continue;
		char id[QUEUE_ID_MAX];
		snprintf(id, sizeof id, "%.*s", (int)(len - 4), de->d_name);
		pthread_mutex_lock(&R.lock);
		bool known = list_find(id) >= 0;
		pthread_mutex_unlock(&R.lock);
		if (known) continue;
		if (nids == cap) {
			size_t nc = cap ? cap * 2 : 16;
			char(*ni)[QUEUE_ID_MAX] = realloc(ids, nc * sizeof *ids);
			if (!ni) break;
			ids = ni;
			cap = nc;
		}
		memcpy(ids[nids++], id, sizeof id);
	}
	closedir(d);
	unsigned added = 0;
	for (size_t i = 0; i < nids; i++) {
		int rc = add_one(ids[i]);
		if (rc == -ENOMEM) break;
		added += rc == 0;
	}
	free(ids);
	if (added) log_debug("relay_scan", "new=%u", added);
}

/* ------------------------------------------------------------------ */
/* scheduler and delivery threads */

static void wake_one(void);

/* Appends r to the ready FIFO and wakes a delivery thread. Lock held. */
static void make_ready(struct rentry *r)
{
	r->st = R_READY;
	r->rnext = NULL;
	if (R.ready_tail)
		R.ready_tail->rnext = r;
	else
		R.ready = r;
	R.ready_tail = r;
	wake_one();
}

static void *sched_main(void *arg)
{
	(void)arg;
	int64_t next_scan = now_s() + RELAY_RESCAN_S; /* relay_start() loaded the rest */
	pthread_mutex_lock(&R.lock);
	while (!R.stop) {
		if (R.kicked || now_s() >= next_scan) {
			R.kicked = false;
			pthread_mutex_unlock(&R.lock);
			scan();
			next_scan = now_s() + RELAY_RESCAN_S;
			pthread_mutex_lock(&R.lock);
			continue;
		}
		/* A linear pass: a single user's queue is short, and this runs
		 * once per kick, per finished attempt or per due time. */
		int64_t now = now_s(), next = INT64_MAX;
		for (unsigned i = 0; i < R.n; i++) {
			struct rentry *r = R.v[i];
			if (r->st != R_IDLE) continue;
			if (r->e.next_try <= now) {
				make_ready(r);
			} else if (r->e.next_try < next) {
				next = r->e.next_try;
			}
		}
		if (R.stop || R.kicked) continue;
		if (next > next_scan) next = next_scan; /* the periodic rescan */
		struct timespec ts = {.tv_sec = (time_t)next, .tv_nsec = 0};
		pthread_cond_timedwait(&R.sched_cv, &R.lock, &ts);
	}
	pthread_mutex_unlock(&R.lock);
	return NULL;
}

enum { ATTEMPT_KEEP, ATTEMPT_REMOVED, ATTEMPT_BAD, ATTEMPT_ABANDONED };
static int attempt(struct rentry *r);
static void thread_channel_drop(void);
/* Per delivery thread: buffers and the machine (about 90 KiB). */
static __thread struct xfer *thread_xfer;
static int64_t idle_left_ms(void);
static void idle_close(struct xfer *x);

/* The thread parked last gets the work: it is the one most likely to
 * hold an idle link (connection reuse), and its caches are warm. Lock
 * held. */
static void wake_one(void)
{
	if (R.nparked) pthread_cond_signal(&R.wcv[R.parked[--R.nparked]]);
}

/* Waits for wake_one() or stop, until TS if given. Lock held. */
static void park(unsigned me, const struct timespec *ts)
{
	R.parked[R.nparked++] = me;
	if (ts)
		pthread_cond_timedwait(&R.wcv[me], &R.lock, ts);
	else
		pthread_cond_wait(&R.wcv[me], &R.lock);
	for (unsigned i = 0; i < R.nparked; i++) {
		if (R.parked[i] != me) continue;
		/* woken by the clock or spuriously: not by wake_one */
		memmove(&R.parked[i], &R.parked[i + 1], (R.nparked - i - 1) * sizeof R.parked[0]);
		R.nparked--;
		break;
	}
}

static void *worker_main(void *arg)
{
	unsigned me = (unsigned)(uintptr_t)arg;
	pthread_mutex_lock(&R.lock);
	while (!R.stop) {
		struct rentry *r = R.ready;
		int64_t left = r ? -1 : idle_left_ms();
		if (left >= 0) {
			/* nothing to do: the idle link lives LINK_IDLE_MS */
			if (left == 0) {
				pthread_mutex_unlock(&R.lock);
				idle_close(thread_xfer);
				pthread_mutex_lock(&R.lock);
				continue;
			}
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += left / 1000;
			ts.tv_nsec += (left % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			park(me, &ts);
			continue;
		}
		if (!r) {
			park(me, NULL);
			continue;
		}
		R.ready = r->rnext;
		if (!R.ready) R.ready_tail = NULL;
		r->st = R_BUSY;
		pthread_mutex_unlock(&R.lock);
		int rc = attempt(r);
		pthread_mutex_lock(&R.lock);
		if (rc == ATTEMPT_REMOVED) {
			list_remove(r);
			entry_free(r);
		} else {
			/* the scheduler times its next try */
			r->st = rc == ATTEMPT_BAD ? R_BAD : R_IDLE;
			pthread_cond_signal(&R.sched_cv);
		}
	}
	pthread_mutex_unlock(&R.lock);
	idle_close(thread_xfer);
	free(thread_xfer);
	thread_xfer = NULL;
	thread_channel_drop();
	return NULL;
}

void relay_enqueued(struct queue_entry *e)
{
	struct rentry *r = calloc(1, sizeof *r);
	if (!r) {
		queue_entry_free(e);
		relay_kick(); /* the full scan finds it */
		return;
	}
	r->e = *e;
	memset(e, 0, sizeof *e);
	/* Straight to the ready list and a parked delivery thread: no
	 * scheduler in between. (A scan may have found the file first: then
	 * the id is known. If a thread even finished it meanwhile, the
	 * attempt finds its file gone and drops it.) */
	pthread_mutex_lock(&R.lock);
	int rc = !R.started || R.stop || list_find(r->e.id) >= 0 ? -EEXIST : list_insert(r);
	if (rc == 0)
		make_ready(r);
	pthread_mutex_unlock(&R.lock);
	if (rc != 0) {
		entry_free(r);
		if (rc == -ENOMEM) relay_kick();
	}
}

void relay_kick(void)
{
	pthread_mutex_lock(&R.lock);
	R.kicked = true;
	pthread_cond_signal(&R.sched_cv);
	pthread_mutex_unlock(&R.lock);
}

/* ------------------------------------------------------------------ */
/* waiting on a socket */

/* Waits until fd is ready for events, the deadline (mono_ms) passes or
 * the relay stops. 0, -ETIMEDOUT or -ECANCELED. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = events},
				      {.fd = R.stopfd, .events = POLLIN}};
		int64_t left = deadline - mono_ms();
		if (left < 0) left = 0;
		int n = poll(p, 2, (int)(left > 60000 ? 60000 : left));
		if (n < 0 && errno == EINTR) continue;
		if (p[1].revents) return -ECANCELED;
		if (n > 0) return 0;
		if (n < 0) return -errno;
		if (mono_ms() >= deadline) return -ETIMEDOUT;
	}
}

/* ------------------------------------------------------------------ */
/* DNS (c-ares on this thread, with its own poll loop) */

struct mx_host {
	char name[256];
	unsigned pref;
};

struct dns_mx {
	bool done;
	int status;
	struct mx_host hosts[MAX_MX];
	unsigned n;
	bool null_mx;
};

struct dns_addr {
	bool done;
	int status;
	struct sockaddr_storage ss[MAX_ADDRS];
	socklen_t len[MAX_ADDRS];
	unsigned n;
};

static int dns_channel(ares_channel *ch)
{
	struct ares_options o = {.timeout = 3000, .tries = 2};
	int rc = ares_init_options(ch, &o, ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
	if (rc != ARES_SUCCESS) return rc;
	if (R.ns_csv && (rc = ares_set_servers_ports_csv(*ch, R.ns_csv)) != ARES_SUCCESS) {
		ares_destroy(*ch);
		return rc;
	}
	return ARES_SUCCESS;
}

/* One channel per delivery thread, created on first use and kept: a new
 * channel rereads resolv.conf, nsswitch.conf and hosts and opens new
 * sockets. It is recreated after a resolver-level error (the servers
 * unreachable or timing out, a cancelled run) and after CHANNEL_MAX_AGE_S,
 * so a changed resolv.conf is picked up. */
#define CHANNEL_MAX_AGE_S 300
static __thread ares_channel thread_ch;
static __thread bool thread_ch_ok;
static __thread int64_t thread_ch_born;

static void thread_channel_drop(void)
{
	if (thread_ch_ok) ares_destroy(thread_ch);
	thread_ch_ok = false;
}

static int thread_channel(ares_channel *ch)
{
	if (thread_ch_ok && now_s() - thread_ch_born >= CHANNEL_MAX_AGE_S) thread_channel_drop();
	if (!thread_ch_ok) {
		int rc = dns_channel(&thread_ch);
		if (rc != ARES_SUCCESS) return rc;
		thread_ch_ok = true;
		thread_ch_born = now_s();
	}
	*ch = thread_ch;
	return ARES_SUCCESS;
}

/* After a lookup: a status that says the resolver (not the name) failed
 * retires the channel. */
static void thread_channel_check(int status)
{
	switch (status) {
	case ARES_ECONNREFUSED:
	case ARES_ETIMEOUT:
	case ARES_ESERVFAIL:
	case ARES_EBADRESP:
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
	case ARES_ENOMEM:
	case -ECANCELED:
		thread_channel_drop();
		break;
	default:
		if (status < 0) thread_channel_drop(); /* dns_run's -errno */
	}
}

/* Runs the channel until *done or the relay stops (then -ECANCELED). */
static int dns_run(ares_channel ch, const bool *done)
{
	while (!*done) {
		ares_socket_t socks[ARES_GETSOCK_MAXNUM];
		/* c-ares' own ARES_GETSOCK_WRITABLE shifts a signed 1 by up to
		 * 31 places (undefined); read the bits unsigned. */
		unsigned bits = (unsigned)ares_getsock(ch, socks, ARES_GETSOCK_MAXNUM);
		struct pollfd p[ARES_GETSOCK_MAXNUM + 1];
		nfds_t n = 0;
		for (unsigned i = 0; i < ARES_GETSOCK_MAXNUM; i++) {
			short ev = 0;
			if (bits >> i & 1u) ev |= POLLIN;
			if (bits >> (i + ARES_GETSOCK_MAXNUM) & 1u) ev |= POLLOUT;
			if (ev) p[n++] = (struct pollfd){.fd = socks[i], .events = ev};
		}
		p[n] = (struct pollfd){.fd = R.stopfd, .events = POLLIN};
		struct timeval max = {.tv_sec = 1}, tv;
		struct timeval *t = ares_timeout(ch, &max, &tv);
		int ms = (int)(t->tv_sec * 1000 + t->tv_usec / 1000) + 1;
		int k = poll(p, n + 1, ms);
		if (k < 0 && errno != EINTR) return -errno;
		if (p[n].revents) {
			ares_cancel(ch);
			return -ECANCELED;
		}
		if (k <= 0) {
			ares_process_fd(ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
			continue;
		}
		for (nfds_t i = 0; i < n; i++) {
			if (!p[i].revents) continue;
			ares_socket_t rfd =
			    p[i].revents & (POLLIN | POLLERR | POLLHUP) ? p[i].fd : ARES_SOCKET_BAD;
			ares_socket_t wfd =
			    p[i].revents & (POLLOUT | POLLERR) ? p[i].fd : ARES_SOCKET_BAD;
			ares_process_fd(ch, rfd, wfd);
		}
	}
	return 0;
}

static int mx_cmp(const void *a, const void *b)
{
	const struct mx_host *x = a, *y = b;
	return x->pref < y->pref ? -1 : x->pref > y->pref;
}

static void mx_done(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	(void)timeouts;
	struct dns_mx *q = arg;
	q->done = true;
	q->status = status;
	if (status != ARES_SUCCESS) return;
	struct ares_mx_reply *mx = NULL;
	q->status = ares_parse_mx_reply(abuf, alen, &mx);
	for (struct ares_mx_reply *m = mx; m && q->status == ARES_SUCCESS; m = m->next) {
		/* RFC 7505: a single MX of "." (the root, which c-ares spells "")
		 * says the domain takes no mail. */
		if (!m->host[0] || !strcmp(m->host, ".")) {
			q->null_mx = true;
			continue;
		}
		if (q->n < MAX_MX && strlen(m->host) < sizeof q->hosts[0].name) {
			snprintf(q->hosts[q->n].name, sizeof q->hosts[0].name, "%s", m->host);
			q->hosts[q->n].pref = m->priority;
			q->n++;
		}
	}
	if (mx) ares_free_data(mx);
	if (q->status == ARES_SUCCESS && q->n == 0 && !q->null_mx) q->status = ARES_ENODATA;
	if (q->n > 1) {
		/* RFC 5321 5.1: equal preferences in random order. */
		for (unsigned i = q->n - 1; i > 0; i--) {
			unsigned j = (unsigned)random() % (i + 1);
			struct mx_host t = q->hosts[i];
			q->hosts[i] = q->hosts[j];
			q->hosts[j] = t;
		}
		qsort(q->hosts, q->n, sizeof q->hosts[0], mx_cmp);
	}
}

static void addr_done(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	(void)timeouts;
	struct dns_addr *q = arg;
	q->done = true;
	q->status = status;
	if (!res) return;
	for (struct ares_addrinfo_node *a = res->nodes; a && q->n < MAX_ADDRS; a = a->ai_next) {
		if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
		    a->ai_addrlen > sizeof q->ss[0])
			continue;
		memcpy(&q->ss[q->n], a->ai_addr, a->ai_addrlen);
		q->len[q->n] = (socklen_t)a->ai_addrlen;
		q->n++;
	}
	ares_freeaddrinfo(res);
	if (q->status == ARES_SUCCESS && q->n == 0) q->status = ARES_ENODATA;
}

static int dns_mx(ares_channel ch, const char *domain, struct dns_mx *q)
{
	memset(q, 0, sizeof *q);
	ares_query(ch, domain, ns_c_in, ns_t_mx, mx_done, q);
	return dns_run(ch, &q->done);
}

static int dns_addr(ares_channel ch, const char *host, struct dns_addr *q)
{
	memset(q, 0, sizeof *q);
	/* An address literal (a smarthost "127.0.0.1:2525", "[::1]:25") is
	 * not a name: c-ares 1.18 would still ask the resolver about it. */
	char lit[INET6_ADDRSTRLEN + 2];
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']' && hl - 2 < sizeof lit) {
		memcpy(lit, host + 1, hl - 2);
		lit[hl - 2] = '\0';
		host = lit;
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)&q->ss[0];
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&q->ss[0];
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		q->len[0] = sizeof *s4;
	} else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		q->len[0] = sizeof *s6;
	}
	if (q->len[0]) {
		q->n = 1;
		q->status = ARES_SUCCESS;
		q->done = true;
		return 0;
	}
	struct ares_addrinfo_hints h = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	ares_getaddrinfo(ch, host, NULL, &h, addr_done, q);
	return dns_run(ch, &q->done);
}

/* ------------------------------------------------------------------ */
/* one SMTP session over a socket */

struct link {
	int fd;
	SSL *ssl;
};

/* > 0 bytes, 0 at EOF, or -errno (-ETIMEDOUT, -ECANCELED, -EIO). */
static ssize_t link_read(struct link *l, char *buf, size_t cap, int64_t deadline)
{
	for (;;) {
		short want = POLLIN;
		if (l->ssl) {
			ERR_clear_error();
			int k = SSL_read(l->ssl, buf, (int)cap);
			if (k > 0) return k;
			int e = SSL_get_error(l->ssl, k);
			if (e == SSL_ERROR_ZERO_RETURN) return 0;
			if (e == SSL_ERROR_WANT_WRITE)
				want = POLLOUT;
			else if (e != SSL_ERROR_WANT_READ)
				return -EIO;
		} else {
			ssize_t k = read(l->fd, buf, cap);
			if (k >= 0) return k;
			if (errno == EINTR) continue;
			if (errno != EAGAIN) return -errno;
		}
		int rc = wait_fd(l->fd, want, deadline);
		if (rc) return rc;
	}
}

/* All of it, or -errno. */
static int link_write(struct link *l, const char *p, size_t n, int64_t deadline)
{
	while (n) {
		short want = POLLOUT;
		if (l->ssl) {
			ERR_clear_error();
			int k = SSL_write(l->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
			if (k > 0) {
				p += k;
				n -= (size_t)k;
				continue;
			}
			int e = SSL_get_error(l->ssl, k);
			if (e == SSL_ERROR_WANT_READ)
				want = POLLIN;
			else if (e != SSL_ERROR_WANT_WRITE)
				return -EIO;
		} else {
			ssize_t k = send(l->fd, p, n, MSG_NOSIGNAL);
			if (k >= 0) {
				p += k;
				n -= (size_t)k;
				continue;
			}
			if (errno == EINTR) continue;
			if (errno != EAGAIN) return -errno;
		}
		int rc = wait_fd(l->fd, want, deadline);
		if (rc) return rc;
	}
	return 0;
}

static int link_connect(const struct sockaddr_storage *ss, socklen_t len, int *out)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) return -errno;
	if (connect(fd, (const struct sockaddr *)ss, len) != 0) {
		if (errno != EINPROGRESS) {
			int e = errno;
			close(fd);
			return -e;
		}
		int rc = wait_fd(fd, POLLOUT, mono_ms() + CONNECT_TIMEOUT_MS);
		int err = 0;
		socklen_t el = sizeof err;
		if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) err = errno;
		if (rc || err) {
			close(fd);
			return rc ? rc : -err;
		}
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	*out = fd;
	return 0;
}

/* RFC 3207 over the socket: 0, -ECANCELED, or -EPROTO (the reason logged). */
static int link_starttls(struct link *l, bool verify, const char *name, const char *id)
{
	SSL *ssl = SSL_new(verify ? R.tls_verify : R.tls_any);
	if (!ssl || !SSL_set_fd(ssl, l->fd)) {
		SSL_free(ssl);
		return -EPROTO;
	}
	struct in6_addr a;
	bool literal = inet_pton(AF_INET, name, &a) == 1 || inet_pton(AF_INET6, name, &a) == 1;
	if (!literal) SSL_set_tlsext_host_name(ssl, name);
	if (verify) {
		if (literal)
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
		else {
			SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
			SSL_set1_host(ssl, name);
		}
	}
	int64_t deadline = mono_ms() + HANDSHAKE_TIMEOUT_MS;
	for (;;) {
		ERR_clear_error();
		int k = SSL_connect(ssl);
		if (k == 1) break;
		int e = SSL_get_error(ssl, k), rc;
		if (e == SSL_ERROR_WANT_READ)
			rc = wait_fd(l->fd, POLLIN, deadline);
		else if (e == SSL_ERROR_WANT_WRITE)
			rc = wait_fd(l->fd, POLLOUT, deadline);
		else
			rc = -EPROTO;
		if (rc) {
			char why[256] = "timeout";
			if (rc == -EPROTO) {
				long v = SSL_get_verify_result(ssl);
				if (v != X509_V_OK)
					snprintf(why, sizeof why, "certificate: %s",
						 X509_verify_cert_error_string(v));
				else
					ERR_error_string_n(ERR_peek_last_error(), why, sizeof why);
			}
			if (rc != -ECANCELED)
				log_warn("relay_tls_failed", "id=%s host=%s reason=%s", id, name,
					 log_q((char[300]){0}, 300, why));
			SSL_free(ssl);
			return rc == -ECANCELED ? rc : -EPROTO;
		}
	}
	l->ssl = ssl;
	return 0;
}

static void link_close(struct link *l)
{
	if (l->ssl) {
		SSL_shutdown(l->ssl); /* best effort close_notify; never waits */
		SSL_free(l->ssl);
	}
	if (l->fd >= 0) close(l->fd);
	l->fd = -1;
	l->ssl = NULL;
}

/* Per delivery thread, reused across attempts. */
struct xfer {
	struct obuf out;
	char obuf[OBUF_CAP];
	char in[IBUF_CAP];
	char file[FBUF_CAP];
	struct smtpc_session s;
};

/* The deadline of what the machine waits for now (re-armed when its
 * sequence number moves). */
static void rearm(const struct smtpc_session *s, uint32_t *seq, int64_t *deadline)
{
	unsigned secs;
	uint32_t q;
	smtpc_wait(s, &secs, &q);
	if (q != *seq) {
		*seq = q;
		*deadline = mono_ms() + (int64_t)(secs ? secs : 300) * 1000;
	}
}

static int flush_out(struct link *l, struct xfer *x, int64_t deadline)
{
	if (!x->out.len) return 0;
	int rc = link_write(l, x->out.p, x->out.len, deadline);
	x->out.len = 0;
	return rc;
}

/* Streams the message (the first SIZE octets of ID.msg) through the
 * dot-stuffer (SMTPC_REQ_BODY). 0 (*file_error set when the file could not
 * be read whole: the machine gives up), -ECANCELED or another -errno (the
 * link). */
static int send_body(struct link *l, struct xfer *x, int msgfd, uint64_t size, bool *file_error)
{
	uint64_t off = 0;
	while (off < size) {
		size_t want = size - off < sizeof x->file ? (size_t)(size - off) : sizeof x->file;
		ssize_t k = pread(msgfd, x->file, want, (off_t)off);
		if (k < 0 && errno == EINTR) continue;
		if (k <= 0) {
			*file_error = true;
			return 0;
		}
		off += (uint64_t)k;
		size_t pos = 0;
		while (pos < (size_t)k) {
			pos += smtpc_body(&x->s, x->file + pos, (size_t)k - pos, &x->out);
			if (obuf_room(&x->out) < 4096 || pos < (size_t)k) {
				/* RFC 5321 4.5.3.2.5: 3 minutes per block sent */
				int rc = flush_out(l, x, mono_ms() + 180000);
				if (rc) return rc;
			}
		}
	}
	return 0;
}

struct session_out {
	bool connected;	 /* a greeting-or-later exchange happened */
	bool tls_failed; /* the handshake failed (opportunistic may retry plain) */
	bool idle;	 /* SMTPC_REQ_IDLE: the link may carry another message */
	uint32_t ext;
};

/* Runs the machine on a connected link until CLOSE. 0 (every recipient
 * decided) or -ECANCELED (stop: results are meaningless). */
static int session_run(struct link *l, struct xfer *x, const struct smtpc_policy *pol,
		       struct smtpc_msg *m, int msgfd, const char *tlsname, bool verify,
		       const char *id, struct session_out *so, bool reuse)
{
	struct smtpc_session *s = &x->s;
	x->out = (struct obuf){.p = x->obuf, .len = 0, .cap = sizeof x->obuf};
	if (reuse) {
		/* the idle session of this link (thread_idle): straight to MAIL */
		s->pol = pol;
		smtpc_next(s, m);
	} else {
		memset(s, 0, sizeof *s);
		smtpc_start(s, pol, m);
		s->keep = true;
	}
	uint32_t seq = ~0u;
	int64_t deadline = 0;
	size_t ilen = 0, ioff = 0;
	rearm(s, &seq, &deadline);
	for (;;) {
		size_t used = 0;
		enum smtpc_req req = smtpc_feed(s, x->in + ioff, ilen - ioff, &used, &x->out);
		ioff += used;
		bool wrote = x->out.len > 0;
		int rc = 0;
		while (req == SMTPC_REQ_STARTTLS || req == SMTPC_REQ_BODY) {
			rearm(s, &seq, &deadline);
			if ((rc = flush_out(l, x, deadline)) != 0) break;
			if (req == SMTPC_REQ_STARTTLS) {
				ioff = ilen = 0; /* RFC 3207 6: nothing read before TLS counts */
				rc = link_starttls(l, verify, tlsname, id);
				if (rc == -ECANCELED) return rc;
				so->tls_failed = rc != 0;
				req = smtpc_complete(s, req, rc ? -1 : 0, &x->out);
				rc = 0;
			} else {
				bool ferr = false;
				if ((rc = send_body(l, x, msgfd, m->size, &ferr)) != 0) break;
				req = smtpc_complete(s, req, ferr ? -1 : 0, &x->out);
			}
			wrote = true;
		}
		if (rc == 0) {
			rearm(s, &seq, &deadline);
			rc = flush_out(l, x, deadline);
		}
		if (rc == -ECANCELED) return rc;
		if (rc) {
			smtpc_eof(s);
			break;
		}
		if (req == SMTPC_REQ_CLOSE) break;
		if (req == SMTPC_REQ_IDLE) {
			so->idle = true;
			break;
		}
		/* SMTPC_REQ_NONE: feed again after a flush or with what is left */
		if (ioff < ilen || wrote) continue;
		ioff = 0;
		ssize_t k = link_read(l, x->in, sizeof x->in, deadline);
		if (k == -ECANCELED) return -ECANCELED;
		if (k == -ETIMEDOUT) {
			smtpc_timeout(s);
			break;
		}
		if (k <= 0) {
			smtpc_eof(s);
			break;
		}
		so->connected = true;
		ilen = (size_t)k;
	}
	/* The QUIT the machine may have written is flushed above; its reply is
	 * not waited for (every recipient is decided). */
	so->ext = s->ext;
	return 0;
}

/* ------------------------------------------------------------------ */
/* the idle link: connection reuse */

/* Each delivery thread keeps the connection of its last message open for a
 * short while, and the next message to the same destination (the smarthost,
 * or the recipients' domain) goes over it: MAIL at once, without connect,
 * greeting, EHLO or DNS (Postfix's connection cache does the same). Only
 * after a message the server took (2xx to the end of data); a link that
 * went stale while idle fails before MAIL is answered, and the message
 * then goes the usual way on a new connection. */
#define LINK_IDLE_MS 2000
#define LINK_MAX_USES 100

struct idle_link {
	bool valid;
	struct link l;
	char dest[320]; /* "smarthost" or "domain:port" */
	char host[256]; /* the host it reached (Remote-MTA, logs) */
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;
	unsigned uses;
	int64_t since; /* mono_ms() when it went idle */
};
static __thread struct idle_link thread_idle;

/* How long this thread's idle link may still wait (0: time to close it),
 * or -1 when there is none. */
static int64_t idle_left_ms(void)
{
	if (!thread_idle.valid) return -1;
	int64_t left = thread_idle.since + LINK_IDLE_MS - mono_ms();
	return left > 0 ? left : 0;
}

/* QUIT (not waited for) and close. */
static void idle_close(struct xfer *x)
{
	struct idle_link *il = &thread_idle;
	if (!il->valid) return;
	il->valid = false;
	if (x && smtpc_idle(&x->s)) {
		size_t used;
		x->out = (struct obuf){.p = x->obuf, .len = 0, .cap = sizeof x->obuf};
		smtpc_quit(&x->s);
		smtpc_feed(&x->s, NULL, 0, &used, &x->out);
		flush_out(&il->l, x, mono_ms() + 1000);
	}
	link_close(&il->l);
}

/* Whether a link whose session ended so may be kept: the machine is idle
 * and every recipient of this message was taken or refused for good. */
static bool keepable(const struct session_out *so, const struct smtpc_msg *m, unsigned uses)
{
	if (!so->idle || uses >= LINK_MAX_USES) return false;
	for (unsigned i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].result == SMTPC_TEMP) return false;
	return true;
}

/* Makes L the thread's idle link (its names already set) when OK, else
 * QUITs and closes it. */
static void idle_set(struct xfer *x, struct link *l, bool ok, unsigned uses)
{
	struct idle_link *il = &thread_idle;
	il->l = *l;
	il->valid = true;
	il->uses = uses;
	il->since = mono_ms();
	if (!ok) idle_close(x);
}

/* After a fresh session on L to DEST ended: L becomes the idle link or is
 * closed. */
static void idle_keep(struct xfer *x, struct link *l, const struct session_out *so,
		      const struct smtpc_msg *m, const char *dest, const char *host,
		      const char *ip, uint16_t port)
{
	struct idle_link *il = &thread_idle;
	if (il->valid) {
		/* Not expected (deliver_domain closes it before a fresh session),
		 * and x->s is the new session's now: no QUIT through it. */
		link_close(&il->l);
		il->valid = false;
	}
	snprintf(il->dest, sizeof il->dest, "%s", dest);
	snprintf(il->host, sizeof il->host, "%s", host);
	snprintf(il->ip, sizeof il->ip, "%s", ip);
	il->port = port;
	idle_set(x, l, keepable(so, m, 1), 1);
}

/* ------------------------------------------------------------------ */
/* one domain: resolve, try hosts in order */

struct domain_result {
	char host[256]; /* the host that gave the results, "" when none did */
	uint32_t ext;
};

static bool all_temp(const struct smtpc_msg *m)
{
	for (unsigned i = 0; i < m->nrcpt; i++)
		if (m->rcpt[i].result != SMTPC_TEMP) return false;
	return true;
}

/* Splits "host:port" / "[v6]:port". */
static void split_hostport(const char *s, char *host, size_t cap, uint16_t *port)
{
	const char *colon = strrchr(s, ':');
	size_t hl = colon ? (size_t)(colon - s) : strlen(s);
	if (hl >= cap) hl = cap - 1;
	if (s[0] == '[' && hl >= 2 && s[hl - 1] == ']')
		snprintf(host, cap, "%.*s", (int)(hl - 2), s + 1);
	else
		snprintf(host, cap, "%.*s", (int)hl, s);
	*port = colon ? (uint16_t)atoi(colon + 1) : 25;
}

static void fmt_addr(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, buf,
			  (socklen_t)cap);
	else
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, buf,
			  (socklen_t)cap);
}

static const char *ares_why(int status)
{
	return status == -ECANCELED ? "cancelled" : ares_strerror(status);
}

/* Delivers M over the thread's idle link to DEST when there is one: 1
 * (the recipients are decided, *dr filled), 0 (no usable link: go the
 * usual way; a link gone stale while idle is closed) or -ECANCELED. */
static int idle_deliver(struct xfer *x, const char *id, const char *domain, const char *dest,
			const struct smtpc_policy *pol, bool verify, struct smtpc_msg *m,
			int msgfd, struct domain_result *dr)
{
	struct idle_link *il = &thread_idle;
	if (il->valid && (mono_ms() - il->since > LINK_IDLE_MS || strcasecmp(il->dest, dest) != 0))
		idle_close(x);
	if (!il->valid)
		return 0;
	struct link l = il->l;
	il->valid = false;
	unsigned uses = il->uses + 1;
	log_info("relay_attempt", "id=%s domain=%s host=%s addr=%s port=%u rcpts=%u reuse=%u", id,
		 domain, il->host, il->ip, il->port, m->nrcpt, uses - 1);
	struct session_out so = {0};
	int c = session_run(&l, x, pol, m, msgfd, il->host, verify, id, &so, true);
	if (c == -ECANCELED) {
		link_close(&l);
		return c;
	}
	if (x->s.try_next_mx && all_temp(m)) {
		/* gone stale while idle: start again on a new connection */
		log_info("relay_reuse_failed", "id=%s host=%s addr=%s", id, il->host, il->ip);
		link_close(&l);
		return 0;
	}
	_Static_assert(sizeof dr->host == sizeof il->host, "host names");
	memcpy(dr->host, il->host, sizeof dr->host);
	dr->ext = so.ext;
	idle_set(x, &l, keepable(&so, m, uses), uses);
	return 1;
}

/* Delivers m (the recipients of one domain). 0 with every recipient
 * decided and *dr filled, or -ECANCELED. */
static int deliver_domain(struct xfer *x, const char *id, const char *domain, struct smtpc_msg *m,
			  int msgfd, struct domain_result *dr)
{
	const struct relay_config *rc = R.rc;
	memset(dr, 0, sizeof *dr);
	struct mx_host hosts[MAX_MX] = {0};
	unsigned nhosts = 0;
	uint16_t port = rc->port;
	bool implicit = false;
	ares_channel ch;
	int st = thread_channel(&ch);
	if (st != ARES_SUCCESS) {
		smtpc_decide_local(m, SMTPC_TEMP, "4.4.3", "resolver setup failed: %s",
				   ares_strerror(st));
		return 0;
	}
	int ret = 0;
	/* In R, not here: a kept session points at its policy between messages. */
	const struct smtpc_policy *pol = &R.pol, *plain = &R.plain;
	enum smtpc_tls tls = pol->tls;
	char dest[320];
	if (rc->smarthost)
		snprintf(dest, sizeof dest, "%s", rc->smarthost);
	else
		snprintf(dest, sizeof dest, "%s:%u", domain, (unsigned)rc->port);
	int reused = idle_deliver(x, id, domain, dest, pol, tls == SMTPC_TLS_REQUIRED, m, msgfd, dr);
	if (reused != 0)
		return reused < 0 ? reused : 0;
	if (rc->smarthost) {
		split_hostport(rc->smarthost, hosts[0].name, sizeof hosts[0].name, &port);
		nhosts = 1;
	} else {
		struct dns_mx q;
		ret = dns_mx(ch, domain, &q);
		thread_channel_check(ret ? ret : q.status);
		if (ret) goto out;
		if (q.null_mx) {
			smtpc_decide_local(m, SMTPC_PERM, "5.1.10",
					   "domain %s accepts no mail (null MX, RFC 7505)", domain);
			goto out;
		}
		if (q.status == ARES_ENOTFOUND) {
			smtpc_decide_local(m, SMTPC_PERM, "5.1.2",
					   "domain %s does not exist (DNS NXDOMAIN)", domain);
			goto out;
		}
		if (q.status == ARES_ENODATA) {
			/* RFC 5321 5.1: no MX, the domain itself is the host */
			snprintf(hosts[0].name, sizeof hosts[0].name, "%s", domain);
			nhosts = 1;
			implicit = true;
		} else if (q.status != ARES_SUCCESS) {
			smtpc_decide_local(m, SMTPC_TEMP, "4.4.3", "MX lookup for %s failed: %s",
					   domain, ares_why(q.status));
			goto out;
		} else {
			memcpy(hosts, q.hosts, q.n * sizeof hosts[0]);
			nhosts = q.n;
		}
	}

	unsigned tried = 0;
	bool decided = false, any_addr = false;
	char last_err[SMTPC_DIAG_MAX] = "";
	for (unsigned h = 0; h < nhosts && tried < MAX_ADDRS && !decided; h++) {
		struct dns_addr a;
		if (!thread_ch_ok) { /* the last lookup retired it */
			int cs = thread_channel(&ch);
			if (cs != ARES_SUCCESS) {
				snprintf(last_err, sizeof last_err, "resolver setup failed: %s",
					 ares_strerror(cs));
				break;
			}
		}
		ret = dns_addr(ch, hosts[h].name, &a);
		if (ret || a.status != ARES_SUCCESS) thread_channel_check(ret ? ret : a.status);
		if (ret) goto out;
		if (a.status != ARES_SUCCESS) {
			if (implicit && (a.status == ARES_ENOTFOUND || a.status == ARES_ENODATA)) {
				smtpc_decide_local(m, SMTPC_PERM, "5.1.2",
						   "domain %s has no MX and no address record",
						   domain);
				goto out;
			}
			snprintf(last_err, sizeof last_err, "address lookup for %s failed: %s",
				 hosts[h].name, ares_why(a.status));
			continue;
		}
		any_addr = true;
		for (unsigned i = 0; i < a.n && tried < MAX_ADDRS && !decided; i++) {
			char ip[INET6_ADDRSTRLEN];
			struct sockaddr_storage ss = a.ss[i];
			fmt_addr(&ss, ip, sizeof ip);
			if (ss.ss_family == AF_INET6)
				((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
			else
				((struct sockaddr_in *)&ss)->sin_port = htons(port);
			tried++;
			const struct smtpc_policy *p = pol;
			for (int pass = 0; pass < 2; pass++) {
				log_info("relay_attempt",
					 "id=%s domain=%s host=%s addr=%s port=%u rcpts=%u%s", id,
					 domain, hosts[h].name, ip, port, m->nrcpt,
					 p == plain ? " tls=retry_without" : "");
				struct link l = {.fd = -1};
				int c = link_connect(&ss, a.len[i], &l.fd);
				if (c == -ECANCELED) {
					ret = c;
					goto out;
				}
				if (c) {
					snprintf(last_err, sizeof last_err,
						 "connect to %s[%s]:%u: %s", hosts[h].name, ip,
						 port,
						 c == -ETIMEDOUT ? "timed out" : strerror(-c));
					log_info(
					    "relay_connect_failed",
					    "id=%s host=%s addr=%s port=%u reason=%s", id,
					    hosts[h].name, ip, port,
					    log_q((char[128]){0}, 128,
						  c == -ETIMEDOUT ? "timed out" : strerror(-c)));
					break;
				}
				struct session_out so = {0};
				c = session_run(&l, x, p, m, msgfd, hosts[h].name,
						tls == SMTPC_TLS_REQUIRED, id, &so, false);
				if (c == -ECANCELED) {
					link_close(&l);
					ret = c;
					goto out;
				}
				if (p == pol)
					idle_keep(x, &l, &so, m, dest, hosts[h].name, ip, port);
				else
					link_close(&l); /* plain after a failed handshake: not kept */
				snprintf(dr->host, sizeof dr->host, "%s", hosts[h].name);
				dr->ext = so.ext;
				/* opportunistic: a failed handshake, try once more in plaintext */
				if (so.tls_failed && tls == SMTPC_TLS_OPPORTUNISTIC && p == pol) {
					p = plain;
					continue;
				}
				/* RFC 5321 5.1: the host failed rather than the message */
				decided = !(x->s.try_next_mx && all_temp(m));
				break;
			}
		}
	}
	if (!decided && !dr->host[0]) {
		smtpc_decide_local(m, SMTPC_TEMP, any_addr ? "4.4.1" : "4.4.3", "%s",
				   last_err[0] ? last_err : "no host to try");
	}
out:
	return ret;
}

/* ------------------------------------------------------------------ */
/* DSNs into the sender's maildrop */

static int write_all(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t k = write(fd, p, n);
		if (k < 0 && errno == EINTR) continue;
		if (k < 0) return -errno;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

static int maildrop_of(const struct queue_entry *e)
{
	const struct config *cfg = R.srv->cfg;
	if (e->auth_domain) {
		int i = config_find_domain(cfg, e->auth_domain, strlen(e->auth_domain));
		if (i >= 0) return i;
	}
	const char *d = queue_addr_domain(e->from);
	return config_find_domain(cfg, d, strlen(d));
}

/* Writes tmp/NAME (Return-Path, prefix, the original - the first MSIZE
 * octets of MFD, the entry's message file - or its header block, suffix),
 * fsyncs, renames into new/NAME,S=SIZE and fsyncs new/ (SPEC 6). 0 or
 * -errno; nothing is left in tmp/ on failure. */
static int dsn_store(const struct maildir *md, const struct dsn_report *rep, char *final,
		     size_t fcap, int mfd, uint64_t msize, char *buf, size_t bcap)
{
	bool sync = R.srv->cfg->sync == SYNC_FULL;
	size_t plen, slen;
	char *pre = buf;
	int rc = dsn_prefix(rep, buf, bcap, &plen);
	if (rc == DSN_ENOSPC) {
		pre = malloc(plen);
		if (!pre) return -ENOMEM;
		rc = dsn_prefix(rep, pre, plen, &plen);
	}
	char suf[256];
	if (rc == DSN_OK) rc = dsn_suffix(rep, suf, sizeof suf, &slen);
	if (rc != DSN_OK) {
		if (pre != buf) free(pre);
		return -EINVAL;
	}
	char base[MAILDIR_NAME_MAX];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	maildir_unique(base, sizeof base, &ts);
	int fd = openat(md->tmpfd, base, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		if (pre != buf) free(pre);
		return rc;
	}
	static const char rp[] = "Return-Path: <>\r\n";
	uint64_t size = sizeof rp - 1 + plen + slen;
	rc = write_all(fd, rp, sizeof rp - 1);
	if (rc == 0) rc = write_all(fd, pre, plen);
	if (pre != buf) free(pre);
	if (rc == 0) {
		bool hdrs = dsn_headers_only(rep);
		unsigned hst = 0;
		char chunk[16384];
		for (uint64_t off = 0; off < msize;) {
			uint64_t left = msize - off;
			ssize_t k = pread(mfd, chunk, left < sizeof chunk ? (size_t)left : sizeof chunk,
					  (off_t)off);
			if (k < 0 && errno == EINTR) continue;
			if (k < 0) {
				rc = -errno;
				break;
			}
			if (k == 0) {
				rc = -EIO; /* shorter than the entry says */
				break;
			}
			off += (uint64_t)k;
			size_t take = hdrs ? dsn_headers_scan(&hst, chunk, (size_t)k) : (size_t)k;
			if ((rc = write_all(fd, chunk, take)) != 0) break;
			size += take;
			if (hdrs && hst == DSN_HDRS_DONE) break;
		}
	}
	if (rc == 0) rc = write_all(fd, suf, slen);
	if (rc == 0 && sync && fsync(fd) != 0) rc = -errno;
	if (close(fd) != 0 && rc == 0) rc = -errno;
	if (rc == 0) {
		maildir_final_name(final, fcap, base, size, false);
		if (renameat(md->tmpfd, base, md->newfd, final) != 0)
			rc = -errno;
		else if (sync && fsync(md->newfd) != 0)
			rc = -errno; /* the file is in new/ but maybe not durably */
	}
	if (rc) unlinkat(md->tmpfd, base, 0);
	return rc;
}

/* Sends what DSNs the entry owes (SPEC 5, RFC 3461): failures and
 * successes once each, a delay report once, quoting the message from
 * MSGFD (the attempt's open message file). Sets the flags that record
 * them. Returns true when flags changed; *failed when a DSN was owed and
 * could not be stored (the entry must stay to try again). */
static bool dsn_round(struct queue_entry *e, int msgfd, bool *failed)
{
	*failed = false;
	bool changed = false;
	struct dsn_rcpt *dr = calloc(e->nrcpt ? e->nrcpt : 1, sizeof *dr);
	unsigned *idx = calloc(e->nrcpt ? e->nrcpt : 1, sizeof *idx);
	if (!dr || !idx) {
		free(dr);
		free(idx);
		*failed = true;
		return false;
	}
	unsigned n = 0;
	/* RFC 5321 6.1 / 3461 6.2: nothing ever goes back to a null sender. */
	bool null_sender = !e->from || !e->from[0];
	int64_t until = e->arrival + (int64_t)R.rc->max_queue_time_s;
	for (unsigned i = 0; i < e->nrcpt; i++) {
		struct queue_rcpt *r = &e->rcpt[i];
		enum dsn_action act;
		if (r->state == QUEUE_FAILED && !(r->flags & QUEUE_F_DSN_DONE))
			act = DSN_FAILED;
		else if (r->state == QUEUE_DONE && !(r->flags & QUEUE_F_DSN_DONE))
			act = r->flags & QUEUE_F_RELAYED ? DSN_RELAYED : DSN_DELIVERED;
		else if (r->state == QUEUE_PENDING && r->attempts > 0 &&
			 !(r->flags & QUEUE_F_DELAY_SENT) && (r->notify & SMTP_NOTIFY_DELAY))
			act = DSN_DELAYED;
		else
			continue;
		if (null_sender || !dsn_wanted(r->notify, act)) {
			if (act != DSN_DELAYED) {
				r->flags |= QUEUE_F_DSN_DONE;
				changed = true;
			}
			continue;
		}
		dr[n] = (struct dsn_rcpt){
		    .addr = r->addr,
		    .orcpt = r->orcpt,
		    .action = act,
		    .status = r->status,
		    .remote_mta = r->remote,
		    .diagnostic = r->reply,
		    .local = !r->remote, /* set only with a remote reply */
		    .last_attempt = r->last_try,
		    .retry_until = act == DSN_DELAYED ? until : 0,
		};
		idx[n++] = i;
	}
	if (n == 0) goto done;
	int md = maildrop_of(e);
	if (md < 0) {
		log_error("dsn_failed",
			  "id=%s sender=%s reason=\"no maildrop for the sender's domain\"", e->id,
			  log_q((char[300]){0}, 300, e->from));
		for (unsigned k = 0; k < n; k++)
			e->rcpt[idx[k]].flags |=
			    dr[k].action == DSN_DELAYED ? QUEUE_F_DELAY_SENT : QUEUE_F_DSN_DONE;
		changed = true;
		goto done;
	}
	static _Atomic unsigned long tokseq;
	char token[DSN_TOKEN_MAX + 1];
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(token, sizeof token, "D%lld.%06ld.%d.%lu", (long long)ts.tv_sec, ts.tv_nsec / 1000,
		 (int)getpid(), (unsigned long)++tokseq);
	struct tm tm;
	time_t t = ts.tv_sec;
	localtime_r(&t, &tm);
	struct dsn_report rep = {
	    .reporting_mta = R.srv->cfg->hostname,
	    .sender = e->from,
	    .envid = e->envid,
	    .ret = (enum smtp_ret)e->ret,
	    .orig_8bit = e->body == SMTP_BODY_8BITMIME,
	    .arrival = e->arrival,
	    .now = ts.tv_sec,
	    .tz_off_min = (int)(tm.tm_gmtoff / 60),
	    .token = token,
	    .rcpt = dr,
	    .nrcpt = n,
	};
	char final[MAILDIR_NAME_MAX + 32];
	char *buf = malloc(16384);
	int rc = buf ? dsn_store(&R.srv->maildirs[md], &rep, final, sizeof final, msgfd, e->size, buf, 16384)
		     : -ENOMEM;
	free(buf);
	if (rc) {
		log_error("dsn_failed", "id=%s sender=%s reason=%s", e->id,
			  log_q((char[300]){0}, 300, e->from),
			  log_q((char[128]){0}, 128, strerror(-rc)));
		*failed = true;
		goto done;
	}
	for (unsigned k = 0; k < n; k++) {
		static const char *const names[] = {"failed", "delayed", "delivered", "relayed",
						    "expanded"};
		e->rcpt[idx[k]].flags |=
		    dr[k].action == DSN_DELAYED ? QUEUE_F_DELAY_SENT : QUEUE_F_DSN_DONE;
		log_info("dsn_delivered", "id=%s rcpt=%s action=%s sender=%s domain=%s file=%s",
			 e->id, log_q((char[300]){0}, 300, dr[k].addr), names[dr[k].action],
			 log_q((char[300]){0}, 300, e->from), R.srv->cfg->domains[md].name, final);
	}
	changed = true;
done:
	free(dr);
	free(idx);
	return changed;
}

/* ------------------------------------------------------------------ */
/* one attempt for one entry */

static void set_result(struct queue_rcpt *q, const struct smtpc_rcpt *r, const char *host)
{
	queue_strset(&q->status, r->status[0] ? r->status : NULL);
	queue_strset(&q->reply, r->diag[0] ? r->diag : NULL);
	/* Remote-MTA names a host only when the reply came from it. */
	queue_strset(&q->remote, r->code && host && host[0] ? host : NULL);
}

static bool all_final(const struct queue_entry *e)
{
	for (unsigned i = 0; i < e->nrcpt; i++) {
		const struct queue_rcpt *r = &e->rcpt[i];
		if (r->state == QUEUE_PENDING || !(r->flags & QUEUE_F_DSN_DONE)) return false;
	}
	return true;
}

/* Every recipient is final and no DSN is owed for any of them, now or
 * later: the entry can go without recording anything (queue_discard). */
static bool finished_quietly(const struct queue_entry *e)
{
	bool null_sender = !e->from || !e->from[0];
	for (unsigned i = 0; i < e->nrcpt; i++) {
		const struct queue_rcpt *r = &e->rcpt[i];
		if (r->state == QUEUE_PENDING) return false;
		if (r->flags & QUEUE_F_DSN_DONE) continue;
		enum dsn_action act = r->state == QUEUE_FAILED	   ? DSN_FAILED
				      : r->flags & QUEUE_F_RELAYED ? DSN_RELAYED
								   : DSN_DELIVERED;
		if (!null_sender && dsn_wanted(r->notify, act)) return false;
	}
	return true;
}

static int attempt(struct rentry *re)
{
	struct queue_entry *e = &re->e;
	if (!thread_xfer && !(thread_xfer = malloc(sizeof *thread_xfer))) {
		e->next_try = now_s() + DSN_RETRY_S;
		return ATTEMPT_KEEP;
	}
	struct xfer *x = thread_xfer;
	unsigned nr = e->nrcpt ? e->nrcpt : 1;
	unsigned *group = calloc(nr, sizeof *group), *idx = calloc(nr, sizeof *idx);
	struct smtpc_rcpt *rc = calloc(nr, sizeof *rc);
	int msgfd = -1;
	int ret = ATTEMPT_KEEP;
	if (!group || !idx || !rc) {
		e->next_try = now_s() + DSN_RETRY_S;
		goto out;
	}
	/* The message file, first: also the proof that the entry still
	 * exists (one announced just as a scan found it may be finished
	 * already, its file a spare by now). */
	msgfd = queue_open_msg(R.qdirfd, e->id);
	if (msgfd == -ENOENT) {
		log_warn("relay_entry_gone", "id=%s reason=\"its message file is gone (finished "
			 "meanwhile, or removed)\"", e->id);
		queue_discard(R.qdirfd, e->id); /* a state file left alone */
		ret = ATTEMPT_REMOVED;
		goto out;
	}
	if (msgfd < 0) {
		log_error("queue_entry_bad", "id=%s error=message_missing reason=%s", e->id,
			  log_q((char[128]){0}, 128, strerror(-msgfd)));
		ret = ATTEMPT_BAD;
		goto out;
	}
	unsigned ngroups = queue_group_by_domain(e, group);
	if (R.rc->smarthost && ngroups > 1) {
		/* Everything goes to one host: one transaction carries all. */
		for (unsigned i = 0; i < e->nrcpt; i++)
			if (group[i] != QUEUE_NO_GROUP)
				group[i] = 0;
		ngroups = 1;
	}
	struct smtpc_msg m = {
	    .from = e->from ? e->from : "",
	    .envid = e->envid,
	    .ret = (enum smtp_ret)e->ret,
	    .size = e->size,
	    .body_8bit = e->body != SMTP_BODY_7BIT,
	    .smtputf8 = e->smtputf8,
	    .rcpt = rc,
	};
	for (unsigned g = 0; g < ngroups; g++) {
		unsigned k = 0;
		for (unsigned i = 0; i < e->nrcpt; i++) {
			if (group[i] != g) continue;
			const struct queue_rcpt *q = &e->rcpt[i];
			memset(&rc[k], 0, sizeof rc[k]);
			rc[k].addr = q->addr;
			rc[k].orcpt = q->orcpt;
			rc[k].notify = q->notify;
			idx[k++] = i;
		}
		m.nrcpt = k;
		const char *domain = queue_addr_domain(e->rcpt[idx[0]].addr);
		struct domain_result dr;
		if (deliver_domain(x, e->id, domain, &m, msgfd, &dr) == -ECANCELED) {
			/* Stopping: this domain's recipients stay as they were.
			 * Results of earlier domains are real (a 250 must never
			 * be sent again) and are recorded below. */
			if (g == 0) {
				ret = ATTEMPT_ABANDONED;
				goto out;
			}
			break;
		}
		int64_t now = now_s();
		for (unsigned j = 0; j < k; j++) {
			struct queue_rcpt *q = &e->rcpt[idx[j]];
			const struct smtpc_rcpt *r = &rc[j];
			char b1[300], b2[SMTPC_DIAG_MAX + 8];
			q->attempts++;
			q->last_try = now;
			set_result(q, r, dr.host);
			const char *host = dr.host[0] ? dr.host : "none";
			if (r->result == SMTPC_DELIVERED) {
				q->state = QUEUE_DONE;
				if (!(dr.ext & SMTPC_EXT_DSN)) q->flags |= QUEUE_F_RELAYED;
				log_info("relay_delivered", "id=%s rcpt=%s host=%s tls=%s reply=%s",
					 e->id, log_q(b1, sizeof b1, q->addr), host,
					 x->s.tls ? "yes" : "no", log_q(b2, sizeof b2, r->diag));
			} else if (r->result == SMTPC_PERM) {
				q->state = QUEUE_FAILED;
				log_info("relay_failed",
					 "id=%s rcpt=%s host=%s status=%s stage=%s reply=%s", e->id,
					 log_q(b1, sizeof b1, q->addr), host, r->status,
					 smtpc_stage_name((enum smtpc_wait)r->stage),
					 log_q(b2, sizeof b2, r->diag));
			}
		}
	}
	/* The next try, for what is still pending. */
	uint32_t attempts = 0;
	bool pending = false;
	for (unsigned i = 0; i < e->nrcpt; i++)
		if (e->rcpt[i].state == QUEUE_PENDING) {
			pending = true;
			if (e->rcpt[i].attempts > attempts) attempts = e->rcpt[i].attempts;
		}
	int64_t now = now_s();
	if (pending) {
		int64_t next = queue_next_try(R.rc->retry_s, R.rc->nretry, R.rc->max_queue_time_s,
					      attempts, e->arrival, now);
		for (unsigned i = 0; i < e->nrcpt; i++) {
			struct queue_rcpt *q = &e->rcpt[i];
			if (q->state != QUEUE_PENDING) continue;
			char b1[300], b2[SMTPC_DIAG_MAX + 8];
			if (next == QUEUE_EXPIRED) {
				/* RFC 3463 4.4.7; the last reply stays as the diagnostic */
				q->state = QUEUE_FAILED;
				queue_strset(&q->status, "4.4.7");
				if (!q->reply) queue_strset(&q->reply, "delivery time expired");
				log_info(
				    "relay_failed",
				    "id=%s rcpt=%s host=%s status=4.4.7 reason=expired reply=%s",
				    e->id, log_q(b1, sizeof b1, q->addr),
				    q->remote ? q->remote : "none", log_q(b2, sizeof b2, q->reply));
			} else {
				log_info("relay_deferred",
					 "id=%s rcpt=%s host=%s status=%s attempts=%u "
					 "retry_in=%lld reply=%s",
					 e->id, log_q(b1, sizeof b1, q->addr),
					 q->remote ? q->remote : "none",
					 q->status ? q->status : "4.0.0", q->attempts,
					 (long long)(next - now), log_q(b2, sizeof b2, q->reply));
			}
		}
		e->next_try = next == QUEUE_EXPIRED ? now : next;
	}
	if (finished_quietly(e)) {
		int drc = queue_discard(R.qdirfd, e->id);
		if (drc == 0) {
			log_info("relay_done", "id=%s", e->id);
			ret = ATTEMPT_REMOVED;
			goto out;
		}
		/* fall back to the durable path, which records the results */
		log_error("queue_remove_failed", "id=%s reason=%s", e->id,
			  log_q((char[128]){0}, 128, strerror(-drc)));
	}
	int urc = queue_update(R.qdirfd, e);
	if (urc)
		log_error("queue_update_failed", "id=%s reason=%s", e->id,
			  log_q((char[128]){0}, 128, strerror(-urc)));
	bool dsn_failed;
	bool changed = dsn_round(e, msgfd, &dsn_failed);
	if (dsn_failed && e->next_try < now + DSN_RETRY_S) e->next_try = now + DSN_RETRY_S;
	if (all_final(e)) {
		int rrc = queue_remove(R.qdirfd, e->id);
		if (rrc == 0) {
			log_info("relay_done", "id=%s", e->id);
			ret = ATTEMPT_REMOVED;
		} else {
			/* Keep it, with the DSN flags durable, so that a later
			 * try (or a restart) removes it without a second DSN. */
			log_error("queue_remove_failed", "id=%s reason=%s", e->id,
				  log_q((char[128]){0}, 128, strerror(-rrc)));
			if (changed) queue_update(R.qdirfd, e);
			e->next_try = now + DSN_RETRY_S;
		}
	} else if (changed) {
		queue_update(R.qdirfd, e);
	}
out:
	if (msgfd >= 0) close(msgfd);
	free(group);
	free(idx);
	free(rc);
	return ret;
}

/* ------------------------------------------------------------------ */
/* start and stop */

static SSL_CTX *client_ctx(bool verify)
{
	SSL_CTX *c = SSL_CTX_new(TLS_client_method());
	if (!c) return NULL;
	SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (verify) {
		SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
		SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
		if (SSL_CTX_set_default_verify_paths(c) != 1) {
			SSL_CTX_free(c);
			return NULL;
		}
	} else {
		SSL_CTX_set_verify(c, SSL_VERIFY_NONE, NULL);
	}
	return c;
}

static void free_all(void)
{
	for (unsigned i = 0; i < R.n; i++)
		entry_free(R.v[i]);
	free(R.v);
	R.v = NULL;
	R.n = R.cap = 0;
	R.ready = R.ready_tail = NULL;
	SSL_CTX_free(R.tls_verify);
	SSL_CTX_free(R.tls_any);
	R.tls_verify = R.tls_any = NULL;
	free(R.ns_csv);
	R.ns_csv = NULL;
	if (R.qdirfd >= 0) close(R.qdirfd);
	if (R.stopfd >= 0) close(R.stopfd);
	R.qdirfd = R.stopfd = -1;
}

int relay_start(struct server *srv)
{
	const struct relay_config *rc = &srv->cfg->relay;
	R.srv = srv;
	R.rc = rc;
	R.pol = (struct smtpc_policy){
	    .hostname = srv->cfg->hostname,
	    .tls = rc->tls == RELAY_TLS_REQUIRED ? SMTPC_TLS_REQUIRED
		   : rc->tls == RELAY_TLS_NONE	 ? SMTPC_TLS_NONE
						 : SMTPC_TLS_OPPORTUNISTIC};
	R.plain = (struct smtpc_policy){.hostname = srv->cfg->hostname, .tls = SMTPC_TLS_NONE};
	R.stop = false;
	R.qdirfd = queue_dir_open(rc->queue);
	if (R.qdirfd < 0) {
		fprintf(stderr, "mailpopbox: cannot open the relay queue %s: %s\n", rc->queue,
			strerror(-R.qdirfd));
		R.qdirfd = -1;
		return -1;
	}
	R.stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	R.tls_verify = client_ctx(true);
	R.tls_any = client_ctx(false);
	if (R.stopfd < 0 || !R.tls_verify || !R.tls_any ||
	    ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS) {
		fprintf(stderr, "mailpopbox: cannot set up the relay (eventfd, TLS or resolver)\n");
		free_all();
		return -1;
	}
	if (rc->nnameservers) {
		size_t len = 1;
		for (unsigned i = 0; i < rc->nnameservers; i++)
			len += strlen(rc->nameservers[i]) + 1;
		R.ns_csv = calloc(1, len);
		for (unsigned i = 0; R.ns_csv && i < rc->nnameservers; i++) {
			if (i) strcat(R.ns_csv, ",");
			strcat(R.ns_csv, rc->nameservers[i]);
		}
	}
	/* Startup: crash leftovers go, every entry comes back (SPEC 5). */
	struct queue_entry *v = NULL;
	unsigned n = 0;
	int lrc = queue_load(R.qdirfd, &v, &n);
	if (lrc) {
		fprintf(stderr, "mailpopbox: cannot read the relay queue %s: %s\n", rc->queue,
			strerror(-lrc));
		ares_library_cleanup();
		free_all();
		return -1;
	}
	unsigned bad = 0;
	for (unsigned i = 0; i < n; i++) {
		struct rentry *r = calloc(1, sizeof *r);
		if (!r) continue; /* left on disk: the next start gets it */
		r->e = v[i];
		memset(&v[i], 0, sizeof v[i]);
		if (list_insert(r) != 0) {
			entry_free(r);
			continue;
		}
		r->st = r->e.error ? R_BAD : R_IDLE;
		if (r->e.error) {
			log_bad(&r->e);
			bad++;
		}
	}
	queue_entries_free(v, n);
	srandom((unsigned)(time(NULL) ^ getpid()));
	log_info("relay_started", "queue=%s entries=%u bad=%u threads=%u%s%s", rc->queue, n, bad,
		 RELAY_THREADS, rc->smarthost ? " smarthost=" : "",
		 rc->smarthost ? rc->smarthost : "");
	if (pthread_create(&R.sched, NULL, sched_main, NULL) != 0) {
		fprintf(stderr, "mailpopbox: cannot start the relay threads\n");
		ares_library_cleanup();
		free_all();
		return -1;
	}
	R.started = true;
	pthread_setname_np(R.sched, "mpb-relay-sched");
	for (unsigned i = 0; i < RELAY_THREADS; i++) {
		pthread_cond_init(&R.wcv[i], NULL);
		if (pthread_create(&R.workers[i], NULL, worker_main, (void *)(uintptr_t)i) != 0)
			break;
		pthread_setname_np(R.workers[i], "mpb-relay");
		R.nworkers++;
	}
	if (R.nworkers == 0) {
		fprintf(stderr, "mailpopbox: cannot start the relay threads\n");
		relay_stop();
		return -1;
	}
	return 0;
}

void relay_stop(void)
{
	if (!R.started) return;
	pthread_mutex_lock(&R.lock);
	R.stop = true;
	pthread_cond_broadcast(&R.sched_cv);
	for (unsigned i = 0; i < R.nworkers; i++)
		pthread_cond_broadcast(&R.wcv[i]);
	pthread_mutex_unlock(&R.lock);
	uint64_t one = 1;
	ssize_t w = write(R.stopfd, &one, sizeof one);
	(void)w;
	pthread_join(R.sched, NULL);
	for (unsigned i = 0; i < R.nworkers; i++)
		pthread_join(R.workers[i], NULL);
	R.nworkers = 0;
	R.started = false;
	free_all();
	ares_library_cleanup();
	log_info("relay_stopped", "threads=%u", RELAY_THREADS);
}
