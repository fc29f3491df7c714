/* What the workers of one process share about instances and services
 * ([proxy] workers = N), so that N workers balance and eject like one: the
 * passive health marks (keyed by "host:port") and, per service name, the
 * round-robin cursor, the count of refusals and the log rate limits. Its
 * own mutex; nothing here is touched per request except an atomic load, a
 * cursor's atomic add (round robin) and, while some instance is marked
 * failed, the health table. */
#ifndef ZKGATE_MARKS_H
#define ZKGATE_MARKS_H

#include <stdint.h>

#include "core/instance.h"
#include "core/log.h"

typedef struct zg_marks zg_marks_t;

zg_marks_t *zg_marks_new(void); /* NULL when out of memory */
void zg_marks_free(zg_marks_t *m);

/* ---- passive health, keyed by "host:port" ---- */
/* Marks `key` failed until now_ms + ttl_ms; 1 when it was not marked (an
 * ejection). */
int zg_marks_fail(zg_marks_t *m, const char *key, uint64_t now_ms,
                  uint64_t ttl_ms);
int zg_marks_is_failed(zg_marks_t *m, const char *key, uint64_t now_ms);
/* The same, with the lock held (checking a whole pool at once). */
void zg_marks_lock(zg_marks_t *m);
void zg_marks_unlock(zg_marks_t *m);
int zg_marks_is_failed_locked(zg_marks_t *m, const char *key, uint64_t now_ms);
/* 0 when no mark lasts past now_ms: the request path's check, lock-free. */
int zg_marks_any_failed(zg_marks_t *m, uint64_t now_ms);
/* The keys marked failed at now_ms, copied into a new array *out (caller
 * frees; NULL when none) of *n: for the change feed. 0 or UV_ENOMEM. */
int zg_marks_failed_keys(zg_marks_t *m, uint64_t now_ms,
                         char (**out)[ZG_HOST_MAX + 10], size_t *n);

/* ---- per service name ---- */
/* What the services named alike in every worker share. */
typedef struct zg_marks_svc {
  uint64_t rr;      /* round-robin cursor: atomic builtins only */
  uint64_t refused; /* refused for want of an instance: atomic builtins */
  zg_ratelimit_t no_instance_rl, connect_fail_rl; /* under the lock */
} zg_marks_svc_t;

void zg_marks_svc_init(zg_marks_svc_t *s);
/* A stable address for `name`; NULL when out of memory. */
zg_marks_svc_t *zg_marks_service(zg_marks_t *m, const char *name);
/* zg_ratelimit_allow on a limiter of `m`, under the lock, on the monotonic
 * clock (not a loop's cached one). */
int zg_marks_log_allowed(zg_marks_t *m, zg_ratelimit_t *rl, uint64_t *dropped);

#endif
