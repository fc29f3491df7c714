/* The logger: formatted lines to stderr, and rate limits for noisy events. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* Set at start and by reloads (the control loop) while workers read it:
 * atomic loads and stores. */
static zg_log_level_t log_level = ZG_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void zg_log_set_level(zg_log_level_t level) {
  __atomic_store_n(&log_level, level, __ATOMIC_RELAXED);
}

/* Workers other than the control loop: their info lines are debug ones
 * (the control loop's say the same once). */
static _Thread_local int thread_quiet;

void zg_log_thread_quiet(int on) {
  thread_quiet = on;
}

int zg_log_enabled(zg_log_level_t level) {
  if (thread_quiet && level == ZG_LOG_INFO)
    level = ZG_LOG_DEBUG;
  return level <= __atomic_load_n(&log_level, __ATOMIC_RELAXED);
}

void zg_log(zg_log_level_t level, const char *module, const char *fmt, ...) {
  char line[2048];
  struct timespec ts;
  struct tm tm;
  size_t n;
  int r;
  va_list ap;

  if (thread_quiet && level == ZG_LOG_INFO)
    level = ZG_LOG_DEBUG;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
  r = snprintf(line + n, sizeof(line) - n,
               ".%03ldZ %s %s: ", ts.tv_nsec / 1000000L, level_names[level],
               module);
  if (r > 0)
    n += (size_t)r;
  va_start(ap, fmt);
  r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
  va_end(ap);
  if (r > 0)
    n += (size_t)r;
  if (n > sizeof(line) - 2)
    n = sizeof(line) - 2; /* truncated: keep the newline */
  line[n++] = '\n';
  /* One write per line so that lines from several threads never mix. */
  fwrite(line, 1, n, stderr);
}

void zg_ratelimit_init(zg_ratelimit_t *rl, uint64_t window_ms, uint32_t burst) {
  rl->window_ms = window_ms;
  rl->burst = burst;
  rl->window_start_ms = 0;
  rl->in_window = 0;
  rl->suppressed = 0;
}

int zg_ratelimit_allow(zg_ratelimit_t *rl, uint64_t now_ms,
                       uint64_t *suppressed) {
  if (rl->in_window == 0 || now_ms - rl->window_start_ms >= rl->window_ms) {
    rl->window_start_ms = now_ms;
    rl->in_window = 0;
  }
  if (rl->in_window >= rl->burst) {
    rl->suppressed++;
    return 0;
  }
  rl->in_window++;
  *suppressed = rl->suppressed;
  rl->suppressed = 0;
  return 1;
}
