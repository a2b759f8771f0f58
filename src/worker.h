/* The echo session: everything a worker does with its one client.
 *
 * worker_echo() returns every byte it receives, in order, and ends the
 * session for exactly one recorded reason. It counts bytes into *stats as it
 * goes, so whoever reads stats afterwards (the parent, through shared memory)
 * sees the true figures even if the worker is killed mid-session. */
#pragma once

#include <stdint.h>

enum close_reason {
        CLOSE_NONE = 0,         /* still running, or died before deciding */
        CLOSE_CLIENT,           /* client closed its side; all echoed */
        CLOSE_RESET,            /* connection reset by the client */
        CLOSE_IDLE,             /* idle_timeout: nothing received */
        CLOSE_WRITE_TIMEOUT,    /* write_timeout: client does not read */
        CLOSE_SESSION_TIME,     /* max_session_time reached */
        CLOSE_SESSION_BYTES,    /* max_session_bytes received and echoed */
        CLOSE_SHUTDOWN,         /* cut at the end of the drain */
        CLOSE_ERROR,            /* anything else; stats.error says what */
        _CLOSE_REASON_MAX,
};

struct worker_limits {
        uint32_t buffer_size;
        uint32_t socket_buffer;         /* 0: the kernel's autotuning */
        uint32_t idle_timeout_ms;       /* 0: none */
        uint32_t write_timeout_ms;      /* 0: none */
        uint32_t max_session_time_ms;   /* 0: none */
        uint64_t max_session_bytes;     /* 0: none */
};

struct worker_stats {
        uint64_t bytes_in;
        uint64_t bytes_out;
        uint64_t end_usec;      /* CLOCK_MONOTONIC when the session ended */
        int32_t reason;         /* enum close_reason */
        int32_t error;          /* errno for CLOSE_ERROR */
};

/* fd: a connected stream socket, best passed blocking (a non-blocking one
 * costs a system call to change). buf: limits->buffer_size
 * bytes. start_usec: CLOCK_MONOTONIC start of the session. The caller still
 * owns fd; see worker_close(). */
enum close_reason worker_echo(int fd, const struct worker_limits *limits, uint64_t start_usec,
                              void *buf, struct worker_stats *stats);

/* Closes fd the way the reason calls for: an orderly FIN after a normal end,
 * an abortive close (RST, kernel buffers dropped at once) when the client
 * stopped reading, so a stuck client cannot pin kernel memory. */
void worker_close(int fd, enum close_reason reason);

const char *close_reason_name(enum close_reason reason);
