/* Small helpers shared by every module: descriptor ownership, the 0/-errno
 * error contract, and monotonic time. Header-only on purpose: nothing here
 * deserves a module of its own. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define _cleanup_(f) __attribute__((cleanup(f)))
/* A parameter a callback's signature requires but this callback ignores. */
#define _unused_ __attribute__((unused))
#define _noreturn_ __attribute__((noreturn))

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)

/* The error contract, for every function in src/ that can fail: it returns
 * 0 or -errno. One whose result is a number that cannot be negative (a
 * count, a length, a port, an index, a descriptor, a pid) returns it in
 * place of the 0, as read(2) does. Any other result (whether, which
 * reason, which outcome) goes through a pointer parameter (ret_*), or is
 * the return value of a function that cannot fail. An error is never -1
 * and never a negated enum.
 *
 * The one place where libc's -1/errno becomes our -errno. errno can in
 * theory be 0 after a failure of a badly behaved library; never let that
 * turn into "success". */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

/* Closes fd if it is valid, keeps errno intact, and returns -1 so callers can
 * write `fd = safe_close(fd);` and never hold a stale number. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                close(fd);
                errno = saved;
        }
        return -1;
}

/* Reads fd to its end into buf (size bytes); *ret_len is size + 1 when the
 * file holds more than size bytes (nothing past size is stored). Returns 0
 * or -errno. */
static inline int read_bounded(int fd, void *buf, size_t size, size_t *ret_len) {
        size_t len = 0;

        for (;;) {
                unsigned char extra;
                bool full = len == size;
                ssize_t n = read(fd, full ? (void *) &extra : (char *) buf + len, full ? 1 : size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        break;
                len += (size_t) n;
                if (full)
                        break;
        }
        *ret_len = len;
        return 0;
}

/* The abortive linger (SO_LINGER 0): close() then resets the connection
 * (RST) and the kernel drops both queues at once, with no TIME_WAIT and no
 * orphan socket holding unacknowledged data. Best effort: a socket that
 * refuses it is closed in order. */
static inline void set_abortive_linger(int fd) {
        (void) setsockopt(fd, SOL_SOCKET, SO_LINGER, &(struct linger) { .l_onoff = 1, .l_linger = 0 },
                          sizeof(struct linger));
}

/* Resets the connection and closes fd; returns -1, as safe_close(). */
static inline int reset_close(int fd) {
        if (fd >= 0)
                set_abortive_linger(fd);
        return safe_close(fd);
}

static inline void closep(int *fd) {
        safe_close(*fd);
}

static inline void freep(void *p) {
        free(*(void **) p);
}

/* Durations the configuration states in milliseconds (its documented unit,
 * struct config's *_ms fields) become microseconds here, the one place. */
static inline uint64_t usec_from_ms(uint32_t ms) {
        return (uint64_t) ms * USEC_PER_MSEC;
}

/* Time inside the program is a uint64_t of microseconds, UINT64_MAX meaning
 * "no deadline". Every conversion into a kernel timeout goes through the
 * helpers below, which clamp a single wait to WAIT_MAX_USEC: a caller whose
 * deadline lies further simply wakes and waits again. A day fits every type
 * involved on every architecture (an int of milliseconds overflows after
 * 24.8 days, and a 32-bit kernel reads a socket timeout over ~24.8 days as
 * no timeout at all), so no remaining time can turn into "forever". */
#define WAIT_MAX_USEC (UINT64_C(86400) * USEC_PER_SEC)

static inline uint64_t wait_clamp(uint64_t usec) {
        return usec < WAIT_MAX_USEC ? usec : WAIT_MAX_USEC;
}

/* For poll() and epoll_wait(): -1 (no timeout) for UINT64_MAX, otherwise
 * milliseconds rounded up, so a wait never ends before its deadline. */
static inline int usec_to_timeout_ms(uint64_t usec) {
        if (usec == UINT64_MAX)
                return -1;
        usec = wait_clamp(usec);
        return (int) ((usec + USEC_PER_MSEC - 1) / USEC_PER_MSEC);
}

/* For ppoll(): NULL (no timeout) for UINT64_MAX, otherwise *ts filled. */
static inline struct timespec *usec_to_timespec(uint64_t usec, struct timespec *ts) {
        if (usec == UINT64_MAX)
                return NULL;
        usec = wait_clamp(usec);
        *ts = (struct timespec) { .tv_sec = (time_t) (usec / USEC_PER_SEC),
                                  .tv_nsec = (long) (usec % USEC_PER_SEC) * 1000 };
        return ts;
}

/* For SO_RCVTIMEO, where the kernel reads {0, 0} as no timeout: UINT64_MAX
 * gives {0, 0}, and 0 gives one microsecond (expire at once). */
static inline struct timeval usec_to_timeval(uint64_t usec) {
        if (usec == UINT64_MAX)
                return (struct timeval) { 0, 0 };
        usec = usec ? wait_clamp(usec) : 1;
        return (struct timeval) { .tv_sec = (time_t) (usec / USEC_PER_SEC),
                                  .tv_usec = (suseconds_t) (usec % USEC_PER_SEC) };
}

static inline uint64_t now_usec(clockid_t clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t) ts.tv_sec * USEC_PER_SEC + (uint64_t) ts.tv_nsec / 1000;
}

/* Zeroed memory that only the parent uses (bookkeeping of workers and
 * sources): MADV_DONTFORK keeps it out of every child, so fork() copies no
 * page tables for it and a worker cannot touch it by mistake. NULL on
 * failure; free with parent_only_free() and the same size. */
static inline void *parent_only_alloc(size_t size) {
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

        if (p == MAP_FAILED)
                return NULL;
        (void) madvise(p, size, MADV_DONTFORK);
        return p;
}

static inline void parent_only_free(void *p, size_t size) {
        if (p)
                munmap(p, size);
}
