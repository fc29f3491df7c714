/* The state file: the last known pool of every watched path, so that the
 * gateway can start and serve while ZooKeeper is down. JSON through
 * jansson; encoding and decoding are pure, writing replaces the file
 * atomically (temporary file, fsync, rename). */
#ifndef ZKGATE_STATE_H
#define ZKGATE_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "zkgate/pool.h"

/* One entry: a zk_path, its pool and when that pool was published
 * (milliseconds since the epoch). */
typedef struct {
  const char *zk_path;
  const zg_pool_t *pool;
  int64_t updated_ms;
} zg_state_entry_t;

/* Returns a malloc'ed JSON text, or NULL when out of memory. */
char *zg_state_encode(const zg_state_entry_t *entries, size_t n,
                      int64_t now_ms);

/* Called for each path found; takes the pool's reference. */
typedef void (*zg_state_cb)(void *arg, const char *zk_path, zg_pool_t *pool,
                            int64_t updated_ms);

/* Decodes a state file's text. Returns 0, or ZG_EDECODE with a reason in
 * err (then nothing was passed to cb). Entries that are malformed make the
 * whole file refused: a half-understood file is not trusted. */
int zg_state_decode(const char *text, size_t len, zg_state_cb cb, void *arg,
                    char *err, size_t errlen);

/* Replaces `path` with `text` atomically. 0 or a negative errno. */
int zg_state_write_file(const char *path, const char *text);

#endif
