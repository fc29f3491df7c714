/* libFuzzer target over what the gateway does with an instance's answer
 * on an HTTP/1.1 connection (src/proxy/h1_client.c, the response side of
 * src/proxy/h1_server.c).
 *
 * The input: byte 0 is what the client asked (bit 0: HEAD; bit 1: an
 * HTTP/1.0 client; bit 2: the client closes after this request; bit 3: the
 * client asked for an upgrade to "websocket"), the rest is what the
 * instance sends on the connection. It goes through llhttp in response
 * mode with the shipped reader (zg_http_response_settings, trailers kept
 * as the exchange keeps them), pausing where the codec pauses: interim
 * responses (1xx) are passed on and the next head read, a 101 becomes a
 * tunnel when the client asked for one and a 502 otherwise, a final
 * response ends the exchange at its end. Each head goes through the same
 * pure functions the codecs run: zg_http_prescan, zg_http_check_response,
 * zg_http_response_bodiless, zg_http_response_framing and
 * zg_http_write_response; an answer that fails gets the gateway's 502.
 *
 * Each run is made twice: once in one read, once cut into reads of a few
 * bytes. What the gateway writes (heads, body length, trailers passed on)
 * must not depend on that.
 *
 * Checks, abort() when one fails (fuzz_http.c): every head written is one
 * status line and well-formed fields, ending at the first empty line,
 * with no hop-by-hop header passed on, exactly one framing header for a
 * final response that has a body (none for 1xx, 204, 304), the Connection
 * header the client's side asks for, and llhttp (strict) reads it back
 * with the same status and framing; a length-framed body is exactly its
 * Content-Length; the trailers kept are within their bounds. */
#include "core/http_msg.h"
#include "fuzz_http.h"

#include <llhttp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* As in src/proxy/h1_client.c: a head that has not ended within HEAD_MAX
 * bytes is a 502 without parsing on (inputs that long are skipped: the
 * verdict would depend on the reads). */
#define HEAD_MAX 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
  /* First: the parser's data is the upstream and the shipped reader alike,
   * as in src/proxy/h1_client.c; rd.head_seen is clear while a head is read.
   */
  zg_http_reader_t rd;
  const char *head; /* where the current response head starts */
  size_t head_len;  /* bytes read from there */
  zg_http_head_t resp;
  zg_http_trailers_t tr;
  bool resp_done, tunnel;
  /* what the client asked */
  bool head_req, client_keep, upgrade_asked;
  int req_minor;
  /* the final response as passed on */
  bool close_after, chunked_out;
  uint64_t body, length; /* body bytes seen; the Content-Length kept */
  bool by_length;
  uint64_t *d;
} upstream_t;

/* h1s_response_prepare() in src/proxy/h1_server.c: the head for the
 * client, or -1 (a 502). */
static int prepare(upstream_t *u, zg_http_resp_out_t *o, char *codings,
                   size_t codings_cap, char *proto, size_t proto_cap) {
  int status = u->resp.status;
  bool until_close = false;
  const char *reason = NULL;

  memset(o, 0, sizeof(*o));
  if (status != 101 && status >= 200 &&
      zg_http_response_framing(&u->resp, u->req_minor, u->head_req, o, codings,
                               codings_cap, &until_close, &reason) != 0) {
    CHECK(reason != NULL && reason[0] != '\0');
    return -1;
  }
  if (status == 101) {
    const zg_hdr_t *up = zg_http_find(&u->resp, "upgrade");
    snprintf(proto, proto_cap, "%.*s",
             up ? (int)up->value_len : (int)strlen("websocket"),
             up ? u->resp.buf + up->value_off : "websocket");
    o->upgrade = proto;
  } else if (status >= 100 && status < 200) {
    o->framing = ZG_FRAMING_NONE;
  } else {
    CHECK(!(o->framing == ZG_FRAMING_CHUNKED && u->req_minor == 0));
    CHECK(!(until_close && codings[0]));
    CHECK(o->framing != ZG_FRAMING_LENGTH ||
          (u->resp.has_length && o->body_length == u->resp.content_length));
    u->chunked_out = o->framing == ZG_FRAMING_CHUNKED;
    u->by_length =
        u->resp.has_length && !u->head_req && status != 204 && status != 304;
    u->length = u->resp.content_length;
    if (until_close || !u->client_keep)
      u->close_after = true;
    o->close = u->close_after;
    o->keep_alive = !u->close_after && u->req_minor == 0;
  }
  return 0;
}

static int resp_on_headers_complete(llhttp_t *p) {
  upstream_t *u = p->data;
  zg_http_resp_out_t o;
  const char *reason = NULL;
  char codings[256], proto[64];
  int n, status = p->status_code;

  u->resp.buf = u->head;
  u->resp.is_request = false;
  u->resp.status = status;
  zg_http_head_framing(&u->resp, p);
  if (status == 101 && !u->upgrade_asked) {
    llhttp_set_error_reason(p, "unrequested 101 Switching Protocols");
    return -1;
  }
  /* The pre-scan over the whole buffer stops at the end of the head. */
  {
    const char *bounded_reason;
    int bounded = zg_http_prescan(
        u->head, zg_http_head_end(u->head, u->head_len), &bounded_reason);
    CHECK(zg_http_prescan(u->head, u->head_len, &reason) == bounded);
  }
  if (zg_http_prescan(u->head, u->head_len, &reason) != 0 ||
      zg_http_check_response(&u->resp, &reason) != 0) {
    CHECK(reason != NULL && reason[0] != '\0');
    llhttp_set_error_reason(p, reason);
    return -1;
  }
  /* What the checks promise the framing code. */
  CHECK(u->resp.major == 1);
  CHECK(!(u->resp.chunked && u->resp.has_length));
  CHECK(!u->resp.has_length ||
        u->resp.content_length <= ZG_HTTP_MAX_CONTENT_LENGTH);
  if (prepare(u, &o, codings, sizeof(codings), proto, sizeof(proto)) != 0) {
    llhttp_set_error_reason(p, "response cannot be passed on");
    return -1;
  }
  n = zg_http_write_response(out_head, FZ_OUT_HEAD_MAX, &u->resp, &o);
  if (n < 0) {
    /* Only an Upgrade value that cannot be written back fails with this
     * room; the gateway answers 502. */
    CHECK(status == 101);
    llhttp_set_error_reason(p, "response head cannot be written");
    return -1;
  }
  check_response_out(out_head, n, &u->resp, &o);
  digest(u->d, out_head, (size_t)n);
  if (status == 101 || status >= 200)
    u->rd.head_seen = 1;
  if (status == 101)
    return 2; /* llhttp: a tunnel from the end of the head */
  return zg_http_response_bodiless(status, u->head_req) ? 1 : 0;
}

static int resp_on_body(llhttp_t *p, const char *at, size_t len) {
  upstream_t *u = p->data;
  (void)at;
  CHECK(u->rd.head_seen && len > 0);
  u->body += len;
  CHECK(!u->by_length || u->body <= u->length);
  return 0; /* the gateway passes it on */
}

static int resp_on_message_complete(llhttp_t *p) {
  upstream_t *u = p->data;
  int status = p->status_code;
  if (status == 101)
    return 0; /* llhttp_execute returns HPE_PAUSED_UPGRADE */
  if (status >= 100 && status < 200) {
    u->rd.head_seen = 0;
    u->resp.n_hdr = 0;
    u->resp.reason_len = 0;
    u->rd.value_open = 0;
    return HPE_PAUSED;
  }
  CHECK(!u->by_length || u->body == u->length);
  u->resp_done = true;
  return HPE_PAUSED;
}

static llhttp_settings_t resp_settings;

/* The exchange's end: what went to the client beyond the heads. */
static void exchange_end(upstream_t *u, uint64_t *d, int how) {
  digest_int(d, how);
  digest(d, &u->body, sizeof(u->body));
  digest_int(d, u->close_after);
  /* Trailers are passed on after a chunked body only. */
  if (how == 0 && u->chunked_out)
    trailers_check(&u->tr, d);
  zg_http_trailers_clear(&u->tr);
}

/* upstream_parse() over reads of `step` bytes. */
static uint64_t run_response(const char *data, size_t size, size_t step,
                             unsigned ctx) {
  uint64_t d = 0xcbf29ce484222325ULL;
  upstream_t u;
  llhttp_t p;
  size_t in_len = 0;

  memset(&u, 0, sizeof(u));
  u.head = data;
  u.head_req = (ctx & 1) != 0;
  u.req_minor = (ctx & 2) ? 0 : 1;
  u.client_keep = (ctx & 4) == 0;
  /* An HTTP/1.0 client's Upgrade is not passed on (request_upgrade). */
  u.upgrade_asked = (ctx & 8) != 0 && u.req_minor == 1;
  u.rd.trailers = &u.tr;
  u.d = &d;
  llhttp_init(&p, HTTP_RESPONSE, &resp_settings);
  p.data = &u;
  while (in_len < size) {
    const char *chunk = data + in_len;
    size_t len;
    in_len = size - in_len > step ? in_len + step : size; /* one read */
    len = (size_t)(data + in_len - chunk);
    for (;;) {
      llhttp_errno_t err;
      const char *stop;
      u.head_len = (size_t)(data + in_len - u.head);
      u.rd.head = &u.resp;
      u.rd.base = u.head;
      err = llhttp_execute(&p, chunk, len);
      if (err == HPE_OK)
        break;
      if (err == HPE_PAUSED_UPGRADE) {
        /* A tunnel: the rest is the upgraded protocol's. */
        CHECK(u.upgrade_asked && p.status_code == 101);
        exchange_end(&u, &d, 2);
        return d;
      }
      if (err != HPE_PAUSED) {
        error_response(502, "bad response from the instance", u.head_req);
        exchange_end(&u, &d, -1);
        return d;
      }
      stop = llhttp_get_error_pos(&p);
      CHECK(stop >= chunk && stop <= chunk + len);
      if (u.resp_done) {
        exchange_end(&u, &d, 0);
        return d;
      }
      /* an interim response: a fresh head from here */
      llhttp_resume(&p);
      len -= (size_t)(stop - chunk);
      chunk = stop;
      if (!u.rd.head_seen)
        u.head = stop;
    }
  }
  /* The instance closed: a body read until close ends there, anything
   * else is cut short. */
  digest_int(&d, llhttp_finish(&p) == HPE_OK && u.rd.head_seen);
  exchange_end(&u, &d, 1);
  return d;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ULL, whole, split;
  static bool init;
  unsigned ctx;
  size_t step;

  if (!init) {
    zg_http_response_settings(&resp_settings, resp_on_headers_complete,
                              resp_on_body, resp_on_message_complete);
    init = true;
  }
  if (size < 1 || size > HEAD_MAX)
    return 0;
  ctx = data[0];
  data++;
  size--;
  digest(&h, data, size);
  step = 1 + (size_t)(h % 13); /* small reads, chosen by the input */

  whole = run_response((const char *)data, size, size, ctx);
  split = run_response((const char *)data, size, step, ctx);
  CHECK(whole == split);
  return 0;
}
