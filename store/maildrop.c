/*
 * maildrop: the POP3 view of a Maildir (SPEC 6 and 7). See maildrop.h.
 *
 * Names. A Maildir file name is "<base>[:2,<flags>]"; the base never
 * changes once the message is in new/ (a reader that moves it to cur/ only
 * appends the info part). Our own bases look like
 * "SEC.M<usec>P<pid>Q<n>.<host>,S=<size>" (store/maildir.c); Dovecot adds
 * more comma fields (",W=<vsize>"). Everything here keys on the base: the
 * order, the size and the UID, so that a message keeps its place and its
 * UID when some other Maildir reader moves it from new/ to cur/.
 *
 * All of this blocks and runs on a pool thread (maildrop.h).
 */
#include "store/maildrop.h"
#include "store/dir.h"
#include "store/maildir.h"

#include <dirent.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/maildir.h"

/* "new/" or "cur/", a name of at most MAILDIR_NAME_MAX, the NUL. */
#define MAILDROP_PATH_MAX (4 + MAILDIR_NAME_MAX + 1)

/* ---- locking ------------------------------------------------------------ */

int maildrop_lock(int mdfd)
{
	/* O_RDWR: a write lock needs a descriptor open for writing.
	 * O_NOFOLLOW: the lock file is ours; never follow a planted link. */
	int fd = openat(mdfd, MAILDROP_LOCKFILE, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) return -errno;
	/* OFD locks (not POSIX F_SETLK): owned by this open file description,
	 * so a second open in the same process conflicts too, and closing some
	 * unrelated descriptor of the file never drops the lock. l_pid must be
	 * 0 for the OFD commands. */
	struct flock fl = {
	    .l_type = F_WRLCK,
	    .l_whence = SEEK_SET,
	    .l_start = 0,
	    .l_len = 0, /* the whole file, however long */
	    .l_pid = 0,
	};
	if (fcntl(fd, F_OFD_SETLK, &fl) != 0) {
		int err = errno;
		close(fd);
		/* fcntl(2): a conflicting lock is reported as EAGAIN or EACCES. */
		return err == EAGAIN || err == EACCES ? -EAGAIN : -err;
	}
	return fd;
}

void maildrop_unlock(int lockfd)
{
	if (lockfd >= 0) close(lockfd);
}

/* ---- names -------------------------------------------------------------- */

/* Length of the base name: everything before the first ":2," (the Maildir
 * info separator). */
static size_t base_len(const char *name, size_t len)
{
	for (size_t i = 0; i + 2 < len; i++)
		if (name[i] == ':' && name[i + 1] == '2' && name[i + 2] == ',') return i;
	return len;
}

/* The leading decimal seconds; names without them sort last (UINT64_MAX),
 * as do absurdly long numbers (saturated). */
static uint64_t name_seconds(const char *name, size_t len)
{
	if (len == 0 || name[0] < '0' || name[0] > '9') return UINT64_MAX;
	uint64_t v = 0;
	for (size_t i = 0; i < len && name[i] >= '0' && name[i] <= '9'; i++) {
		unsigned d = (unsigned)(name[i] - '0');
		if (v > (UINT64_MAX - d) / 10) return UINT64_MAX;
		v = v * 10 + d;
	}
	return v;
}

/* Maildir++: the base is "<unique>,<field>,<field>..."; the fields start at
 * the first ','. 1 and *size when one is "S=<digits>", else 0. */
static int name_size(const char *base, size_t blen, uint64_t *size)
{
	const char *p = memchr(base, ',', blen);
	const char *end = base + blen;
	while (p && p < end) {
		p++; /* past the ',' */
		const char *f = p;
		const char *fe = memchr(f, ',', (size_t)(end - f));
		if (!fe) fe = end;
		if (fe - f >= 3 && f[0] == 'S' && f[1] == '=') {
			uint64_t v = 0;
			const char *q = f + 2;
			for (; q < fe && *q >= '0' && *q <= '9'; q++) {
				unsigned d = (unsigned)(*q - '0');
				if (v > (UINT64_MAX - d) / 10) break;
				v = v * 10 + d;
			}
			if (q == fe) {
				*size = v;
				return 1;
			}
		}
		p = fe;
	}
	return 0;
}

/* ---- UIDs --------------------------------------------------------------- */

/*
 * The hashed UID: 'h' and the 32 lower-case hex digits of the 128-bit
 * FNV-1a of the bytes (offset basis 0x6c62272e07bb014262b821756295c58d,
 * prime 2^88 + 0x13b, from the FNV reference). Fixed constants, no seed: the
 * same name gives the same UID in every run and on every host.
 */
static void uid_hash(const char *s, size_t n, char out[POP3_UID_MAX + 1])
{
	typedef unsigned __int128 u128;
	const u128 prime = ((u128)1 << 88) + 0x13b;
	u128 h = ((u128)0x6c62272e07bb0142ULL << 64) | 0x62b821756295c58dULL;
	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)s[i];
		h *= prime;
	}
	static const char hex[] = "0123456789abcdef";
	out[0] = 'h';
	for (int i = 0; i < 32; i++)
		out[1 + i] = hex[(unsigned)(h >> (124 - 4 * i)) & 0xf];
	out[33] = '\0';
}

void maildrop_uid(const char *name, size_t n, char out[POP3_UID_MAX + 1])
{
	/* RFC 1939 7: a unique-id is 1 to 70 characters in 0x21..0x7E. */
	int ok = n >= 1 && n <= POP3_UID_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = (unsigned char)name[i] >= 0x21 && (unsigned char)name[i] <= 0x7e;
	if (ok) {
		memcpy(out, name, n);
		out[n] = '\0';
		return;
	}
	uid_hash(name, n, out);
}

static uint64_t fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

/*
 * Makes the UIDs of a snapshot unique, in listing order: the first holder
 * of a UID keeps it, a later one (the same base in new/ and cur/, or the
 * astronomically unlikely hash collision) gets the hash of its path and a
 * counter, the first counter value not taken. The listing order is
 * deterministic, so the outcome is too.
 */
static int uids_unique(struct maildrop_snap *snap)
{
	if (snap->n < 2) return 0;
	size_t cap = 4;
	while (cap < (size_t)snap->n * 2)
		cap <<= 1;
	unsigned *tab = malloc(cap * sizeof *tab); /* index + 1; 0 = empty */
	if (!tab) return -ENOMEM;
	memset(tab, 0, cap * sizeof *tab);
	for (unsigned i = 0; i < snap->n; i++) {
		char *uid = snap->msgs[i].uid;
		for (unsigned attempt = 0;; attempt++) {
			size_t h = (size_t)fnv1a64(uid) & (cap - 1);
			while (tab[h] && strcmp(snap->msgs[tab[h] - 1].uid, uid) != 0)
				h = (h + 1) & (cap - 1);
			if (!tab[h]) {
				tab[h] = i + 1;
				break;
			}
			char buf[MAILDROP_PATH_MAX + 16];
			int len = snprintf(buf, sizeof buf, "%s#%u", snap->paths[i], attempt);
			if (len < 0) len = 0;
			uid_hash(buf, (size_t)len < sizeof buf ? (size_t)len : sizeof buf - 1, uid);
		}
	}
	free(tab);
	return 0;
}

/* ---- snapshot ----------------------------------------------------------- */

struct ent {
	uint64_t sec;
	uint64_t size;
	const char *name; /* into the scan buffer, NUL-terminated */
	size_t off;	  /* of name in the scan buffer (it moves while growing) */
	uint16_t len;
	uint16_t blen; /* base_len */
	uint8_t sub;   /* 0 new/, 1 cur/ */
};

struct scan {
	struct ent *ents;
	size_t n, cap;
	char *buf; /* the names, NUL-separated */
	size_t used, bufcap;
};

static const char *const subdir[2] = {"new", "cur"};

static int scan_add(struct scan *sc, const char *name, size_t len, uint8_t sub, uint64_t size)
{
	if (sc->n == sc->cap) {
		size_t nc = sc->cap ? sc->cap * 2 : 256;
		struct ent *e = realloc(sc->ents, nc * sizeof *e);
		if (!e) return -ENOMEM;
		sc->ents = e;
		sc->cap = nc;
	}
	if (sc->used + len + 1 > sc->bufcap) {
		size_t nc = sc->bufcap ? sc->bufcap * 2 : 16384;
		while (nc < sc->used + len + 1)
			nc *= 2;
		char *b = realloc(sc->buf, nc);
		if (!b) return -ENOMEM;
		sc->buf = b;
		sc->bufcap = nc;
	}
	struct ent *e = &sc->ents[sc->n++];
	memcpy(sc->buf + sc->used, name, len + 1);
	e->off = sc->used;
	e->name = NULL;
	e->len = (uint16_t)len;
	e->blen = (uint16_t)base_len(name, len);
	e->sec = name_seconds(name, len);
	e->size = size;
	e->sub = sub;
	sc->used += len + 1;
	return 0;
}

static int scan_dir(int mdfd, uint8_t sub, struct scan *sc)
{
	DIR *d = dir_open(mdfd, subdir[sub]);
	if (!d) /* A Maildir some other tool made may lack one of them: empty. */
		return errno == ENOENT ? 0 : -errno;
	int dfd = dirfd(d);
	int rc = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			rc = errno ? -errno : 0;
			break;
		}
		const char *name = de->d_name;
		if (name[0] == '.') continue;
		size_t len = strlen(name);
		if (len > MAILDIR_NAME_MAX) continue; /* cannot be, NAME_MAX is 255 */
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN) continue;
		uint64_t size = 0;
		int have = name_size(name, base_len(name, len), &size);
		if (!have || de->d_type == DT_UNKNOWN) {
			/* Only for names without S= and file systems that give
			 * no d_type. Not following links: only regular files. */
			struct stat st;
			if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
				if (errno == ENOENT) continue; /* gone since readdir */
				rc = -errno;
				break;
			}
			if (!S_ISREG(st.st_mode)) continue;
			if (!have) size = (uint64_t)st.st_size;
		}
		if ((rc = scan_add(sc, name, len, sub, size)) != 0) break;
	}
	closedir(d);
	return rc;
}

/* Compares two base names with runs of digits taken as numbers, so that
 * "M99" sorts before "M100000" (microseconds, Q counters and pids are not
 * zero-padded by every delivery agent). */
static int natcmp(const char *a, size_t an, const char *b, size_t bn)
{
	size_t i = 0, j = 0;
	while (i < an && j < bn) {
		if (isdigit((unsigned char)a[i]) && isdigit((unsigned char)b[j])) {
			while (i < an && a[i] == '0') i++;
			while (j < bn && b[j] == '0') j++;
			size_t si = i, sj = j;
			while (i < an && isdigit((unsigned char)a[i])) i++;
			while (j < bn && isdigit((unsigned char)b[j])) j++;
			if (i - si != j - sj) return i - si < j - sj ? -1 : 1;
			int c = memcmp(a + si, b + sj, i - si);
			if (c) return c;
			continue;
		}
		if (a[i] != b[j]) return (unsigned char)a[i] < (unsigned char)b[j] ? -1 : 1;
		i++;
		j++;
	}
	if (i < an) return 1;
	if (j < bn) return -1;
	return 0;
}

/* Oldest first: the leading seconds, then the base name compared
 * numerically (so a message keeps its place when moved to cur/), then the
 * whole name, then new/ before cur/. A total order: the listing is the same
 * for the same files. */
static int ent_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;
	if (x->sec != y->sec) return x->sec < y->sec ? -1 : 1;
	int c = natcmp(x->name, x->blen, y->name, y->blen);
	if (c) return c;
	if (x->blen != y->blen) return x->blen < y->blen ? -1 : 1;
	if ((c = strcmp(x->name, y->name)) != 0) return c;
	return (int)x->sub - (int)y->sub;
}

int maildrop_snapshot(int mdfd, struct maildrop_snap *snap)
{
	memset(snap, 0, sizeof *snap);
	struct scan sc = {0};
	int rc = scan_dir(mdfd, 0, &sc);
	if (rc == 0) rc = scan_dir(mdfd, 1, &sc);
	if (rc == 0 && sc.n > UINT32_MAX) rc = -EOVERFLOW;
	if (rc) goto out;
	size_t strbytes = 0;
	for (size_t i = 0; i < sc.n; i++) {
		sc.ents[i].name = sc.buf + sc.ents[i].off;
		strbytes += 4 + sc.ents[i].len + 1; /* "new/" NAME NUL */
	}
	if (sc.n > 1) qsort(sc.ents, sc.n, sizeof *sc.ents, ent_cmp);

	/* msgs: one array; paths: one block, the pointers then the strings,
	 * so maildrop_snap_free is two free() calls whatever n is. */
	snap->msgs = calloc(sc.n ? sc.n : 1, sizeof *snap->msgs);
	snap->paths = malloc(sc.n * sizeof(char *) + strbytes + 1);
	if (!snap->msgs || !snap->paths) {
		rc = -ENOMEM;
		goto out;
	}
	char *s = (char *)(snap->paths + sc.n);
	for (size_t i = 0; i < sc.n; i++) {
		const struct ent *e = &sc.ents[i];
		snap->paths[i] = s;
		memcpy(s, subdir[e->sub], 3);
		s[3] = '/';
		memcpy(s + 4, e->name, (size_t)e->len + 1);
		s += 4 + e->len + 1;
		snap->msgs[i].size = e->size;
		snap->msgs[i].plain = maildir_name_plain(e->name, e->blen);
		snap->msgs[i].deleted = false;
		maildrop_uid(e->name, e->blen, snap->msgs[i].uid);
	}
	snap->n = (unsigned)sc.n;
	rc = uids_unique(snap);
out:
	if (rc) maildrop_snap_free(snap);
	free(sc.ents);
	free(sc.buf);
	return rc;
}

void maildrop_snap_free(struct maildrop_snap *snap)
{
	free(snap->msgs);
	free(snap->paths);
	memset(snap, 0, sizeof *snap);
}

/* ---- open and remove ---------------------------------------------------- */

/*
 * Another Maildir reader (Dovecot, mutt) ignores our lock and may move a
 * message from new/ to cur/ (appending ":2,<flags>") or change its flags in
 * cur/ while a POP3 session holds it. The base name stays, so when the
 * snapshot's path is gone we look in cur/ for "<base>" or "<base>:...".
 * Best effort: one scan of cur/; the name found goes into found
 * (MAILDROP_PATH_MAX bytes). 1 found, 0 not, -errno.
 */
static int find_moved(int mdfd, const char *path, char *found)
{
	const char *name = path + 4;
	size_t blen = base_len(name, strlen(name));
	DIR *d = dir_open(mdfd, "cur");
	if (!d) return errno == ENOENT ? 0 : -errno;
	int rc = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *n = de->d_name;
		if (strncmp(n, name, blen) != 0 || (n[blen] != ':' && n[blen] != '\0')) continue;
		if (strcmp(n, name) == 0 && path[0] == 'c')
			continue; /* the very name that just failed */
		snprintf(found, MAILDROP_PATH_MAX, "cur/%s", n);
		rc = 1;
		break;
	}
	closedir(d);
	return rc;
}

int maildrop_open(int mdfd, const struct maildrop_snap *snap, unsigned i)
{
	if (i >= snap->n) return -EINVAL;
	/* O_NOFOLLOW: the snapshot holds regular files only; a link planted
	 * since then is not followed (ELOOP). */
	int fd = openat(mdfd, snap->paths[i], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd >= 0) return fd;
	if (errno != ENOENT) return -errno;
	char moved[MAILDROP_PATH_MAX];
	int rc = find_moved(mdfd, snap->paths[i], moved);
	if (rc <= 0) return rc < 0 ? rc : -ENOENT;
	fd = openat(mdfd, moved, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	return fd >= 0 ? fd : -errno;
}

static int fsync_dir(int mdfd, const char *name)
{
	int fd = openat(mdfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) return -errno;
	int rc = fsync(fd) != 0 ? -errno : 0;
	close(fd);
	return rc;
}

struct missing {
	const char *name; /* the snapshot's, after "new/" or "cur/" */
	size_t blen;
	int done;
};

static int missing_cmp(const void *a, const void *b)
{
	const struct missing *x = a, *y = b;
	size_t m = x->blen < y->blen ? x->blen : y->blen;
	int c = memcmp(x->name, y->name, m);
	if (c) return c;
	return x->blen < y->blen ? -1 : x->blen > y->blen;
}

/* The deleted messages whose path was gone: one scan of cur/ for their
 * base names (see find_moved), however many they are. */
static int remove_moved(int mdfd, struct missing *ms, size_t n)
{
	qsort(ms, n, sizeof *ms, missing_cmp);
	DIR *d = dir_open(mdfd, "cur");
	if (!d) return errno == ENOENT ? 0 : -errno;
	int dfd = dirfd(d);
	int first = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL) {
		const char *name = de->d_name;
		if (name[0] == '.') continue;
		struct missing key = {name, base_len(name, strlen(name)), 0};
		struct missing *m = bsearch(&key, ms, n, sizeof *ms, missing_cmp);
		if (!m || m->done || strcmp(m->name, name) == 0)
			continue; /* (the very name that already failed) */
		m->done = 1;
		if (unlinkat(dfd, name, 0) != 0 && errno != ENOENT && !first) first = -errno;
	}
	closedir(d);
	return first;
}

int maildrop_remove(int mdfd, const struct maildrop_snap *snap, int nosync)
{
	return maildrop_remove_range(mdfd, snap, 0, snap->n, nosync);
}

int maildrop_sync(int mdfd)
{
	int first = 0;
	for (int s = 0; s < 2; s++) {
		int rc = fsync_dir(mdfd, subdir[s]);
		if (rc && !first) first = rc;
	}
	return first;
}

int maildrop_remove_range(int mdfd, const struct maildrop_snap *snap, unsigned lo, unsigned hi,
			  int nosync)
{
	int first = 0;
	int touched = 0; /* bit 0 new/, bit 1 cur/ */
	struct missing *ms = NULL;
	size_t nms = 0, cap = 0;
	if (hi > snap->n) hi = snap->n;
	for (unsigned i = lo; i < hi; i++) {
		if (!snap->msgs[i].deleted) continue;
		const char *path = snap->paths[i];
		touched |= path[0] == 'n' ? 1 : 2;
		if (unlinkat(mdfd, path, 0) == 0) continue;
		if (errno != ENOENT) {
			if (!first) first = -errno;
			continue;
		}
		/* Gone: maybe moved by another reader (see find_moved); a
		 * message gone altogether counts as removed. */
		if (nms == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct missing *m = realloc(ms, nc * sizeof *m);
			if (!m) {
				if (!first) first = -ENOMEM;
				continue;
			}
			ms = m;
			cap = nc;
		}
		const char *name = path + 4;
		ms[nms++] = (struct missing){name, base_len(name, strlen(name)), 0};
	}
	if (nms) {
		touched |= 2;
		int rc = remove_moved(mdfd, ms, nms);
		if (rc && !first) first = rc;
	}
	free(ms);
	if (nosync) return first;
	for (int s = 0; s < 2; s++) {
		if (!(touched & (1 << s))) continue;
		int rc = fsync_dir(mdfd, subdir[s]);
		if (rc && !first) first = rc;
	}
	return first;
}
