#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "siphash.h"

static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* An IPv4 address in its IPv4-mapped form (::ffff:a.b.c.d). */
static bool cidr_is_v4(const struct in6_addr *a) {
        return memcmp(a->s6_addr, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0;
}

bool cidr_address_of(const union sockaddr_any *a, struct in6_addr *out) {
        if (a->sa.sa_family == AF_INET6) {
                *out = a->in6.sin6_addr;
                return true;
        }
        if (a->sa.sa_family == AF_INET) {
                memcpy(out->s6_addr, v4_mapped_prefix, 12);
                memcpy(out->s6_addr + 12, &a->in.sin_addr, 4);
                return true;
        }
        return false;
}

static void truncate_to(struct in6_addr *a, unsigned len) {
        for (unsigned i = 0; i < 16; i++) {
                unsigned keep = len > i * 8 ? len - i * 8 : 0;
                if (keep < 8)
                        a->s6_addr[i] &= (uint8_t) (0xff00 >> keep);
        }
}

int cidr_parse(const char *s, struct cidr *out) {
        char text[CIDR_STR_MAX];
        const char *slash = strchr(s, '/');
        size_t n = slash ? (size_t) (slash - s) : strlen(s);
        struct in6_addr a;
        struct in_addr v4;
        unsigned max, len;
        bool is_v4;

        if (n == 0 || n >= sizeof(text))
                return -EINVAL;
        memcpy(text, s, n);
        text[n] = 0;
        if (inet_pton(AF_INET, text, &v4) == 1) {
                memcpy(a.s6_addr, v4_mapped_prefix, 12);
                memcpy(a.s6_addr + 12, &v4, 4);
                is_v4 = true;
        } else if (inet_pton(AF_INET6, text, &a) == 1) {
                is_v4 = false;
        } else {
                return -EINVAL;
        }
        max = is_v4 ? 32 : 128;
        len = max;
        memset(out, 0, sizeof(*out)); /* padding too: configurations compare byte for byte */
        if (slash) {
                char *end;
                unsigned long l;

                if (slash[1] < '0' || slash[1] > '9')
                        return -EINVAL;
                l = strtoul(slash + 1, &end, 10);
                if (*end || l > max || end - (slash + 1) > 3)
                        return -EINVAL;
                len = (unsigned) l;
        }
        out->len = (uint8_t) (is_v4 ? 96 + len : len);
        out->addr = a;
        truncate_to(&out->addr, out->len);
        return memcmp(&out->addr, &a, sizeof(a)) == 0 ? 0 : -EINVAL;
}

struct cidr cidr_source(const struct in6_addr *addr, unsigned v4_len, unsigned v6_len) {
        struct cidr p;

        memset(&p, 0, sizeof(p)); /* padding too */
        p.addr = *addr;
        p.len = (uint8_t) (cidr_is_v4(addr) ? 96 + v4_len : v6_len);
        truncate_to(&p.addr, p.len);
        return p;
}

/* Families are never mixed: an IPv6 prefix, however short ("::/0"), holds
 * no IPv4 client, so the IPv4-mapped range is reached only by an IPv4
 * prefix (or one written as ::ffff:0:0/96 or longer, which is one). A
 * prefix shorter than /96 never has the mapped form: bits 80..95 of it are
 * not all ones. */
bool cidr_contains(const struct cidr *p, const struct in6_addr *addr) {
        struct in6_addr a = *addr;

        if (cidr_is_v4(&p->addr) != cidr_is_v4(addr))
                return false;
        truncate_to(&a, p->len);
        return memcmp(&a, &p->addr, sizeof(a)) == 0;
}

const char *cidr_format(const struct cidr *p, char buf[static CIDR_STR_MAX]) {
        char host[INET6_ADDRSTRLEN];
        bool v4 = cidr_is_v4(&p->addr) && p->len >= 96;
        unsigned len = v4 ? p->len - 96u : p->len;

        if (v4)
                inet_ntop(AF_INET, p->addr.s6_addr + 12, host, sizeof(host));
        else
                inet_ntop(AF_INET6, &p->addr, host, sizeof(host));
        if (len == (v4 ? 32u : 128u))
                snprintf(buf, CIDR_STR_MAX, "%s", host);
        else
                snprintf(buf, CIDR_STR_MAX, "%s/%u", host, len);
        return buf;
}

uint64_t cidr_hash(const struct cidr *p, const uint8_t key[static 16]) {
        uint8_t bytes[sizeof(p->addr) + 1];

        memcpy(bytes, &p->addr, sizeof(p->addr));
        bytes[sizeof(p->addr)] = p->len;
        return siphash24(bytes, sizeof(bytes), key);
}
