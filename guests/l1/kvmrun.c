/* kvmrun: boot a PVH ELF (the rig's probe) in a bare KVM VM whose CPUID is exactly
 * KVM_GET_SUPPORTED_CPUID -- "pass KVM's bits through", with no QEMU CPU-model layer in
 * between.  Runs inside the emulated L1 host (guests/l1/init, command "kvmrun").
 *
 *   kvmrun ELF [MEMORY_MIB]
 *
 * The guest gets: MEMORY_MIB (default 32) of RAM at 0, an in-kernel irqchip (LAPIC as
 * under QEMU), one vCPU entered as the PVH boot protocol says (32-bit protected mode,
 * flat segments, paging off, EBX = physical address of an hvm_start_info), COM1 as a
 * write-only 16550 (THR written to stdout unless DLAB is set; LSR reads "empty") and isa-debug-exit at
 * port 0xf4.  Exit status: as QEMU's isa-debug-exit, (value << 1) | 1; 2 on a guest
 * shutdown (triple fault) or an unexpected exit; 1 on a setup error (message on stderr).
 * The CPUID entries set are written to stderr as "cpuid LEAF SUB EAX EBX ECX EDX".
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define COM1 0x3f8
#define DEBUG_EXIT 0xf4
#define START_INFO 0x6000
#define HVM_START_MAGIC 0x336ec578u
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define MAX_CPUID 256

static void die(const char *what)
{
	fprintf(stderr, "kvmrun: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void fail(const char *what)
{
	fprintf(stderr, "kvmrun: %s\n", what);
	exit(1);
}

/* PT_LOAD segments into guest memory; returns the PVH entry from the Xen note. */
static uint32_t load_elf(const char *path, uint8_t *mem, size_t size)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *f;
	uint32_t entry = 0;
	if (fd < 0 || fstat(fd, &st) < 0)
		die(path);
	f = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f == MAP_FAILED)
		die("mmap ELF");
	if ((size_t)st.st_size < sizeof(Elf32_Ehdr) || memcmp(f, ELFMAG, SELFMAG))
		fail("not an ELF file");
	if (f[EI_CLASS] == ELFCLASS32) {
		Elf32_Ehdr *eh = (Elf32_Ehdr *)f;
		for (int i = 0; i < eh->e_phnum; i++) {
			Elf32_Phdr *ph = (Elf32_Phdr *)(f + eh->e_phoff + i * eh->e_phentsize);
			if (ph->p_type == PT_LOAD) {
				if ((uint64_t)ph->p_paddr + ph->p_memsz > size || ph->p_offset + ph->p_filesz > (uint64_t)st.st_size)
					fail("segment outside guest memory or file");
				memcpy(mem + ph->p_paddr, f + ph->p_offset, ph->p_filesz);
			} else if (ph->p_type == PT_NOTE) {
				uint32_t off = ph->p_offset, end = ph->p_offset + ph->p_filesz;
				while (off + 12 <= end) {
					uint32_t namesz = *(uint32_t *)(f + off), descsz = *(uint32_t *)(f + off + 4);
					uint32_t type = *(uint32_t *)(f + off + 8);
					const char *name = (const char *)(f + off + 12);
					uint32_t desc = off + 12 + ((namesz + 3) & ~3u);
					if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 && !memcmp(name, "Xen", 4) && descsz >= 4)
						entry = *(uint32_t *)(f + desc);
					off = desc + ((descsz + 3) & ~3u);
				}
			}
		}
	} else {
		Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
		for (int i = 0; i < eh->e_phnum; i++) {
			Elf64_Phdr *ph = (Elf64_Phdr *)(f + eh->e_phoff + i * eh->e_phentsize);
			if (ph->p_type == PT_LOAD) {
				if (ph->p_paddr + ph->p_memsz > size || ph->p_offset + ph->p_filesz > (uint64_t)st.st_size)
					fail("segment outside guest memory or file");
				memcpy(mem + ph->p_paddr, f + ph->p_offset, ph->p_filesz);
			} else if (ph->p_type == PT_NOTE) {
				uint64_t off = ph->p_offset, end = ph->p_offset + ph->p_filesz;
				while (off + 12 <= end) {
					uint32_t namesz = *(uint32_t *)(f + off), descsz = *(uint32_t *)(f + off + 4);
					uint32_t type = *(uint32_t *)(f + off + 8);
					const char *name = (const char *)(f + off + 12);
					uint64_t desc = off + 12 + ((namesz + 3) & ~3u);
					if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 && !memcmp(name, "Xen", 4) && descsz >= 4)
						entry = *(uint32_t *)(f + desc);
					off = desc + ((descsz + 3) & ~3u);
				}
			}
		}
	}
	if (!entry)
		fail("no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY) in the ELF");
	return entry;
}

static void set_seg(struct kvm_segment *s, uint16_t sel, uint8_t type)
{
	memset(s, 0, sizeof(*s));
	s->base = 0;
	s->limit = 0xffffffff;
	s->selector = sel;
	s->type = type;
	s->present = 1;
	s->dpl = 0;
	s->db = 1;
	s->s = 1;
	s->g = 1;
}

int main(int argc, char **argv)
{
	size_t mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 32;
	size_t size = mib << 20;
	int kvm, vm, vcpu, run_size;
	uint8_t *mem;
	struct kvm_run *run;
	struct kvm_cpuid2 *cpuid;
	struct kvm_userspace_memory_region region;
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint32_t entry;
	uint8_t lcr = 0; /* COM1 line control: with DLAB (bit 7) set, port 0 is the divisor, not data */

	if (argc < 2 || mib < 4)
		fail("usage: kvmrun ELF [MEMORY_MIB>=4]");
	setvbuf(stdout, NULL, _IONBF, 0);
	kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0)
		die("/dev/kvm");
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0)
		die("KVM_CREATE_VM");
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		die("guest memory");
	region = (struct kvm_userspace_memory_region){.slot = 0, .guest_phys_addr = 0, .memory_size = size,
						       .userspace_addr = (uint64_t)(uintptr_t)mem};
	if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0)
		die("KVM_SET_USER_MEMORY_REGION");
	if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000) < 0)
		die("KVM_SET_TSS_ADDR");
	if (ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0)
		die("KVM_CREATE_IRQCHIP");
	entry = load_elf(argv[1], mem, size);
	{
		uint32_t *si = (uint32_t *)(mem + START_INFO);
		memset(si, 0, 64);
		si[0] = HVM_START_MAGIC;
		si[1] = 1; /* version */
	}
	vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
	if (vcpu < 0)
		die("KVM_CREATE_VCPU");

	/* CPUID: exactly what KVM supports */
	cpuid = calloc(1, sizeof(*cpuid) + MAX_CPUID * sizeof(struct kvm_cpuid_entry2));
	cpuid->nent = MAX_CPUID;
	if (ioctl(kvm, KVM_GET_SUPPORTED_CPUID, cpuid) < 0)
		die("KVM_GET_SUPPORTED_CPUID");
	if (ioctl(vcpu, KVM_SET_CPUID2, cpuid) < 0)
		die("KVM_SET_CPUID2");
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];
		fprintf(stderr, "cpuid %08x %x %08x %08x %08x %08x\n", e->function, e->index, e->eax, e->ebx, e->ecx,
			e->edx);
	}

	run_size = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (run_size < 0)
		die("KVM_GET_VCPU_MMAP_SIZE");
	run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
	if (run == MAP_FAILED)
		die("mmap kvm_run");

	if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0)
		die("KVM_GET_SREGS");
	set_seg(&sregs.cs, 0x08, 0xb); /* execute/read, accessed */
	set_seg(&sregs.ds, 0x10, 0x3); /* read/write, accessed */
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.cr0 = 0x11; /* PE, ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0)
		die("KVM_SET_SREGS");
	memset(&regs, 0, sizeof(regs));
	regs.rip = entry;
	regs.rbx = START_INFO;
	regs.rflags = 0x2;
	if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0)
		die("KVM_SET_REGS");

	for (;;) {
		if (ioctl(vcpu, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			die("KVM_RUN");
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			uint8_t *data = (uint8_t *)run + run->io.data_offset;
			for (unsigned n = 0; n < run->io.count; n++, data += run->io.size) {
				if (run->io.direction == KVM_EXIT_IO_OUT) {
					if (run->io.port == COM1 + 3)
						lcr = *data;
					else if (run->io.port == COM1 && !(lcr & 0x80)) /* DLAB clear: THR */
						fputc(*data, stdout);
					else if (run->io.port == DEBUG_EXIT)
						exit((*data << 1) | 1);
				} else {
					memset(data, 0, run->io.size);
					if (run->io.port == COM1 + 5)
						*data = 0x60; /* THR empty, transmitter empty */
					else if (run->io.port < COM1 || run->io.port > COM1 + 7)
						memset(data, 0xff, run->io.size);
				}
			}
			break;
		}
		case KVM_EXIT_MMIO:
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
			break;
		case KVM_EXIT_HLT:
			fprintf(stderr, "kvmrun: guest halted\n");
			return 2;
		case KVM_EXIT_SHUTDOWN:
			fprintf(stderr, "kvmrun: guest shutdown (triple fault)\n");
			return 2;
		case KVM_EXIT_FAIL_ENTRY:
			fprintf(stderr, "kvmrun: VM entry failed, reason 0x%llx\n",
				(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			return 2;
		case KVM_EXIT_INTERNAL_ERROR:
			fprintf(stderr, "kvmrun: KVM internal error, suberror %u\n", run->internal.suberror);
			return 2;
		default:
			fprintf(stderr, "kvmrun: unexpected exit reason %u\n", run->exit_reason);
			return 2;
		}
	}
}
