/* User-mode form: a static Linux program printing the same protocol to
 * stdout with mode "user".  It cannot change CR4/XCR0; it reports what the
 * guest kernel set up (XCR0 via XGETBV when OSXSAVE is on). */
#include <unistd.h>

#include "probe.h"

static char buf[1 << 16];
static unsigned int used;

static void flush(void)
{
	unsigned int off = 0;
	while (off < used) {
		ssize_t n = write(1, buf + off, used - off);
		if (n <= 0)
			break;
		off += (unsigned int)n;
	}
	used = 0;
}

void plat_write(const char *s, u32 n)
{
	while (n--) {
		if (used == sizeof(buf))
			flush();
		buf[used++] = *s++;
	}
}

void plat_exit(int ok)
{
	flush();
	_exit(ok ? 0 : 1);
}

static void rc(u32 leaf, u32 sub)
{
	struct regs r;
	cpuid(leaf, sub, &r);
	rpt_cpuid_line("RC", leaf, sub, &r);
}

int main(void)
{
	struct regs r0, r1, r7;
	rpt_header("user");
	rpt_section_begin("user");
	enumerate_all();
	cpuid(0, 0, &r0);
	cpuid(1, 0, &r1);
	if (!((r1.ecx >> 26) & 1)) {
		put_str("RT osxsave skip reason=no-xsave");
		line_end();
	} else {
		put_str("RT osxsave observed cr4=- xcr0=");
		if ((r1.ecx >> 27) & 1) {
			u32 lo, hi;
			__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
			put_hex64(((u64)hi << 32) | lo);
		} else {
			put_char('-');
		}
		put_str(" fault=-");
		line_end();
		rc(1, 0);
		rc(0xD, 0);
		rc(0xD, 1);
	}
	cpuid(7, 0, &r7);
	if (r0.eax < 7) {
		put_str("RT pke skip reason=no-leaf-7");
		line_end();
	} else if (!((r7.ecx >> 3) & 1)) {
		put_str("RT pke skip reason=no-pku");
		line_end();
	} else {
		put_str("RT pke observed cr4=- xcr0=- fault=-");
		line_end();
		rc(7, 0);
	}
	rpt_section_end();
	rpt_done("ok");
	plat_exit(1);
	return 0;
}
