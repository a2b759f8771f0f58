/* systemd notification (Type=notify). Every call is a no-op when
 * NOTIFY_SOCKET is unset, so the daemon behaves the same outside systemd. */
#pragma once

#include <stdint.h>

/* The watchdog ping interval in usec (half of WatchdogSec=), 0 when off. */
uint64_t notify_watchdog_interval(void);

void notify_ready(const char *status);
void notify_status(const char *status);
void notify_reloading(void);
void notify_stopping(const char *status);
void notify_watchdog(void);
