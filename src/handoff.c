/* See handoff.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "handoff.h"
#include "util.h"

#define HANDOFF_MAGIC UINT32_C(0x48504d45) /* "EMPH" */
#define HANDOFF_VERSION 1

struct handoff_header {
        uint32_t magic;
        uint32_t version;
        uint32_t entry_size;    /* sizeof(struct handoff_entry) */
        uint32_t count;
};

static int write_all(int fd, const void *buf, size_t n) {
        const char *p = buf;

        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w < 0)
                        return negative_errno();
                p += w;
                n -= (size_t) w;
        }
        return 0;
}

int handoff_write(const struct handoff_entry *e, size_t n) {
        struct handoff_header h = { .magic = HANDOFF_MAGIC, .version = HANDOFF_VERSION,
                                    .entry_size = sizeof(*e), .count = (uint32_t) n };
        _cleanup_(closep) int fd = memfd_create(HANDOFF_FDNAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
        int r;

        if (fd < 0)
                return negative_errno();
        if (n > UINT32_MAX)
                return -E2BIG;
        r = write_all(fd, &h, sizeof(h));
        if (r == 0 && n)
                r = write_all(fd, e, n * sizeof(*e));
        if (r < 0)
                return r;
        /* The next daemon reads what this one wrote, nothing else. */
        if (fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE) < 0)
                return negative_errno();
        r = fd;
        fd = -1;
        return r;
}

int handoff_table_open(struct handoff_table *t, uint32_t capacity) {
        struct handoff_header h = { .magic = HANDOFF_MAGIC, .version = HANDOFF_VERSION,
                                    .entry_size = sizeof(struct handoff_entry), .count = capacity };
        size_t size = sizeof(h) + (size_t) capacity * sizeof(struct handoff_entry);
        int r;

        *t = (struct handoff_table) { .fd = memfd_create(HANDOFF_FDNAME, MFD_CLOEXEC | MFD_ALLOW_SEALING),
                                      .capacity = capacity };
        if (t->fd < 0)
                return negative_errno();
        if (ftruncate(t->fd, (off_t) size) < 0)
                goto fail;
        t->map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
        if (t->map == MAP_FAILED) {
                t->map = NULL;
                goto fail;
        }
        t->map_size = size;
        /* Parent-only, like struct child: no worker can rewrite the list. */
        if (madvise(t->map, size, MADV_DONTFORK) < 0)
                goto fail;
        /* Only this mapping writes it from now on: any other process that
         * gets at the memfd (systemd's store, /proc) cannot write(), resize
         * or map it writable. */
        if (fcntl(t->fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE) < 0)
                goto fail;
        memcpy(t->map, &h, sizeof(h));
        t->entry = (struct handoff_entry *) ((char *) t->map + sizeof(h));
        return 0;
fail:
        r = negative_errno();
        handoff_table_close(t);
        return r;
}

void handoff_table_set(struct handoff_table *t, uint32_t slot, const struct handoff_entry *e) {
        struct handoff_entry *d;

        if (!t->entry || slot >= t->capacity)
                return;
        d = &t->entry[slot];
        __atomic_store_n(&d->pid, 0, __ATOMIC_RELEASE);
        d->start_time = e->start_time;
        d->peer = e->peer;
        __atomic_store_n(&d->pid, e->pid, __ATOMIC_RELEASE);
}

void handoff_table_clear(struct handoff_table *t, uint32_t slot) {
        if (t->entry && slot < t->capacity)
                __atomic_store_n(&t->entry[slot].pid, 0, __ATOMIC_RELEASE);
}

void handoff_table_close(struct handoff_table *t) {
        if (t->map)
                munmap(t->map, t->map_size);
        safe_close(t->fd);
        *t = (struct handoff_table) { .fd = -1 };
}

static int read_at(int fd, void *buf, size_t n, off_t at) {
        char *p = buf;

        while (n > 0) {
                ssize_t got = pread(fd, p, n, at);
                if (got < 0 && errno == EINTR)
                        continue;
                if (got < 0)
                        return negative_errno();
                if (got == 0)
                        return -EBADMSG;
                p += got;
                n -= (size_t) got;
                at += got;
        }
        return 0;
}

int handoff_read(int fd, size_t max, struct handoff_entry **out, size_t *n) {
        struct handoff_header h;
        struct handoff_entry *e = NULL;
        struct stat st;
        size_t good = 0;
        int r, skipped = 0;

        *out = NULL;
        *n = 0;
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) || st.st_size < (off_t) sizeof(h))
                return -EBADMSG;
        r = read_at(fd, &h, sizeof(h), 0);
        if (r < 0)
                return r;
        if (h.magic != HANDOFF_MAGIC || h.version != HANDOFF_VERSION || h.entry_size != sizeof(*e) ||
            h.count > max || (uint64_t) st.st_size != sizeof(h) + (uint64_t) h.count * sizeof(*e))
                return -EBADMSG;
        if (h.count == 0)
                return 0;
        e = calloc(h.count, sizeof(*e));
        if (!e)
                return -ENOMEM;
        r = read_at(fd, e, (size_t) h.count * sizeof(*e), sizeof(h));
        if (r < 0) {
                free(e);
                return r;
        }
        for (uint32_t i = 0; i < h.count; i++) {
                sa_family_t f = e[i].peer.sa.sa_family;
                if (e[i].pid == 0)
                        continue; /* an empty slot of a live list */
                /* AF_UNSPEC: a session whose client is unknown (server_adopt_leftovers()). */
                if (e[i].pid <= 1 || (f != AF_INET && f != AF_INET6 && f != AF_UNSPEC)) {
                        skipped++;
                        continue;
                }
                e[good++] = e[i];
        }
        *out = e;
        *n = good;
        if (!good) {
                free(e);
                *out = NULL;
        }
        return skipped;
}

int handoff_start_time(pid_t pid, uint64_t *out) {
        char path[64], buf[1024], *p;
        _cleanup_(closep) int fd = -1;
        unsigned long long start;
        ssize_t len;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : negative_errno();
        len = read(fd, buf, sizeof(buf) - 1);
        if (len < 0)
                return negative_errno();
        buf[len] = 0;
        /* The name (field 2) may hold spaces and ')': the fields after it
         * start after its last ')'. Field 22 is the 20th after it. */
        p = strrchr(buf, ')');
        if (!p)
                return -EBADMSG;
        p++;
        for (int field = 3; field < 22; field++) {
                p = strchr(p + 1, ' ');
                if (!p)
                        return -EBADMSG;
        }
        if (sscanf(p, " %llu", &start) != 1)
                return -EBADMSG;
        *out = start;
        return 0;
}

int handoff_same_process(int pidfd, const struct handoff_entry *e) {
        struct pollfd p = { .fd = pidfd, .events = POLLIN };
        uint64_t start;
        int r;

        if (e->pid == getpid())
                return -ESRCH; /* our own pid now */
        /* Signal 0 checks permission only: it is granted for a process
         * running as our user (we hold no capability under systemd). */
        if (pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
                return errno == EPERM ? -EPERM : errno == ESRCH ? -ESRCH : negative_errno();
        /* The pidfd pins the pid: while it is not readable the process
         * lives and the pid cannot name another one, so what /proc says of
         * it now is of this process. /proc may not show it at all: under
         * ProtectProc=invisible a process in another user namespace (the
         * previous start's, with PrivateUsers=) is hidden even when it runs
         * as our user. Then the user is the check: under DynamicUser= only
         * this service's processes run as it, and the only ones besides this
         * daemon are the previous daemons' workers. */
        r = handoff_start_time(e->pid, &start);
        if (r < 0 && r != -ESRCH)
                return r;
        if (poll(&p, 1, 0) != 0)
                return -ESRCH; /* exited (readable), or cannot tell */
        if (r == 0 && e->start_time && start != e->start_time)
                return -ESRCH;
        return 0;
}

/* A memfd of one policy word that nobody can resize under the mappings. */
static bool policy_file(int fd) {
        struct stat st;
        int seals = fcntl(fd, F_GET_SEALS);

        return seals >= 0 && (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) == (F_SEAL_SHRINK | F_SEAL_GROW) &&
               !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
               st.st_size == sizeof(uint64_t);
}

int handoff_policy_open(struct handoff_policy *p, int fd) {
        char path[64];
        int ro, r;
        void *m;

        *p = (struct handoff_policy) { .fd = -1 };
        if (fd >= 0 && !policy_file(fd))
                fd = safe_close(fd);
        p->stored = fd >= 0;
        if (fd < 0) {
                fd = memfd_create(HANDOFF_POLICY_FDNAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
                if (fd < 0)
                        return negative_errno();
                if (ftruncate(fd, sizeof(uint64_t)) < 0 ||
                    fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW) < 0)
                        goto fail_fd;
        }
        p->fd = fd;
        m = mmap(NULL, sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (m == MAP_FAILED)
                goto fail;
        p->rw = m;
        if (madvise(m, sizeof(uint64_t), MADV_DONTFORK) < 0)
                goto fail;
        /* From a read-only opening: a worker cannot mprotect() it writable. */
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        ro = open(path, O_RDONLY | O_CLOEXEC);
        if (ro < 0)
                goto fail;
        m = mmap(NULL, sizeof(uint64_t), PROT_READ, MAP_SHARED, ro, 0);
        safe_close(ro);
        if (m == MAP_FAILED)
                goto fail;
        p->ro = m;
        return 0;
fail_fd:
        r = negative_errno();
        safe_close(fd);
        return r;
fail:
        r = negative_errno();
        handoff_policy_close(p);
        return r;
}

void handoff_policy_close(struct handoff_policy *p) {
        if (p->rw)
                munmap(p->rw, sizeof(uint64_t));
        if (p->ro)
                munmap((void *) p->ro, sizeof(uint64_t));
        safe_close(p->fd);
        *p = (struct handoff_policy) { .fd = -1 };
}
