/* Configuration: the one module that knows libconfig.
 *
 * Contract: config_parse() either fills a complete, validated struct config
 * (defaults for every absent key) and returns 0, or leaves *out untouched,
 * returns a negative errno and describes every problem it found in *diag as
 * "FILE:LINE: message" lines. A file is accepted only when every setting in
 * its text is one the parser read (config-scan.h): no text goes unread.
 * struct config holds no pointers, so copying it is a plain assignment and a
 * reload can never leave it half-updated. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "cidr.h"
#include "credential.h"

#define CONFIG_DEFAULT_PATH "/etc/echo-mpserv/echo-mpserv.conf"
#define CONFIG_MAX_FILE_SIZE (64 * 1024)
#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_CLIENTS_LIMIT 16384
#define CONFIG_ADDR_MAX INET6_ADDRSTRLEN
#define CONFIG_MAX_CIDRS 64
#define CONFIG_SOURCE_TABLE_MIN 64
#define CONFIG_SOURCE_TABLE_MAX 262144
#define CONFIG_HASH_KEY_MIN 16
#define CONFIG_HASH_KEY_MAX 128

/* How client addresses appear in logs. */
enum log_addresses {
        LOG_ADDRESSES_FULL,
        LOG_ADDRESSES_PREFIX,   /* truncated to the source prefix */
        LOG_ADDRESSES_HASH,     /* a keyed hash of the address */
};

struct config {
        uint16_t port;
        uint32_t n_listen;
        char listen[CONFIG_MAX_LISTEN][CONFIG_ADDR_MAX];
        uint32_t backlog;
        uint32_t max_clients;
        uint32_t idle_timeout_ms;       /* 0: no limit */
        uint32_t write_timeout_ms;      /* 0: no limit */
        uint32_t max_session_time_ms;   /* 0: no limit */
        uint64_t max_session_bytes;     /* 0: no limit */
        uint32_t buffer_size;
        uint32_t socket_buffer;         /* SO_SNDBUF/SO_RCVBUF per client; 0: kernel autotuning */
        uint32_t drain_timeout_ms;
        int log_level;                  /* syslog priority, LOG_ERR..LOG_DEBUG */
        /* The record budget (budget.h): connection records per 1000 s (0: no
         * budget) and how many may come at once. */
        uint32_t log_connection_rate_milli;
        uint32_t log_connection_burst;

        /* Admission control, per source (a prefix of the client address). */
        uint32_t max_clients_per_source;        /* 0: no limit */
        uint32_t source_prefix_v4;              /* 0..32 */
        uint32_t source_prefix_v6;              /* 0..128 */
        uint32_t source_rate_milli;             /* connections per 1000 s; 0: no limit */
        uint32_t source_burst;                  /* tokens in a full bucket */
        uint32_t source_block_ms;               /* refused this long after running dry */
        uint32_t source_table_size;             /* sources remembered besides those with sessions */
        uint32_t n_allow, n_deny, n_exempt;
        struct cidr allow[CONFIG_MAX_CIDRS];    /* empty: everyone */
        struct cidr deny[CONFIG_MAX_CIDRS];
        struct cidr exempt[CONFIG_MAX_CIDRS];   /* not held to the per-source limits */
        int log_addresses;                      /* enum log_addresses */
        /* Where the hash key comes from, read at start only (not here: the
         * configuration is what the file says): a credential the service
         * manager passes, or, deprecated, the key itself in the file. Both
         * empty: a random key at each start. */
        char log_hash_key_credential[CREDENTIAL_NAME_MAX + 1];
        char log_hash_key[CONFIG_HASH_KEY_MAX + 1];
};

/* Problems as "FILE:LINE: message" lines. When they do not all fit, the
 * text ends in one line that says how many more there are: none is
 * dropped without a word. */
struct config_diag {
        char text[4096];
        size_t len;
        unsigned count;
        size_t kept;            /* length of the lines shown before that last line */
        unsigned shown;
};

void config_defaults(struct config *c);

/* Reads and validates a file: refuses anything that is not a regular file or
 * is larger than CONFIG_MAX_FILE_SIZE before parsing. -ENOENT when the file
 * does not exist (the caller decides whether that is fatal). */
int config_load(const char *path, struct config *out, struct config_diag *diag);

/* The daemon's file, at start, for --check-config and at every reload:
 * config_load(), except that when the path is the default one (`given`
 * false: no -c) and nothing is there, it fills the built-in defaults, sets
 * *no_file and returns 0. A symbolic link at path to a file that does not
 * exist is not "nothing there": it is an error (-ENOENT), as is a missing
 * file that was named with -c. Whether a missing file may mean the
 * defaults at a reload is the caller's decision (server_reload()). */
int config_load_file(const char *path, bool given, struct config *out, bool *no_file, struct config_diag *diag);

/* Validates text already in memory; `name` is used in messages. */
int config_parse(const char *name, const char *text, size_t len, struct config *out, struct config_diag *diag);

/* Writes the configuration in libconfig syntax that config_parse() reads back
 * to the same values. Returns 0 or -errno. */
int config_dump(const struct config *c, FILE *f);

/* Describes what differs between two configurations ("max_clients 256 -> 10,
 * ...") into buf; *needs_restart is set when a changed key only takes effect
 * at the next start (the listening sockets). Returns the number of changes. */
unsigned config_describe_changes(const struct config *old, const struct config *new,
                                 char *buf, size_t size, bool *needs_restart);

/* For a reload: every key that takes effect only at start (reloadable =
 * false in the key table: the listening sockets, the hash key) gets its
 * running value back in *next, and so does log_addresses when it turns to
 * "hash" while the hash key's source changes: until the restart it would
 * hash with a key no later run has (config_describe_changes() says "after
 * a restart" for it then too). The names of those whose value in *next
 * differed go into pending ("port, listen"; empty when none): a restart is
 * pending for them. Returns how many differed. */
unsigned config_keep_restart_keys(struct config *next, const struct config *running, char *pending, size_t size);

/* The listen rule (config-listen.c), one for standalone binding and for the
 * generator's drop-in: listen[i] is dual-stack (takes IPv4 clients too)
 * when it is the unspecified IPv6 address, however written ("::", "0::0"),
 * and no IPv4 address is listed; otherwise every address is bound alone
 * (an IPv6 one IPv6-only). */
bool config_listen_dual_stack(const struct config *c, uint32_t i);
bool config_listen_any_ipv4(const struct config *c);
bool config_listen_is_ipv4(const char *address);
/* The same address, however written ("::1" and "0::1"). */
bool config_listen_same(const char *a, const char *b);

int config_log_level_from_name(const char *name); /* -EINVAL when unknown */

/* Adds one problem to *d: each a line of its text, up to what fits, then a
 * count of the rest. Also for the daemon's own start-up problems that belong
 * with the file's (main.c: the hash key credential). */
void config_diag_add(struct config_diag *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
