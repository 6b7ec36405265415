#include "store/dir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define EXT_SUPER_MAGIC 0xEF53 /* ext2, ext3 and ext4 alike */

DIR *dir_open(int dirfd, const char *name)
{
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) return NULL;
	DIR *d = fdopendir(fd);
	if (!d) {
		int err = errno;
		close(fd);
		errno = err;
	}
	return d;
}

bool dir_unjournaled(int dirfd)
{
	struct statfs sf;
	struct stat st;
	if (fstatfs(dirfd, &sf) != 0 || sf.f_type != EXT_SUPER_MAGIC || fstat(dirfd, &st) != 0)
		return false;
	/* The block device's kernel name ("vda", "dm-0", "loop3"): the last
	 * part of /sys/dev/block/MAJOR:MINOR's link. */
	char path[64], link[PATH_MAX];
	snprintf(path, sizeof path, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
	ssize_t n = readlink(path, link, sizeof link - 1);
	if (n <= 0)
		return false;
	link[n] = '\0';
	const char *name = strrchr(link, '/') ? strrchr(link, '/') + 1 : link;
	size_t len = strlen(name);
	DIR *d = opendir("/proc/fs/jbd2");
	if (!d) { /* jbd2 not loaded: no journal mounted (when /proc is there) */
		int err = errno;
		return err == ENOENT && access("/proc/fs", F_OK) == 0;
	}
	bool found = false;
	struct dirent *de;
	while (!found && (de = readdir(d)) != NULL)
		found = strncmp(de->d_name, name, len) == 0 && de->d_name[len] == '-';
	closedir(d);
	return !found;
}
