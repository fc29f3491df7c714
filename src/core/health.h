/* Rise and fall: turning a series of check results into a healthy or
 * unhealthy state, as HAProxy and Nerve count them. Only consecutive
 * results count: a failure between passes starts the count again, so a
 * flapping instance neither leaves nor enters rotation on scattered
 * results. Pure code. */
#ifndef ZKGATE_HEALTH_H
#define ZKGATE_HEALTH_H

#include <stdbool.h>

typedef struct {
  unsigned rise, fall; /* >= 1 */
  bool healthy;
  unsigned passes;   /* consecutive passing results, up to now */
  unsigned failures; /* consecutive failing results, up to now */
} zg_health_t;

typedef enum {
  ZG_HEALTH_SAME = 0,
  ZG_HEALTH_UP,   /* `rise` passes in a row made it healthy */
  ZG_HEALTH_DOWN, /* `fall` failures in a row made it unhealthy */
} zg_health_change_t;

void zg_health_init(zg_health_t *h, unsigned rise, unsigned fall, bool healthy);
/* Records one result; says whether it changed the state. */
zg_health_change_t zg_health_record(zg_health_t *h, bool ok);

#endif
