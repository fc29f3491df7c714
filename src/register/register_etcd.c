/* zkgate-register --etcd: keeps one instance registered in etcd, as a key
 * under a lease, for as long as its health check passes. See
 * register_etcd.h. The calls are registry/etcd_http's, one at a time.
 *
 * Like register.c, two inputs decide and one function acts: the check
 * says whether the key should exist (hc.health.healthy), `lease` and `put`
 * say what exists, and reconcile() issues the one call that brings the
 * second in line with the first whenever no call is out:
 *
 *   healthy, no lease      -> /v3/lease/grant (the TTL asked)
 *   healthy, lease, no key -> /v3/kv/put KEY = data, under the lease
 *   healthy, key           -> every TTL/3: /v3/lease/keepalive (a stream:
 *                             its first answer is taken, then it is
 *                             closed), then /v3/kv/range on the key
 *   unhealthy, lease       -> /v3/lease/revoke (the key goes with it)
 *
 * A keep-alive answered with no TTL, a lease etcd does not know ("lease
 * not found"), or the key missing (someone deleted it) drop what is lost,
 * and reconcile() grants and puts again. A call that fails (connection,
 * timeout, 5xx) moves to the next endpoint at once; after a round of all
 * of them, the next waits RETRY_MS. With a username, calls carry the token
 * of /v3/auth/authenticate, fetched again when etcd says it is invalid.
 * SIGTERM/SIGINT: the lease is revoked (each endpoint tried once), so the
 * key goes at once; then the process exits. */
#include "register/register_etcd.h"

#include "core/config.h"
#include "core/error.h"
#include "core/log.h"
#include "net/tls.h"
#include "register/check.h"
#include "register/life.h"
#include "registry/etcd_http.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#define TICK_MS 100
#define RETRY_MS 500    /* between rounds over every endpoint */
#define REFUSED_MS 5000 /* after etcd refused a call (4xx) */
#define DIAL_TIMEOUT_MS 2000
#define STOP_TIMEOUT_MS 2000 /* the revoke on the way out, per endpoint */
#define ADDR_MAX (ZG_HOST_MAX + 16)

typedef enum {
  STEP_AUTH,
  STEP_GRANT,
  STEP_PUT,
  STEP_KEEPALIVE,
  STEP_VERIFY,
  STEP_REVOKE,
} step_t;

static const char *const step_names[] = {
    "authenticate", "lease grant", "put", "keep-alive", "read", "revoke",
};

typedef struct {
  uv_loop_t *loop;
  const zg_register_opts_t *opts;
  char addr[ADDR_MAX];
  char *key, *key64, *value64;
  zg_etcd_endpoint_t *eps;
  size_t n_eps, cur;
  unsigned fails_in_row; /* endpoints that failed since the last success */
  zg_tls_client_t *tls;
  char *token; /* secret */
  zg_etcd_call_t *call;
  int64_t lease;         /* granted and not known lost; 0: none */
  int64_t ttl_s;         /* as granted */
  int put;               /* the key is written under `lease` */
  int verify;            /* a read of the key is due (after a keep-alive) */
  int64_t ka_ttl;        /* the keep-alive's answer: -1 none yet */
  char ka_error[160];    /* the keep-alive stream's error message */
  uint64_t keepalive_at; /* uv_now of the next keep-alive */
  uint64_t retry_at;     /* no call before this uv_now */
  unsigned stop_tries;   /* endpoints the revoke on the way out tried */
  int stopping, closed;
  zg_regcheck_t hc;
  uv_timer_t tick;
  uv_signal_t sigterm, sigint;
  zg_ratelimit_t error_rl;
} ereg_t;

static void reconcile(ereg_t *r);

/* ---- calls ----------------------------------------------------------- */

static void on_done(zg_etcd_call_t *c, int rc);
static void on_keepalive_line(zg_etcd_call_t *c, char *line, size_t len);

static void call(ereg_t *r, step_t step, const char *path, json_t *body) {
  char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
  json_decref(body);
  if (!text) {
    zg_error("register", "etcd: %s: out of memory", step_names[step]);
    r->retry_at = uv_now(r->loop) + RETRY_MS;
    return;
  }
  r->ka_ttl = -1;
  r->ka_error[0] = '\0';
  r->call = zg_etcd_call_start(
      r->loop, r->tls, &r->eps[r->cur], r->token, path, text, DIAL_TIMEOUT_MS,
      step == STEP_KEEPALIVE ? on_keepalive_line : NULL, on_done, r);
  zg_etcd_secret_free(text); /* authenticate's holds the password */
  if (!r->call) {
    zg_error("register", "etcd: %s: out of memory", step_names[step]);
    r->retry_at = uv_now(r->loop) + RETRY_MS;
    return;
  }
  r->call->kind = (int)step;
  if (r->stopping)
    r->call->timeout_ms = STOP_TIMEOUT_MS;
}

static json_t *lease_body(const ereg_t *r) {
  char id[24];
  snprintf(id, sizeof(id), "%lld", (long long)r->lease);
  return json_pack("{s:s}", "ID", id);
}

/* The keep-alive stream's first answer is all we want: taken, then the
 * stream is closed (its done sees rc 0 and status 200). */
static void on_keepalive_line(zg_etcd_call_t *c, char *line, size_t len) {
  ereg_t *r = c->owner;
  json_t *root = json_loadb(line, len, 0, NULL);
  json_t *res = json_object_get(root, "result");
  if (len == 0) {
    json_decref(root);
    return;
  }
  if (json_is_object(res)) {
    r->ka_ttl = zg_etcd_json_int64(json_object_get(res, "TTL"));
    zg_etcd_call_finish(c, 0);
  } else {
    /* {"error": {...}} instead of a result: a refusal, its message kept
     * (the stream's body buffer is not the line). */
    zg_etcd_error_message(line, len, r->ka_error, sizeof(r->ka_error));
    c->status = 400;
    zg_etcd_call_finish(c, UV_EOF);
  }
  json_decref(root);
}

/* The call failed where another endpoint may do better: the next one. */
static void failed(ereg_t *r, zg_etcd_call_t *c, int rc) {
  char why[160];
  uint64_t now = uv_now(r->loop), dropped;
  const char *was = r->eps[r->cur].text;
  zg_etcd_call_why(c, rc, "--cert and --key", why, sizeof(why));
  if (r->n_eps > 1)
    r->cur = (r->cur + 1) % r->n_eps;
  if (++r->fails_in_row >= r->n_eps) {
    r->fails_in_row = 0;
    r->retry_at = now + RETRY_MS;
  }
  if (r->stopping) {
    r->stop_tries++;
    zg_warn("register", "etcd: revoke on %s: %s", was, why);
    return;
  }
  if (zg_ratelimit_allow(&r->error_rl, now, &dropped))
    zg_warn("register", "etcd: %s on %s: %s; trying %s", step_names[c->kind],
            was, why, r->eps[r->cur].text);
}

static int not_found(const char *msg) {
  return strstr(msg, "lease not found") != NULL;
}

/* A 4xx: the token expired (authenticate again), the lease is gone (grant
 * again), or a refusal every endpoint would give (logged, tried again
 * after REFUSED_MS). */
static void refused(ereg_t *r, zg_etcd_call_t *c) {
  char msg[160];
  uint64_t dropped;
  if (c->kind == STEP_KEEPALIVE && r->ka_error[0])
    snprintf(msg, sizeof(msg), "%s", r->ka_error);
  else
    zg_etcd_error_message(c->body, c->body_len, msg, sizeof(msg));
  if (r->opts->etcd_username && (strstr(msg, "invalid auth token") ||
                                 strstr(msg, "user name is empty"))) {
    zg_etcd_secret_free(r->token);
    r->token = NULL;
    return;
  }
  if (not_found(msg) && r->lease) {
    if (c->kind != STEP_REVOKE && !r->stopping)
      zg_warn("register", "etcd: lease %llx lost (%s): granting a new one",
              (unsigned long long)r->lease, msg);
    r->lease = 0;
    r->put = 0;
    return;
  }
  if (r->stopping) {
    r->stop_tries = (unsigned)r->n_eps; /* refused everywhere: give up */
    zg_error("register", "etcd: revoke refused: %s", msg);
    return;
  }
  r->retry_at = uv_now(r->loop) + REFUSED_MS;
  if (zg_ratelimit_allow(&r->error_rl, uv_now(r->loop), &dropped))
    zg_error("register", "etcd: %s refused by %s: HTTP %d: %s%s",
             step_names[c->kind], r->eps[r->cur].text, c->status, msg,
             c->kind == STEP_AUTH ? " (check --username and the password)"
                                  : "");
}

static void got_token(ereg_t *r, json_t *root) {
  json_t *token = json_object_get(root, "token");
  if (json_is_string(token) && !strpbrk(json_string_value(token), "\r\n")) {
    zg_etcd_secret_free(r->token);
    r->token = strdup(json_string_value(token));
  }
}

static void granted(ereg_t *r, json_t *root) {
  r->lease = zg_etcd_json_int64(json_object_get(root, "ID"));
  r->ttl_s = zg_etcd_json_int64(json_object_get(root, "TTL"));
  if (r->lease == 0) {
    zg_error("register",
             "etcd: lease grant answered without a lease ID: "
             "trying again in %d s",
             REFUSED_MS / 1000);
    r->retry_at = uv_now(r->loop) + REFUSED_MS;
    return;
  }
  if (r->ttl_s <= 0)
    r->ttl_s = (int64_t)(r->opts->ttl_ms / 1000);
  r->put = 0;
}

static void kept_alive(ereg_t *r) {
  if (r->ka_ttl <= 0) {
    zg_warn("register",
            "etcd: lease %llx expired (the keep-alive found no TTL left): "
            "granting a new one",
            (unsigned long long)r->lease);
    r->lease = 0;
    r->put = 0;
    return;
  }
  r->keepalive_at = uv_now(r->loop) + (uint64_t)r->ka_ttl * 1000 / 3;
  r->verify = 1;
}

static void verified(ereg_t *r, json_t *root) {
  r->verify = 0;
  if (zg_etcd_json_int64(json_object_get(root, "count")) > 0)
    return;
  zg_warn("register",
          "etcd: %s is gone (deleted by someone): putting it "
          "again",
          r->key);
  r->put = 0;
}

static void answered(ereg_t *r, zg_etcd_call_t *c, json_t *root) {
  switch ((step_t)c->kind) {
  case STEP_AUTH:
    got_token(r, root);
    break;
  case STEP_GRANT:
    granted(r, root);
    break;
  case STEP_PUT:
    r->put = 1;
    r->keepalive_at = uv_now(r->loop) + (uint64_t)r->ttl_s * 1000 / 3;
    zg_info("register", "etcd: %s registered: %s under lease %llx (TTL %lld s)",
            r->addr, r->key, (unsigned long long)r->lease, (long long)r->ttl_s);
    break;
  case STEP_KEEPALIVE:
    kept_alive(r);
    break;
  case STEP_VERIFY:
    verified(r, root);
    break;
  case STEP_REVOKE:
    zg_info("register", "etcd: lease %llx revoked: %s removed",
            (unsigned long long)r->lease, r->key);
    r->lease = 0;
    r->put = 0;
    break;
  }
}

static void on_done(zg_etcd_call_t *c, int rc) {
  ereg_t *r = c->owner;
  r->call = NULL;
  if (c->kind == STEP_KEEPALIVE && rc == 0 && c->status == 200 && r->ka_ttl < 0)
    rc = UV_EOF; /* the stream ended before its first answer */
  if ((rc != 0 && !(rc == UV_EOF && c->status >= 400 && c->status < 500)) ||
      c->status >= 500 || c->status < 200) {
    failed(r, c, rc);
  } else if (c->status != 200) {
    r->fails_in_row = 0;
    refused(r, c);
  } else {
    json_t *root = json_loadb(c->body ? c->body : "", c->body_len, 0, NULL);
    r->fails_in_row = 0;
    answered(r, c, root);
    json_decref(root);
  }
  reconcile(r);
}

/* ---- what to do next ----------------------------------------------------- */

static void close_all(ereg_t *r) {
  if (r->closed)
    return;
  r->closed = 1;
  uv_close((uv_handle_t *)&r->tick, NULL);
  zg_reglife_signals_close(&r->sigterm, &r->sigint);
}

static void step_put(ereg_t *r) {
  char id[24];
  snprintf(id, sizeof(id), "%lld", (long long)r->lease);
  call(r, STEP_PUT, "/v3/kv/put",
       json_pack("{s:s,s:s,s:s}", "key", r->key64, "value", r->value64, "lease",
                 id));
}

static void reconcile(ereg_t *r) {
  int want = r->hc.health.healthy && !r->stopping;
  if (r->call || r->closed)
    return;
  if (r->stopping && (!r->lease || r->stop_tries >= r->n_eps)) {
    if (r->lease)
      zg_warn("register",
              "etcd unreachable: %s goes when lease %llx expires (%lld s)",
              r->key, (unsigned long long)r->lease, (long long)r->ttl_s);
    close_all(r);
    return;
  }
  if (!r->stopping && uv_now(r->loop) < r->retry_at)
    return;
  if (r->opts->etcd_username && !r->token) {
    call(r, STEP_AUTH, "/v3/auth/authenticate",
         json_pack("{s:s,s:s}", "name", r->opts->etcd_username, "password",
                   r->opts->etcd_password));
  } else if (!want) {
    if (r->lease)
      call(r, STEP_REVOKE, "/v3/lease/revoke", lease_body(r));
  } else if (!r->lease) {
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%llu",
             (unsigned long long)(r->opts->ttl_ms / 1000));
    call(r, STEP_GRANT, "/v3/lease/grant", json_pack("{s:s}", "TTL", ttl));
  } else if (!r->put) {
    step_put(r);
  } else if (uv_now(r->loop) >= r->keepalive_at) {
    call(r, STEP_KEEPALIVE, "/v3/lease/keepalive", lease_body(r));
  } else if (r->verify) {
    call(r, STEP_VERIFY, "/v3/kv/range",
         json_pack("{s:s,s:b}", "key", r->key64, "count_only", 1));
  }
}

static void on_tick(uv_timer_t *t) {
  reconcile(t->data);
}

static void on_health(void *arg) {
  reconcile(arg);
}

static const char *registered_key(void *arg) {
  ereg_t *r = arg;
  return r->put ? r->key : NULL;
}

static void on_signal(uv_signal_t *h, int signum) {
  ereg_t *r = h->data;
  if (r->stopping)
    return;
  r->stopping = 1;
  zg_info("register", "%s: %s", zg_reglife_signame(signum),
          r->lease ? "revoking the lease, which removes the key"
                   : "nothing registered");
  zg_regcheck_stop(&r->hc);
  if (r->call && r->call->kind != STEP_REVOKE) {
    zg_etcd_call_abort(r->call); /* a keep-alive or a read: not needed */
    r->call = NULL;
  }
  reconcile(r);
}

/* ---- life -------------------------------------------------------------- */

/* The key and value, as base64, fixed for the process's life. */
static int prepare(ereg_t *r) {
  const zg_register_opts_t *opts = r->opts;
  zg_regfmt_instance_t inst;
  char *service, *data = NULL;
  size_t len;
  int rc;
  if (!(service = zg_register_fmt_etcd_service(opts->etcd_prefix)))
    return UV_ENOMEM;
  if ((rc = zg_reglife_instance(opts, service, &inst)) == 0)
    rc = zg_register_fmt_encode(&inst, &data, &len);
  free(service);
  if (rc == 0)
    rc = zg_register_fmt_etcd_key(opts->etcd_prefix, opts->address.host,
                                  opts->address.port, &r->key);
  if (rc == 0 && (!(r->key64 = zg_etcd_b64_encode(r->key, strlen(r->key))) ||
                  !(r->value64 = zg_etcd_b64_encode(data, len))))
    rc = UV_ENOMEM;
  free(data);
  if (rc == 0)
    rc = zg_etcd_endpoints_parse(opts->etcd_endpoints, &r->eps, &r->n_eps);
  zg_instance_addr_str(&opts->address, r->addr, sizeof(r->addr));
  return rc;
}

/* TLS to etcd: the client context of TLS to instances, from --ca, --cert
 * and --key. */
static int tls_setup(ereg_t *r) {
  zg_service_conf_t sc;
  char err[256];
  int rc;
  memset(&sc, 0, sizeof(sc));
  sc.upstream_ca = r->opts->etcd_ca;
  sc.upstream_cert = r->opts->etcd_cert;
  sc.upstream_key = r->opts->etcd_key;
  if ((rc = zg_tls_client_new(&sc, err, sizeof(err), &r->tls)) != 0)
    zg_error("register", "etcd: TLS: %s", err);
  return rc;
}

/* The key, the value, the endpoints; TLS with https endpoints. */
static int prepare_all(void *arg) {
  ereg_t *r = arg;
  int rc = prepare(r);
  if (rc == 0 && strstr(r->opts->etcd_endpoints, "https://"))
    rc = tls_setup(r);
  return rc;
}

static void release(void *arg) {
  ereg_t *r = arg;
  free(r->key);
  free(r->key64);
  free(r->value64);
  zg_etcd_endpoints_free(r->eps, r->n_eps);
  zg_etcd_secret_free(r->token);
  zg_tls_client_unref(r->tls);
}

static void start(void *arg) {
  ereg_t *r = arg;
  const zg_register_opts_t *opts = r->opts;
  uv_timer_init(r->loop, &r->tick);
  r->tick.data = r;
  zg_reglife_signals_start(r->loop, &r->sigterm, &r->sigint, on_signal, r);
  zg_info("register",
          "zkgate-register %s: %s as %s at %s, etcd %s, lease TTL %llu s%s%s%s",
          ZKGATE_VERSION, r->addr, zg_register_fmt_name(opts->format), r->key,
          opts->etcd_endpoints, (unsigned long long)(opts->ttl_ms / 1000),
          opts->etcd_username ? ", as user '" : "",
          opts->etcd_username ? opts->etcd_username : "",
          opts->etcd_username ? "'" : "");
  zg_regcheck_start(&r->hc, r->loop, opts, r->addr, on_health, registered_key,
                    r);
  uv_timer_start(&r->tick, on_tick, 0, TICK_MS);
}

int zg_register_etcd_run(const zg_register_opts_t *opts) {
  static const zg_reglife_ops_t ops = {prepare_all, start, release};
  ereg_t r;
  uv_loop_t loop;
  memset(&r, 0, sizeof(r));
  r.opts = opts;
  r.loop = &loop;
  zg_ratelimit_init(&r.error_rl, 10000, 3);
  return zg_reglife_run(&loop, &ops, &r);
}
