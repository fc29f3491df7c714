/* One HTTP/1.1 call to an etcd endpoint, and the pieces both etcd clients
 * share. See etcd_http.h. Moved from etcd_source.c so that
 * zkgate-register --etcd uses the same code. */
#include "registry/etcd_http.h"

#include "core/config.h"
#include "core/error.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CALL_TIMEOUT_MS 15000 /* a unary call's response */
#define MAX_BODY (256u * 1024 * 1024)
#define MAX_LINE (64u * 1024 * 1024)

void zg_etcd_secret_free(char *s) {
  if (s) {
    for (volatile char *c = s; *c; c++)
      *c = 0;
    free(s);
  }
}

void zg_etcd_endpoints_free(zg_etcd_endpoint_t *eps, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(eps[i].host);
    free(eps[i].text);
  }
  free(eps);
}

/* ---- base64 (OpenSSL's EVP_EncodeBlock / EVP_DecodeBlock) -------------- */

char *zg_etcd_b64_encode(const char *s, size_t n) {
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (out)
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
  return out;
}

/* Into a new NUL-terminated buffer; *len without the terminator. NULL when
 * it is not base64 or out of memory. EVP_DecodeBlock counts the padding
 * as zero bytes: they are taken off. */
char *zg_etcd_b64_decode(const char *s, size_t n, size_t *len) {
  char *out;
  int got;
  size_t pad = 0;
  if (n % 4)
    return NULL;
  if (!(out = malloc(n / 4 * 3 + 1)))
    return NULL;
  got = n ? EVP_DecodeBlock((unsigned char *)out, (const unsigned char *)s,
                            (int)n)
          : 0;
  if (got < 0) {
    free(out);
    return NULL;
  }
  if (n >= 1 && s[n - 1] == '=')
    pad++;
  if (n >= 2 && s[n - 2] == '=')
    pad++;
  *len = (size_t)got - pad;
  out[*len] = '\0';
  return out;
}

/* A JSON int64 as the gateway writes it: a string of digits (or a number
 * from other writers); 0 when absent. */
int64_t zg_etcd_json_int64(json_t *v) {
  if (json_is_integer(v))
    return json_integer_value(v);
  if (json_is_string(v))
    return strtoll(json_string_value(v), NULL, 10);
  return 0;
}

/* ---- endpoints ------------------------------------------------------------
 */

int zg_etcd_endpoints_parse(const char *list, zg_etcd_endpoint_t **eps,
                            size_t *n) {
  const char *s;
  size_t len;
  while (zg_config_list_next(&list, &s, &len)) {
    const char *host, *colon;
    zg_etcd_endpoint_t *ne, *ep;
    if (!(ne = realloc(*eps, (*n + 1) * sizeof(*ne))))
      return UV_ENOMEM;
    *eps = ne;
    ep = &ne[*n];
    memset(ep, 0, sizeof(*ep));
    ep->tls = !strncmp(s, "https://", 8);
    host = s + (ep->tls ? 8 : 7);
    colon = NULL; /* the last colon: [v6] addresses hold others */
    for (const char *k = host; k < s + len; k++)
      if (*k == ':')
        colon = k;
    if (!colon || !(ep->text = strndup(s, len)))
      return UV_ENOMEM; /* the configuration checked the shape */
    (*n)++;
    if (*host == '[')
      ep->host = strndup(host + 1, (size_t)(colon - host) - 2);
    else
      ep->host = strndup(host, (size_t)(colon - host));
    snprintf(ep->port, sizeof(ep->port), "%.*s",
             (int)(len - (size_t)(colon + 1 - s)), colon + 1);
    if (!ep->host)
      return UV_ENOMEM;
  }
  return *n ? 0 : UV_EINVAL;
}

/* ---- calls: one HTTP/1.1 request on its own connection ------------------
 */

static void call_unref(zg_etcd_call_t *c) {
  if (--c->refs > 0)
    return;
  /* The request holds the token (and authenticate's, the password). */
  for (volatile char *r = c->req; r && r < c->req + c->req_len; r++)
    *r = 0;
  free(c->req);
  free(c->body);
  free(c);
}

static void on_call_closed(uv_handle_t *h) {
  call_unref(h->data);
}

/* Ends the call: `done` with rc (once, and not while the source closes),
 * then the connection is closed and the call freed. */
void zg_etcd_call_finish(zg_etcd_call_t *c, int rc) {
  if (c->finished)
    return;
  c->finished = 1;
  if (c->done)
    c->done(c, rc);
  if (c->tls) {
    zg_tls_conn_free(c->tls);
    c->tls = NULL;
  }
  if (c->tcp_open)
    uv_close((uv_handle_t *)&c->tcp, on_call_closed);
  uv_close((uv_handle_t *)&c->timer, on_call_closed);
}

/* Drops a call nobody waits for any more (a restart, a failover). */
void zg_etcd_call_abort(zg_etcd_call_t *c) {
  if (c) {
    c->done = NULL;
    zg_etcd_call_finish(c, UV_ECANCELED);
  }
}

static void on_call_timer(uv_timer_t *t) {
  zg_etcd_call_finish(t->data, UV_ETIMEDOUT);
}

static int body_append(zg_etcd_call_t *c, const char *at, size_t len) {
  if (c->body_len + len + 1 > c->body_cap) {
    size_t cap = c->body_cap ? c->body_cap : 4096;
    char *nb;
    while (cap < c->body_len + len + 1)
      cap *= 2;
    if (cap > MAX_BODY || !(nb = realloc(c->body, cap)))
      return -1;
    c->body = nb;
    c->body_cap = cap;
  }
  memcpy(c->body + c->body_len, at, len);
  c->body_len += len;
  c->body[c->body_len] = '\0';
  return 0;
}

static int on_http_body(llhttp_t *p, const char *at, size_t len) {
  zg_etcd_call_t *c = p->data;
  if (body_append(c, at, len) != 0)
    return -1;
  if (c->line && c->status == 200) {
    /* One JSON object a line: each complete line is a message. */
    char *nl;
    size_t off = 0;
    while (!c->finished &&
           (nl = memchr(c->body + off, '\n', c->body_len - off))) {
      *nl = '\0';
      c->line(c, c->body + off, (size_t)(nl - (c->body + off)));
      off = (size_t)(nl - c->body) + 1;
    }
    if (c->finished)
      return -1; /* stop parsing: the connection is closing */
    memmove(c->body, c->body + off, c->body_len - off);
    c->body_len -= off;
    if (c->body_len > MAX_LINE)
      return -1;
  }
  return 0;
}

static int on_http_headers(llhttp_t *p) {
  zg_etcd_call_t *c = p->data;
  c->status = p->status_code;
  if (c->line)
    uv_timer_stop(&c->timer); /* a stream may be quiet for ever */
  return 0;
}

static int on_http_done(llhttp_t *p) {
  zg_etcd_call_t *c = p->data;
  zg_etcd_call_finish(c, c->line ? UV_EOF : 0);
  return HPE_PAUSED;
}

static void on_call_alloc(uv_handle_t *h, size_t size, uv_buf_t *buf) {
  zg_etcd_call_t *c = h->data;
  (void)size;
  buf->base = c->read_buf;
  buf->len = sizeof(c->read_buf);
}

static void on_call_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  zg_etcd_call_t *c = s->data;
  enum llhttp_errno err;
  if (nread == 0)
    return;
  if (nread < 0) {
    if (nread == UV_EOF)
      llhttp_finish(&c->parser); /* a body ended by the close completes */
    zg_etcd_call_finish(c, (int)nread);
    return;
  }
  err = llhttp_execute(&c->parser, buf->base, (size_t)nread);
  if (err != HPE_OK && err != HPE_PAUSED && !c->finished) {
    c->malformed = 1;
    zg_etcd_call_finish(c, UV_EPROTO);
  }
}

static void on_call_written(uv_write_t *w, int status) {
  zg_etcd_call_t *c = w->data;
  if (status < 0)
    zg_etcd_call_finish(c, status);
}

static void call_send(zg_etcd_call_t *c) {
  uv_buf_t b = uv_buf_init(c->req, (unsigned)c->req_len);
  int rc;
  c->write.data = c;
  rc = zg_stream_read_start(c->tls, (uv_stream_t *)&c->tcp, on_call_alloc,
                            on_call_read);
  if (rc == 0)
    rc = zg_stream_write(c->tls, &c->write, (uv_stream_t *)&c->tcp, &b, 1,
                         on_call_written);
  if (rc != 0) {
    zg_etcd_call_finish(c, rc);
    return;
  }
  uv_timer_start(&c->timer, on_call_timer, c->timeout_ms, 0);
}

static void on_call_handshake(zg_tls_conn_t *t, int status, void *arg) {
  zg_etcd_call_t *c = arg;
  (void)t;
  if (status != 0) {
    zg_etcd_call_finish(c, UV_EPROTO); /* call_failed says why */
    return;
  }
  call_send(c);
}

static void on_call_connect(uv_connect_t *req, int status) {
  zg_etcd_call_t *c = req->data;
  const zg_etcd_endpoint_t *ep;
  if (c->finished)
    return; /* aborted: the source may be gone */
  ep = c->ep;
  if (status < 0) {
    zg_etcd_call_finish(c, status);
    return;
  }
  if (!ep->tls) {
    call_send(c);
    return;
  }
  c->tls = zg_tls_conn_client(c->tls_client, &c->tcp, ep->host,
                              strchr(ep->host, ':') ||
                                  strspn(ep->host, "0123456789.") ==
                                      strlen(ep->host),
                              ep->text + 8, ZG_ALPN_HTTP1);
  if (!c->tls || zg_tls_handshake(c->tls, on_call_handshake, c) != 0)
    zg_etcd_call_finish(c, c->tls ? UV_EPROTO : UV_ENOMEM);
}

static void on_call_resolved(uv_getaddrinfo_t *g, int status,
                             struct addrinfo *res) {
  zg_etcd_call_t *c = g->data;
  int rc = status;
  if (c->finished || status < 0) {
    uv_freeaddrinfo(res);
    if (!c->finished)
      zg_etcd_call_finish(c, status);
    call_unref(c);
    return;
  }
  if ((rc = uv_tcp_init(c->loop, &c->tcp)) == 0) {
    c->tcp.data = c;
    c->tcp_open = 1;
    c->refs++;
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect.data = c;
    rc = uv_tcp_connect(&c->connect, &c->tcp, res->ai_addr, on_call_connect);
  }
  uv_freeaddrinfo(res);
  if (rc != 0)
    zg_etcd_call_finish(c, rc);
  call_unref(c); /* the lookup's */
}

/* The request's head into buf (as snprintf: its length). The token rides
 * in Authorization, bare; a stream asks for a leader (docs/platform.md,
 * etcd). */
static int request_head(char *buf, size_t len, const zg_etcd_endpoint_t *ep,
                        const char *token, int stream, const char *path,
                        size_t body_len) {
  int v6 = strchr(ep->host, ':') != NULL;
  return snprintf(buf, len,
                  "POST %s HTTP/1.1\r\nHost: %s%s%s:%s\r\n"
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                  "%s%s%s%s\r\n",
                  path, v6 ? "[" : "", ep->host, v6 ? "]" : "", ep->port,
                  body_len, token ? "Authorization: " : "", token ? token : "",
                  token ? "\r\n" : "",
                  stream ? "Grpc-Metadata-hasleader: true\r\n" : "");
}

zg_etcd_call_t *zg_etcd_call_start(uv_loop_t *loop, zg_tls_client_t *tls,
                                   const zg_etcd_endpoint_t *ep,
                                   const char *token, const char *path,
                                   const char *json, uint64_t dial_timeout_ms,
                                   zg_etcd_line_fn line, zg_etcd_done_fn done,
                                   void *owner) {
  zg_etcd_call_t *c = calloc(1, sizeof(*c));
  struct addrinfo hints;
  size_t jlen = json ? strlen(json) : 0;
  int n;
  if (!c)
    return NULL;
  c->loop = loop;
  c->ep = ep;
  c->tls_client = tls;
  c->owner = owner;
  c->line = line;
  c->done = done;
  c->timeout_ms = CALL_TIMEOUT_MS;
  n = request_head(NULL, 0, ep, token, line != NULL, path, jlen);
  if (!(c->req = malloc((size_t)n + jlen + 1))) {
    free(c);
    return NULL;
  }
  request_head(c->req, (size_t)n + 1, ep, token, line != NULL, path, jlen);
  if (json)
    memcpy(c->req + n, json, jlen);
  c->req_len = (size_t)n + jlen;
  llhttp_settings_init(&c->settings);
  c->settings.on_body = on_http_body;
  c->settings.on_headers_complete = on_http_headers;
  c->settings.on_message_complete = on_http_done;
  llhttp_init(&c->parser, HTTP_RESPONSE, &c->settings);
  c->parser.data = c;
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->refs = 2; /* the timer, the lookup */
  uv_timer_start(&c->timer, on_call_timer, dial_timeout_ms, 0);
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->gai.data = c;
  if (uv_getaddrinfo(loop, &c->gai, on_call_resolved, ep->host, ep->port,
                     &hints) != 0) {
    c->refs--;
    c->done = NULL;
    zg_etcd_call_finish(c, UV_ENOMEM);
    return NULL;
  }
  return c;
}

void zg_etcd_call_why(const zg_etcd_call_t *c, int rc, const char *cert_hint,
                      char *why, size_t len) {
  if (rc == 0 || (rc == UV_EOF && c->status && c->status != 200)) {
    char msg[128];
    zg_etcd_error_message(c->body, c->body_len, msg, sizeof(msg));
    snprintf(why, len, "HTTP %d: %s", c->status, msg);
  } else if (rc == UV_EPROTO && c->malformed) {
    const char *reason = llhttp_get_error_reason(&c->parser);
    snprintf(why, len, "a malformed HTTP answer (%s)", reason ? reason : "?");
  } else if (rc == UV_EPROTO && c->tls) {
    const char *e = zg_tls_conn_error(c->tls);
    /* TLS 1.3: a refused client certificate is an alert after the
     * client's side of the handshake is done. */
    if (e[0])
      snprintf(why, len, "TLS: %s", e);
    else
      snprintf(why, len,
               "TLS: the server ended the connection after the handshake "
               "(does it want a client certificate: %s?)",
               cert_hint);
  } else {
    snprintf(why, len, "%s", zg_strerror(rc));
  }
}

/* What etcd said in an error body ({"error": "...", "code": N} from the
 * gateway's unary calls, {"error": {"message": ...}} from a stream), into
 * msg. */
void zg_etcd_error_message(const char *body, size_t len, char *msg,
                           size_t msglen) {
  json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
  json_t *err = root ? json_object_get(root, "error") : NULL;
  json_t *m = json_is_object(err) ? json_object_get(err, "message") : err;
  if (!json_is_string(m) && root)
    m = json_object_get(root, "message");
  snprintf(msg, msglen, "%s",
           json_is_string(m) ? json_string_value(m) : "no reason given");
  json_decref(root);
}
