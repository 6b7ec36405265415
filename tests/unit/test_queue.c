/* Unit tests for store/queue.c: the durable relay queue, in a fresh
 * temporary directory per test. */
#include "store/queue.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/smtp.h"

static char dir[256];
static int qfd = -1;

static void rm_rf(const char *path)
{
	DIR *d = opendir(path);
	if (!d) return;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		char p[512];
		snprintf(p, sizeof p, "%s/%s", path, e->d_name);
		struct stat st;
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
			rm_rf(p);
		else
			unlink(p);
	}
	closedir(d);
	rmdir(path);
}

static void setup(void)
{
	snprintf(dir, sizeof dir, "/tmp/mpb-queue-XXXXXX");
	cr_assert(mkdtemp(dir));
	qfd = queue_dir_open(dir);
	cr_assert_geq(qfd, 0);
}

static void teardown(void)
{
	if (qfd >= 0) close(qfd);
	rm_rf(dir);
}

TestSuite(queue, .init = setup, .fini = teardown);

/* Names in the queue directory, sorted, joined by spaces. */
static const char *listing(void)
{
	static char out[64 * 257];
	char names[64][256];
	int n = 0;
	DIR *d = opendir(dir);
	cr_assert(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL && n < 64)
		if (e->d_name[0] != '.') snprintf(names[n++], sizeof names[0], "%s", e->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof names[0], (int (*)(const void *, const void *))strcmp);
	out[0] = '\0';
	for (int i = 0; i < n; i++) {
		strcat(out, i ? " " : "");
		strcat(out, names[i]);
	}
	return out;
}

static void put_file(const char *name, const char *text, size_t n)
{
	int fd = openat(qfd, name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	cr_assert_geq(fd, 0);
	cr_assert_eq(write(fd, text, n), (ssize_t)n);
	close(fd);
}

static char *get_file(const char *name, size_t *len)
{
	int fd = openat(qfd, name, O_RDONLY);
	cr_assert_geq(fd, 0, "%s: %s", name, strerror(errno));
	static char buf[1 << 16];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	cr_assert_geq(n, 0);
	buf[n] = '\0';
	*len = (size_t)n;
	return buf;
}

/* A sample entry with everything that must survive a round trip. */
static void sample(struct queue_entry *e)
{
	memset(e, 0, sizeof *e);
	cr_assert_eq(queue_strset(&e->from, "alice@example.com"), 0);
	cr_assert_eq(queue_strset(&e->envid, "env id%1"), 0);
	cr_assert_eq(queue_strset(&e->auth_domain, "example.com"), 0);
	e->ret = SMTP_RET_HDRS;
	e->body = SMTP_BODY_8BITMIME;
	e->smtputf8 = true;
	e->arrival = 1700000000;
	e->next_try = 1700000060;
	cr_assert_eq(queue_add_rcpt(e, "bob@Remote.Test", "rfc822;bob@remote.test",
				    SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE),
		     0);
	cr_assert_eq(queue_add_rcpt(e, "\"we ird%\\\x01\"@remote.test", NULL, 0), 0);
	cr_assert_eq(queue_add_rcpt(e, "j\xc3\xb6rg@other.test", NULL, SMTP_NOTIFY_NEVER), 0);
}

static void same_entry(const struct queue_entry *a, const struct queue_entry *b)
{
	cr_assert_str_eq(a->id, b->id);
	cr_assert_str_eq(a->from, b->from);
	cr_assert_str_eq(a->envid ? a->envid : "(null)", b->envid ? b->envid : "(null)");
	cr_assert_str_eq(a->auth_domain ? a->auth_domain : "(null)",
			 b->auth_domain ? b->auth_domain : "(null)");
	cr_assert_eq(a->ret, b->ret);
	cr_assert_eq(a->body, b->body);
	cr_assert_eq(a->smtputf8, b->smtputf8);
	cr_assert_eq(a->arrival, b->arrival);
	cr_assert_eq(a->next_try, b->next_try);
	cr_assert_eq(a->size, b->size);
	cr_assert_eq(a->nrcpt, b->nrcpt);
	for (unsigned i = 0; i < a->nrcpt; i++) {
		const struct queue_rcpt *x = &a->rcpt[i], *y = &b->rcpt[i];
		cr_assert_str_eq(x->addr, y->addr);
#define S(f) cr_assert_str_eq(x->f ? x->f : "(null)", y->f ? y->f : "(null)", "rcpt %u " #f, i)
		S(orcpt);
		S(status);
		S(remote);
		S(reply);
#undef S
		cr_assert_eq(x->notify, y->notify);
		cr_assert_eq(x->state, y->state);
		cr_assert_eq(x->attempts, y->attempts);
		cr_assert_eq(x->flags, y->flags);
		cr_assert_eq(x->last_try, y->last_try);
	}
}

/* queue_load() finds exactly E, whole. */
static void load_expect_one(const struct queue_entry *e)
{
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].error, 0);
	same_entry(e, &v[0]);
	queue_entries_free(v, n);
}

static const char MSG[] = "Subject: hi\r\n\r\nbody\r\n.line\r\n";

/* ------------------------------------------------------------------ */

Test(queue, create_and_load_round_trip)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	cr_assert_eq(e.size, sizeof MSG - 1);
	cr_assert(strncmp(e.id, "1700000000.", 11) == 0, "%s", e.id);
	char want[512];
	snprintf(want, sizeof want, "%s.msg", e.id);
	cr_assert_str_eq(listing(), want, "one file per entry");
	/* the message, the state as accepted, padding up to a whole block,
	 * then the footer, which counts state and padding */
	size_t len, tlen;
	char name[128];
	snprintf(name, sizeof name, "%s.msg", e.id);
	const char *m = get_file(name, &len);
	char *t = queue_format(&e, &tlen);
	cr_assert_eq(len, 4096, "padded to one block: %zu", len);
	size_t state = len - 36 - (sizeof MSG - 1);
	char foot[64];
	snprintf(foot, sizeof foot, "mailpopbox-env %020zu\n", state);
	cr_assert_eq(strlen(foot), 36);
	cr_assert(!memcmp(m, MSG, sizeof MSG - 1));
	cr_assert(!memcmp(m + sizeof MSG - 1, t, tlen), "trailer:\n%s", m + sizeof MSG - 1);
	for (size_t i = sizeof MSG - 1 + tlen; i < len - 37; i++)
		cr_assert_eq(m[i], ' ', "padding at %zu", i);
	cr_assert_eq(m[len - 37], '\n');
	cr_assert(!memcmp(m + len - 36, foot, 36));
	free(t);

	load_expect_one(&e);

	int fd = queue_open_msg(qfd, e.id);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(queue_open_msg(qfd, "nope"), -ENOENT);
	queue_entry_free(&e);
}

Test(queue, state_file_text)
{
	struct queue_entry e;
	sample(&e);
	snprintf(e.id, sizeof e.id, "ID1");
	e.size = 42;
	e.rcpt[0].state = QUEUE_DONE;
	e.rcpt[0].attempts = 1;
	e.rcpt[0].last_try = 1700000030;
	e.rcpt[0].flags = QUEUE_F_RELAYED;
	queue_strset(&e.rcpt[0].status, "2.0.0");
	queue_strset(&e.rcpt[0].remote, "mx.remote.test");
	queue_strset(&e.rcpt[0].reply, "250 2.0.0 Ok: queued as X");
	size_t len;
	char *t = queue_format(&e, &len);
	cr_assert_str_eq(t, "mailpopbox-queue 1\n"
			    "id ID1\n"
			    "arrival 1700000000\n"
			    "next 1700000060\n"
			    "size 42\n"
			    "from alice@example.com\n"
			    "envid env%20id%251\n"
			    "ret hdrs\n"
			    "body 8bitmime\n"
			    "smtputf8 1\n"
			    "auth example.com\n"
			    "rcpts 3\n"
			    "rcpt bob@Remote.Test\n"
			    "orcpt rfc822;bob@remote.test\n"
			    "notify 6\n"
			    "state done\n"
			    "attempts 1\n"
			    "flags 2\n"
			    "last 1700000030\n"
			    "status 2.0.0\n"
			    "remote mx.remote.test\n"
			    "reply 250%202.0.0%20Ok:%20queued%20as%20X\n"
			    "rcpt \"we%20ird%25\\%01\"@remote.test\n"
			    "notify 0\n"
			    "state pending\n"
			    "attempts 0\n"
			    "flags 0\n"
			    "last 0\n"
			    "rcpt j%C3%B6rg@other.test\n"
			    "notify 1\n"
			    "state pending\n"
			    "attempts 0\n"
			    "flags 0\n"
			    "last 0\n"
			    "end\n");
	cr_assert_eq(len, strlen(t));
	struct queue_entry p;
	cr_assert_eq(queue_parse(t, len, &p), 0);
	same_entry(&e, &p);
	queue_entry_free(&p);
	free(t);
	/* the null sender, no options */
	queue_entry_free(&e);
	queue_strset(&e.from, "");
	queue_add_rcpt(&e, "x@y", NULL, 0);
	snprintf(e.id, sizeof e.id, "ID2");
	t = queue_format(&e, &len);
	cr_assert(strstr(t, "\nfrom \nbody 7bit\n"), "%s", t);
	cr_assert_eq(queue_parse(t, len, &p), 0);
	cr_assert_str_eq(p.from, "");
	cr_assert_null(p.envid);
	cr_assert_eq(p.ret, SMTP_RET_UNSET);
	queue_entry_free(&p);
	free(t);
	queue_entry_free(&e);
}

Test(queue, streaming_writer_and_abort)
{
	struct queue_writer w;
	cr_assert_eq(queue_open(qfd, 1700000000, &w), 0);
	for (int i = 0; i < 100; i++)
		cr_assert_eq(queue_write(&w, "0123456789\r\n", 12), 0);
	char want[256];
	snprintf(want, sizeof want, "%s.msg.tmp", w.id);
	cr_assert_str_eq(listing(), want);
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_commit(&w, &e), 0);
	cr_assert_eq(e.size, 1200);
	cr_assert_str_eq(e.id, w.id);
	snprintf(want, sizeof want, "%s.msg", e.id);
	cr_assert_str_eq(listing(), want);

	/* abort: nothing left of the second one */
	cr_assert_eq(queue_open(qfd, 1700000000, &w), 0);
	cr_assert_str_neq(w.id, e.id);
	queue_write(&w, "x", 1);
	queue_abort(&w);
	cr_assert_str_eq(listing(), want);
	queue_entry_free(&e);
}

/* The engine writes the message with positioned writes (the ring's, at
 * explicit offsets) that leave the file offset at 0: the trailer still
 * goes after the message. */
Test(queue, commit_after_positioned_writes)
{
	struct queue_writer w;
	cr_assert_eq(queue_open(qfd, 1700000000, &w), 0);
	cr_assert_eq(pwrite(w.fd, MSG, sizeof MSG - 1, 0), (ssize_t)(sizeof MSG - 1));
	w.size = sizeof MSG - 1;
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_commit(&w, &e), 0);
	char name[128];
	snprintf(name, sizeof name, "%s.msg", e.id);
	size_t len;
	const char *m = get_file(name, &len);
	cr_assert(!memcmp(m, MSG, sizeof MSG - 1), "message overwritten:\n%s", m);
	load_expect_one(&e);
	queue_entry_free(&e);
}

Test(queue, ids_are_unique)
{
	char ids[50][QUEUE_ID_MAX];
	for (int i = 0; i < 50; i++) {
		struct queue_entry e;
		sample(&e);
		cr_assert_eq(queue_create(qfd, &e, "x\r\n", 3, 1700000000), 0);
		memcpy(ids[i], e.id, QUEUE_ID_MAX);
		for (int j = 0; j < i; j++)
			cr_assert_str_neq(ids[i], ids[j]);
		queue_entry_free(&e);
	}
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 50);
	queue_entries_free(v, n);
}

Test(queue, update_rewrites_the_state_durably)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	/* the first attempt: bob got 2xx, the second recipient a 4xx */
	e.rcpt[0].state = QUEUE_DONE;
	e.rcpt[0].attempts = 1;
	queue_strset(&e.rcpt[0].reply, "250 ok");
	e.rcpt[1].attempts = 1;
	queue_strset(&e.rcpt[1].status, "4.2.0");
	queue_strset(&e.rcpt[1].reply, "450 4.2.0 greylisted\r\ntry later");
	e.next_try = 1700000360;
	cr_assert_eq(queue_update(qfd, &e), 0);

	char name[128], want[256];
	snprintf(name, sizeof name, "%s.env", e.id);
	size_t len, flen;
	char *t = queue_format(&e, &len);
	const char *f = get_file(name, &flen);
	cr_assert(flen == len && !memcmp(f, t, len), "file holds:\n%s", f);
	cr_assert(strstr(f, "reply 450%204.2.0%20greylisted%0D%0Atry%20later\n"));
	free(t);
	snprintf(want, sizeof want, "%s.env %s.msg", e.id, e.id);
	cr_assert_str_eq(listing(), want, "a temporary file was left");

	/* what a restart sees: bob is done and must not be sent again */
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 1);
	same_entry(&e, &v[0]);
	cr_assert_eq(v[0].rcpt[0].state, QUEUE_DONE);
	unsigned g[3];
	cr_assert_eq(queue_group_by_domain(&v[0], g), 2);
	cr_assert_eq(g[0], QUEUE_NO_GROUP);
	queue_entries_free(v, n);
	queue_entry_free(&e);
}

Test(queue, crash_leftovers_are_cleaned)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	/* a kill -9 at each step of another commit, of an update and of a
	 * removal */
	put_file("1.0.1.1.msg.tmp", "partial", 7);	  /* while writing */
	put_file("1.0.1.2.msg.tmp", MSG, sizeof MSG - 1); /* before the rename */
	put_file("1.0.1.3.env", "mailpopbox-queue 1\n", 19); /* between the unlinks */
	char envtmp[128];
	snprintf(envtmp, sizeof envtmp, "%s.env.tmp", e.id); /* during an update */
	put_file(envtmp, "mailpopbox-queue 1\nid", 21);
	put_file("README", "not ours", 8); /* left alone */

	load_expect_one(&e);
	char want[256];
	snprintf(want, sizeof want, "%s.msg README", e.id);
	cr_assert_str_eq(listing(), want);
	queue_entry_free(&e);
}

Test(queue, truncated_state_file_is_reported_corrupt)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	size_t len;
	char full[4096], *t = queue_format(&e, &len);
	memcpy(full, t, len);
	free(t);
	/* every proper prefix is refused by the parser */
	for (size_t k = 0; k < len; k++) {
		struct queue_entry p;
		cr_assert_eq(queue_parse(full, k, &p), -EBADMSG, "prefix of %zu accepted", k);
	}
	/* the entry's file cut anywhere (no crash does that: it is fsynced
	 * before its rename; a damaged disk might) is reported with its id,
	 * and kept for the operator */
	char name[128], whole[8192];
	snprintf(name, sizeof name, "%s.msg", e.id);
	size_t wlen;
	memcpy(whole, get_file(name, &wlen), wlen);
	char want[256];
	snprintf(want, sizeof want, "%s.msg", e.id);
	for (size_t k = 0; k < wlen; k += 7) {
		put_file(name, whole, k);
		struct queue_entry *v;
		unsigned n;
		cr_assert_eq(queue_load(qfd, &v, &n), 0);
		cr_assert_eq(n, 1);
		cr_assert_neq(v[0].error, 0, "cut at %zu of %zu accepted", k, wlen);
		cr_assert_str_eq(v[0].id, e.id);
		queue_entries_free(v, n);
		cr_assert_str_eq(listing(), want);
	}
	/* a state file written by an update, cut short */
	put_file(name, whole, wlen);
	cr_assert_eq(queue_update(qfd, &e), 0);
	snprintf(name, sizeof name, "%s.env", e.id);
	put_file(name, full, len / 2);
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].error, -EBADMSG);
	cr_assert_str_eq(v[0].id, e.id);
	cr_assert_eq(v[0].nrcpt, 0);
	queue_entries_free(v, n);
	snprintf(want, sizeof want, "%s.env %s.msg", e.id, e.id);
	cr_assert_str_eq(listing(), want);
	queue_entry_free(&e);
}

Test(queue, missing_or_short_message_is_reported)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	cr_assert_eq(queue_update(qfd, &e), 0); /* the state now in ID.env */
	char name[128];
	snprintf(name, sizeof name, "%s.msg", e.id);
	put_file(name, MSG, 5);
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].error, -ENOENT);
	queue_entries_free(v, n);
	/* without its message file the state file is a removal cut short */
	unlinkat(qfd, name, 0);
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_str_eq(listing(), "");
	queue_entries_free(v, n);
	queue_entry_free(&e);
}

/* A version-1 queue (state only in ID.env, ID.msg the bare message) loads
 * as it is, and its message is read to the recorded size. */
Test(queue, version_1_entries_load)
{
	struct queue_entry e;
	sample(&e);
	snprintf(e.id, sizeof e.id, "1700000000.000001.1.1");
	e.size = sizeof MSG - 1;
	size_t len;
	char *t = queue_format(&e, &len);
	put_file("1700000000.000001.1.1.env", t, len);
	put_file("1700000000.000001.1.1.msg", MSG, sizeof MSG - 1);
	free(t);
	load_expect_one(&e);
	cr_assert_eq(queue_remove(qfd, e.id), 0);
	cr_assert_str_eq(listing(), "");
	queue_entry_free(&e);
}

Test(queue, state_file_of_another_id_is_corrupt)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	char name[128];
	snprintf(name, sizeof name, "%s.msg", e.id);
	cr_assert_eq(renameat(qfd, name, qfd, "other.msg"), 0);
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].error, -EBADMSG);
	cr_assert_str_eq(v[0].id, "other");
	queue_entries_free(v, n);
	queue_entry_free(&e);
}

Test(queue, parser_refuses_what_the_formatter_never_writes)
{
	static const char head[] = "mailpopbox-queue 1\nid A\narrival 1\nnext 2\nsize 3\n"
				   "from a@b\nbody 7bit\nsmtputf8 0\n";
	static const char r1[] = "rcpt x@y\nnotify 0\nstate pending\nattempts 0\nflags 0\nlast 0\n";
	static const struct {
		const char *mid;
		int want;
	} cases[] = {
	    {"rcpts 1\n%R%end\n", 0},
	    {"rcpts 1\n%R%end\nx", -EBADMSG}, /* after end */
	    {"rcpts 1\n%R%end\n    \n", 0},	      /* padding after end */
	    {"rcpts 1\n%R%end\n  \n x", -EBADMSG},
	    {"rcpts 1\n%R%end\n\t", -EBADMSG},
	    {"rcpts 1\n%R%end", -EBADMSG},    /* no LF */
	    {"rcpts 1\n%R%", -EBADMSG},	      /* no end */
	    {"rcpts 2\n%R%end\n", -EBADMSG},  /* count */
	    {"rcpts 0\n%R%end\n", -EBADMSG},
	    {"rcpts 1\nrcpts 1\n%R%end\n", -EBADMSG},	 /* repeated */
	    {"rcpts 1\nbogus 1\n%R%end\n", -EBADMSG},	 /* unknown key */
	    {"rcpts 1\n%R%from c@d\nend\n", -EBADMSG},	 /* envelope after rcpt */
	    {"rcpts 1\n%R%state done\nend\n", -EBADMSG}, /* repeated in rcpt */
	    {"rcpts 1\nrcpt x@y\nend\n", -EBADMSG},	 /* rcpt incomplete */
	    {"rcpts 1\n%R%end \n", -EBADMSG},
	    {"rcpts 1\nenvid a%00b\n%R%end\n", -EBADMSG}, /* NUL */
	    {"rcpts 1\nenvid a%4\n%R%end\n", -EBADMSG},
	    {"rcpts 1\nenvid a%zz\n%R%end\n", -EBADMSG},
	    {"rcpts 1\nenvid a b\n%R%end\n", -EBADMSG}, /* raw space */
	    {"rcpts 1\nenvid a%20b%25\n%R%end\n", 0},
	    {"rcpts 1\nret full\n%R%end\n", 0},
	    {"rcpts 1\nret unset\n%R%end\n", -EBADMSG},
	    {"rcpts 99999999999999999999999\n%R%end\n", -EBADMSG},
	    {"rcpts 1000000\n%R%end\n", -EBADMSG}, /* more than the file can hold */
	    {"rcpts -1\n%R%end\n", -EBADMSG},
	};
	for (unsigned i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char t[1024], *o = t;
		o += sprintf(o, "%s", head);
		for (const char *m = cases[i].mid; *m; m++) {
			if (!strncmp(m, "%R%", 3)) {
				o += sprintf(o, "%s", r1);
				m += 2;
			} else {
				*o++ = *m;
			}
		}
		*o = '\0';
		struct queue_entry e;
		int rc = queue_parse(t, strlen(t), &e);
		cr_assert_eq(rc, cases[i].want, "case %u: %d\n%s", i, rc, t);
		if (rc == 0) {
			cr_assert_eq(e.nrcpt, 1);
			queue_entry_free(&e);
		}
	}
	/* numbers */
	char t[512];
	struct queue_entry e;
	snprintf(t, sizeof t, "%.*s", (int)(sizeof head - 1), head);
	strcat(t,
	       "rcpts 1\nrcpt x@y\nnotify 16\nstate pending\nattempts 0\nflags 0\nlast 0\nend\n");
	cr_assert_eq(queue_parse(t, strlen(t), &e), -EBADMSG);
	cr_assert_eq(queue_parse("", 0, &e), -EBADMSG);
	cr_assert_eq(queue_parse("mailpopbox-queue 2\nend\n", 23, &e), -EBADMSG);
}

Test(queue, parser_survives_garbage)
{
	struct queue_entry s;
	sample(&s);
	snprintf(s.id, sizeof s.id, "X");
	size_t len;
	char *t = queue_format(&s, &len);
	char *m = malloc(len);
	/* every octet replaced by a few troublesome values */
	static const char subst[] = {'\0', '\n', ' ', '%', '9', 'x', (char)0xff};
	unsigned ok = 0;
	for (size_t i = 0; i < len; i++) {
		for (unsigned k = 0; k < sizeof subst; k++) {
			memcpy(m, t, len);
			m[i] = subst[k];
			struct queue_entry e;
			int rc = queue_parse(m, len, &e);
			cr_assert(rc == 0 || rc == -EBADMSG);
			if (rc == 0) {
				ok++;
				queue_entry_free(&e);
			}
		}
	}
	cr_assert_gt(ok, 0); /* some substitutions are harmless (a digit) */
	free(m);
	free(t);
	queue_entry_free(&s);
}

/* queue_discard: the same files go, message file first; an entry already
 * gone is fine; a crash that kept only the state file (the message file's
 * unlink reached the disk first) leaves nothing queue_load() would send. */
Test(queue, discard)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	cr_assert_eq(queue_discard(qfd, e.id), 0);
	cr_assert_str_eq(listing(), "");
	cr_assert_eq(queue_discard(qfd, e.id), 0);

	struct queue_entry f;
	sample(&f);
	cr_assert_eq(queue_create(qfd, &f, MSG, sizeof MSG - 1, 1700000000), 0);
	cr_assert_eq(queue_update(qfd, &f), 0); /* an attempt wrote ID.env */
	char msg[QUEUE_ID_MAX + 8];
	snprintf(msg, sizeof msg, "%s.msg", f.id);
	cr_assert_eq(unlinkat(qfd, msg, 0), 0); /* as if the crash came here */
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 0);
	cr_assert_str_eq(listing(), "");
	queue_entries_free(v, n);
	queue_entry_free(&e);
	queue_entry_free(&f);
}

/* A finished entry's file becomes a spare and the next entry is written
 * over it: the same inode, the same size (no block freed or allocated),
 * nothing of the old message left; a restart removes spares. */
Test(queue, finished_files_are_reused)
{
	static const char BIG[] = "Subject: a longer first message\r\n\r\nxxxxxxxxxxxxxxxxxxxx\r\n";
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, BIG, sizeof BIG - 1, 1700000000), 0);
	char name[128];
	snprintf(name, sizeof name, "%s.msg", e.id);
	struct stat st1, st2;
	cr_assert_eq(fstatat(qfd, name, &st1, 0), 0);
	cr_assert_eq(queue_discard(qfd, e.id), 0);
	cr_assert_str_eq(listing(), "");
	/* the spare keeps its blocks while it waits */
	struct stat sst;
	cr_assert_eq(fstatat(qfd, ".spare.0", &sst, 0), 0);
	cr_assert_eq(sst.st_size, st1.st_size);
	cr_assert_eq(sst.st_ino, st1.st_ino);
	struct queue_entry f;
	sample(&f);
	cr_assert_eq(queue_create(qfd, &f, MSG, sizeof MSG - 1, 1700000000), 0);
	snprintf(name, sizeof name, "%s.msg", f.id);
	cr_assert_eq(fstatat(qfd, name, &st2, 0), 0);
	cr_assert_eq(st1.st_ino, st2.st_ino, "the spare was not reused");
	cr_assert_eq(st1.st_size, st2.st_size, "written over, not truncated");
	size_t flen;
	const char *fm = get_file(name, &flen);
	cr_assert_null(memmem(fm, flen, "longer first", 12), "old message left in the file");
	/* the relay removes through its own fd of the same directory */
	int fd2 = open(dir, O_RDONLY | O_DIRECTORY);
	struct queue_entry g;
	sample(&g);
	cr_assert_eq(queue_create(qfd, &g, "x\r\n", 3, 1700000000), 0);
	snprintf(name, sizeof name, "%s.msg", g.id);
	cr_assert_eq(fstatat(qfd, name, &st1, 0), 0);
	cr_assert_eq(queue_discard(fd2, g.id), 0);
	close(fd2);
	queue_entry_free(&g);
	sample(&g);
	cr_assert_eq(queue_create(qfd, &g, "y\r\n", 3, 1700000000), 0);
	snprintf(name, sizeof name, "%s.msg", g.id);
	cr_assert_eq(fstatat(qfd, name, &st2, 0), 0);
	cr_assert_eq(st1.st_ino, st2.st_ino, "a spare put through another fd was not reused");
	cr_assert_eq(queue_discard(qfd, g.id), 0);
	queue_entry_free(&g);
	snprintf(name, sizeof name, "%s.msg", f.id);
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 1);
	cr_assert_eq(v[0].error, 0, "stale bytes after the new message?");
	same_entry(&f, &v[0]);
	queue_entries_free(v, n);
	size_t len;
	const char *m = get_file(name, &len);
	cr_assert(!memcmp(m, MSG, sizeof MSG - 1));
	/* a spare left by a previous process is removed at load */
	cr_assert_eq(queue_remove(qfd, f.id), 0);
	int fd = openat(qfd, ".spare.7", O_WRONLY | O_CREAT, 0600);
	cr_assert_geq(fd, 0);
	close(fd);
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 0);
	queue_entries_free(v, n);
	DIR *d = opendir(dir);
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		cr_assert(strncmp(de->d_name, ".spare.", 7) != 0, "%s left", de->d_name);
	closedir(d);
	queue_entry_free(&e);
	queue_entry_free(&f);
}

/* Spares of other sizes: one a little bigger is padded to its size; one
 * much bigger is cut to whole blocks; one over 64 KiB is emptied when it
 * becomes a spare (the pool holds at most 512 x 64 KiB). Each entry loads
 * back whole. */
static uint64_t spare_round(const char *body, size_t n, uint64_t *spare_size)
{
	static unsigned spare_seq; /* the pool names spares .spare.0, .1, ... */
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, body, n, 1700000000), 0);
	cr_assert_eq(queue_discard(qfd, e.id), 0);
	queue_entry_free(&e);
	char sp[64];
	snprintf(sp, sizeof sp, ".spare.%llu", (unsigned long long)spare_seq++);
	struct stat st;
	cr_assert_eq(fstatat(qfd, sp, &st, 0), 0, "%s", sp);
	*spare_size = (uint64_t)st.st_size;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	char name[128];
	snprintf(name, sizeof name, "%s.msg", e.id);
	cr_assert_eq(fstatat(qfd, name, &st, 0), 0);
	load_expect_one(&e);
	cr_assert_eq(queue_discard(qfd, e.id), 0);
	spare_seq++;
	queue_entry_free(&e);
	return (uint64_t)st.st_size;
}

Test(queue, spares_of_other_sizes)
{
	static char big[200 * 1024];
	memset(big, 'x', sizeof big);
	uint64_t was;
	/* 8 KiB of message: a 12 KiB spare, padded to */
	cr_assert_eq(spare_round(big, 8 * 1024, &was), 12288);
	cr_assert_eq(was, 12288);
	/* 40 KiB: a 44 KiB spare, cut to one block */
	cr_assert_eq(spare_round(big, 40 * 1024, &was), 4096);
	cr_assert_eq(was, 45056);
	/* 100 KiB: emptied as it became a spare, then grown to one block */
	cr_assert_eq(spare_round(big, 100 * 1024, &was), 4096);
	cr_assert_eq(was, 0);
}

Test(queue, remove)
{
	struct queue_entry e;
	sample(&e);
	cr_assert_eq(queue_create(qfd, &e, MSG, sizeof MSG - 1, 1700000000), 0);
	cr_assert_eq(queue_remove(qfd, e.id), 0);
	cr_assert_str_eq(listing(), "");
	cr_assert_eq(queue_remove(qfd, e.id), 0);
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 0);
	queue_entries_free(v, n);
	queue_entry_free(&e);
}

Test(queue, load_orders_oldest_first)
{
	int64_t arrivals[] = {300, 100, 200};
	for (int i = 0; i < 3; i++) {
		struct queue_entry e;
		sample(&e);
		e.arrival = arrivals[i];
		cr_assert_eq(queue_create(qfd, &e, "x", 1, 1700000000 + i), 0);
		queue_entry_free(&e);
	}
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 3);
	cr_assert_eq(v[0].arrival, 100);
	cr_assert_eq(v[1].arrival, 200);
	cr_assert_eq(v[2].arrival, 300);
	queue_entries_free(v, n);
}

Test(queue, dir_open_creates_parents)
{
	char p[512];
	snprintf(p, sizeof p, "%s/a/b/queue", dir);
	int fd = queue_dir_open(p);
	cr_assert_geq(fd, 0);
	struct stat st;
	cr_assert_eq(fstat(fd, &st), 0);
	cr_assert_eq(st.st_mode & 0777, 0700);
	close(fd);
	fd = queue_dir_open(p); /* exists: fine */
	cr_assert_geq(fd, 0);
	close(fd);
}

/* ------------------------------------------------------------------ */
/* pure helpers */

Test(queue, retry_schedule)
{
	static const uint32_t r[] = {60, 300, 900, 3600, 14400};
	const int64_t A = 1000000, MAX = (int64_t)5 * 86400;
	/* a first try at once, even when late */
	cr_assert_eq(queue_next_try(r, 5, MAX, 0, A, A), A);
	cr_assert_eq(queue_next_try(r, 5, MAX, 0, A, A + MAX + 10), A + MAX + 10);
	/* then each interval in turn, counted from now */
	cr_assert_eq(queue_next_try(r, 5, MAX, 1, A, A + 1), A + 61);
	cr_assert_eq(queue_next_try(r, 5, MAX, 2, A, A + 100), A + 400);
	cr_assert_eq(queue_next_try(r, 5, MAX, 5, A, A + 7000), A + 7000 + 14400);
	/* the last interval repeats */
	cr_assert_eq(queue_next_try(r, 5, MAX, 6, A, A + 20000), A + 20000 + 14400);
	cr_assert_eq(queue_next_try(r, 5, MAX, 4000000000u, A, A + 20000), A + 34400);
	/* never past the deadline: a last try exactly there */
	cr_assert_eq(queue_next_try(r, 5, MAX, 9, A, A + MAX - 100), A + MAX);
	cr_assert_eq(queue_next_try(r, 5, MAX, 9, A, A + MAX - 1), A + MAX);
	/* at or past the deadline: expired */
	cr_assert_eq(queue_next_try(r, 5, MAX, 10, A, A + MAX), QUEUE_EXPIRED);
	cr_assert_eq(queue_next_try(r, 5, MAX, 10, A, A + MAX + 1), QUEUE_EXPIRED);
	/* no schedule: every 5 minutes */
	cr_assert_eq(queue_next_try(NULL, 0, MAX, 3, A, A + 10), A + 310);
	/* max_queue_time 0: one try, then expired */
	cr_assert_eq(queue_next_try(r, 5, 0, 0, A, A), A);
	cr_assert_eq(queue_next_try(r, 5, 0, 1, A, A), QUEUE_EXPIRED);
	/* one interval only */
	static const uint32_t one[] = {600};
	cr_assert_eq(queue_next_try(one, 1, MAX, 1, A, A), A + 600);
	cr_assert_eq(queue_next_try(one, 1, MAX, 7, A, A), A + 600);
}

Test(queue, grouping_by_domain)
{
	struct queue_entry e = {0};
	queue_add_rcpt(&e, "a@Example.ORG", NULL, 0);
	queue_add_rcpt(&e, "b@other.test", NULL, 0);
	queue_add_rcpt(&e, "c@example.org", NULL, 0);
	queue_add_rcpt(&e, "d@EXAMPLE.org", NULL, 0);
	queue_add_rcpt(&e, "\"x@y\"@other.test", NULL, 0);
	queue_add_rcpt(&e, "postmaster", NULL, 0);
	queue_add_rcpt(&e, "e@third.test", NULL, 0);
	queue_add_rcpt(&e, "f@[192.0.2.1]", NULL, 0);
	e.rcpt[6].state = QUEUE_DONE;
	unsigned g[8];
	cr_assert_eq(queue_group_by_domain(&e, g), 4);
	unsigned want[8] = {0, 1, 0, 0, 1, 2, QUEUE_NO_GROUP, 3};
	for (int i = 0; i < 8; i++)
		cr_assert_eq(g[i], want[i], "rcpt %d: group %u", i, g[i]);
	cr_assert_str_eq(queue_addr_domain("a@b@c.test"), "c.test");
	cr_assert_str_eq(queue_addr_domain("nodomain"), "");
	e.rcpt[0].state = QUEUE_FAILED;
	cr_assert_eq(queue_group_by_domain(&e, g), 4);
	cr_assert_eq(g[0], QUEUE_NO_GROUP);
	cr_assert_eq(g[1], 0);
	cr_assert_eq(g[2], 1);
	queue_entry_free(&e);
	cr_assert_eq(queue_group_by_domain(&e, g), 0);
}

/* Commits on several threads at once share directory fsyncs (group
 * commit); every one of them must still be a complete, loadable entry. */
struct committer {
	int n;
	int failures;
};

static void *commit_many(void *arg)
{
	struct committer *c = arg;
	for (int i = 0; i < c->n; i++) {
		struct queue_entry e = {0};
		sample(&e);
		char body[64];
		int len = snprintf(body, sizeof body, "Subject: %d\r\n\r\nbody\r\n", i);
		if (queue_create(qfd, &e, body, (size_t)len, 1700000000) != 0)
			c->failures++;
		queue_entry_free(&e);
	}
	return NULL;
}

Test(queue, concurrent_commits_share_fsyncs)
{
	pthread_t th[8];
	struct committer c[8];
	for (int t = 0; t < 8; t++) {
		c[t] = (struct committer){.n = 25};
		cr_assert_eq(pthread_create(&th[t], NULL, commit_many, &c[t]), 0);
	}
	for (int t = 0; t < 8; t++) {
		pthread_join(th[t], NULL);
		cr_expect_eq(c[t].failures, 0);
	}
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_expect_eq(n, 200);
	for (unsigned i = 0; i < n; i++)
		cr_expect_eq(v[i].error, 0, "entry %s", v[i].id);
	queue_entries_free(v, n);
}

/* queue_commit_batch: entries committed together (one over a spare, two in
 * new files) each load back whole; one whose name is taken fails alone and
 * leaves neither its file nor a change to the other one. */
Test(queue, commit_batch)
{
	static char big[20 * 1024];
	memset(big, 'b', sizeof big);
	struct queue_entry old;
	sample(&old);
	cr_assert_eq(queue_create(qfd, &old, big, sizeof big, 1700000000), 0);
	cr_assert_eq(queue_discard(qfd, old.id), 0); /* now a spare of 24 KiB */
	queue_entry_free(&old);

	struct queue_writer w[3];
	struct queue_entry e[3];
	struct queue_writer *ws[3];
	struct queue_entry *es[3];
	char body[3][64];
	for (int i = 0; i < 3; i++) {
		cr_assert_eq(queue_open(qfd, 1700000000, &w[i]), 0);
		snprintf(body[i], sizeof body[i], "Subject: %d\r\n\r\nbody %d\r\n", i, i);
		cr_assert_eq(queue_write(&w[i], body[i], strlen(body[i])), 0);
		sample(&e[i]);
		ws[i] = &w[i];
		es[i] = &e[i];
	}
	cr_assert_gt(w[0].was, 0, "the first writer reuses the spare");
	char taken[128];
	snprintf(taken, sizeof taken, "%s.msg", w[2].id);
	int fd = openat(qfd, taken, O_WRONLY | O_CREAT | O_EXCL, 0600);
	cr_assert_geq(fd, 0);
	close(fd);

	int rcs[3] = {1, 1, 1};
	queue_commit_batch(ws, es, rcs, 3);
	cr_assert_eq(rcs[0], 0);
	cr_assert_eq(rcs[1], 0);
	cr_assert_eq(rcs[2], -EEXIST);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(w[i].fd, -1, "writer %d left open", i);
	struct stat st;
	cr_assert_eq(fstatat(qfd, taken, &st, 0), 0);
	cr_assert_eq(st.st_size, 0, "the existing file was changed");
	cr_assert_eq(unlinkat(qfd, taken, 0), 0);

	char want[512];
	snprintf(want, sizeof want, "%s.msg %s.msg", e[0].id, e[1].id);
	if (strcmp(e[0].id, e[1].id) > 0)
		snprintf(want, sizeof want, "%s.msg %s.msg", e[1].id, e[0].id);
	cr_assert_str_eq(listing(), want);
	struct queue_entry *v;
	unsigned n;
	cr_assert_eq(queue_load(qfd, &v, &n), 0);
	cr_assert_eq(n, 2);
	for (unsigned k = 0; k < n; k++) {
		int i = strcmp(v[k].id, e[0].id) == 0 ? 0 : 1;
		cr_assert_eq(v[k].error, 0);
		same_entry(&e[i], &v[k]);
		char name[128];
		snprintf(name, sizeof name, "%s.msg", e[i].id);
		size_t len;
		const char *m = get_file(name, &len);
		cr_assert(!memcmp(m, body[i], strlen(body[i])), "entry %d: %s", i, m);
	}
	queue_entries_free(v, n);
	for (int i = 0; i < 3; i++)
		queue_entry_free(&e[i]);
}
