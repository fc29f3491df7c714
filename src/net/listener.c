/* Listeners: bind and listen (libuv sets SO_REUSEADDR itself on Unix, so a
 * restart does not wait for TIME_WAIT sockets of the previous process),
 * close once, and the bookkeeping of listener sets by address across a
 * reload (open the new addresses, sync, discard), written once for every
 * kind of listener kept by address. */
#include "net/listener.h"

#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_REUSEPORT /* Linux has it; _POSIX_C_SOURCE hides it */
#define SO_REUSEPORT 15
#endif
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZG_LISTEN_BACKLOG 511 /* as nginx and HAProxy default to */

/* 0, or UV_EADDRINUSE when something listens on `addr` already. A socket
 * with SO_REUSEADDR only cannot bind where another socket listens, with
 * SO_REUSEPORT or not: another process's listener is found before ours
 * joins it. */
static int probe_free(const zg_listen_addr_t *addr) {
  int fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0), on = 1,
      rc = 0;
  socklen_t len = addr->ss.ss_family == AF_INET6
                      ? (socklen_t)sizeof(struct sockaddr_in6)
                      : (socklen_t)sizeof(struct sockaddr_in);
  if (fd < 0)
    return uv_translate_sys_error(errno);
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  if (addr->ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
  if (bind(fd, (const struct sockaddr *)&addr->ss, len) != 0 &&
      errno == EADDRINUSE)
    rc = UV_EADDRINUSE;
  close(fd);
  return rc;
}

int zg_listener_start(uv_loop_t *loop, uv_tcp_t *tcp,
                      const zg_listen_addr_t *addr, uv_connection_cb cb,
                      int flags) {
  int rc;
  if ((flags & ZG_LISTEN_PROBE) && (rc = probe_free(addr)) != 0) {
    uv_tcp_init(loop, tcp);
    return rc;
  }
  rc = uv_tcp_init_ex(loop, tcp, addr->ss.ss_family);
  if (rc != 0) { /* no socket (EMFILE): still a handle the caller closes */
    uv_tcp_init(loop, tcp);
    return rc;
  }
  if (flags & ZG_LISTEN_SHARED) {
    /* Each worker listens on a socket of its own; the kernel spreads new
     * connections over them. */
    uv_os_fd_t fd;
    int on = 1;
    if ((rc = uv_fileno((uv_handle_t *)tcp, &fd)) != 0)
      return rc;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0)
      return uv_translate_sys_error(errno);
  }
  rc = uv_tcp_bind(tcp, (const struct sockaddr *)&addr->ss, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)tcp, ZG_LISTEN_BACKLOG, cb);
  return rc;
}

_Static_assert(offsetof(zg_listener_t, tcp) == 0,
               "the close callback finds the listener from its handle");

static void on_listener_closed(uv_handle_t *h) {
  zg_listener_t *l = (zg_listener_t *)h; /* tcp is its first member */
  l->handle_open = 0;
  if (l->on_closed)
    l->on_closed(l);
}

int zg_listener_open(zg_listener_t *l, uv_loop_t *loop,
                     const zg_listen_addr_t *addr, uv_connection_cb cb,
                     int flags, void *owner, zg_listener_closed_cb on_closed) {
  int rc;
  l->addr = *addr;
  l->on_closed = on_closed;
  rc = zg_listener_start(loop, &l->tcp, &l->addr, cb, flags);
  l->tcp.data = owner;
  l->handle_open = 1;
  l->listening = 1;
  return rc;
}

void zg_listener_close(zg_listener_t *l) {
  if (!l->listening)
    return;
  l->listening = 0;
  uv_close((uv_handle_t *)&l->tcp, on_listener_closed);
}

zg_listener_t *zg_listener_set_find(const zg_listener_set_t *set,
                                    const zg_listen_addr_t *addr) {
  for (size_t i = 0; i < set->n; i++)
    if (zg_config_same_sockaddr(&set->items[i]->addr, addr))
      return set->items[i];
  return NULL;
}

int zg_listener_set_add(zg_listener_set_t *set, zg_listener_t *l) {
  if (set->n == set->cap) {
    size_t cap = set->cap ? set->cap * 2 : 4;
    zg_listener_t **items = realloc(set->items, cap * sizeof(*items));
    if (!items)
      return UV_ENOMEM;
    set->items = items;
    set->cap = cap;
  }
  set->items[set->n++] = l;
  return 0;
}

void zg_listener_set_clear(zg_listener_set_t *set) {
  free(set->items);
  set->items = NULL;
  set->n = set->cap = 0;
}

int zg_listener_set_open_new(const zg_listener_set_t *live,
                             const zg_listener_kind_t *kind, void *ctx,
                             const zg_config_t *cfg, zg_listener_set_t *out) {
  size_t n = kind->n_addrs(cfg);
  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < n; i++) {
    const zg_listen_addr_t *addr = kind->addr(cfg, i);
    zg_listener_t *l;
    int rc;
    if (!addr || zg_listener_set_find(live, addr) ||
        zg_listener_set_find(out, addr))
      continue;
    rc = (l = kind->open(ctx, addr)) ? zg_listener_set_add(out, l)
                                     : UV_EADDRINUSE;
    if (rc != 0) {
      if (l)
        kind->discard(ctx, l);
      zg_listener_set_discard(out, kind, ctx);
      return rc;
    }
  }
  return 0;
}

int zg_listener_set_sync(zg_listener_set_t *live,
                         const zg_listener_kind_t *kind, void *ctx,
                         zg_listener_set_t *opened) {
  size_t kept = 0;
  int rc = 0;
  /* Addresses no longer in use close; their connections go on. */
  for (size_t i = 0; i < live->n; i++) {
    zg_listener_t *l = live->items[i];
    if (kind->wanted(ctx, &l->addr)) {
      live->items[kept++] = l;
      continue;
    }
    zg_info("gateway", "no longer listening on %s (%s)", l->addr.text,
            kind->name);
    if (kind->retire)
      kind->retire(ctx, l);
    kind->discard(ctx, l);
  }
  live->n = kept;
  for (size_t i = 0; i < opened->n; i++) {
    if (zg_listener_set_add(live, opened->items[i]) != 0) {
      kind->discard(ctx, opened->items[i]);
      rc = UV_ENOMEM;
    }
  }
  zg_listener_set_clear(opened);
  return rc;
}

void zg_listener_set_discard(zg_listener_set_t *set,
                             const zg_listener_kind_t *kind, void *ctx) {
  for (size_t i = 0; i < set->n; i++)
    kind->discard(ctx, set->items[i]);
  zg_listener_set_clear(set);
}

static void on_dropped_closed(uv_handle_t *h) {
  free(h);
}

void zg_listener_drop(uv_stream_t *server) {
  uv_tcp_t *tmp = malloc(sizeof(*tmp));
  if (tmp && uv_tcp_init(server->loop, tmp) == 0) {
    uv_accept(server, (uv_stream_t *)tmp);
    uv_close((uv_handle_t *)tmp, on_dropped_closed);
  } else {
    free(tmp);
  }
}

void zg_peer_name(uv_tcp_t *tcp, char *ip, size_t ip_len, char *addr,
                  size_t addr_len) {
  struct sockaddr_storage ss;
  int n = sizeof(ss);
  ip[0] = addr[0] = '\0';
  if (uv_tcp_getpeername(tcp, (struct sockaddr *)&ss, &n) != 0)
    return;
  if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
    uv_ip6_name(a6, ip, ip_len);
    snprintf(addr, addr_len, "[%s]:%u", ip, ntohs(a6->sin6_port));
  } else {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
    uv_ip4_name(a4, ip, ip_len);
    snprintf(addr, addr_len, "%s:%u", ip, ntohs(a4->sin_port));
  }
}
