/* Captures what the code under test writes to stderr. */
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include "test.h"

struct capture {
        int saved, pipe[2];
};

static inline void capture_start(struct capture *c) {
        ASSERT(pipe2(c->pipe, O_NONBLOCK) == 0);
        c->saved = dup(STDERR_FILENO);
        ASSERT(dup2(c->pipe[1], STDERR_FILENO) == STDERR_FILENO);
}

/* Restores stderr; returns what was written (static buffer). */
static inline const char *capture_end(struct capture *c) {
        static char buf[16384];
        ssize_t n;

        dup2(c->saved, STDERR_FILENO);
        close(c->saved);
        close(c->pipe[1]);
        n = read(c->pipe[0], buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = 0;
        close(c->pipe[0]);
        return buf;
}
