#include <inttypes.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "notify.h"
#include "util.h"

uint64_t notify_watchdog_interval(void) {
        uint64_t usec = 0;

        if (sd_watchdog_enabled(0, &usec) <= 0)
                return 0;
        return usec / 2;
}

void notify_ready(const char *status) {
        (void) sd_notifyf(0, "READY=1\nSTATUS=%s", status);
}

void notify_status(const char *status) {
        (void) sd_notifyf(0, "STATUS=%s", status);
}

void notify_reloading(void) {
        /* MONOTONIC_USEC lets systemd match READY=1 to this reload. */
        (void) sd_notifyf(0, "RELOADING=1\nSTATUS=Reloading configuration\nMONOTONIC_USEC=%" PRIu64,
                          now_usec(CLOCK_MONOTONIC));
}

void notify_stopping(const char *status, uint64_t extend_usec) {
        (void) sd_notifyf(0, "STOPPING=1\nSTATUS=%s\nEXTEND_TIMEOUT_USEC=%" PRIu64, status, extend_usec);
}

void notify_watchdog(void) {
        (void) sd_notify(0, "WATCHDOG=1");
}
