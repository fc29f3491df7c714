/* Checks shared by the HTTP fuzz targets; see fuzz_http.c. */
#ifndef ZKGATE_FUZZ_HTTP_H
#define ZKGATE_FUZZ_HTTP_H

#include "core/http_msg.h"

#include <llhttp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* As in src/proxy/exchange.h and exchange.c. */
#define FZ_OUT_HEAD_MAX 81920
/* The client's address the request heads carry. */
#define FZ_CLIENT_IP "192.0.2.7"

/* Prints what failed (and the head being checked), then abort(). */
void check_failed(const char *file, int line, const char *what);

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      check_failed(__FILE__, __LINE__, #cond);                                 \
  } while (0)

/* Output buffers (too large for the stack). */
extern char out_head[FZ_OUT_HEAD_MAX];
extern char out_again[FZ_OUT_HEAD_MAX];

/* A transcript digest, FNV-1a: what one run wrote. */
void digest(uint64_t *d, const void *p, size_t n);
void digest_int(uint64_t *d, int v);

bool is_ws(char c);

/* Lines end with CRLF, no CR or LF elsewhere, no NUL, and the first empty
 * line is the last one. Returns the length of the first line. */
size_t check_lines(const char *out, size_t n);

/* The head must read back with llhttp (strict) as one head ending exactly
 * at `end`, with n_fields header lines, HTTP/1.1, and pass the pre-scan.
 * *p is left for its flags. */
void readback(llhttp_t *p, llhttp_type_t type, const char *out, size_t n,
              const char *end, size_t n_fields);

/* A request head written for an instance (zg_http_write_request): host is
 * the Host value it must carry. */
void check_request_out(const char *out, int n, const zg_http_head_t *h,
                       const zg_http_req_out_t *o, const char *host,
                       size_t host_len);
/* A response head written for the client (zg_http_write_response). */
void check_response_out(const char *out, int n, const zg_http_head_t *h,
                        const zg_http_resp_out_t *o);
/* The gateway's own answer (respond_error). */
void error_response(int status, const char *message, bool head_request);
/* The trailers the reader kept: in bounds and in order; the forwardable
 * ones digested; then emptied. */
void trailers_check(zg_http_trailers_t *t, uint64_t *d);

#endif
