/* The change feed behind GET /events (issue 16): a bounded history of the
 * last events with increasing ids, and the subscribers that take each new
 * one as it comes. One per process, owned by the control loop (the admin
 * listener and the registry live there; health marks are shared by every
 * worker), so its functions run on that loop only.
 *
 * An event is a JSON object {"id": N, "time": "ISO 8601", "type": T, ...}
 * kept already framed for Server-Sent Events (WHATWG HTML, "Server-sent
 * events"): "id: N\ndata: {...}\n\n". The types and their fields are in
 * README, "Live view". Also here: the pure diff of two pools of a service
 * into instance added / removed / changed. */
#ifndef ZKGATE_EVENTS_H
#define ZKGATE_EVENTS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "core/list.h"
#include "core/pool.h"

typedef struct zg_events zg_events_t;

/* One subscriber: on_event gets each new event's SSE text (borrowed). It
 * may unsubscribe itself (or others) from inside the call. */
typedef struct zg_events_sub {
  zg_link_t link;
  void (*on_event)(struct zg_events_sub *sub, const char *text, size_t len);
} zg_events_sub_t;

/* Keeps the last `capacity` events (>= 1), and of those no more than
 * `max_bytes` of text (the newest one always). NULL when out of memory. */
zg_events_t *zg_events_new(size_t capacity, size_t max_bytes);
/* Unsubscribes everyone and frees. NULL is fine. */
void zg_events_free(zg_events_t *ev);

/* Adds an event of `type` with the fields of `fields` (a JSON object whose
 * reference it takes; NULL: none), gives it the next id and the wall time
 * `wall_ms`, and hands it to every subscriber. Returns the id, 0 when out
 * of memory (the event is lost, which a reader sees as a gap in ids). */
uint64_t zg_events_emit(zg_events_t *ev, const char *type, json_t *fields,
                        int64_t wall_ms);
/* The last id given (0: none yet) and the first one still kept. */
uint64_t zg_events_last_id(const zg_events_t *ev);
uint64_t zg_events_first_id(const zg_events_t *ev);
/* Calls `fn` with each kept event whose id is more than `since`, oldest
 * first; returns how many. */
size_t zg_events_since(const zg_events_t *ev, uint64_t since,
                       void (*fn)(void *arg, const char *text, size_t len),
                       void *arg);

void zg_events_subscribe(zg_events_t *ev, zg_events_sub_t *sub);
void zg_events_unsubscribe(zg_events_sub_t *sub); /* twice is fine */
size_t zg_events_subscribers(const zg_events_t *ev);

/* ---- pools ---- */
typedef enum {
  ZG_DIFF_ADDED = 0,
  ZG_DIFF_REMOVED,
  ZG_DIFF_CHANGED,
} zg_diff_kind_t;

/* What changed between two pools of one service, instance by instance: an
 * instance is the same one when its key (znode path, etcd key) is, or, for
 * instances without a key (static ones), its address. Changed: the same
 * instance with another address, data version, format, status, weight or
 * TLS. `fn` gets (kind, the instance before (NULL when added), after
 * (NULL when removed)), in the order of the identities.
 * Either pool may be NULL (no pool). Returns the number of calls, or -1
 * when out of memory (then no call was made). */
typedef void (*zg_diff_fn)(void *arg, zg_diff_kind_t kind,
                           const zg_instance_t *before,
                           const zg_instance_t *after);
int zg_events_pool_diff(const zg_pool_t *before, const zg_pool_t *after,
                        zg_diff_fn fn, void *arg);
/* "instance_added", "instance_removed", "instance_changed". */
const char *zg_diff_kind_name(zg_diff_kind_t kind);
/* The event fields of one instance: address, key, version, format, up,
 * weight (a new object; NULL when out of memory). */
json_t *zg_events_instance_json(const zg_instance_t *in);

#endif
