/* Exceptions in ring 0: recover for the try_* helpers, else report and fail. */
#include "ring0.h"

volatile unsigned long fault_fixup;
volatile u32 fault_vec;

void fault_fatal(u32 vec, u32 err, unsigned long ip)
{
	line_flush_partial();
	put_str("FAULT mode=");
	put_str(rpt_current_mode());
	put_str(" vec=");
	put_dec(vec);
	put_str(" err=");
	put_hex32(err);
	put_str(" ip=");
	put_hex64((u64)ip);
	line_end();
	rpt_done_fault(vec);
	plat_exit(0);
}
