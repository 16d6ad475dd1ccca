/* The line protocol (PROTOCOL.md): every line inside a MODE section is
 * counted and fed, with its trailing '\n', into a zlib-compatible CRC-32;
 * the END line carries both so the host can tell a complete section from a
 * truncated or garbled one. */
#include "probe.h"

#define LINE_MAX 160

static char line[LINE_MAX];
static u32 line_len;
static int in_section;
static u32 sec_lines;
static u32 sec_crc;
static const char *sec_mode = "none";

u32 crc32_update(u32 crc, const u8 *p, u32 n)
{
	crc = ~crc;
	while (n--) {
		int k;
		crc ^= *p++;
		for (k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
	}
	return ~crc;
}

void put_char(char c)
{
	if (line_len < LINE_MAX - 1)
		line[line_len++] = c;
}

void put_str(const char *s)
{
	while (*s)
		put_char(*s++);
}

void put_hex32(u32 v)
{
	static const char digits[] = "0123456789abcdef";
	int i;
	for (i = 28; i >= 0; i -= 4)
		put_char(digits[(v >> i) & 0xF]);
}

void put_hex64(u64 v)
{
	put_hex32((u32)(v >> 32));
	put_hex32((u32)v);
}

void put_dec(u32 v)
{
	char tmp[10];
	int n = 0;
	do {
		/* divide by 10 without libgcc: v < 2^32, use shift-subtract */
		u32 q = 0, r = 0;
		int b;
		for (b = 31; b >= 0; b--) {
			r = (r << 1) | ((v >> b) & 1);
			if (r >= 10) {
				r -= 10;
				q |= 1u << b;
			}
		}
		tmp[n++] = (char)('0' + r);
		v = q;
	} while (v && n < 10);
	while (n)
		put_char(tmp[--n]);
}

void line_end(void)
{
	line[line_len++] = '\n';
	if (in_section) {
		sec_crc = crc32_update(sec_crc, (const u8 *)line, line_len);
		sec_lines++;
	}
	plat_write(line, line_len);
	line_len = 0;
}

void rpt_header(const char *form)
{
	put_str("RIGPROBE v=");
	put_dec(PROBE_PROTOCOL_VERSION);
	put_str(" form=");
	put_str(form);
	line_end();
}

void rpt_section_begin(const char *mode)
{
	in_section = 1;
	sec_lines = 0;
	sec_crc = 0;
	sec_mode = mode;
	put_str("MODE ");
	put_str(mode);
	line_end();
}

void rpt_section_end(void)
{
	u32 n = sec_lines, crc = sec_crc;
	in_section = 0;
	put_str("END ");
	put_str(sec_mode);
	put_char(' ');
	put_dec(n);
	put_char(' ');
	put_hex32(crc);
	line_end();
}

const char *rpt_current_mode(void)
{
	return sec_mode;
}

void rpt_cpuid_line(const char *tag, u32 leaf, u32 sub, const struct regs *r)
{
	put_str(tag);
	put_char(' ');
	put_hex32(leaf);
	put_char(' ');
	put_hex32(sub);
	put_char(' ');
	put_hex32(r->eax);
	put_char(' ');
	put_hex32(r->ebx);
	put_char(' ');
	put_hex32(r->ecx);
	put_char(' ');
	put_hex32(r->edx);
	line_end();
}

void rpt_skip(const char *mode, const char *reason)
{
	put_str("SKIP ");
	put_str(mode);
	put_str(" reason=");
	put_str(reason);
	line_end();
}

void rpt_done(const char *status)
{
	in_section = 0;
	put_str("DONE status=");
	put_str(status);
	line_end();
}

void line_flush_partial(void)
{
	if (line_len)
		line_end();
}

void rpt_done_fault(u32 vec)
{
	in_section = 0;
	put_str("DONE status=fail:fault-");
	put_dec(vec);
	line_end();
}
