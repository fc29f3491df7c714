/* Block pools. See bufpool.h. A free block's first bytes hold the link to
 * the next free one, so the list costs no memory of its own. */
#include "core/bufpool.h"

#include <stdlib.h>

typedef struct free_block {
  struct free_block *next;
} free_block_t;

void zg_bufpool_init(zg_bufpool_t *p, size_t size, unsigned max_free) {
  p->size = size < sizeof(free_block_t) ? sizeof(free_block_t) : size;
  p->max_free = max_free;
  p->free = NULL;
  p->n_free = 0;
  p->n_out = 0;
  p->allocs = 0;
}

void *zg_bufpool_get(zg_bufpool_t *p) {
  free_block_t *b = p->free;
  if (b) {
    p->free = b->next;
    p->n_free--;
  } else {
    b = malloc(p->size);
    if (!b)
      return NULL;
    p->allocs++;
  }
  p->n_out++;
  return b;
}

void zg_bufpool_put(zg_bufpool_t *p, void *block) {
  free_block_t *b = block;
  if (!b)
    return;
  p->n_out--;
  if (p->n_free >= p->max_free) {
    free(b);
    return;
  }
  b->next = p->free;
  p->free = b;
  p->n_free++;
}

void zg_bufpool_clear(zg_bufpool_t *p) {
  while (p->free) {
    free_block_t *b = p->free;
    p->free = b->next;
    free(b);
  }
  p->n_free = 0;
}
