/* HTTP/1.x message heads: the checks llhttp 8.1 does not make (see
 * docs/platform.md, llhttp), target and path rewriting, and re-serialisation of
 * request and response heads for the other side. Pure code: no I/O.
 *
 * A head is parsed by llhttp (strict mode) from one contiguous buffer;
 * zg_http_head_t records where its parts are in that buffer. */
#ifndef ZKGATE_HTTP_MSG_H
#define ZKGATE_HTTP_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZG_HTTP_MAX_HEADERS 100
#define ZG_HTTP_MAX_URL 8192

typedef struct {
  uint32_t name_off, name_len;
  uint32_t value_off, value_len;
} zg_hdr_t;

typedef struct {
  const char *buf; /* the bytes the offsets below point into */
  bool is_request;
  int method; /* llhttp_method_t, requests */
  int status; /* responses */
  int major, minor;
  uint32_t url_off, url_len;       /* requests */
  uint32_t reason_off, reason_len; /* responses */
  zg_hdr_t hdr[ZG_HTTP_MAX_HEADERS];
  size_t n_hdr;
  /* Framing, from llhttp's flags (F_CONTENT_LENGTH, F_CHUNKED), never from
   * the value: llhttp takes any Content-Length up to 2^64 - 1. */
  bool has_length;         /* a Content-Length was given */
  uint64_t content_length; /* its value (0 when none) */
  bool chunked;            /* Transfer-Encoding ending in chunked */
} zg_http_head_t;

/* Checks llhttp 8.1 lets through, on the raw head bytes (request line or
 * status line, headers, final CRLF): obs-fold (a line starting with SP or
 * HT, RFC 9112 §5.2), a CR not followed by LF, an empty header name, NUL,
 * other control bytes but HT, and DEL. Bytes after the empty line that ends
 * the head are not looked at. Returns 0, or -1 with *reason set to a static
 * string. */
int zg_http_prescan(const char *buf, size_t len, const char **reason);

/* Recording a head from llhttp's callbacks, which may hand a name or a
 * value over in several pieces. `value_open` says whether the last piece
 * was a value (a new name then starts a new field). Offsets are taken
 * relative to `base`, the buffer h->buf will point to. The field returns
 * -1 when ZG_HTTP_MAX_HEADERS are already recorded. */
int zg_http_head_field(zg_http_head_t *h, unsigned *value_open,
                       const char *base, const char *at, size_t len);
void zg_http_head_value(zg_http_head_t *h, unsigned *value_open,
                        const char *base, const char *at, size_t len);
/* llhttp's parser and settings (llhttp_t, llhttp_settings_t), declared
 * here rather than included: the head model and its users (the exchange,
 * an HTTP/2 codec) do not depend on llhttp; the HTTP/1.1 codecs include
 * <llhttp.h> themselves. */
struct llhttp__internal_s;
struct llhttp_settings_s;

/* Version and framing from the parser at the end of the head. */
void zg_http_head_framing(zg_http_head_t *h,
                          const struct llhttp__internal_s *parser);

/* Trailer fields of a chunked message (RFC 9112 §7.1.2), kept for the
 * next hop: names and values are copied into `buf` (llhttp may hand them
 * over in pieces, across reads whose buffers are reused), offsets in `f`
 * count from it. Bounded with the chunk extensions by ZG_HTTP_EXTRA_MAX
 * bytes and ZG_HTTP_MAX_TRAILERS fields. */
#define ZG_HTTP_MAX_TRAILERS 32
typedef struct {
  /* One block malloc'ed at the first trailer field: ZG_HTTP_MAX_TRAILERS
   * fields, then ZG_HTTP_EXTRA_MAX bytes; NULL until then, so that a
   * message without trailers (and an idle connection) costs two pointers */
  zg_hdr_t *f;
  char *buf;
  uint32_t len, n;
} zg_http_trailers_t;

/* Empties `t` (its buffer freed: idle connections hold none). */
void zg_http_trailers_clear(zg_http_trailers_t *t);
/* Whether a trailer field named so may go on to the next hop: not one
 * that frames, routes, authenticates, or says how to process the content
 * (RFC 9110 §6.5.1), nor one that stops at this hop (§7.6.1), nor one the
 * gateway vouches for in heads (X-Forwarded-*, X-Client-Cert-Subject,
 * Forwarded, X-Real-IP; '_' taken for '-'). */
bool zg_http_trailer_forwardable(const char *name, size_t len);

/* Reading a request with llhttp: the callbacks that record the head into
 * `head` (offsets from `base`), bound trailers and chunk extensions
 * (llhttp reads them with no limit), record the trailers into `trailers`
 * (dropped when NULL; chunk extensions always are), and pause where the
 * gateway relies on it: at the end of a head with a body, so that the body
 * waits in the buffer while the head is checked and routed. The proxy and
 * the fuzz target both parse through these. */
typedef struct {
  zg_http_head_t *head;         /* recorded into while the head is read */
  const char *base;             /* the buffer head offsets count from */
  unsigned value_open : 1;      /* the last header callback was a value */
  unsigned head_seen : 1;       /* the head is complete: fields are trailers */
  unsigned too_many : 1;        /* more than ZG_HTTP_MAX_HEADERS fields (431) */
  unsigned extra_bytes;         /* trailer and chunk extension bytes */
  zg_http_trailers_t *trailers; /* the owner's, or NULL */
} zg_http_reader_t;

#define ZG_HTTP_EXTRA_MAX 16384 /* trailer and chunk extension bytes */

/* Settings for a request parser whose `data` points to a zg_http_reader_t
 * (the first member of the owner's struct, so that on_body and
 * on_message_complete, the owner's, get the owner from the same pointer).
 * */
void zg_http_request_settings(
    struct llhttp_settings_s *st,
    int (*on_body)(struct llhttp__internal_s *, const char *, size_t),
    int (*on_message_complete)(struct llhttp__internal_s *));

/* Settings for a response parser whose `data` points to a
 * zg_http_reader_t (first member of the owner's struct): the status
 * reason, header fields and values recorded until the owner sets
 * head_seen in its on_headers_complete (a final response; an interim one
 * keeps reading heads), trailers and chunk extensions bounded. */
void zg_http_response_settings(
    struct llhttp_settings_s *st,
    int (*on_headers_complete)(struct llhttp__internal_s *),
    int (*on_body)(struct llhttp__internal_s *, const char *, size_t),
    int (*on_message_complete)(struct llhttp__internal_s *));

/* Ready for the next message (the head pointer and base are the owner's to
 * set before each llhttp_execute). */
void zg_http_reader_reset(zg_http_reader_t *r);

/* The length of the head at the start of `buf`: up to and including the
 * first empty line, after any empty lines before the start line (which
 * llhttp skips, RFC 9112 §2.2); `len` when there is no empty line yet. */
size_t zg_http_head_end(const char *buf, size_t len);

/* The largest Content-Length the gateway frames a message with: what an
 * int64_t holds, as nginx's off_t (a larger one is refused, never taken
 * for "no length"). */
#define ZG_HTTP_MAX_CONTENT_LENGTH ((uint64_t)INT64_MAX)

/* Request checks after parsing: more than one Host, no Host in HTTP/1.1,
 * a Host value that is not host[:port] (empty only with an absolute-form
 * target; RFC 9112 §3.2), a Content-Length above
 * ZG_HTTP_MAX_CONTENT_LENGTH (400), a Transfer-Encoding with any coding
 * but a single final chunked (501, as nginx: the gateway would otherwise
 * pass on a body whose coding it drops), Transfer-Encoding in HTTP/1.0, a
 * target longer
 * than ZG_HTTP_MAX_URL, a target that is neither origin-form, absolute-form
 * (http/https) nor "*" for OPTIONS, CONNECT, a version other than 1.0 and
 * 1.1 (llhttp 8.1 takes 0.9 and 2.0). Returns 0 or the status to answer
 * (400, 405, 414, 501, 505) with *reason set to a static string. */
int zg_http_check_request(const zg_http_head_t *h, const char **reason);

/* Response checks: a status code that is not three digits (below 100),
 * more than one Content-Length, one above
 * ZG_HTTP_MAX_CONTENT_LENGTH, a Content-Length and a Transfer-Encoding
 * together, Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1), a
 * Transfer-Encoding list that is empty or has an empty or bad token, a
 * version other than 1.0 and 1.1. Returns 0 or -1 with *reason. */
int zg_http_check_response(const zg_http_head_t *h, const char **reason);

/* The transfer codings of a message other than a final "chunked", joined
 * with ", " into `out` (NUL-terminated): "gzip" for "gzip, chunked" or for
 * two Transfer-Encoding fields "gzip" and "chunked"; "" when there is no
 * Transfer-Encoding or only "chunked". Returns the length written, or -1
 * when a list element is not a token (with its parameters) or the result
 * does not fit in `cap`. RFC 9112 §6.1. */
int zg_http_transfer_codings(const zg_http_head_t *h, char *out, size_t cap);

/* The first header named `name` (case-insensitive), or NULL. */
const zg_hdr_t *zg_http_find(const zg_http_head_t *h, const char *name);

/* 1 when a Connection header (any of them) lists `token`
 * (case-insensitive, comma-separated). */
int zg_http_connection_has(const zg_http_head_t *h, const char *token);

/* Whether the peer wants the connection kept after this message: HTTP/1.1
 * unless "close"; HTTP/1.0 only with "keep-alive". */
bool zg_http_keep_alive(const zg_http_head_t *h);

/* Splits a request target. origin-form "/p?q": path = "/p", query = "?q"
 * (with its '?', or len 0). absolute-form "http://host[:port]/p?q" (or
 * https, any case): also authority = "host[:port]" (len 0 for the other
 * forms); an absolute-form without a path gives path "/" (a static string).
 * "*": path "*". Returns 0, or -1 for anything else: authority-form, other
 * schemes, userinfo or an invalid authority, a '#', whitespace or control
 * bytes. Pointers point into `url`; any output pair may be NULL. */
int zg_http_split_target(const char *url, size_t len, const char **path,
                         size_t *path_len, const char **query,
                         size_t *query_len, const char **authority,
                         size_t *authority_len);

/* The path with its dot segments removed (RFC 3986 §5.2.4), so that
 * routing, strip_prefix and the base path all see the path the instance
 * will resolve: "/api/../admin" is "/admin", and never reaches a service
 * under "/api/". A segment is a dot segment when it is "." or "..", each
 * dot written as '.' or "%2e"/"%2E" (RFC 3986 §2.3: the same character);
 * other bytes, empty segments and %-escapes are kept as received. Writes
 * at most `len` bytes to `out` (no NUL) and returns the length written,
 * or -1 (answer 400) when the path would climb above the root ("/.."),
 * or when a segment that is not a dot segment holds ".." between encoded
 * or alternative separators ("..%2f", "%2e%2e%5c", "..\\", "..;x"):
 * instances that decode %2F, take '\\' for '/' or drop ";parameters"
 * before resolving dots would climb where the gateway did not see it.
 * A path that does not start with '/' ("*") is copied as it is. */
int zg_http_normalize_path(const char *path, size_t len, char *out);

/* The path to send upstream: `path` without `prefix` when strip_prefix and
 * the path is under it (keeping a leading '/': "/api/x" minus "/api/" is
 * "/x", "/api" minus "/api/" is "/"; a path not under it is kept), then
 * `base_path` (NULL or "" for none; starts with '/', no trailing slash) in
 * front ("/" under base "/b" is "/b/"), then `query` appended untouched.
 * "*" is kept as it is, or becomes the base path when there is one. Returns
 * the length written (NUL-terminated), or -1 when it does not fit in `cap`.
 */
int zg_http_rewrite_path(char *out, size_t cap, const char *base_path,
                         const char *path, size_t path_len, const char *prefix,
                         bool strip_prefix, const char *query,
                         size_t query_len);

typedef enum {
  ZG_FRAMING_NONE = 0, /* no body (or read until close, responses) */
  ZG_FRAMING_LENGTH,   /* Content-Length: body_length */
  ZG_FRAMING_CHUNKED,  /* Transfer-Encoding: chunked */
} zg_framing_t;

typedef struct {
  const char *target;      /* the rewritten target (zg_http_rewrite_path);
                              NULL: the client's as received */
  const char *host;        /* Host to send; NULL: the authority of an
                              absolute-form target, else the client's */
  const char *client_addr; /* appended to X-Forwarded-For; NULL: none */
  const char *proto;       /* X-Forwarded-Proto: "http" or "https"; NULL:
                              none */
  const char *fwd_host;    /* X-Forwarded-Host (the client's Host); NULL:
                              none */
  /* X-Client-Cert-Subject: the verified client certificate's subject;
   * NULL: none */
  const char *client_subject;
  zg_framing_t framing;
  uint64_t body_length; /* with ZG_FRAMING_LENGTH */
  bool close;           /* send Connection: close */
  const char *upgrade;  /* non-NULL: ask for this protocol switch
                           (Connection: upgrade, Upgrade: value) */
} zg_http_req_out_t;

/* The framing of the request sent upstream, from the client's (checked by
 * zg_http_check_request): chunked is re-chunked, a length kept. Sets
 * o->framing and o->body_length; returns whether a body follows. */
bool zg_http_request_framing(const zg_http_head_t *h, zg_http_req_out_t *o);

/* Writes the request head for the instance: "METHOD target HTTP/1.1",
 * Host first, then the client's headers minus the hop-by-hop ones (RFC
 * 9110 §7.6.1: Connection, Proxy-Connection, Keep-Alive, TE, Trailer,
 * Transfer-Encoding, Upgrade, and every header named in Connection),
 * minus Content-Length, Host, X-Forwarded-Proto/-Host and
 * X-Client-Cert-Subject (only the gateway may say what it verified); then
 * one X-Forwarded-For (the client's values, joined with ", ", then
 * client_addr), X-Forwarded-Proto, X-Forwarded-Host, X-Client-Cert-Subject
 * when client_subject is set, the framing header
 * (one), and Connection: close when asked. Header values are written
 * without surrounding whitespace. Returns the length written
 * (NUL-terminated), or -1 when it does not fit in `cap`, the method is not
 * an HTTP one, or a string in `o` has whitespace (target) or control bytes
 * (the others) that would break the head. */
int zg_http_write_request(char *out, size_t cap, const zg_http_head_t *h,
                          const zg_http_req_out_t *o);

typedef struct {
  zg_framing_t framing;
  uint64_t body_length;
  /* With ZG_FRAMING_CHUNKED: the instance's transfer codings to pass on
   * before the final chunked ("gzip"); NULL or "": none. */
  const char *codings;
  bool close;          /* Connection: close */
  bool keep_alive;     /* Connection: keep-alive (for HTTP/1.0 clients) */
  const char *upgrade; /* non-NULL (101 only): Connection: upgrade and
                          Upgrade: value */
} zg_http_resp_out_t;

/* Whether a response has no body whatever its head says: 1xx, 204, 304
 * and a response to HEAD (RFC 9112 §6.3; llhttp 8.1 would read one). */
bool zg_http_response_bodiless(int status, bool head_request);

/* The framing of a final (or 101) response for the client, from the
 * instance's response head `h` (checked by zg_http_check_response) and the
 * client's HTTP minor version: a length is kept (told for HEAD too),
 * anything else is chunked for an HTTP/1.1 client, with the instance's
 * codings other than chunked named first (written into `codings`, which
 * o->codings then points to), or read until close for an HTTP/1.0 one
 * (*until_close). Returns 0, or -1 with *reason when the response cannot
 * be passed on: codings too long for `codings_cap`, or codings an HTTP/1.0
 * client cannot be told of (RFC 9112 §6.1). */
int zg_http_response_framing(const zg_http_head_t *h, int client_minor,
                             bool head_request, zg_http_resp_out_t *o,
                             char *codings, size_t codings_cap,
                             bool *until_close, const char **reason);

/* Writes the response head for the client: "HTTP/1.1 status reason", the
 * instance's headers minus hop-by-hop ones and Content-Length, then the
 * framing header and the Connection header asked for. 1xx, 204 and 304
 * get no framing header whatever `framing` says. An empty received reason
 * becomes zg_http_reason(status). Returns the length written
 * (NUL-terminated), or -1 when it does not fit. */
int zg_http_write_response(char *out, size_t cap, const zg_http_head_t *h,
                           const zg_http_resp_out_t *o);

/* A complete small response the gateway makes itself: status line,
 * Content-Type: text/plain; charset=utf-8, Content-Length, Connection:
 * close when `close`, and `message` (NULL: the reason phrase) plus "\n" as
 * the body (no body for HEAD requests when `head_request`, but the same
 * Content-Length). Returns the length written (NUL-terminated) or -1. */
int zg_http_error_response(char *out, size_t cap, int status,
                           const char *message, bool close, bool head_request);

/* Methods, numbered as zg_http_head_t.method (llhttp's llhttp_method_t,
 * HTTP methods and PRI): the name ("GET", static), or NULL for a number
 * that is none; the number of a name (case-sensitive, RFC 9110 §9.1: an
 * HTTP/2 codec's :method), or -1 for a name that is none. */
const char *zg_http_method_name(int method);
int zg_http_method_from(const char *name, size_t len);
/* Whether a request with this method may be sent twice (idempotent, RFC
 * 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE). */
bool zg_http_method_idempotent(int method);

/* The reason phrase for a status code ("Bad Gateway"), or "Unknown". */
const char *zg_http_reason(int status);

#endif
