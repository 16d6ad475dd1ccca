/* Ring-0 helpers shared by the real, prot32 and long64 builds. */
#ifndef RIG_PROBE_RING0_H
#define RIG_PROBE_RING0_H
#include "probe.h"

#ifdef __x86_64__
#define MOVW_PTR "movq"
#else
#define MOVW_PTR "movl"
#endif

/* When non-zero, the exception handlers resume here instead of failing and
 * store the vector in fault_vec (see the try_* helpers in runtime.c). */
extern volatile unsigned long fault_fixup;
extern volatile u32 fault_vec;

void serial_init(void);
void fault_fatal(u32 vec, u32 err, unsigned long ip);
#endif
