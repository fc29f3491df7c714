/* Rise and fall counting of check results. See health.h. */
#include "core/health.h"

#include <limits.h>

void zg_health_init(zg_health_t *h, unsigned rise, unsigned fall,
                    bool healthy) {
  h->rise = rise ? rise : 1;
  h->fall = fall ? fall : 1;
  h->healthy = healthy;
  h->passes = 0;
  h->failures = 0;
}

zg_health_change_t zg_health_record(zg_health_t *h, bool ok) {
  if (ok) {
    h->failures = 0;
    if (h->passes < UINT_MAX)
      h->passes++;
    if (!h->healthy && h->passes >= h->rise) {
      h->healthy = true;
      return ZG_HEALTH_UP;
    }
  } else {
    h->passes = 0;
    if (h->failures < UINT_MAX)
      h->failures++;
    if (h->healthy && h->failures >= h->fall) {
      h->healthy = false;
      return ZG_HEALTH_DOWN;
    }
  }
  return ZG_HEALTH_SAME;
}
