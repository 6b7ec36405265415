#include "store/sync.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

int sync_all(int dirfd)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) return -errno;
	int rc = syncfs(fd) == 0 && fsync(fd) == 0 ? 0 : -errno;
	close(fd);
	return rc;
}

int sync_error(int fd)
{
	/* Waits for writeback (none is left) and reports the file's error. */
	return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_AFTER) == 0 ? 0 : -errno;
}
