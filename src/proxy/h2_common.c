/* What the HTTP/2 codecs do alike. See h2_common.h. */
#include "proxy/h2_common.h"

#include "proxy/h2.h"
#include "proxy/h1.h"

#include <stdlib.h>
#include <string.h>

int zg_h2_buf_append(char **b, size_t *len, size_t *cap, const char *p,
                     size_t n) {
  if (n == 0)
    return 0;
  if (*len + n > *cap) {
    size_t want = *cap ? *cap * 2 : 4096;
    char *nb;
    while (want < *len + n)
      want *= 2;
    if (!(nb = realloc(*b, want)))
      return -1;
    *b = nb;
    *cap = want;
  }
  memcpy(*b + *len, p, n);
  *len += n;
  return 0;
}

int zg_h2_queue_put(zg_h2_queue_t *q, const char *p, size_t n) {
  size_t end;
  if (!q->keep && q->off > 0 && q->off + q->len + n > q->cap) {
    memmove(q->b, q->b + q->off, q->len);
    q->off = 0;
  }
  end = q->off + q->len;
  if (zg_h2_buf_append(&q->b, &end, &q->cap, p, n) != 0)
    return -1;
  q->len += n;
  return 0;
}

ssize_t zg_h2_queue_read(zg_h2_queue_t *q, uint8_t *buf, size_t length,
                         bool eof, bool trailers, uint32_t *flags) {
  size_t n = length < q->len ? length : q->len;
  if (n == 0 && !eof)
    return NGHTTP2_ERR_DEFERRED;
  if (n > 0)
    memcpy(buf, q->b + q->off, n);
  q->off += n;
  q->len -= n;
  if (q->len == 0 && !q->keep)
    q->off = 0;
  if (q->len == 0 && eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (trailers)
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  }
  return (ssize_t)n;
}

void zg_h2_lower(char *dst, const char *src, size_t n) {
  for (size_t j = 0; j < n; j++)
    dst[j] = (src[j] >= 'A' && src[j] <= 'Z') ? (char)(src[j] + 32) : src[j];
}

size_t zg_h2_trailers_nv(const zg_http_trailers_t *t, nghttp2_nv *nva,
                         char *names, size_t cap) {
  size_t k = 0, at = 0;
  for (uint32_t i = 0; i < t->n; i++) {
    const zg_hdr_t *f = &t->f[i];
    char *ln = names + at;
    if (at + f->name_len + 1 > cap)
      break;
    zg_h2_lower(ln, t->buf + f->name_off, f->name_len);
    at += f->name_len;
    if (!zg_http_trailer_forwardable(ln, f->name_len))
      continue;
    nva[k++] = (nghttp2_nv){(uint8_t *)ln,
                            (uint8_t *)(uintptr_t)(t->buf + f->value_off),
                            f->name_len, f->value_len, NGHTTP2_NV_FLAG_NONE};
  }
  return k;
}

bool zg_h2_hop_field(const char *name, size_t len) {
  static const char *const hop[] = {"connection",       "keep-alive",
                                    "proxy-connection", "transfer-encoding",
                                    "upgrade",          "te"};
  for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
    if (strlen(hop[i]) == len && !memcmp(name, hop[i], len))
      return true;
  return false;
}

int zg_h2_session_setup(const zg_h2_cbs_t *f, nghttp2_session_callbacks **cbs,
                        nghttp2_option **opt) {
  if (nghttp2_session_callbacks_new(cbs) != 0)
    return -1;
  if (nghttp2_option_new(opt) != 0) {
    nghttp2_session_callbacks_del(*cbs);
    *cbs = NULL;
    return -1;
  }
  nghttp2_session_callbacks_set_on_begin_headers_callback(*cbs,
                                                          f->begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(*cbs, f->header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(*cbs, f->frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(*cbs,
                                                            f->data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(*cbs, f->stream_close);
  nghttp2_option_set_no_auto_window_update(*opt, 1);
  nghttp2_option_set_max_outbound_ack(*opt, ZG_H2_MAX_OUTBOUND_ACK);
  nghttp2_option_set_max_settings(*opt, ZG_H2_MAX_SETTINGS);
  nghttp2_option_set_max_continuations(*opt, ZG_H2_MAX_CONTINUATIONS);
  return 0;
}
