/* siphash: the reference test vectors (key 00..0f, message 00..len-1). */
#include "siphash.h"
#include "test.h"

static void test_vectors(void) {
        uint8_t key[16], msg[64];

        for (int i = 0; i < 16; i++)
                key[i] = (uint8_t) i;
        for (int i = 0; i < 64; i++)
                msg[i] = (uint8_t) i;
        ASSERT(siphash24(msg, 0, key) == UINT64_C(0x726fdb47dd0e0e31));
        ASSERT(siphash24(msg, 15, key) == UINT64_C(0xa129ca6149be45e5)); /* the paper's example */
        /* Keyed: another key, another hash. */
        key[0] ^= 1;
        ASSERT(siphash24(msg, 15, key) != UINT64_C(0xa129ca6149be45e5));
}

int main(void) {
        RUN(test_vectors);
        return 0;
}
