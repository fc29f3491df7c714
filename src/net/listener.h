/* Listeners: binding and listening on a configured address. */
#ifndef ZKGATE_LISTENER_H
#define ZKGATE_LISTENER_H

#include <uv.h>

#include "core/config.h"

/* Flags of zg_listener_start. SHARED: SO_REUSEPORT, several workers
 * listen on the address. PROBE: fail with UV_EADDRINUSE when anything
 * listens there already (the first worker to bind checks, so that a
 * second zkgate does not silently share the address). */
#define ZG_LISTEN_SHARED 1
#define ZG_LISTEN_PROBE 2

/* Initialises `tcp` on `loop`, binds it to `addr` and listens. Returns 0
 * or a UV_E* code; on error the handle is initialised (close it). */
int zg_listener_start(uv_loop_t *loop, uv_tcp_t *tcp,
                      const zg_listen_addr_t *addr, uv_connection_cb cb,
                      int flags);

/* A listening socket and its address, inside the object of the module
 * that owns it (an HTTP or tls-passthrough listener, a TCP service, the
 * admin). The bookkeeping every kind shares is here once: open, close
 * once with a callback when the handle is closed, whether the handle is
 * still open (an owner freed by reference count waits for it), and
 * lookups by address over a set of listeners (a reload keeps the
 * listeners whose address stays). */
typedef struct zg_listener zg_listener_t;
typedef void (*zg_listener_closed_cb)(zg_listener_t *l);
struct zg_listener {
  uv_tcp_t tcp; /* tcp.data: the owner, as the connection callback sees it */
  zg_listen_addr_t addr;
  zg_listener_closed_cb on_closed; /* or NULL */
  unsigned handle_open : 1;        /* until the loop closed the handle */
  unsigned listening : 1;          /* until zg_listener_close */
};

/* Binds `addr` (copied) and listens, connections going to `cb` with
 * tcp.data = owner; `on_closed` runs once the handle is closed. 0 or a
 * UV_E* code: then the handle still needs zg_listener_close, as after
 * success. */
int zg_listener_open(zg_listener_t *l, uv_loop_t *loop,
                     const zg_listen_addr_t *addr, uv_connection_cb cb,
                     int flags, void *owner, zg_listener_closed_cb on_closed);
/* Stops listening and closes the handle (on_closed follows from the
 * loop); nothing the second time. */
void zg_listener_close(zg_listener_t *l);

/* Listeners by address: pointers to listeners their owners hold. */
typedef struct {
  zg_listener_t **items;
  size_t n, cap;
} zg_listener_set_t;

/* The listener of `set` on `addr` (zg_config_same_sockaddr), or NULL. */
zg_listener_t *zg_listener_set_find(const zg_listener_set_t *set,
                                    const zg_listen_addr_t *addr);
/* Appends `l`. 0 or UV_ENOMEM. */
int zg_listener_set_add(zg_listener_set_t *set, zg_listener_t *l);
/* Frees the set's array (not the listeners); the set is empty again. */
void zg_listener_set_clear(zg_listener_set_t *set);

/* A kind of listener kept in a set by address across reloads (HTTP,
 * tls-passthrough): what differs between kinds, for the set bookkeeping
 * below that they share. `ctx` is the kind's, passed back as given. */
typedef struct zg_listener_kind {
  const char *name; /* "http": in the log line of a closed address */
  /* The address source: the i-th listen address of this kind in `cfg`
   * (i < n_addrs(cfg)), or NULL when entry i is of another kind. */
  size_t (*n_addrs)(const zg_config_t *cfg);
  const zg_listen_addr_t *(*addr)(const zg_config_t *cfg, size_t i);
  /* A new listener on `addr`, inside its owner, holding the set's
   * reference; NULL when it cannot be bound (logged, nothing left). */
  zg_listener_t *(*open)(void *ctx, const zg_listen_addr_t *addr);
  /* Closes `l` and drops the set's reference to its owner. */
  void (*discard)(void *ctx, zg_listener_t *l);
  /* Whether the running services still use `addr`. */
  int (*wanted)(void *ctx, const zg_listen_addr_t *addr);
  /* Or NULL: what to do before an address no longer used is discarded. */
  void (*retire)(void *ctx, zg_listener_t *l);
} zg_listener_kind_t;

/* A reload in two steps, all or none. First the addresses of `cfg` that
 * neither `live` nor an earlier one of `cfg` has are bound into *out (made
 * empty first): 0, or UV_EADDRINUSE / UV_ENOMEM with every one opened
 * discarded again and *out empty. */
int zg_listener_set_open_new(const zg_listener_set_t *live,
                             const zg_listener_kind_t *kind, void *ctx,
                             const zg_config_t *cfg, zg_listener_set_t *out);
/* Then, once the running services are the new ones: the listeners of
 * `live` whose address is no longer wanted are retired, logged and
 * discarded (the others keep their place and order), and the `opened`
 * ones join at the end; `opened` is empty after. 0, or UV_ENOMEM when
 * one could not join (it is discarded). */
int zg_listener_set_sync(zg_listener_set_t *live,
                         const zg_listener_kind_t *kind, void *ctx,
                         zg_listener_set_t *opened);
/* A rejected reload: discards every listener of `set`, which is empty
 * after. */
void zg_listener_set_discard(zg_listener_set_t *set,
                             const zg_listener_kind_t *kind, void *ctx);

/* Takes one pending connection off `server` and closes it (when there is
 * no memory for a session: the client sees a close, not a hang). */
void zg_listener_drop(uv_stream_t *server);

/* The peer of `tcp` as an IP ("10.0.0.5", "::1") into ip and as
 * "ip:port" / "[ip]:port" into addr; empty strings when unknown. */
void zg_peer_name(uv_tcp_t *tcp, char *ip, size_t ip_len, char *addr,
                  size_t addr_len);

#endif
