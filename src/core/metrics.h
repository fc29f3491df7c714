/* Counters of traffic per service, and the pieces of the Prometheus text
 * format and of the access log that are pure code: a growing text buffer,
 * label escaping, the request duration histogram and one access log line.
 * The gateway owns the counters; the admin module renders them. */
#ifndef ZKGATE_METRICS_H
#define ZKGATE_METRICS_H

#include "core/term.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Request duration histogram bounds, in microseconds (5 ms .. 10 s); the
 * +Inf bucket is the count. */
#define ZG_DURATION_BUCKETS 11
extern const uint64_t zg_duration_bounds_us[ZG_DURATION_BUCKETS];

typedef struct {
  uint64_t requests[6]; /* by status class: [1]..[5] = 1xx..5xx, [0] = none
                           (the client or the instance went away first) */
  uint64_t bytes_in;    /* from clients */
  uint64_t bytes_out;   /* to clients */
  uint64_t spliced;     /* TCP bytes (both ways) moved by splice(2) */
  uint64_t retries;     /* another instance tried after a failed connect */
  uint64_t ejections;   /* instances marked failed (passive health) */
  uint64_t dur_buckets[ZG_DURATION_BUCKETS]; /* not cumulative */
  uint64_t dur_count;
  uint64_t dur_sum_us;
  uint64_t ended[ZG_CAUSE_COUNT]; /* requests (HTTP) or connections (TCP)
                                     by what ended them (core/term.h) */
} zg_traffic_t;

/* Counts one finished request: its status (0: none) and duration. */
void zg_traffic_observe(zg_traffic_t *t, int status, uint64_t dur_us);
/* Counts one request or connection ended by `term`. */
void zg_traffic_ended(zg_traffic_t *t, zg_term_t term);

/* A growing text buffer; `oom` is set (and the text left as it was) when
 * memory runs out. */
typedef struct {
  char *p;
  size_t len, cap;
  bool oom;
} zg_text_t;

void zg_text_printf(zg_text_t *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void zg_text_append(zg_text_t *t, const char *s, size_t len);
/* A Prometheus label value (backslash, quote and newline escaped). */
void zg_text_label(zg_text_t *t, const char *value);
/* A JSON string, quotes included (control bytes and non-ASCII escaped as
 * \u00XX: the log stays one line of ASCII). */
void zg_text_json_string(zg_text_t *t, const char *value);
void zg_text_free(zg_text_t *t);

/* `name{LABELS,cause="C"} N` for every cause of core/term.h, from
 * t->ended; `labels` is the label set before it (e.g. `service="web"`). */
void zg_text_terminations(zg_text_t *out, const char *name, const char *labels,
                          const zg_traffic_t *t);

/* The histogram of `t` as Prometheus lines of metric `name` with the label
 * set `labels` (e.g. `service="web"`). */
void zg_text_histogram(zg_text_t *out, const char *name, const char *labels,
                       const zg_traffic_t *t);

/* One access log entry: an HTTP request or a TCP connection. */
typedef struct {
  int64_t time_ms;      /* when it finished, wall clock */
  const char *kind;     /* "http" or "tcp" */
  const char *client;   /* "ip:port" */
  const char *service;  /* NULL: none (not routed) */
  const char *instance; /* "host:port", NULL: none */
  const char *method;   /* HTTP only */
  const char *target;   /* HTTP only, as received */
  size_t target_len;
  const char *version; /* HTTP: "HTTP/2.0"; NULL for HTTP/1.x (not shown) */
  int status;          /* HTTP: the status sent, 0 none; TCP: 0 */
  uint64_t bytes_in, bytes_out;
  uint64_t duration_us;
  zg_term_t term;        /* how it ended (core/term.h) */
  zg_term_phase_t phase; /* in which phase (ignored for a normal end) */
  const char *reason;    /* the words, when not term's own (the message of an
                            error response); NULL: zg_term_text(term) */
} zg_access_entry_t;

/* Appends one line (with its newline) for `e` to `out`, as text or JSON.
 * Text: TIME KIND CLIENT SERVICE INSTANCE "METHOD TARGET[ VERSION]" STATUS IN
 * OUT DURATION_MS "REASON" CODE, with "-" for what is absent; CODE is the
 * two-letter termination code (zg_term_code), "term" in JSON. */
void zg_access_format(zg_text_t *out, const zg_access_entry_t *e, bool json);

#endif
