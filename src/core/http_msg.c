/* HTTP/1.x message heads between llhttp and the wire: the checks llhttp
 * 8.1 does not make (docs/platform.md, llhttp), request targets and their
 * rewriting, and the heads written to the other side. Owns nothing: every
 * function works on the caller's buffers, without allocation, I/O or state, so
 * the HTTP proxy can call it from any loop. */
#include "core/http_msg.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

/* For llhttp's enum constants only: nothing here calls into llhttp, so
 * this file links without it. */
#include <llhttp.h>

/* -------------------------------------------------------------- helpers */

static int lower(int c) {
  /* ASCII only: field names compare the same whatever the locale. */
  return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Names mostly arrive in the case they are looked up in ("Content-Length"
 * from nginx and curl alike): whole words are compared first, and bytes
 * are lowered only from the first word that differs, and only where they
 * differ. Same answer as lowering every byte; a third of the instructions
 * on the heads of the keep-alive benchmark. */
static bool ieq(const char *a, size_t a_len, const char *b, size_t b_len) {
  size_t i = 0;
  if (a_len != b_len)
    return false;
  for (; a_len - i >= 8; i += 8) {
    uint64_t x, y;
    memcpy(&x, a + i, 8);
    memcpy(&y, b + i, 8);
    if (x != y)
      break;
  }
  for (; i < a_len; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x != y && lower(x) != lower(y))
      return false;
  }
  return true;
}

static bool is_ows(char c) {
  return c == ' ' || c == '\t'; /* RFC 9110 §5.6.3 */
}

static void trim(const char **s, size_t *n) {
  while (*n > 0 && is_ows((*s)[0])) {
    (*s)++;
    (*n)--;
  }
  while (*n > 0 && is_ows((*s)[*n - 1]))
    (*n)--;
}

static const char *hdr_name(const zg_http_head_t *h, size_t i) {
  return h->buf + h->hdr[i].name_off;
}

static bool hdr_is_n(const zg_http_head_t *h, size_t i, const char *name,
                     size_t len) {
  return ieq(hdr_name(h, i), h->hdr[i].name_len, name, len);
}

/* Header names compared with a literal: its length is known at compile
 * time, and most names differ from it in length alone. */
#define hdr_is(h, i, lit) hdr_is_n((h), (i), "" lit, sizeof(lit) - 1)

/* As hdr_is, with '_' in the received name taken for '-': CGI, WSGI and
 * Rack servers map both spellings to one variable, so a header the
 * gateway vouches for must not pass in either. */
/* Whether a field name `a` (n bytes) is `name` (len bytes), ignoring
 * case and taking '_' for '-': a peer (or a CGI-style instance) may read
 * X_Forwarded_For as X-Forwarded-For, so fields the gateway vouches for
 * are matched in both spellings, in heads and in trailers. */
static bool name_is_alias(const char *a, size_t n, const char *name,
                          size_t len) {
  if (n != len)
    return false;
  for (size_t k = 0; k < n; k++) {
    char c = a[k] == '_' ? '-' : a[k];
    if ((c | 0x20) != (name[k] | 0x20))
      return false;
  }
  return true;
}

static bool hdr_is_alias_n(const zg_http_head_t *h, size_t i, const char *name,
                           size_t len) {
  return name_is_alias(hdr_name(h, i), h->hdr[i].name_len, name, len);
}

#define hdr_is_alias(h, i, lit)                                                \
  hdr_is_alias_n((h), (i), "" lit, sizeof(lit) - 1)

/* The value of header i without surrounding whitespace (llhttp keeps the
 * trailing whitespace in the value it reports). */
static void hdr_value(const zg_http_head_t *h, size_t i, const char **v,
                      size_t *n) {
  *v = h->buf + h->hdr[i].value_off;
  *n = h->hdr[i].value_len;
  trim(v, n);
}

/* The index of the first header named `name`, or n_hdr. */
static size_t hdr_index_n(const zg_http_head_t *h, const char *name,
                          size_t len) {
  size_t i = 0;

  while (i < h->n_hdr && !hdr_is_n(h, i, name, len))
    i++;
  return i;
}

static size_t hdr_count_n(const zg_http_head_t *h, const char *name,
                          size_t len) {
  size_t count = 0;

  for (size_t i = 0; i < h->n_hdr; i++)
    if (hdr_is_n(h, i, name, len))
      count++;
  return count;
}

#define hdr_index(h, lit) hdr_index_n((h), "" lit, sizeof(lit) - 1)
#define hdr_count(h, lit) hdr_count_n((h), "" lit, sizeof(lit) - 1)

/* Whether the comma-separated list v (RFC 9110 §5.6.1: elements may be
 * empty, OWS around commas) has `tok`, case-insensitively. */
static bool list_has(const char *v, size_t n, const char *tok, size_t tok_len) {
  size_t start = 0;

  for (size_t i = 0; i <= n; i++) {
    if (i == n || v[i] == ',') {
      const char *elem = v + start;
      size_t elem_len = i - start;

      trim(&elem, &elem_len);
      if (elem_len > 0 && ieq(elem, elem_len, tok, tok_len))
        return true;
      start = i + 1;
    }
  }
  return false;
}

/* Whether any Connection header lists `tok`. */
static bool connection_lists(const zg_http_head_t *h, const char *tok,
                             size_t tok_len) {
  for (size_t i = 0; i < h->n_hdr; i++) {
    const char *v;
    size_t n;

    if (!hdr_is(h, i, "Connection"))
      continue;
    hdr_value(h, i, &v, &n);
    if (list_has(v, n, tok, tok_len))
      return true;
  }
  return false;
}

/* Whether header i is one that stops at this hop by its name alone: RFC
 * 9110 §7.6.1 (Connection, Proxy-Connection, Keep-Alive, TE, Transfer-
 * Encoding, Upgrade), Trailer, which announces trailers this hop may not
 * forward, and Content-Length (the framing is written anew). Sorted by
 * length first: one comparison for most names. */
static bool is_hop_name(const zg_http_head_t *h, size_t i) {
  switch (h->hdr[i].name_len) {
  case 2:
    return hdr_is(h, i, "TE");
  case 7:
    return hdr_is(h, i, "Upgrade") || hdr_is(h, i, "Trailer");
  case 10:
    return hdr_is(h, i, "Connection") || hdr_is(h, i, "Keep-Alive");
  case 14:
    return hdr_is(h, i, "Content-Length");
  case 16:
    return hdr_is(h, i, "Proxy-Connection");
  case 17:
    return hdr_is(h, i, "Transfer-Encoding");
  default:
    return false;
  }
}

/* Marks in `listed` the headers whose name a Connection header lists
 * (RFC 9110 §7.6.1), going through each Connection value once: the same
 * answer as asking connection_lists() for every header, without going
 * through the values again for each. */
static void mark_connection_listed(const zg_http_head_t *h, bool *listed) {
  if (h->n_hdr > 0)
    memset(listed, 0, h->n_hdr * sizeof(*listed));
  for (size_t c = 0; c < h->n_hdr; c++) {
    const char *v, *end;
    size_t n;

    if (!hdr_is(h, c, "Connection"))
      continue;
    hdr_value(h, c, &v, &n);
    end = v + n;
    /* element by element, from comma to comma */
    for (;;) {
      const char *comma = memchr(v, ',', (size_t)(end - v));
      const char *elem = v;
      size_t elem_len = (size_t)((comma ? comma : end) - v);

      trim(&elem, &elem_len);
      for (size_t i = 0; elem_len > 0 && i < h->n_hdr; i++)
        if (h->hdr[i].name_len == elem_len && hdr_is_n(h, i, elem, elem_len))
          listed[i] = true;
      if (!comma)
        break;
      v = comma + 1;
    }
  }
}

/* Whether header i stops at this hop: by its name, or named in a
 * Connection header (`listed`, from mark_connection_listed). */
static bool is_hop_by_hop(const zg_http_head_t *h, size_t i,
                          const bool *listed) {
  return is_hop_name(h, i) || listed[i];
}

static bool version_is_1x(int major, int minor) {
  /* llhttp 8.1 accepts HTTP/0.9 and HTTP/2.0 request lines too. */
  return major == 1 && (minor == 0 || minor == 1);
}

/* RFC 3986 §2.3 unreserved and §2.2 sub-delims, plus '%' of pct-encoded:
 * the bytes of a reg-name. */
static bool is_regname_char(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || strchr("-._~!$&'()*+,;=%", c) != NULL;
}

/* Whether s is "uri-host [ ':' port ]" (RFC 9110 §7.2, RFC 3986 §3.2.2):
 * the value of Host and the authority of an http(s) URI. Not empty. */
static bool authority_ok(const char *s, size_t n) {
  size_t i = 0;

  if (n == 0)
    return false;
  if (s[0] == '[') {
    /* IP-literal: hex digits, ':' and '.' for IPv6, IPvFuture's
     * unreserved and sub-delims. */
    for (i = 1; i < n && s[i] != ']'; i++)
      if (!is_regname_char((unsigned char)s[i]) && s[i] != ':')
        return false;
    if (i == n || i == 1)
      return false;
    i++;
  } else {
    while (i < n && s[i] != ':' && is_regname_char((unsigned char)s[i]))
      i++;
    if (i == 0)
      return false;
  }
  if (i == n)
    return true;
  if (s[i] != ':' || n - i - 1 > 5)
    return false;
  for (i++; i < n; i++)
    if (s[i] < '0' || s[i] > '9')
      return false;
  return true;
}

/* ------------------------------------------------------------- checks */

/* Bytes the pre-scan must look at one by one: controls (CR, LF and HT
 * among them) and DEL. Eight bytes at a time: a word of printable bytes
 * and obs-text (>= 0x80) has none, and most of a head is such words. The
 * "has a byte less than n" test (n <= 128) and the "has a zero byte" test
 * on x ^ 0x7f.. are exact as to whether there is one; below the lowest
 * byte they flag, no byte is special. */
#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

static uint64_t special_bytes(uint64_t x) {
  uint64_t del = x ^ (ONES * 0x7f);
  return (((x - ONES * 0x20) & ~x) | ((del - ONES) & ~del)) & HIGHS;
}

/* The index of the first special byte at or after i, or len. With SSE2
 * (every x86-64), sixteen bytes at a time first: a byte is special when
 * min(byte, 0x1f) == byte (unsigned) or it is 0x7f. */
static size_t skip_plain(const char *buf, size_t i, size_t len) {
#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
  const __m128i ctl = _mm_set1_epi8(0x1f), del = _mm_set1_epi8(0x7f);
  while (len - i >= 16) {
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(buf + i));
    __m128i sp = _mm_or_si128(_mm_cmpeq_epi8(_mm_min_epu8(x, ctl), x),
                              _mm_cmpeq_epi8(x, del));
    unsigned m = (unsigned)_mm_movemask_epi8(sp);
    if (m != 0)
      return i + (size_t)__builtin_ctz(m);
    i += 16;
  }
#endif
  while (len - i >= 8) {
    uint64_t x, m;

    memcpy(&x, buf + i, 8);
    m = special_bytes(x);
    if (m != 0) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ &&    \
    (defined(__GNUC__) || defined(__clang__))
      return i + (size_t)__builtin_ctzll(m) / 8;
#else
      break;
#endif
    }
    i += 8;
  }
  for (; i < len; i++) {
    unsigned char c = (unsigned char)buf[i];

    if (c < 0x20 || c == 0x7f)
      break;
  }
  return i;
}

int zg_http_prescan(const char *buf, size_t len, const char **reason) {
  bool seen_line = false;
  size_t i = 0;

  while (i < len) {
    size_t start = i, end;

    for (;;) {
      unsigned char c;

      i = skip_plain(buf, i, len);
      if (i == len || buf[i] == '\n')
        break;
      c = (unsigned char)buf[i];
      if (c == '\r') {
        /* llhttp strict takes bare CR in some places only
         * (CVE-2023-30589 was one of them): none, anywhere. */
        if (i + 1 == len || buf[i + 1] != '\n') {
          *reason = "bare CR in head";
          return -1;
        }
        i++; /* the line ends at this LF */
        break;
      } else if (c == '\0') {
        *reason = "NUL in head";
        return -1;
      } else if (c != '\t') {
        *reason = "control character in head";
        return -1;
      }
      i++;
    }
    end = i > start && buf[i - 1] == '\r' ? i - 1 : i;
    if (i < len)
      i++; /* the LF */
    if (end == start) {
      /* The empty line ends the head; bytes after it are the body's.
       * Empty lines before the request line are allowed (RFC 9112 §2.2). */
      if (seen_line)
        break;
      continue;
    }
    /* obs-fold, RFC 9112 §5.2: a line starting with whitespace continues
     * the previous one, which llhttp 8.1 accepts and a peer may read as a
     * header of its own (CVE-2024-27982 class). RFC 9112 §2.2: whitespace
     * between the start line and the first header, the same. */
    if (start > 0 && is_ows(buf[start])) {
      *reason = "obs-fold in head";
      return -1;
    }
    if (seen_line && buf[start] == ':') {
      *reason = "empty header name";
      return -1;
    }
    seen_line = true;
  }
  return 0;
}

int zg_http_check_request(const zg_http_head_t *h, const char **reason) {
  const char *url = h->buf + h->url_off;
  const char *path, *query, *authority;
  size_t path_len, query_len, authority_len, n_host;

  if (!version_is_1x(h->major, h->minor)) {
    *reason = "HTTP version not supported";
    return 505;
  }
  /* A gateway to named services is no tunnel (RFC 9110 §9.3.6). */
  if (h->method == HTTP_CONNECT) {
    *reason = "CONNECT not allowed";
    return 405;
  }
  if (h->url_len > ZG_HTTP_MAX_URL) {
    *reason = "request target too long";
    return 414;
  }
  if (zg_http_split_target(url, h->url_len, &path, &path_len, &query,
                           &query_len, &authority, &authority_len) != 0) {
    *reason = "bad request target";
    return 400;
  }
  /* RFC 9112 §3.2.4: "*" only for a server-wide OPTIONS. */
  if (path_len == 1 && path[0] == '*' && h->method != HTTP_OPTIONS) {
    *reason = "asterisk target without OPTIONS";
    return 400;
  }
  /* RFC 9112 §3.2: 400 for more than one Host, none in HTTP/1.1, or an
   * invalid value. An empty value only goes with a target that carries its
   * own authority (absolute-form), which then wins over Host. */
  n_host = hdr_count(h, "Host");
  if (n_host > 1) {
    *reason = "more than one Host";
    return 400;
  }
  if (n_host == 0 && h->minor >= 1) {
    *reason = "no Host in HTTP/1.1";
    return 400;
  }
  if (n_host == 1) {
    const char *v;
    size_t n;

    hdr_value(h, hdr_index(h, "Host"), &v, &n);
    if (n == 0 ? authority_len == 0 : !authority_ok(v, n)) {
      *reason = "invalid Host";
      return 400;
    }
  }
  /* llhttp takes any length up to 2^64 - 1; one that no signed size
   * holds is refused rather than framed (RFC 9112 §6.3: an invalid
   * Content-Length is unrecoverable). */
  if (h->has_length && h->content_length > ZG_HTTP_MAX_CONTENT_LENGTH) {
    *reason = "Content-Length too large";
    return 400;
  }
  /* RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 makes the framing
   * faulty; a request smuggled this way is not forwarded. */
  if (hdr_count(h, "Transfer-Encoding") > 0) {
    char codings[8];

    if (h->minor == 0) {
      *reason = "Transfer-Encoding in HTTP/1.0";
      return 400;
    }
    /* The body is re-chunked upstream: a coding below chunked would be
     * passed on unlabelled. RFC 9112 §6.1 lets a server answer 501 to a
     * coding it does not understand, as nginx does. */
    if (zg_http_transfer_codings(h, codings, sizeof(codings)) != 0) {
      *reason = "transfer coding not implemented";
      return 501;
    }
  }
  return 0;
}

int zg_http_check_response(const zg_http_head_t *h, const char **reason) {
  size_t n_cl = hdr_count(h, "Content-Length");
  size_t n_te = hdr_count(h, "Transfer-Encoding");

  if (!version_is_1x(h->major, h->minor)) {
    *reason = "HTTP version not supported";
    return -1;
  }
  /* RFC 9110 §15: three digits, 1xx to 9xx. llhttp 8.1 reads "10" or "0"
   * as a status: such a head is neither interim nor final, and an HTTP/2
   * client would be sent it as ":status: 10". */
  if (h->status < 100 || h->status > 999) {
    *reason = "bad status code";
    return -1;
  }
  /* RFC 9112 §6.3: either would let the instance and the client read
   * different bodies. */
  if (n_cl > 1) {
    *reason = "more than one Content-Length";
    return -1;
  }
  if (n_cl > 0 && n_te > 0) {
    *reason = "Content-Length with Transfer-Encoding";
    return -1;
  }
  if (h->has_length && h->content_length > ZG_HTTP_MAX_CONTENT_LENGTH) {
    *reason = "Content-Length too large";
    return -1;
  }
  if (n_te > 0 && h->minor == 0) {
    *reason = "Transfer-Encoding in HTTP/1.0";
    return -1;
  }
  if (n_te > 0) {
    char codings[256];

    if (zg_http_transfer_codings(h, codings, sizeof(codings)) < 0) {
      *reason = "bad Transfer-Encoding";
      return -1;
    }
  }
  return 0;
}

/* RFC 9110 §5.6.2 tchar. */
static bool is_tchar(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || (c && strchr("!#$%&'*+-.^_`|~", c));
}

int zg_http_transfer_codings(const zg_http_head_t *h, char *out, size_t cap) {
  size_t len = 0;
  bool last_chunked = false;

  if (cap == 0)
    return -1;
  out[0] = '\0';
  for (size_t i = 0; i < h->n_hdr; i++) {
    const char *v;
    size_t n, start = 0;

    if (!hdr_is(h, i, "Transfer-Encoding"))
      continue;
    hdr_value(h, i, &v, &n);
    for (size_t k = 0; k <= n; k++) {
      const char *elem = v + start;
      size_t elem_len = k - start, tok = 0;

      if (k < n && v[k] != ',')
        continue;
      start = k + 1;
      trim(&elem, &elem_len);
      if (elem_len == 0)
        continue; /* RFC 9110 §5.6.1: empty list elements are ignored */
      while (tok < elem_len && is_tchar((unsigned char)elem[tok]))
        tok++;
      /* A coding is a token, then only OWS ";" parameters. */
      for (size_t q = tok; q < elem_len && elem[q] != ';'; q++)
        if (elem[q] != ' ' && elem[q] != '\t')
          return -1;
      if (tok == 0)
        return -1;
      /* chunked must be the last coding, applied once (RFC 9112 §6.1);
       * llhttp refuses it elsewhere in a request but takes it in a
       * response, as a body read until close. */
      if (last_chunked)
        return -1;
      last_chunked = ieq(elem, elem_len, "chunked", 7);
      if (last_chunked)
        continue;
      if (len + (len ? 2 : 0) + elem_len >= cap)
        return -1;
      if (len) {
        memcpy(out + len, ", ", 2);
        len += 2;
      }
      memcpy(out + len, elem, elem_len);
      len += elem_len;
    }
  }
  out[len] = '\0';
  return (int)len;
}

const zg_hdr_t *zg_http_find(const zg_http_head_t *h, const char *name) {
  size_t i = hdr_index_n(h, name, strlen(name));

  return i < h->n_hdr ? &h->hdr[i] : NULL;
}

int zg_http_connection_has(const zg_http_head_t *h, const char *token) {
  return connection_lists(h, token, strlen(token)) ? 1 : 0;
}

bool zg_http_keep_alive(const zg_http_head_t *h) {
  if (h->major != 1)
    return false;
  if (connection_lists(h, "close", 5))
    return false;
  return h->minor >= 1 || connection_lists(h, "keep-alive", 10);
}

/* ------------------------------------------------------------ targets */

static bool has_prefix_nocase(const char *s, size_t n, const char *prefix) {
  size_t len = strlen(prefix);

  return n >= len && ieq(s, len, prefix, len);
}

int zg_http_split_target(const char *url, size_t len, const char **path,
                         size_t *path_len, const char **query,
                         size_t *query_len, const char **authority,
                         size_t *authority_len) {
  const char *auth = url;
  size_t auth_len = 0, i = 0, p;

  if (len == 0)
    return -1;
  /* No whitespace, controls, or fragment (RFC 9112 §3.2: the target has
   * none); llhttp 8.1 lets '#' through. */
  for (size_t k = 0; k < len; k++) {
    unsigned char c = (unsigned char)url[k];

    if (c <= 0x20 || c == 0x7f || c == '#')
      return -1;
  }
  if (len == 1 && url[0] == '*') {
    /* asterisk-form, RFC 9112 §3.2.4 */
    p = 0;
    i = 1;
  } else if (url[0] == '/') {
    /* origin-form, RFC 9112 §3.2.1 */
    p = 0;
    while (i < len && url[i] != '?')
      i++;
  } else {
    /* absolute-form, RFC 9112 §3.2.2: only what a gateway to http
     * services can forward. */
    if (has_prefix_nocase(url, len, "http://"))
      i = 7;
    else if (has_prefix_nocase(url, len, "https://"))
      i = 8;
    else
      return -1;
    auth = url + i;
    while (i < len && url[i] != '/' && url[i] != '?')
      i++;
    auth_len = (size_t)(url + i - auth);
    /* RFC 9110 §4.2.4: userinfo in an http(s) URI is an error, and it is
     * how a link hides its real host. */
    if (!authority_ok(auth, auth_len))
      return -1;
    p = i;
    while (i < len && url[i] != '?')
      i++;
  }
  if (path != NULL) {
    /* "http://h" and "http://h?q" mean path "/" (RFC 9110 §4.2.3). */
    *path = i > p ? url + p : "/";
    *path_len = i > p ? i - p : 1;
  }
  if (query != NULL) {
    *query = url + i;
    *query_len = len - i;
  }
  if (authority != NULL) {
    *authority = auth;
    *authority_len = auth_len;
  }
  return 0;
}

/* 1 for ".", 2 for "..", each dot '.' or "%2e"/"%2E"; else 0. */
static int dot_segment(const char *p, size_t n) {
  int dots = 0;

  for (size_t i = 0; i < n; dots++) {
    if (dots == 2)
      return 0;
    if (p[i] == '.')
      i++;
    else if (n - i >= 3 && p[i] == '%' && p[i + 1] == '2' &&
             (p[i + 2] == 'e' || p[i + 2] == 'E'))
      i += 3;
    else
      return 0;
  }
  return dots;
}

/* The length of a separator some servers see inside a segment at p: '\\'
 * (Windows servers), ';' (path parameters, dropped by Java servlet
 * containers before dots are resolved), "%2F" and "%5C" (decoded by
 * servers that allow encoded slashes); else 0. */
static size_t inner_separator(const char *p, size_t n) {
  if (p[0] == '\\' || p[0] == ';')
    return 1;
  if (n >= 3 && p[0] == '%' &&
      ((p[1] == '2' && (p[2] == 'f' || p[2] == 'F')) ||
       (p[1] == '5' && (p[2] == 'c' || p[2] == 'C'))))
    return 3;
  return 0;
}

/* Whether a segment holds ".." between inner separators. */
static bool hidden_dot_dot(const char *seg, size_t n) {
  size_t start = 0;

  for (size_t i = 0; i <= n;) {
    size_t sep = i < n ? inner_separator(seg + i, n - i) : 1;

    if (sep == 0) {
      i++;
      continue;
    }
    if (dot_segment(seg + start, i - start) == 2)
      return true;
    i += sep;
    start = i;
  }
  return false;
}

int zg_http_normalize_path(const char *path, size_t len, char *out) {
  size_t i = 0, n = 0;

  if (len == 0 || path[0] != '/') {
    if (len > 0)
      memcpy(out, path, len);
    return (int)len;
  }
  /* One segment at a time, each "/seg": the output only ever shrinks
   * against the input, so `len` bytes are enough. */
  while (i < len) {
    size_t j = i + 1, seg_len;
    bool last;
    int dots;

    while (j < len && path[j] != '/')
      j++;
    seg_len = j - i - 1;
    last = j == len;
    dots = dot_segment(path + i + 1, seg_len);
    if (dots == 2) {
      /* RFC 3986 §5.2.4 C: drop the last output segment. Above the root
       * there is none: nginx answers 400 there, and so does the gateway
       * rather than guessing what the client meant. */
      if (n == 0)
        return -1;
      while (out[n - 1] != '/')
        n--;
      n--;
    } else if (dots == 0) {
      if (hidden_dot_dot(path + i + 1, seg_len))
        return -1;
      memcpy(out + n, path + i, seg_len + 1);
      n += seg_len + 1;
    }
    /* "/a/." and "/a/b/.." end in a slash (RFC 3986 §5.2.4 B, C). */
    if (dots != 0 && last)
      out[n++] = '/';
    i = j;
  }
  return (int)n;
}

int zg_http_rewrite_path(char *out, size_t cap, const char *base_path,
                         const char *path, size_t path_len, const char *prefix,
                         bool strip_prefix, const char *query,
                         size_t query_len) {
  size_t base_len = base_path != NULL ? strlen(base_path) : 0;
  const char *rest = path;
  size_t rest_len = path_len, total;
  bool slash = false; /* a '/' to put back in front of rest */

  if (path_len == 1 && path[0] == '*') {
    /* OPTIONS *: the instance as a whole. With a base path the service is
     * one part of it, named by that path. */
    if (base_len > 0)
      rest_len = 0;
  } else {
    if (strip_prefix && prefix != NULL) {
      size_t n = strlen(prefix);

      /* Under the prefix at a segment boundary, as routing matches. */
      if (path_len >= n && memcmp(path, prefix, n) == 0 &&
          (path_len == n || prefix[n - 1] == '/' || path[n] == '/')) {
        rest = path + n;
        rest_len = path_len - n;
      } else if (n > 0 && prefix[n - 1] == '/' && path_len == n - 1 &&
                 memcmp(path, prefix, path_len) == 0) {
        rest_len = 0; /* "/api" under "/api/" */
      }
    }
    /* What is left is a path of its own: "/api/x" minus "/api/" is "/x". */
    slash = rest_len == 0 || rest[0] != '/';
  }
  total = base_len + (slash ? 1 : 0) + rest_len + query_len;
  if (total >= cap || total > INT_MAX)
    return -1;
  if (base_len > 0)
    memcpy(out, base_path, base_len);
  if (slash)
    out[base_len] = '/';
  if (rest_len > 0)
    memcpy(out + base_len + (slash ? 1 : 0), rest, rest_len);
  if (query_len > 0)
    memcpy(out + total - query_len, query, query_len);
  out[total] = '\0';
  return (int)total;
}

/* ------------------------------------------------------------ writing */

/* Bytes appended to the caller's buffer; once something does not fit, or
 * cannot be written safely, nothing more is and the result is -1. */
typedef struct {
  char *p;
  size_t cap, len;
  bool failed;
} out_t;

static void put(out_t *o, const char *s, size_t n) {
  if (o->failed || n == 0)
    return;
  if (n > o->cap - o->len) {
    o->failed = true;
    return;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
}

static void puts_(out_t *o, const char *s) {
  put(o, s, strlen(s));
}

/* A literal: its length is known at compile time. */
#define put_lit(o, lit) put((o), "" lit, sizeof(lit) - 1)

static void put_u64(out_t *o, uint64_t v) {
  char digits[20];
  size_t n = sizeof(digits);

  do {
    digits[--n] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0);
  put(o, digits + n, sizeof(digits) - n);
}

/* Whether a string from the caller (not from a parsed head) can go into a
 * header value: nothing that would end the line, or the head, early. */
static bool value_ok(const char *s) {
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;

    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return false;
  }
  return true;
}

/* "name: value\r\n" with one bounds check and no call for the separators:
 * written for every header of every head. */
static void put_line(out_t *o, const char *name, size_t name_len,
                     const char *value, size_t n) {
  char *p;

  if (o->failed)
    return;
  if (name_len + n + 4 > o->cap - o->len) {
    o->failed = true;
    return;
  }
  p = o->p + o->len;
  memcpy(p, name, name_len);
  p += name_len;
  *p++ = ':';
  *p++ = ' ';
  if (n > 0)
    memcpy(p, value, n);
  p += n;
  *p++ = '\r';
  *p = '\n';
  o->len += name_len + n + 4;
}

static void put_field_n(out_t *o, const char *name, size_t name_len,
                        const char *value) {
  size_t n = 0;

  /* value_ok and strlen in one pass */
  for (; value[n] != '\0'; n++) {
    unsigned char c = (unsigned char)value[n];

    if ((c < 0x20 && c != '\t') || c == 0x7f) {
      o->failed = true;
      return;
    }
  }
  trim(&value, &n);
  put_line(o, name, name_len, value, n);
}

/* A field whose name is a literal. */
#define put_field(o, lit, value)                                               \
  put_field_n((o), "" lit, sizeof(lit) - 1, (value))

static void put_hdr(out_t *o, const zg_http_head_t *h, size_t i) {
  const char *v;
  size_t n;

  hdr_value(h, i, &v, &n);
  put_line(o, hdr_name(h, i), h->hdr[i].name_len, v, n);
}

static void put_framing(out_t *o, zg_framing_t framing, uint64_t length,
                        const char *codings) {
  if (framing == ZG_FRAMING_LENGTH) {
    put_lit(o, "Content-Length: ");
    put_u64(o, length);
    put_lit(o, "\r\n");
  } else if (framing == ZG_FRAMING_CHUNKED) {
    put_lit(o, "Transfer-Encoding: ");
    if (codings && codings[0]) {
      puts_(o, codings);
      put_lit(o, ", ");
    }
    put_lit(o, "chunked\r\n");
  }
}

/* Room for the NUL too, which is not counted. */
static int finish(out_t *o) {
  if (o->failed || o->len >= o->cap || o->len > INT_MAX)
    return -1;
  o->p[o->len] = '\0';
  return (int)o->len;
}

/* llhttp's HTTP methods (HTTP_METHOD_MAP in llhttp.h, and PRI, which its
 * request parser also reports), by their enum values: the numbering of
 * zg_http_head_t.method, whatever codec filled it. */
static const char *const method_names[] = {
    [HTTP_DELETE] = "DELETE",
    [HTTP_GET] = "GET",
    [HTTP_HEAD] = "HEAD",
    [HTTP_POST] = "POST",
    [HTTP_PUT] = "PUT",
    [HTTP_CONNECT] = "CONNECT",
    [HTTP_OPTIONS] = "OPTIONS",
    [HTTP_TRACE] = "TRACE",
    [HTTP_COPY] = "COPY",
    [HTTP_LOCK] = "LOCK",
    [HTTP_MKCOL] = "MKCOL",
    [HTTP_MOVE] = "MOVE",
    [HTTP_PROPFIND] = "PROPFIND",
    [HTTP_PROPPATCH] = "PROPPATCH",
    [HTTP_SEARCH] = "SEARCH",
    [HTTP_UNLOCK] = "UNLOCK",
    [HTTP_BIND] = "BIND",
    [HTTP_REBIND] = "REBIND",
    [HTTP_UNBIND] = "UNBIND",
    [HTTP_ACL] = "ACL",
    [HTTP_REPORT] = "REPORT",
    [HTTP_MKACTIVITY] = "MKACTIVITY",
    [HTTP_CHECKOUT] = "CHECKOUT",
    [HTTP_MERGE] = "MERGE",
    [HTTP_MSEARCH] = "M-SEARCH",
    [HTTP_NOTIFY] = "NOTIFY",
    [HTTP_SUBSCRIBE] = "SUBSCRIBE",
    [HTTP_UNSUBSCRIBE] = "UNSUBSCRIBE",
    [HTTP_PATCH] = "PATCH",
    [HTTP_PURGE] = "PURGE",
    [HTTP_MKCALENDAR] = "MKCALENDAR",
    [HTTP_LINK] = "LINK",
    [HTTP_UNLINK] = "UNLINK",
    [HTTP_SOURCE] = "SOURCE",
    [HTTP_PRI] = "PRI",
};
#define N_METHODS (sizeof(method_names) / sizeof(method_names[0]))

const char *zg_http_method_name(int method) {
  if (method < 0 || (size_t)method >= N_METHODS)
    return NULL;
  return method_names[method];
}

int zg_http_method_from(const char *name, size_t len) {
  /* Methods are case-sensitive (RFC 9110 §9.1): "get" is not GET. */
  for (size_t i = 0; i < N_METHODS; i++)
    if (method_names[i] && strlen(method_names[i]) == len &&
        memcmp(method_names[i], name, len) == 0)
      return (int)i;
  return -1;
}

bool zg_http_method_idempotent(int method) {
  return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS ||
         method == HTTP_TRACE || method == HTTP_PUT || method == HTTP_DELETE;
}

int zg_http_write_request(char *out, size_t cap, const zg_http_head_t *h,
                          const zg_http_req_out_t *o) {
  out_t w = {out, cap, 0, false};
  /* PRI is the HTTP/2 preface, never a method to send on (RFC 9113
   * §3.4). */
  const char *method =
      h->method == HTTP_PRI ? NULL : zg_http_method_name(h->method);
  const char *authority = NULL;
  size_t authority_len = 0;
  bool listed[ZG_HTTP_MAX_HEADERS];
  bool xff_hop, xff_any = false;

  if (method == NULL)
    return -1;
  /* Only absolute-form has an authority; a bad target has none. */
  if (zg_http_split_target(h->buf + h->url_off, h->url_len, NULL, NULL, NULL,
                           NULL, &authority, &authority_len) != 0)
    authority_len = 0;

  /* Request line: the target must not end it early. */
  puts_(&w, method);
  put(&w, " ", 1);
  if (o->target != NULL) {
    if (o->target[0] == '\0')
      return -1;
    for (const char *c = o->target; *c != '\0'; c++)
      if ((unsigned char)*c <= 0x20 || *c == 0x7f)
        return -1;
    puts_(&w, o->target);
  } else {
    put(&w, h->buf + h->url_off, h->url_len);
  }
  put_lit(&w, " HTTP/1.1\r\n");

  /* Host first (RFC 9112 §3.2: SHOULD). For an absolute-form target the
   * authority replaces any Host received (RFC 9112 §3.2.2, MUST). */
  if (o->host != NULL) {
    put_field(&w, "Host", o->host);
  } else {
    size_t host = hdr_index(h, "Host");

    put_lit(&w, "Host: ");
    if (authority_len > 0) {
      put(&w, authority, authority_len);
    } else if (host < h->n_hdr) {
      const char *v;
      size_t n;

      hdr_value(h, host, &v, &n);
      put(&w, v, n);
    }
    put_lit(&w, "\r\n");
  }

  mark_connection_listed(h, listed);
  /* What says who the client is, how and to whom it spoke comes from the
   * gateway alone. Forwarded (RFC 7239) and X-Real-IP are dropped rather
   * than passed on: frameworks that read them (Spring's
   * ForwardedHeaderFilter takes Forwarded over X-Forwarded-*, apps behind
   * nginx read X-Real-IP) would take the client's word for its address,
   * scheme and host; the X-Forwarded-* the gateway writes say it. */
  for (size_t i = 0; i < h->n_hdr; i++) {
    if (is_hop_by_hop(h, i, listed) || hdr_is(h, i, "Host") ||
        hdr_is_alias(h, i, "X-Forwarded-For") ||
        hdr_is_alias(h, i, "X-Forwarded-Proto") ||
        hdr_is_alias(h, i, "X-Forwarded-Host") ||
        hdr_is_alias(h, i, "X-Client-Cert-Subject") ||
        hdr_is_alias(h, i, "Forwarded") || hdr_is_alias(h, i, "X-Real-IP"))
      continue;
    put_hdr(&w, h, i);
  }

  /* One X-Forwarded-For: the client's hops in order, then the client. A
   * client naming it in Connection drops its own values, not ours. */
  xff_hop = connection_lists(h, "X-Forwarded-For", 15);
  for (size_t i = 0; i < h->n_hdr && !xff_hop; i++) {
    const char *v;
    size_t n;

    if (!hdr_is(h, i, "X-Forwarded-For"))
      continue;
    hdr_value(h, i, &v, &n);
    if (n == 0)
      continue;
    puts_(&w, xff_any ? ", " : "X-Forwarded-For: ");
    put(&w, v, n);
    xff_any = true;
  }
  if (o->client_addr != NULL) {
    if (!value_ok(o->client_addr))
      return -1;
    puts_(&w, xff_any ? ", " : "X-Forwarded-For: ");
    puts_(&w, o->client_addr);
    xff_any = true;
  }
  if (xff_any)
    put_lit(&w, "\r\n");
  if (o->proto != NULL)
    put_field(&w, "X-Forwarded-Proto", o->proto);
  if (o->fwd_host != NULL)
    put_field(&w, "X-Forwarded-Host", o->fwd_host);
  if (o->client_subject != NULL)
    put_field(&w, "X-Client-Cert-Subject", o->client_subject);
  put_framing(&w, o->framing, o->body_length, NULL);
  if (o->upgrade != NULL) {
    /* The one hop-by-hop pair passed on on purpose: a protocol switch
     * (RFC 9110 §7.8) the gateway then tunnels. */
    if (!value_ok(o->upgrade))
      return -1;
    put_lit(&w, "Connection: upgrade\r\n");
    put_field(&w, "Upgrade", o->upgrade);
  } else if (o->close) {
    put_lit(&w, "Connection: close\r\n");
  }
  put_lit(&w, "\r\n");
  return finish(&w);
}

bool zg_http_request_framing(const zg_http_head_t *h, zg_http_req_out_t *o) {
  o->body_length = 0;
  if (h->chunked) {
    o->framing = ZG_FRAMING_CHUNKED;
    return true;
  }
  if (h->has_length) {
    o->framing = ZG_FRAMING_LENGTH;
    o->body_length = h->content_length;
    return h->content_length > 0;
  }
  o->framing = ZG_FRAMING_NONE; /* RFC 9112 §6.3: a request without either */
  return false;
}

bool zg_http_response_bodiless(int status, bool head_request) {
  return (status >= 100 && status < 200) || status == 204 || status == 304 ||
         head_request;
}

int zg_http_response_framing(const zg_http_head_t *h, int client_minor,
                             bool head_request, zg_http_resp_out_t *o,
                             char *codings, size_t codings_cap,
                             bool *until_close, const char **reason) {
  bool bodiless = zg_http_response_bodiless(h->status, head_request);

  *until_close = false;
  o->framing = ZG_FRAMING_NONE;
  o->body_length = 0;
  o->codings = NULL;
  if (zg_http_transfer_codings(h, codings, codings_cap) < 0) {
    *reason = "transfer codings too long";
    return -1;
  }
  if (bodiless) {
    /* A length tells a HEAD client what a GET would get. */
    if (h->has_length && head_request && h->status >= 200) {
      o->framing = ZG_FRAMING_LENGTH;
      o->body_length = h->content_length;
    }
    return 0;
  }
  if (h->has_length) { /* never with Transfer-Encoding: checked */
    o->framing = ZG_FRAMING_LENGTH;
    o->body_length = h->content_length;
    return 0;
  }
  if (client_minor >= 1) {
    o->framing = ZG_FRAMING_CHUNKED;
    o->codings = codings;
    return 0;
  }
  if (codings[0]) {
    *reason = "transfer coding for an HTTP/1.0 client";
    return -1;
  }
  *until_close = true; /* the end of the body is the end of the connection */
  return 0;
}

int zg_http_write_response(char *out, size_t cap, const zg_http_head_t *h,
                           const zg_http_resp_out_t *o) {
  out_t w = {out, cap, 0, false};
  const char *reason = h->buf + h->reason_off;
  size_t reason_len = h->reason_len;
  bool listed[ZG_HTTP_MAX_HEADERS];

  if (h->status < 100 || h->status > 999)
    return -1;
  trim(&reason, &reason_len);
  put_lit(&w, "HTTP/1.1 ");
  put_u64(&w, (uint64_t)h->status);
  put(&w, " ", 1);
  if (reason_len > 0)
    put(&w, reason, reason_len);
  else
    puts_(&w, zg_http_reason(h->status));
  put_lit(&w, "\r\n");
  mark_connection_listed(h, listed);
  for (size_t i = 0; i < h->n_hdr; i++)
    if (!is_hop_by_hop(h, i, listed))
      put_hdr(&w, h, i);
  /* RFC 9112 §6.3: these never have a body, whatever they say. */
  if (h->status >= 200 && h->status != 204 && h->status != 304)
    put_framing(&w, o->framing, o->body_length, o->codings);
  if (o->upgrade != NULL && h->status == 101) {
    if (!value_ok(o->upgrade))
      return -1;
    put_lit(&w, "Connection: upgrade\r\n");
    put_field(&w, "Upgrade", o->upgrade);
  } else if (o->close)
    put_lit(&w, "Connection: close\r\n");
  else if (o->keep_alive)
    put_lit(&w, "Connection: keep-alive\r\n");
  put_lit(&w, "\r\n");
  return finish(&w);
}

int zg_http_error_response(char *out, size_t cap, int status,
                           const char *message, bool close, bool head_request) {
  out_t w = {out, cap, 0, false};

  if (status < 100 || status > 999)
    return -1;
  if (message == NULL)
    message = zg_http_reason(status);
  put_lit(&w, "HTTP/1.1 ");
  put_u64(&w, (uint64_t)status);
  put(&w, " ", 1);
  puts_(&w, zg_http_reason(status));
  puts_(&w, "\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Length: ");
  /* A HEAD response tells the length the GET body would have (RFC 9110
   * §9.3.2). */
  put_u64(&w, (uint64_t)strlen(message) + 1);
  put_lit(&w, "\r\n");
  if (close)
    put_lit(&w, "Connection: close\r\n");
  put_lit(&w, "\r\n");
  if (!head_request) {
    puts_(&w, message);
    put(&w, "\n", 1);
  }
  return finish(&w);
}

const char *zg_http_reason(int status) {
  /* RFC 9110 §15 */
  switch (status) {
  case 100:
    return "Continue";
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 201:
    return "Created";
  case 202:
    return "Accepted";
  case 204:
    return "No Content";
  case 206:
    return "Partial Content";
  case 301:
    return "Moved Permanently";
  case 302:
    return "Found";
  case 303:
    return "See Other";
  case 304:
    return "Not Modified";
  case 307:
    return "Temporary Redirect";
  case 308:
    return "Permanent Redirect";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 408:
    return "Request Timeout";
  case 411:
    return "Length Required";
  case 413:
    return "Content Too Large";
  case 414:
    return "URI Too Long";
  case 415:
    return "Unsupported Media Type";
  case 417:
    return "Expectation Failed";
  case 421:
    return "Misdirected Request";
  case 426:
    return "Upgrade Required";
  case 429:
    return "Too Many Requests";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 501:
    return "Not Implemented";
  case 502:
    return "Bad Gateway";
  case 503:
    return "Service Unavailable";
  case 504:
    return "Gateway Timeout";
  case 505:
    return "HTTP Version Not Supported";
  }
  return "Unknown";
}

size_t zg_http_head_end(const char *buf, size_t len) {
  size_t start = 0;
  while (start < len && (buf[start] == '\r' || buf[start] == '\n'))
    start++;
  for (size_t i = start; i + 1 < len; i++)
    if (buf[i] == '\n') {
      if (buf[i + 1] == '\n')
        return i + 2;
      if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n')
        return i + 3;
    }
  return len;
}

int zg_http_head_field(zg_http_head_t *h, unsigned *value_open,
                       const char *base, const char *at, size_t len) {
  if (*value_open || h->n_hdr == 0) {
    if (h->n_hdr == ZG_HTTP_MAX_HEADERS)
      return -1;
    h->hdr[h->n_hdr].name_off = (uint32_t)(at - base);
    h->hdr[h->n_hdr].name_len = 0;
    h->hdr[h->n_hdr].value_off = 0;
    h->hdr[h->n_hdr].value_len = 0;
    h->n_hdr++;
    *value_open = 0;
  }
  h->hdr[h->n_hdr - 1].name_len += (uint32_t)len;
  return 0;
}

void zg_http_head_value(zg_http_head_t *h, unsigned *value_open,
                        const char *base, const char *at, size_t len) {
  zg_hdr_t *hd = &h->hdr[h->n_hdr - 1];
  if (!*value_open) {
    hd->value_off = (uint32_t)(at - base);
    hd->value_len = 0;
    *value_open = 1;
  }
  hd->value_len += (uint32_t)len;
}

static int reader_extra(llhttp_t *p, size_t len) {
  zg_http_reader_t *r = p->data;
  r->extra_bytes +=
      (unsigned)(len < ZG_HTTP_EXTRA_MAX ? len : ZG_HTTP_EXTRA_MAX);
  if (r->extra_bytes > ZG_HTTP_EXTRA_MAX) {
    llhttp_set_error_reason(p, "trailers or chunk extensions too large");
    return -1;
  }
  return 0;
}

void zg_http_trailers_clear(zg_http_trailers_t *t) {
  free(t->f); /* the block, buf included */
  t->f = NULL;
  t->buf = NULL;
  t->len = t->n = 0;
}

/* Names compared case-insensitively, '_' taken for '-'. */
bool zg_http_trailer_forwardable(const char *name, size_t len) {
  /* RFC 9110 §6.5.1: framing, routing, request modifiers, authentication,
   * response control data, and how to process the content; §7.6.1: the
   * hop-by-hop fields; and the fields the gateway writes in heads. */
  static const char *const never[] = {"Transfer-Encoding",
                                      "Content-Length",
                                      "Trailer",
                                      "TE",
                                      "Connection",
                                      "Keep-Alive",
                                      "Proxy-Connection",
                                      "Upgrade",
                                      "Host",
                                      "Cache-Control",
                                      "Expect",
                                      "Max-Forwards",
                                      "Pragma",
                                      "Range",
                                      "If-Match",
                                      "If-None-Match",
                                      "If-Modified-Since",
                                      "If-Unmodified-Since",
                                      "If-Range",
                                      "Authorization",
                                      "Proxy-Authorization",
                                      "WWW-Authenticate",
                                      "Proxy-Authenticate",
                                      "Authentication-Info",
                                      "Proxy-Authentication-Info",
                                      "Cookie",
                                      "Set-Cookie",
                                      "Age",
                                      "Expires",
                                      "Date",
                                      "Location",
                                      "Retry-After",
                                      "Vary",
                                      "Content-Encoding",
                                      "Content-Type",
                                      "Content-Range",
                                      "X-Forwarded-For",
                                      "X-Forwarded-Proto",
                                      "X-Forwarded-Host",
                                      "X-Client-Cert-Subject",
                                      "Forwarded",
                                      "X-Real-IP"};
  if (len == 0)
    return false;
  for (size_t i = 0; i < sizeof(never) / sizeof(never[0]); i++)
    if (name_is_alias(name, len, never[i], strlen(never[i])))
      return false;
  return true;
}

/* A piece of a trailer field's name (`value` 0) or value, copied. Out of
 * line: the header callbacks run for every field of every head, trailers
 * are rare, and inlined this made each callback's prologue heavier (66
 * instructions a keep-alive request under callgrind). */
__attribute__((noinline, cold)) static int
reader_trailer(llhttp_t *p, const char *at, size_t len, int value) {
  zg_http_reader_t *r = p->data;
  zg_http_trailers_t *t = r->trailers;
  zg_hdr_t *f;
  if (reader_extra(p, len) != 0)
    return -1;
  if (!t)
    return 0; /* dropped */
  if (!t->f) {
    if (!(t->f = malloc(ZG_HTTP_MAX_TRAILERS * sizeof(zg_hdr_t) +
                        ZG_HTTP_EXTRA_MAX))) {
      llhttp_set_error_reason(p, "out of memory");
      return -1;
    }
    t->buf = (char *)(t->f + ZG_HTTP_MAX_TRAILERS);
  }
  /* reader_extra bounds the bytes of all fields by ZG_HTTP_EXTRA_MAX */
  if (len > ZG_HTTP_EXTRA_MAX - t->len) {
    llhttp_set_error_reason(p, "trailers or chunk extensions too large");
    return -1;
  }
  if (!value && (r->value_open || t->n == 0)) { /* a new field */
    if (t->n == ZG_HTTP_MAX_TRAILERS) {
      llhttp_set_error_reason(p, "too many trailer fields");
      return -1;
    }
    f = &t->f[t->n++];
    f->name_off = t->len;
    f->name_len = f->value_off = f->value_len = 0;
    r->value_open = 0;
  }
  /* llhttp 8.1 takes an empty field name (docs/platform.md; heads go
   * through zg_http_prescan): it reports a name of no bytes, or none. */
  if (t->n == 0 || (value && !r->value_open && t->f[t->n - 1].name_len == 0)) {
    llhttp_set_error_reason(p, "empty trailer field name");
    return -1;
  }
  f = &t->f[t->n - 1];
  if (value && !r->value_open) {
    f->value_off = t->len;
    f->value_len = 0;
    r->value_open = 1;
  }
  memcpy(t->buf + t->len, at, len);
  t->len += (uint32_t)len;
  if (value)
    f->value_len += (uint32_t)len;
  else
    f->name_len += (uint32_t)len;
  return 0;
}

static int reader_on_url(llhttp_t *p, const char *at, size_t len) {
  zg_http_reader_t *r = p->data;
  zg_http_head_t *h = r->head;
  if (h->url_len == 0)
    h->url_off = (uint32_t)(at - r->base);
  h->url_len += (uint32_t)len;
  return 0;
}

static int reader_on_field(llhttp_t *p, const char *at, size_t len) {
  zg_http_reader_t *r = p->data;
  unsigned vo = r->value_open;
  int rc;
  if (r->head_seen)
    return reader_trailer(p, at, len, 0);
  rc = zg_http_head_field(r->head, &vo, r->base, at, len);
  r->value_open = vo;
  if (rc) {
    r->too_many = 1;
    llhttp_set_error_reason(p, "too many header fields");
  }
  return rc;
}

static int reader_on_value(llhttp_t *p, const char *at, size_t len) {
  zg_http_reader_t *r = p->data;
  unsigned vo = r->value_open;
  if (r->head_seen)
    return reader_trailer(p, at, len, 1);
  zg_http_head_value(r->head, &vo, r->base, at, len);
  r->value_open = vo;
  return 0;
}

static int reader_on_chunk_ext(llhttp_t *p, const char *at, size_t len) {
  (void)at;
  return reader_extra(p, len);
}

static int reader_on_headers_complete(llhttp_t *p) {
  zg_http_reader_t *r = p->data;
  r->head_seen = 1;
  /* With a body, stop here; without one, llhttp goes on to the end of the
   * message, where the owner's on_message_complete pauses. The body's
   * presence comes from llhttp's flags, never from a length's sign. */
  if ((p->flags & F_CHUNKED) ||
      ((p->flags & F_CONTENT_LENGTH) && p->content_length > 0))
    return HPE_PAUSED;
  return 0;
}

void zg_http_request_settings(llhttp_settings_t *st, llhttp_data_cb on_body,
                              llhttp_cb on_message_complete) {
  llhttp_settings_init(st);
  st->on_url = reader_on_url;
  st->on_header_field = reader_on_field;
  st->on_header_value = reader_on_value;
  st->on_headers_complete = reader_on_headers_complete;
  st->on_chunk_extension_name = reader_on_chunk_ext;
  st->on_chunk_extension_value = reader_on_chunk_ext;
  st->on_body = on_body;
  st->on_message_complete = on_message_complete;
}

static int reader_on_status(llhttp_t *p, const char *at, size_t len) {
  zg_http_reader_t *r = p->data;
  zg_http_head_t *h = r->head;
  if (h->reason_len == 0)
    h->reason_off = (uint32_t)(at - r->base);
  h->reason_len += (uint32_t)len;
  return 0;
}

void zg_http_response_settings(llhttp_settings_t *st,
                               llhttp_cb on_headers_complete,
                               llhttp_data_cb on_body,
                               llhttp_cb on_message_complete) {
  llhttp_settings_init(st);
  st->on_status = reader_on_status;
  st->on_header_field = reader_on_field;
  st->on_header_value = reader_on_value;
  st->on_chunk_extension_name = reader_on_chunk_ext;
  st->on_chunk_extension_value = reader_on_chunk_ext;
  st->on_headers_complete = on_headers_complete;
  st->on_body = on_body;
  st->on_message_complete = on_message_complete;
}

void zg_http_reader_reset(zg_http_reader_t *r) {
  r->value_open = 0;
  r->head_seen = 0;
  r->too_many = 0;
  r->extra_bytes = 0;
}

void zg_http_head_framing(zg_http_head_t *h, const llhttp_t *p) {
  h->major = p->http_major;
  h->minor = p->http_minor;
  h->chunked = (p->flags & F_CHUNKED) != 0;
  h->has_length = (p->flags & F_CONTENT_LENGTH) != 0;
  h->content_length = h->has_length ? p->content_length : 0;
}
