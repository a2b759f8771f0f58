/* IP prefixes: how sources are counted and how allow/deny lists match.
 *
 * Every address is held in 16 bytes, IPv4 in its IPv4-mapped form
 * (::ffff:a.b.c.d), which is also what a dual-stack socket reports for IPv4
 * clients: one client is one source whatever socket it came through. A
 * prefix length is kept in those 128 bits, so an IPv4 /24 is /120. */
#pragma once

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "addr.h"

#define CIDR_STR_MAX (INET6_ADDRSTRLEN + 4)

struct cidr {
        struct in6_addr addr;   /* bits past len are zero */
        uint8_t len;            /* 0..128 in the 16-byte form */
};

/* The client's address in the 16-byte form; false for other families. */
bool cidr_address_of(const union sockaddr_any *a, struct in6_addr *out);

/* "192.0.2.0/24", "2001:db8::/32", or a bare address (a single host).
 * Refuses host bits past the length ("192.0.2.1/24"), so a typo does not
 * silently cover a different network. Returns 0 or -EINVAL. */
int cidr_parse(const char *s, struct cidr *out);

/* addr truncated to an IPv4 length (for IPv4 addresses) or an IPv6 length. */
struct cidr cidr_source(const struct in6_addr *addr, unsigned v4_len, unsigned v6_len);

/* Whether addr is in p. IPv4 and IPv6 are separate families: an IPv6
 * prefix never contains an IPv4 address (or an IPv4-mapped one), whatever
 * its length; a prefix written in the IPv4-mapped form (::ffff:0:0/96 or
 * longer) is the IPv4 prefix it maps. */
bool cidr_contains(const struct cidr *p, const struct in6_addr *addr);

/* A keyed hash of exactly the meaningful bytes (the address and the
 * length, never the struct's padding, which C does not promise to zero). */
uint64_t cidr_hash(const struct cidr *p, const uint8_t key[static 16]);

/* "192.0.2.0/24", "2001:db8::/64"; a full-length prefix prints as a plain
 * address. */
const char *cidr_format(const struct cidr *p, char buf[static CIDR_STR_MAX]);
