/* 32-bit protected mode: entered from the PVH note (form=pvh) or from the
 * boot-sector stage (form=bootsector).  Reports, then prepares long mode:
 * copies the 64-bit core to CORE64_ADDR and builds identity page tables
 * (first 1 GiB, 2 MiB pages).  Returns the CR3 value for entry32.S. */
#include "ring0.h"

#define CORE64_ADDR 0x200000u

extern const char _core64_start[], _core64_end[];
extern const u32 isr_stubs32[32];

struct gate32 {
	u16 off_lo, sel;
	u8 zero, type;
	u16 off_hi;
} __attribute__((packed));

static struct gate32 idt[32] __attribute__((aligned(8)));
static u64 pml4[512] __attribute__((aligned(4096)));
static u64 pdpt[512] __attribute__((aligned(4096)));
static u64 pd[512] __attribute__((aligned(4096)));

static void idt_setup(void)
{
	struct {
		u16 limit;
		u32 base;
	} __attribute__((packed)) desc;
	int i;
	for (i = 0; i < 32; i++) {
		idt[i].off_lo = (u16)isr_stubs32[i];
		idt[i].off_hi = (u16)(isr_stubs32[i] >> 16);
		idt[i].sel = 0x08;
		idt[i].zero = 0;
		idt[i].type = 0x8E;
	}
	desc.limit = sizeof(idt) - 1;
	desc.base = (u32)idt;
	__asm__ volatile("lidt %0" : : "m"(desc));
}

static int has_long_mode(void)
{
	struct regs r;
	cpuid(0x80000000, 0, &r);
	if (r.eax < 0x80000001 || r.eax > 0x800000FF)
		return 0;
	cpuid(0x80000001, 0, &r);
	return (r.edx >> 29) & 1;
}

/* PVH start info (Xen's hvm_start_info): magic, version, flags, nr_modules,
 * modlist_paddr, cmdline_paddr, ... */
#define HVM_START_MAGIC 0x336ec578u

struct hvm_start_info {
	u32 magic, version, flags, nr_modules;
	u64 modlist_paddr, cmdline_paddr;
} __attribute__((packed));

/* Does the PVH command line (-append) contain word w? */
static int cmdline_has(const struct hvm_start_info *si, const char *w)
{
	const char *p;
	if (!si || si->magic != HVM_START_MAGIC || !si->cmdline_paddr || si->cmdline_paddr >= 0x100000000ull)
		return 0;
	for (p = (const char *)(u32)si->cmdline_paddr; *p; p++) {
		const char *a = p, *b = w;
		while (*b && *a == *b) {
			a++;
			b++;
		}
		if (!*b && (*a == 0 || *a == ' ') && (p == (const char *)(u32)si->cmdline_paddr || p[-1] == ' '))
			return 1;
	}
	return 0;
}

u32 main32(u32 pvh, const struct hvm_start_info *si)
{
	u32 i;
	serial_init();
	idt_setup();
	if (pvh)
		rpt_header("pvh");
	rpt_section_begin("prot32");
	/* self-test of the failure path (tests/e2e): an unexpected #UD must end
	 * in a FAULT line, "DONE status=fail:fault-6" and exit status 35 */
	if (cmdline_has(si, "rig.selftest=fault"))
		__asm__ volatile("ud2");
	runtime_reset();
	enumerate_all();
	runtime_experiments();
	rpt_section_end();
	if (!has_long_mode()) {
		rpt_skip("long64", "no-lm");
		rpt_done("ok");
		plat_exit(1);
	}
	memcpy((void *)CORE64_ADDR, _core64_start, (unsigned long)(_core64_end - _core64_start));
	for (i = 0; i < 512; i++)
		pd[i] = ((u64)i << 21) | 0x83; /* present, writable, 2 MiB */
	pdpt[0] = (u32)pd | 0x3;
	pml4[0] = (u32)pdpt | 0x3;
	return (u32)pml4;
}
