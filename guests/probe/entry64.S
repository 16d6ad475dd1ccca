/* 64-bit entry (linked at 0x200000): entered by a far jump to the code64
 * selector 0x18 of entry32.S's GDT, paging on (identity, first 1 GiB). */
	.code64
	.section .text.entry, "ax"
	.globl _start64
_start64:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	cld
	movq $__bss_start, %rdi
	movq $__bss_end, %rcx
	subq %rdi, %rcx
	xorl %eax, %eax
	rep stosb
	movq $stack64_top, %rsp
	call main64
1:	cli
	hlt
	jmp 1b

	.macro ISR n
isr64_\n:
	.if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
	.else
	pushq $0
	.endif
	pushq $\n
	jmp fault64
	.endm

	.text
	.irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	ISR \n
	.endr

/* stack: vec, err, rip, cs, rflags, rsp, ss */
fault64:
	pushq %rax
	movq fault_fixup, %rax
	testq %rax, %rax
	jz 2f
	movq %rax, 24(%rsp)
	movq 8(%rsp), %rax
	movl %eax, fault_vec
	movq $0, fault_fixup
	popq %rax
	addq $16, %rsp
	iretq
2:	movq 8(%rsp), %rdi
	movq 16(%rsp), %rsi
	movq 24(%rsp), %rdx
	andq $-16, %rsp
	call fault_fatal
3:	cli
	hlt
	jmp 3b

	.section .rodata
	.p2align 3
	.globl isr_stubs64
isr_stubs64:
	.irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	.quad isr64_\n
	.endr

	.bss
	.p2align 4
	.skip 16384
stack64_top:
