/* A connected TCP pair over 127.0.0.1 for unit tests that need real TCP
 * behaviour (resets, half-close, buffer limits) rather than a socketpair. */
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test.h"

/* client_rcvbuf: the client's SO_RCVBUF (0: the default), set before it
 * connects: shrunk later, the window already offered would make the kernel
 * drop data it was promised room for, and retransmit it slowly. */
static inline void tcp_pair_rcvbuf(int *client, int *server, int client_rcvbuf) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int l = socket(AF_INET, SOCK_STREAM, 0);

        ASSERT(l >= 0);
        ASSERT(bind(l, (struct sockaddr *) &a, sizeof(a)) == 0);
        ASSERT(listen(l, 1) == 0);
        ASSERT(getsockname(l, (struct sockaddr *) &a, &len) == 0);
        *client = socket(AF_INET, SOCK_STREAM, 0);
        ASSERT(*client >= 0);
        if (client_rcvbuf)
                ASSERT(setsockopt(*client, SOL_SOCKET, SO_RCVBUF, &client_rcvbuf, sizeof(int)) == 0);
        ASSERT(connect(*client, (struct sockaddr *) &a, sizeof(a)) == 0);
        *server = accept4(l, NULL, NULL, SOCK_NONBLOCK);
        ASSERT(*server >= 0);
        close(l);
}

static inline void tcp_pair(int *client, int *server) {
        tcp_pair_rcvbuf(client, server, 0);
}
