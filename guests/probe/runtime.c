/* Runtime CPUID bits (ring 0): leaf 1 ECX.OSXSAVE and leaf 0xD before/after
 * CR4.OSXSAVE + XSETBV, leaf 7.0 ECX.OSPKE before/after CR4.PKE.
 * Faults (e.g. a hypervisor refusing the CR4 write) are recovered and
 * reported in the RT line instead of killing the probe. */
#include "ring0.h"

#define CR4_OSXSAVE (1ul << 18)
#define CR4_PKE (1ul << 22)

/* XCR0 as last loaded by a successful XSETBV.  The probe reports this value
 * rather than reading XCR0 back with XGETBV: under PVM (the machine's
 * /dev/kvm) XGETBV in the guest kernel is a KVM emulation failure that stops
 * the VM, whereas XSETBV is emulated.  The CPUID rows after the experiment
 * (0xD.0.EBX: size for the enabled XCR0 features) show its effect. */
static u64 xcr0_loaded;

static unsigned long read_cr4(void)
{
	unsigned long v;
	__asm__ volatile("mov %%cr4, %0" : "=r"(v));
	return v;
}

/* returns -1 on success, else the exception vector */
static int try_write_cr4(unsigned long v)
{
	fault_vec = 0xFFFFFFFFu;
	__asm__ volatile(MOVW_PTR " $1f, %0\n\t"
			 "mov %1, %%cr4\n"
			 "1:"
			 : "+m"(fault_fixup)
			 : "r"(v)
			 : "memory");
	fault_fixup = 0;
	return (int)fault_vec;
}

static int try_xsetbv(u32 lo, u32 hi)
{
	fault_vec = 0xFFFFFFFFu;
	__asm__ volatile(MOVW_PTR " $1f, %0\n\t"
			 "xsetbv\n"
			 "1:"
			 : "+m"(fault_fixup)
			 : "a"(lo), "d"(hi), "c"(0)
			 : "memory");
	fault_fixup = 0;
	if ((int)fault_vec < 0)
		xcr0_loaded = ((u64)hi << 32) | lo;
	return (int)fault_vec;
}

static void rc(u32 leaf, u32 sub)
{
	struct regs r;
	cpuid(leaf, sub, &r);
	rpt_cpuid_line("RC", leaf, sub, &r);
}

static void rt_line(const char *exp, const char *phase, const char *fault_what, int vec)
{
	unsigned long cr4 = read_cr4();
	put_str("RT ");
	put_str(exp);
	put_char(' ');
	put_str(phase);
	put_str(" cr4=");
	put_hex32((u32)cr4);
	put_str(" xcr0=");
	if ((cr4 & CR4_OSXSAVE) && xcr0_loaded)
		put_hex64(xcr0_loaded);
	else
		put_char('-');
	put_str(" fault=");
	if (vec < 0) {
		put_char('-');
	} else {
		put_str(fault_what);
		put_char(':');
		put_dec((u32)vec);
	}
	line_end();
}

static void rt_skip(const char *exp, const char *reason)
{
	put_str("RT ");
	put_str(exp);
	put_str(" skip reason=");
	put_str(reason);
	line_end();
}

void runtime_reset(void)
{
	unsigned long cr4 = read_cr4();
	if (cr4 & CR4_OSXSAVE) {
		try_xsetbv(1, 0);
		try_write_cr4(cr4 & ~CR4_OSXSAVE);
	}
	cr4 = read_cr4();
	if (cr4 & CR4_PKE)
		try_write_cr4(cr4 & ~CR4_PKE);
	xcr0_loaded = 0;
}

/* QEMU's TCG (7.2 and 10.0 at least) decides whether CR4.OSXSAVE is reserved
 * from the 0xD.1.EAX feature word (xsaveopt/xsavec/xgetbv1/xsaves) instead of
 * CPUID.1:ECX.XSAVE, and its CR4 write helper answers a reserved bit outside an
 * SVM guest with a VM exit that never returns: the vCPU spins on the MOV to
 * CR4.  A model with xsave but none of those (Opteron_G4/G5, xsaveopt=off)
 * would hang the probe, so under TCG (hypervisor signature "TCGTCGTCGTCG")
 * the experiment is skipped with its own reason; other hypervisors and bare
 * metal still run it. */
static int tcg_osxsave_reserved(void)
{
	struct regs rh, r0, rd;

	/* QEMU answers 0x40000000 under TCG even with hypervisor=off, so the
	 * signature is read whatever CPUID.1:ECX[31] says; on bare metal an
	 * out-of-range leaf never reads "TCGTCGTCGTCG". */
	cpuid(0x40000000u, 0, &rh);
	if (rh.ebx != 0x54474354u || rh.ecx != 0x43544743u || rh.edx != 0x47435447u)
		return 0;
	cpuid(0, 0, &r0);
	if (r0.eax < 0xD)
		return 1;
	cpuid(0xD, 1, &rd);
	return rd.eax == 0;
}

static void osxsave_experiment(void)
{
	struct regs r1, rd;
	int vec;
	const char *what = "cr4";

	cpuid(1, 0, &r1);
	if (!((r1.ecx >> 26) & 1)) {
		rt_skip("osxsave", "no-xsave");
		return;
	}
	if (tcg_osxsave_reserved()) {
		rt_skip("osxsave", "tcg-osxsave-reserved");
		return;
	}
	rt_line("osxsave", "before", "", -1);
	rc(1, 0);
	rc(0xD, 0);
	rc(0xD, 1);
	vec = try_write_cr4(read_cr4() | CR4_OSXSAVE);
	if (vec < 0) {
		cpuid(0xD, 0, &rd);
		what = "xsetbv";
		vec = try_xsetbv(rd.eax | 1u, rd.edx);
	}
	rt_line("osxsave", "after", what, vec);
	rc(1, 0);
	rc(0xD, 0);
	rc(0xD, 1);
}

static void pke_experiment(void)
{
	struct regs r0, r7;
	int vec;

	cpuid(0, 0, &r0);
	if (r0.eax < 7) {
		rt_skip("pke", "no-leaf-7");
		return;
	}
	cpuid(7, 0, &r7);
	if (!((r7.ecx >> 3) & 1)) {
		rt_skip("pke", "no-pku");
		return;
	}
	rt_line("pke", "before", "", -1);
	rc(7, 0);
	vec = try_write_cr4(read_cr4() | CR4_PKE);
	rt_line("pke", "after", "cr4", vec);
	rc(7, 0);
}

void runtime_experiments(void)
{
	osxsave_experiment();
	pke_experiment();
	runtime_reset();
}
