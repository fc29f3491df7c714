/* Logging to stderr, one line per event:
 *   2026-11-22T02:30:00.123Z warn registry: message
 * or, with zg_log_set_json, one JSON object per line.
 * The level is set once at start, before any loop runs; that is the one
 * process-wide setting (the ZooKeeper client's log callback has no context
 * argument, so it has to reach the logger without one). */
#ifndef ZKGATE_LOG_H
#define ZKGATE_LOG_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
  ZG_LOG_ERROR = 0,
  ZG_LOG_WARN = 1,
  ZG_LOG_INFO = 2,
  ZG_LOG_DEBUG = 3,
} zg_log_level_t;

void zg_log_set_level(zg_log_level_t level);
/* [proxy] log_format = json: each line one JSON object
 *   {"time":"2026-11-22T02:30:00.123Z","level":"warn","module":"registry",
 *    "msg":"message"}
 * Process-wide, like the level. */
void zg_log_set_json(int on);
/* One line (ending in '\n') into `line`, which holds `len` >= 64 bytes; a
 * message too long is cut (a JSON line stays one valid object). Returns
 * its length. Pure: for tests. */
size_t zg_log_format(char *line, size_t len, int json, const char *stamp,
                     zg_log_level_t level, const char *module, const char *msg);
int zg_log_enabled(zg_log_level_t level);
/* On a worker's thread (not the control loop's): info lines become debug
 * ones there. */
void zg_log_thread_quiet(int on);
void zg_log(zg_log_level_t level, const char *module, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define ZG_LOG(lvl, mod, ...)                                                  \
  do {                                                                         \
    if (zg_log_enabled(lvl))                                                   \
      zg_log(lvl, mod, __VA_ARGS__);                                           \
  } while (0)
#define zg_error(mod, ...) ZG_LOG(ZG_LOG_ERROR, mod, __VA_ARGS__)
#define zg_warn(mod, ...) ZG_LOG(ZG_LOG_WARN, mod, __VA_ARGS__)
#define zg_info(mod, ...) ZG_LOG(ZG_LOG_INFO, mod, __VA_ARGS__)
#define zg_debug(mod, ...) ZG_LOG(ZG_LOG_DEBUG, mod, __VA_ARGS__)

/* At most `burst` messages per `window_ms`; the rest are counted and the
 * count is reported with the next message let through. Owned by whichever
 * context emits the message. */
typedef struct {
  uint64_t window_ms;
  uint32_t burst;
  uint64_t window_start_ms;
  uint32_t in_window;
  uint64_t suppressed;
} zg_ratelimit_t;

void zg_ratelimit_init(zg_ratelimit_t *rl, uint64_t window_ms, uint32_t burst);
/* Returns 1 when a message may be logged now; *suppressed then holds how
 * many were dropped since the last one let through (and is reset). */
int zg_ratelimit_allow(zg_ratelimit_t *rl, uint64_t now_ms,
                       uint64_t *suppressed);

#endif
