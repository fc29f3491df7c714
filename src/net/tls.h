/* TLS termination: the one module that calls OpenSSL's SSL_* functions.
 *
 * A zg_tls_server_t holds the certificates of one listen address (one per
 * service with tls_cert, chosen by SNI, the first as default), built from
 * the configuration at start and on every reload, and reference-counted:
 * each connection keeps the one it began with, so a reload never disturbs
 * an open connection. Its counters (handshakes, failures) carry over from
 * the server it replaces.
 *
 * A zg_tls_conn_t is TLS over a libuv TCP handle the caller owns, through
 * memory BIOs: ciphertext is read from and written to the socket here, and
 * the caller sees plaintext through functions shaped like libuv's own
 * (read_start/read_stop/write/shutdown, same callbacks, called with the
 * same stream). The zg_stream_* helpers below pick the plain libuv call
 * when there is no TLS, so plain connections pay one NULL test. Only the
 * server side is built today; the connection itself is side-agnostic
 * (SSL_do_handshake), so upstream TLS can add a client constructor. */
#ifndef ZKGATE_TLS_H
#define ZKGATE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/config.h"

/* Mozilla's "intermediate" server configuration (TLS 1.2 ciphers; TLS 1.3
 * suites are OpenSSL's defaults, which are the same three). */
#define ZG_TLS_DEFAULT_CIPHERS                                                 \
  "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                 \
  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                 \
  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"                 \
  "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:"                       \
  "DHE-RSA-CHACHA20-POLY1305"
#define ZG_TLS_DEFAULT_CIPHERSUITES                                            \
  "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"                             \
  "TLS_CHACHA20_POLY1305_SHA256"

/* The header that carries a verified client certificate's subject to the
 * instance; always removed from what clients send. */
#define ZG_TLS_SUBJECT_HEADER "X-Client-Cert-Subject"

/* Checks what a service's TLS keys name, as loading them would: files
 * readable, certificate and key valid and matching, CA file valid, cipher
 * strings usable. 0, or ZG_ECONFIG with a message in `err` and the name of
 * the key at fault in *key ("tls_cert", "tls_key", "tls_client_ca",
 * "tls_ciphers" or "tls_ciphersuites"). */
int zg_tls_check_service(const zg_service_conf_t *sc, char *err, size_t len,
                         const char **key);

typedef struct zg_tls_server zg_tls_server_t;

/* A server for `listener` (its text, for logs and metrics) from the `n`
 * services with TLS keys on it, in order: the first is the default. `http`
 * offers ALPN: ZG_TLS_ALPN_H1 http/1.1, ZG_TLS_ALPN_H2 h2 before it, 0
 * none. `prev` (NULL: none) is the server this one
 * replaces, whose counters it continues. Warns about private keys readable
 * by others. 0, or ZG_ECONFIG (the reason logged). */
enum { ZG_TLS_ALPN_H1 = 1, ZG_TLS_ALPN_H2 = 2 };
int zg_tls_server_new(const zg_service_conf_t *const *svcs, size_t n,
                      const char *listener, int http, zg_tls_server_t *prev,
                      zg_tls_server_t **out);
zg_tls_server_t *zg_tls_server_ref(zg_tls_server_t *srv);
void zg_tls_server_unref(zg_tls_server_t *srv); /* NULL is fine */
const char *zg_tls_server_listener(const zg_tls_server_t *srv);
/* Counters since the address first served TLS. */
typedef struct {
  uint64_t handshakes; /* completed */
  uint64_t resumed;    /* of which by session resumption */
  uint64_t failures;   /* handshakes that failed or timed out */
} zg_tls_counts_t;
void zg_tls_server_counts(const zg_tls_server_t *srv, zg_tls_counts_t *out);

typedef struct zg_tls_conn zg_tls_conn_t;

/* ---- TLS to instances ---- */

typedef struct zg_tls_client zg_tls_client_t;

/* Checks what a service's upstream_ca, upstream_cert and upstream_key
 * name, as loading them would. 0, or ZG_ECONFIG with a message in `err`
 * and the key at fault in *key. */
int zg_tls_check_upstream(const zg_service_conf_t *sc, char *err, size_t len,
                          const char **key);
/* Both, for zg_config_load: what `zkgate -t`, a start and a reload check
 * while they read the file. */
const zg_config_checks_t *zg_tls_config_checks(void);
/* A client context from `sc`'s upstream_* keys; `sc` NULL: the defaults
 * (the system store, verification on). 0, or ZG_ECONFIG / UV_ENOMEM with a
 * message in `err`. */
int zg_tls_client_new(const zg_service_conf_t *sc, char *err, size_t len,
                      zg_tls_client_t **out);
zg_tls_client_t *zg_tls_client_ref(zg_tls_client_t *cli);
void zg_tls_client_unref(zg_tls_client_t *cli); /* NULL is fine */
/* Sessions cached for resumption (for tests and metrics). */
size_t zg_tls_client_sessions(const zg_tls_client_t *cli);

/* Client-side TLS on `tcp` (connected, not reading) to the instance at
 * `addr` ("host:port", for the session cache). `name` is what SNI carries
 * and what the certificate must match: a DNS name, or, when `name_is_ip`,
 * an IP literal checked against the certificate's IP addresses and not
 * sent as SNI (RFC 6066 §3). `alpn` is what ALPN offers (ZG_ALPN_*).
 * tcp->data is handled as on the server side. NULL when out of memory. */
enum {
  ZG_ALPN_NONE = 0,
  ZG_ALPN_HTTP1 = 1,    /* http/1.1 */
  ZG_ALPN_H2_HTTP1 = 2, /* h2, then http/1.1: the instance chooses */
  ZG_ALPN_H2 = 3,       /* h2 */
};
zg_tls_conn_t *zg_tls_conn_client(zg_tls_client_t *cli, uv_tcp_t *tcp,
                                  const char *name, bool name_is_ip,
                                  const char *addr, int alpn);
/* Why the handshake of a client connection failed ("" before). */
const char *zg_tls_conn_error(const zg_tls_conn_t *c);
/* The handshake resumed a session. */
bool zg_tls_conn_resumed(const zg_tls_conn_t *c);
/* Whether an idle client connection `c` can carry what asks for `cli` and
 * `name`: the same context (CA, verification, client certificate) and the
 * same checked name. */
bool zg_tls_conn_reusable(const zg_tls_conn_t *c, const zg_tls_client_t *cli,
                          const char *name);
typedef void (*zg_tls_handshake_cb)(zg_tls_conn_t *c, int status, void *arg);

/* Server-side TLS on `tcp` (accepted, not reading). `peer` names the
 * client in logs. The connection takes tcp->data over while it is attached
 * and gives the caller's value back around every callback it makes and
 * when freed. NULL when out of memory. */
zg_tls_conn_t *zg_tls_conn_server(zg_tls_server_t *srv, uv_tcp_t *tcp,
                                  const char *peer);
/* Reads the socket until the handshake is done, then calls `cb` with 0, or
 * with a negative code after a failure (server side: counted and logged,
 * rate-limited, with OpenSSL's reason; client side: the reason in
 * zg_tls_conn_error). The socket is not read after it until
 * zg_tls_read_start. A client connection sends its ClientHello first; if
 * that fails, the error is returned and `cb` is not called. */
int zg_tls_handshake(zg_tls_conn_t *c, zg_tls_handshake_cb cb, void *arg);
bool zg_tls_established(const zg_tls_conn_t *c);
/* ALPN chose h2 in the handshake. */
bool zg_tls_conn_h2(const zg_tls_conn_t *c);
/* The caller gave up waiting for the handshake: counted and logged as a
 * failure. */
void zg_tls_handshake_timed_out(zg_tls_conn_t *c);
/* As uv_read_start / uv_read_stop, with plaintext. A close_notify, or the
 * end of the TCP stream, reads as UV_EOF; a TLS error as UV_EPROTO. */
int zg_tls_read_start(zg_tls_conn_t *c, uv_alloc_cb alloc_cb,
                      uv_read_cb read_cb);
int zg_tls_read_stop(zg_tls_conn_t *c);
/* As uv_write: `cb` runs once the ciphertext of `bufs` is on the socket. */
int zg_tls_write(zg_tls_conn_t *c, uv_write_t *req, const uv_buf_t bufs[],
                 unsigned nbufs, uv_write_cb cb);
/* As uv_shutdown, after a close_notify. */
int zg_tls_shutdown(zg_tls_conn_t *c, uv_shutdown_t *req, uv_shutdown_cb cb);
/* Detaches from the socket (call before closing it) and frees what the
 * connection holds once its writes in flight are done. NULL is fine. */
void zg_tls_conn_free(zg_tls_conn_t *c);

/* For a request routed to a service with `client_ca` (NULL: none) and
 * `verify`: 0 when the connection may carry it, with the subject of the
 * client certificate in `subject` (RFC 2253, ASCII) when one was verified
 * against that same CA file, else ""; -1 when the service requires a client
 * certificate this connection was not made with (a handshake for another
 * service's name: the answer is 421). */
int zg_tls_conn_client_subject(const zg_tls_conn_t *c, const char *client_ca,
                               zg_tls_verify_t verify, char *subject,
                               size_t len);

/* The session code's seam: libuv's call when `tls` is NULL. */
static inline int zg_stream_read_start(zg_tls_conn_t *tls, uv_stream_t *s,
                                       uv_alloc_cb a, uv_read_cb r) {
  return tls ? zg_tls_read_start(tls, a, r) : uv_read_start(s, a, r);
}
static inline int zg_stream_read_stop(zg_tls_conn_t *tls, uv_stream_t *s) {
  return tls ? zg_tls_read_stop(tls) : uv_read_stop(s);
}
static inline int zg_stream_write(zg_tls_conn_t *tls, uv_write_t *req,
                                  uv_stream_t *s, const uv_buf_t bufs[],
                                  unsigned n, uv_write_cb cb) {
  return tls ? zg_tls_write(tls, req, bufs, n, cb)
             : uv_write(req, s, bufs, n, cb);
}
/* TLS: UV_EAGAIN, so that the caller queues a write and waits for it (its
 * backpressure then holds). */
static inline int zg_stream_try_write(zg_tls_conn_t *tls, uv_stream_t *s,
                                      const uv_buf_t bufs[], unsigned n) {
  return tls ? UV_EAGAIN : uv_try_write(s, bufs, n);
}
static inline int zg_stream_shutdown(zg_tls_conn_t *tls, uv_shutdown_t *req,
                                     uv_stream_t *s, uv_shutdown_cb cb) {
  return tls ? zg_tls_shutdown(tls, req, cb) : uv_shutdown(req, s, cb);
}

#endif
