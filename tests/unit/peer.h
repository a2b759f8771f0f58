/* A socket address from its text, IPv4 or IPv6, for unit tests that play
 * a client. */
#pragma once

#include <arpa/inet.h>

#include "addr.h"
#include "test.h"

static inline union sockaddr_any peer_at(const char *ip, uint16_t port) {
        union sockaddr_any a = { 0 };

        if (inet_pton(AF_INET, ip, &a.in.sin_addr) == 1) {
                a.in.sin_family = AF_INET;
                a.in.sin_port = htons(port);
        } else {
                ASSERT(inet_pton(AF_INET6, ip, &a.in6.sin6_addr) == 1);
                a.in6.sin6_family = AF_INET6;
                a.in6.sin6_port = htons(port);
        }
        return a;
}
