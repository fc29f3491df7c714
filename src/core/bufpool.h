/* Fixed-size blocks kept on a free list for reuse, one pool per loop (no
 * locking), so that the steady state of a proxy allocates nothing: a block
 * taken for a read, a write or a head goes back when that is done, and
 * only a bounded number of free blocks is kept (the rest are freed, so an
 * idle gateway gives memory back after a burst). Pure: no I/O, no loop. */
#ifndef ZKGATE_BUFPOOL_H
#define ZKGATE_BUFPOOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct zg_bufpool {
  size_t size;       /* bytes per block, at least sizeof(void *) */
  unsigned max_free; /* free blocks kept; more are freed */
  void *free;        /* the free list, linked through the blocks */
  unsigned n_free;
  unsigned n_out;  /* blocks handed out and not yet returned */
  uint64_t allocs; /* blocks that had to be malloc'ed (not reused) */
} zg_bufpool_t;

void zg_bufpool_init(zg_bufpool_t *p, size_t size, unsigned max_free);
/* A block of p->size bytes (contents undefined), or NULL when out of
 * memory. */
void *zg_bufpool_get(zg_bufpool_t *p);
/* Returns a block taken from `p`; NULL is fine. */
void zg_bufpool_put(zg_bufpool_t *p, void *block);
/* Frees the free blocks (those handed out stay their holders'). */
void zg_bufpool_clear(zg_bufpool_t *p);

#endif
