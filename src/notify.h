/* systemd notification (Type=notify).
 *
 * The socket to NOTIFY_SOCKET is opened and connected once, at start, and
 * every notification goes out on it: sd_notify() opens a socket per call,
 * which fails while the process is out of descriptors (EMFILE at accept()),
 * just when WATCHDOG=1 must still reach systemd. A send never raises
 * SIGPIPE. State messages (READY=1, RELOADING=1, STOPPING=1) wait up to
 * NOTIFY_STATE_WAIT_USEC for room when PID 1 is slow to read its socket
 * and the queue is full, as sd_notify() blocks there: losing one makes
 * systemd kill the unit at TimeoutStartSec= or hang a reload, and the
 * daemon is at a transition anyway. STATUS= alone and WATCHDOG=1 never
 * wait: a later STATUS= supersedes a lost one, and a lost WATCHDOG=1 is
 * sent again at the next ping, half of WatchdogSec= later, still in time
 * (waiting would stall accepting and reaping instead). A failed send is
 * counted with its kind (notify_failures()) for the caller to report.
 * A NOTIFY_SOCKET nobody listens on (a removed path, an abstract name
 * nobody bound) does not stop the daemon: notify_open() reports it and
 * every state message tries to connect again. Without notify_open(), or
 * with NOTIFY_SOCKET unset, every notification is a no-op, so the daemon
 * behaves the same outside systemd. The socket is close-on-exec and above
 * fd 3, so workers (which close everything above fd 3) never hold it. */
#pragma once

#include <stddef.h>
#include <stdint.h>

/* How long a state message waits for room on a full notification socket. */
#define NOTIFY_STATE_WAIT_USEC UINT64_C(5000000) /* 5 s */

/* The kinds of notification, as bits of notify_failures()' *kinds. */
enum {
        NOTIFY_KIND_READY = 1u << 0,
        NOTIFY_KIND_RELOADING = 1u << 1,
        NOTIFY_KIND_STOPPING = 1u << 2,
        NOTIFY_KIND_STATUS = 1u << 3,
        NOTIFY_KIND_WATCHDOG = 1u << 4,
};

/* Opens the socket NOTIFY_SOCKET names: a path, or an abstract name led by
 * '@'. Returns 0 (also when it is unset) or -errno: -EINVAL for a name that
 * is neither (notifications are then off), the error of connect() for a
 * socket nobody listens on (state messages then try to connect again). */
int notify_open(void);
void notify_close(void);

/* The watchdog ping interval in usec (half of WatchdogSec=), 0 when off. */
uint64_t notify_watchdog_interval(void);

void notify_ready(const char *status);
void notify_status(const char *status);
void notify_reloading(void);
/* extend_usec: how long the stop may still take (the drain plus the kill
 * grace), so a drain_timeout longer than TimeoutStopSec= is not cut short
 * by the service manager. */
void notify_stopping(const char *status, uint64_t extend_usec);
void notify_watchdog(void);

/* Stores fd in the service manager's file descriptor store under `name`
 * (FDSTORE=1, FDNAME=) and waits, up to NOTIFY_STATE_WAIT_USEC, until the
 * manager has taken it (BARRIER=1). 0, -ENOTCONN without a notification
 * socket, or -errno. The caller keeps fd. */
int notify_store_fd(int fd, const char *name);

/* Removes what the store holds under `name` (FDSTOREREMOVE=1); a failure
 * is counted like that of a STATUS=. */
void notify_store_remove(const char *name);

/* How many notifications could not be sent since the last call, the error
 * of the last one (0 when none failed) and their kinds (NOTIFY_KIND_*
 * bits); the count restarts at 0. */
unsigned notify_failures(int *last_error, unsigned *kinds);
/* Names the kinds in `kinds`, e.g. "READY=1, WATCHDOG=1", into buf. */
void notify_kinds_format(unsigned kinds, char *buf, size_t size);
