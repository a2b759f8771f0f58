/* systemd notification (Type=notify). Every call is a no-op when
 * NOTIFY_SOCKET is unset, so the daemon behaves the same outside systemd. */
#pragma once

#include <stdint.h>

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
