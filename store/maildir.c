#include "store/maildir.h"
#include "store/dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char host_part[128] = "localhost";
static _Atomic uint64_t delivery_seq;

void maildir_init_names(void)
{
	char h[HOST_NAME_MAX + 1];
	if (gethostname(h, sizeof h) != 0 || !h[0])
		return;
	h[sizeof h - 1] = '\0';
	/* The convention: '/' -> "\057", ':' -> "\072" so the name stays one
	 * path component and ':' keeps its meaning (the info separator). */
	size_t o = 0;
	for (const char *p = h; *p && o + 5 < sizeof host_part; p++) {
		if (*p == '/' || *p == ':') {
			o += (size_t)snprintf(host_part + o, sizeof host_part - o, "\\%03o",
					      (unsigned char)*p);
		} else {
			host_part[o++] = *p;
		}
	}
	host_part[o] = '\0';
}

size_t maildir_unique(char *buf, size_t cap, const struct timespec *now)
{
	uint64_t q = atomic_fetch_add_explicit(&delivery_seq, 1, memory_order_relaxed);
	int n = snprintf(buf, cap, "%lld.M%06ldP%dQ%llu.%s", (long long)now->tv_sec,
			 now->tv_nsec / 1000, (int)getpid(), (unsigned long long)q, host_part);
	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

size_t maildir_final_name(char *buf, size_t cap, const char *base, uint64_t size, bool plain)
{
	/* SPEC 6: the name ends in ",S=SIZE"; other fields go before it. */
	int n = snprintf(buf, cap, "%s%s,S=%llu", base, plain ? ",D=0" : "",
			 (unsigned long long)size);
	return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

bool maildir_name_plain(const char *base, size_t blen)
{
	/* Maildir++ fields follow the first ','; each is ",KEY=VALUE". */
	const char *p = memchr(base, ',', blen);
	const char *end = base + blen;
	while (p && p < end) {
		const char *f = p + 1;
		const char *fe = memchr(f, ',', (size_t)(end - f));
		if (!fe)
			fe = end;
		if (fe - f == 3 && memcmp(f, "D=0", 3) == 0)
			return true;
		p = fe;
	}
	return false;
}

static int mkdir_0700(int dfd, const char *name)
{
	if (mkdirat(dfd, name, 0700) != 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* mkdir -p for the maildrop path itself. */
static int mkdir_parents(const char *path)
{
	char *p = strdup(path);
	if (!p)
		return -ENOMEM;
	int rc = 0;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0755) != 0 && errno != EEXIST) {
			rc = -errno;
			break;
		}
		*s = '/';
	}
	if (rc == 0 && mkdir(p, 0700) != 0 && errno != EEXIST)
		rc = -errno;
	free(p);
	return rc;
}

int maildir_open(const char *path, struct maildir *md)
{
	memset(md, 0, sizeof *md);
	md->dirfd = md->tmpfd = md->newfd = md->curfd = -1;
	int rc = mkdir_parents(path);
	if (rc)
		return rc;
	md->dirfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (md->dirfd < 0)
		return -errno;
	static const char *const sub[] = {"tmp", "new", "cur"};
	int *fds[] = {&md->tmpfd, &md->newfd, &md->curfd};
	for (int i = 0; i < 3; i++) {
		if ((rc = mkdir_0700(md->dirfd, sub[i])) != 0)
			goto fail;
		*fds[i] = openat(md->dirfd, sub[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (*fds[i] < 0) {
			rc = -errno;
			goto fail;
		}
	}
	/* The new subdirectories must survive a crash before anything is
	 * acknowledged into them. */
	fsync(md->dirfd);
	md->path = strdup(path);
	if (!md->path) {
		rc = -ENOMEM;
		goto fail;
	}
	return 0;
fail:
	maildir_close(md);
	return rc;
}

void maildir_close(struct maildir *md)
{
	int *fds[] = {&md->dirfd, &md->tmpfd, &md->newfd, &md->curfd};
	for (int i = 0; i < 4; i++)
		if (*fds[i] >= 0) {
			close(*fds[i]);
			*fds[i] = -1;
		}
	free(md->path);
	md->path = NULL;
}

int maildir_clean_tmp(struct maildir *md, time_t now, time_t max_age)
{
	DIR *d = dir_open(md->tmpfd, ".");
	if (!d)
		return -errno;
	int removed = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		struct stat st;
		if (fstatat(md->tmpfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
			continue;
		if (!S_ISREG(st.st_mode) || now - st.st_mtime <= max_age)
			continue;
		if (unlinkat(md->tmpfd, e->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}
