/* Traffic counters, the Prometheus text pieces and the access log line.
 * Pure code. */
#include "core/metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const uint64_t zg_duration_bounds_us[ZG_DURATION_BUCKETS] = {
    5000,   10000,   25000,   50000,   100000,  250000,
    500000, 1000000, 2500000, 5000000, 10000000};

void zg_traffic_observe(zg_traffic_t *t, int status, uint64_t dur_us) {
  int cls = status >= 100 && status < 600 ? status / 100 : 0;
  t->requests[cls]++;
  t->dur_count++;
  t->dur_sum_us += dur_us;
  for (size_t i = 0; i < ZG_DURATION_BUCKETS; i++)
    if (dur_us <= zg_duration_bounds_us[i]) {
      t->dur_buckets[i]++;
      break;
    }
}

static bool reserve(zg_text_t *t, size_t more) {
  size_t cap;
  char *p;
  if (t->oom)
    return false;
  if (t->len + more + 1 <= t->cap)
    return true;
  cap = t->cap ? t->cap : 4096;
  while (cap < t->len + more + 1)
    cap *= 2;
  if (!(p = realloc(t->p, cap))) {
    t->oom = true;
    return false;
  }
  t->p = p;
  t->cap = cap;
  return true;
}

void zg_text_append(zg_text_t *t, const char *s, size_t len) {
  if (!reserve(t, len))
    return;
  memcpy(t->p + t->len, s, len);
  t->len += len;
  t->p[t->len] = '\0';
}

void zg_text_printf(zg_text_t *t, const char *fmt, ...) {
  va_list ap;
  int n;
  char small[256];
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof(small), fmt, ap);
  va_end(ap);
  if (n < 0)
    return;
  if ((size_t)n < sizeof(small)) {
    zg_text_append(t, small, (size_t)n);
    return;
  }
  if (!reserve(t, (size_t)n))
    return;
  va_start(ap, fmt);
  vsnprintf(t->p + t->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

void zg_text_label(zg_text_t *t, const char *v) {
  for (; *v; v++) {
    if (*v == '\\')
      zg_text_append(t, "\\\\", 2);
    else if (*v == '"')
      zg_text_append(t, "\\\"", 2);
    else if (*v == '\n')
      zg_text_append(t, "\\n", 2);
    else
      zg_text_append(t, v, 1);
  }
}

void zg_text_json_string(zg_text_t *t, const char *v) {
  zg_text_append(t, "\"", 1);
  for (const unsigned char *c = (const unsigned char *)v; *c; c++) {
    if (*c == '"' || *c == '\\') {
      char esc[2] = {'\\', (char)*c};
      zg_text_append(t, esc, 2);
    } else if (*c < 0x20 || *c >= 0x7f) {
      zg_text_printf(t, "\\u%04x", *c);
    } else {
      zg_text_append(t, (const char *)c, 1);
    }
  }
  zg_text_append(t, "\"", 1);
}

void zg_text_free(zg_text_t *t) {
  free(t->p);
  memset(t, 0, sizeof(*t));
}

void zg_traffic_ended(zg_traffic_t *t, zg_term_t term) {
  t->ended[zg_term_cause(term)]++;
}

void zg_text_terminations(zg_text_t *out, const char *name, const char *labels,
                          const zg_traffic_t *t) {
  for (int c = 0; c < ZG_CAUSE_COUNT; c++)
    zg_text_printf(out, "%s{%s,cause=\"%s\"} %llu\n", name, labels,
                   zg_term_cause_name((zg_term_cause_t)c),
                   (unsigned long long)t->ended[c]);
}

void zg_text_histogram(zg_text_t *out, const char *name, const char *labels,
                       const zg_traffic_t *t) {
  uint64_t cum = 0;
  for (size_t i = 0; i < ZG_DURATION_BUCKETS; i++) {
    cum += t->dur_buckets[i];
    zg_text_printf(out, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
                   (double)zg_duration_bounds_us[i] / 1e6,
                   (unsigned long long)cum);
  }
  zg_text_printf(out, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels,
                 (unsigned long long)t->dur_count);
  zg_text_printf(out, "%s_sum{%s} %.6f\n", name, labels,
                 (double)t->dur_sum_us / 1e6);
  zg_text_printf(out, "%s_count{%s} %llu\n", name, labels,
                 (unsigned long long)t->dur_count);
}

static void iso_time(char *buf, size_t len, int64_t ms) {
  time_t sec = (time_t)(ms / 1000);
  struct tm tm;
  size_t n;
  gmtime_r(&sec, &tm);
  n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, len - n, ".%03dZ", (int)(ms % 1000));
}

/* A text field: "-" when absent; bytes outside printable ASCII, spaces and
 * quotes escaped as \xXX so that a line is always one line of fields. */
static void text_field(zg_text_t *t, const char *v, size_t len, bool quoted) {
  if (!v || (!len && !quoted)) {
    zg_text_append(t, "-", 1);
    return;
  }
  if (quoted)
    zg_text_append(t, "\"", 1);
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)v[i];
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || (c == ' ' && !quoted))
      zg_text_printf(t, "\\x%02x", c);
    else
      zg_text_append(t, (const char *)&v[i], 1);
  }
  if (quoted)
    zg_text_append(t, "\"", 1);
}

static void json_field(zg_text_t *t, const char *key, const char *v,
                       size_t len) {
  char *copy;
  zg_text_printf(t, ",\"%s\":", key);
  if (!v) {
    zg_text_append(t, "null", 4);
    return;
  }
  copy = malloc(len + 1);
  if (!copy) {
    t->oom = true;
    return;
  }
  memcpy(copy, v, len);
  copy[len] = '\0';
  /* A NUL inside is cut there: targets never hold one (llhttp refuses). */
  zg_text_json_string(t, copy);
  free(copy);
}

void zg_access_format(zg_text_t *out, const zg_access_entry_t *e, bool json) {
  char when[40], code[3];
  const char *reason = e->reason ? e->reason : zg_term_text(e->term);
  iso_time(when, sizeof(when), e->time_ms);
  zg_term_code(e->term, e->phase, code);
  if (json) {
    zg_text_printf(out, "{\"time\":\"%s\",\"kind\":\"%s\"", when, e->kind);
    json_field(out, "client", e->client, e->client ? strlen(e->client) : 0);
    json_field(out, "service", e->service, e->service ? strlen(e->service) : 0);
    json_field(out, "instance", e->instance,
               e->instance ? strlen(e->instance) : 0);
    if (e->method) {
      json_field(out, "method", e->method, strlen(e->method));
      json_field(out, "target", e->target, e->target_len);
      if (e->version)
        json_field(out, "version", e->version, strlen(e->version));
    }
    zg_text_printf(out,
                   ",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                   "\"duration_ms\":%.3f",
                   e->status, (unsigned long long)e->bytes_in,
                   (unsigned long long)e->bytes_out,
                   (double)e->duration_us / 1000.0);
    json_field(out, "reason", reason, strlen(reason));
    json_field(out, "term", code, 2);
    zg_text_append(out, "}\n", 2);
    return;
  }
  zg_text_printf(out, "%s %s ", when, e->kind);
  text_field(out, e->client, e->client ? strlen(e->client) : 0, false);
  zg_text_append(out, " ", 1);
  text_field(out, e->service, e->service ? strlen(e->service) : 0, false);
  zg_text_append(out, " ", 1);
  text_field(out, e->instance, e->instance ? strlen(e->instance) : 0, false);
  zg_text_append(out, " ", 1);
  if (e->method) {
    zg_text_append(out, "\"", 1);
    text_field(out, e->method, strlen(e->method), false);
    zg_text_append(out, " ", 1);
    text_field(out, e->target, e->target_len, false);
    if (e->version) {
      zg_text_append(out, " ", 1);
      text_field(out, e->version, strlen(e->version), false);
    }
    zg_text_append(out, "\"", 1);
  } else {
    zg_text_append(out, "-", 1);
  }
  zg_text_printf(
      out, " %d %llu %llu %.3f ", e->status, (unsigned long long)e->bytes_in,
      (unsigned long long)e->bytes_out, (double)e->duration_us / 1000.0);
  text_field(out, reason, strlen(reason), true);
  zg_text_append(out, " ", 1);
  zg_text_append(out, code, 2);
  zg_text_append(out, "\n", 1);
}
