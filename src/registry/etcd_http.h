/* One HTTP/1.1 call to an etcd endpoint's v3 JSON gateway (POST of a JSON
 * body, docs/platform.md "etcd"), on its own connection, plain or TLS
 * (net/tls), with libuv and llhttp; and the small pieces both etcd
 * clients need (the gateway's registry source and zkgate-register
 * --etcd): the endpoints list, base64, int64-as-string, the error text of
 * an answer. No policy: which endpoint, retries and tokens are the
 * caller's.
 *
 * A unary call (`line` NULL) collects the whole body and ends with rc 0
 * once the response is complete. A stream (`line` set) hands every
 * complete line of a 200 body to `line` and always ends with a failure
 * (UV_EOF when the server ended it). */
#ifndef ZKGATE_ETCD_HTTP_H
#define ZKGATE_ETCD_HTTP_H

#include "net/tls.h"

#include <jansson.h>
#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct {
  char *host; /* no brackets */
  char port[8];
  int tls;
  char *text; /* as written */
} zg_etcd_endpoint_t;

/* "http://h:p, https://[v6]:p" (shape checked by the caller or the
 * configuration) -> *eps (appended to; *n counts them). 0, UV_ENOMEM, or
 * UV_EINVAL when the list holds none. */
int zg_etcd_endpoints_parse(const char *list, zg_etcd_endpoint_t **eps,
                            size_t *n);
void zg_etcd_endpoints_free(zg_etcd_endpoint_t *eps, size_t n);

/* base64 of n bytes, NUL-terminated; NULL when out of memory. */
char *zg_etcd_b64_encode(const char *s, size_t n);
/* Into a new NUL-terminated buffer; *len without the terminator. NULL when
 * it is not base64 or out of memory. */
char *zg_etcd_b64_decode(const char *s, size_t n, size_t *len);
/* A JSON int64 as the gateway writes it: a string of digits (or a number
 * from other writers); 0 when absent. */
int64_t zg_etcd_json_int64(json_t *v);
/* The reason in an error answer ({"error": ..., "message": ...} of unary
 * calls, {"error": {"message": ...}} of a stream) into msg. */
void zg_etcd_error_message(const char *body, size_t len, char *msg,
                           size_t msglen);
/* Zeroes a secret, then frees it (NULL is fine). */
void zg_etcd_secret_free(char *s);

typedef struct zg_etcd_call zg_etcd_call_t;
typedef void (*zg_etcd_done_fn)(zg_etcd_call_t *c, int rc);
typedef void (*zg_etcd_line_fn)(zg_etcd_call_t *c, char *line, size_t len);

struct zg_etcd_call {
  /* The caller's: */
  void *owner;
  int kind;
  void *entry;
  zg_etcd_done_fn done; /* NULL: nobody waits (zg_etcd_call_abort) */
  uint64_t timeout_ms;  /* for the response, once the request is sent */
  /* The answer: */
  int status;
  char *body; /* unary: the whole body; stream: what is not a line yet */
  size_t body_len, body_cap;
  int malformed; /* the answer was not HTTP llhttp could read */
  int finished;  /* `done` was called (or never will be) */
  /* Private: */
  uv_loop_t *loop;
  const zg_etcd_endpoint_t *ep;
  zg_tls_client_t *tls_client;
  zg_etcd_line_fn line;
  uv_getaddrinfo_t gai;
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_timer_t timer;
  zg_tls_conn_t *tls;
  llhttp_t parser;
  llhttp_settings_t settings;
  char *req;
  size_t req_len;
  int refs;     /* the lookup, the socket and the timer while open */
  int tcp_open; /* the socket was initialised */
  char read_buf[16384];
};

/* POST `path` with `json` (NULL: no body) to `ep` (which must outlive the
 * call), with `token` in Authorization when not NULL; a stream asks for a
 * leader (Grpc-Metadata-hasleader). The dial timeout runs until the
 * request is on its way, then timeout_ms (15 s; a stream's stops at its
 * headers). `tls` is the client context for https endpoints. NULL when
 * out of memory. */
zg_etcd_call_t *zg_etcd_call_start(uv_loop_t *loop, zg_tls_client_t *tls,
                                   const zg_etcd_endpoint_t *ep,
                                   const char *token, const char *path,
                                   const char *json, uint64_t dial_timeout_ms,
                                   zg_etcd_line_fn line, zg_etcd_done_fn done,
                                   void *owner);
/* Ends the call: `done` with rc (once), then the connection is closed and
 * the call freed after the loop lets go of it. */
void zg_etcd_call_finish(zg_etcd_call_t *c, int rc);
/* Drops a call nobody waits for any more (NULL is fine). */
void zg_etcd_call_abort(zg_etcd_call_t *c);
/* Why a call ended with rc, in words: the HTTP status and etcd's message,
 * a malformed answer, a TLS failure (cert_hint names the client
 * certificate options), or the error. */
void zg_etcd_call_why(const zg_etcd_call_t *c, int rc, const char *cert_hint,
                      char *why, size_t len);

#endif
