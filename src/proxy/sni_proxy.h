/* tls-passthrough: one listener per listen address of the tls-passthrough
 * services, which reads each client's ClientHello, chooses the service by
 * its server name, and hands the client with the bytes read to the TCP
 * relay (tcp_proxy.h). TLS is not terminated: the bytes pass untouched. */
#ifndef ZKGATE_SNI_PROXY_H
#define ZKGATE_SNI_PROXY_H

#include <uv.h>

#include "control/gateway.h"

typedef struct zg_sni_listener {
  zg_gateway_t *gw;
  uv_tcp_t tcp;
  zg_listen_addr_t addr;
  zg_service_t **svcs; /* referenced; the services on this address */
  const char **snis;   /* their sni patterns (NULL: the default) */
  size_t n;
  int listening;
  int handle_open;
  unsigned refs;   /* the gateway's while in use, each reading session's */
  uint64_t active; /* sessions reading their ClientHello */
  uint64_t accepted;
  uint64_t not_tls, unknown_sni, timeouts; /* clients closed, by cause */
  zg_ratelimit_t reject_rl;
} zg_sni_listener_t;

/* Opens one listener per distinct address of the tls-passthrough services
 * of gw->services. 0 or the first error (logged). */
int zg_sni_start(zg_gateway_t *gw);
/* Reload, in two steps as for HTTP (http_proxy.h): first the addresses of
 * `cfg` that no listener has yet are bound (all or none); then, once
 * gw->services is the new list, zg_sni_sync closes the listeners of
 * addresses no longer used, adds the opened ones and rebuilds every
 * listener's table. A listener whose address stays is kept as it is. */
int zg_sni_addrs_to_open(zg_gateway_t *gw, const zg_config_t *cfg,
                         zg_sni_listener_t ***out, size_t *n_out);
int zg_sni_sync(zg_gateway_t *gw, zg_sni_listener_t **opened, size_t n);
void zg_sni_listener_discard(zg_sni_listener_t *sl);
/* Sessions still reading their ClientHello. */
size_t zg_sni_pending(const zg_gateway_t *gw);
/* Drain: closes the listeners; sessions reading a ClientHello go on. */
void zg_sni_drain(zg_gateway_t *gw);
/* Closes the listeners and every session reading a ClientHello. */
void zg_sni_stop(zg_gateway_t *gw);
/* Frees the listeners once the loop has closed their handles. */
void zg_sni_free(zg_gateway_t *gw);

#endif
