/* Socket address helpers. IPv4-mapped IPv6 addresses (what a dual-stack
 * listener reports for IPv4 clients) are shown as plain IPv4, so the same
 * client looks the same whatever socket it came through. */
#pragma once

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#define ADDR_HOST_MAX INET6_ADDRSTRLEN
#define ADDR_STR_MAX (INET6_ADDRSTRLEN + 8)

union sockaddr_any {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
};

/* Numeric host and port. Returns 0, or -EAFNOSUPPORT for other families
 * (host is then "?" and port 0). */
int addr_host_port(const union sockaddr_any *a, char host[static ADDR_HOST_MAX], uint16_t *port);

/* "1.2.3.4:5" or "[::1]:5". Always fills buf. */
const char *addr_to_string(const union sockaddr_any *a, char buf[static ADDR_STR_MAX]);
