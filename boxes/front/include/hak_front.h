/* hak_front.h — size classes: the table every box uses to turn a size into a class and back. */
#ifndef HAK_FRONT_H
#define HAK_FRONT_H

#include "hak_base.h"

/* Class 0 means "not a small block". Classes 1..32 are tiny (16 B..1 KiB),
 * 33..72 mid (1152 B..32 KiB); eight classes per doubling above 128 B keep
 * internal waste at or below 12.5%. */
#define HK_NCLASS 73
#define HK_TINY_LAST 32
#define HK_TINY_MAX 1024u
#define HK_SMALL_MAX 32768u
#define HK_MEDIUM_MAX ((size_t)1 << 20)

extern HK_HIDDEN const uint32_t hk_class_size[HK_NCLASS];
/* Size -> class with no loop and no division: hk_class_by16[(n + 15) >> 4]
 * for n <= 1 KiB, hk_class_by128[(n + 127) >> 7] up to 32 KiB. */
extern HK_HIDDEN const uint8_t hk_class_by16[HK_TINY_MAX / 16 + 1];
extern HK_HIDDEN const uint8_t hk_class_by128[HK_SMALL_MAX / 128 + 1];

#endif /* HAK_FRONT_H */
