/* Intrusive lists: zg_list_t, and zg_queue_t for first-in first-out.
 *
 * zg_list_t is a doubly linked list: the element holds its zg_link_t, the
 * list only a pointer to the first link. Each link points back at the
 * pointer that points at it (the list's `first` or the previous link's
 * `next`), so that a link leaves its list in O(1) without knowing the
 * list, and a list of all zeroes (calloc) is an empty list: no init
 * call. New links go first: walking a list sees the latest first.
 *
 * Everything is static inline: sessions and idle connections enter and
 * leave lists on the request path. */
#ifndef ZKGATE_LIST_H
#define ZKGATE_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct zg_link {
  struct zg_link *next;
  struct zg_link **pprev; /* what points at this link; NULL: in no list */
} zg_link_t;

typedef struct {
  zg_link_t *first;
} zg_list_t;

/* The element that holds `link` in its member `field`. */
#define ZG_LIST_ITEM(link, type, field)                                        \
  ((type *)(void *)((char *)(link)-offsetof(type, field)))

/* Walks `list` with `it` (a zg_link_t *). The _SAFE form lets the body
 * remove `it` (or free its element). */
#define ZG_LIST_FOREACH(it, list)                                              \
  for (zg_link_t *it = (list)->first; it; it = it->next)
#define ZG_LIST_FOREACH_SAFE(it, list)                                         \
  for (zg_link_t *it = (list)->first, *it##_next_ = it ? it->next : NULL; it;  \
       it = it##_next_, it##_next_ = it ? it->next : NULL)

static inline bool zg_list_empty(const zg_list_t *l) {
  return l->first == NULL;
}

static inline bool zg_link_linked(const zg_link_t *n) {
  return n->pprev != NULL;
}

/* Puts `n` (in no list) first in `l`. */
static inline void zg_list_push(zg_list_t *l, zg_link_t *n) {
  n->next = l->first;
  if (n->next)
    n->next->pprev = &n->next;
  l->first = n;
  n->pprev = &l->first;
}

/* Takes `n` out of its list; nothing when it is in none. */
static inline void zg_link_remove(zg_link_t *n) {
  if (!n->pprev)
    return;
  *n->pprev = n->next;
  if (n->next)
    n->next->pprev = n->pprev;
  n->next = NULL;
  n->pprev = NULL;
}

/* A walk over a zg_list_t in one pass, which the walk's body may change:
 * take any link out (and free its element) with zg_walk_remove, which
 * moves on each walk in progress that was to visit that link next, or
 * push links, which go first: behind the walk, not visited by it. The
 * walks in progress are a stack (`top`, held next to the list: a walk
 * begun in the body of another ends first), so that a body may walk the
 * list again. O(1) a step, where walking again from the start after each
 * body (the element that followed may be gone) costs O(n) a step. */
typedef struct zg_walk {
  zg_link_t *next;
  struct zg_walk *up;
} zg_walk_t;

static inline void zg_walk_begin(zg_walk_t **top, zg_walk_t *w,
                                 const zg_list_t *l) {
  w->next = l->first;
  w->up = *top;
  *top = w;
}

/* The next link to visit (moved past), or NULL at the end. */
static inline zg_link_t *zg_walk_next(zg_walk_t *w) {
  zg_link_t *n = w->next;
  if (n)
    w->next = n->next;
  return n;
}

/* `w` was the latest walk begun. */
static inline void zg_walk_end(zg_walk_t **top, zg_walk_t *w) {
  *top = w->up;
}

/* Takes `n` out of its list (zg_link_remove) under the walks from `top`. */
static inline void zg_walk_remove(zg_walk_t *top, zg_link_t *n) {
  for (zg_walk_t *w = top; w; w = w->up)
    if (w->next == n)
      w->next = n->next;
  zg_link_remove(n);
}

/* Links in `l` (a walk: for counts, not for the request path). */
static inline size_t zg_list_count(const zg_list_t *l) {
  size_t n = 0;
  for (const zg_link_t *it = l->first; it; it = it->next)
    n++;
  return n;
}

/* A first-in first-out queue of the same links: a pointer to the first,
 * and one to the `next` field at its end (the last link's, or `first`),
 * so that pushing at the end and taking from the front are O(1), and so
 * is taking out a link from the middle (a lookup cancelled while it
 * waits). All zeroes is an empty queue. A link in a queue leaves it by
 * zg_queue_remove or zg_queue_pop only, never zg_link_remove: the queue's
 * end may point into it. */
typedef struct {
  zg_link_t *first;
  zg_link_t **end; /* the `next` to set on a push; NULL: &first */
} zg_queue_t;

static inline bool zg_queue_empty(const zg_queue_t *q) {
  return q->first == NULL;
}

/* Puts `n` (in no list) last in `q`. */
static inline void zg_queue_push(zg_queue_t *q, zg_link_t *n) {
  zg_link_t **end = q->end ? q->end : &q->first;
  n->next = NULL;
  n->pprev = end;
  *end = n;
  q->end = &n->next;
}

/* Takes `n` out of `q`; nothing when it is in no list. */
static inline void zg_queue_remove(zg_queue_t *q, zg_link_t *n) {
  if (!n->pprev)
    return;
  if (q->end == &n->next)
    q->end = n->pprev;
  zg_link_remove(n);
}

/* Takes the first link out of `q` and returns it; NULL when empty. */
static inline zg_link_t *zg_queue_pop(zg_queue_t *q) {
  zg_link_t *n = q->first;
  if (n)
    zg_queue_remove(q, n);
  return n;
}

#endif
