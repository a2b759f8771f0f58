/* systemd notification (Type=notify).
 *
 * The socket to NOTIFY_SOCKET is opened and connected once, at start, and
 * every notification goes out on it: sd_notify() opens a socket per call,
 * which fails while the process is out of descriptors (EMFILE at accept()),
 * just when WATCHDOG=1 must still reach systemd. A send never blocks and
 * never raises SIGPIPE; a failed one is counted (notify_failures()) for the
 * caller to report. Without notify_open(), or with NOTIFY_SOCKET unset,
 * every notification is a no-op, so the daemon behaves the same outside
 * systemd. The socket is close-on-exec and above fd 3, so workers (which
 * close everything above fd 3) never hold it. */
#pragma once

#include <stdint.h>

/* Opens the socket NOTIFY_SOCKET names: a path, or an abstract name led by
 * '@'. Returns 0 (also when it is unset) or -errno. */
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

/* How many notifications could not be sent since the last call, and the
 * error of the last one (0 when none failed); the count restarts at 0. */
unsigned notify_failures(int *last_error);
