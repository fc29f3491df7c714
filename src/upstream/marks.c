/* Health marks and per-service-name state shared by the workers. See
 * marks.h. */
#include "upstream/marks.h"

#include "core/instance.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

typedef struct {
  char key[ZG_HOST_MAX + 10];
  uint64_t until_ms;
} failed_t;

typedef struct {
  char *name;
  zg_marks_svc_t *svc;
} cursor_t;

struct zg_marks {
  uv_mutex_t mu;
  failed_t *failed;
  size_t n_failed, cap_failed;
  atomic_uint_fast64_t until_max; /* the latest mark's end: the lock-free
                                     check */
  cursor_t *cursors;
  size_t n_cursors, cap_cursors;
};

zg_marks_t *zg_marks_new(void) {
  zg_marks_t *m = calloc(1, sizeof(*m));
  if (!m)
    return NULL;
  if (uv_mutex_init(&m->mu) != 0) {
    free(m);
    return NULL;
  }
  return m;
}

void zg_marks_free(zg_marks_t *m) {
  if (!m)
    return;
  free(m->failed);
  for (size_t i = 0; i < m->n_cursors; i++) {
    free(m->cursors[i].name);
    free(m->cursors[i].svc);
  }
  free(m->cursors);
  uv_mutex_destroy(&m->mu);
  free(m);
}

void zg_marks_lock(zg_marks_t *m) {
  uv_mutex_lock(&m->mu);
}

void zg_marks_unlock(zg_marks_t *m) {
  uv_mutex_unlock(&m->mu);
}

/* ---- passive health ---- */

int zg_marks_fail(zg_marks_t *m, const char *key, uint64_t now_ms,
                  uint64_t ttl_ms) {
  failed_t *slot = NULL;
  int fresh = 0;
  uv_mutex_lock(&m->mu);
  /* The instance's own slot first: an expired slot ahead of it must not
   * take a second mark (the instance would count as ejected again). */
  for (size_t i = 0; i < m->n_failed && !slot; i++)
    if (!strcmp(m->failed[i].key, key))
      slot = &m->failed[i];
  for (size_t i = 0; i < m->n_failed && !slot; i++)
    if (m->failed[i].until_ms <= now_ms)
      slot = &m->failed[i];
  if (!slot) {
    if (m->n_failed == m->cap_failed) {
      size_t cap = m->cap_failed ? m->cap_failed * 2 : 16;
      failed_t *n = realloc(m->failed, cap * sizeof(*n));
      if (!n)
        goto out;
      m->failed = n;
      m->cap_failed = cap;
    }
    slot = &m->failed[m->n_failed++];
    slot->key[0] = '\0';
    slot->until_ms = 0;
  }
  fresh = strcmp(slot->key, key) != 0 || slot->until_ms <= now_ms;
  snprintf(slot->key, sizeof(slot->key), "%s", key);
  slot->until_ms = now_ms + ttl_ms;
  if (slot->until_ms >
      atomic_load_explicit(&m->until_max, memory_order_relaxed))
    atomic_store_explicit(&m->until_max, slot->until_ms, memory_order_release);
out:
  uv_mutex_unlock(&m->mu);
  return fresh;
}

int zg_marks_is_failed_locked(zg_marks_t *m, const char *key, uint64_t now_ms) {
  for (size_t i = 0; i < m->n_failed; i++)
    if (m->failed[i].until_ms > now_ms && !strcmp(m->failed[i].key, key))
      return 1;
  return 0;
}

int zg_marks_is_failed(zg_marks_t *m, const char *key, uint64_t now_ms) {
  int found;
  if (!zg_marks_any_failed(m, now_ms))
    return 0;
  uv_mutex_lock(&m->mu);
  found = zg_marks_is_failed_locked(m, key, now_ms);
  uv_mutex_unlock(&m->mu);
  return found;
}

int zg_marks_any_failed(zg_marks_t *m, uint64_t now_ms) {
  return now_ms < atomic_load_explicit(&m->until_max, memory_order_acquire);
}

int zg_marks_failed_keys(zg_marks_t *m, uint64_t now_ms,
                         char (**out)[ZG_HOST_MAX + 10], size_t *n) {
  int rc = 0;
  *out = NULL;
  *n = 0;
  if (!zg_marks_any_failed(m, now_ms))
    return 0;
  uv_mutex_lock(&m->mu);
  if (!(*out = malloc(m->n_failed * sizeof(**out) + 1))) {
    rc = UV_ENOMEM;
  } else {
    for (size_t i = 0; i < m->n_failed; i++)
      if (m->failed[i].until_ms > now_ms)
        memcpy((*out)[(*n)++], m->failed[i].key, sizeof(m->failed[i].key));
  }
  uv_mutex_unlock(&m->mu);
  return rc;
}

/* ---- per service name ---- */

void zg_marks_svc_init(zg_marks_svc_t *s) {
  memset(s, 0, sizeof(*s));
  zg_ratelimit_init(&s->no_instance_rl, 10000, 5);
  zg_ratelimit_init(&s->connect_fail_rl, 10000, 5);
}

zg_marks_svc_t *zg_marks_service(zg_marks_t *m, const char *name) {
  zg_marks_svc_t *c = NULL;
  uv_mutex_lock(&m->mu);
  for (size_t i = 0; i < m->n_cursors; i++)
    if (!strcmp(m->cursors[i].name, name)) {
      c = m->cursors[i].svc;
      goto out;
    }
  if (m->n_cursors == m->cap_cursors) {
    size_t cap = m->cap_cursors ? m->cap_cursors * 2 : 16;
    cursor_t *n = realloc(m->cursors, cap * sizeof(*n));
    if (!n)
      goto out;
    m->cursors = n;
    m->cap_cursors = cap;
  }
  {
    char *nm = strdup(name);
    zg_marks_svc_t *st = malloc(sizeof(*st));
    if (!nm || !st) {
      free(nm);
      free(st);
      goto out;
    }
    zg_marks_svc_init(st);
    m->cursors[m->n_cursors].name = nm;
    m->cursors[m->n_cursors].svc = st;
    m->n_cursors++;
    c = st;
  }
out:
  uv_mutex_unlock(&m->mu);
  return c;
}

int zg_marks_log_allowed(zg_marks_t *m, zg_ratelimit_t *rl, uint64_t *dropped) {
  int ok;
  uv_mutex_lock(&m->mu);
  /* One clock for all workers (each loop's uv_now lags differently). */
  ok = zg_ratelimit_allow(rl, uv_hrtime() / 1000000, dropped);
  uv_mutex_unlock(&m->mu);
  return ok;
}
