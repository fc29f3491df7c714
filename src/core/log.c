/* The logger: formatted lines to stderr (text, or one JSON object a line
 * for log pipelines), and rate limits for noisy events. */
#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* Set at start and by reloads (the control loop) while workers read it:
 * atomic loads and stores. */
static zg_log_level_t log_level = ZG_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

/* Like the level: set at start and by reloads, read by every thread. */
static int log_json;

void zg_log_set_json(int on) {
  __atomic_store_n(&log_json, on, __ATOMIC_RELAXED);
}

/* Appends `s` as the inside of a JSON string (RFC 8259 §7): quote,
 * backslash and control characters escaped; other bytes kept, so UTF-8
 * passes. Stops short of `cap` (a cut line stays valid JSON). */
static size_t json_escape(char *out, size_t n, size_t cap, const char *s) {
  static const char hex[] = "0123456789abcdef";
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    size_t need = c < 0x20 ? 6 : (c == '"' || c == '\\') ? 2 : 1;
    if (n + need > cap)
      break;
    if (c == '"' || c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)c;
    } else if (c == '\n' || c == '\t') {
      out[n++] = '\\';
      out[n++] = c == '\n' ? 'n' : 't';
    } else if (c < 0x20) {
      memcpy(out + n, "\\u00", 4);
      out[n + 4] = hex[c >> 4];
      out[n + 5] = hex[c & 15];
      n += 6;
    } else {
      out[n++] = (char)c;
    }
  }
  return n;
}

size_t zg_log_format(char *line, size_t len, int json, const char *stamp,
                     zg_log_level_t level, const char *module,
                     const char *msg) {
  size_t n;
  int r;
  if (len < 64)
    return 0;
  if (!json) {
    r = snprintf(line, len - 1, "%s %s %s: %s", stamp, level_names[level],
                 module, msg);
    n = r < 0 ? 0 : (size_t)r > len - 2 ? len - 2 : (size_t)r;
  } else {
    /* Room kept for the closing quote, brace and newline. */
    r = snprintf(line, len, "{\"time\":\"%s\",\"level\":\"%s\",\"module\":\"",
                 stamp, level_names[level]);
    n = r < 0 ? 0 : (size_t)r;
    n = json_escape(line, n, len - 40, module);
    memcpy(line + n, "\",\"msg\":\"", 9);
    n = json_escape(line, n + 9, len - 4, msg);
    line[n++] = '"';
    line[n++] = '}';
  }
  line[n++] = '\n';
  return n;
}

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
  char msg[2048], line[4096], stamp[40];
  struct timespec ts;
  struct tm tm;
  size_t n;
  va_list ap;

  if (thread_quiet && level == ZG_LOG_INFO)
    level = ZG_LOG_DEBUG;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", ts.tv_nsec / 1000000L);
  va_start(ap, fmt);
  if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
    msg[0] = '\0';
  va_end(ap);
  n = zg_log_format(line, sizeof(line),
                    __atomic_load_n(&log_json, __ATOMIC_RELAXED), stamp, level,
                    module, msg);
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
