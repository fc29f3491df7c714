/* Connection caps for the whole process: see connlimit.h. Admission adds
 * first and takes back on overshoot, so that concurrent workers never
 * admit past a cap without a lock (a refused connection may briefly count,
 * which only errs towards refusing). */
#include "core/connlimit.h"

#include <string.h>

void zg_connlimit_init(zg_connlimit_t *l) {
  memset(l, 0, sizeof(*l));
  l->max_pipes = ZG_PIPES_UNCAPPED;
  zg_ratelimit_init(&l->log_rl, 10000, 5);
}

void zg_connlimit_set(zg_connlimit_t *l, uint64_t max_open, uint64_t max_head) {
  __atomic_store_n(&l->max_open, max_open, __ATOMIC_RELAXED);
  __atomic_store_n(&l->max_head, max_head, __ATOMIC_RELAXED);
}

void zg_connlimit_set_pipes(zg_connlimit_t *l, uint64_t max_pipes) {
  __atomic_store_n(&l->max_pipes, max_pipes, __ATOMIC_RELAXED);
}

/* Unlike take(), never over the cap even briefly: the busy count is a
 * metric, sampled by tests that assert the cap holds. Pipes are taken per
 * burst of bytes, not per byte, so a compare-and-swap loop costs nothing
 * next to the splice(2) calls around it. */
bool zg_connlimit_pipe_take(zg_connlimit_t *l) {
  uint64_t cap = __atomic_load_n(&l->max_pipes, __ATOMIC_RELAXED);
  uint64_t n = __atomic_load_n(&l->pipes, __ATOMIC_RELAXED);

  do {
    if (n >= cap)
      return false;
  } while (!__atomic_compare_exchange_n(&l->pipes, &n, n + 1, true,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED));
  return true;
}

void zg_connlimit_pipe_give(zg_connlimit_t *l) {
  __atomic_sub_fetch(&l->pipes, 1, __ATOMIC_RELAXED);
}

bool zg_connlimit_no_pipes(zg_connlimit_t *l) {
  return __atomic_load_n(&l->max_pipes, __ATOMIC_RELAXED) == 0;
}

/* Takes one unit of *count under `max` (0: no cap); false when full. */
static bool take(uint64_t *count, const uint64_t *max) {
  uint64_t cap = __atomic_load_n(max, __ATOMIC_RELAXED);
  uint64_t n = __atomic_add_fetch(count, 1, __ATOMIC_RELAXED);

  if (cap == 0 || n <= cap)
    return true;
  __atomic_sub_fetch(count, 1, __ATOMIC_RELAXED);
  return false;
}

zg_conn_admit_t zg_connlimit_admit(zg_connlimit_t *l, bool in_head,
                                   zg_conn_ticket_t *t) {
  memset(t, 0, sizeof(*t));
  if (!take(&l->open, &l->max_open)) {
    __atomic_add_fetch(&l->refused_open, 1, __ATOMIC_RELAXED);
    return ZG_CONN_REFUSED_OPEN;
  }
  if (in_head && !take(&l->head, &l->max_head)) {
    __atomic_sub_fetch(&l->open, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&l->refused_head, 1, __ATOMIC_RELAXED);
    return ZG_CONN_REFUSED_HEAD;
  }
  t->l = l;
  t->open = 1;
  t->head = in_head;
  return ZG_CONN_ADMITTED;
}

void zg_conn_ticket_head_done(zg_conn_ticket_t *t) {
  if (t->l == NULL || !t->head)
    return;
  t->head = 0;
  __atomic_sub_fetch(&t->l->head, 1, __ATOMIC_RELAXED);
}

void zg_conn_ticket_release(zg_conn_ticket_t *t) {
  zg_conn_ticket_head_done(t);
  if (t->l != NULL && t->open)
    __atomic_sub_fetch(&t->l->open, 1, __ATOMIC_RELAXED);
  t->open = 0;
  t->l = NULL;
}

void zg_connlimit_read(zg_connlimit_t *l, zg_connlimit_t *out) {
  memset(out, 0, sizeof(*out));
  out->max_open = __atomic_load_n(&l->max_open, __ATOMIC_RELAXED);
  out->max_head = __atomic_load_n(&l->max_head, __ATOMIC_RELAXED);
  out->open = __atomic_load_n(&l->open, __ATOMIC_RELAXED);
  out->head = __atomic_load_n(&l->head, __ATOMIC_RELAXED);
  out->refused_open = __atomic_load_n(&l->refused_open, __ATOMIC_RELAXED);
  out->refused_head = __atomic_load_n(&l->refused_head, __ATOMIC_RELAXED);
  out->max_pipes = __atomic_load_n(&l->max_pipes, __ATOMIC_RELAXED);
  out->pipes = __atomic_load_n(&l->pipes, __ATOMIC_RELAXED);
}

/* What 2 * max_connections + 2 * pipes + reserve <= nofile allows, before
 * the floor: with pipes at auto (max_connections / 4), 2.5 descriptors a
 * connection. */
static uint64_t budget_open(uint64_t nofile, uint64_t reserve,
                            uint64_t max_pipes) {
  uint64_t left = nofile > reserve ? nofile - reserve : 0;

  if (max_pipes == ZG_PIPES_AUTO)
    return left / 5 * 2 + left % 5 * 2 / 5;
  return left > 2 * max_pipes ? (left - 2 * max_pipes) / 2 : 0;
}

uint64_t zg_connlimit_auto_open(uint64_t nofile, uint64_t reserve,
                                uint64_t max_pipes) {
  uint64_t n = budget_open(nofile, reserve, max_pipes);
  /* A reserve that eats the limit (many services and workers under a
   * small open-file limit) must not leave a gateway that serves one client
   * at a time: a quarter of the descriptors stays for clients, and the
   * gateway warns (zg_connlimit_auto_floored). */
  if (n < nofile / 4)
    n = nofile / 4;
  return n > 0 ? n : 1;
}

bool zg_connlimit_auto_floored(uint64_t nofile, uint64_t reserve,
                               uint64_t max_pipes) {
  return nofile <= reserve ||
         budget_open(nofile, reserve, max_pipes) < nofile / 4;
}

uint64_t zg_connlimit_auto_pipes(uint64_t max_open) {
  return max_open / 4;
}

uint64_t zg_connlimit_auto_head(uint64_t max_open) {
  uint64_t n = max_open / 2;

  if (n > ZG_HEAD_CONNECTIONS_AUTO_MAX)
    n = ZG_HEAD_CONNECTIONS_AUTO_MAX;
  return n > 0 ? n : 1;
}
