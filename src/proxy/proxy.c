/* The proxies' shared per-loop context: see proxy.h. */
#include "proxy/proxy.h"

#include <string.h>

#define MAX_FREE_BUFS 256

void zg_proxy_ctx_init(zg_proxy_ctx_t *px, uv_loop_t *loop, zg_config_t *cfg,
                       zg_service_ctx_t *svc_ctx, const zg_proxy_hooks_t *hooks,
                       void *owner) {
  memset(px, 0, sizeof(*px));
  px->loop = loop;
  px->cfg = cfg;
  px->svc_ctx = svc_ctx;
  px->hooks = hooks;
  px->owner = owner;
  zg_bufpool_init(&px->bufs, ZG_BUF_SIZE, MAX_FREE_BUFS);
}

void zg_proxy_ctx_clear(zg_proxy_ctx_t *px) {
  zg_bufpool_clear(&px->bufs);
}

char *zg_buf_get(zg_proxy_ctx_t *px) {
  return zg_bufpool_get(&px->bufs);
}

void zg_buf_put(zg_proxy_ctx_t *px, char *p) {
  zg_bufpool_put(&px->bufs, p);
}
