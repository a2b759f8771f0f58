/* The socket-unit drop-in that echo-mpserv-generator writes: the
 * configuration file is the single source of truth for the port and the
 * listen addresses, systemd's socket unit follows it. */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "config.h"

/* True when c listens where echo-mpserv.socket already does (port 7 on the
 * dual-stack wildcard): then no drop-in is needed. */
bool dropin_is_default(const struct config *c);

/* Writes a [Socket] section replacing ListenStream= (and BindIPv6Only= when
 * "::" must not take IPv4 too). `source` names the configuration file in a
 * comment. Returns 0 or -EIO. */
int dropin_write(const struct config *c, const char *source, FILE *f);
