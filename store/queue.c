/*
 * The relay queue. Reading order: the state file format (queue_format,
 * queue_parse), then the file discipline (open/write/commit, update,
 * remove, load), then the pure helpers (retry schedule, grouping).
 *
 * The state file, keys in this order ("?" = optional, omitted when unset):
 *
 *   mailpopbox-queue 1
 *   id ID                       must match the file name
 *   arrival SECONDS
 *   next SECONDS
 *   size OCTETS                 of the message in ID.msg, checked at load
 *   from ADDRESS                "" (empty value) for <>
 *   envid? TEXT
 *   ret? full|hdrs
 *   body 7bit|8bitmime|binarymime
 *   smtputf8 0|1
 *   auth? DOMAIN
 *   rcpts N
 *   then N times:
 *     rcpt ADDRESS              starts a recipient
 *     orcpt? TEXT
 *     notify BITS               SMTP_NOTIFY_* as a number
 *     state pending|done|failed
 *     attempts N
 *     flags N
 *     last SECONDS
 *     status? TEXT
 *     remote? TEXT
 *     reply? TEXT
 *   end
 *
 * The parser takes keys in any order within their section but refuses
 * unknown and repeated keys, a missing required key, a count that does not
 * match, anything after "end", and no "end": a state file is either exactly
 * what queue_format wrote or it is reported as corrupt.
 */
#include "store/queue.h"
#include "store/dir.h"
#include "store/sync.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* building entries */

int queue_strset(char **field, const char *value)
{
	char *c = NULL;
	if (value && !(c = strdup(value))) return -ENOMEM;
	free(*field);
	*field = c;
	return 0;
}

int queue_add_rcpt(struct queue_entry *e, const char *addr, const char *orcpt, uint8_t notify)
{
	struct queue_rcpt *v = realloc(e->rcpt, (e->nrcpt + 1) * sizeof *v);
	if (!v) return -ENOMEM;
	e->rcpt = v;
	struct queue_rcpt *r = &v[e->nrcpt];
	memset(r, 0, sizeof *r);
	r->notify = notify;
	if (queue_strset(&r->addr, addr) || queue_strset(&r->orcpt, orcpt)) {
		free(r->addr);
		free(r->orcpt);
		return -ENOMEM;
	}
	e->nrcpt++;
	return 0;
}

static void rcpt_free(struct queue_rcpt *r)
{
	free(r->addr);
	free(r->orcpt);
	free(r->status);
	free(r->remote);
	free(r->reply);
}

void queue_entry_free(struct queue_entry *e)
{
	for (unsigned i = 0; i < e->nrcpt; i++)
		rcpt_free(&e->rcpt[i]);
	free(e->rcpt);
	free(e->from);
	free(e->envid);
	free(e->auth_domain);
	memset(e, 0, sizeof *e);
}

void queue_entries_free(struct queue_entry *v, unsigned n)
{
	for (unsigned i = 0; v && i < n; i++)
		queue_entry_free(&v[i]);
	free(v);
}

/* ------------------------------------------------------------------ */
/* formatting */

struct sbuf {
	char *p;
	size_t len, cap;
	bool oom;
};

static void sb_put(struct sbuf *b, const char *p, size_t n)
{
	if (b->oom) return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *q = realloc(b->p, cap);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_num(struct sbuf *b, const char *key, long long v)
{
	char t[64];
	int n = snprintf(t, sizeof t, "%s %lld\n", key, v);
	sb_put(b, t, (size_t)n);
}

static void sb_unum(struct sbuf *b, const char *key, unsigned long long v)
{
	char t[64];
	int n = snprintf(t, sizeof t, "%s %llu\n", key, v);
	sb_put(b, t, (size_t)n);
}

/* "key value\n", the value %-escaped; nothing for a NULL value. */
static void sb_kv(struct sbuf *b, const char *key, const char *v)
{
	static const char hex[] = "0123456789ABCDEF";
	if (!v) return;
	sb_str(b, key);
	sb_put(b, " ", 1);
	for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
		if (*s > 0x20 && *s < 0x7f && *s != '%') {
			sb_put(b, (const char *)s, 1);
		} else {
			char x[3] = {'%', hex[*s >> 4], hex[*s & 15]};
			sb_put(b, x, 3);
		}
	}
	sb_put(b, "\n", 1);
}

static const char *const state_names[] = {"pending", "done", "failed"};
static const char *const body_names[] = {"7bit", "8bitmime", "binarymime"};
static const char *const ret_names[] = {NULL, "full", "hdrs"};

char *queue_format(const struct queue_entry *e, size_t *len)
{
	struct sbuf b = {0};
	sb_str(&b, QUEUE_VERSION_LINE "\n");
	sb_kv(&b, "id", e->id);
	sb_num(&b, "arrival", e->arrival);
	sb_num(&b, "next", e->next_try);
	sb_unum(&b, "size", e->size);
	sb_kv(&b, "from", e->from ? e->from : "");
	sb_kv(&b, "envid", e->envid);
	if (e->ret < 3) sb_kv(&b, "ret", ret_names[e->ret]);
	sb_kv(&b, "body", body_names[e->body < 3 ? e->body : 0]);
	sb_unum(&b, "smtputf8", e->smtputf8);
	sb_kv(&b, "auth", e->auth_domain);
	sb_unum(&b, "rcpts", e->nrcpt);
	for (unsigned i = 0; i < e->nrcpt; i++) {
		const struct queue_rcpt *r = &e->rcpt[i];
		sb_kv(&b, "rcpt", r->addr ? r->addr : "");
		sb_kv(&b, "orcpt", r->orcpt);
		sb_unum(&b, "notify", r->notify);
		sb_kv(&b, "state", state_names[r->state < 3 ? r->state : 0]);
		sb_unum(&b, "attempts", r->attempts);
		sb_unum(&b, "flags", r->flags);
		sb_num(&b, "last", r->last_try);
		sb_kv(&b, "status", r->status);
		sb_kv(&b, "remote", r->remote);
		sb_kv(&b, "reply", r->reply);
	}
	sb_str(&b, "end\n");
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

/* ------------------------------------------------------------------ */
/* parsing */

enum {
	K_ID,
	K_ARRIVAL,
	K_NEXT,
	K_SIZE,
	K_FROM,
	K_ENVID,
	K_RET,
	K_BODY,
	K_SMTPUTF8,
	K_AUTH,
	K_RCPTS,
	/* per recipient */
	K_RCPT,
	K_ORCPT,
	K_NOTIFY,
	K_STATE,
	K_ATTEMPTS,
	K_FLAGS,
	K_LAST,
	K_STATUS,
	K_REMOTE,
	K_REPLY,
	K_END,
	K_COUNT
};

static const char *const key_names[K_COUNT] = {
    "id",	"arrival", "next",   "size",   "from",	"envid",  "ret",   "body",
    "smtputf8", "auth",	   "rcpts",  "rcpt",   "orcpt", "notify", "state", "attempts",
    "flags",	"last",	   "status", "remote", "reply", "end",
};

#define ENTRY_REQUIRED                                                                             \
	((1u << K_ID) | (1u << K_ARRIVAL) | (1u << K_NEXT) | (1u << K_SIZE) | (1u << K_FROM) |     \
	 (1u << K_BODY) | (1u << K_SMTPUTF8) | (1u << K_RCPTS))
#define RCPT_REQUIRED                                                                              \
	((1u << K_RCPT) | (1u << K_NOTIFY) | (1u << K_STATE) | (1u << K_ATTEMPTS) |                \
	 (1u << K_FLAGS) | (1u << K_LAST))

static int hexval(char c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'A' && c <= 'F') return c - 'A' + 10;
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	return -1;
}

/* %-unescapes v into a fresh string; refuses NUL and raw octets that the
 * formatter would have escaped. NULL: malformed or no memory (*oom). */
static char *unescape(const char *v, size_t n, bool *oom)
{
	char *o = malloc(n + 1);
	if (!o) {
		*oom = true;
		return NULL;
	}
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '%') {
			if (i + 2 >= n) goto bad;
			int a = hexval(v[i + 1]), b = hexval(v[i + 2]);
			if (a < 0 || b < 0 || (a == 0 && b == 0)) goto bad;
			o[k++] = (char)(a << 4 | b);
			i += 2;
		} else if (c > 0x20 && c < 0x7f) {
			o[k++] = (char)c;
		} else {
			goto bad;
		}
	}
	o[k] = '\0';
	return o;
bad:
	free(o);
	return NULL;
}

static bool parse_i64(const char *p, size_t n, int64_t *out)
{
	bool neg = n > 0 && p[0] == '-';
	size_t i = neg;
	if (i == n || n - i > 19) return false;
	int64_t v = 0;
	for (; i < n; i++) {
		if (p[i] < '0' || p[i] > '9') return false;
		int d = p[i] - '0';
		if (v > (INT64_MAX - d) / 10) return false;
		v = v * 10 + d;
	}
	*out = neg ? -v : v;
	return true;
}

static bool parse_u64(const char *p, size_t n, uint64_t max, uint64_t *out)
{
	if (n == 0 || n > 20) return false;
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9') return false;
		unsigned d = (unsigned)(p[i] - '0');
		if (v > (max - d) / 10) return false;
		v = v * 10 + d;
	}
	*out = v;
	return true;
}

static int name_index(const char *const *names, unsigned n, const char *v, size_t len)
{
	for (unsigned i = 0; i < n; i++)
		if (names[i] && strlen(names[i]) == len && memcmp(names[i], v, len) == 0)
			return (int)i;
	return -1;
}

int queue_parse(const char *p, size_t n, struct queue_entry *e)
{
	memset(e, 0, sizeof *e);
	bool oom = false;
	const char *end = p + n;
	size_t vl = strlen(QUEUE_VERSION_LINE);
	if (n < vl + 1 || memcmp(p, QUEUE_VERSION_LINE "\n", vl + 1) != 0) return -EBADMSG;
	p += vl + 1;
	uint32_t seen = 0, rseen = 0;
	uint64_t nrcpts = 0;
	struct queue_rcpt *r = NULL;
	bool ended = false;
	while (p < end) {
		if (ended) {
			/* nothing after "end" but padding (queue_commit) */
			for (; p < end; p++)
				if (*p != ' ' && *p != '\n') goto bad;
			break;
		}
		const char *lf = memchr(p, '\n', (size_t)(end - p));
		if (!lf) goto bad; /* cut short */
		const char *sp = memchr(p, ' ', (size_t)(lf - p));
		const char *kend = sp ? sp : lf;
		int k = name_index(key_names, K_COUNT, p, (size_t)(kend - p));
		const char *v = sp ? sp + 1 : lf;
		size_t vn = (size_t)(lf - v);
		p = lf + 1;
		if (k < 0 || (k == K_END) != !sp) goto bad;
		if (k == K_END) {
			if (r && (rseen & RCPT_REQUIRED) != RCPT_REQUIRED) goto bad;
			if ((seen & ENTRY_REQUIRED) != ENTRY_REQUIRED || e->nrcpt != nrcpts)
				goto bad;
			ended = true;
			continue;
		}
		if (k == K_RCPT) {
			if (!(seen & (1u << K_RCPTS)) || e->nrcpt >= nrcpts) goto bad;
			if (r && (rseen & RCPT_REQUIRED) != RCPT_REQUIRED) goto bad;
			char *a = unescape(v, vn, &oom);
			if (!a) goto bad;
			r = &e->rcpt[e->nrcpt++];
			r->addr = a;
			rseen = 1u << K_RCPT;
			continue;
		}
		uint32_t *mask = k > K_RCPT ? &rseen : &seen;
		if (k > K_RCPT && !r) goto bad;
		if (k < K_RCPT && r) goto bad; /* envelope keys come before the recipients */
		if (*mask & (1u << k)) goto bad;
		*mask |= 1u << k;
		uint64_t u;
		int64_t t;
		int idx;
		char **str = NULL;
		switch (k) {
		case K_ID:
			if (vn == 0 || vn >= QUEUE_ID_MAX) goto bad;
			memcpy(e->id, v, vn);
			e->id[vn] = '\0';
			for (size_t i = 0; i < vn; i++)
				if (v[i] <= 0x20 || v[i] >= 0x7f || v[i] == '/' || v[i] == '%')
					goto bad;
			break;
		case K_ARRIVAL:
			if (!parse_i64(v, vn, &e->arrival)) goto bad;
			break;
		case K_NEXT:
			if (!parse_i64(v, vn, &e->next_try)) goto bad;
			break;
		case K_SIZE:
			if (!parse_u64(v, vn, UINT64_MAX, &e->size)) goto bad;
			break;
		case K_FROM: str = &e->from; break;
		case K_ENVID: str = &e->envid; break;
		case K_AUTH: str = &e->auth_domain; break;
		case K_RET:
			if ((idx = name_index(ret_names, 3, v, vn)) < 1) goto bad;
			e->ret = (uint8_t)idx;
			break;
		case K_BODY:
			if ((idx = name_index(body_names, 3, v, vn)) < 0) goto bad;
			e->body = (uint8_t)idx;
			break;
		case K_SMTPUTF8:
			if (!parse_u64(v, vn, 1, &u)) goto bad;
			e->smtputf8 = u;
			break;
		case K_RCPTS:
			/* bounded by the file: each recipient takes a line or more */
			if (!parse_u64(v, vn, (uint64_t)(end - p) / 5, &nrcpts)) goto bad;
			if (nrcpts && !(e->rcpt = calloc(nrcpts, sizeof *e->rcpt))) {
				oom = true;
				goto bad;
			}
			break;
		case K_ORCPT: str = &r->orcpt; break;
		case K_STATUS: str = &r->status; break;
		case K_REMOTE: str = &r->remote; break;
		case K_REPLY: str = &r->reply; break;
		case K_NOTIFY:
			if (!parse_u64(v, vn, 15, &u)) goto bad;
			r->notify = (uint8_t)u;
			break;
		case K_STATE:
			if ((idx = name_index(state_names, 3, v, vn)) < 0) goto bad;
			r->state = (uint8_t)idx;
			break;
		case K_ATTEMPTS:
			if (!parse_u64(v, vn, UINT32_MAX, &u)) goto bad;
			r->attempts = (uint32_t)u;
			break;
		case K_FLAGS:
			if (!parse_u64(v, vn, UINT32_MAX, &u)) goto bad;
			r->flags = (uint32_t)u;
			break;
		case K_LAST:
			if (!parse_i64(v, vn, &t)) goto bad;
			r->last_try = t;
			break;
		}
		if (str && !(*str = unescape(v, vn, &oom))) goto bad;
	}
	if (!ended) goto bad;
	return 0;
bad:
	queue_entry_free(e);
	return oom ? -ENOMEM : -EBADMSG;
}

/* ------------------------------------------------------------------ */
/* files */

static _Atomic uint64_t queue_seq;

/* Positioned: the ring writes a message's body by offset and leaves the
 * file offset alone, so every write here names its place too. */
static int pwrite_all(int fd, const void *p, size_t n, off_t off)
{
	const char *c = p;
	while (n) {
		ssize_t w = pwrite(fd, c, n, off);
		if (w < 0) {
			if (errno == EINTR) continue;
			return -errno;
		}
		c += w;
		n -= (size_t)w;
		off += w;
	}
	return 0;
}

static void name_of(char *buf, size_t cap, const char *id, const char *suffix)
{
	snprintf(buf, cap, "%s%s", id, suffix);
}

static bool exists(int dfd, const char *name)
{
	struct stat st;
	return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT;
}

bool queue_exists(int qdirfd, const char *id)
{
	char msg[QUEUE_ID_MAX + 16];
	name_of(msg, sizeof msg, id, ".msg");
	return exists(qdirfd, msg);
}

int queue_dir_open(const char *path)
{
	char *p = strdup(path);
	if (!p) return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/') continue;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST) {
			int rc = -errno;
			free(p);
			return rc;
		}
		*s = '/';
	}
	free(p);
	if (mkdir(path, 0700) != 0 && errno != EEXIST) return -errno;
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Spare files. A finished entry's file is not unlinked but renamed to
 * .spare.N, and the next entry is written over it: the queue then
 * allocates and frees no inode (and, for like-sized messages, no block)
 * per message. Inodes matter on ext4 without a journal, where allocation
 * skips every inode freed in the last minute (ialloc.c,
 * recently_deleted()) and a busy queue spent a fifth of its CPU time
 * there; emptying the spare cost another 4%. The pool lives in this
 * process (one process per queue directory); queue_load() unlinks the
 * spares a previous process left. */
#define SPARE_MAX 512
#define SPARE_KEEP (64 * 1024)
#define SPARE_PREFIX ".spare."
static struct {
	pthread_mutex_t lock;
	bool bound;
	dev_t dev; /* the directory whose spares these are (the engine and */
	ino_t ino; /* the relay hold it open through different fds) */
	unsigned n;
	uint64_t next;
	struct {
		uint64_t k, size; /* .spare.K, SIZE octets */
	} v[SPARE_MAX];
} spares = {PTHREAD_MUTEX_INITIALIZER, false, 0, 0, 0, 0, {{0, 0}}};

/* Whether QDIRFD is the pool's directory; binds the pool to it when BIND
 * and the pool is not bound yet. Called with the lock held. */
static bool spare_dir(int qdirfd, bool bind)
{
	struct stat st;
	if (fstat(qdirfd, &st) != 0) return false;
	if (!spares.bound && bind) {
		spares.bound = true;
		spares.dev = st.st_dev;
		spares.ino = st.st_ino;
	}
	return spares.bound && spares.dev == st.st_dev && spares.ino == st.st_ino;
}

static void spare_name(char *buf, size_t cap, uint64_t k)
{
	snprintf(buf, cap, SPARE_PREFIX "%llu", (unsigned long long)k);
}

/* Takes a spare of QDIRFD's directory off the pool: true with its name in
 * buf and its size in *was, false when there is none. */
static bool spare_pop(int qdirfd, char *buf, size_t cap, uint64_t *was)
{
	pthread_mutex_lock(&spares.lock);
	bool got = spares.n > 0 && spare_dir(qdirfd, false);
	uint64_t k = 0;
	if (got) {
		spares.n--;
		k = spares.v[spares.n].k;
		*was = spares.v[spares.n].size;
	}
	pthread_mutex_unlock(&spares.lock);
	if (got) spare_name(buf, cap, k);
	return got;
}

/* Makes NAME a spare instead of unlinking it: 0, or -errno (then the
 * caller unlinks; -ENOENT when NAME is gone). */
static int spare_put(int qdirfd, const char *name)
{
	pthread_mutex_lock(&spares.lock);
	if (spares.n >= SPARE_MAX || !spare_dir(qdirfd, true)) {
		pthread_mutex_unlock(&spares.lock);
		return -ENOSPC;
	}
	uint64_t k = spares.next++;
	pthread_mutex_unlock(&spares.lock);
	char sp[48];
	spare_name(sp, sizeof sp, k);
	if (renameat(qdirfd, name, qdirfd, sp) != 0) return -errno;
	/* Kept as it is, blocks and all: the next entry is written over it
	 * (queue_commit) and allocates nothing. Only a big one is emptied,
	 * so that the pool holds at most SPARE_MAX * SPARE_KEEP octets.
	 * (Renamed first: a crash in between leaves a spare, which the next
	 * start removes, never a truncated entry.) */
	struct stat st;
	bool kept = fstatat(qdirfd, sp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
	uint64_t size = kept ? (uint64_t)st.st_size : 0;
	if (kept && size > SPARE_KEEP) {
		int fd = openat(qdirfd, sp, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
		kept = fd >= 0;
		if (fd >= 0) close(fd);
		size = 0;
	}
	pthread_mutex_lock(&spares.lock);
	kept = kept && spares.n < SPARE_MAX;
	if (kept) {
		spares.v[spares.n].k = k;
		spares.v[spares.n].size = size;
		spares.n++;
	}
	pthread_mutex_unlock(&spares.lock);
	if (!kept) unlinkat(qdirfd, sp, 0);
	return 0;
}

int queue_pick(int qdirfd, int64_t now, struct queue_writer *w, bool spare)
{
	memset(w, 0, sizeof *w);
	w->qdirfd = qdirfd;
	w->fd = -1;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t q = atomic_fetch_add_explicit(&queue_seq, 1, memory_order_relaxed);
	/* The id is new unless the clock went back onto a recycled pid: then
	 * the commit's RENAME_NOREPLACE refuses the taken name (and a state
	 * file without its message file is gone since the start's scan), so
	 * no lookup is needed here. */
	snprintf(w->id, sizeof w->id, "%lld.%06ld.%d.%llu", (long long)now, ts.tv_nsec / 1000,
		 (int)getpid(), (unsigned long long)q);
	if (spare && spare_pop(qdirfd, w->tmp, sizeof w->tmp, &w->was)) {
		w->spare = true;
		return O_WRONLY | O_CLOEXEC | O_NOFOLLOW;
	}
	name_of(w->tmp, sizeof w->tmp, w->id, ".msg.tmp");
	return O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
}

int queue_open(int qdirfd, int64_t now, struct queue_writer *w)
{
	for (int tries = 0; tries < 100; tries++) {
		int flags = queue_pick(qdirfd, now, w, true);
		w->fd = openat(qdirfd, w->tmp, flags, 0600);
		if (w->fd >= 0) return 0;
		if (w->spare)
			unlinkat(qdirfd, w->tmp, 0); /* gone or unusable: forget it */
		else if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

int queue_write(struct queue_writer *w, const void *p, size_t n)
{
	int rc = pwrite_all(w->fd, p, n, (off_t)w->size);
	if (rc == 0) w->size += n;
	return rc;
}

void queue_abort(struct queue_writer *w)
{
	if (w->fd >= 0) close(w->fd);
	w->fd = -1;
	unlinkat(w->qdirfd, w->tmp, 0);
}

/* Group commit of the directory fsync (as core/deliver.c does for new/):
 * commits running on several threads at once share one fsync. A caller's
 * renames are done before it takes its ticket; the fsync that covers it is
 * one that starts after that. A failed directory fsync is sticky: nothing
 * after it is called durable until the process restarts (after a failed
 * fsync the kernel may have dropped the dirty state it failed to write). */
static struct {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint64_t issued, done;
	bool busy;
	int fd;
	int failed; /* -errno once a directory fsync failed */
} gc = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, false, -1, 0};

static int dir_fsync_grouped(int dfd)
{
	pthread_mutex_lock(&gc.lock);
	if (gc.fd < 0)
		gc.fd = dfd; /* the process's queue directory */
	if (gc.fd != dfd) {
		/* another directory (unit tests use several): no sharing */
		pthread_mutex_unlock(&gc.lock);
		return fsync(dfd) != 0 ? -errno : 0;
	}
	uint64_t ticket = ++gc.issued;
	while (gc.done < ticket && !gc.failed) {
		if (gc.busy) {
			pthread_cond_wait(&gc.cond, &gc.lock);
			continue;
		}
		gc.busy = true;
		uint64_t covers = gc.issued;
		pthread_mutex_unlock(&gc.lock);
		int rc = fsync(dfd) != 0 ? -errno : 0;
		pthread_mutex_lock(&gc.lock);
		gc.busy = false;
		if (rc)
			gc.failed = rc;
		else
			gc.done = covers;
		pthread_cond_broadcast(&gc.cond);
	}
	int rc = gc.done >= ticket ? 0 : gc.failed;
	pthread_mutex_unlock(&gc.lock);
	return rc;
}

/* The footer that closes a message file: the length of the state text
 * before it, fixed width, so that a reader finds the state from the end. */
#define FOOTER_MAGIC "mailpopbox-env "
#define FOOTER_LEN (sizeof FOOTER_MAGIC - 1 + 20 + 1)
/* Entry files are padded to a multiple of this (the file system's block,
 * which they take in any case), or up to PAD_MAX to a spare's old size. */
#define QUEUE_ALIGN 4096
#define PAD_MAX (16 * 1024)

/* Sets e->id and e->size and appends E's state to W's file. */
static int write_state(struct queue_writer *w, struct queue_entry *e)
{
	memcpy(e->id, w->id, sizeof e->id);
	e->size = w->size;
	size_t len = 0;
	char *text = queue_format(e, &len);
	if (!text) return -ENOMEM;
	/* The file's size: a whole number of blocks, or a spare's old size
	 * when that is a little more. Written over a spare of the same size,
	 * the entry then allocates no block and changes no inode field that
	 * fdatasync must write: its commit is one data write and a cache
	 * flush. The padding ends the state text (queue_parse skips it); the
	 * footer counts it. */
	uint64_t need = w->size + len + FOOTER_LEN;
	uint64_t size = (need + QUEUE_ALIGN - 1) / QUEUE_ALIGN * QUEUE_ALIGN;
	if (w->was > size && w->was - need <= PAD_MAX) size = w->was;
	size_t pad = (size_t)(size - need);
	int rc = -ENOMEM;
	char *both = realloc(text, len + pad + FOOTER_LEN);
	if (both) {
		text = both;
		memset(text + len, ' ', pad);
		if (pad) text[len + pad - 1] = '\n';
		len += pad;
		char foot[FOOTER_LEN + 1];
		snprintf(foot, sizeof foot, FOOTER_MAGIC "%020llu\n", (unsigned long long)len);
		memcpy(text + len, foot, FOOTER_LEN);
		rc = pwrite_all(w->fd, text, len + FOOTER_LEN, (off_t)w->size);
	}
	free(text);
	/* a bigger spare: what is left of its old content goes */
	if (rc == 0 && w->was > size && ftruncate(w->fd, (off_t)size) != 0) rc = -errno;
	return rc;
}

/* Closes W's file and, when RC is 0 (it is durable), names it ID.msg:
 * that name appearing, on a whole and synced file, is what makes the
 * entry. Otherwise, or when the rename fails, the file goes. */
static int name_entry(struct queue_writer *w, int rc)
{
	if (close(w->fd) != 0 && rc == 0) rc = -errno;
	w->fd = -1;
	char msg[QUEUE_ID_MAX + 16];
	name_of(msg, sizeof msg, w->id, ".msg");
	if (rc == 0 && renameat2(w->qdirfd, w->tmp, w->qdirfd, msg, RENAME_NOREPLACE) != 0) rc = -errno;
	if (rc) unlinkat(w->qdirfd, w->tmp, 0);
	return rc;
}

/* The renames are not known to be durable: nothing of the entry may stay
 * (the caller refuses the message, so it must not be sent either). */
static void unname_entry(const struct queue_writer *w)
{
	char msg[QUEUE_ID_MAX + 16];
	name_of(msg, sizeof msg, w->id, ".msg");
	unlinkat(w->qdirfd, msg, 0);
}

int queue_commit(struct queue_writer *w, struct queue_entry *e)
{
	int rc = write_state(w, e);
	if (rc == 0 && fdatasync(w->fd) != 0) rc = -errno;
	if ((rc = name_entry(w, rc)) != 0) return rc;
	if ((rc = dir_fsync_grouped(w->qdirfd)) != 0) unname_entry(w);
	return rc;
}

void queue_commit_batch(struct queue_writer *const *ws, struct queue_entry *const *es, int *rcs,
			unsigned n)
{
	if (n == 0) return;
	if (n == 1) {
		/* alone: its own fdatasync costs one flush, sync_all two */
		rcs[0] = queue_commit(ws[0], es[0]);
		return;
	}
	int qdirfd = ws[0]->qdirfd;
	for (unsigned i = 0; i < n; i++) rcs[i] = write_state(ws[i], es[i]);
	int all = sync_all(qdirfd);
	for (unsigned i = 0; i < n && !all; i++)
		if (!rcs[i]) rcs[i] = sync_error(ws[i]->fd);
	unsigned named = 0;
	for (unsigned i = 0; i < n; i++) {
		rcs[i] = name_entry(ws[i], rcs[i] ? rcs[i] : all);
		named += rcs[i] == 0;
	}
	int d = named ? dir_fsync_grouped(qdirfd) : 0;
	for (unsigned i = 0; i < n && d; i++)
		if (rcs[i] == 0) {
			unname_entry(ws[i]);
			rcs[i] = d;
		}
}

int queue_create(int qdirfd, struct queue_entry *e, const void *msg, size_t n, int64_t now)
{
	struct queue_writer w;
	int rc = queue_open(qdirfd, now, &w);
	if (rc) return rc;
	if ((rc = queue_write(&w, msg, n)) != 0) {
		queue_abort(&w);
		return rc;
	}
	return queue_commit(&w, e);
}

/* Writes ID.env.tmp durably. */
static int write_env_tmp(int qdirfd, const struct queue_entry *e)
{
	char tmp[QUEUE_ID_MAX + 16];
	name_of(tmp, sizeof tmp, e->id, ".env.tmp");
	size_t len;
	char *text = queue_format(e, &len);
	if (!text) return -ENOMEM;
	int fd = openat(qdirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int rc = fd < 0 ? -errno : pwrite_all(fd, text, len, 0);
	if (rc == 0 && fsync(fd) != 0) rc = -errno;
	if (fd >= 0 && close(fd) != 0 && rc == 0) rc = -errno;
	free(text);
	if (rc) unlinkat(qdirfd, tmp, 0);
	return rc;
}

int queue_update(int qdirfd, const struct queue_entry *e)
{
	char env[QUEUE_ID_MAX + 16], envtmp[QUEUE_ID_MAX + 16];
	name_of(env, sizeof env, e->id, ".env");
	name_of(envtmp, sizeof envtmp, e->id, ".env.tmp");
	int rc = write_env_tmp(qdirfd, e);
	if (rc) return rc;
	if (renameat(qdirfd, envtmp, qdirfd, env) != 0) {
		rc = -errno;
		unlinkat(qdirfd, envtmp, 0);
		return rc;
	}
	return fsync(qdirfd) != 0 ? -errno : 0;
}

/* The message file first (into the spares, or unlinked): without it the
 * entry does not exist, and a state file left alone is removed by
 * queue_load(). */
static int unlink_entry(int qdirfd, const char *id)
{
	char env[QUEUE_ID_MAX + 16], msg[QUEUE_ID_MAX + 16];
	name_of(msg, sizeof msg, id, ".msg");
	name_of(env, sizeof env, id, ".env");
	int rc = spare_put(qdirfd, msg);
	if (rc == -ENOENT) {
		/* already gone */
	} else if (rc != 0 && unlinkat(qdirfd, msg, 0) != 0 && errno != ENOENT)
		return -errno;
	if (unlinkat(qdirfd, env, 0) != 0 && errno != ENOENT) return -errno;
	return 0;
}

int queue_remove(int qdirfd, const char *id)
{
	int rc = unlink_entry(qdirfd, id);
	if (rc) return rc;
	return fsync(qdirfd) != 0 ? -errno : 0;
}

int queue_discard(int qdirfd, const char *id)
{
	/* No directory fsync: a lost unlink only means the entry is sent
	 * again (see queue.h). */
	return unlink_entry(qdirfd, id);
}

int queue_open_msg(int qdirfd, const char *id)
{
	char msg[QUEUE_ID_MAX + 16];
	name_of(msg, sizeof msg, id, ".msg");
	int fd = openat(qdirfd, msg, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static bool ends_with(const char *s, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	return n > k && memcmp(s + n - k, suffix, k) == 0;
}

static int pread_all(int fd, char *p, size_t n, off_t off)
{
	size_t got = 0;
	while (got < n) {
		ssize_t r = pread(fd, p + got, n - got, off + (off_t)got);
		if (r < 0 && errno == EINTR) continue;
		if (r < 0) return -errno;
		if (r == 0) return -EBADMSG; /* shorter than it said */
		got += (size_t)r;
	}
	return 0;
}

/* Reads a whole (small) state file. */
static int read_file(int dfd, const char *name, char **out, size_t *len)
{
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -errno;
	struct stat st;
	if (fstat(fd, &st) != 0 || st.st_size > (1 << 24)) {
		close(fd);
		return -EBADMSG;
	}
	char *p = malloc((size_t)st.st_size + 1);
	int rc = p ? pread_all(fd, p, (size_t)st.st_size, 0) : -ENOMEM;
	close(fd);
	if (rc) {
		free(p);
		return rc;
	}
	p[st.st_size] = '\0';
	*out = p;
	*len = (size_t)st.st_size;
	return 0;
}

/* The state text at the end of a message file of SIZE octets; -EBADMSG
 * when the footer or the length it names is wrong. */
static int read_trailer(int fd, uint64_t size, char **out, size_t *len)
{
	char foot[FOOTER_LEN + 1];
	if (size < FOOTER_LEN) return -EBADMSG;
	int rc = pread_all(fd, foot, FOOTER_LEN, (off_t)(size - FOOTER_LEN));
	if (rc) return rc;
	if (memcmp(foot, FOOTER_MAGIC, sizeof FOOTER_MAGIC - 1) != 0) return -EBADMSG;
	uint64_t n = 0;
	for (size_t i = sizeof FOOTER_MAGIC - 1; i < FOOTER_LEN - 1; i++) {
		if (foot[i] < '0' || foot[i] > '9') return -EBADMSG;
		n = n * 10 + (uint64_t)(foot[i] - '0');
	}
	if (foot[FOOTER_LEN - 1] != '\n' || n > (1 << 24) || n > size - FOOTER_LEN) return -EBADMSG;
	char *p = malloc((size_t)n + 1);
	if (!p) return -ENOMEM;
	if ((rc = pread_all(fd, p, (size_t)n, (off_t)(size - FOOTER_LEN - n))) != 0) {
		free(p);
		return rc;
	}
	p[n] = '\0';
	*out = p;
	*len = (size_t)n;
	return 0;
}

int queue_read_entry(int qdirfd, const char *id, struct queue_entry *e)
{
	char name[QUEUE_ID_MAX + 16];
	memset(e, 0, sizeof *e);
	if (strlen(id) >= QUEUE_ID_MAX) return -ENOENT;
	name_of(name, sizeof name, id, ".msg");
	int fd = openat(qdirfd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -errno;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	uint64_t fsize = (uint64_t)st.st_size;
	char *text = NULL;
	size_t len = 0;
	name_of(name, sizeof name, id, ".env");
	int rc = read_file(qdirfd, name, &text, &len);
	bool trailer = rc == -ENOENT;
	if (trailer) rc = read_trailer(fd, fsize, &text, &len);
	close(fd);
	if (rc == -ENOMEM) return rc;
	if (rc == 0) rc = queue_parse(text, len, e);
	free(text);
	if (rc == -ENOMEM) return rc;
	if (rc == 0 && strcmp(e->id, id) != 0) {
		queue_entry_free(e);
		rc = -EBADMSG;
	}
	if (rc) {
		memset(e, 0, sizeof *e);
		snprintf(e->id, sizeof e->id, "%s", id);
		e->error = -EBADMSG;
		return 0;
	}
	/* The message is the file's first e->size octets: exactly the file
	 * before its trailer, or all of a version-1 file. */
	if (trailer ? e->size != fsize - FOOTER_LEN - len : e->size > fsize) e->error = -ENOENT;
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct queue_entry *x = a, *y = b;
	if (x->arrival != y->arrival) return x->arrival < y->arrival ? -1 : 1;
	return strcmp(x->id, y->id);
}

int queue_load(int qdirfd, struct queue_entry **out, unsigned *n)
{
	*out = NULL;
	*n = 0;
	DIR *d = dir_open(qdirfd, ".");
	if (!d) return -errno;
	struct queue_entry *v = NULL;
	unsigned cnt = 0, cap = 0;
	int rc = 0;
	bool removed = false;
	struct dirent *de;
	/* Pass 1: the entries, and the temporary files nobody acknowledged. */
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		size_t nlen = strlen(name);
		if (!strncmp(name, SPARE_PREFIX, sizeof SPARE_PREFIX - 1)) {
			removed |= unlinkat(qdirfd, name, 0) == 0;
			continue;
		}
		if (name[0] == '.') continue;
		if (ends_with(name, nlen, ".tmp")) {
			removed |= unlinkat(qdirfd, name, 0) == 0;
			continue;
		}
		if (!ends_with(name, nlen, ".msg") || nlen - 4 >= QUEUE_ID_MAX) continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 16;
			struct queue_entry *nv = realloc(v, cap * sizeof *v);
			if (!nv) {
				rc = -ENOMEM;
				break;
			}
			v = nv;
		}
		char id[QUEUE_ID_MAX];
		snprintf(id, sizeof id, "%.*s", (int)(nlen - 4), name);
		int r = queue_read_entry(qdirfd, id, &v[cnt]);
		if (r == -ENOMEM) {
			rc = r;
			break;
		}
		if (r == 0) cnt++;
	}
	/* Pass 2: state files whose message file is gone (a removal cut
	 * short: the message file goes first). */
	if (rc == 0) {
		rewinddir(d);
		while ((de = readdir(d)) != NULL) {
			const char *name = de->d_name;
			size_t nlen = strlen(name);
			if (name[0] == '.' || !ends_with(name, nlen, ".env")) continue;
			char msg[NAME_MAX + 1];
			snprintf(msg, sizeof msg, "%.*s.msg", (int)(nlen - 4), name);
			if (!exists(qdirfd, msg)) removed |= unlinkat(qdirfd, name, 0) == 0;
		}
	}
	closedir(d);
	if (rc) {
		queue_entries_free(v, cnt);
		return rc;
	}
	if (removed) fsync(qdirfd);
	if (cnt) qsort(v, cnt, sizeof *v, entry_cmp);
	*out = v;
	*n = cnt;
	return 0;
}

/* ------------------------------------------------------------------ */
/* policy helpers */

int64_t queue_next_try(const uint32_t *retry, unsigned nretry, uint32_t max_queue_time,
		       unsigned attempts, int64_t arrival, int64_t now)
{
	if (attempts == 0) return now;
	int64_t deadline = arrival + (int64_t)max_queue_time;
	if (now >= deadline) return QUEUE_EXPIRED;
	uint32_t interval = 300;
	if (nretry) interval = retry[attempts < nretry ? attempts - 1 : nretry - 1];
	int64_t next = now + (int64_t)interval;
	return next < deadline ? next : deadline;
}

const char *queue_addr_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at ? at + 1 : addr + strlen(addr);
}

/* Domains compare in ASCII case (RFC 5321 2.4), whatever the locale. */
static bool domain_eq(const char *a, const char *b)
{
	for (;; a++, b++) {
		unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
		if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
		if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
		if (x != y) return false;
		if (!x) return true;
	}
}

unsigned queue_group_by_domain(const struct queue_entry *e, unsigned *group)
{
	unsigned ngroups = 0;
	for (unsigned i = 0; i < e->nrcpt; i++) {
		group[i] = QUEUE_NO_GROUP;
		if (e->rcpt[i].state != QUEUE_PENDING) continue;
		const char *d = queue_addr_domain(e->rcpt[i].addr);
		for (unsigned j = 0; j < i; j++) {
			if (group[j] != QUEUE_NO_GROUP &&
			    domain_eq(queue_addr_domain(e->rcpt[j].addr), d)) {
				group[i] = group[j];
				break;
			}
		}
		if (group[i] == QUEUE_NO_GROUP) group[i] = ngroups++;
	}
	return ngroups;
}
