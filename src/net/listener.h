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

/* Takes one pending connection off `server` and closes it (when there is
 * no memory for a session: the client sees a close, not a hang). */
void zg_listener_drop(uv_stream_t *server);

/* The peer of `tcp` as an IP ("10.0.0.5", "::1") into ip and as
 * "ip:port" / "[ip]:port" into addr; empty strings when unknown. */
void zg_peer_name(uv_tcp_t *tcp, char *ip, size_t ip_len, char *addr,
                  size_t addr_len);

#endif
