/*
 * dir: reading a directory given relative to an open one (maildrop scans,
 * tmp/ cleanup, the relay queue's load and scan).
 */
#ifndef MPB_DIR_H
#define MPB_DIR_H

#include <dirent.h>
#include <stdbool.h>

/* A stream over DIRFD/NAME ("." for DIRFD itself), or NULL with errno set
 * (nothing left open). closedir() closes it. */
DIR *dir_open(int dirfd, const char *name);

/* Whether the directory DIRFD is on ext2/3/4 without a journal: there a
 * power cut while a directory grows can damage it, and e2fsck then moves
 * whole, long-stable files into lost+found (tests/integration/
 * test_powercut.py). Told by the jbd2 statistics the kernel keeps under
 * /proc/fs/jbd2 for every mounted journal (DEVICE-INODE); false when it
 * cannot tell (no /proc or /sys). An external journal is named after its
 * own device: such a file system is reported as unjournaled. */
bool dir_unjournaled(int dirfd);

#endif
