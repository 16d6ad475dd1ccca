/* COM1 output and isa-debug-exit for the ring-0 forms (real, prot32, long64). */
#include "probe.h"

#define COM1 0x3F8
/* isa-debug-exit: QEMU's default port (plain `-device isa-debug-exit`,
 * iobase=0x501 iosize=2) and the kvm-unit-tests one the rig's command lines
 * use (iobase=0xf4,iosize=4, rig/qemu/cmdline.py).  A write to a port with no
 * device behind it is ignored, so the probe writes both and works with either. */
#define DEBUG_EXIT_PORT_DEFAULT 0x501
#define DEBUG_EXIT_PORT_KUT 0xF4

static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

void serial_init(void)
{
	outb(COM1 + 1, 0x00); /* no interrupts */
	outb(COM1 + 3, 0x80); /* DLAB */
	outb(COM1 + 0, 0x01); /* 115200 baud */
	outb(COM1 + 1, 0x00);
	outb(COM1 + 3, 0x03); /* 8N1 */
	outb(COM1 + 2, 0xC7); /* FIFO on, cleared */
	outb(COM1 + 4, 0x03); /* DTR, RTS */
}

/* Wait (bounded) until the transmitter is empty: an absent UART reads 0xFF. */
static void wait_thr_empty(void)
{
	u32 spin;
	for (spin = 0; spin < 100000; spin++)
		if (inb(COM1 + 5) & 0x40) /* TEMT: FIFO and shift register empty */
			break;
}

/* A line goes out in chunks of the 16550's 16-byte FIFO, each one
 * `rep outsb` after the FIFO has drained: two port accesses per chunk
 * instead of two per byte (under KVM, one exit per chunk). */
void plat_write(const char *s, u32 n)
{
	while (n) {
		/* not `n < 16 ? n : 16`: GCC folds that to MIN, which it emits
		 * as CMOVcc whatever the flags (see the Makefile) */
		unsigned long k = 16;
		if (n < 16)
			k = n;
		n -= (u32)k;
		wait_thr_empty();
		__asm__ volatile("rep outsb" : "+S"(s), "+c"(k) : "d"((u16)COM1) : "memory");
	}
}

void plat_exit(int ok)
{
	u8 v = ok ? PROBE_EXIT_OK : PROBE_EXIT_FAIL;
	outl(DEBUG_EXIT_PORT_KUT, v);
	outb(DEBUG_EXIT_PORT_DEFAULT, v);
	for (;;)
		__asm__ volatile("cli; hlt");
}
