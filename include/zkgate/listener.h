/* Listeners: binding and listening on a configured address. */
#ifndef ZKGATE_LISTENER_H
#define ZKGATE_LISTENER_H

#include <uv.h>

#include "zkgate/config.h"

/* Initialises `tcp` on `loop`, binds it to `addr` and listens. Returns 0
 * or a UV_E* code; on error the handle is initialised (close it). */
int zg_listener_start(uv_loop_t *loop, uv_tcp_t *tcp,
                      const zg_listen_addr_t *addr, uv_connection_cb cb);

/* Takes one pending connection off `server` and closes it (when there is
 * no memory for a session: the client sees a close, not a hang). */
/* Set (before any loop runs) when several workers listen on each address:
 * every listening socket gets SO_REUSEPORT. */
extern int zg_listener_reuseport;

void zg_listener_drop(uv_stream_t *server);

/* The peer of `tcp` as an IP ("10.0.0.5", "::1") into ip and as
 * "ip:port" / "[ip]:port" into addr; empty strings when unknown. */
void zg_peer_name(uv_tcp_t *tcp, char *ip, size_t ip_len, char *addr,
                  size_t addr_len);

#endif
