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

/* Takes one pending connection off `server` and closes it (when there is
 * no memory for a session: the client sees a close, not a hang). */
void zg_listener_drop(uv_stream_t *server);

/* The peer of `tcp` as an IP ("10.0.0.5", "::1") into ip and as
 * "ip:port" / "[ip]:port" into addr; empty strings when unknown. */
void zg_peer_name(uv_tcp_t *tcp, char *ip, size_t ip_len, char *addr,
                  size_t addr_len);

#endif
