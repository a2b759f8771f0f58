/* The socket-unit drop-in that echo-mpserv-generator writes: the
 * configuration file is the single source of truth for the port, the
 * listen addresses and the caps, systemd's socket unit follows it. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/* True when c listens where echo-mpserv.socket already does, the defaults'
 * port and address (config_defaults(): port 7 on the dual-stack wildcard):
 * then the drop-in leaves ListenStream= alone. */
bool dropin_is_default(const struct config *c);

/* Writes a [Socket] section: MaxConnections= and MaxConnectionsPerSource=
 * from max_clients and max_clients_per_source (systemd applies them with
 * Accept=yes only), and, unless dropin_is_default(), ListenStream= (and
 * BindIPv6Only= when "::" must not take IPv4 too). `source` names the
 * configuration file in a comment. Returns 0 or -EIO. */
int dropin_write(const struct config *c, const char *source, FILE *f);

/* The fail-closed drop-in, for a configuration the generator could not read:
 * echo-mpserv.socket must not listen where the file may not want it. Two
 * ExecStartPre= lines: `checker --check-config` prints the file's problems as
 * they are then (FILE:LINE, into the socket unit's journal, so "systemctl
 * status echo-mpserv.socket" shows them), and a shell line says why the
 * socket stays closed and fails with 78 (CONFIG), so it never binds. Returns
 * 0 or -EIO. */
int dropin_write_closed(const char *source, const char *checker, FILE *f);
