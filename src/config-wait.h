/* A daemon that systemd started on a passed listening socket and whose
 * configuration does not load waits for a good one instead of exiting.
 *
 * Exiting (status 78) would leave the client that triggered the start
 * queued on the socket, so systemd would start the service again at once,
 * and again, until the socket's trigger limit failed the socket: every
 * client refused until an administrator ran reset-failed. Waiting, the
 * daemon accepts nothing (clients wait in the kernel backlog), says why in
 * STATUS= and the journal (FILE:LINE and the fix), answers the watchdog,
 * and reads the file again on SIGHUP (systemctl reload, which checks the
 * file first). It never serves with a configuration that did not load. */
#pragma once

#include "config.h"

/* Whether a daemon whose configuration failed to load should wait: it was
 * started by systemd (see listen_started_by_systemd()) with listening
 * sockets passed. */
bool config_wait_applies(void);

/* Waits as described above. `problems` is the text of the failed load
 * (one "FILE:LINE: message" a line). Returns 0 once a SIGHUP loaded the
 * file into *cfg (with *no_file as config_load_file() sets it), or
 * -ECANCELED when SIGTERM or SIGINT came first, or another -errno when the
 * wait itself cannot be set up; every outcome is logged. */
int config_wait(const char *path, bool given, const char *problems, struct config *cfg, bool *no_file);
