/* 32-bit entry points of the probe (linked at 0x100000; this is probe.elf).
 *
 *  - pvh_start: named by the Xen PVH ELF note (XEN_ELFNOTE_PHYS32_ENTRY = 18);
 *    entered in 32-bit protected mode, flat segments, paging off.
 *  - bs_entry (first byte of .text, 0x100000): jumped to by the boot-sector
 *    stage (boot16.S) after it has reported real mode.
 *  Both load our GDT and IDT, run main32 (prot32 report) and then enter long
 *  mode and jump to the 64-bit core copied to 0x200000. */

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define CORE64_ADDR 0x200000

	.section .note.Xen, "a"
	.p2align 2
	.long 4				/* namesz */
	.long 4				/* descsz */
	.long XEN_ELFNOTE_PHYS32_ENTRY
	.asciz "Xen"
	.long pvh_start

	.code32
	.section .text.entry, "ax"
	.globl bs_entry
bs_entry:
	xorl %esi, %esi			/* form: boot sector */
	xorl %ebp, %ebp			/* no start info */
	jmp common32

	.globl pvh_start
pvh_start:
	movl $1, %esi			/* form: PVH */
	movl %ebx, %ebp			/* PVH: EBX = physical address of hvm_start_info */
common32:
	cli
	cld
	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	xorl %eax, %eax
	rep stosb
	lgdt gdt_desc
	ljmp $0x08, $1f
1:	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	movl $stack32_top, %esp
	pushl %ebp
	pushl %esi
	call main32			/* main32(pvh, start_info) returns CR3 for long mode */
	addl $8, %esp
	movl %eax, %cr3
	movl %cr4, %eax
	orl $0x20, %eax			/* PAE */
	movl %eax, %cr4
	movl $0xC0000080, %ecx		/* EFER */
	rdmsr
	orl $0x100, %eax		/* LME */
	wrmsr
	movl %cr0, %eax
	orl $0x80000001, %eax		/* PG | PE */
	movl %eax, %cr0
	ljmp $0x18, $CORE64_ADDR

/* Exception stubs: push a dummy error code where the CPU pushes none. */
	.macro ISR n
isr32_\n:
	.if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
	.else
	pushl $0
	.endif
	pushl $\n
	jmp fault32
	.endm

	.text
	.irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	ISR \n
	.endr

/* stack: vec, err, eip, cs, eflags */
fault32:
	pushl %eax
	movl fault_fixup, %eax
	testl %eax, %eax
	jz 2f
	movl %eax, 12(%esp)		/* resume at the fixup */
	movl 4(%esp), %eax
	movl %eax, fault_vec
	movl $0, fault_fixup
	popl %eax
	addl $8, %esp
	iret
2:	pushl 12(%esp)			/* eip */
	pushl 12(%esp)			/* err */
	pushl 12(%esp)			/* vec */
	call fault_fatal
3:	cli
	hlt
	jmp 3b

	.section .rodata
	.p2align 2
	.globl isr_stubs32
isr_stubs32:
	.irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.long isr32_\n
	.endr

	.p2align 3
gdt:
	.quad 0
	.quad 0x00CF9A000000FFFF		/* 0x08 code32 */
	.quad 0x00CF92000000FFFF		/* 0x10 data */
	.quad 0x00AF9A000000FFFF		/* 0x18 code64 */
gdt_end:
gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt

	.p2align 4
	.globl _core64_start, _core64_end
_core64_start:
	.incbin "core64.bin"
_core64_end:

	.bss
	.p2align 4
	.skip 16384
stack32_top:
