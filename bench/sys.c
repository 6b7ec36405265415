/*
 * What the bench looks at outside its sockets: the memory of the server
 * under test (Pss summed over a process tree, because Postfix and Dovecot
 * are many processes sharing pages, and Pss charges each its share) and
 * the Maildir an SMTP run delivered into.
 */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench/bench.h"

static int read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) return -1;
	size_t got = 0;
	for (;;) {
		ssize_t n = read(fd, buf + got, cap - 1 - got);
		if (n <= 0) break;
		got += (size_t)n;
		if (got == cap - 1) break;
	}
	close(fd);
	buf[got] = 0;
	return (int)got;
}

static uint64_t field_kb(const char *text, const char *key)
{
	const char *p = strstr(text, key);
	if (!p) return 0;
	return strtoull(p + strlen(key), NULL, 10) * 1024;
}

struct proc {
	int pid, ppid;
};

/* Every process whose ancestry reaches one of the roots. */
int mem_measure(const char *pids, struct mem_sample *out)
{
	memset(out, 0, sizeof *out);
	int roots[64], nroots = 0;
	for (const char *p = pids; p && *p && nroots < 64;) {
		roots[nroots++] = atoi(p);
		const char *comma = strchr(p, ',');
		p = comma ? comma + 1 : NULL;
	}
	if (!nroots) return -1;
	size_t cap = 4096, n = 0;
	struct proc *ps = malloc(cap * sizeof *ps);
	DIR *d = opendir("/proc");
	if (!d || !ps) {
		free(ps);
		return -1;
	}
	struct dirent *e;
	char path[300], buf[8192];
	while ((e = readdir(d))) {
		if (!isdigit((unsigned char)e->d_name[0])) continue;
		snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
		if (read_file(path, buf, sizeof buf) <= 0) continue;
		char *rp = strrchr(buf, ')');
		int ppid;
		char st;
		if (!rp || sscanf(rp + 1, " %c %d", &st, &ppid) != 2) continue;
		if (n == cap) {
			cap *= 2;
			ps = realloc(ps, cap * sizeof *ps);
			if (!ps) abort();
		}
		ps[n].pid = atoi(e->d_name);
		ps[n].ppid = ppid;
		n++;
	}
	closedir(d);
	/* Mark the trees: iterate until no new member (process lists are short). */
	char *in = calloc(n ? n : 1, 1);
	bool grew = true;
	while (grew) {
		grew = false;
		for (size_t i = 0; i < n; i++) {
			if (in[i]) continue;
			bool member = false;
			for (int r = 0; r < nroots; r++)
				if (ps[i].pid == roots[r]) member = true;
			for (size_t j = 0; !member && j < n; j++)
				if (in[j] && ps[j].pid == ps[i].ppid) member = true;
			if (member) {
				in[i] = 1;
				grew = true;
			}
		}
	}
	static char big[65536];
	for (size_t i = 0; i < n; i++) {
		if (!in[i]) continue;
		snprintf(path, sizeof path, "/proc/%d/smaps_rollup", ps[i].pid);
		if (read_file(path, big, sizeof big) > 0) {
			out->pss += field_kb(big, "\nPss:");
			out->rss += field_kb(big, "Rss:");
		}
		out->nproc++;
		if (ps[i].pid == roots[0]) {
			snprintf(path, sizeof path, "/proc/%d/status", ps[i].pid);
			if (read_file(path, big, sizeof big) > 0)
				out->hwm = field_kb(big, "VmHWM:");
		}
	}
	free(in);
	free(ps);
	return out->nproc ? 0 : -1;
}

/* ---- Maildir verification ------------------------------------------------ */

static long count_dir(const char *dir, const char *sub)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, sub);
	DIR *d = opendir(path);
	if (!d) return 0;
	long n = 0;
	struct dirent *e;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.') n++;
	closedir(d);
	return n;
}

static void scan_dir(const char *dir, const char *sub, const char *needle, long expected,
		     uint16_t *seen, struct verify_result *vr)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", dir, sub);
	DIR *d = opendir(path);
	if (!d) return;
	struct dirent *e;
	static char buf[65536];
	size_t nlen = strlen(needle);
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.') continue;
		char fp[8192];
		snprintf(fp, sizeof fp, "%s/%s", path, e->d_name);
		int got = read_file(fp, buf, sizeof buf);
		vr->files++;
		char *p = got > 0 ? memmem(buf, (size_t)got, needle, nlen) : NULL;
		if (!p) {
			vr->foreign++;
			continue;
		}
		long seq = strtol(p + nlen, NULL, 10);
		if (seq < 0 || seq >= expected) {
			vr->foreign++;
			continue;
		}
		if (seen[seq] < 65535) seen[seq]++;
	}
	closedir(d);
}

int verify_maildir(const char *dir, const char *run_id, long expected, int copies, double wait_s,
		   struct verify_result *out)
{
	memset(out, 0, sizeof *out);
	uint64_t t0 = now_ns();
	long want = expected * copies;
	/* Postfix delivers after it has said 250: wait for the count. */
	for (;;) {
		long have = count_dir(dir, "new") + count_dir(dir, "cur");
		out->waited_s = (double)(now_ns() - t0) / 1e9;
		if (have >= want || out->waited_s >= wait_s) break;
		struct timespec ts = {0, 2000000};
		nanosleep(&ts, NULL);
	}
	char needle[128];
	snprintf(needle, sizeof needle, "X-Bench-Token: %s-", run_id);
	uint16_t *seen = calloc((size_t)(expected ? expected : 1), sizeof *seen);
	if (!seen) return -1;
	scan_dir(dir, "new", needle, expected, seen, out);
	scan_dir(dir, "cur", needle, expected, seen, out);
	for (long i = 0; i < expected; i++) {
		if (seen[i] == copies)
			out->tokens_ok++;
		else if (seen[i] < copies)
			out->missing++;
		else
			out->duplicates++;
	}
	free(seen);
	return 0;
}
