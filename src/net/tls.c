/* TLS termination over libuv with OpenSSL memory BIOs. See tls.h.
 *
 * Ciphertext read from the socket is written into the SSL's read BIO;
 * whatever OpenSSL puts in its write BIO (handshake messages, records,
 * alerts, session tickets) is moved into one heap buffer and written to
 * the socket with one uv_write, which carries the caller's request, if
 * any, to complete it once the bytes are out. So a caller's write
 * completes as libuv's would, and the socket's write queue is the
 * backpressure measure it always was.
 *
 * Plaintext is handed over from SSL_read straight into the buffer the
 * caller's alloc callback gives, while the caller reads. The socket is read
 * only while the caller reads (or during the handshake): a caller that
 * stops reading stops the peer. Records already read when the caller stops
 * are delivered when it starts again, from an idle handle (never from
 * inside read_start, which libuv's callers do not expect).
 *
 * tcp->data belongs to the caller; while attached, the connection keeps
 * itself there (its socket callbacks need it) and puts the caller's value
 * back around each callback into the caller. */
#include "net/tls.h"

#include "core/error.h"
#include "core/log.h"
#include "core/tls_hello.h"

#include <errno.h>
#include <stdint.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK 16384  /* plaintext asked of SSL_read at a time */
#define SESSION_CACHE 256 /* client sessions kept, per context */

/* ---- servers ------------------------------------------------------------ */

/* Shared by the workers (and by the generations of a listener's server
 * across reloads): counts change with atomic adds, the log's rate limit
 * under the mutex. */
typedef struct {
  unsigned refs; /* atomic builtins */
  zg_tls_counts_t counts;
  uv_mutex_t rl_mu;
  zg_ratelimit_t fail_rl;
} stats_t;

#define ATOMIC_INC(x) __atomic_fetch_add(&(x), 1, __ATOMIC_RELAXED)
#define ATOMIC_GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

static int failure_log_allowed(stats_t *st, uint64_t now, uint64_t *dropped) {
  int ok;
  uv_mutex_lock(&st->rl_mu);
  ok = zg_ratelimit_allow(&st->fail_rl, now, dropped);
  uv_mutex_unlock(&st->rl_mu);
  return ok;
}

typedef struct {
  SSL_CTX *ctx;
  char *client_ca; /* as configured, to match a request's service */
  zg_tls_verify_t verify;
  unsigned char sid[EVP_MAX_MD_SIZE]; /* its session id context */
  unsigned sid_len;
} site_t;

struct zg_tls_server {
  unsigned refs; /* atomic builtins: workers share servers */
  stats_t *stats;
  char listener[64];
  site_t *sites;
  const char **patterns; /* sni pattern of each site; "" matches no name */
  char **own_patterns;
  size_t n;
};

typedef struct {
  char *key; /* "name/host:port" */
  SSL_SESSION *sess;
} cached_session_t;

struct zg_tls_client {
  unsigned refs;
  SSL_CTX *ctx;
  bool verify;
  cached_session_t cache[SESSION_CACHE];
  size_t n_cache, next_evict;
};

struct zg_tls_conn {
  SSL *ssl;
  BIO *rbio, *wbio; /* owned by ssl */
  uv_tcp_t *tcp;
  void *user_data;      /* the caller's tcp->data */
  zg_tls_server_t *srv; /* server side, or NULL */
  zg_tls_client_t *cli; /* client side, or NULL */
  char *cache_key;      /* client side: "name/host:port" */
  char *name;           /* client side: the name checked */
  char err[200];        /* client side: why the handshake failed */
  size_t site;          /* the certificate the handshake chose */
  uv_idle_t idle;
  uv_alloc_cb alloc_cb;
  uv_read_cb read_cb;
  zg_tls_handshake_cb hs_cb;
  void *hs_arg;
  unsigned pending_writes;
  unsigned handshaking : 1;
  unsigned established : 1;
  unsigned reading : 1;      /* the caller reads */
  unsigned sock_reading : 1; /* we read the socket */
  unsigned sock_eof : 1;     /* the socket said EOF, or failed */
  int sock_err;              /* how it failed (not EOF): 0 or UV_E* */
  unsigned done : 1;         /* EOF or an error went to the caller */
  unsigned freed : 1;
  unsigned idle_closed : 1;
  unsigned delivering : 1;
  unsigned got_bytes : 1; /* the client sent something */
  char peer[64];
};

static int no_password(char *buf, int size, int rw, void *u) {
  (void)buf;
  (void)size;
  (void)rw;
  (void)u;
  return 0; /* an encrypted key cannot be used: never prompt */
}

/* OpenSSL's reason for the last error, and the queue cleared. */
static const char *ssl_reason(char *buf, size_t len) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  if (r)
    snprintf(buf, len, "%s", r);
  else if (e)
    ERR_error_string_n(e, buf, len);
  else
    snprintf(buf, len, "unknown error");
  ERR_clear_error();
  return buf;
}

static int readable(const char *path, char *err, size_t len, const char *what) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, len, "%s %s: %s", what, path, strerror(errno));
    return -1;
  }
  fclose(f);
  return 0;
}

static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg) {
  static const unsigned char h1[] = "\x08http/1.1";
  static const unsigned char h2h1[] = "\x02h2\x08http/1.1";
  bool h2 = (uintptr_t)arg == ZG_TLS_ALPN_H2;
  unsigned char *sel;
  (void)ssl;
  /* Ours first: h2 when offered (and on), else HTTP/1.1; a client
   * offering nothing we know goes on without ALPN (RFC 7301 §3.2 allows
   * it) rather than failing. */
  if (SSL_select_next_proto(&sel, outlen, h2 ? h2h1 : h1,
                            h2 ? sizeof(h2h1) - 1 : sizeof(h1) - 1, in,
                            inlen) != OPENSSL_NPN_NEGOTIATED)
    return SSL_TLSEXT_ERR_NOACK;
  *out = sel;
  return SSL_TLSEXT_ERR_OK;
}

static int on_client_hello(SSL *ssl, int *alert, void *arg);

/* One certificate's context. NULL with `err` and *key set on failure. */
/* A digest of what a session was established under: certificate, key and
 * client certificate checks. */
static int session_id_context(const zg_service_conf_t *sc, unsigned char *sid,
                              unsigned *sid_len) {
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok =
      md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) &&
      EVP_DigestUpdate(md, sc->tls_cert, strlen(sc->tls_cert)) &&
      EVP_DigestUpdate(md, "\n", 1) &&
      EVP_DigestUpdate(md, sc->tls_key, strlen(sc->tls_key)) &&
      EVP_DigestUpdate(md, "\n", 1) &&
      (!sc->tls_client_ca ||
       EVP_DigestUpdate(md, sc->tls_client_ca, strlen(sc->tls_client_ca))) &&
      EVP_DigestUpdate(md, sc->tls_verify == ZG_TLS_VERIFY_REQUIRED ? "r" : "o",
                       1) &&
      EVP_DigestFinal_ex(md, sid, sid_len);
  EVP_MD_CTX_free(md);
  return ok ? 0 : -1;
}

static SSL_CTX *ctx_new(const zg_service_conf_t *sc, int http, char *err,
                        size_t len, const char **key) {
  SSL_CTX *ctx;
  char why[256];
  unsigned char sid[EVP_MAX_MD_SIZE];
  unsigned sid_len = 0;

  ERR_clear_error();
  *key = "tls_cert";
  if (!(ctx = SSL_CTX_new(TLS_server_method()))) {
    snprintf(err, len, "cannot create a TLS context: %s",
             ssl_reason(why, sizeof(why)));
    return NULL;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  /* Client-initiated renegotiation costs us a handshake each: refused. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  /* Idle connections give their record buffers back. The chain sent is the
   * one in the certificate file, as nginx does: OpenSSL would otherwise
   * build it anew from the trust store at every handshake (a verification
   * each time: 15% of a full handshake's CPU here). */
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
  SSL_CTX_set_dh_auto(ctx, 1);
  SSL_CTX_set_default_passwd_cb(ctx, no_password);
  *key = "tls_ciphers";
  if (!SSL_CTX_set_cipher_list(ctx, sc->tls_ciphers ? sc->tls_ciphers
                                                    : ZG_TLS_DEFAULT_CIPHERS)) {
    snprintf(err, len, "tls_ciphers: no usable cipher in '%s'",
             sc->tls_ciphers ? sc->tls_ciphers : ZG_TLS_DEFAULT_CIPHERS);
    goto fail;
  }
  *key = "tls_ciphersuites";
  if (!SSL_CTX_set_ciphersuites(ctx, sc->tls_ciphersuites
                                         ? sc->tls_ciphersuites
                                         : ZG_TLS_DEFAULT_CIPHERSUITES)) {
    snprintf(err, len, "tls_ciphersuites: not a TLS 1.3 suite list: '%s'",
             sc->tls_ciphersuites ? sc->tls_ciphersuites
                                  : ZG_TLS_DEFAULT_CIPHERSUITES);
    goto fail;
  }
  if (!sc->tls_cert || !sc->tls_key) {
    *key = "tls_cert";
    snprintf(err, len, "tls_cert and tls_key go together");
    goto fail;
  }
  *key = "tls_cert";
  if (readable(sc->tls_cert, err, len, "tls_cert") != 0)
    goto fail;
  if (!SSL_CTX_use_certificate_chain_file(ctx, sc->tls_cert)) {
    snprintf(err, len, "tls_cert %s: not a usable PEM certificate (%s)",
             sc->tls_cert, ssl_reason(why, sizeof(why)));
    goto fail;
  }
  *key = "tls_key";
  if (readable(sc->tls_key, err, len, "tls_key") != 0)
    goto fail;
  if (!SSL_CTX_use_PrivateKey_file(ctx, sc->tls_key, SSL_FILETYPE_PEM)) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      snprintf(err, len, "tls_key %s does not match the certificate in %s",
               sc->tls_key, sc->tls_cert);
      goto fail;
    }
    snprintf(err, len,
             "tls_key %s: not a usable PEM private key, or encrypted, or not "
             "the key of %s (%s)",
             sc->tls_key, sc->tls_cert, ssl_reason(why, sizeof(why)));
    goto fail;
  }
  if (!SSL_CTX_check_private_key(ctx)) {
    snprintf(err, len, "tls_key %s does not match the certificate in %s (%s)",
             sc->tls_key, sc->tls_cert, ssl_reason(why, sizeof(why)));
    goto fail;
  }
  if (sc->tls_client_ca) {
    STACK_OF(X509_NAME) * names;
    *key = "tls_client_ca";
    if (readable(sc->tls_client_ca, err, len, "tls_client_ca") != 0)
      goto fail;
    if (!SSL_CTX_load_verify_locations(ctx, sc->tls_client_ca, NULL) ||
        !(names = SSL_load_client_CA_file(sc->tls_client_ca))) {
      snprintf(err, len, "tls_client_ca %s: no usable PEM certificate (%s)",
               sc->tls_client_ca, ssl_reason(why, sizeof(why)));
      goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(ctx,
                       SSL_VERIFY_PEER |
                           (sc->tls_verify == ZG_TLS_VERIFY_OPTIONAL
                                ? 0
                                : SSL_VERIFY_FAIL_IF_NO_PEER_CERT),
                       NULL);
  }
  /* Sessions resume only on a context with the same certificate and
   * client checks (OpenSSL compares the session id context). */
  if (session_id_context(sc, sid, &sid_len) != 0 ||
      !SSL_CTX_set_session_id_context(ctx, sid, sid_len)) {
    *key = "tls_cert";
    snprintf(err, len, "cannot set the session id context: %s",
             ssl_reason(why, sizeof(why)));
    goto fail;
  }
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  if (http)
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, (void *)(uintptr_t)http);
  return ctx;
fail:
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return NULL;
}

int zg_tls_check_service(const zg_service_conf_t *sc, char *err, size_t len,
                         const char **key) {
  SSL_CTX *ctx = ctx_new(sc, sc->protocol == ZG_PROTO_HTTP, err, len, key);
  if (!ctx)
    return ZG_ECONFIG;
  SSL_CTX_free(ctx);
  return 0;
}

static void server_free(zg_tls_server_t *srv) {
  for (size_t i = 0; i < srv->n; i++) {
    SSL_CTX_free(srv->sites[i].ctx);
    free(srv->sites[i].client_ca);
    free(srv->own_patterns[i]);
  }
  free(srv->sites);
  free(srv->patterns);
  free(srv->own_patterns);
  if (srv->stats &&
      __atomic_sub_fetch(&srv->stats->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    uv_mutex_destroy(&srv->stats->rl_mu);
    free(srv->stats);
  }
  free(srv);
}

static void warn_key_mode(const zg_service_conf_t *sc) {
  struct stat st;
  /* Readable by others is a leak waiting to happen; readable by a group is
   * Debian's convention for keys (ssl-cert), so it passes. */
  if (stat(sc->tls_key, &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH)))
    zg_warn("tls",
            "service %s: private key %s is readable by others (mode %04o); "
            "chmod o-rw it",
            sc->name, sc->tls_key, (unsigned)(st.st_mode & 07777));
}

int zg_tls_server_new(const zg_service_conf_t *const *svcs, size_t n,
                      const char *listener, int http, zg_tls_server_t *prev,
                      zg_tls_server_t **out) {
  zg_tls_server_t *srv;
  *out = NULL;
  if (n == 0)
    return ZG_ECONFIG;
  if (!(srv = calloc(1, sizeof(*srv))) ||
      !(srv->sites = calloc(n, sizeof(*srv->sites))) ||
      !(srv->patterns = calloc(n, sizeof(*srv->patterns))) ||
      !(srv->own_patterns = calloc(n, sizeof(*srv->own_patterns))))
    goto oom;
  srv->refs = 1;
  snprintf(srv->listener, sizeof(srv->listener), "%s", listener);
  if (prev) {
    srv->stats = prev->stats;
    __atomic_add_fetch(&srv->stats->refs, 1, __ATOMIC_RELAXED);
  } else {
    if (!(srv->stats = calloc(1, sizeof(*srv->stats))))
      goto oom;
    if (uv_mutex_init(&srv->stats->rl_mu) != 0) {
      free(srv->stats);
      srv->stats = NULL;
      goto oom;
    }
    srv->stats->refs = 1;
    zg_ratelimit_init(&srv->stats->fail_rl, 10000, 5);
  }
  for (size_t i = 0; i < n; i++) {
    const zg_service_conf_t *sc = svcs[i];
    char err[512];
    const char *key;
    site_t *site = &srv->sites[i];
    srv->n = i + 1;
    if (!(site->ctx = ctx_new(sc, http, err, sizeof(err), &key))) {
      zg_error("tls", "service %s (listen %s): %s", sc->name, listener, err);
      server_free(srv);
      return ZG_ECONFIG;
    }
    warn_key_mode(sc);
    if (session_id_context(sc, site->sid, &site->sid_len) != 0)
      goto oom;
    /* The site is chosen from the ClientHello before OpenSSL decides on
     * resumption (a servername callback runs after it): a session made
     * for one site's checks never resumes on another's. */
    SSL_CTX_set_client_hello_cb(site->ctx, on_client_hello, srv);
    site->verify = sc->tls_client_ca ? sc->tls_verify : ZG_TLS_VERIFY_NONE;
    if ((sc->tls_client_ca && !(site->client_ca = strdup(sc->tls_client_ca))) ||
        !(srv->own_patterns[i] = strdup(
              sc->protocol == ZG_PROTO_HTTP && sc->host ? sc->host : "")))
      goto oom;
    srv->patterns[i] = srv->own_patterns[i];
  }
  *out = srv;
  return 0;
oom:
  zg_error("tls", "listen %s: out of memory loading certificates", listener);
  if (srv)
    server_free(srv);
  return UV_ENOMEM;
}

zg_tls_server_t *zg_tls_server_ref(zg_tls_server_t *srv) {
  __atomic_add_fetch(&srv->refs, 1, __ATOMIC_RELAXED);
  return srv;
}

void zg_tls_server_unref(zg_tls_server_t *srv) {
  if (srv && __atomic_sub_fetch(&srv->refs, 1, __ATOMIC_ACQ_REL) == 0)
    server_free(srv);
}

const char *zg_tls_server_listener(const zg_tls_server_t *srv) {
  return srv->listener;
}

void zg_tls_server_counts(const zg_tls_server_t *srv, zg_tls_counts_t *out) {
  out->handshakes = ATOMIC_GET(srv->stats->counts.handshakes);
  out->resumed = ATOMIC_GET(srv->stats->counts.resumed);
  out->failures = ATOMIC_GET(srv->stats->counts.failures);
}

/* The certificate by server name (RFC 6066 §3): the service whose host
 * matches (exact, then the longest wildcard), else the first. Runs first
 * thing on the ClientHello, before resumption, the certificate and the
 * client certificate request are decided. */
static int on_client_hello(SSL *ssl, int *alert, void *arg) {
  zg_tls_conn_t *c = SSL_get_app_data(ssl);
  zg_tls_server_t *srv = arg;
  const unsigned char *ext;
  size_t ext_len, i = ZG_SNI_NONE;
  zg_tls_hello_t hello;
  (void)alert;
  if (!c || srv != c->srv)
    return SSL_CLIENT_HELLO_SUCCESS;
  /* A malformed extension is OpenSSL's to refuse; the default site
   * meanwhile. */
  if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &ext, &ext_len) &&
      zg_tls_sni_ext_parse(ext, ext_len, &hello) == ZG_TLS_HELLO_SNI)
    i = zg_tls_sni_pick(srv->patterns, srv->n, hello.name);
  if (i == ZG_SNI_NONE)
    i = 0;
  c->site = i;
  if (i != 0) {
    SSL_CTX *ctx = srv->sites[i].ctx;
    /* SSL_set_SSL_CTX swaps the certificate and the session id context;
     * the client certificate request is the new context's too. */
    if (!SSL_set_SSL_CTX(ssl, ctx)) {
      *alert = SSL_AD_INTERNAL_ERROR;
      return SSL_CLIENT_HELLO_ERROR;
    }
    SSL_set_verify(ssl, SSL_CTX_get_verify_mode(ctx), NULL);
  }
  return SSL_CLIENT_HELLO_SUCCESS;
}

/* ---- connections ------------------------------------------------------- */

typedef struct {
  uv_write_t req;
  zg_tls_conn_t *c;
  uv_write_t *user_req; /* NULL: handshake or alert bytes */
  uv_write_cb user_cb;
  char data[];
} flush_t;

static void conn_maybe_free(zg_tls_conn_t *c) {
  if (!c->freed || !c->idle_closed || c->pending_writes > 0)
    return;
  zg_tls_server_unref(c->srv);
  zg_tls_client_unref(c->cli);
  free(c->cache_key);
  free(c->name);
  free(c);
}

static void on_idle_closed(uv_handle_t *h) {
  zg_tls_conn_t *c = h->data;
  c->idle_closed = 1;
  conn_maybe_free(c);
}

static void on_flushed(uv_write_t *req, int status) {
  flush_t *f = (flush_t *)req;
  zg_tls_conn_t *c = f->c;
  if (f->user_cb) {
    /* The caller's request looks done by libuv's own hand. */
    f->user_req->handle = req->handle;
    f->user_cb(f->user_req, status);
  }
  free(f);
  c->pending_writes--;
  conn_maybe_free(c);
}

/* Writes out what OpenSSL left in the write BIO, completing `req` with it
 * (a zero-length write when there is nothing, so that it still completes
 * through the loop). */
static int flush(zg_tls_conn_t *c, uv_write_t *req, uv_write_cb cb) {
  size_t n = BIO_ctrl_pending(c->wbio);
  flush_t *f;
  uv_buf_t b;
  int rc;
  if (n == 0 && !req)
    return 0;
  if (!(f = malloc(sizeof(*f) + (n ? n : 1))))
    return UV_ENOMEM;
  if (n > 0 && BIO_read(c->wbio, f->data, (int)n) != (int)n) {
    free(f);
    return UV_EIO;
  }
  f->c = c;
  f->user_req = req;
  f->user_cb = cb;
  b = uv_buf_init(f->data, (unsigned)n);
  rc = uv_write(&f->req, (uv_stream_t *)c->tcp, &b, 1, on_flushed);
  if (rc < 0) {
    free(f);
    return rc;
  }
  c->pending_writes++;
  return 0;
}

static void user_read(zg_tls_conn_t *c, ssize_t nread, const uv_buf_t *buf) {
  c->tcp->data = c->user_data;
  c->read_cb((uv_stream_t *)c->tcp, nread, buf);
  if (!c->freed)
    c->tcp->data = c;
}

static void on_sock_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);
static void on_sock_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);

static void sock_read(zg_tls_conn_t *c, int on) {
  if (on && !c->sock_reading && !c->sock_eof) {
    if (uv_read_start((uv_stream_t *)c->tcp, on_sock_alloc, on_sock_read) == 0)
      c->sock_reading = 1;
  } else if (!on && c->sock_reading) {
    uv_read_stop((uv_stream_t *)c->tcp);
    c->sock_reading = 0;
  }
}

/* Why a handshake or a read failed, for the log. */
static const char *failure_reason(zg_tls_conn_t *c, char *buf, size_t len) {
  long v = SSL_get_verify_result(c->ssl);
  if (v != X509_V_OK && ERR_peek_last_error() &&
      ERR_GET_REASON(ERR_peek_last_error()) ==
          SSL_R_CERTIFICATE_VERIFY_FAILED) {
    ERR_clear_error();
    snprintf(buf, len, "%s: %s",
             c->cli ? "certificate verify failed" : "client certificate",
             X509_verify_cert_error_string(v));
    return buf;
  }
  if (!ERR_peek_last_error() && c->sock_eof)
    return "connection closed during the handshake";
  return ssl_reason(buf, len);
}

static void session_forget(zg_tls_client_t *cli, const char *key);

static void handshake_done(zg_tls_conn_t *c, int status, const char *why) {
  stats_t *st = c->srv ? c->srv->stats : NULL;
  zg_tls_handshake_cb cb = c->hs_cb;
  c->handshaking = 0;
  if (!st) {
    /* Client side: the caller counts and logs, as a connect failure. */
    if (status == 0) {
      c->established = 1;
    } else {
      snprintf(c->err, sizeof(c->err), "%s", why ? why : "TLS error");
      session_forget(c->cli, c->cache_key);
    }
  } else if (status == 0) {
    c->established = 1;
    ATOMIC_INC(st->counts.handshakes);
    if (SSL_session_reused(c->ssl))
      ATOMIC_INC(st->counts.resumed);
  } else {
    uint64_t now = uv_now(c->tcp->loop), dropped;
    ATOMIC_INC(st->counts.failures);
    if (failure_log_allowed(st, now, &dropped))
      zg_warn("tls", "listen %s: client %s: handshake failed: %s%s",
              c->srv->listener, c->peer, why,
              dropped ? " (and earlier failures not logged)" : "");
  }
  if (!c->reading)
    sock_read(c, 0);
  c->tcp->data = c->user_data;
  cb(c, status, c->hs_arg);
  if (!c->freed)
    c->tcp->data = c;
}

static void handshake_step(zg_tls_conn_t *c) {
  char why[256];
  int r, err;
  ERR_clear_error();
  r = SSL_do_handshake(c->ssl);
  err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
  /* Our flight, or the alert that says why we give up. */
  if (flush(c, NULL, NULL) != 0 && err == SSL_ERROR_NONE) {
    handshake_done(c, UV_EPIPE, "cannot write to the client");
    return;
  }
  if (err == SSL_ERROR_NONE) {
    handshake_done(c, 0, NULL);
  } else if (err == SSL_ERROR_WANT_READ && !c->sock_eof) {
    sock_read(c, 1);
  } else if (!c->got_bytes && c->srv) {
    /* Connected and closed without a byte (a port check): no handshake
     * was tried, so none failed. */
    c->handshaking = 0;
    c->tcp->data = c->user_data;
    c->hs_cb(c, UV_EOF, c->hs_arg);
    if (!c->freed)
      c->tcp->data = c;
  } else {
    handshake_done(c, UV_EPROTO, failure_reason(c, why, sizeof(why)));
  }
}

/* Hands plaintext to the caller while it reads. */
static void deliver(zg_tls_conn_t *c) {
  char why[256];
  if (c->delivering)
    return;
  c->delivering = 1;
  while (c->reading && !c->freed && !c->done) {
    uv_buf_t b = uv_buf_init(NULL, 0);
    int n, err;
    c->tcp->data = c->user_data;
    c->alloc_cb((uv_handle_t *)c->tcp, READ_CHUNK, &b);
    c->tcp->data = c;
    if (!b.base || b.len == 0) {
      user_read(c, UV_ENOBUFS, &b);
      break;
    }
    ERR_clear_error();
    n = SSL_read(c->ssl, b.base, b.len > INT32_MAX ? INT32_MAX : (int)b.len);
    if (n > 0) {
      user_read(c, n, &b);
      continue;
    }
    err = SSL_get_error(c->ssl, n);
    /* Session tickets, key update answers. */
    if (flush(c, NULL, NULL) != 0)
      err = SSL_ERROR_SYSCALL;
    if (err == SSL_ERROR_WANT_READ && !c->sock_eof) {
      user_read(c, 0, &b); /* the buffer goes back, as libuv does */
      if (!c->freed && c->reading)
        sock_read(c, 1);
      break;
    }
    c->done = 1;
    sock_read(c, 0);
    if (err == SSL_ERROR_WANT_READ && c->sock_err) {
      user_read(c, c->sock_err, &b); /* a reset is not an end */
    } else if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_WANT_READ) {
      /* close_notify, or TCP's end without one: an end either way (the
       * relayed protocols frame their own messages). */
      user_read(c, UV_EOF, &b);
    } else {
      zg_debug("tls", "%s %s: %s", c->srv ? c->srv->listener : "instance",
               c->peer, ssl_reason(why, sizeof(why)));
      user_read(c, UV_EPROTO, &b);
    }
    break;
  }
  c->delivering = 0;
}

static void on_sock_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b) {
  zg_tls_conn_t *c = h->data;
  (void)suggested;
  (void)c;
  b->base = malloc(READ_CHUNK);
  b->len = b->base ? READ_CHUNK : 0;
}

static void on_sock_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b) {
  zg_tls_conn_t *c = st->data;
  if (nread > 0) {
    c->got_bytes = 1;
    if (BIO_write(c->rbio, b->base, (int)nread) != (int)nread)
      nread = UV_ENOMEM;
  }
  free(b->base);
  if (nread == 0)
    return;
  if (nread < 0) {
    c->sock_eof = 1;
    if (nread != UV_EOF)
      c->sock_err = (int)nread;
    sock_read(c, 0);
  }
  if (c->handshaking)
    handshake_step(c);
  else if (c->reading)
    deliver(c);
}

static void on_idle(uv_idle_t *h) {
  zg_tls_conn_t *c = h->data;
  uv_idle_stop(h);
  if (!c->freed && c->reading)
    deliver(c);
}

zg_tls_conn_t *zg_tls_conn_server(zg_tls_server_t *srv, uv_tcp_t *tcp,
                                  const char *peer) {
  zg_tls_conn_t *c = calloc(1, sizeof(*c));
  if (!c)
    return NULL;
  if (!(c->ssl = SSL_new(srv->sites[0].ctx)) ||
      !(c->rbio = BIO_new(BIO_s_mem())) || !(c->wbio = BIO_new(BIO_s_mem()))) {
    BIO_free(c->rbio);
    SSL_free(c->ssl);
    free(c);
    ERR_clear_error();
    return NULL;
  }
  /* An empty read BIO means "more to come", not EOF. */
  BIO_set_mem_eof_return(c->rbio, -1);
  SSL_set_bio(c->ssl, c->rbio, c->wbio);
  SSL_set_accept_state(c->ssl);
  SSL_set_app_data(c->ssl, c);
  c->srv = zg_tls_server_ref(srv);
  c->tcp = tcp;
  c->user_data = tcp->data;
  tcp->data = c;
  uv_idle_init(tcp->loop, &c->idle);
  c->idle.data = c;
  snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "-");
  return c;
}

int zg_tls_handshake(zg_tls_conn_t *c, zg_tls_handshake_cb cb, void *arg) {
  c->hs_cb = cb;
  c->hs_arg = arg;
  if (c->cli) {
    /* The client speaks first: the ClientHello goes out now. */
    char why[sizeof(c->err)];
    int r, rc;
    ERR_clear_error();
    r = SSL_do_handshake(c->ssl);
    if (r == 1 || SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
      snprintf(c->err, sizeof(c->err), "%s", ssl_reason(why, sizeof(why)));
      return UV_EPROTO;
    }
    if ((rc = flush(c, NULL, NULL)) != 0) {
      snprintf(c->err, sizeof(c->err), "%s", uv_strerror(rc));
      return rc;
    }
  }
  c->handshaking = 1;
  sock_read(c, 1);
  return c->sock_reading ? 0 : UV_EIO;
}

void zg_tls_handshake_timed_out(zg_tls_conn_t *c) {
  stats_t *st;
  uint64_t dropped;
  if (!c->handshaking)
    return;
  c->handshaking = 0;
  if (!c->srv) {
    snprintf(c->err, sizeof(c->err), "handshake timeout");
    session_forget(c->cli, c->cache_key);
    return;
  }
  st = c->srv->stats;
  ATOMIC_INC(st->counts.failures);
  if (failure_log_allowed(st, uv_now(c->tcp->loop), &dropped))
    zg_warn("tls", "listen %s: client %s: handshake failed: timeout%s",
            c->srv->listener, c->peer,
            dropped ? " (and earlier failures not logged)" : "");
}

bool zg_tls_established(const zg_tls_conn_t *c) {
  return c->established;
}

bool zg_tls_conn_h2(const zg_tls_conn_t *c) {
  const unsigned char *p = NULL;
  unsigned len = 0;
  SSL_get0_alpn_selected(c->ssl, &p, &len);
  return len == 2 && p[0] == 'h' && p[1] == '2';
}

int zg_tls_read_start(zg_tls_conn_t *c, uv_alloc_cb alloc_cb,
                      uv_read_cb read_cb) {
  if (!c->established || c->freed)
    return UV_EINVAL;
  c->alloc_cb = alloc_cb;
  c->read_cb = read_cb;
  if (c->reading)
    return 0;
  c->reading = 1;
  if (c->delivering)
    return 0; /* the loop in deliver() goes on */
  /* Records read before the caller stopped, or the end already seen. */
  if (SSL_has_pending(c->ssl) || BIO_ctrl_pending(c->rbio) > 0 || c->sock_eof)
    uv_idle_start(&c->idle, on_idle);
  if (!c->done)
    sock_read(c, 1);
  return 0;
}

int zg_tls_read_stop(zg_tls_conn_t *c) {
  c->reading = 0;
  uv_idle_stop(&c->idle);
  if (!c->handshaking)
    sock_read(c, 0);
  return 0;
}

int zg_tls_write(zg_tls_conn_t *c, uv_write_t *req, const uv_buf_t bufs[],
                 unsigned nbufs, uv_write_cb cb) {
  if (!c->established || c->freed)
    return UV_ENOTCONN;
  ERR_clear_error();
  for (unsigned i = 0; i < nbufs; i++) {
    /* A memory BIO takes every record: SSL_write writes it all. */
    if (bufs[i].len > 0 &&
        SSL_write(c->ssl, bufs[i].base,
                  bufs[i].len > INT32_MAX ? INT32_MAX : (int)bufs[i].len) <=
            0) {
      ERR_clear_error();
      return UV_EPROTO;
    }
  }
  return flush(c, req, cb);
}

int zg_tls_shutdown(zg_tls_conn_t *c, uv_shutdown_t *req, uv_shutdown_cb cb) {
  int rc;
  if (c->established && !c->freed) {
    ERR_clear_error();
    (void)SSL_shutdown(c->ssl); /* our close_notify; theirs is not awaited */
    ERR_clear_error();
    if ((rc = flush(c, NULL, NULL)) != 0)
      return rc;
  }
  return uv_shutdown(req, (uv_stream_t *)c->tcp, cb);
}

void zg_tls_conn_free(zg_tls_conn_t *c) {
  if (!c || c->freed)
    return;
  sock_read(c, 0);
  c->freed = 1;
  c->reading = 0;
  c->tcp->data = c->user_data;
  /* OpenSSL marks the session of a connection freed without a
   * close_notify not resumable; an instance's connection ends by a close
   * or an error that says nothing against its session (as nginx does). */
  if (c->cli && c->established)
    SSL_set_shutdown(c->ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(c->ssl); /* the flushes in flight hold copies */
  c->ssl = NULL;
  uv_close((uv_handle_t *)&c->idle, on_idle_closed);
}

int zg_tls_conn_client_subject(const zg_tls_conn_t *c, const char *client_ca,
                               zg_tls_verify_t verify, char *subject,
                               size_t len) {
  const site_t *site;
  int same_ca;
  X509 *peer;
  subject[0] = '\0';
  if (!client_ca || !c->srv)
    return 0;
  site = &c->srv->sites[c->site];
  same_ca = client_ca && site->client_ca && !strcmp(client_ca, site->client_ca);
  peer = same_ca && c->ssl ? SSL_get0_peer_certificate(c->ssl) : NULL;
  if (peer) {
    /* Only a certificate verified under this site's checks: a session
     * resumed from another site's handshake does not count. */
    SSL_SESSION *sess = SSL_get0_session(c->ssl);
    unsigned id_len = 0;
    const unsigned char *id =
        sess ? SSL_SESSION_get0_id_context(sess, &id_len) : NULL;
    if (!id || id_len != site->sid_len || memcmp(id, site->sid, id_len))
      peer = NULL;
  }
  if (peer && SSL_get_verify_result(c->ssl) == X509_V_OK) {
    BIO *b = BIO_new(BIO_s_mem());
    int n;
    /* RFC 2253 with every byte outside printable ASCII escaped: the value
     * goes into a header as it is. */
    /* A subject that does not fit is not sent cut short: none. */
    if (b &&
        X509_NAME_print_ex(b, X509_get_subject_name(peer), 0,
                           XN_FLAG_RFC2253) >= 0 &&
        BIO_pending(b) < (int)len) {
      n = BIO_read(b, subject, (int)(len - 1));
      subject[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
    /* Anything a header cannot carry: no subject rather than a broken head. */
    for (char *p = subject; *p; p++)
      if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f) {
        subject[0] = '\0';
        break;
      }
    if (subject[0])
      return 0;
  }
  return verify == ZG_TLS_VERIFY_REQUIRED ? -1 : 0;
}

/* ---- TLS to instances ---------------------------------------------------- */

static void session_forget(zg_tls_client_t *cli, const char *key) {
  if (!cli || !key)
    return;
  for (size_t i = 0; i < cli->n_cache; i++)
    if (!strcmp(cli->cache[i].key, key)) {
      free(cli->cache[i].key);
      SSL_SESSION_free(cli->cache[i].sess);
      cli->cache[i] = cli->cache[--cli->n_cache];
      cli->next_evict = 0;
      return;
    }
}

/* A new session from an instance (TLS 1.3: a ticket after the handshake,
 * read with the first response): kept for the next connection to the
 * same instance and name. 1: we hold the reference. */
static int on_new_session(SSL *ssl, SSL_SESSION *sess) {
  zg_tls_conn_t *c = SSL_get_app_data(ssl);
  zg_tls_client_t *cli;
  cached_session_t *e = NULL;
  char *key;
  if (!c || !(cli = c->cli) || !c->cache_key)
    return 0;
  for (size_t i = 0; i < cli->n_cache && !e; i++)
    if (!strcmp(cli->cache[i].key, c->cache_key))
      e = &cli->cache[i];
  if (e) {
    SSL_SESSION_free(e->sess);
    e->sess = sess;
    return 1;
  }
  if (!(key = strdup(c->cache_key)))
    return 0;
  if (cli->n_cache < SESSION_CACHE) {
    e = &cli->cache[cli->n_cache++];
  } else {
    /* Full: one goes, in turn. */
    e = &cli->cache[cli->next_evict];
    cli->next_evict = (cli->next_evict + 1) % SESSION_CACHE;
    free(e->key);
    SSL_SESSION_free(e->sess);
  }
  e->key = key;
  e->sess = sess;
  return 1;
}

int zg_tls_client_new(const zg_service_conf_t *sc, char *err, size_t len,
                      zg_tls_client_t **out) {
  zg_tls_client_t *cli;
  const char *ca = sc ? sc->upstream_ca : NULL;
  const char *cert = sc ? sc->upstream_cert : NULL;
  const char *key = sc ? sc->upstream_key : NULL;
  char why[256];
  *out = NULL;
  ERR_clear_error();
  if (!(cli = calloc(1, sizeof(*cli)))) {
    snprintf(err, len, "out of memory");
    return UV_ENOMEM;
  }
  cli->refs = 1;
  cli->verify = !(sc && sc->upstream_noverify);
  if (!(cli->ctx = SSL_CTX_new(TLS_client_method()))) {
    snprintf(err, len, "cannot create a TLS context: %s",
             ssl_reason(why, sizeof(why)));
    goto fail;
  }
  SSL_CTX_set_min_proto_version(cli->ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(cli->ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(cli->ctx,
                      SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(cli->ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_default_passwd_cb(cli->ctx, no_password);
  if (ca) {
    if (readable(ca, err, len, "upstream_ca") != 0)
      goto fail;
    if (!SSL_CTX_load_verify_locations(cli->ctx, ca, NULL)) {
      snprintf(err, len, "upstream_ca %s: no usable PEM certificate (%s)", ca,
               ssl_reason(why, sizeof(why)));
      goto fail;
    }
  } else if (cli->verify && !SSL_CTX_set_default_verify_paths(cli->ctx)) {
    snprintf(err, len, "cannot load the system's CA certificates (%s)",
             ssl_reason(why, sizeof(why)));
    goto fail;
  }
  if (cert && key) {
    if (readable(cert, err, len, "upstream_cert") != 0)
      goto fail;
    if (!SSL_CTX_use_certificate_chain_file(cli->ctx, cert)) {
      snprintf(err, len, "upstream_cert %s: not a usable PEM certificate (%s)",
               cert, ssl_reason(why, sizeof(why)));
      goto fail;
    }
    if (readable(key, err, len, "upstream_key") != 0)
      goto fail;
    if (!SSL_CTX_use_PrivateKey_file(cli->ctx, key, SSL_FILETYPE_PEM) ||
        !SSL_CTX_check_private_key(cli->ctx)) {
      snprintf(err, len,
               "upstream_key %s: not a usable PEM private key, or encrypted, "
               "or not the key of %s (%s)",
               key, cert, ssl_reason(why, sizeof(why)));
      goto fail;
    }
  }
  SSL_CTX_set_verify(cli->ctx, cli->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                     NULL);
  /* Sessions are kept by us, per instance and name, not by OpenSSL's
   * internal cache (a client's is keyed by nothing useful). */
  SSL_CTX_set_session_cache_mode(
      cli->ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(cli->ctx, on_new_session);
  *out = cli;
  return 0;
fail:
  SSL_CTX_free(cli->ctx);
  free(cli);
  ERR_clear_error();
  return ZG_ECONFIG;
}

int zg_tls_check_upstream(const zg_service_conf_t *sc, char *err, size_t len,
                          const char **key) {
  zg_tls_client_t *cli;
  int rc = zg_tls_client_new(sc, err, len, &cli);
  /* The message names its key first. */
  *key = !strncmp(err, "upstream_cert", 13)  ? "upstream_cert"
         : !strncmp(err, "upstream_key", 12) ? "upstream_key"
                                             : "upstream_ca";
  if (rc != 0)
    return rc;
  zg_tls_client_unref(cli);
  return 0;
}

zg_tls_client_t *zg_tls_client_ref(zg_tls_client_t *cli) {
  cli->refs++;
  return cli;
}

void zg_tls_client_unref(zg_tls_client_t *cli) {
  if (!cli || --cli->refs > 0)
    return;
  for (size_t i = 0; i < cli->n_cache; i++) {
    free(cli->cache[i].key);
    SSL_SESSION_free(cli->cache[i].sess);
  }
  SSL_CTX_free(cli->ctx);
  free(cli);
}

size_t zg_tls_client_sessions(const zg_tls_client_t *cli) {
  return cli->n_cache;
}

zg_tls_conn_t *zg_tls_conn_client(zg_tls_client_t *cli, uv_tcp_t *tcp,
                                  const char *name, bool name_is_ip,
                                  const char *addr, int alpn) {
  static const unsigned char h1[] = "\x08http/1.1";
  static const unsigned char h2h1[] = "\x02h2\x08http/1.1";
  static const unsigned char h2[] = "\x02h2";
  zg_tls_conn_t *c = calloc(1, sizeof(*c));
  size_t klen = strlen(name) + strlen(addr) + 2;
  bool attached = false;
  if (!c)
    return NULL;
  if (!(c->ssl = SSL_new(cli->ctx)) || !(c->rbio = BIO_new(BIO_s_mem())) ||
      !(c->wbio = BIO_new(BIO_s_mem())) || !(c->name = strdup(name)) ||
      !(c->cache_key = malloc(klen)))
    goto fail;
  snprintf(c->cache_key, klen, "%s/%s", name, addr);
  BIO_set_mem_eof_return(c->rbio, -1);
  SSL_set_bio(c->ssl, c->rbio, c->wbio); /* the SSL's from here */
  attached = true;
  SSL_set_connect_state(c->ssl);
  SSL_set_app_data(c->ssl, c);
  if (name_is_ip) {
    /* An IP is never SNI (RFC 6066 §3); it must be among the
     * certificate's IP addresses. */
    if (cli->verify &&
        !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), name))
      goto fail;
  } else {
    /* c->name, not `name`: the macro casts const away. */
    if (!SSL_set_tlsext_host_name(c->ssl, c->name))
      goto fail;
    SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (cli->verify && !SSL_set1_host(c->ssl, name))
      goto fail;
  }
  if ((alpn == ZG_ALPN_HTTP1 &&
       SSL_set_alpn_protos(c->ssl, h1, sizeof(h1) - 1) != 0) ||
      (alpn == ZG_ALPN_H2_HTTP1 &&
       SSL_set_alpn_protos(c->ssl, h2h1, sizeof(h2h1) - 1) != 0) ||
      (alpn == ZG_ALPN_H2 &&
       SSL_set_alpn_protos(c->ssl, h2, sizeof(h2) - 1) != 0))
    goto fail;
  for (size_t i = 0; i < cli->n_cache; i++)
    if (!strcmp(cli->cache[i].key, c->cache_key)) {
      SSL_set_session(c->ssl, cli->cache[i].sess);
      break;
    }
  c->cli = zg_tls_client_ref(cli);
  c->tcp = tcp;
  c->user_data = tcp->data;
  tcp->data = c;
  uv_idle_init(tcp->loop, &c->idle);
  c->idle.data = c;
  snprintf(c->peer, sizeof(c->peer), "%s", addr);
  return c;
fail:
  if (!attached) {
    BIO_free(c->rbio);
    BIO_free(c->wbio);
  }
  SSL_free(c->ssl);
  free(c->name);
  free(c->cache_key);
  free(c);
  ERR_clear_error();
  return NULL;
}

const char *zg_tls_conn_error(const zg_tls_conn_t *c) {
  return c->err;
}

bool zg_tls_conn_resumed(const zg_tls_conn_t *c) {
  return c->ssl && SSL_session_reused(c->ssl);
}

bool zg_tls_conn_reusable(const zg_tls_conn_t *c, const zg_tls_client_t *cli,
                          const char *name) {
  if (!c || !cli)
    return !c && !cli;
  return c->cli == cli && c->name && !strcmp(c->name, name) && !c->done &&
         !c->freed;
}

const zg_config_checks_t *zg_tls_config_checks(void) {
  static const zg_config_checks_t checks = {zg_tls_check_service,
                                            zg_tls_check_upstream};
  return &checks;
}
