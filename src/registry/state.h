/* The state file: the last known pool of every watched path, so that the
 * gateway can start and serve while ZooKeeper is down. JSON through
 * jansson; encoding and decoding are pure, writing replaces the file
 * atomically (a temporary file of a unique name, fsync, rename, fsync of
 * the directory), and the writer does it on libuv's thread pool, at most
 * one write in flight and at most one a second, so that a large registry
 * never stalls the loop.
 *
 * An entry is keyed by its zk_path and its endpoint (a serverset
 * additionalEndpoints entry; NULL: the main one): two services reading one
 * path through different endpoints have different pools, and a service
 * takes only the entry of its own path and endpoint. */
#ifndef ZKGATE_STATE_H
#define ZKGATE_STATE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/pool.h"

/* One entry: a zk_path and endpoint, its pool, when that pool was
 * published and until when it was known to be the registry's (the
 * session was connected and the path synchronised then; milliseconds
 * since the epoch). */
typedef struct {
  const char *zk_path;
  const char *endpoint; /* NULL: the main endpoint */
  zg_pool_t *pool;      /* referenced by the writer; never changed */
  int64_t updated_ms;
  int64_t fresh_ms;
} zg_state_entry_t;

/* Returns a malloc'ed JSON text, or NULL when out of memory. */
char *zg_state_encode(const zg_state_entry_t *entries, size_t n,
                      int64_t now_ms);

/* Called for each entry found; takes the pool's reference (e->pool is
 * that pool). The strings are borrowed for the call. */
typedef void (*zg_state_cb)(void *arg, const zg_state_entry_t *e,
                            zg_pool_t *pool);

/* Decodes a state file's text (format 2; format 1, written before entries
 * had endpoints, is read as entries of the main endpoint, known current
 * when the file was written). Returns 0, or ZG_EDECODE with a reason in
 * err (then nothing was passed to cb). Entries that are malformed make the
 * whole file refused: a half-understood file is not trusted. */
int zg_state_decode(const char *text, size_t len, zg_state_cb cb, void *arg,
                    char *err, size_t errlen);

/* Whether an entry of (zk_path, endpoint) belongs to a service watching
 * (want_path, want_endpoint): both equal, a NULL endpoint equal only to
 * NULL. */
int zg_state_key_match(const char *zk_path, const char *endpoint,
                       const char *want_path, const char *want_endpoint);

/* How long ago a pool known current at fresh_ms was (0 when fresh_ms is in
 * the future: a clock that went back), and whether that is past max_stale
 * (never when max_stale_ms is 0). */
uint64_t zg_state_age_ms(int64_t fresh_ms, int64_t now_ms);
int zg_state_past_max_stale(int64_t fresh_ms, int64_t now_ms,
                            uint64_t max_stale_ms);

/* Replaces `path` with `text` atomically: written to a temporary file named
 * PATH.tmp.<pid>.<*seq> (created O_EXCL; *seq advances past names taken),
 * fsynced, renamed over `path`, then the directory fsynced so that the
 * rename itself survives a crash. 0 or a negative errno. Blocking: call it
 * off the loop. */
int zg_state_write_file(const char *path, const char *text, unsigned *seq);

/* Delay before the next write, given the loop time `now_ms`, when the last
 * write started (`last_ms`, 0: never) and the minimum spacing: at least
 * `settle_ms` (a burst of changes makes one write), and never sooner than
 * `min_interval_ms` after the last one started. */
uint64_t zg_state_write_delay(uint64_t now_ms, uint64_t last_ms,
                              uint64_t settle_ms, uint64_t min_interval_ms);

/* ---- the writer: a state file kept up to date off the loop ------------ */

typedef struct zg_state_writer zg_state_writer_t;

/* Called on the loop when a write is due: the owner passes its entries
 * to zg_state_writer_put() from inside this call. */
typedef void (*zg_state_collect_cb)(void *arg, zg_state_writer_t *w);

/* A writer of `path` on `loop`. NULL when out of memory. */
zg_state_writer_t *zg_state_writer_new(uv_loop_t *loop, const char *path,
                                       zg_state_collect_cb collect, void *arg);
/* Something changed: a write comes, coalesced with the changes that follow
 * it (at most one a second, one in flight at a time). */
void zg_state_writer_mark(zg_state_writer_t *w);
/* From inside the collect callback only: the entries to write. The pools
 * are referenced and the strings copied (cheap); encoding and writing
 * happen on the thread pool. Returns 0 or UV_ENOMEM. */
int zg_state_writer_put(zg_state_writer_t *w, const zg_state_entry_t *entries,
                        size_t n, int64_t now_ms);
/* At shutdown: a write still waiting is collected now (the owner's data
 * must still be there) and done, after the one in flight; the writer frees
 * itself once it is written and its timer closed. The collect callback is
 * never called after this returns. */
void zg_state_writer_close(zg_state_writer_t *w);
/* Writes done and failed, for tests and logs. */
void zg_state_writer_counts(const zg_state_writer_t *w, uint64_t *written,
                            uint64_t *failed);

#endif
