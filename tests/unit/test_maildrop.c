/* Unit tests for store/maildrop.c: the POP3 view of a Maildir (SPEC 6, 7):
 * the lock, the snapshot's order, sizes and UIDs (RFC 1939 7), open and
 * remove. Every test works in its own mkdtemp directory. */
#include "store/maildrop.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char root[64];
static int dfd = -1;

static void rm_tree(int fd)
{
	DIR *d = fdopendir(fd);
	cr_assert(d);
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0) continue;
		int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
		if (sub >= 0) {
			rm_tree(sub);
			unlinkat(dirfd(d), e->d_name, AT_REMOVEDIR);
		}
	}
	closedir(d);
}

static void setup(void)
{
	strcpy(root, "/tmp/mpb-maildrop-XXXXXX");
	cr_assert(mkdtemp(root));
	dfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	cr_assert(dfd >= 0);
	cr_assert(mkdirat(dfd, "tmp", 0700) == 0);
	cr_assert(mkdirat(dfd, "new", 0700) == 0);
	cr_assert(mkdirat(dfd, "cur", 0700) == 0);
}

static void teardown(void)
{
	rm_tree(dup(dfd));
	close(dfd);
	rmdir(root);
}

TestSuite(maildrop, .init = setup, .fini = teardown);

/* Writes path (relative to the maildir) with len bytes of content. */
static void put(const char *path, size_t len)
{
	int fd = openat(dfd, path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	cr_assert(fd >= 0, "%s: %s", path, strerror(errno));
	char buf[256];
	memset(buf, 'x', sizeof buf);
	while (len) {
		size_t k = len < sizeof buf ? len : sizeof buf;
		cr_assert_eq(write(fd, buf, k), (ssize_t)k);
		len -= k;
	}
	close(fd);
}

static void snap(struct maildrop_snap *s)
{
	int rc = maildrop_snapshot(dfd, s);
	cr_assert_eq(rc, 0, "snapshot: %d", rc);
	cr_assert(s->msgs && s->paths);
}

static int exists(const char *path)
{
	return faccessat(dfd, path, F_OK, 0) == 0;
}

static void uid_of(const char *name, char out[POP3_UID_MAX + 1])
{
	maildrop_uid(name, strlen(name), out);
}

/* ---- order -------------------------------------------------------------- */

Test(maildrop, empty)
{
	struct maildrop_snap s;
	snap(&s);
	cr_expect_eq(s.n, 0);
	maildrop_snap_free(&s);
	cr_expect_null(s.msgs);
	maildrop_snap_free(&s); /* twice is harmless */
}

Test(maildrop, missing_subdirs_are_empty)
{
	cr_assert(unlinkat(dfd, "cur", AT_REMOVEDIR) == 0);
	put("new/1700000000.M1P1Q1.h,S=3", 3);
	struct maildrop_snap s;
	snap(&s);
	cr_expect_eq(s.n, 1);
	maildrop_snap_free(&s);
}

Test(maildrop, oldest_first_numerically)
{
	/* 10-digit seconds after 9-digit ones, whichever way strcmp goes;
	 * the same second in name order; new/ and cur/ interleaved. */
	put("cur/1700000001.M5P1Q1.h,S=1:2,S", 1);
	put("new/999999999.M1P1Q1.h,S=2", 2);
	put("new/1700000000.M2P1Q2.h,S=3", 3);
	put("cur/1700000000.M1P1Q1.h,S=4:2,", 4);
	put("new/1700000002.M0P1Q9.h,S=5", 5);
	put("new/5.short,S=6", 6);
	put("new/noseconds,S=7", 7); /* no leading digits: last */
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 7);
	const char *want[] = {
	    "new/5.short,S=6",
	    "new/999999999.M1P1Q1.h,S=2",
	    "cur/1700000000.M1P1Q1.h,S=4:2,",
	    "new/1700000000.M2P1Q2.h,S=3",
	    "cur/1700000001.M5P1Q1.h,S=1:2,S",
	    "new/1700000002.M0P1Q9.h,S=5",
	    "new/noseconds,S=7",
	};
	const uint64_t sizes[] = {6, 2, 4, 3, 1, 5, 7};
	for (unsigned i = 0; i < 7; i++) {
		cr_expect_str_eq(s.paths[i], want[i], "%u", i);
		cr_expect_eq(s.msgs[i].size, sizes[i], "%u", i);
		cr_expect(!s.msgs[i].deleted);
	}
	maildrop_snap_free(&s);
}

Test(maildrop, same_second_order_is_by_base_name)
{
	/* "1.x" sorts before "1.x.y" in new/, and still does once "1.x" has
	 * moved to cur/ with its flags (':' > '.' would flip a plain strcmp). */
	put("new/1.x.y", 1);
	put("cur/1.x:2,S", 1);
	put("new/1.w", 1);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 3);
	cr_expect_str_eq(s.paths[0], "new/1.w");
	cr_expect_str_eq(s.paths[1], "cur/1.x:2,S");
	cr_expect_str_eq(s.paths[2], "new/1.x.y");
	maildrop_snap_free(&s);
}

Test(maildrop, same_second_numbers_compare_as_numbers)
{
	/* Microseconds and Q counters are not zero-padded by every delivery
	 * agent: M99 came before M100000, Q9 before Q10. */
	put("new/1700000000.M100000P7Q1.h,S=1", 1);
	put("new/1700000000.M99P7Q9.h,S=1", 1);
	put("new/1700000000.M99P7Q10.h,S=1", 1);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 3);
	cr_expect_str_eq(s.paths[0], "new/1700000000.M99P7Q9.h,S=1");
	cr_expect_str_eq(s.paths[1], "new/1700000000.M99P7Q10.h,S=1");
	cr_expect_str_eq(s.paths[2], "new/1700000000.M100000P7Q1.h,S=1");
	maildrop_snap_free(&s);
}

Test(maildrop, plain_field)
{
	/* ",D=0" (store/maildir.h): RETR may send the file as it is. Only that
	 * exact field counts, in the base name. */
	put("new/1.a,D=0,S=1", 1);
	put("new/2.b,S=1", 1);
	put("new/3.c,D=01,S=1", 1);
	put("cur/4.d,S=1,D=0:2,S", 1);
	put("new/5.e.D=0", 1);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 5);
	cr_expect(s.msgs[0].plain);
	cr_expect_not(s.msgs[1].plain);
	cr_expect_not(s.msgs[2].plain);
	cr_expect(s.msgs[3].plain);
	cr_expect_not(s.msgs[4].plain);
	maildrop_snap_free(&s);
}

Test(maildrop, deterministic)
{
	for (int i = 0; i < 50; i++) {
		char p[64];
		snprintf(p, sizeof p, "%s/17000000%02d.M%dP1Q1.h,S=%d", i % 2 ? "new" : "cur",
			 i % 7, i, i);
		put(p, (size_t)i);
	}
	struct maildrop_snap a, b;
	snap(&a);
	snap(&b);
	cr_assert_eq(a.n, 50);
	cr_assert_eq(b.n, 50);
	for (unsigned i = 0; i < 50; i++) {
		cr_expect_str_eq(a.paths[i], b.paths[i]);
		cr_expect_str_eq(a.msgs[i].uid, b.msgs[i].uid);
		cr_expect_eq(a.msgs[i].size, b.msgs[i].size);
	}
	maildrop_snap_free(&a);
	maildrop_snap_free(&b);
}

/* ---- what is listed, sizes ---------------------------------------------- */

Test(maildrop, skips_dotfiles_dirs_links)
{
	put("new/.hidden,S=1", 1);
	put("cur/.1700000000.x,S=1", 1);
	cr_assert(mkdirat(dfd, "new/1700000000.dir", 0700) == 0);
	cr_assert(symlinkat("1700000001.real,S=2", dfd, "new/1700000002.link,S=2") == 0);
	put("new/1700000001.real,S=2", 2);
	put("tmp/1700000000.intmp,S=1", 1);
	put(MAILDROP_LOCKFILE, 0);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 1);
	cr_expect_str_eq(s.paths[0], "new/1700000001.real,S=2");
	maildrop_snap_free(&s);
}

Test(maildrop, sizes_from_name_or_stat)
{
	/* S= is believed (no stat): the file holds 5 bytes, the name says 12. */
	put("new/1.a,S=12", 5);
	/* Dovecot-style fields after S=, and the info part in cur/. */
	put("cur/2.b,S=34,W=40:2,S", 34);
	put("cur/3.c,W=9,S=56:2,", 56);
	/* No usable S=: the stat size. */
	put("new/4.d", 78);
	put("new/5.e,S=", 9);
	put("new/6.f,S=12x", 10);
	put("cur/7.g:2,S", 11);
	put("new/8.h,s=5", 12);
	/* "S=" after ":2," is a flag, not a size. */
	put("cur/9.i:2,S=3", 13);
	/* Only fields after the first ',' count. */
	put("new/10.jS=99", 14);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 10);
	const uint64_t want[] = {12, 34, 56, 78, 9, 10, 11, 12, 13, 14};
	for (unsigned i = 0; i < 10; i++)
		cr_expect_eq(s.msgs[i].size, want[i], "%s: %llu", s.paths[i],
			     (unsigned long long)s.msgs[i].size);
	maildrop_snap_free(&s);
}

/* ---- UIDs ---------------------------------------------------------------- */

Test(maildrop, uid_as_is)
{
	char u[POP3_UID_MAX + 1];
	uid_of("1700000000.M1P2Q3.host,S=10", u);
	cr_expect_str_eq(u, "1700000000.M1P2Q3.host,S=10");
	uid_of("!", u);
	cr_expect_str_eq(u, "!");
	uid_of("~~", u);
	cr_expect_str_eq(u, "~~");

	char n70[71], n71[72];
	memset(n70, 'a', 70);
	n70[70] = '\0';
	memset(n71, 'a', 71);
	n71[71] = '\0';
	uid_of(n70, u);
	cr_expect_str_eq(u, n70);
	uid_of(n71, u);
	cr_expect_eq(strlen(u), 33);
	cr_expect_eq(u[0], 'h');
}

static void expect_hashed(const char *name, size_t n)
{
	char u[POP3_UID_MAX + 1];
	maildrop_uid(name, n, u);
	cr_expect_eq(strlen(u), 33, "%zu", n);
	cr_expect_eq(u[0], 'h');
	for (int i = 1; i < 33; i++)
		cr_expect(strchr("0123456789abcdef", u[i]) && u[i], "%s", u);
}

Test(maildrop, uid_hashed_outside_range)
{
	expect_hashed("", 0);
	expect_hashed("a b", 3);
	expect_hashed("a\x7f", 2);
	expect_hashed("caf\xc3\xa9", 5);
	expect_hashed("a\tb", 3);
	expect_hashed("a\0b", 3);

	/* Stable (fixed constants, no seed), and distinct for distinct names. */
	char u1[POP3_UID_MAX + 1], u2[POP3_UID_MAX + 1], u3[POP3_UID_MAX + 1];
	uid_of("a b", u1);
	uid_of("a b", u2);
	uid_of("a c", u3);
	cr_expect_str_eq(u1, u2);
	cr_expect_str_neq(u1, u3);
	/* FNV-1a 128 of "" is its offset basis. */
	maildrop_uid("", 0, u1);
	cr_expect_str_eq(u1, "h6c62272e07bb014262b821756295c58d");
	/* Only n bytes count. */
	maildrop_uid("a b", 0, u2);
	cr_expect_str_eq(u2, u1);
	/* FNV-1a 128 of " " (the same code gives d228cb69...8964, the
	 * published vector, for "a"). */
	uid_of(" ", u3);
	cr_expect_str_eq(u3, "hd228cb69301a8caf78912b704e4a3bdf");
}

Test(maildrop, uid_survives_move_to_cur)
{
	const char *base = "1700000000.M1P2Q3.host,S=10";
	put("new/1700000000.M1P2Q3.host,S=10", 10);
	/* a long base name: hashed, and the hash ignores the info part too */
	char longname[200], p[220];
	snprintf(longname, sizeof longname, "1700000001.M1P2Q3.%0100d,S=3", 7);
	snprintf(p, sizeof p, "new/%s", longname);
	put(p, 3);
	struct maildrop_snap a, b;
	snap(&a);
	cr_assert_eq(a.n, 2);
	cr_expect_str_eq(a.msgs[0].uid, base);
	cr_expect_eq(a.msgs[1].uid[0], 'h');

	/* What another reader does: new/NAME -> cur/NAME:2,S */
	cr_assert(renameat(dfd, "new/1700000000.M1P2Q3.host,S=10", dfd,
			   "cur/1700000000.M1P2Q3.host,S=10:2,S") == 0);
	char q[230];
	snprintf(q, sizeof q, "cur/%s:2,RS", longname);
	cr_assert(renameat(dfd, p, dfd, q) == 0);
	snap(&b);
	cr_assert_eq(b.n, 2);
	cr_expect_str_eq(b.paths[0], "cur/1700000000.M1P2Q3.host,S=10:2,S");
	cr_expect_str_eq(b.msgs[0].uid, a.msgs[0].uid);
	cr_expect_str_eq(b.msgs[1].uid, a.msgs[1].uid);
	maildrop_snap_free(&a);
	maildrop_snap_free(&b);
}

static void expect_unique(const struct maildrop_snap *s)
{
	for (unsigned i = 0; i < s->n; i++) {
		size_t len = strlen(s->msgs[i].uid);
		cr_expect(len >= 1 && len <= POP3_UID_MAX);
		for (size_t k = 0; k < len; k++)
			cr_expect(s->msgs[i].uid[k] >= 0x21 && s->msgs[i].uid[k] <= 0x7e);
		for (unsigned j = i + 1; j < s->n; j++)
			cr_expect_str_neq(s->msgs[i].uid, s->msgs[j].uid, "%s / %s", s->paths[i],
					  s->paths[j]);
	}
}

Test(maildrop, uids_unique_when_bases_collide)
{
	/* The same base in new/ and cur/ (a copy, or a crash mid-move by some
	 * other tool): the first in listing order keeps the plain UID. */
	put("new/1700000000.x,S=1", 1);
	put("cur/1700000000.x,S=1:2,S", 1);
	put("cur/1700000000.x,S=1:2,RS", 1);
	/* A name that looks like the hash of another. */
	char h[POP3_UID_MAX + 1], p[POP3_UID_MAX + 8];
	uid_of("1700000001 y", h);
	put("new/1700000001 y", 1);
	snprintf(p, sizeof p, "new/%s", h);
	put(p, 1);
	struct maildrop_snap s, t;
	snap(&s);
	cr_assert_eq(s.n, 5);
	expect_unique(&s);
	cr_expect_str_eq(s.paths[0], "new/1700000000.x,S=1");
	cr_expect_str_eq(s.msgs[0].uid, "1700000000.x,S=1");
	/* ... and deterministically so */
	snap(&t);
	for (unsigned i = 0; i < s.n; i++)
		cr_expect_str_eq(s.msgs[i].uid, t.msgs[i].uid);
	maildrop_snap_free(&s);
	maildrop_snap_free(&t);
}

/* ---- lock ---------------------------------------------------------------- */

Test(maildrop, lock_excludes_in_one_process)
{
	int a = maildrop_lock(dfd);
	cr_assert(a >= 0, "%d", a);
	cr_expect_eq(maildrop_lock(dfd), -EAGAIN);
	cr_expect_eq(maildrop_lock(dfd), -EAGAIN);
	struct stat st;
	cr_assert(fstatat(dfd, MAILDROP_LOCKFILE, &st, 0) == 0);
	cr_expect_eq(st.st_mode & 0777, 0600);
	cr_expect(fcntl(a, F_GETFD) & FD_CLOEXEC);
	maildrop_unlock(a);
	int b = maildrop_lock(dfd);
	cr_expect(b >= 0, "%d", b);
	maildrop_unlock(b);
	maildrop_unlock(-1); /* harmless */
}

/* Forks a child that tries the lock: its exit status is 0 when it got
 * -EAGAIN, 1 when it got the lock, 2 on any other result. */
static int child_tries_lock(void)
{
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		int rc = maildrop_lock(dfd);
		_exit(rc == -EAGAIN ? 0 : rc >= 0 ? 1 : 2);
	}
	int status;
	cr_assert_eq(waitpid(pid, &status, 0), pid);
	cr_assert(WIFEXITED(status));
	return WEXITSTATUS(status);
}

Test(maildrop, lock_excludes_across_processes)
{
	int a = maildrop_lock(dfd);
	cr_assert(a >= 0);
	cr_expect_eq(child_tries_lock(), 0);
	maildrop_unlock(a);
	cr_expect_eq(child_tries_lock(), 1);
	/* The child's lock died with it. */
	int b = maildrop_lock(dfd);
	cr_expect(b >= 0);
	maildrop_unlock(b);
}

Test(maildrop, lock_unopenable_dir)
{
	cr_expect_eq(maildrop_lock(-1), -EBADF);
}

/* ---- open ----------------------------------------------------------------- */

Test(maildrop, open_reads_and_vanished_is_enoent)
{
	put("new/1.a,S=3", 3);
	put("cur/2.b,S=4:2,S", 4);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 2);
	int fd = maildrop_open(dfd, &s, 1);
	cr_assert(fd >= 0);
	char buf[16];
	cr_expect_eq(read(fd, buf, sizeof buf), 4);
	cr_expect(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	close(fd);
	cr_assert(unlinkat(dfd, "new/1.a,S=3", 0) == 0);
	cr_expect_eq(maildrop_open(dfd, &s, 0), -ENOENT);
	cr_expect_eq(maildrop_open(dfd, &s, 2), -EINVAL);
	maildrop_snap_free(&s);
}

Test(maildrop, open_follows_move_to_cur)
{
	put("new/1.a,S=3", 3);
	put("cur/2.b,S=4:2,", 4);
	put("cur/1.ab,S=5:2,S", 5); /* same prefix, other base: never taken */
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 3);
	cr_assert_str_eq(s.paths[0], "new/1.a,S=3");
	cr_assert_str_eq(s.paths[2], "cur/2.b,S=4:2,");
	cr_assert(renameat(dfd, "new/1.a,S=3", dfd, "cur/1.a,S=3:2,S") == 0);
	cr_assert(renameat(dfd, "cur/2.b,S=4:2,", dfd, "cur/2.b,S=4:2,RS") == 0);
	char buf[16];
	int fd = maildrop_open(dfd, &s, 0);
	cr_assert(fd >= 0, "%d", fd);
	cr_expect_eq(read(fd, buf, sizeof buf), 3);
	close(fd);
	fd = maildrop_open(dfd, &s, 2);
	cr_assert(fd >= 0, "%d", fd);
	cr_expect_eq(read(fd, buf, sizeof buf), 4);
	close(fd);
	maildrop_snap_free(&s);
}

/* ---- remove --------------------------------------------------------------- */

Test(maildrop, remove_only_marked)
{
	put("new/1.a,S=1", 1);
	put("new/2.b,S=1", 1);
	put("cur/3.c,S=1:2,S", 1);
	put("cur/4.d,S=1:2,", 1);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 4);
	s.msgs[0].deleted = true;
	s.msgs[2].deleted = true;
	cr_expect_eq(maildrop_remove(dfd, &s, 0), 0);
	cr_expect(!exists("new/1.a,S=1"));
	cr_expect(exists("new/2.b,S=1"));
	cr_expect(!exists("cur/3.c,S=1:2,S"));
	cr_expect(exists("cur/4.d,S=1:2,"));
	/* Again: everything marked is already gone, which counts as removed. */
	cr_expect_eq(maildrop_remove(dfd, &s, 1), 0);
	maildrop_snap_free(&s);
	snap(&s);
	cr_expect_eq(s.n, 2);
	maildrop_snap_free(&s);
}

Test(maildrop, remove_range_only_touches_its_range)
{
	put("new/1.a,S=1", 1);
	put("new/2.b,S=1", 1);
	put("new/3.c,S=1", 1);
	put("new/4.d,S=1", 1);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 4);
	for (unsigned i = 0; i < 4; i++)
		s.msgs[i].deleted = true;
	cr_expect_eq(maildrop_remove_range(dfd, &s, 1, 3, 1), 0);
	cr_expect(exists("new/1.a,S=1"));
	cr_expect(!exists("new/2.b,S=1"));
	cr_expect(!exists("new/3.c,S=1"));
	cr_expect(exists("new/4.d,S=1"));
	cr_expect_eq(maildrop_remove_range(dfd, &s, 3, 99, 1), 0); /* hi past the end */
	cr_expect(!exists("new/4.d,S=1"));
	cr_expect_eq(maildrop_sync(dfd), 0);
	maildrop_snap_free(&s);
}

Test(maildrop, remove_tolerates_vanished_and_follows_moves)
{
	put("new/1.a,S=1", 1);
	put("new/2.b,S=1", 1);
	put("cur/3.c,S=1:2,", 1);
	put("new/4.d,S=1", 1);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 4);
	for (unsigned i = 0; i < 3; i++)
		s.msgs[i].deleted = true;
	cr_assert(unlinkat(dfd, "new/1.a,S=1", 0) == 0);			 /* gone */
	cr_assert(renameat(dfd, "new/2.b,S=1", dfd, "cur/2.b,S=1:2,S") == 0);	 /* moved */
	cr_assert(renameat(dfd, "cur/3.c,S=1:2,", dfd, "cur/3.c,S=1:2,T") == 0); /* flagged */
	cr_expect_eq(maildrop_remove(dfd, &s, 0), 0);
	cr_expect(!exists("cur/2.b,S=1:2,S"));
	cr_expect(!exists("cur/3.c,S=1:2,T"));
	cr_expect(exists("new/4.d,S=1"));
	maildrop_snap_free(&s);
	snap(&s);
	cr_expect_eq(s.n, 1);
	maildrop_snap_free(&s);
}

Test(maildrop, remove_reports_failure)
{
	/* A directory where a message was: unlinkat fails with EISDIR, the
	 * other marked message is still removed. */
	put("new/1.a,S=1", 1);
	put("new/2.b,S=1", 1);
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, 2);
	s.msgs[0].deleted = s.msgs[1].deleted = true;
	cr_assert(unlinkat(dfd, "new/1.a,S=1", 0) == 0);
	cr_assert(mkdirat(dfd, "new/1.a,S=1", 0700) == 0);
	int rc = maildrop_remove(dfd, &s, 0);
	cr_expect(rc < 0 && rc != -ENOENT, "%d", rc);
	cr_expect(!exists("new/2.b,S=1"));
	maildrop_snap_free(&s);
}

/* ---- scale ----------------------------------------------------------------- */

Test(maildrop, ten_thousand, .timeout = 120)
{
	enum { N = 10000 };
	for (int i = 0; i < N; i++) {
		char p[96];
		/* seconds out of order with the creation order; two per second */
		int sec = (i * 7919) % (N / 2);
		snprintf(p, sizeof p, "%s/%d.M%dP42Q%d.host.example,S=%d", i % 3 ? "new" : "cur",
			 1700000000 + sec, i, i, i % 1000);
		if (i % 3 == 0) strcat(p, ":2,S");
		put(p, 0);
	}
	struct maildrop_snap s;
	snap(&s);
	cr_assert_eq(s.n, N);
	unsigned long prev = 0;
	for (unsigned i = 0; i < s.n; i++) {
		unsigned long sec = strtoul(s.paths[i] + 4, NULL, 10);
		cr_assert(sec >= prev, "%u", i);
		prev = sec;
	}
	/* uniqueness, cheaply: the UIDs here are the base names */
	for (unsigned i = 0; i < s.n; i++)
		cr_assert(strncmp(s.paths[i] + 4, s.msgs[i].uid, strlen(s.msgs[i].uid)) == 0);
	for (unsigned i = 0; i < s.n; i++)
		s.msgs[i].deleted = i % 2;
	cr_expect_eq(maildrop_remove(dfd, &s, 1), 0);
	maildrop_snap_free(&s);
	snap(&s);
	cr_expect_eq(s.n, N / 2);
	maildrop_snap_free(&s);
}

/* ---- descriptors ------------------------------------------------------------ */

static int open_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	cr_assert(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

Test(maildrop, no_descriptor_leaks)
{
	put("new/1.a,S=1", 1);
	put("cur/2.b:2,S", 1);
	struct maildrop_snap s;
	int before = open_fds();
	snap(&s);
	cr_assert(renameat(dfd, "new/1.a,S=1", dfd, "cur/1.a,S=1:2,S") == 0);
	int fd = maildrop_open(dfd, &s, 0);
	cr_assert(fd >= 0);
	close(fd);
	cr_assert(unlinkat(dfd, "cur/1.a,S=1:2,S", 0) == 0);
	cr_expect_eq(maildrop_open(dfd, &s, 0), -ENOENT);
	int l = maildrop_lock(dfd);
	cr_assert(l >= 0);
	cr_expect_eq(maildrop_lock(dfd), -EAGAIN);
	maildrop_unlock(l);
	s.msgs[0].deleted = s.msgs[1].deleted = true;
	cr_expect_eq(maildrop_remove(dfd, &s, 0), 0);
	maildrop_snap_free(&s);
	cr_expect_eq(open_fds(), before);
}
