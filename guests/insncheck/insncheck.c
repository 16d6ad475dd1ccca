/* kvm-cpuid-rig insncheck: execute one instruction per feature, report faults.
 *
 * A static Linux user program run inside the ssh guest.  For each test it
 * executes a representative instruction under sigsetjmp with handlers for
 * SIGILL/SIGSEGV/SIGBUS/SIGFPE, and prints one line per test:
 *
 *   rig-insncheck 1                       header (protocol version)
 *   hwcap2 0x2                            getauxval(AT_HWCAP2); bit 1 = the kernel set CR4.FSGSBASE
 *   xcr0 0x00000000000000e7               only when XGETBV works (CR4.OSXSAVE set)
 *   insn NAME ok                          the instruction ran
 *   insn NAME fault SIGILL                it raised that signal (#UD -> SIGILL)
 *   insn NAME legacy                      it ran with its pre-feature meaning
 *                                         (LZCNT as BSR, TZCNT as BSF)
 *   end N                                 N test lines were printed
 *
 * Arguments: test names to run (default: all).  Which CPUID feature each test
 * needs is data: rig/guest/data/instructions.toml.  No compiler flags enable
 * the ISA extensions: every instruction is in inline asm, so the C code the
 * compiler generates stays baseline x86-64.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>

static sigjmp_buf jb;
static volatile int caught;

static void on_signal(int sig)
{
	caught = sig;
	siglongjmp(jb, 1);
}

static unsigned char buf[256] __attribute__((aligned(64)));

enum outcome { OK, LEGACY };

#define T(name) static enum outcome t_##name(void)

/* SSE family */
T(sse3) { __asm__ volatile("addsubps %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
T(ssse3) { __asm__ volatile("pshufb %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
T(sse4_1) { __asm__ volatile("ptest %%xmm0, %%xmm0" ::: "cc"); return OK; }
T(sse4_2) { unsigned a = 0; __asm__ volatile("crc32l %1, %0" : "+r"(a) : "r"(1u)); return OK; }
T(sse4a) { __asm__ volatile("extrq $4, $0, %%xmm0" ::: "xmm0"); return OK; }
T(popcnt) { unsigned a; __asm__ volatile("popcnt %1, %0" : "=r"(a) : "r"(3u) : "cc"); return OK; }
T(aes) { __asm__ volatile("aesenc %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
T(pclmulqdq) { __asm__ volatile("pclmulqdq $0, %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
T(sha) { __asm__ volatile("sha1rnds4 $0, %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
T(gfni) { __asm__ volatile("gf2p8affineqb $0, %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
/* general purpose */
T(movbe) { unsigned a; __asm__ volatile("movbe %1, %0" : "=r"(a) : "m"(*(unsigned *)buf)); return OK; }
T(cx16) {
	__asm__ volatile("xor %%eax,%%eax; xor %%edx,%%edx; xor %%ebx,%%ebx; xor %%ecx,%%ecx; lock cmpxchg16b %0"
			 : "+m"(*(unsigned long long(*)[2])buf) :: "rax", "rbx", "rcx", "rdx", "cc");
	return OK;
}
T(lzcnt) { unsigned a = 77; __asm__ volatile("lzcnt %1, %0" : "+r"(a) : "r"(1u) : "cc"); return a == 31 ? OK : LEGACY; }
T(bmi1) { unsigned a; __asm__ volatile("andn %1, %1, %0" : "=r"(a) : "r"(5u) : "cc"); return OK; }
T(tzcnt) { unsigned a = 77; __asm__ volatile("tzcnt %1, %0" : "+r"(a) : "r"(0u) : "cc"); return a == 32 ? OK : LEGACY; }
T(bmi2) { unsigned a; __asm__ volatile("pdep %1, %1, %0" : "=r"(a) : "r"(5u)); return OK; }
T(adx) { unsigned a = 1; __asm__ volatile("adcx %1, %0" : "+r"(a) : "r"(2u) : "cc"); return OK; }
T(rdrand) { unsigned a; __asm__ volatile("rdrand %0" : "=r"(a) :: "cc"); return OK; }
T(rdseed) { unsigned a; __asm__ volatile("rdseed %0" : "=r"(a) :: "cc"); return OK; }
T(rdpid) { unsigned long a; __asm__ volatile("rdpid %0" : "=r"(a)); return OK; }
T(rdtscp) { unsigned a, d, c; __asm__ volatile("rdtscp" : "=a"(a), "=d"(d), "=c"(c)); return OK; }
T(fsgsbase) { unsigned long a; __asm__ volatile("rdfsbase %0" : "=r"(a)); return OK; }
T(pku) { unsigned a, d; __asm__ volatile("rdpkru" : "=a"(a), "=d"(d) : "c"(0)); return OK; }
T(xgetbv) { unsigned a, d; __asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0)); return OK; }
T(clflushopt) { __asm__ volatile("clflushopt %0" : "+m"(buf[0])); return OK; }
T(clwb) { __asm__ volatile("clwb %0" : "+m"(buf[0])); return OK; }
T(clzero) { __asm__ volatile("clzero" :: "a"(buf) : "memory"); return OK; }
T(serialize) { __asm__ volatile("serialize" ::: "memory"); return OK; }
T(movdiri) { __asm__ volatile("movdiri %1, %0" : "=m"(*(unsigned *)buf) : "r"(1u)); return OK; }
/* VEX */
T(avx) { __asm__ volatile("vaddps %%ymm0, %%ymm0, %%ymm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx2) { __asm__ volatile("vpaddd %%ymm0, %%ymm0, %%ymm0; vzeroupper" ::: "xmm0"); return OK; }
T(f16c) { __asm__ volatile("vcvtph2ps %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
T(fma) { __asm__ volatile("vfmadd231ps %%xmm0, %%xmm0, %%xmm0" ::: "xmm0"); return OK; }
T(vaes) { __asm__ volatile("vaesenc %%ymm0, %%ymm0, %%ymm0; vzeroupper" ::: "xmm0"); return OK; }
T(vpclmulqdq) { __asm__ volatile("vpclmulqdq $0, %%ymm0, %%ymm0, %%ymm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx_vnni) { __asm__ volatile("%{vex%} vpdpbusd %%ymm0, %%ymm0, %%ymm0; vzeroupper" ::: "xmm0"); return OK; }
/* EVEX */
T(avx512f) { __asm__ volatile("vpaddd %%zmm0, %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512bw) { __asm__ volatile("vpaddb %%zmm0, %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512dq) { __asm__ volatile("vpmullq %%zmm0, %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512cd) { __asm__ volatile("vplzcntd %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512vl) { __asm__ volatile("%{evex%} vpaddd %%ymm0, %%ymm0, %%ymm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512_vnni) { __asm__ volatile("vpdpbusd %%zmm0, %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512ifma) { __asm__ volatile("vpmadd52luq %%zmm0, %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512vbmi) { __asm__ volatile("vpermb %%zmm0, %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }
T(avx512_bf16) { __asm__ volatile("vcvtne2ps2bf16 %%zmm0, %%zmm0, %%zmm0; vzeroupper" ::: "xmm0"); return OK; }

struct test {
	const char *name;
	enum outcome (*fn)(void);
};

#define E(name) { #name, t_##name }
static const struct test tests[] = {
	E(sse3), E(ssse3), E(sse4_1), E(sse4_2), E(sse4a), E(popcnt), E(aes), E(pclmulqdq), E(sha), E(gfni),
	E(movbe), E(cx16), E(lzcnt), E(bmi1), E(tzcnt), E(bmi2), E(adx), E(rdrand), E(rdseed), E(rdpid),
	E(rdtscp), E(fsgsbase), E(pku), E(xgetbv), E(clflushopt), E(clwb), E(clzero), E(serialize), E(movdiri),
	E(avx), E(avx2), E(f16c), E(fma), E(vaes), E(vpclmulqdq), E(avx_vnni),
	E(avx512f), E(avx512bw), E(avx512dq), E(avx512cd), E(avx512vl), E(avx512_vnni), E(avx512ifma),
	E(avx512vbmi), E(avx512_bf16),
};
#define NTESTS (sizeof(tests) / sizeof(tests[0]))

static const char *signame(int sig)
{
	switch (sig) {
	case SIGILL: return "SIGILL";
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGFPE: return "SIGFPE";
	default: return "SIGNAL";
	}
}

/* Run one test; returns 0 on success and sets *sig to the signal on a fault. */
static int run(const struct test *t, enum outcome *res, int *sig)
{
	caught = 0;
	if (sigsetjmp(jb, 1)) {
		*sig = caught;
		return -1;
	}
	*res = t->fn();
	return 0;
}

static int report(const struct test *t)
{
	enum outcome res = OK;
	int sig = 0;
	if (run(t, &res, &sig))
		printf("insn %s fault %s\n", t->name, signame(sig));
	else
		printf("insn %s %s\n", t->name, res == OK ? "ok" : "legacy");
	return 1;
}

int main(int argc, char **argv)
{
	static const int sigs[] = { SIGILL, SIGSEGV, SIGBUS, SIGFPE };
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	for (unsigned i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);

	printf("rig-insncheck 1\n");
	printf("hwcap2 0x%lx\n", getauxval(AT_HWCAP2));
	{
		enum outcome res;
		int sig;
		struct test xg = { "xgetbv", t_xgetbv };
		if (run(&xg, &res, &sig) == 0) {
			unsigned a, d;
			__asm__ volatile("xgetbv" : "=a"(a), "=d"(d) : "c"(0));
			printf("xcr0 0x%08x%08x\n", d, a);
		}
	}
	int n = 0;
	if (argc <= 1) {
		for (unsigned i = 0; i < NTESTS; i++)
			n += report(&tests[i]);
	} else {
		for (int a = 1; a < argc; a++) {
			unsigned i;
			for (i = 0; i < NTESTS; i++)
				if (strcmp(argv[a], tests[i].name) == 0)
					break;
			if (i == NTESTS) {
				printf("insn %s unknown\n", argv[a]);
				n++;
			} else {
				n += report(&tests[i]);
			}
		}
	}
	printf("end %d\n", n);
	return 0;
}
