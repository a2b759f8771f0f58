/* Deletion from a linear-probing hash table without tombstones, written once
 * for the two such tables (children.c: pid -> slot, sources.c: source ->
 * pool entry). Header-only: each caller passes its own accessors, and the
 * compiler inlines them. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct openaddr_ops {
        bool (*occupied)(const void *table, uint32_t slot);
        uint32_t (*home)(const void *table, uint32_t slot);     /* masked hash of the member there */
        void (*move)(void *table, uint32_t from, uint32_t to);  /* and leaves `from` empty */
};

/* Backward-shift delete: `hole` was just emptied; shifts later members of
 * its probe run back so that no lookup ever stops early at the hole, and
 * probes stay short. mask + 1 is the table's size, a power of two, and the
 * table has at least one empty slot. */
static inline void openaddr_delete(void *table, uint32_t mask, uint32_t hole, const struct openaddr_ops *ops) {
        for (uint32_t j = (hole + 1) & mask; ops->occupied(table, j); j = (j + 1) & mask) {
                uint32_t home = ops->home(table, j);

                /* Move j into the hole unless its home lies cyclically in (hole, j]. */
                if ((hole < j) ? (home <= hole || home > j) : (home <= hole && home > j)) {
                        ops->move(table, j, hole);
                        hole = j;
                }
        }
}
