/* kvm-cpuid-rig bare-metal CPUID probe: declarations shared by every form.
 *
 * The same C sources are compiled four times: -m16 (real mode, boot-sector
 * form), -m32 (32-bit protected mode), -m64 (long mode) and as a static Linux
 * program (user mode).  Each build provides the platform hooks declared at
 * the bottom (plat_write, plat_exit).  See PROTOCOL.md for the output format.
 */
#ifndef RIG_PROBE_H
#define RIG_PROBE_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define PROBE_PROTOCOL_VERSION 1

/* isa-debug-exit values; QEMU exits with (value << 1) | 1 */
#define PROBE_EXIT_OK 0x10   /* QEMU exit status 33 */
#define PROBE_EXIT_FAIL 0x11 /* QEMU exit status 35 */

struct regs {
	u32 eax, ebx, ecx, edx;
};

/* ---- cpu.c / inline: execute CPUID ---- */
static inline void cpuid(u32 leaf, u32 sub, struct regs *r)
{
	__asm__ volatile("cpuid"
			 : "=a"(r->eax), "=b"(r->ebx), "=c"(r->ecx), "=d"(r->edx)
			 : "a"(leaf), "c"(sub));
}

/* ---- report.c: line protocol with framing and CRC-32 ---- */
void put_char(char c);
void put_str(const char *s);
void put_hex32(u32 v);
void put_hex64(u64 v);
void put_dec(u32 v);
void line_end(void);
void rpt_header(const char *form);
void rpt_section_begin(const char *mode);
void rpt_section_end(void);
void rpt_cpuid_line(const char *tag, u32 leaf, u32 sub, const struct regs *r);
void rpt_skip(const char *mode, const char *reason);
void rpt_done(const char *status);
void rpt_done_fault(u32 vec);
void line_flush_partial(void);
const char *rpt_current_mode(void);
u32 crc32_update(u32 crc, const u8 *p, u32 n);

/* ---- enum.c: architectural leaf/subleaf enumeration (rig/cpuid/enumeration.py) ---- */
void enumerate_all(void);

/* ---- runtime.c: CR4.OSXSAVE / CR4.PKE experiments (ring 0 only) ---- */
void runtime_reset(void);
void runtime_experiments(void);

/* ---- lib.c ---- */
void *memset(void *d, int c, unsigned long n);
void *memcpy(void *d, const void *s, unsigned long n);
int str_eq(const char *a, const char *b);

/* ---- provided by each form ---- */
void plat_write(const char *s, u32 n);
void plat_exit(int ok) __attribute__((noreturn));

#endif
