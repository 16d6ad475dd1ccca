/* Architectural CPUID enumeration: the rules of rig/cpuid/enumeration.py,
 * written once in C for every form.  Every loop is bounded by MAX_SUBLEAF
 * or by the 0xFF-leaf cap of a range. */
#include "probe.h"

#define MAX_SUBLEAF 64

static void emit(u32 leaf, u32 sub, const struct regs *r)
{
	rpt_cpuid_line("C", leaf, sub, r);
}

static void emit_fresh(u32 leaf, u32 sub)
{
	struct regs r;
	cpuid(leaf, sub, &r);
	emit(leaf, sub, &r);
}

/* subleaves 0.. until stop; terminating subleaf included or not */
static void walk_until(u32 leaf, const struct regs *r0, int field, int include_term)
{
	u32 i;
	int emitted = 0;
	for (i = 0; i < MAX_SUBLEAF; i++) {
		struct regs r;
		int stop;
		if (i == 0)
			r = *r0;
		else
			cpuid(leaf, i, &r);
		if (field == 0) /* cache type EAX[4:0] */
			stop = (r.eax & 0x1F) == 0;
		else /* level type ECX[15:8] */
			stop = ((r.ecx >> 8) & 0xFF) == 0;
		if (stop) {
			if (include_term) {
				emit(leaf, i, &r);
				emitted = 1;
			}
			break;
		}
		emit(leaf, i, &r);
		emitted = 1;
	}
	if (!emitted)
		emit(leaf, 0, r0);
}

static void bits_from(u32 leaf, u32 mask, u32 lo, u32 hi)
{
	u32 i;
	for (i = lo; i <= hi; i++)
		if ((mask >> i) & 1)
			emit_fresh(leaf, i);
}

static void one_leaf(u32 leaf, const struct regs *r0, int sgx)
{
	u32 i;
	switch (leaf) {
	case 0x4:
	case 0x8000001D:
		walk_until(leaf, r0, 0, 0);
		return;
	case 0xB:
	case 0x1F:
	case 0x80000026:
		walk_until(leaf, r0, 1, 1);
		return;
	case 0x7:
	case 0x14:
	case 0x17:
	case 0x18:
	case 0x1D:
	case 0x1E:
	case 0x20:
	case 0x24: {
		u32 top = r0->eax;
		if (top > MAX_SUBLEAF - 1)
			top = MAX_SUBLEAF - 1;
		emit(leaf, 0, r0);
		for (i = 1; i <= top; i++)
			emit_fresh(leaf, i);
		return;
	}
	case 0xD: {
		struct regs r1;
		u32 lo, hi;
		cpuid(leaf, 1, &r1);
		emit(leaf, 0, r0);
		emit(leaf, 1, &r1);
		lo = r0->eax | r1.ecx;
		hi = r0->edx | r1.edx;
		for (i = 2; i < 64; i++) {
			u32 bit = i < 32 ? (lo >> i) & 1 : (hi >> (i - 32)) & 1;
			if (bit)
				emit_fresh(leaf, i);
		}
		return;
	}
	case 0xF:
		emit(leaf, 0, r0);
		bits_from(leaf, r0->edx, 1, 31);
		return;
	case 0x10:
	case 0x80000020:
		emit(leaf, 0, r0);
		bits_from(leaf, r0->ebx, 1, 31);
		return;
	case 0x23:
		emit(leaf, 0, r0);
		bits_from(leaf, r0->eax, 1, 31);
		return;
	case 0x12:
		emit(leaf, 0, r0);
		if (!sgx)
			return;
		emit_fresh(leaf, 1);
		for (i = 2; i < MAX_SUBLEAF; i++) {
			struct regs r;
			cpuid(leaf, i, &r);
			if ((r.eax & 0xF) == 0)
				break;
			emit(leaf, i, &r);
		}
		return;
	default:
		emit(leaf, 0, r0);
		return;
	}
}

static void range(u32 base, int *sgx_out)
{
	struct regs r0;
	u32 top, leaf;
	cpuid(base, 0, &r0);
	top = r0.eax;
	if (base != 0 && !(base <= top && top <= base + 0xFF))
		return;
	if (base == 0 && top > 0xFF)
		top = 0xFF;
	for (leaf = base;; leaf++) {
		struct regs r;
		int sgx = 0;
		if (leaf == base)
			r = r0;
		else
			cpuid(leaf, 0, &r);
		if (leaf == 0x12 && sgx_out)
			sgx = *sgx_out;
		if (leaf == 0x7 && sgx_out)
			*sgx_out = (r.ebx >> 2) & 1;
		one_leaf(leaf, &r, sgx);
		if (leaf == top)
			break;
	}
}

void enumerate_all(void)
{
	struct regs v;
	int sgx = 0;
	range(0, &sgx);
	range(0x40000000, 0);
	range(0x80000000, 0);
	cpuid(0, 0, &v);
	/* "CentaurHauls" / "  Shanghai  " in EBX, EDX, ECX */
	if ((v.ebx == 0x746e6543 && v.edx == 0x48727561 && v.ecx == 0x736c7561) ||
	    (v.ebx == 0x68532020 && v.edx == 0x68676e61 && v.ecx == 0x20206961))
		range(0xC0000000, 0);
}
