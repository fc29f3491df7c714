/* What the HTTP/2 codecs (h2_server.c, h2_client.c) do alike: the byte
 * queues a data provider reads, field names for HPACK, the nghttp2
 * callbacks and options both sessions start from. */
#ifndef ZKGATE_PROXY_H2_COMMON_H
#define ZKGATE_PROXY_H2_COMMON_H

#include "core/http_msg.h"

#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* `n` bytes at `p` appended to the buffer *b of *len bytes in *cap
 * (grown by doubling from 4 KiB). 0, or -1 out of memory. */
int zg_h2_buf_append(char **b, size_t *len, size_t *cap, const char *p,
                     size_t n);

/* A queue of body bytes: `len` bytes at b + off. With `keep`, the bytes
 * already taken stay before them (b holds all that was put), so that
 * they can be sent again. */
typedef struct zg_h2_queue {
  char *b;
  size_t off, len, cap;
  bool keep;
} zg_h2_queue_t;

/* `n` bytes queued (the bytes already taken make room first). 0 or -1. */
int zg_h2_queue_put(zg_h2_queue_t *q, const char *p, size_t n);

/* A data provider's read of the queue: up to `length` bytes into `buf`
 * (their count), or NGHTTP2_ERR_DEFERRED when it is empty and `eof` not
 * yet set. At the end (`eof`, empty) NGHTTP2_DATA_FLAG_EOF, and with
 * `trailers` NGHTTP2_DATA_FLAG_NO_END_STREAM: the caller submits them. */
ssize_t zg_h2_queue_read(zg_h2_queue_t *q, uint8_t *buf, size_t length,
                         bool eof, bool trailers, uint32_t *flags);

/* `n` bytes of a field name lower-cased into `dst`. */
void zg_h2_lower(char *dst, const char *src, size_t n);

/* The trailers `t` that may be forwarded as name/value pairs in `nva`
 * (ZG_HTTP_MAX_TRAILERS of them), lower-case names in `names` (`cap`
 * bytes; ZG_HTTP_EXTRA_MAX hold them all). The count. */
size_t zg_h2_trailers_nv(const zg_http_trailers_t *t, nghttp2_nv *nva,
                         char *names, size_t cap);

/* Whether the lower-case `name` is a connection-specific field, never
 * sent over HTTP/2 (RFC 9113 §8.2.2): TE too (the codecs add "te:
 * trailers" themselves where it belongs). */
bool zg_h2_hop_field(const char *name, size_t len);

/* The callbacks both codecs set, and the options both start from (no
 * automatic WINDOW_UPDATE, the bounds on ACKs, SETTINGS entries and
 * CONTINUATION frames of h2.h). 0, or -1 out of memory. */
typedef struct zg_h2_cbs {
  nghttp2_on_begin_headers_callback begin_headers;
  nghttp2_on_header_callback header;
  nghttp2_on_frame_recv_callback frame_recv;
  nghttp2_on_data_chunk_recv_callback data_chunk;
  nghttp2_on_stream_close_callback stream_close;
} zg_h2_cbs_t;

int zg_h2_session_setup(const zg_h2_cbs_t *f, nghttp2_session_callbacks **cbs,
                        nghttp2_option **opt);

#endif
