/* Checks shared by the HTTP fuzz targets (fuzz_request_head.c,
 * fuzz_response_head.c): what a head written for the other side must look
 * like, the gateway's own error responses, trailers kept for the next hop,
 * and a digest of what one run wrote. abort() when a check fails. See
 * fuzz_http.h. */
#include "fuzz_http.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The head being checked, shown when a check fails. */
static const char *shown;
static size_t shown_len;

void check_failed(const char *file, int line, const char *what) {
  fprintf(stderr, "%s:%d: check failed: %s\n", file, line, what);
  if (shown) {
    fprintf(stderr, "in the head written:\n");
    for (size_t i = 0; i < shown_len; i++) {
      unsigned char c = (unsigned char)shown[i];
      if (c >= 0x20 && c < 0x7f && c != '\\')
        fputc(c, stderr);
      else
        fprintf(stderr, "\\x%02x%s", c, c == '\n' ? "\n" : "");
    }
    fputc('\n', stderr);
  }
  abort();
}

/* ---- a transcript digest: what one run wrote, FNV-1a ---------------- */

void digest(uint64_t *d, const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) {
    *d ^= c[i];
    *d *= 0x100000001b3ULL;
  }
}

void digest_int(uint64_t *d, int v) {
  digest(d, &v, sizeof(v));
}

/* ---- output buffers (static: too large for the stack) --------------- */

char out_head[FZ_OUT_HEAD_MAX];
char out_again[FZ_OUT_HEAD_MAX];

/* ---- checks on written heads ---------------------------------------- */

static bool is_tchar(unsigned char c) {
  /* RFC 9110 §5.6.2 */
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
         (c >= 'A' && c <= 'Z') || (c != '\0' && strchr("!#$%&'*+-.^_`|~", c));
}

bool is_ws(char c) {
  return c == ' ' || c == '\t';
}

/* Lines end with CRLF, no CR or LF elsewhere, no NUL, and the first empty
 * line is the last one. Returns the length of the first line. */
size_t check_lines(const char *out, size_t n) {
  size_t first = 0;
  shown = out;
  shown_len = n;
  CHECK(n >= 4 && memcmp(out + n - 4, "\r\n\r\n", 4) == 0);
  for (size_t i = 0; i < n; i++) {
    CHECK(out[i] != '\0');
    if (out[i] == '\r')
      CHECK(i + 1 < n && out[i + 1] == '\n');
    if (out[i] == '\n') {
      CHECK(i > 0 && out[i - 1] == '\r');
      if (first == 0)
        first = i - 1;
      /* an empty line ends the head: only at the end */
      if (i >= 3 && out[i - 2] == '\n')
        CHECK(i == n - 1);
    }
  }
  CHECK(first > 0);
  return first;
}

typedef struct {
  const char *name;
  size_t name_len;
  const char *value;
  size_t value_len;
} field_t;

/* The header lines after the first line, one by one: *pos is where the
 * next starts. Every one must be "token: value" with no whitespace around
 * the value. Returns false after the last. */
static bool next_field(const char *out, size_t n, size_t *pos, field_t *f) {
  size_t i = *pos, end, colon;
  if (i + 2 >= n)
    return false; /* the final CRLF */
  for (end = i; out[end] != '\r'; end++)
    ;
  for (colon = i; colon < end && out[colon] != ':'; colon++)
    CHECK(is_tchar((unsigned char)out[colon]));
  CHECK(colon > i && colon < end);
  CHECK(colon + 1 < end && out[colon + 1] == ' ');
  f->name = out + i;
  f->name_len = colon - i;
  f->value = out + colon + 1;
  f->value_len = end - colon - 1;
  if (f->value_len > 0) {
    f->value++;
    f->value_len--;
  }
  if (f->value_len > 0)
    CHECK(!is_ws(f->value[0]) && !is_ws(f->value[f->value_len - 1]));
  *pos = end + 2;
  return true;
}

static bool name_is(const field_t *f, const char *name) {
  return f->name_len == strlen(name) &&
         strncasecmp(f->name, name, f->name_len) == 0;
}

static bool value_is(const field_t *f, const char *v) {
  return f->value_len == strlen(v) && memcmp(f->value, v, f->value_len) == 0;
}

static uint64_t parse_u64(const char *s, size_t n) {
  uint64_t v = 0;
  CHECK(n > 0 && n <= 20);
  for (size_t i = 0; i < n; i++) {
    CHECK(s[i] >= '0' && s[i] <= '9');
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  return v;
}

/* Whether the received head's Connection headers list this name (then the
 * header stops at this hop). */
static bool listed_in_connection(const zg_http_head_t *h, const field_t *f) {
  char name[256];
  if (f->name_len >= sizeof(name))
    return false;
  memcpy(name, f->name, f->name_len);
  name[f->name_len] = '\0';
  return zg_http_connection_has(h, name) != 0;
}

static bool hop_by_hop(const field_t *f) {
  return name_is(f, "Proxy-Connection") || name_is(f, "Keep-Alive") ||
         name_is(f, "TE") || name_is(f, "Trailer") || name_is(f, "Upgrade");
}

/* What llhttp (strict) reads back from a written head. */
typedef struct {
  size_t n_fields;
  int in_value;
  int complete;
} readback_t;

static int rb_on_field(llhttp_t *p, const char *at, size_t len) {
  readback_t *r = p->data;
  (void)at;
  (void)len;
  if (r->in_value || r->n_fields == 0)
    r->n_fields++;
  r->in_value = 0;
  return 0;
}

static int rb_on_value(llhttp_t *p, const char *at, size_t len) {
  readback_t *r = p->data;
  (void)at;
  (void)len;
  r->in_value = 1;
  return 0;
}

static int rb_on_headers_complete(llhttp_t *p) {
  readback_t *r = p->data;
  r->complete = 1;
  return HPE_PAUSED;
}

/* The head must read back as one head, ending exactly at `end`, with
 * n_fields header lines. *p is left for its flags. */
void readback(llhttp_t *p, llhttp_type_t type, const char *out, size_t n,
              const char *end, size_t n_fields) {
  static llhttp_settings_t settings;
  static bool settings_done;
  readback_t r = {0, 0, 0};
  llhttp_errno_t err;
  if (!settings_done) {
    llhttp_settings_init(&settings);
    settings.on_header_field = rb_on_field;
    settings.on_header_value = rb_on_value;
    settings.on_headers_complete = rb_on_headers_complete;
    settings_done = true;
  }
  llhttp_init(p, type, &settings);
  p->data = &r;
  err = llhttp_execute(p, out, n);
  if (err != HPE_PAUSED || !r.complete) {
    fprintf(stderr, "written head not read back: %s (%s)\n%.*s",
            llhttp_errno_name(err),
            llhttp_get_error_reason(p) ? llhttp_get_error_reason(p) : "",
            (int)n, out);
    CHECK(!"written head reads back");
  }
  CHECK(llhttp_get_error_pos(p) == end);
  CHECK(r.n_fields == n_fields);
  CHECK(p->http_major == 1 && p->http_minor == 1);
  CHECK(zg_http_prescan(out, n, &(const char *){NULL}) == 0);
}

/* host: the Host value to send (the target's authority, else the
 * client's Host without surrounding whitespace). */
void check_request_out(const char *out, int n, const zg_http_head_t *h,
                       const zg_http_req_out_t *o, const char *host,
                       size_t host_len) {
  const char *method = llhttp_method_name((llhttp_method_t)h->method);
  size_t len = (size_t)n, pos, first, mlen = strlen(method);
  size_t n_fields = 0, n_host = 0, n_cl = 0, n_te = 0, n_xff = 0, n_xfp = 0,
         n_xfh = 0;
  field_t f;
  llhttp_t p;

  CHECK(n > 0 && out[n] == '\0');
  first = check_lines(out, len);
  /* "METHOD target HTTP/1.1" */
  CHECK(first == mlen + 1 + strlen(o->target) + 9);
  CHECK(memcmp(out, method, mlen) == 0 && out[mlen] == ' ');
  CHECK(memcmp(out + mlen + 1, o->target, strlen(o->target)) == 0);
  CHECK(memcmp(out + first - 9, " HTTP/1.1", 9) == 0);

  pos = first + 2;
  while (next_field(out, len, &pos, &f)) {
    n_fields++;
    if (name_is(&f, "Host")) {
      CHECK(n_fields == 1); /* first */
      n_host++;
      /* RFC 9112 §3.2.2: the target's authority replaces Host */
      CHECK(f.value_len == host_len && memcmp(f.value, host, host_len) == 0);
    } else if (name_is(&f, "Content-Length")) {
      n_cl++;
      CHECK(o->framing == ZG_FRAMING_LENGTH);
      CHECK(parse_u64(f.value, f.value_len) == o->body_length);
    } else if (name_is(&f, "Transfer-Encoding")) {
      n_te++;
      CHECK(o->framing == ZG_FRAMING_CHUNKED && value_is(&f, "chunked"));
    } else if (name_is(&f, "X-Forwarded-For")) {
      size_t cl = strlen(FZ_CLIENT_IP);
      n_xff++;
      CHECK(f.value_len >= cl &&
            memcmp(f.value + f.value_len - cl, FZ_CLIENT_IP, cl) == 0);
    } else if (name_is(&f, "X-Forwarded-Proto")) {
      n_xfp++;
      CHECK(value_is(&f, "http"));
    } else if (name_is(&f, "X-Forwarded-Host")) {
      n_xfh++;
      CHECK(f.value_len == host_len && memcmp(f.value, host, host_len) == 0);
    } else {
      /* a client's header: not one that stops at this hop */
      CHECK(!name_is(&f, "Connection") && !hop_by_hop(&f));
      CHECK(!listed_in_connection(h, &f));
    }
  }
  CHECK(pos == len - 2);
  CHECK(n_host == 1);
  /* exactly one framing header when there is a body to frame */
  CHECK(n_cl + n_te == (o->framing != ZG_FRAMING_NONE ? 1u : 0u));
  CHECK(n_xff == 1 && n_xfp == 1);
  CHECK(n_xfh == (o->fwd_host != NULL ? 1u : 0u));

  readback(&p, HTTP_REQUEST, out, len, out + len, n_fields);
  CHECK((int)p.method == h->method);
  CHECK(((p.flags & F_CHUNKED) != 0) == (o->framing == ZG_FRAMING_CHUNKED));
  CHECK(((p.flags & F_CONTENT_LENGTH) != 0) ==
        (o->framing == ZG_FRAMING_LENGTH));
  if (o->framing == ZG_FRAMING_LENGTH)
    CHECK(p.content_length == o->body_length);

  /* The same head again, into buffers too small and just large enough. */
  CHECK(zg_http_write_request(out_again, len, h, o) == -1);
  CHECK(zg_http_write_request(out_again, len + 1, h, o) == n);
  CHECK(memcmp(out_again, out, len + 1) == 0);
  shown = NULL;
}

void check_response_out(const char *out, int n, const zg_http_head_t *h,
                        const zg_http_resp_out_t *o) {
  size_t len = (size_t)n, pos, first, n_fields = 0, n_cl = 0, n_te = 0,
         n_conn = 0, n_up = 0;
  bool upgrade = o->upgrade != NULL && h->status == 101;
  bool framed = h->status >= 200 && h->status != 204 && h->status != 304 &&
                o->framing != ZG_FRAMING_NONE;
  char status_line[16];
  field_t f;
  llhttp_t p;

  CHECK(n > 0 && out[n] == '\0');
  first = check_lines(out, len);
  snprintf(status_line, sizeof(status_line), "HTTP/1.1 %03d ", h->status);
  CHECK(first > 13 && memcmp(out, status_line, 13) == 0);

  pos = first + 2;
  while (next_field(out, len, &pos, &f)) {
    n_fields++;
    if (name_is(&f, "Content-Length")) {
      n_cl++;
      CHECK(o->framing == ZG_FRAMING_LENGTH);
      CHECK(parse_u64(f.value, f.value_len) == o->body_length);
    } else if (name_is(&f, "Transfer-Encoding")) {
      n_te++;
      /* The instance's codings first, then the gateway's chunked. */
      CHECK(o->framing == ZG_FRAMING_CHUNKED);
      if (o->codings && o->codings[0]) {
        size_t k = strlen(o->codings);
        CHECK(f.value_len == k + 9 && memcmp(f.value, o->codings, k) == 0 &&
              memcmp(f.value + k, ", chunked", 9) == 0);
      } else {
        CHECK(value_is(&f, "chunked"));
      }
    } else if (name_is(&f, "Connection")) {
      n_conn++;
      if (upgrade)
        CHECK(value_is(&f, "upgrade"));
      else
        CHECK(o->close ? value_is(&f, "close") : value_is(&f, "keep-alive"));
    } else if (upgrade && name_is(&f, "Upgrade")) {
      /* the switch the client asked for, once */
      const char *v = o->upgrade;
      size_t k = strlen(v);
      /* as given, without surrounding whitespace */
      while (k > 0 && is_ws(v[0]))
        v++, k--;
      while (k > 0 && is_ws(v[k - 1]))
        k--;
      n_up++;
      CHECK(f.value_len == k && memcmp(f.value, v, k) == 0);
    } else {
      CHECK(!hop_by_hop(&f) && !listed_in_connection(h, &f));
    }
  }
  CHECK(pos == len - 2);
  CHECK(n_cl + n_te == (framed ? 1u : 0u));
  CHECK(n_conn == (upgrade || o->close || o->keep_alive ? 1u : 0u));
  CHECK(n_up == (upgrade ? 1u : 0u));

  readback(&p, HTTP_RESPONSE, out, len, out + len, n_fields);
  CHECK(p.status_code == h->status);
  if (framed) {
    CHECK(((p.flags & F_CHUNKED) != 0) == (o->framing == ZG_FRAMING_CHUNKED));
    CHECK(((p.flags & F_CONTENT_LENGTH) != 0) ==
          (o->framing == ZG_FRAMING_LENGTH));
  }

  CHECK(zg_http_write_response(out_again, len, h, o) == -1);
  CHECK(zg_http_write_response(out_again, len + 1, h, o) == n);
  CHECK(memcmp(out_again, out, len + 1) == 0);
  shown = NULL;
}

/* The gateway's own answer (respond_error): a complete response whose
 * Content-Length is the body's. */
void error_response(int status, const char *message, bool head_request) {
  char buf[1024]; /* respond_error's */
  size_t body, len;
  llhttp_t p;
  int n;

  n = zg_http_error_response(buf, sizeof(buf), status, message, true,
                             head_request);
  CHECK(n > 0 && buf[n] == '\0' && strlen(buf) == (size_t)n);
  len = (size_t)n;
  body = head_request ? 0 : strlen(message) + 1;
  CHECK(len > body);
  check_lines(buf, len - body);
  if (!head_request) {
    CHECK(memcmp(buf + len - body, message, body - 1) == 0);
    CHECK(buf[len - 1] == '\n');
  }
  readback(&p, HTTP_RESPONSE, buf, len, buf + len - body, 3);
  CHECK(p.status_code == status);
  CHECK((p.flags & F_CONTENT_LENGTH) &&
        p.content_length == strlen(message) + 1);
  shown = NULL;
}

/* The trailers the reader kept: within their bounds, each field's name and
 * value inside the buffer, in order; what would go on is digested (it must
 * not depend on how the reads were cut). Then emptied, as
 * zg_exchange_reset does. */
void trailers_check(zg_http_trailers_t *t, uint64_t *d) {
  uint32_t end = 0;
  CHECK(t->n <= ZG_HTTP_MAX_TRAILERS && t->len <= ZG_HTTP_EXTRA_MAX);
  CHECK(t->n == 0 || t->buf);
  for (uint32_t i = 0; i < t->n; i++) {
    const zg_hdr_t *f = &t->f[i];
    CHECK(f->name_off == end && f->name_len > 0);
    end = f->name_off + f->name_len;
    if (f->value_len > 0) {
      CHECK(f->value_off == end);
      end = f->value_off + f->value_len;
    }
    if (zg_http_trailer_forwardable(t->buf + f->name_off, f->name_len)) {
      digest(d, t->buf + f->name_off, f->name_len);
      digest(d, t->buf + f->value_off, f->value_len);
    }
  }
  CHECK(end == t->len);
  zg_http_trailers_clear(t);
}