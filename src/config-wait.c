/* See config-wait.h. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "config-wait.h"
#include "listen.h"
#include "log.h"
#include "notify.h"
#include "util.h"

/* What failed and what to do, by cause. systemd passes credentials at
 * start only: a reload cannot bring a fixed one. */
static const char *const what[] = {
        [CONFIG_WAIT_FILE] = "the configuration",
        [CONFIG_WAIT_CREDENTIAL] = "the hash key credential",
};
static const char *const fix[] = {
        [CONFIG_WAIT_FILE] = "fix the file, then run: systemctl reload echo-mpserv",
        [CONFIG_WAIT_CREDENTIAL] = "fix the file LoadCredential= names, then run: systemctl restart echo-mpserv",
};

bool config_wait_applies(void) {
        /* Accept=yes passes one connected socket: that instance serves one
         * client, and its failure does not trigger the socket again. Only a
         * client already waiting would trigger it again; with none (a
         * restart, an upgrade's try-restart) exiting 78 is right: the
         * restart reports the failure. Sessions the previous daemon handed
         * over are no reason to wait: under KillMode=process they go on
         * when this daemon exits, each ending on its own. */
        return listen_started_by_systemd() && listen_passed_listener() && listen_client_waiting();
}

/* STATUS= holds the first problem (the journal has them all, logged by
 * the caller) and says what to do. */
static void tell(enum config_wait_cause cause, const char *problems) {
        size_t len = strcspn(problems, "\n");
        unsigned more = 0;
        char status[512];

        for (const char *p = problems + len; *p; p++)
                more += *p == '\n' && p[1];
        snprintf(status, sizeof(status), "Not serving, %s does not load: %.*s%s; %s", what[cause],
                 (int) (len > 300 ? 300 : len), problems, more ? " (and more: echo-mpserv --check-config)" : "",
                 fix[cause]);
        notify_ready(status);
        log_msg(LOG_ERR, MSGID_CONFIG, "not serving: %s does not load; clients wait in the socket's queue; %s",
                what[cause], fix[cause]);
}

int config_wait(const char *path, config_wait_load_fn load, void *userdata, enum config_wait_cause cause,
                const char *problems) {
        uint64_t watchdog = notify_watchdog_interval();
        _cleanup_(closep) int sfd = -1;
        sigset_t mask;
        int r;

        /* Blocked since main() began; the server reads them later. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0)
                return log_errno(LOG_ERR, negative_errno(), MSGID_CONFIG, "cannot wait for a configuration");
        r = notify_open();
        if (r < 0)
                log_errno(LOG_WARNING, r, NULL, "cannot reach the service manager's notification socket");
        tell(cause, problems);

        for (;;) {
                struct pollfd p = { .fd = sfd, .events = POLLIN };
                struct signalfd_siginfo si;
                struct config_diag diag = { 0 };

                r = poll(&p, 1, watchdog ? (int) (watchdog / 1000) : -1);
                if (r < 0 && errno != EINTR)
                        return log_errno(LOG_ERR, negative_errno(), MSGID_CONFIG, "cannot wait for a configuration");
                if (watchdog)
                        notify_watchdog();
                if (r <= 0 || read(sfd, &si, sizeof(si)) != (ssize_t) sizeof(si))
                        continue;
                if (si.ssi_signo != SIGHUP) {
                        log_msg(LOG_NOTICE, MSGID_SHUTDOWN, "%s: stopping; never served, %s did not load",
                                strsignal((int) si.ssi_signo), what[cause]);
                        return -ECANCELED;
                }
                notify_reloading();
                r = load(userdata, &diag, &cause);
                if (r >= 0) {
                        log_msg(LOG_NOTICE, MSGID_RELOAD, "configuration loaded from %s; starting to serve", path);
                        return 0;
                }
                log_lines(LOG_ERR, MSGID_RELOAD_FAILED, "reload failed, still not serving: ", diag.text);
                tell(cause, diag.text);
        }
}
