/* kvmcap: what an emulated L1 host knows about itself, as framed text.
 *
 * Runs inside the L1 guest of `rig host emulate` (static, no libraries).
 *
 *   kvmcap profile          print the host profile section: uname, kernel
 *                           command line, /proc/cpuinfo flags/bugs/model name,
 *                           /sys/module/{kvm,kvm_amd,kvm_intel,irqbypass}
 *                           parameters, raw CPUID (enumerated by the rules of
 *                           rig/cpuid/enumeration.py), KVM_GET_API_VERSION,
 *                           KVM_GET_SUPPORTED_CPUID, KVM_GET_EMULATED_CPUID
 *   kvmcap frame NAME FILE  print FILE as a framed section NAME
 *   kvmcap qmp NAME SOCKET [PID]  drive a paused QEMU over QMP: query-cpus-fast,
 *                           qom-get feature-words and filtered-features of
 *                           CPU 0, then cont; prints one "qmp" line per reply
 *
 * Framing (parsed by rig/emulate/frames.py):
 *
 *   @@BEGIN NAME
 *   ...payload lines...
 *   @@END NAME lines=N crc=XXXXXXXX
 *
 * crc is the CRC-32 (IEEE, as zlib.crc32) of the payload lines, each followed
 * by "\n", and N the number of payload lines.  Lines are printed without "\r";
 * a reader strips any "\r" a tty adds before checking.
 *
 * Profile payload lines (all numbers hex without 0x unless said):
 *   release TEXT | cmdline TEXT | model_name TEXT | flags W W.. | bugs W W..
 *   param MODULE NAME VALUE
 *   raw LEAF SUB EAX EBX ECX EDX
 *   api DECIMAL | api-error ERRNO-TEXT
 *   sup FUNCTION INDEX FLAGS EAX EBX ECX EDX       (KVM_GET_SUPPORTED_CPUID)
 *   emu FUNCTION INDEX FLAGS EAX EBX ECX EDX       (KVM_GET_EMULATED_CPUID)
 *   sup-error / emu-error ERRNO-TEXT
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

typedef uint32_t u32;

/* ------------------------------------------------------------------ framing */

static u32 crc_table[256];

static void crc_init(void)
{
	for (u32 i = 0; i < 256; i++) {
		u32 c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
		crc_table[i] = c;
	}
}

static u32 crc_update(u32 crc, const char *p, size_t n)
{
	crc = ~crc;
	while (n--)
		crc = crc_table[(crc ^ (unsigned char)*p++) & 0xFF] ^ (crc >> 8);
	return ~crc;
}

static const char *frame_name;
static u32 frame_crc;
static unsigned long frame_lines;

static void frame_begin(const char *name)
{
	frame_name = name;
	frame_crc = 0;
	frame_lines = 0;
	printf("@@BEGIN %s\n", name);
}

/* one payload line; embedded newlines/CRs are replaced so framing holds */
static void emit(const char *fmt, ...)
{
	char buf[8192];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof buf - 2)
		n = sizeof buf - 2;
	for (int i = 0; i < n; i++)
		if (buf[i] == '\n' || buf[i] == '\r')
			buf[i] = ' ';
	buf[n++] = '\n';
	buf[n] = 0;
	fputs(buf, stdout);
	frame_crc = crc_update(frame_crc, buf, n);
	frame_lines++;
}

static void frame_end(void)
{
	printf("@@END %s lines=%lu crc=%08X\n", frame_name, frame_lines, frame_crc);
	fflush(stdout);
}

/* -------------------------------------------------------------- raw CPUID */

struct regs {
	u32 eax, ebx, ecx, edx;
};

static void cpuid(u32 leaf, u32 sub, struct regs *r)
{
	__asm__ volatile("cpuid" : "=a"(r->eax), "=b"(r->ebx), "=c"(r->ecx), "=d"(r->edx) : "a"(leaf), "c"(sub));
}

#define MAX_SUBLEAF 64

static void put_raw(u32 leaf, u32 sub, const struct regs *r)
{
	emit("raw %08X %X %08X %08X %08X %08X", leaf, sub, r->eax, r->ebx, r->ecx, r->edx);
}

static void one(u32 leaf, u32 sub)
{
	struct regs r;
	cpuid(leaf, sub, &r);
	put_raw(leaf, sub, &r);
}

/* subleaves of one leaf, as rig/cpuid/enumeration.py:subleaves() */
static void leaf_subleaves(u32 leaf, const struct regs *r0, int sgx)
{
	struct regs r;
	switch (leaf) {
	case 0x4:
	case 0x8000001D: {
		int any = 0;
		for (u32 i = 0; i < MAX_SUBLEAF; i++) {
			if (i == 0)
				r = *r0;
			else
				cpuid(leaf, i, &r);
			if ((r.eax & 0x1F) == 0)
				break;
			put_raw(leaf, i, &r);
			any = 1;
		}
		if (!any)
			put_raw(leaf, 0, r0);
		return;
	}
	case 0xB:
	case 0x1F:
	case 0x80000026:
		for (u32 i = 0; i < MAX_SUBLEAF; i++) {
			if (i == 0)
				r = *r0;
			else
				cpuid(leaf, i, &r);
			put_raw(leaf, i, &r);
			if (((r.ecx >> 8) & 0xFF) == 0)
				break;
		}
		return;
	case 0x7:
	case 0x14:
	case 0x17:
	case 0x18:
	case 0x1D:
	case 0x1E:
	case 0x20:
	case 0x24: {
		u32 top = r0->eax < MAX_SUBLEAF - 1 ? r0->eax : MAX_SUBLEAF - 1;
		put_raw(leaf, 0, r0);
		for (u32 i = 1; i <= top; i++)
			one(leaf, i);
		return;
	}
	case 0xD: {
		struct regs r1;
		cpuid(leaf, 1, &r1);
		put_raw(leaf, 0, r0);
		put_raw(leaf, 1, &r1);
		uint64_t mask = (uint64_t)r0->eax | ((uint64_t)r0->edx << 32) | r1.ecx | ((uint64_t)r1.edx << 32);
		for (u32 i = 2; i < 64; i++)
			if ((mask >> i) & 1)
				one(leaf, i);
		return;
	}
	case 0xF:
	case 0x10:
	case 0x23:
	case 0x80000020: {
		u32 mask = leaf == 0xF ? r0->edx : leaf == 0x23 ? r0->eax : r0->ebx;
		put_raw(leaf, 0, r0);
		for (u32 i = 1; i < 32; i++)
			if ((mask >> i) & 1)
				one(leaf, i);
		return;
	}
	case 0x12:
		put_raw(leaf, 0, r0);
		if (!sgx)
			return;
		one(leaf, 1);
		for (u32 i = 2; i < MAX_SUBLEAF; i++) {
			cpuid(leaf, i, &r);
			if ((r.eax & 0xF) == 0)
				break;
			put_raw(leaf, i, &r);
		}
		return;
	default:
		put_raw(leaf, 0, r0);
	}
}

static void cpuid_range(u32 base)
{
	struct regs r0, r, r7;
	cpuid(base, 0, &r0);
	u32 top = r0.eax;
	if (base != 0 && !(top >= base && top <= base + 0xFF))
		return;
	if (base == 0 && top > 0xFF)
		top = 0xFF;
	cpuid(7, 0, &r7);
	int sgx = base == 0 && r0.eax >= 7 && ((r7.ebx >> 2) & 1);
	for (u32 leaf = base; leaf <= top; leaf++) {
		if (leaf == base)
			r = r0;
		else
			cpuid(leaf, 0, &r);
		leaf_subleaves(leaf, &r, sgx);
	}
}

static void raw_cpuid(void)
{
	struct regs v;
	cpuid(0, 0, &v);
	char vendor[13];
	memcpy(vendor, &v.ebx, 4);
	memcpy(vendor + 4, &v.edx, 4);
	memcpy(vendor + 8, &v.ecx, 4);
	vendor[12] = 0;
	cpuid_range(0);
	cpuid_range(0x40000000);
	cpuid_range(0x80000000);
	if (!strcmp(vendor, "CentaurHauls") || !strcmp(vendor, "  Shanghai  "))
		cpuid_range(0xC0000000);
}

/* ---------------------------------------------------------------- KVM */

static void kvm_table(int fd, unsigned long req, const char *tag)
{
	int nent = 64;
	for (;;) {
		size_t sz = sizeof(struct kvm_cpuid2) + nent * sizeof(struct kvm_cpuid_entry2);
		struct kvm_cpuid2 *c = calloc(1, sz);
		if (!c) {
			emit("%s-error out of memory", tag);
			return;
		}
		c->nent = nent;
		if (ioctl(fd, req, c) == 0) {
			for (u32 i = 0; i < c->nent; i++) {
				struct kvm_cpuid_entry2 *e = &c->entries[i];
				emit("%s %08X %X %X %08X %08X %08X %08X", tag, e->function, e->index, e->flags, e->eax,
				     e->ebx, e->ecx, e->edx);
			}
			free(c);
			return;
		}
		int err = errno;
		free(c);
		if (err == E2BIG && nent < 4096) {
			nent *= 2;
			continue;
		}
		emit("%s-error %s", tag, strerror(err));
		return;
	}
}

static void kvm_caps(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		emit("api-error %s", strerror(errno));
		return;
	}
	int api = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (api < 0)
		emit("api-error %s", strerror(errno));
	else
		emit("api %d", api);
	kvm_table(fd, KVM_GET_SUPPORTED_CPUID, "sup");
	kvm_table(fd, KVM_GET_EMULATED_CPUID, "emu");
	close(fd);
}

/* ------------------------------------------------------------ files */

static int read_file(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t n = 0;
	ssize_t k;
	while (n < cap - 1 && (k = read(fd, buf + n, cap - 1 - n)) > 0)
		n += k;
	close(fd);
	buf[n] = 0;
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = 0;
	return (int)n;
}

static void cpuinfo(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f) {
		emit("cpuinfo-error %s", strerror(errno));
		return;
	}
	static char line[16384];
	int seen_flags = 0, seen_bugs = 0, seen_model = 0;
	while (fgets(line, sizeof line, f)) {
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		char *val = colon + 1;
		while (*val == ' ')
			val++;
		size_t l = strlen(val);
		while (l && (val[l - 1] == '\n' || val[l - 1] == ' '))
			val[--l] = 0;
		if (!seen_flags && !strncmp(line, "flags", 5) && (line[5] == '\t' || line[5] == ' ')) {
			emit("flags %s", val);
			seen_flags = 1;
		} else if (!seen_bugs && !strncmp(line, "bugs", 4) && (line[4] == '\t' || line[4] == ' ')) {
			emit("bugs %s", val);
			seen_bugs = 1;
		} else if (!seen_model && !strncmp(line, "model name", 10)) {
			emit("model_name %s", val);
			seen_model = 1;
		}
	}
	fclose(f);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void module_params(const char *mod)
{
	char dir[256], path[512], val[4096];
	snprintf(dir, sizeof dir, "/sys/module/%s/parameters", mod);
	DIR *d = opendir(dir);
	if (!d)
		return;
	char *names[512];
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 512)
		if (e->d_name[0] != '.')
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, n, sizeof names[0], cmp_str);
	for (int i = 0; i < n; i++) {
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		if (read_file(path, val, sizeof val) < 0)
			emit("param %s %s ?", mod, names[i]);
		else
			emit("param %s %s %s", mod, names[i], val);
		free(names[i]);
	}
}

static int cmd_profile(void)
{
	struct utsname u;
	char buf[4096];
	frame_begin("profile");
	if (uname(&u) == 0)
		emit("release %s", u.release);
	if (read_file("/proc/cmdline", buf, sizeof buf) >= 0)
		emit("cmdline %s", buf);
	cpuinfo();
	static const char *mods[] = {"irqbypass", "kvm", "kvm_amd", "kvm_intel", "ccp"};
	for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++) {
		char p[128];
		snprintf(p, sizeof p, "/sys/module/%s", mods[i]);
		if (access(p, F_OK) == 0)
			emit("module %s", mods[i]);
		module_params(mods[i]);
	}
	raw_cpuid();
	kvm_caps();
	frame_end();
	return 0;
}

static int cmd_frame(const char *name, const char *path)
{
	FILE *f = fopen(path, "r");
	frame_begin(name);
	if (!f) {
		emit("!missing %s: %s", path, strerror(errno));
		frame_end();
		return 1;
	}
	static char line[65536];
	while (fgets(line, sizeof line, f)) {
		size_t l = strlen(line);
		while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
			line[--l] = 0;
		emit("%s", line);
	}
	fclose(f);
	frame_end();
	return 0;
}

/* --------------------------------------------------------------- QMP */

static int qmp_fd = -1;
static char qbuf[1 << 17];
static size_t qlen;

/* next line that is a reply (not an event); 0 on success */
static int qmp_reply(char *out, size_t cap)
{
	for (;;) {
		char *nl = memchr(qbuf, '\n', qlen);
		if (nl) {
			size_t l = nl - qbuf;
			int is_event = memmem(qbuf, l, "\"event\"", 7) != NULL;
			if (!is_event) {
				size_t c = l < cap - 1 ? l : cap - 1;
				memcpy(out, qbuf, c);
				out[c] = 0;
				while (c && out[c - 1] == '\r')
					out[--c] = 0;
			}
			memmove(qbuf, nl + 1, qlen - l - 1);
			qlen -= l + 1;
			if (!is_event)
				return 0;
			continue;
		}
		if (qlen >= sizeof qbuf - 1)
			return -1;
		ssize_t k = read(qmp_fd, qbuf + qlen, sizeof qbuf - 1 - qlen);
		if (k <= 0)
			return -1;
		qlen += k;
	}
}

static int qmp_cmd(const char *json, char *out, size_t cap)
{
	size_t l = strlen(json);
	if (write(qmp_fd, json, l) != (ssize_t)l || write(qmp_fd, "\n", 1) != 1)
		return -1;
	return qmp_reply(out, cap);
}

/* is process pid still running (not gone, not a zombie)? */
static int alive(const char *pid)
{
	char path[64], st[512];
	if (!pid)
		return 1;
	snprintf(path, sizeof path, "/proc/%s/stat", pid);
	if (read_file(path, st, sizeof st) < 0)
		return 0;
	char *p = strrchr(st, ')');
	return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

static int cmd_qmp(const char *name, const char *sock, const char *pid)
{
	static char reply[1 << 17];
	char req[1024];
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
	frame_begin(name);
	for (int tries = 0; tries < 1500 && alive(pid); tries++) { /* up to ~30 s */
		qmp_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(qmp_fd, (struct sockaddr *)&a, sizeof a) == 0)
			break;
		close(qmp_fd);
		qmp_fd = -1;
		struct timespec ts = {0, 20 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	if (qmp_fd < 0) {
		emit("error cannot connect to %s", sock);
		frame_end();
		return 1;
	}
	int rc = 1;
	if (qmp_reply(reply, sizeof reply)) /* greeting */
		goto out;
	if (qmp_cmd("{\"execute\":\"qmp_capabilities\"}", reply, sizeof reply))
		goto out;
	if (qmp_cmd("{\"execute\":\"query-cpus-fast\"}", reply, sizeof reply))
		goto out;
	emit("query-cpus-fast %s", reply);
	char path[256] = "";
	char *p = strstr(reply, "\"qom-path\"");
	if (p && (p = strchr(p + 10, '"'))) {
		char *q = strchr(p + 1, '"');
		if (q && (size_t)(q - p - 1) < sizeof path) {
			memcpy(path, p + 1, q - p - 1);
			path[q - p - 1] = 0;
		}
	}
	if (!path[0]) {
		emit("error no qom-path in query-cpus-fast reply");
		goto out;
	}
	static const char *props[] = {"feature-words", "filtered-features"};
	for (int i = 0; i < 2; i++) {
		snprintf(req, sizeof req,
			 "{\"execute\":\"qom-get\",\"arguments\":{\"path\":\"%s\",\"property\":\"%s\"}}", path,
			 props[i]);
		if (qmp_cmd(req, reply, sizeof reply))
			goto out;
		emit("%s %s", props[i], reply);
	}
	if (qmp_cmd("{\"execute\":\"cont\"}", reply, sizeof reply))
		goto out;
	rc = 0;
out:
	if (rc)
		emit("error QMP conversation with %s ended early", sock);
	close(qmp_fd);
	frame_end();
	return rc;
}

int main(int argc, char **argv)
{
	crc_init();
	if (argc == 2 && !strcmp(argv[1], "profile"))
		return cmd_profile();
	if (argc == 4 && !strcmp(argv[1], "frame"))
		return cmd_frame(argv[2], argv[3]);
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "qmp"))
		return cmd_qmp(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
	fprintf(stderr, "usage: kvmcap profile | kvmcap frame NAME FILE | kvmcap qmp NAME SOCKET [PID]\n");
	return 2;
}
