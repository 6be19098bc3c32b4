/* A power-loss simulator for tests: an LD_PRELOAD library that remembers, for every file under
 * $POWERLOSS_DIR, what an fsync made durable.
 *
 * Each successful fsync() or fdatasync() of a regular file whose path starts with $POWERLOSS_DIR
 * copies the file's whole content, as the kernel holds it at that moment, to "<path>.synced"
 * (written to a temporary name, then renamed). After the process is killed, the test replaces
 * each file by its ".synced" copy (or empties it if it was never synced) and deletes SQLite's
 * "-shm": what remains is what a power cut at the moment of the kill could have left, in the
 * worst case of a disk that kept nothing unsynced. Directory fsyncs are not modelled (files
 * count as existing once created). Built by tests/support/powerloss.py with the system's cc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);

static void snapshot(int fd) {
    const char *dir = getenv("POWERLOSS_DIR");
    if (dir == NULL || *dir == '\0') return;
    char link[64], path[PATH_MAX], tmp[PATH_MAX + 16], dst[PATH_MAX + 16];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = '\0';
    if (strncmp(path, dir, strlen(dir)) != 0) return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    snprintf(tmp, sizeof tmp, "%s.synced.tmp", path);
    snprintf(dst, sizeof dst, "%s.synced", path);
    int in = open(path, O_RDONLY | O_CLOEXEC);
    if (in < 0) return;
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        close(in);
        return;
    }
    char buf[1 << 16];
    int ok = 1;
    for (;;) {
        ssize_t r = read(in, buf, sizeof buf);
        if (r == 0) break;
        if (r < 0) {
            if (errno == EINTR) continue;
            ok = 0;
            break;
        }
        for (ssize_t off = 0; off < r;) {
            ssize_t w = write(out, buf + off, (size_t)(r - off));
            if (w < 0) {
                if (errno == EINTR) continue;
                ok = 0;
                break;
            }
            off += w;
        }
        if (!ok) break;
    }
    close(in);
    close(out);
    if (ok) rename(tmp, dst);
    else unlink(tmp);
}

int fsync(int fd) {
    if (real_fsync == NULL) real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int rc = real_fsync(fd);
    if (rc == 0) {
        int saved = errno;
        snapshot(fd);
        errno = saved;
    }
    return rc;
}

int fdatasync(int fd) {
    if (real_fdatasync == NULL) real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int rc = real_fdatasync(fd);
    if (rc == 0) {
        int saved = errno;
        snapshot(fd);
        errno = saved;
    }
    return rc;
}
