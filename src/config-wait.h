/* A daemon that systemd started on a passed listening socket with a client
 * already waiting on it, and that cannot start on its configuration, waits for a good
 * one instead of exiting. That covers every start-up failure a
 * reload or a restart of the service can fix: the file does not load, or
 * the hash key credential it names (log_hash_key_credential) is missing or
 * wrong.
 *
 * Exiting (status 78) would leave the client that triggered the start
 * queued on the socket, so systemd would start the service again at once,
 * and again, until the socket's trigger limit failed the socket: every
 * client refused until an administrator ran reset-failed. With no client
 * waiting (systemctl restart, an upgrade's try-restart) nothing would
 * trigger it again, so it exits 78 and the restart reports the failure
 * (sessions the previous daemon handed over go on: KillMode=process);
 * the next client starts it again, and it waits then. Waiting, the
 * daemon accepts nothing (clients wait in the kernel backlog), says why in
 * STATUS= and the journal (the problem and the fix), answers the watchdog,
 * and tries the whole start-up load again on SIGHUP (systemctl reload,
 * which checks the file first). A restart of the service, which systemd
 * needs to pass a fixed credential, starts over. It never serves with a
 * configuration that did not load. */
#pragma once

#include "config.h"

/* Whether a daemon whose start-up load failed should wait: it was started
 * by systemd (see listen_started_by_systemd()) with listening sockets
 * passed, and a connection is pending on one of them now. */
bool config_wait_applies(void);

/* What a failed load stumbled on; it decides what the daemon says to do. */
enum config_wait_cause {
        CONFIG_WAIT_FILE,       /* the file: fix it, then reload */
        CONFIG_WAIT_CREDENTIAL, /* the hash key credential: fix it, then restart the service */
};

/* One attempt at everything a start takes from the configuration, the same
 * at start and at each reload while waiting: 0 when it all loaded (the
 * callback keeps the result), or -errno with every problem in *diag
 * ("FILE:LINE: message" or "log_hash_key_credential: ..." lines, never
 * logged by the callback) and *cause set. */
typedef int (*config_wait_load_fn)(void *userdata, struct config_diag *diag, enum config_wait_cause *cause);

/* Waits as described above, after a first attempt of `load` failed with
 * `cause` and `problems` (its diag text, already logged by the caller).
 * `path` names the file in messages. Returns 0 once a SIGHUP made `load`
 * succeed, or -ECANCELED when SIGTERM or SIGINT came first, or another
 * -errno when the wait itself cannot be set up; every outcome is logged. */
int config_wait(const char *path, config_wait_load_fn load, void *userdata, enum config_wait_cause cause,
                const char *problems);
