/* The admin listener: a small HTTP/1.1 server on zkgate's own loop. Each
 * connection carries one request (parsed by llhttp in strict mode, 8 KiB of
 * head at most, 10 s to send it) and is closed after the answer, which is
 * all that health checkers and Prometheus need. */
#include "control/admin.h"

#include "control/feed.h"
#include "control/ui.h"
#include "proxy/http_proxy.h"
#include "proxy/sni_proxy.h"
#include "core/list.h"
#include "net/listener.h"
#include "registry/source.h"
#include "proxy/tcp_proxy.h"
#include "net/tls.h"

#include <jansson.h>
#include <llhttp.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <strings.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_HEAD_MAX 8192
#define ADMIN_TIMEOUT_MS 10000
/* /events: a comment this often keeps idle streams (and the proxies in
 * between) from timing out; a reader with more than STREAM_QUEUE_MAX
 * bytes not taken (besides the history it asked for, at most
 * ZG_FEED_HISTORY_BYTES), or with bytes not taken for STREAM_STUCK_MS, is
 * dropped (its EventSource reconnects with Last-Event-ID and catches up
 * from the history); at most STREAM_MAX readers at once. */
#define STREAM_HEARTBEAT_MS 5000
#define STREAM_STUCK_MS 30000
#define STREAM_QUEUE_MAX (256 * 1024)
#define STREAM_SNDBUF 32768
#define STREAM_MAX 64

struct zg_admin {
  zg_gateway_t *gw;
  size_t n_streams; /* /events readers */
  zg_ratelimit_t drop_rl;
  zg_listener_t l; /* l.tcp.data: this; freed once it is closed */
  zg_list_t conns; /* struct admin_conn */
};

typedef struct admin_conn {
  zg_admin_t *admin;
  zg_link_t link; /* in the admin's conns */
  uv_tcp_t tcp;
  uv_timer_t timer;
  llhttp_t parser;
  char url[1024];
  size_t url_len;
  int url_too_long;
  int head_done;     /* llhttp saw the end of the head */
  size_t head_bytes; /* read before the end of the head */
  int done;          /* a request was answered (or refused): no more reading */
  /* Headers the admin reads: Authorization and Last-Event-ID (the field
   * name as it is being read; the value of each) */
  char field[16];
  size_t field_len;
  int in_header; /* 0, or which of the two the value being read is */
  char auth[800];
  size_t auth_len;
  int auth_count; /* more than one Authorization: refused */
  int auth_long;
  char last_id[24];
  size_t last_id_len;
  /* /events */
  int stream;          /* the answer is an event stream */
  zg_events_sub_t sub; /* in the feed's subscribers while streaming */
  size_t queued;       /* bytes written, not yet taken by the kernel */
  size_t limit;        /* past it, dropped: STREAM_QUEUE_MAX and room for the
                          history replayed (itself bounded) */
  uint64_t drained_ms; /* when queued was last 0 */
  unsigned handles;
  uv_write_t wreq;
  zg_text_t out;
} admin_conn_t;

static llhttp_settings_t settings;

/* ---- bodies ------------------------------------------------------------ */

static int64_t wall_ms(void) {
  uv_timeval64_t tv;
  if (uv_gettimeofday(&tv) != 0)
    return 0;
  return tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static const char *const class_names[6] = {"none", "1xx", "2xx",
                                           "3xx",  "4xx", "5xx"};

static void family(zg_text_t *o, const char *name, const char *type,
                   const char *help) {
  zg_text_printf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A family of one sample without labels. */
static void single(zg_text_t *o, const char *name, const char *type,
                   const char *help, unsigned long long n) {
  family(o, name, type, help);
  zg_text_printf(o, "%s %llu\n", name, n);
}

/* One sample, NAME{K1="V1"} N or NAME{K1="V1",K2="V2"} N: V1 (a name or
 * an address) is escaped, V2 (with K2 not NULL) is one of ours. */
static void sample(zg_text_t *o, const char *name, const char *k1,
                   const char *v1, const char *k2, const char *v2,
                   unsigned long long n) {
  zg_text_printf(o, "%s{%s=\"", name, k1);
  zg_text_label(o, v1);
  if (k2)
    zg_text_printf(o, "\",%s=\"%s", k2, v2);
  zg_text_printf(o, "\"} %llu\n", n);
}

/* The shards of the metrics: the control loop's gateway, then the other
 * workers' (paused while they are read). */
typedef struct {
  zg_gateway_t *gw[ZG_MAX_WORKERS];
  size_t n;
  /* map[k][i]: the service of shard k named like the control loop's
   * service i (NULL: none), looked up once per read */
  const zg_service_t **map[ZG_MAX_WORKERS];
} shards_t;

static int svc_name_cmp(const void *a, const void *b) {
  const zg_service_t *const *x = a, *const *y = b;
  return strcmp((*x)->conf->name, (*y)->conf->name);
}

static void shards_get(zg_gateway_t *gw, shards_t *sh) {
  memset(sh, 0, sizeof(*sh));
  sh->gw[0] = gw;
  sh->n = 1 + zg_gateway_isolate(gw, &sh->gw[1]);
  for (size_t k = 1; k < sh->n; k++) {
    zg_gateway_t *g = sh->gw[k];
    const zg_service_t **sorted =
        malloc((g->n_services ? g->n_services : 1) * sizeof(*sorted));
    sh->map[k] = calloc(gw->n_services ? gw->n_services : 1, sizeof(**sh->map));
    if (!sorted || !sh->map[k]) { /* out of memory: that shard counts 0 */
      free(sorted);
      continue;
    }
    memcpy(sorted, g->services, g->n_services * sizeof(*sorted));
    qsort(sorted, g->n_services, sizeof(*sorted), svc_name_cmp);
    for (size_t i = 0; i < gw->n_services; i++) {
      const zg_service_t *key = gw->services[i];
      const zg_service_t **hit =
          bsearch(&key, sorted, g->n_services, sizeof(*sorted), svc_name_cmp);
      sh->map[k][i] = hit ? *hit : NULL;
    }
    free(sorted);
  }
}

static void shards_put(zg_gateway_t *gw, shards_t *sh) {
  for (size_t k = 1; k < sh->n; k++)
    free(sh->map[k]);
  zg_gateway_release(gw);
}

/* The service of shard k named like the control loop's service i. */
static const zg_service_t *shard_service(const shards_t *sh, size_t k,
                                         size_t i) {
  if (k == 0)
    return sh->gw[0]->services[i];
  return sh->map[k] ? sh->map[k][i] : NULL;
}

static void traffic_add(zg_traffic_t *acc, const zg_traffic_t *t) {
  for (int c = 0; c < 6; c++)
    acc->requests[c] += t->requests[c];
  acc->bytes_in += t->bytes_in;
  acc->bytes_out += t->bytes_out;
  acc->spliced += t->spliced;
  acc->retries += t->retries;
  acc->ejections += t->ejections;
  for (int b = 0; b < ZG_DURATION_BUCKETS; b++)
    acc->dur_buckets[b] += t->dur_buckets[b];
  acc->dur_count += t->dur_count;
  acc->dur_sum_us += t->dur_sum_us;
  for (int c = 0; c < ZG_CAUSE_COUNT; c++)
    acc->ended[c] += t->ended[c];
}

/* The traffic of the control loop's service i summed over the shards. */
static void service_traffic(const shards_t *sh, size_t i, zg_traffic_t *out) {
  memset(out, 0, sizeof(*out));
  for (size_t k = 0; k < sh->n; k++) {
    const zg_service_t *s = shard_service(sh, k, i);
    zg_service_stats_t st;
    if (!s)
      continue;
    zg_service_stats(s, &st);
    traffic_add(out, &st.traffic);
  }
}

/* `name{service="S"} value` for every service, EXPR_ (of `st`, the
 * service's zg_service_stats_t) summed over the shards. */
#define PER_SERVICE(o, sh, NAME_, TYPE_, HELP_, EXPR_)                         \
  do {                                                                         \
    family(o, NAME_, TYPE_, HELP_);                                            \
    for (size_t i_ = 0; i_ < (sh)->gw[0]->n_services; i_++) {                  \
      const zg_service_t *s0_ = (sh)->gw[0]->services[i_];                     \
      unsigned long long v_ = 0;                                               \
      for (size_t k_ = 0; k_ < (sh)->n; k_++) {                                \
        const zg_service_t *svc_ = shard_service(sh, k_, i_);                  \
        zg_service_stats_t st;                                                 \
        if (!svc_)                                                             \
          continue;                                                            \
        zg_service_stats(svc_, &st);                                           \
        v_ += (unsigned long long)(EXPR_);                                     \
      }                                                                        \
      sample(o, NAME_, "service", s0_->conf->name, NULL, NULL, v_);            \
    }                                                                          \
  } while (0)

/* The same for a gauge every worker holds alike (the pools): shard 0. */
#define PER_SERVICE_ONE(o, sh, NAME_, TYPE_, HELP_, EXPR_)                     \
  do {                                                                         \
    family(o, NAME_, TYPE_, HELP_);                                            \
    for (size_t i_ = 0; i_ < (sh)->gw[0]->n_services; i_++) {                  \
      const zg_service_t *svc = (sh)->gw[0]->services[i_];                     \
      sample(o, NAME_, "service", svc->conf->name, NULL, NULL,                 \
             (unsigned long long)(EXPR_));                                     \
    }                                                                          \
  } while (0)

/* An HTTP listener's accepted (which = 0) or active (1) connections, over
 * the shards' listeners on the same address. */
static uint64_t listener_sum(const shards_t *sh, const char *addr, int which) {
  uint64_t v = 0;
  for (size_t k = 0; k < sh->n; k++) {
    const zg_proxy_ctx_t *px = &sh->gw[k]->px;
    for (size_t i = 0; i < zg_http_listener_count(px); i++) {
      zg_listener_stats_t l;
      zg_http_listener_stats(px, i, &l);
      if (strcmp(l.addr, addr) != 0)
        continue;
      v += which ? l.active : l.accepted;
    }
  }
  return v;
}

static void sni_sum(const shards_t *sh, const char *addr, uint64_t counts[3]) {
  for (size_t k = 0; k < sh->n; k++) {
    const zg_proxy_ctx_t *px = &sh->gw[k]->px;
    for (size_t i = 0; i < zg_sni_listener_count(px); i++) {
      zg_listener_stats_t l;
      zg_sni_listener_stats(px, i, &l);
      if (strcmp(l.addr, addr) != 0)
        continue;
      counts[0] += l.not_tls;
      counts[1] += l.unknown_sni;
      counts[2] += l.timeouts;
    }
  }
}

/* The process: version, start time. */
static void metrics_process(const zg_gateway_t *gw, zg_text_t *o) {
  zg_gateway_stats_t gs;
  zg_gateway_stats(gw, &gs);
  family(o, "zkgate_build_info", "gauge", "Version of zkgate.");
  zg_text_printf(o, "zkgate_build_info{version=\"%s\"} 1\n", ZKGATE_VERSION);
  family(o, "zkgate_start_time_seconds", "gauge",
         "When zkgate started, seconds since the epoch.");
  zg_text_printf(o, "zkgate_start_time_seconds %.3f\n",
                 (double)gs.started_wall_ms / 1000.0);
}

/* The process-wide connection caps and what they refused. */
static void metrics_connlimit(const zg_gateway_t *gw, zg_text_t *o) {
  zg_connlimit_t cl;

  zg_connlimit_read(zg_shared_connlimit(gw->sh), &cl);
  family(o, "zkgate_connections_refused_total", "counter",
         "Client connections closed at accept, all listeners of the "
         "process, by the cap reached (max_connections, "
         "max_head_connections).");
  zg_text_printf(o,
                 "zkgate_connections_refused_total{limit=\"max_"
                 "connections\"} %llu\n",
                 (unsigned long long)cl.refused_open);
  zg_text_printf(o,
                 "zkgate_connections_refused_total{limit=\"max_head_"
                 "connections\"} %llu\n",
                 (unsigned long long)cl.refused_head);
  single(o, "zkgate_connections_open", "gauge",
         "Client connections open, all listeners of the process.", cl.open);
  single(o, "zkgate_connections_in_head", "gauge",
         "Client connections whose first request head (or ClientHello, or "
         "TLS handshake) is not complete yet.",
         cl.head);
  family(o, "zkgate_connections_max", "gauge",
         "The caps in force, by limit (max_connections, "
         "max_head_connections).");
  zg_text_printf(o,
                 "zkgate_connections_max{limit=\"max_connections\"} "
                 "%llu\n",
                 (unsigned long long)cl.max_open);
  zg_text_printf(o,
                 "zkgate_connections_max{limit=\"max_head_connections\"} "
                 "%llu\n",
                 (unsigned long long)cl.max_head);
}

/* Listeners and workers: connections accepted, reloads rejected. */
static void metrics_listeners(const zg_gateway_t *gw, zg_text_t *o,
                              shards_t *sh) {
  family(o, "zkgate_listener_connections_accepted_total", "counter",
         "Client connections accepted by HTTP listeners.");
  for (size_t i = 0; i < zg_http_listener_count(&gw->px); i++) {
    zg_listener_stats_t l;
    zg_http_listener_stats(&gw->px, i, &l);
    sample(o, "zkgate_listener_connections_accepted_total", "listener", l.addr,
           NULL, NULL, listener_sum(sh, l.addr, 0));
  }
  family(o, "zkgate_worker_connections_accepted_total", "counter",
         "Client connections accepted by each worker (event loop), on HTTP "
         "listeners and TCP services.");
  for (size_t k = 0; k < sh->n; k++) {
    const zg_gateway_t *g = sh->gw[k];
    unsigned long long v = 0;
    for (size_t i = 0; i < zg_http_listener_count(&g->px); i++) {
      zg_listener_stats_t l;
      zg_http_listener_stats(&g->px, i, &l);
      v += l.accepted;
    }
    for (size_t i = 0; i < g->n_services; i++) {
      zg_service_stats_t st;
      if (g->services[i]->conf->protocol != ZG_PROTO_TCP)
        continue;
      zg_service_stats(g->services[i], &st);
      v += st.accepted;
    }
    zg_text_printf(o,
                   "zkgate_worker_connections_accepted_total{worker=\"%u\"} "
                   "%llu\n",
                   zg_gateway_worker_id(g), v);
  }
  family(o, "zkgate_worker_reloads_rejected_total", "counter",
         "Reloads the control loop applied and another worker could not "
         "(it kept its configuration; the log says why).");
  for (size_t k = 1; k < sh->n; k++) {
    zg_gateway_stats_t gs;
    zg_gateway_stats(sh->gw[k], &gs);
    zg_text_printf(o,
                   "zkgate_worker_reloads_rejected_total{worker=\"%u\"} %llu\n",
                   gs.worker, (unsigned long long)gs.reloads_failed);
  }
}

/* TLS on the client side: passthrough rejections, handshakes. */
static void metrics_tls(const zg_gateway_t *gw, zg_text_t *o, shards_t *sh) {
  family(o, "zkgate_tls_rejected_total", "counter",
         "Clients a tls-passthrough listener closed before choosing a "
         "service, by reason (not_tls, unknown_sni, timeout).");
  for (size_t i = 0; i < zg_sni_listener_count(&gw->px); i++) {
    zg_listener_stats_t sl;
    uint64_t counts[3] = {0, 0, 0};
    zg_sni_listener_stats(&gw->px, i, &sl);
    sni_sum(sh, sl.addr, counts);
    static const char *const why[3] = {"not_tls", "unknown_sni", "timeout"};
    for (int k = 0; k < 3; k++) {
      sample(o, "zkgate_tls_rejected_total", "listener", sl.addr, "reason",
             why[k], counts[k]);
    }
  }
  family(o, "zkgate_tls_handshakes_total", "counter",
         "TLS handshakes completed on listeners that terminate TLS; "
         "resumed=\"yes\" for those that resumed a session.");
  for (size_t i = 0; i < gw->n_tls; i++) {
    zg_tls_counts_t c;
    const char *addr = zg_tls_server_listener(gw->tls[i]);
    zg_tls_server_counts(gw->tls[i], &c);
    sample(o, "zkgate_tls_handshakes_total", "listener", addr, "resumed", "no",
           c.handshakes - c.resumed);
    sample(o, "zkgate_tls_handshakes_total", "listener", addr, "resumed", "yes",
           c.resumed);
  }
  family(o, "zkgate_tls_handshake_failures_total", "counter",
         "TLS handshakes that failed (bad or missing client certificate, "
         "no common protocol or cipher, not TLS, timeout) on listeners "
         "that terminate TLS.");
  for (size_t i = 0; i < gw->n_tls; i++) {
    zg_tls_counts_t c;
    zg_tls_server_counts(gw->tls[i], &c);
    sample(o, "zkgate_tls_handshake_failures_total", "listener",
           zg_tls_server_listener(gw->tls[i]), NULL, NULL, c.failures);
  }
}

/* Client connections open on each HTTP listener. */
static void metrics_listener_active(const zg_gateway_t *gw, zg_text_t *o,
                                    shards_t *sh) {
  family(o, "zkgate_listener_connections_active", "gauge",
         "Client connections open on HTTP listeners.");
  for (size_t i = 0; i < zg_http_listener_count(&gw->px); i++) {
    zg_listener_stats_t l;
    zg_http_listener_stats(&gw->px, i, &l);
    sample(o, "zkgate_listener_connections_active", "listener", l.addr, NULL,
           NULL, listener_sum(sh, l.addr, 1));
  }
}

/* HTTP requests by service and class, and their durations. */
static void metrics_requests(const zg_gateway_t *gw, zg_text_t *o,
                             shards_t *sh) {
  family(o, "zkgate_requests_total", "counter",
         "HTTP requests by service and status class (none: no response "
         "was sent).");
  for (size_t i = 0; i < gw->n_services; i++) {
    const zg_service_t *svc = gw->services[i];
    zg_traffic_t t;
    if (svc->conf->protocol != ZG_PROTO_HTTP)
      continue;
    service_traffic(sh, i, &t);
    for (int c = 0; c < 6; c++) {
      sample(o, "zkgate_requests_total", "service", svc->conf->name, "class",
             class_names[c], t.requests[c]);
    }
  }
  {
    zg_traffic_t t;
    memset(&t, 0, sizeof(t));
    for (size_t k = 0; k < sh->n; k++)
      traffic_add(&t, zg_http_unrouted(&sh->gw[k]->px));
    for (int c = 0; c < 6; c++)
      zg_text_printf(o,
                     "zkgate_requests_total{service=\"\",class=\"%s\"} %llu\n",
                     class_names[c], (unsigned long long)t.requests[c]);
  }

  family(o, "zkgate_terminations_total", "counter",
         "HTTP requests and TCP connections by what ended them (the first "
         "letter of the access log's termination code).");
  for (size_t i = 0; i <= gw->n_services; i++) {
    zg_text_t label = {0};
    zg_traffic_t t;
    memset(&t, 0, sizeof(t));
    zg_text_printf(&label, "service=\"");
    if (i < gw->n_services) {
      service_traffic(sh, i, &t);
      zg_text_label(&label, gw->services[i]->conf->name);
    } else {
      for (size_t k = 0; k < sh->n; k++) /* requests not routed */
        traffic_add(&t, zg_http_unrouted(&sh->gw[k]->px));
    }
    zg_text_printf(&label, "\"");
    if (!label.oom)
      zg_text_terminations(o, "zkgate_terminations_total", label.p, &t);
    zg_text_free(&label);
  }

  family(o, "zkgate_request_duration_seconds", "histogram",
         "HTTP request duration, from the complete head to the end of the "
         "response.");
  for (size_t i = 0; i < gw->n_services; i++) {
    const zg_service_t *svc = gw->services[i];
    zg_text_t label = {0};
    zg_traffic_t t;
    if (svc->conf->protocol != ZG_PROTO_HTTP)
      continue;
    service_traffic(sh, i, &t);
    zg_text_printf(&label, "service=\"");
    zg_text_label(&label, svc->conf->name);
    zg_text_printf(&label, "\"");
    if (!label.oom)
      zg_text_histogram(o, "zkgate_request_duration_seconds", label.p, &t);
    zg_text_free(&label);
  }
}

/* Per service: instances, failures, retries, bytes, pools. */
static void metrics_services(const zg_gateway_t *gw, zg_text_t *o,
                             shards_t *sh) {
  PER_SERVICE(o, sh, "zkgate_upstream_connect_failures_total", "counter",
              "Connections to instances that failed (refused, timed out, "
              "unresolvable, TLS handshake or verification failed).",
              st.connect_failures);
  PER_SERVICE(o, sh, "zkgate_upstream_tls_handshakes_total", "counter",
              "TLS handshakes with instances that completed.",
              st.up_tls_handshakes);
  PER_SERVICE(o, sh, "zkgate_upstream_tls_resumed_total", "counter",
              "TLS handshakes with instances that resumed a session.",
              st.up_tls_resumed);
  PER_SERVICE(o, sh, "zkgate_upstream_tls_failures_total", "counter",
              "TLS handshakes with instances that failed (certificate not "
              "verified, name mismatch, protocol error, timeout); also in "
              "zkgate_upstream_connect_failures_total.",
              st.up_tls_failures);
  PER_SERVICE(o, sh, "zkgate_retries_total", "counter",
              "Other instances tried after a failure.", st.traffic.retries);
  PER_SERVICE(o, sh, "zkgate_health_ejections_total", "counter",
              "Instances taken out of rotation by passive health checks.",
              st.traffic.ejections);
  PER_SERVICE(o, sh, "zkgate_no_instance_total", "counter",
              "Connections or requests refused for want of a live instance.",
              st.no_instance);
  PER_SERVICE(o, sh, "zkgate_received_bytes_total", "counter",
              "Bytes received from clients.", st.traffic.bytes_in);
  PER_SERVICE(o, sh, "zkgate_sent_bytes_total", "counter",
              "Bytes sent to clients.", st.traffic.bytes_out);
  PER_SERVICE_ONE(o, sh, "zkgate_pool_instances", "gauge",
                  "Instances in the service's pool, in service or not.",
                  zg_service_pool(svc) ? zg_service_pool(svc)->n : 0);
  PER_SERVICE_ONE(o, sh, "zkgate_pool_live_instances", "gauge",
                  "Instances in the service's pool taking new connections.",
                  zg_service_pool(svc) ? zg_service_pool(svc)->n_live : 0);
}

/* The TCP splice(2) relay, summed over the workers; the busy pipes and
 * their cap from the process's count (exact: a sum of the workers' own
 * counts, read one after the other, could pass the cap). */
static void metrics_splice(const zg_gateway_t *gw, const shards_t *sh,
                           zg_text_t *o) {
  zg_tcp_splice_stats_t t = {0};
  zg_connlimit_t cl;
  for (size_t k = 0; k < sh->n; k++) {
    zg_tcp_splice_stats_t w;
    zg_tcp_splice_stats(&sh->gw[k]->px, &w);
    t.sessions += w.sessions;
    t.pipes_kept += w.pipes_kept;
    t.pipes_created += w.pipes_created;
    t.pipe_failures += w.pipe_failures;
    t.pipes_capped += w.pipes_capped;
  }
  zg_connlimit_read(zg_shared_connlimit(gw->sh), &cl);
  PER_SERVICE(o, sh, "zkgate_tcp_spliced_bytes_total", "counter",
              "TCP bytes (both ways) moved socket to pipe to socket by "
              "splice(2), never entering user space.",
              st.traffic.spliced);
  single(o, "zkgate_tcp_spliced_sessions_total", "counter",
         "TCP sessions relayed with splice(2) (neither side TLS, "
         "tcp_splice = auto).",
         t.sessions);
  family(o, "zkgate_tcp_splice_pipes", "gauge",
         "Pipes for splice(2): busy (bytes in flight) and kept empty for "
         "reuse.");
  zg_text_printf(o, "zkgate_tcp_splice_pipes{state=\"busy\"} %llu\n",
                 (unsigned long long)cl.pipes);
  zg_text_printf(o, "zkgate_tcp_splice_pipes{state=\"kept\"} %llu\n",
                 (unsigned long long)t.pipes_kept);
  single(o, "zkgate_tcp_splice_pipes_created_total", "counter",
         "Pipes made for splice(2).", t.pipes_created);
  single(o, "zkgate_tcp_splice_pipe_failures_total", "counter",
         "Pipes that could not be made (EMFILE, ENFILE): those reads were "
         "copied through user space instead.",
         t.pipe_failures);
  single(o, "zkgate_tcp_splice_pipes_max", "gauge",
         "The cap on busy pipes in force ([proxy] max_pipes), all workers.",
         cl.max_pipes == ZG_PIPES_UNCAPPED ? 0 : cl.max_pipes);
  single(o, "zkgate_tcp_splice_pipes_capped_total", "counter",
         "Reads of spliced sessions that found the busy pipes at "
         "max_pipes: copied through user space instead.",
         t.pipes_capped);
}

/* The etcd source (control loop only). */
static void metrics_etcd(const zg_gateway_t *gw, zg_text_t *o) {
  zg_source_stats_t es;
  zg_source_stats(gw->etcd, &es);
  family(o, "zkgate_etcd_connected", "gauge",
         "1 while the etcd watch stream is up.");
  zg_text_printf(o, "zkgate_etcd_connected %d\n",
                 es.state == ZG_SOURCE_CONNECTED);
  family(o, "zkgate_etcd_revision", "gauge",
         "The highest etcd revision applied to the pools.");
  zg_text_printf(o, "zkgate_etcd_revision %lld\n", (long long)es.etcd.revision);
  single(o, "zkgate_etcd_watch_events_total", "counter",
         "etcd watch events received.", es.watch_events);
  single(o, "zkgate_etcd_reads_total", "counter",
         "etcd range reads of a whole prefix.", es.etcd.reads);
  single(o, "zkgate_etcd_rereads_total", "counter",
         "Prefixes read again because etcd compacted past their revision.",
         es.etcd.rereads);
  single(o, "zkgate_etcd_failovers_total", "counter",
         "Moves to another etcd endpoint after a failure.", es.etcd.failovers);
  single(o, "zkgate_etcd_watch_streams_total", "counter",
         "etcd watch streams opened (one for all prefixes at a time).",
         es.etcd.streams);
}

/* Which registry each service's pool comes from. */
static void metrics_sources(const shards_t *sh, zg_text_t *o) {
  family(o, "zkgate_service_source", "gauge",
         "1 for the registry a service's pool comes from (source zookeeper, "
         "etcd or static) and its path.");
  for (size_t i = 0; i < sh->gw[0]->n_services; i++) {
    const zg_service_conf_t *c = sh->gw[0]->services[i]->conf;
    const char *path = zg_service_conf_path(c);
    zg_text_printf(o, "zkgate_service_source{service=\"");
    zg_text_label(o, c->name);
    zg_text_printf(o, "\",source=\"%s\",path=\"",
                   c->etcd_prefix ? "etcd"
                   : c->zk_path   ? "zookeeper"
                                  : "static");
    zg_text_label(o, path ? path : "");
    zg_text_printf(o, "\"} 1\n");
  }
}

/* The ZooKeeper session (control loop only). */
static void metrics_registry(const zg_gateway_t *gw, zg_text_t *o) {
  zg_source_stats_t rs;
  int64_t now = wall_ms();
  zg_source_stats(gw->registry, &rs);
  family(o, "zkgate_zookeeper_session_state", "gauge",
         "1 for the ZooKeeper session's current state.");
  for (int st = ZG_SOURCE_CONNECTING; st <= ZG_SOURCE_CLOSED; st++)
    zg_text_printf(o, "zkgate_zookeeper_session_state{state=\"%s\"} %d\n",
                   zg_source_state_name((zg_source_state_t)st),
                   (int)rs.state == st);
  single(o, "zkgate_zookeeper_session_expiries_total", "counter",
         "ZooKeeper sessions lost (expired, or disconnected past the "
         "session timeout) and replaced.",
         rs.expiries);
  single(o, "zkgate_zookeeper_watch_events_total", "counter",
         "ZooKeeper watches fired.", rs.watch_events);
  family(o, "zkgate_zookeeper_reads_total", "counter",
         "ZooKeeper children lists, data reads and data sweep stats issued.");
  zg_text_printf(o, "zkgate_zookeeper_reads_total{kind=\"list\"} %llu\n",
                 (unsigned long long)rs.zk.lists);
  zg_text_printf(o, "zkgate_zookeeper_reads_total{kind=\"data\"} %llu\n",
                 (unsigned long long)rs.zk.reads);
  zg_text_printf(o, "zkgate_zookeeper_reads_total{kind=\"stat\"} %llu\n",
                 (unsigned long long)rs.zk.checks);
  family(o, "zkgate_zookeeper_watches", "gauge",
         "ZooKeeper watches the session holds: one child (or exists) watch "
         "per path, one data watch per instance within the watch budget.");
  zg_text_printf(o, "zkgate_zookeeper_watches{kind=\"child\"} %zu\n",
                 rs.zk.path_watches);
  zg_text_printf(o, "zkgate_zookeeper_watches{kind=\"data\"} %zu\n",
                 rs.zk.data_watches);
  family(o, "zkgate_zookeeper_watch_bytes", "gauge",
         "Estimated size of the SetWatches packet a reconnection sends, and "
         "the budget it is kept under ([zookeeper] max_watch_bytes; 0: none).");
  zg_text_printf(o, "zkgate_zookeeper_watch_bytes{kind=\"used\"} %llu\n",
                 (unsigned long long)rs.zk.watch_bytes);
  zg_text_printf(o, "zkgate_zookeeper_watch_bytes{kind=\"budget\"} %llu\n",
                 (unsigned long long)rs.zk.watch_budget);
  family(o, "zkgate_zookeeper_unwatched_instances", "gauge",
         "Instances read without a data watch (past the watch budget): "
         "their data changes in place are seen by the data sweep.");
  zg_text_printf(o, "zkgate_zookeeper_unwatched_instances %zu\n",
                 rs.zk.unwatched);
  family(o, "zkgate_registry_last_update_age_seconds", "gauge",
         "Seconds since the registry last published a pool (-1: never).");
  zg_text_printf(o, "zkgate_registry_last_update_age_seconds %.3f\n",
                 rs.last_update_wall_ms
                     ? (double)(now - rs.last_update_wall_ms) / 1000.0
                     : -1.0);
}

/* Reloads of this configuration by result. */
static void metrics_reloads(const zg_gateway_t *gw, zg_text_t *o) {
  zg_gateway_stats_t gs;
  zg_gateway_stats(gw, &gs);
  family(o, "zkgate_config_reloads_total", "counter",
         "Configuration reloads (SIGHUP) by result.");
  zg_text_printf(o, "zkgate_config_reloads_total{result=\"ok\"} %llu\n",
                 (unsigned long long)gs.reloads_ok);
  zg_text_printf(o, "zkgate_config_reloads_total{result=\"failed\"} %llu\n",
                 (unsigned long long)gs.reloads_failed);
}

void zg_admin_metrics(zg_gateway_t *gw, zg_text_t *o) {
  shards_t shards, *sh = &shards;
  shards_get(gw, sh);
  metrics_process(gw, o);
  PER_SERVICE(o, sh, "zkgate_connections_accepted_total", "counter",
              "Client connections accepted (TCP services) or requests routed "
              "(HTTP services).",
              st.accepted);
  PER_SERVICE(o, sh, "zkgate_connections_active", "gauge",
              "Client connections (TCP services) or requests (HTTP services) "
              "in progress.",
              st.active);
  metrics_connlimit(gw, o);
  metrics_listeners(gw, o, sh);
  metrics_tls(gw, o, sh);
  metrics_listener_active(gw, o, sh);
  metrics_requests(gw, o, sh);
  metrics_services(gw, o, sh);
  metrics_splice(gw, sh, o);
  metrics_sources(sh, o);
  shards_put(gw, sh);
  if (gw->registry)
    metrics_registry(gw, o);
  if (gw->etcd)
    metrics_etcd(gw, o);
  metrics_reloads(gw, o);
}

const char *zg_admin_not_ready(zg_gateway_t *gw, char *buf, size_t len) {
  zg_gateway_stats_t gs;
  zg_gateway_stats(gw, &gs);
  if (gs.stopping)
    return "stopping";
  if (gs.draining)
    return "draining (SIGTERM)";
  if (gw->registry) {
    zg_source_stats_t rs;
    zg_source_stats(gw->registry, &rs);
    if (rs.state != ZG_SOURCE_CONNECTED && rs.max_stale_ms > 0 &&
        rs.disconnected_for_ms >= rs.max_stale_ms) {
      snprintf(buf, len, "ZooKeeper %s for %llu ms, past max_stale (%llu ms)",
               zg_source_state_name(rs.state),
               (unsigned long long)rs.disconnected_for_ms,
               (unsigned long long)rs.max_stale_ms);
      return buf;
    }
  }
  if (gw->etcd) {
    zg_source_stats_t es;
    zg_source_stats(gw->etcd, &es);
    if (es.state != ZG_SOURCE_CONNECTED && es.max_stale_ms > 0 &&
        es.disconnected_for_ms >= es.max_stale_ms) {
      snprintf(buf, len, "etcd %s for %llu ms, past max_stale (%llu ms)%s%s",
               zg_source_state_name(es.state),
               (unsigned long long)es.disconnected_for_ms,
               (unsigned long long)es.max_stale_ms,
               es.etcd.error[0] ? ": " : "", es.etcd.error);
      return buf;
    }
    for (size_t i = 0; i < gw->n_services; i++) {
      const zg_service_t *svc = gw->services[i];
      if (svc->conf->etcd_prefix && !svc->zk_pool) {
        snprintf(buf, len,
                 "service %s not synchronised with etcd %s yet (%s%s%s)",
                 svc->conf->name, svc->conf->etcd_prefix,
                 zg_source_state_name(es.state), es.etcd.error[0] ? ": " : "",
                 es.etcd.error);
        return buf;
      }
    }
  }
  for (size_t i = 0; i < gw->n_services; i++) {
    const zg_service_t *svc = gw->services[i];
    if (svc->conf->zk_path && !svc->zk_pool) {
      snprintf(buf, len, "service %s not synchronised with %s yet",
               svc->conf->name, svc->conf->zk_path);
      return buf;
    }
  }
  for (size_t i = 0; i < gw->n_discovers; i++) {
    if (!gw->discovers[i]) { /* out of memory at a reload */
      snprintf(buf, len, "discover %s: not watched (out of memory)",
               gw->cfg->discovers[i].name);
      return buf;
    }
    if (!gw->discovers[i]->listed) {
      snprintf(buf, len, "discover %s: %s not listed yet",
               gw->discovers[i]->conf->name,
               zg_discover_conf_root(gw->discovers[i]->conf));
      return buf;
    }
  }
  return NULL;
}

/* How a service balances: the keys as configured (hash_key as written,
 * "header:X-User"; null when not hashing). */
static void balance_json(json_t *o, const zg_service_conf_t *c) {
  const char *hk = zg_hash_key_name(c->hash_key);
  char key[ZG_HASH_NAME_MAX + 8];
  json_object_set_new(o, "balance", json_string(zg_balance_name(c->balance)));
  if (hk && c->hash_name[0])
    snprintf(key, sizeof(key), "%s:%s", hk, c->hash_name);
  else if (hk)
    snprintf(key, sizeof(key), "%s", hk);
  json_object_set_new(o, "hash_key", hk ? json_string(key) : json_null());
  json_object_set_new(o, "slow_start_ms",
                      json_integer((json_int_t)c->slow_start_ms));
  json_object_set_new(o, "least_request_latency",
                      json_string(c->latency_ewma ? "ewma" : "off"));
  if (c->latency_ewma)
    json_object_set_new(o, "least_request_decay_ms",
                        json_integer((json_int_t)c->latency_decay_ms));
}

/* Per instance, what the balance makes of it: under slow_start the weight
 * it has now (ramping from 10% of `weight`), under least_request_latency =
 * ewma the latency estimate, the mean over the workers that have one (each
 * keeps its own). */
static void instance_balance_json(json_t *o, const shards_t *sh, size_t si,
                                  const zg_instance_t *in, const char *key) {
  zg_gateway_t *gw = sh->gw[0];
  const zg_service_conf_t *c = gw->services[si]->conf;
  if (c->slow_start_ms) {
    uint64_t now = uv_now(gw->loop), age;
    /* seen on the registry's loop: a clock a little ahead is "just now" */
    age = !in->seen_ms         ? UINT64_MAX
          : in->seen_ms >= now ? 0
                               : now - in->seen_ms;
    json_object_set_new(o, "effective_weight",
                        json_real((double)zg_balance_slow_start_weight(
                                      in->weight, age, c->slow_start_ms) /
                                  1000.0));
  }
  if (c->latency_ewma) {
    double sum = 0;
    int n = 0;
    for (size_t k = 0; k < sh->n; k++) {
      const zg_service_t *s = shard_service(sh, k, si);
      double v = s ? zg_service_latency_us(s, key) : 0;
      if (v > 0) {
        sum += v;
        n++;
      }
    }
    json_object_set_new(o, "latency_ewma_ms",
                        n ? json_real(sum / n / 1000.0) : json_null());
  }
}

static json_t *instance_json(const shards_t *sh, size_t si,
                             const zg_instance_t *in) {
  zg_gateway_t *gw = sh->gw[0];
  const zg_service_t *svc = gw->services[si];
  char addr[ZG_HOST_MAX + 10], key[ZG_HOST_MAX + 10];
  size_t active = 0;
  zg_instance_stats_t st;
  json_t *o;
  zg_instance_addr_str(in, addr, sizeof(addr));
  /* Health and connections are the address connected to (the plain port
   * of a registration with sslPort under upstream_tls = off). */
  zg_service_instance_key(svc, in, key, sizeof(key));
  memset(&st, 0, sizeof(st));
  for (size_t k = 0; k < sh->n; k++) {
    const zg_service_t *s = shard_service(sh, k, si);
    if (s)
      active += svc->conf->protocol == ZG_PROTO_HTTP
                    ? zg_http_instance_active(&sh->gw[k]->px, s, key)
                    : zg_tcp_instance_active(&sh->gw[k]->px, s, key);
    if (s)
      zg_service_instance_stats(s, key, &st);
  }
  if (svc->conf->etcd_prefix)
    o = json_pack(
        "{s:s, s:s?, s:s, s:b, s:I, s:b, s:s, s:I, s:I}", "address", addr,
        "key", in->key, "format", zg_instance_format_name(in->format), "up",
        in->up, "weight", (json_int_t)in->weight, "tls", in->tls, "health",
        zg_service_is_failed(&gw->svc_ctx, key) ? "failed" : "ok", "active",
        (json_int_t)active, "revision", (json_int_t)in->version);
  else
    o = json_pack("{s:s, s:s?, s:s, s:b, s:I, s:b, s:s, s:I, s:i, s:I}",
                  "address", addr, "znode", in->key, "format",
                  zg_instance_format_name(in->format), "up", in->up, "weight",
                  (json_int_t)in->weight, "tls", in->tls, "health",
                  zg_service_is_failed(&gw->svc_ctx, key) ? "failed" : "ok",
                  "active", (json_int_t)active, "data_version",
                  (int)in->version, "mtime_ms", (json_int_t)in->mtime_ms);
  if (o)
    instance_balance_json(o, sh, si, in, key);
  /* Counters since the start (or the table's restart): the dashboard
   * takes rates from their differences. */
  if (o)
    json_object_set_new(o, "traffic",
                        json_pack("{s:I, s:I, s:f}", "requests",
                                  (json_int_t)st.requests, "errors",
                                  (json_int_t)st.errors, "duration_sum_seconds",
                                  (double)st.dur_sum_us / 1e6));
  return o;
}

static json_t *service_json(const shards_t *sh, size_t si) {
  zg_gateway_t *gw = sh->gw[0];
  const zg_service_t *svc = gw->services[si];
  const zg_service_conf_t *c = svc->conf;
  uint64_t active = 0;
  const zg_pool_t *pool = zg_service_pool(svc);
  json_t *o = json_object(), *routes = json_array(), *insts = json_array();
  if (!o || !routes || !insts) {
    json_decref(o);
    json_decref(routes);
    json_decref(insts);
    return NULL;
  }
  json_object_set_new(o, "name", json_string(c->name));
  json_object_set_new(o, "protocol",
                      json_string(zg_protocol_name(c->protocol)));
  json_object_set_new(o, "listen", json_string(c->listen.text));
  json_object_set_new(o, "source",
                      json_string(c->etcd_prefix ? "etcd"
                                  : c->zk_path   ? "zookeeper"
                                                 : "static"));
  json_object_set_new(o, "zk_path",
                      c->zk_path ? json_string(c->zk_path) : json_null());
  if (c->etcd_prefix)
    json_object_set_new(o, "etcd_prefix", json_string(c->etcd_prefix));
  json_object_set_new(o, "discovered",
                      svc->discover ? json_string(svc->discover->conf->name)
                                    : json_null());
  balance_json(o, c);
  if (c->protocol == ZG_PROTO_HTTP) {
    if (svc->discover) {
      json_array_append_new(routes,
                            json_pack("{s:n, s:s, s:b}", "host", "path_prefix",
                                      c->path_prefix, "strip_prefix", 1));
      if (c->host)
        json_array_append_new(routes,
                              json_pack("{s:s, s:s, s:b}", "host", c->host,
                                        "path_prefix", "/", "strip_prefix", 0));
    } else {
      json_array_append_new(
          routes, json_pack("{s:s?, s:s, s:b}", "host", c->host, "path_prefix",
                            c->path_prefix, "strip_prefix", c->strip_prefix));
    }
  }
  if (c->protocol == ZG_PROTO_TLS_PASSTHROUGH)
    json_array_append_new(routes, json_pack("{s:s?}", "sni", c->sni));
  json_object_set_new(o, "routes", routes);
  for (size_t k = 0; k < sh->n; k++) {
    const zg_service_t *s = shard_service(sh, k, si);
    zg_service_stats_t st;
    if (!s)
      continue;
    zg_service_stats(s, &st);
    active += st.active;
  }
  json_object_set_new(o, "active", json_integer((json_int_t)active));
  if (pool) {
    json_object_set_new(o, "pool_version",
                        json_integer((json_int_t)pool->version));
    json_object_set_new(
        o, "pool_age_seconds",
        json_real((double)(uv_now(gw->loop) - pool->created_ms) / 1000.0));
    json_object_set_new(
        o, "pool_source",
        json_string(pool == svc->zk_pool ? "zookeeper" : "static"));
    for (size_t i = 0; i < pool->n; i++)
      json_array_append_new(insts, instance_json(sh, si, &pool->inst[i]));
  } else {
    json_object_set_new(o, "pool_version", json_null());
    json_object_set_new(o, "pool_age_seconds", json_null());
    json_object_set_new(o, "pool_source", json_null());
  }
  json_object_set_new(o, "instances", insts);
  return o;
}

char *zg_admin_services_json(zg_gateway_t *gw) {
  json_t *root = json_object(), *list = json_array();
  shards_t shards;
  char *text;
  if (!root || !list) {
    json_decref(root);
    json_decref(list);
    return NULL;
  }
  shards_get(gw, &shards);
  for (size_t i = 0; i < gw->n_services; i++) {
    json_t *s = service_json(&shards, i);
    if (s)
      json_array_append_new(list, s);
  }
  shards_put(gw, &shards);
  json_object_set_new(root, "services", list);
  if (gw->registry) {
    zg_source_stats_t rs;
    zg_source_stats(gw->registry, &rs);
    json_object_set_new(root, "zookeeper",
                        json_pack("{s:s, s:I}", "state",
                                  zg_source_state_name(rs.state), "expiries",
                                  (json_int_t)rs.expiries));
  }
  if (gw->etcd) {
    zg_source_stats_t es;
    zg_source_stats(gw->etcd, &es);
    json_object_set_new(root, "etcd",
                        json_pack("{s:s, s:s, s:I, s:s}", "state",
                                  zg_source_state_name(es.state), "endpoint",
                                  es.etcd.endpoint, "revision",
                                  (json_int_t)es.etcd.revision, "error",
                                  es.etcd.error));
  }
  text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  json_decref(root);
  return text;
}

/* ---- authentication ---------------------------------------------------- */

/* Credentials are compared as SHA-256 digests with CRYPTO_memcmp: the time
 * taken tells neither how much of a guess was right nor the secret's
 * length. */
static int same_secret(const char *a, size_t alen, const char *b, size_t blen) {
  unsigned char da[EVP_MAX_MD_SIZE], db[EVP_MAX_MD_SIZE];
  unsigned la = 0, lb = 0;
  if (!EVP_Digest(a, alen, da, &la, EVP_sha256(), NULL) ||
      !EVP_Digest(b, blen, db, &lb, EVP_sha256(), NULL) || la != lb)
    return 0;
  return CRYPTO_memcmp(da, db, la) == 0;
}

/* The value of the query parameter `name` in `q` (after '?'),
 * percent-decoded into `out`; its length, or -1 when absent or too long. */
static int query_param(const char *q, const char *name, char *out, size_t cap) {
  size_t nlen = strlen(name), n = 0;
  while (q && *q) {
    const char *end = strchr(q, '&');
    if (!end)
      end = q + strlen(q);
    if ((size_t)(end - q) > nlen && !strncmp(q, name, nlen) && q[nlen] == '=') {
      for (const char *v = q + nlen + 1; v < end; v++) {
        unsigned hi, lo;
        char ch = *v;
        if (ch == '%' && end - v > 2 &&
            sscanf(v + 1, "%1x%1x", &hi, &lo) == 2) {
          ch = (char)(hi << 4 | lo);
          v += 2;
        }
        if (n + 1 >= cap)
          return -1;
        out[n++] = ch;
      }
      out[n] = '\0';
      return (int)n;
    }
    q = *end ? end + 1 : end;
  }
  return -1;
}

/* Whether the request carries [admin] auth's credentials: an Authorization
 * header (RFC 7235 §2.1: the scheme is case-insensitive), or, for a bearer
 * token, an access_token query parameter (RFC 6750 §2.3), which is how a
 * browser's EventSource or an address bar can carry it. */
static int authorized(admin_conn_t *c, const char *query) {
  const zg_config_t *cfg = c->admin->gw->cfg;
  const char *secret = cfg->admin.auth_secret, *scheme, *got;
  char want[(512 + 2) / 3 * 4 + 8], tok[800];
  size_t want_len, got_len, slen;
  int ok;
  if (cfg->admin.auth == ZG_ADMIN_AUTH_NONE)
    return 1;
  if (cfg->admin.auth == ZG_ADMIN_AUTH_BEARER) {
    scheme = "Bearer";
    want_len = strlen(secret);
    if (want_len >= sizeof(want))
      return 0;
    memcpy(want, secret, want_len);
  } else {
    scheme = "Basic";
    if (strlen(secret) > 512)
      return 0;
    want_len = (size_t)EVP_EncodeBlock((unsigned char *)want,
                                       (const unsigned char *)secret,
                                       (int)strlen(secret));
  }
  slen = strlen(scheme);
  if (c->auth_count == 1 && !c->auth_long && c->auth_len > slen &&
      !strncasecmp(c->auth, scheme, slen) && c->auth[slen] == ' ') {
    got = c->auth + slen;
    got_len = c->auth_len - slen;
    while (got_len && *got == ' ')
      got++, got_len--;
    while (got_len && (got[got_len - 1] == ' ' || got[got_len - 1] == '\t'))
      got_len--;
  } else if (c->auth_count == 0 && cfg->admin.auth == ZG_ADMIN_AUTH_BEARER &&
             query_param(query, "access_token", tok, sizeof(tok)) > 0) {
    got = tok;
    got_len = strlen(tok);
  } else {
    return 0;
  }
  ok = same_secret(want, want_len, got, got_len);
  OPENSSL_cleanse(want, sizeof(want));
  OPENSSL_cleanse(tok, sizeof(tok));
  return ok;
}

/* ---- connections ------------------------------------------------------- */

static void conn_free_if_done(admin_conn_t *c) {
  if (c->handles > 0)
    return;
  OPENSSL_cleanse(c->auth, sizeof(c->auth));
  zg_text_free(&c->out);
  free(c);
}

static void on_conn_closed(uv_handle_t *h) {
  admin_conn_t *c = h->data;
  c->handles--;
  conn_free_if_done(c);
}

static void conn_close(admin_conn_t *c) {
  if (uv_is_closing((uv_handle_t *)&c->tcp))
    return;
  zg_link_remove(&c->link);
  if (c->stream) {
    zg_events_unsubscribe(&c->sub);
    c->admin->n_streams--;
    c->stream = 0;
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
  uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  conn_close(req->data);
  free(req);
}

static void on_written(uv_write_t *req, int status) {
  admin_conn_t *c = req->data;
  uv_shutdown_t *sh;
  if (status < 0 || !(sh = malloc(sizeof(*sh)))) {
    conn_close(c);
    return;
  }
  sh->data = c;
  if (uv_shutdown(sh, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
    free(sh);
    conn_close(c);
  }
}

static const char *status_text(int status) {
  switch (status) {
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  }
  return "Error";
}

static void on_timeout(uv_timer_t *t);

static void respond(admin_conn_t *c, int status, const char *type,
                    const char *body, size_t len, int head_only) {
  uv_buf_t b;
  c->done = 1;
  uv_read_stop((uv_stream_t *)&c->tcp);
  /* The answer gets ADMIN_TIMEOUT_MS to be taken too: a client that never
   * reads would otherwise hold the connection and its buffer (a /metrics
   * text can be large) for ever. */
  uv_timer_start(&c->timer, on_timeout, ADMIN_TIMEOUT_MS, 0);
  c->out.len = 0;
  zg_text_printf(&c->out,
                 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: "
                 "%zu\r\nCache-Control: no-store\r\n%s%sConnection: "
                 "close\r\n\r\n",
                 status, status_text(status), type, len,
                 status == 405 ? "Allow: GET, HEAD\r\n"
                 /* The page asks nothing of any other origin. */
                 : !strncmp(type, "text/html", 9)
                     ? "Content-Security-Policy: default-src 'none'; "
                       "script-src 'unsafe-inline'; style-src "
                       "'unsafe-inline'; connect-src 'self'; img-src "
                       "data:\r\nX-Content-Type-Options: nosniff\r\n"
                     : "",
                 status != 401 ? ""
                 : c->admin->gw->cfg->admin.auth == ZG_ADMIN_AUTH_BASIC
                     ? "WWW-Authenticate: Basic realm=\"zkgate\", "
                       "charset=\"UTF-8\"\r\n"
                     : "WWW-Authenticate: Bearer realm=\"zkgate\"\r\n");
  if (!head_only)
    zg_text_append(&c->out, body, len);
  if (c->out.oom) {
    conn_close(c);
    return;
  }
  b = uv_buf_init(c->out.p, (unsigned)c->out.len);
  c->wreq.data = c;
  if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
    conn_close(c);
}

static void respond_text(admin_conn_t *c, int status, const char *text) {
  respond(c, status, "text/plain; charset=utf-8", text, strlen(text), 0);
}

/* ---- /events ------------------------------------------------------------
 * Server-Sent Events (WHATWG HTML, "Server-sent events"): the history
 * after ?since=ID (or the Last-Event-ID header an EventSource sends when
 * it reconnects), then every new event as it comes, on a connection that
 * stays open; writes are queued by libuv and counted here, never more than
 * STREAM_QUEUE_MAX. */

typedef struct {
  uv_write_t req;
  admin_conn_t *c;
  size_t len;
  char data[];
} stream_write_t;

static void on_stream_written(uv_write_t *req, int status) {
  stream_write_t *w = req->data;
  admin_conn_t *c = w->c;
  c->queued -= w->len;
  if (c->queued == 0)
    c->drained_ms = uv_now(c->tcp.loop);
  free(w);
  if (status < 0)
    conn_close(c);
}

static void stream_drop(admin_conn_t *c, const char *why) {
  uint64_t dropped;
  if (zg_ratelimit_allow(&c->admin->drop_rl, uv_now(c->tcp.loop), &dropped))
    zg_warn("admin",
            "/events reader dropped: %s (%zu bytes not taken; %llu more "
            "dropped)",
            why, c->queued, (unsigned long long)dropped);
  conn_close(c);
}

static void stream_write(admin_conn_t *c, const char *text, size_t len) {
  stream_write_t *w;
  uv_buf_t b;
  if (!c->stream)
    return; /* dropped already */
  if (c->queued + len > c->limit) {
    stream_drop(c, "slower than the feed");
    return;
  }
  if (!(w = malloc(sizeof(*w) + len))) {
    stream_drop(c, "out of memory");
    return;
  }
  memcpy(w->data, text, len);
  w->len = len;
  w->c = c;
  w->req.data = w;
  b = uv_buf_init(w->data, (unsigned)len);
  if (c->queued == 0)
    c->drained_ms = uv_now(c->tcp.loop);
  c->queued += len;
  if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_stream_written) !=
      0) {
    c->queued -= len;
    free(w);
    conn_close(c);
  }
}

static void on_stream_event(zg_events_sub_t *sub, const char *text,
                            size_t len) {
  stream_write(ZG_LIST_ITEM(sub, admin_conn_t, sub), text, len);
}

static void on_history(void *arg, const char *text, size_t len) {
  stream_write(arg, text, len);
}

static void on_heartbeat(uv_timer_t *t) {
  admin_conn_t *c = t->data;
  if (c->queued > 0 && uv_now(t->loop) - c->drained_ms >= STREAM_STUCK_MS) {
    stream_drop(c, "nothing taken for 30 s");
    return;
  }
  stream_write(c, ":\n\n", 3);
}

/* A decimal event id; -1 when `s` is not one. */
static int parse_id(const char *s, size_t len, uint64_t *out) {
  uint64_t v = 0;
  if (len == 0 || len > 19)
    return -1;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = v;
  return 0;
}

static void stream_start(admin_conn_t *c, const char *query, int head) {
  zg_events_t *ev = zg_feed_events(c->admin->gw->feed);
  char since_s[24], hello[160];
  uint64_t since = 0;
  int has_since = 0, n;
  if (!ev) {
    respond_text(c, 503, "no change feed (out of memory at start)\n");
    return;
  }
  if (c->last_id_len > 0) { /* a reconnecting EventSource: it knows best */
    has_since = parse_id(c->last_id, c->last_id_len, &since) == 0;
  } else if ((n = query_param(query, "since", since_s, sizeof(since_s))) >= 0) {
    if (parse_id(since_s, (size_t)n, &since) != 0) {
      respond_text(c, 400, "since: expected an event id (a number)\n");
      return;
    }
    has_since = 1;
  }
  if (head) {
    respond(c, 200, "text/event-stream", "", 0, 1);
    return;
  }
  if (c->admin->n_streams >= STREAM_MAX) {
    respond_text(c, 503, "too many /events readers\n");
    return;
  }
  c->done = 1;
  c->stream = 1;
  c->admin->n_streams++;
  /* The history (at most ZG_FEED_HISTORY_BYTES) goes out at once: room
   * for it besides the bound, so that a reader is not dropped for asking
   * for all of it. */
  c->limit = STREAM_QUEUE_MAX + (has_since ? ZG_FEED_HISTORY_BYTES : 0);
  c->sub.on_event = on_stream_event;
  /* A small send buffer: a reader that does not read is seen as such
   * after a few kilobytes, not after the kernel's megabytes. */
  {
    int size = STREAM_SNDBUF;
    uv_send_buffer_size((uv_handle_t *)&c->tcp, &size);
  }
  n = snprintf(hello, sizeof(hello),
               "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
               "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\n"
               "Connection: close\r\n\r\n: zkgate events; last id %llu\n\n",
               (unsigned long long)zg_events_last_id(ev));
  stream_write(c, hello, (size_t)n);
  if (has_since && since + 1 < zg_events_first_id(ev)) {
    n = snprintf(hello, sizeof(hello),
                 "data: {\"type\":\"history_gap\",\"since\":%llu,"
                 "\"first_kept\":%llu}\n\n",
                 (unsigned long long)since,
                 (unsigned long long)zg_events_first_id(ev));
    stream_write(c, hello, (size_t)n);
  }
  if (has_since)
    zg_events_since(ev, since, on_history, c);
  if (!c->stream)
    return; /* the history alone was too much for the bound */
  zg_events_subscribe(ev, &c->sub);
  uv_timer_start(&c->timer, on_heartbeat, STREAM_HEARTBEAT_MS,
                 STREAM_HEARTBEAT_MS);
}

static void handle(admin_conn_t *c) {
  zg_gateway_t *gw = c->admin->gw;
  int method = llhttp_get_method(&c->parser);
  int head = method == HTTP_HEAD;
  char path[sizeof(c->url) + 1], buf[512];
  const char *q;
  size_t plen;

  c->url[c->url_len] = '\0'; /* on_url keeps room for it */
  q = memchr(c->url, '?', c->url_len);
  plen = q ? (size_t)(q - c->url) : c->url_len;
  memcpy(path, c->url, plen);
  path[plen] = '\0';
  /* Health checkers ask without credentials; the rest shows the topology. */
  if (strcmp(path, "/healthz") && strcmp(path, "/ready") &&
      !authorized(c, q ? q + 1 : NULL)) {
    respond_text(c, 401, "authentication required ([admin] auth)\n");
    return;
  }
  if (strcmp(path, "/healthz") && strcmp(path, "/ready") &&
      strcmp(path, "/metrics") && strcmp(path, "/services") &&
      strcmp(path, "/events") && strcmp(path, "/") && strcmp(path, "/ui/")) {
    respond_text(c, 404,
                 "not found: try /healthz, /ready, /metrics, /services, "
                 "/events or / (the dashboard)\n");
    return;
  }
  if (method != HTTP_GET && method != HTTP_HEAD) {
    respond_text(c, 405, "only GET and HEAD\n");
    return;
  }
  if (!strcmp(path, "/healthz")) {
    respond(c, 200, "text/plain; charset=utf-8", "ok\n", 3, head);
  } else if (!strcmp(path, "/ready")) {
    const char *why = zg_admin_not_ready(gw, buf, sizeof(buf) - 2);
    if (!why) {
      respond(c, 200, "text/plain; charset=utf-8", "ready\n", 6, head);
    } else {
      char body[600];
      int n = snprintf(body, sizeof(body), "not ready: %s\n", why);
      respond(c, 503, "text/plain; charset=utf-8", body, (size_t)n, head);
    }
  } else if (!strcmp(path, "/") || !strcmp(path, "/ui/")) {
    respond(c, 200, "text/html; charset=utf-8", (const char *)zg_ui_index_html,
            zg_ui_index_html_len, head);
  } else if (!strcmp(path, "/events")) {
    stream_start(c, q ? q + 1 : NULL, head);
  } else if (!strcmp(path, "/metrics")) {
    zg_text_t t = {0};
    zg_admin_metrics(gw, &t);
    if (t.oom)
      respond_text(c, 500, "out of memory\n");
    else
      respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", t.p, t.len,
              head);
    zg_text_free(&t);
  } else {
    char *json = zg_admin_services_json(gw);
    if (!json)
      respond_text(c, 500, "out of memory\n");
    else
      respond(c, 200, "application/json", json, strlen(json), head);
    free(json);
  }
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  admin_conn_t *c = p->data;
  if (c->url_len + len >= sizeof(c->url)) {
    c->url_too_long = 1;
    return 0;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  admin_conn_t *c = p->data;
  if (c->field_len + len < sizeof(c->field)) {
    memcpy(c->field + c->field_len, at, len);
    c->field_len += len;
  } else {
    c->field_len = sizeof(c->field); /* longer than any we read */
  }
  return 0;
}

static int on_header_field_complete(llhttp_t *p) {
  admin_conn_t *c = p->data;
  c->in_header = 0;
  if (c->field_len == 13 && !strncasecmp(c->field, "authorization", 13)) {
    c->in_header = 1;
    c->auth_count++;
  } else if (c->field_len == 13 &&
             !strncasecmp(c->field, "last-event-id", 13)) {
    c->in_header = 2;
    c->last_id_len = 0;
  }
  c->field_len = 0;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  admin_conn_t *c = p->data;
  if (c->in_header == 1) {
    if (c->auth_len + len >= sizeof(c->auth))
      c->auth_long = 1;
    else {
      memcpy(c->auth + c->auth_len, at, len);
      c->auth_len += len;
    }
  } else if (c->in_header == 2 && c->last_id_len + len < sizeof(c->last_id)) {
    memcpy(c->last_id + c->last_id_len, at, len);
    c->last_id_len += len;
  }
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  admin_conn_t *c = p->data;
  if (c->url_too_long)
    respond_text(c, 404, "not found\n");
  else
    handle(c);
  return HPE_PAUSED;
}

static int on_headers_complete(llhttp_t *p) {
  admin_conn_t *c = p->data;
  c->head_done = 1;
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  static char buf[4096]; /* parsed at once, never kept */
  (void)h;
  (void)suggested;
  b->base = buf;
  b->len = sizeof(buf);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  admin_conn_t *c = st->data;
  llhttp_errno_t err;
  size_t off = 0;
  if (c->stream) { /* read only to see the reader go */
    if (nread < 0)
      conn_close(c);
    return;
  }
  if (c->done || nread == 0)
    return;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  /* The head is fed no further than ADMIN_HEAD_MAX bytes: llhttp bounds
   * nothing itself (docs/platform.md, llhttp), and a head that goes on past
   * the limit
   * gets 431 at once (RFC 6585 §5) instead of being read until the
   * timeout. */
  if (!c->head_done) {
    size_t room = ADMIN_HEAD_MAX - c->head_bytes;
    size_t take = (size_t)nread < room ? (size_t)nread : room;

    err = llhttp_execute(&c->parser, b->base, take);
    c->head_bytes += take;
    if (c->done)
      return;
    if (err != HPE_OK) {
      respond_text(c, 400, "bad request\n");
      return;
    }
    if (!c->head_done) {
      if (c->head_bytes >= ADMIN_HEAD_MAX)
        respond_text(c, 431, "request head larger than 8 KiB\n");
      return;
    }
    off = take;
  }
  if (off == (size_t)nread)
    return;
  err = llhttp_execute(&c->parser, b->base + off, (size_t)nread - off);
  if (c->done)
    return;
  if (err != HPE_OK)
    respond_text(c, 400, "bad request\n");
}

static void on_timeout(uv_timer_t *t) {
  admin_conn_t *c = t->data;
  if (!c->done)
    respond_text(c, 408, "request timeout\n");
  else
    conn_close(c); /* the answer was not taken in time */
}

static void on_connection(uv_stream_t *server, int status) {
  zg_admin_t *a = server->data;
  admin_conn_t *c;
  if (status < 0)
    return;
  if (!(c = calloc(1, sizeof(*c)))) {
    zg_listener_drop(server);
    return;
  }
  c->admin = a;
  uv_tcp_init(a->gw->loop, &c->tcp);
  uv_timer_init(a->gw->loop, &c->timer);
  c->tcp.data = c;
  c->timer.data = c;
  c->handles = 2;
  zg_list_push(&a->conns, &c->link);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
    conn_close(c);
    return;
  }
  llhttp_init(&c->parser, HTTP_REQUEST, &settings);
  c->parser.data = c;
  uv_timer_start(&c->timer, on_timeout, ADMIN_TIMEOUT_MS, 0);
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
    conn_close(c);
}

static void on_listener_closed(zg_listener_t *l);

zg_admin_t *zg_admin_open(zg_gateway_t *gw, const zg_listen_addr_t *addr) {
  zg_admin_t *a;
  int rc;
  if (!(a = calloc(1, sizeof(*a)))) {
    zg_error("admin", "cannot listen on %s: out of memory", addr->text);
    return NULL;
  }
  llhttp_settings_init(&settings);
  settings.on_url = on_url;
  settings.on_header_field = on_header_field;
  settings.on_header_field_complete = on_header_field_complete;
  settings.on_header_value = on_header_value;
  settings.on_headers_complete = on_headers_complete;
  settings.on_message_complete = on_message_complete;
  a->gw = gw;
  zg_ratelimit_init(&a->drop_rl, 10000, 3);
  rc = zg_listener_open(&a->l, gw->loop, addr, on_connection, 0, a,
                        on_listener_closed);
  if (rc != 0) {
    zg_error("admin", "cannot listen on %s: %s", addr->text, uv_strerror(rc));
    zg_listener_close(&a->l);
    return NULL;
  }
  zg_info("admin",
          "listening on %s: /healthz /ready /metrics /services /events",
          addr->text);
  return a;
}

static void on_listener_closed(zg_listener_t *l) {
  free(l->tcp.data);
}

void zg_admin_discard(zg_admin_t *a) {
  if (!a)
    return;
  while (!zg_list_empty(&a->conns))
    conn_close(ZG_LIST_ITEM(a->conns.first, struct admin_conn, link));
  zg_listener_close(&a->l);
}

const zg_gateway_admin_ops_t zg_admin_ops = {
    .open = zg_admin_open,
    .discard = zg_admin_discard,
};
