/*
 * dir: reading a directory given relative to an open one (maildrop scans,
 * tmp/ cleanup, the relay queue's load and scan).
 */
#ifndef MPB_DIR_H
#define MPB_DIR_H

#include <dirent.h>

/* A stream over DIRFD/NAME ("." for DIRFD itself), or NULL with errno set
 * (nothing left open). closedir() closes it. */
DIR *dir_open(int dirfd, const char *name);

#endif
