/* Configuration: an INI file read with inih into an immutable zg_config_t.
 * Every error carries FILE:LINE; all errors of a file are collected, not
 * only the first. Pure code apart from reading the file. */
#ifndef ZKGATE_CONFIG_H
#define ZKGATE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/balance.h"
#include "core/instance.h"
#include "core/log.h"

typedef enum {
  ZG_PROTO_TCP = 0,
  ZG_PROTO_HTTP,
  ZG_PROTO_TLS_PASSTHROUGH,
} zg_protocol_t;

/* [admin] auth: what the admin listener asks of a client. */
typedef enum {
  ZG_ADMIN_AUTH_NONE = 0,
  ZG_ADMIN_AUTH_BEARER, /* Authorization: Bearer TOKEN (RFC 6750) */
  ZG_ADMIN_AUTH_BASIC,  /* Authorization: Basic base64(user:password) */
} zg_admin_auth_t;

/* Client certificates on a TLS-terminating service. */
typedef enum {
  ZG_TLS_VERIFY_NONE = 0, /* none asked for (no tls_client_ca) */
  ZG_TLS_VERIFY_OPTIONAL, /* asked for; verified when one is sent */
  ZG_TLS_VERIFY_REQUIRED, /* the handshake fails without a valid one */
} zg_tls_verify_t;

typedef struct {
  struct sockaddr_storage ss;
  char text[64]; /* as written, for logs */
} zg_listen_addr_t;

typedef struct {
  char *name;
  char *zk_path;     /* NULL: not from ZooKeeper */
  char *etcd_prefix; /* NULL: not from etcd; at most one of the two is set
                        (neither: static instances only) */
  zg_protocol_t protocol;
  zg_listen_addr_t listen;
  zg_balance_t balance;
  zg_hash_key_t hash_key;           /* balance = hash only; else NONE */
  char hash_name[ZG_HASH_NAME_MAX]; /* header or cookie name, or "" */
  uint64_t slow_start_ms;           /* 0: off */
  /* least_request_latency = ewma: least_request weighs in-flight requests
   * by each instance's peak-EWMA response latency (core/balance.h
   * zg_ewma_t), with this time constant */
  bool latency_ewma;
  uint64_t latency_decay_ms;
  char *endpoint;              /* serverset additionalEndpoints name, or NULL */
  uint64_t connect_timeout_ms; /* [proxy] connect_timeout unless set here */
  /* HTTP only */
  char *host;        /* NULL: any host; may be "*.example.com"; lowercase */
  char *path_prefix; /* "/" by default */
  bool strip_prefix;
  uint64_t response_timeout_ms;
  /* tls-passthrough only: the ClientHello server name this service takes
   * on its listen address; exact or "*.example.com"; lowercase. NULL: the
   * address's default (names no other service takes, and no name). */
  char *sni;
  /* TLS termination (tcp and http): tls_cert and tls_key both set, or
   * neither. HTTP services sharing a listen address all have them or none,
   * with the same cipher strings. Paths as written (relative: to the
   * working directory). */
  char *tls_cert;
  char *tls_key;
  char *tls_client_ca;        /* NULL: no client certificates */
  zg_tls_verify_t tls_verify; /* NONE unless tls_client_ca */
  char *tls_ciphers;          /* TLS 1.2; NULL: the default */
  char *tls_ciphersuites;     /* TLS 1.3; NULL: the default */
  /* TLS to instances (tcp and http). */
  zg_upstream_tls_t upstream_tls; /* AUTO unless set */
  /* HTTP/1.1 or HTTP/2 to instances (http only); AUTO unless set. */
  zg_upstream_proto_t upstream_protocol;
  char *upstream_ca;        /* NULL: the system store */
  bool upstream_noverify;   /* upstream_verify = no */
  char *upstream_sni;       /* SNI and name checked; NULL: the instance host */
  char *upstream_cert;      /* client certificate to instances, with */
  char *upstream_key;       /* its key; both or neither */
  zg_instance_t *instances; /* static instances */
  size_t n_instances;
  int line; /* of the section header */
} zg_service_conf_t;

/* [discover:NAME]: every child of zk_root is an HTTP service on `listen`,
 * routed by path prefix /CHILD/ (stripped) and, with a domain, by host
 * CHILD.DOMAIN. */
typedef struct {
  char *name;
  char *zk_root;
  char *etcd_root; /* instead of zk_root: the services are the names under
                      this key prefix (it ends with '/'), each read from
                      etcd_root/NAME/ */
  zg_listen_addr_t listen;
  char *domain;         /* NULL: no host routes; lowercase */
  zg_balance_t balance; /* these, as in zg_service_conf_t: */
  zg_hash_key_t hash_key;
  char hash_name[ZG_HASH_NAME_MAX];
  uint64_t slow_start_ms;
  bool latency_ewma;
  uint64_t latency_decay_ms;
  char *endpoint; /* serverset additionalEndpoints name, or NULL */
  uint64_t connect_timeout_ms;
  uint64_t response_timeout_ms;
  int line; /* of the section header */
} zg_discover_conf_t;

/* [etcd]. Strings owned; NULL when absent. */
typedef struct {
  char *endpoints; /* "http[s]://host:port,..." as written; NULL when no
                      service reads etcd */
  uint64_t dial_timeout_ms;
  char *username;
  char *password;        /* a secret: never logged */
  char *ca, *cert, *key; /* TLS to etcd (https:// endpoints); paths */
  char *state_file;      /* NULL: none */
  uint64_t max_stale_ms; /* 0: last known pools serve forever */
  int line;              /* of the section header; 0: none */
} zg_etcd_conf_t;

/* A deep copy (0 or UV_ENOMEM; then *dst holds nothing), its release, and
 * whether two behave the same (the line aside). */
int zg_etcd_conf_copy(zg_etcd_conf_t *dst, const zg_etcd_conf_t *src);
void zg_etcd_conf_clear(zg_etcd_conf_t *c);
bool zg_etcd_conf_equal(const zg_etcd_conf_t *a, const zg_etcd_conf_t *b);

/* The registry path a service watches: its zk_path or its etcd_prefix
 * (NULL: static instances only). */
static inline const char *zg_service_conf_path(const zg_service_conf_t *sc) {
  return sc->zk_path ? sc->zk_path : sc->etcd_prefix;
}

/* The root a discover section lists: its zk_root or its etcd_root. */
static inline const char *zg_discover_conf_root(const zg_discover_conf_t *d) {
  return d->zk_root ? d->zk_root : d->etcd_root;
}

#define ZG_MAX_WORKERS 64
/* least_request_decay when least_request_latency = ewma: Finagle's and
 * Linkerd's default for their peak EWMA */
#define ZG_LATENCY_DECAY_DEFAULT_MS 10000
#define ZG_CONFIG_MAX (16 * 1024 * 1024)
/* [proxy] max_pipes = auto */
#define ZG_MAX_PIPES_AUTO UINT64_MAX

typedef struct {
  char *path; /* the file, as given */
  char *text; /* what it held when read (zg_config_load), or NULL */
  struct {
    char *hosts; /* NULL when no service uses ZooKeeper */
    uint64_t session_timeout_ms;
    uint64_t coalesce_window_ms;
    char *state_file;         /* NULL: none */
    uint64_t max_stale_ms;    /* 0: last known pools serve forever */
    uint64_t max_watch_bytes; /* watches a reconnection may re-register;
                                 past it, instances go without a data
                                 watch. 0: no limit */
    uint64_t data_sweep_ms;   /* instances without a data watch are
                                 checked this often; 0: never */
    char *auth; /* digest credentials "user:password", NULL: none. A
                   secret: never logged */
  } zk;
  /* [etcd]: the second registry (registry/etcd_source.h). */
  zg_etcd_conf_t etcd;
  struct {
    unsigned workers;
    uint64_t connect_timeout_ms;
    uint64_t idle_timeout_ms;
    uint64_t header_timeout_ms; /* a request head must be in by then */
    uint64_t fail_timeout_ms;   /* passive health: a failed instance is
                                   skipped this long; 0 = never */
    zg_log_level_t log_level;
    char *access_log;          /* NULL: off; "stderr"; or an absolute path */
    bool access_log_json;      /* one JSON object a line instead of text */
    bool log_json;             /* log_format = json: the process log too */
    uint64_t drain_timeout_ms; /* SIGTERM: in-flight work may take this */
    uint64_t max_request_body; /* bytes of an HTTP request body; 0: any */
    bool http2;      /* HTTP/2 to clients: h2c prior knowledge, ALPN h2 */
    bool tcp_splice; /* tcp_splice = auto: plain TCP relayed with splice(2) */
    /* Caps on client connections for the whole process (connlimit.h);
     * 0: auto, sized from the open-file limit when the gateway starts */
    uint64_t max_connections;
    uint64_t max_head_connections; /* of those, still in their head */
    /* Busy splice(2) pipes for the whole process (connlimit.h);
     * ZG_MAX_PIPES_AUTO: a quarter of max_connections; 0: none (copy) */
    uint64_t max_pipes;
  } proxy;
  struct {
    bool enabled; /* [admin] listen is set */
    zg_listen_addr_t listen;
    /* auth (or the first line of auth_file): every path but /healthz and
     * /ready needs these credentials. A secret: never logged. */
    zg_admin_auth_t auth;
    char *auth_secret; /* bearer: the token; basic: "user:password" */
  } admin;
  zg_service_conf_t *services;
  size_t n_services;
  zg_discover_conf_t *discovers;
  size_t n_discovers;
} zg_config_t;

/* One error: "FILE:LINE: message". */
typedef struct {
  char **lines;
  size_t n;
} zg_config_errors_t;

/* Checks of what a [service:] section names outside the file: its TLS
 * certificates, keys and CA files, its cipher strings. This module loads
 * no TLS itself (core does not depend on net): the caller hands the checks
 * in (net/tls.h: zg_tls_config_checks) and they run as each section is
 * complete, so that their errors carry FILE:LINE among the others. Each
 * returns 0, or nonzero with a message in `err` and the name of the key at
 * fault in *key (tls_cert, tls_key, ..., upstream_ca, upstream_cert,
 * upstream_key). */
typedef int (*zg_config_check_fn)(const zg_service_conf_t *sc, char *err,
                                  size_t len, const char **key);
typedef struct {
  zg_config_check_fn service;  /* tls_* keys (TLS termination) */
  zg_config_check_fn upstream; /* upstream_* files (TLS to instances) */
} zg_config_checks_t;

/* Loads and validates `path`, with `checks` (NULL: no file it names is
 * read). On success returns 0 and *out; otherwise returns ZG_ECONFIG (or
 * a UV_E* code when the file cannot be read) with every problem in *errs.
 * The caller frees both. */
int zg_config_load(const char *path, const zg_config_checks_t *checks,
                   zg_config_t **out, zg_config_errors_t *errs);
/* Same, from a string; `name` stands for the file name in messages. */
int zg_config_load_string(const char *text, const char *name,
                          const zg_config_checks_t *checks, zg_config_t **out,
                          zg_config_errors_t *errs);
void zg_config_free(zg_config_t *cfg);

/* 1 when `list` is one or more http://HOST:PORT or https://HOST:PORT
 * separated by commas (spaces around them allowed), as [etcd] endpoints
 * takes (zkgate-register --etcd too); else 0. */
int zg_config_valid_etcd_endpoints(const char *list);
/* Steps through a comma-separated list with spaces around the commas
 * allowed: 1 with the next item (without those spaces, possibly empty) in
 * *item and *len, *list moved past it; 0 when none is left (an empty list
 * has none, and a final comma ends it). *list is NULL after the last. */
int zg_config_list_next(const char **list, const char **item, size_t *len);
/* Frees what a service's configuration owns (not the struct itself). */
void zg_service_conf_clear(zg_service_conf_t *svc);
/* A deep copy (0 or UV_ENOMEM; then *dst holds nothing). */
int zg_service_conf_copy(zg_service_conf_t *dst, const zg_service_conf_t *src);
/* Whether two configurations behave the same (the line aside). */
bool zg_service_conf_equal(const zg_service_conf_t *a,
                           const zg_service_conf_t *b);
bool zg_discover_conf_equal(const zg_discover_conf_t *a,
                            const zg_discover_conf_t *b);
/* The same socket address (family, address, port). */
int zg_config_same_sockaddr(const zg_listen_addr_t *a,
                            const zg_listen_addr_t *b);
void zg_config_errors_free(zg_config_errors_t *errs);

/* "tcp", "http" or "tls-passthrough". */
const char *zg_protocol_name(zg_protocol_t p);

/* Value parsers, exposed for tests. Each returns 0 or ZG_ECONFIG. */
int zg_parse_duration_ms(const char *s, uint64_t *out_ms);
/* "0", "512", "64k", "10m", "1g" (binary multiples, either case) ->
 * bytes. Returns 0 or ZG_ECONFIG. */
int zg_parse_size(const char *s, uint64_t *out);
int zg_parse_bool(const char *s, bool *out);
int zg_parse_listen(const char *s, zg_listen_addr_t *out);

#endif
