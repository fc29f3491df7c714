/* tls-passthrough listeners and the first phase of their sessions.
 *
 * A session reads the client's first bytes into one buffer of
 * ZG_TLS_HELLO_MAX bytes and runs the ClientHello parser over all of them
 * after each read, until it decides; [proxy] header_timeout bounds the
 * wait. With a server name (or none) a service is chosen from the
 * listener's table (zg_tls_sni_pick: exact, then the longest wildcard,
 * then the default), and the client handle and the bytes read are handed
 * to the TCP relay, which sends them to the instance first: nothing is
 * decrypted or changed. Not TLS, no service for the name, the client gone
 * or too slow: the client is closed, counted per listener and cause, and
 * logged at most 5 times per 10 s per listener.
 *
 * Listeners are reference-counted like HTTP ones: the gateway holds one
 * while the address is in use, each reading session one, so that a
 * listener a reload drops keeps its table for the sessions it has. The
 * client handle is on the heap because it outlives this phase. */
#include "proxy/sni_proxy.h"

#include "net/listener.h"
#include "core/list.h"
#include "core/log.h"
#include "proxy/tcp_proxy.h"
#include "core/tls_hello.h"
#include "upstream/service.h"

#include <stdlib.h>
#include <string.h>

struct zg_sni_listener {
  zg_proxy_ctx_t *px;
  zg_listener_t l;     /* l.tcp.data: this */
  zg_service_t **svcs; /* referenced; the services on this address */
  const char **snis;   /* their sni patterns (NULL: the default) */
  size_t n;
  unsigned refs;   /* the loop's while in use, each reading session's */
  uint64_t active; /* sessions reading their ClientHello */
  uint64_t accepted;
  uint64_t not_tls, unknown_sni, timeouts; /* clients closed, by cause */
  zg_ratelimit_t reject_rl;
};

typedef struct zg_sni_session {
  zg_sni_listener_t *sl;
  zg_link_t link;   /* in the loop's sessions */
  uv_tcp_t *client; /* NULL once handed to the relay */
  uv_timer_t timer; /* header_timeout */
  uint8_t *buf;     /* ZG_TLS_HELLO_MAX bytes; NULL once handed on */
  size_t len;
  unsigned handles; /* not yet closed */
  int done;
  uint64_t start_ns;
  zg_conn_ticket_t conn; /* admission: in its head until handed on */
  char client_addr[64];
} zg_sni_session_t;

/* This loop's tls-passthrough state (zg_proxy_ctx_t.sni). */
struct zg_sni_loop {
  zg_listener_set_t listeners; /* l.tcp.data: the zg_sni_listener_t */
  zg_list_t sessions;          /* zg_sni_session_t reading their ClientHello */
};

static void listener_unref(zg_sni_listener_t *sl);

/* ---- sessions ---------------------------------------------------------- */

static void session_free_if_done(zg_sni_session_t *s) {
  if (s->handles > 0)
    return;
  if (s->client)
    free(s->client);
  free(s->buf);
  listener_unref(s->sl);
  zg_conn_ticket_release(&s->conn); /* nothing left once handed on */
  free(s);
}

static void on_session_closed(uv_handle_t *h) {
  zg_sni_session_t *s = h->data;
  s->handles--;
  session_free_if_done(s);
}

/* Ends this phase: the client is closed unless it was handed on. */
static void session_end(zg_sni_session_t *s) {
  if (s->done)
    return;
  s->done = 1;
  s->sl->active--;
  zg_link_remove(&s->link);
  if (s->client)
    uv_close((uv_handle_t *)s->client, on_session_closed);
  uv_close((uv_handle_t *)&s->timer, on_session_closed);
}

static void reject(zg_sni_session_t *s, uint64_t *counter, const char *what,
                   const char *detail) {
  zg_sni_listener_t *sl = s->sl;
  uint64_t dropped;
  (*counter)++;
  if (zg_ratelimit_allow(&sl->reject_rl, uv_now(sl->px->loop), &dropped))
    zg_warn("tls", "listener %s: client %s closed: %s%s%s%s", sl->l.addr.text,
            s->client_addr, what, detail ? ": " : "", detail ? detail : "",
            dropped ? " (and earlier ones not logged)" : "");
  session_end(s);
}

static void hand_on(zg_sni_session_t *s, const char *name) {
  zg_sni_listener_t *sl = s->sl;
  size_t i = zg_tls_sni_pick(sl->snis, sl->n, name);
  uv_tcp_t *client = s->client;
  char *bytes = (char *)s->buf;
  size_t len = s->len;
  uint64_t start_ns = s->start_ns;
  zg_service_t *svc;
  if (i == ZG_SNI_NONE) {
    reject(s, &sl->unknown_sni, "no service for server name",
           name ? name : "(none sent)");
    return;
  }
  /* The session references the service before this phase lets go of the
   * listener (and its table). */
  svc = zg_service_ref(sl->svcs[i]);
  uv_read_stop((uv_stream_t *)client);
  s->client = NULL;
  s->buf = NULL;
  s->handles--; /* the client is the relay's now */
  session_end(s);
  zg_tcp_session_start(svc, client, bytes, len, name, start_ns, &s->conn);
  zg_service_unref(svc);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  zg_sni_session_t *s = h->data;
  (void)suggested;
  b->base = (char *)s->buf + s->len;
  b->len = ZG_TLS_HELLO_MAX - s->len; /* > 0: a full buffer is decided */
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  zg_sni_session_t *s = st->data;
  zg_tls_hello_t hello;
  (void)b;
  if (s->done || nread == 0)
    return;
  if (nread < 0) {
    zg_debug("tls", "listener %s: client %s gone before its ClientHello: %s",
             s->sl->l.addr.text, s->client_addr, uv_strerror((int)nread));
    session_end(s);
    return;
  }
  s->len += (size_t)nread;
  switch (zg_tls_hello_parse(s->buf, s->len, &hello)) {
  case ZG_TLS_HELLO_NEED_MORE:
    return;
  case ZG_TLS_HELLO_NOT_TLS:
    reject(s, &s->sl->not_tls, "not a TLS ClientHello", hello.why);
    return;
  case ZG_TLS_HELLO_NO_SNI:
    hand_on(s, NULL);
    return;
  case ZG_TLS_HELLO_SNI:
    hand_on(s, hello.name);
    return;
  }
}

static void on_timeout(uv_timer_t *t) {
  zg_sni_session_t *s = t->data;
  reject(s, &s->sl->timeouts, "no complete ClientHello within header_timeout",
         NULL);
}

static void on_connection(uv_stream_t *server, int status) {
  zg_sni_listener_t *sl = server->data;
  zg_proxy_ctx_t *px = sl->px;
  zg_sni_session_t *s;
  char ip[48];
  zg_conn_ticket_t conn;
  if (status < 0) {
    zg_warn("tls", "listener %s: accept failed: %s", sl->l.addr.text,
            uv_strerror(status));
    return;
  }
  if (px->hooks->admit(px->owner, server, true, &conn, sl->l.addr.text) != 0)
    return;
  s = calloc(1, sizeof(*s));
  if (s) {
    s->client = malloc(sizeof(*s->client));
    s->buf = malloc(ZG_TLS_HELLO_MAX);
  }
  if (!s || !s->client || !s->buf) {
    zg_error("tls", "listener %s: out of memory accepting a client",
             sl->l.addr.text);
    if (s) {
      free(s->client);
      free(s->buf);
      free(s);
    }
    zg_conn_ticket_release(&conn);
    zg_listener_drop(server);
    return;
  }
  s->conn = conn;
  s->sl = sl;
  sl->refs++;
  sl->accepted++;
  sl->active++;
  s->start_ns = uv_hrtime();
  uv_tcp_init(px->loop, s->client);
  uv_timer_init(px->loop, &s->timer);
  s->client->data = s;
  s->timer.data = s;
  s->handles = 2;
  zg_list_push(&px->sni->sessions, &s->link);
  if (uv_accept(server, (uv_stream_t *)s->client) != 0) {
    session_end(s);
    return;
  }
  zg_peer_name(s->client, ip, sizeof(ip), s->client_addr,
               sizeof(s->client_addr));
  uv_timer_start(&s->timer, on_timeout, px->cfg->proxy.header_timeout_ms, 0);
  if (uv_read_start((uv_stream_t *)s->client, on_alloc, on_read) != 0)
    session_end(s);
}

/* ---- listeners --------------------------------------------------------- */

static void table_release(zg_sni_listener_t *sl) {
  for (size_t i = 0; i < sl->n; i++)
    zg_service_unref(sl->svcs[i]);
  free(sl->svcs);
  free(sl->snis);
  sl->svcs = NULL;
  sl->snis = NULL;
  sl->n = 0;
}

static void listener_free_if_done(zg_sni_listener_t *sl) {
  if (sl->refs > 0 || sl->l.handle_open)
    return;
  table_release(sl);
  free(sl);
}

static void on_listener_closed(zg_listener_t *l) {
  listener_free_if_done(l->tcp.data);
}

static void listener_unref(zg_sni_listener_t *sl) {
  if (--sl->refs == 0)
    listener_free_if_done(sl);
}

static void listener_discard(zg_sni_listener_t *sl) {
  zg_listener_close(&sl->l);
  listener_unref(sl);
}

static zg_sni_listener_t *listener_at(const zg_proxy_ctx_t *px, size_t i) {
  return px->sni->listeners.items[i]->tcp.data;
}

static zg_sni_listener_t *listener_open(zg_proxy_ctx_t *px,
                                        const zg_listen_addr_t *addr) {
  zg_sni_listener_t *sl = calloc(1, sizeof(*sl));
  int rc;
  if (!sl)
    return NULL;
  sl->px = px;
  sl->refs = 1;
  zg_ratelimit_init(&sl->reject_rl, 10000, 5);
  rc = zg_listener_open(&sl->l, px->loop, addr, on_connection,
                        px->hooks->listen_flags(px->owner), sl,
                        on_listener_closed);
  if (rc != 0) {
    zg_error("gateway", "cannot listen on %s: %s", addr->text, uv_strerror(rc));
    listener_discard(sl);
    return NULL;
  }
  return sl;
}

static int is_tls(const zg_service_conf_t *sc) {
  return sc->protocol == ZG_PROTO_TLS_PASSTHROUGH;
}

/* The table of one listener: every tls-passthrough service on its
 * address. UV_ENOMEM leaves the old one. */
static int listener_table(zg_proxy_ctx_t *px, zg_sni_listener_t *sl) {
  size_t n = 0, n_services;
  zg_service_t *const *services = px->hooks->services(px->owner, &n_services);
  zg_service_t **svcs = calloc(n_services + 1, sizeof(*svcs));
  const char **snis = calloc(n_services + 1, sizeof(*snis));
  if (!svcs || !snis) {
    free(svcs);
    free(snis);
    return UV_ENOMEM;
  }
  for (size_t i = 0; i < n_services; i++) {
    zg_service_t *svc = services[i];
    if (!is_tls(svc->conf) ||
        !zg_config_same_sockaddr(&svc->conf->listen, &sl->l.addr))
      continue;
    svcs[n] = zg_service_ref(svc);
    snis[n++] = svc->conf->sni; /* lives as long as the service */
  }
  table_release(sl);
  sl->svcs = svcs;
  sl->snis = snis;
  sl->n = n;
  return 0;
}

static int addr_wanted(const zg_proxy_ctx_t *px, const zg_listen_addr_t *addr) {
  size_t n;
  zg_service_t *const *services = px->hooks->services(px->owner, &n);
  for (size_t i = 0; i < n; i++)
    if (is_tls(services[i]->conf) &&
        zg_config_same_sockaddr(&services[i]->conf->listen, addr))
      return 1;
  return 0;
}

/* The kind of listener this module keeps: what the reload steps of
 * net/listener.h (open the new addresses, sync, discard) ask of it. */
static size_t kind_n_addrs(const zg_config_t *cfg) {
  return cfg->n_services;
}

static const zg_listen_addr_t *kind_addr(const zg_config_t *cfg, size_t i) {
  return is_tls(&cfg->services[i]) ? &cfg->services[i].listen : NULL;
}

static zg_listener_t *kind_open(void *ctx, const zg_listen_addr_t *addr) {
  zg_sni_listener_t *sl = listener_open(ctx, addr);
  return sl ? &sl->l : NULL;
}

static void kind_discard(void *ctx, zg_listener_t *l) {
  (void)ctx;
  listener_discard(l->tcp.data);
}

static int kind_wanted(void *ctx, const zg_listen_addr_t *addr) {
  return addr_wanted(ctx, addr);
}

/* No retire step: a session reading its ClientHello finishes on the table
 * of the listener it came in on (it holds a reference). */
static const zg_listener_kind_t sni_kind = {
    "tls-passthrough", kind_n_addrs, kind_addr, kind_open,
    kind_discard,      kind_wanted,  NULL};

void zg_sni_opened_discard(zg_proxy_ctx_t *px, zg_listener_set_t *opened) {
  zg_listener_set_discard(opened, &sni_kind, px);
}

int zg_sni_addrs_to_open(zg_proxy_ctx_t *px, const zg_config_t *cfg,
                         zg_listener_set_t *out) {
  return zg_listener_set_open_new(&px->sni->listeners, &sni_kind, px, cfg, out);
}

int zg_sni_sync(zg_proxy_ctx_t *px, zg_listener_set_t *opened) {
  zg_listener_set_t *ls = &px->sni->listeners;
  int rc = zg_listener_set_sync(ls, &sni_kind, px, opened);
  for (size_t i = 0; i < ls->n; i++)
    if (listener_table(px, listener_at(px, i)) != 0)
      rc = UV_ENOMEM;
  return rc;
}

int zg_sni_start(zg_proxy_ctx_t *px) {
  zg_listener_set_t opened;
  int rc;
  for (size_t i = 0; i < px->cfg->n_services; i++) {
    const zg_service_conf_t *sc = &px->cfg->services[i];
    if (is_tls(sc))
      zg_info("gateway", "service %s: tls-passthrough on %s, sni %s", sc->name,
              sc->listen.text, sc->sni ? sc->sni : "(default)");
  }
  if ((rc = zg_sni_addrs_to_open(px, px->cfg, &opened)) != 0)
    return rc;
  return zg_sni_sync(px, &opened);
}

size_t zg_sni_pending(const zg_proxy_ctx_t *px) {
  /* Also those of listeners a reload dropped. */
  return zg_list_count(&px->sni->sessions);
}

void zg_sni_drain(zg_proxy_ctx_t *px) {
  for (size_t i = 0; i < px->sni->listeners.n; i++)
    zg_listener_close(px->sni->listeners.items[i]);
}

void zg_sni_stop(zg_proxy_ctx_t *px) {
  zg_sni_drain(px);
  while (!zg_list_empty(&px->sni->sessions))
    session_end(ZG_LIST_ITEM(px->sni->sessions.first, zg_sni_session_t, link));
}

int zg_sni_init(zg_proxy_ctx_t *px) {
  px->sni = calloc(1, sizeof(*px->sni));
  return px->sni ? 0 : UV_ENOMEM;
}

void zg_sni_free(zg_proxy_ctx_t *px) {
  if (!px->sni)
    return;
  for (size_t i = 0; i < px->sni->listeners.n; i++)
    listener_unref(listener_at(px, i));
  zg_listener_set_clear(&px->sni->listeners);
  free(px->sni);
  px->sni = NULL;
}

size_t zg_sni_listener_count(const zg_proxy_ctx_t *px) {
  return px->sni->listeners.n;
}

void zg_sni_listener_stats(const zg_proxy_ctx_t *px, size_t i,
                           zg_listener_stats_t *st) {
  const zg_sni_listener_t *sl = listener_at(px, i);
  memset(st, 0, sizeof(*st));
  st->addr = sl->l.addr.text;
  st->accepted = sl->accepted;
  st->active = sl->active;
  st->not_tls = sl->not_tls;
  st->unknown_sni = sl->unknown_sni;
  st->timeouts = sl->timeouts;
}
