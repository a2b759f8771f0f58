/* How client addresses appear in logs (log_addresses): in full, truncated
 * to the source prefix, or as a keyed hash, for operators with privacy
 * rules. The hash key is set once at start (a credential, or log_hash_key),
 * or is random for the life of the process: hashes then match within one
 * run only. */
#pragma once

#include "addr.h"
#include "cidr.h"
#include "config.h"

#define LOGADDR_MAX (CIDR_STR_MAX + 8)

/* Sets the hash key from `material` (any bytes); len 0: a random key.
 * 0 or -errno. */
int logaddr_set_key(const void *material, size_t len);

/* Takes the mode and the prefix lengths (a reload may change them; the key
 * stays), and makes a random key if none was set. 0 or -errno. */
int logaddr_configure(const struct config *c);

/* A worker about to write its own record: the daemon's mode and prefix
 * lengths as of its last reload, never less private than the worker's own
 * (any worker can write any report, see children.h): the more private
 * mode (full < prefix < hash) and the shorter prefixes. */
void logaddr_tighten(int log_addresses, unsigned prefix_v4, unsigned prefix_v6);

/* The client's address (no port) as the mode shows it. */
const char *logaddr_client(const union sockaddr_any *peer, char buf[static LOGADDR_MAX]);

/* A source prefix (from admission control) as the mode shows it. */
const char *logaddr_source(const struct cidr *source, char buf[static LOGADDR_MAX]);

/* True when addresses are shown in full (the port is then worth showing). */
bool logaddr_full(void);
