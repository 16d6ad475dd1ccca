/* 64-bit long mode: entered from entry32.S through entry64.S. */
#include "ring0.h"

extern const u64 isr_stubs64[32];

struct gate64 {
	u16 off_lo, sel;
	u8 ist, type;
	u16 off_mid;
	u32 off_hi, zero;
} __attribute__((packed));

static struct gate64 idt[32] __attribute__((aligned(16)));

static void idt_setup(void)
{
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) desc;
	int i;
	for (i = 0; i < 32; i++) {
		u64 a = isr_stubs64[i];
		idt[i].off_lo = (u16)a;
		idt[i].off_mid = (u16)(a >> 16);
		idt[i].off_hi = (u32)(a >> 32);
		idt[i].sel = 0x18;
		idt[i].ist = 0;
		idt[i].type = 0x8E;
		idt[i].zero = 0;
	}
	desc.limit = sizeof(idt) - 1;
	desc.base = (u64)idt;
	__asm__ volatile("lidt %0" : : "m"(desc));
}

void main64(void)
{
	idt_setup();
	serial_init();
	rpt_section_begin("long64");
	runtime_reset();
	enumerate_all();
	runtime_experiments();
	rpt_section_end();
	rpt_done("ok");
	plat_exit(1);
}
