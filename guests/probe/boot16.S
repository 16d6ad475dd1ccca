/* Boot-sector form (linked at 0x7C00, see core16.ld).
 *
 * Sector 0 is an MBR that SeaBIOS loads at 0x7C00 in real mode; it reads
 * the rest of the image (__image_sectors in all) with int 13h AH=42h to
 * 0x7E00 onwards, 64 sectors at a time.  The real-mode stage then reports
 * (main16), enables A20, enters 32-bit protected mode, copies the embedded
 * 32-bit core (core32.bin, the PVH image's contents) to 0x100000 and jumps
 * to its first byte (bs_entry). */

#define CHUNK 64

	.code16
	.section .mbr, "ax"
	.globl _start16
_start16:
	cli
	ljmp $0, $1f
1:	xorw %ax, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw $0x7C00, %sp
	movb %dl, boot_drive
	movw $__image_sectors - 1, %si	/* sectors left */
	movw $0x07E0, dap_seg
	movw $1, dap_lba
load:
	testw %si, %si
	jz loaded
	movw %si, %cx
	cmpw $CHUNK, %cx
	jbe 2f
	movw $CHUNK, %cx
2:	movw %cx, dap_count
	pushw %cx
	movw $dap, %si
	movb boot_drive, %dl
	movb $0x42, %ah
	int $0x13
	popw %cx
	jc disk_error
	movw %cx, %ax
	shlw $5, %ax			/* 512 bytes = 32 paragraphs per sector */
	addw %ax, dap_seg
	addw %cx, dap_lba
	movw sectors_left, %si
	subw %cx, %si
	movw %si, sectors_left
	jmp load
loaded:
	ljmp $0, $stage16
disk_error:
	movw $0xF4, %dx			/* isa-debug-exit, both ports (serial.c) */
	movl $0x11, %eax		/* PROBE_EXIT_FAIL */
	outl %eax, %dx
	movw $0x501, %dx
	outb %al, %dx
3:	hlt
	jmp 3b

	.p2align 2
dap:
	.byte 16, 0
dap_count:
	.word 0
dap_off:
	.word 0
dap_seg:
	.word 0
dap_lba:
	.long 0, 0
sectors_left:
	.word __image_sectors - 1
boot_drive:
	.byte 0

	.org 510
	.byte 0x55, 0xAA

/* ---- the rest of the real-mode stage (loaded by the MBR) ---- */
	.section .text.stage, "ax"
stage16:
	movl $0x7C00, %esp
	/* real-mode exception hooks: #UD (6) and #GP (13) */
	movw $rm_vec6, 6*4
	movw $0, 6*4+2
	movw $rm_vec13, 13*4
	movw $0, 13*4+2
	calll main16
	/* fast A20 */
	inb $0x92, %al
	orb $2, %al
	andb $0xFE, %al
	outb %al, $0x92
	cli
	lgdtl gdt16_desc
	movl %cr0, %eax
	orl $1, %eax
	movl %eax, %cr0
	ljmpl $0x08, $pm32

rm_vec6:
	pushl $6
	jmp rm_fault
rm_vec13:
	pushl $13
	jmp rm_fault
/* stack: vec(4), ip(2), cs(2), flags(2) */
rm_fault:
	pushl %eax
	movl fault_fixup, %eax
	testl %eax, %eax
	jz 4f
	movw %ax, 8(%esp)
	movw $0, 10(%esp)
	movl 4(%esp), %eax
	movl %eax, fault_vec
	movl $0, fault_fixup
	popl %eax
	addl $4, %esp
	iret
4:	movzwl 8(%esp), %eax
	pushl %eax			/* ip */
	pushl $0			/* err */
	pushl 12(%esp)			/* vec */
	calll fault_fatal
5:	cli
	hlt
	jmp 5b

	.code32
pm32:
	movw $0x10, %ax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %ss
	movw %ax, %fs
	movw %ax, %gs
	cld
	movl $__payload_start, %esi
	movl $0x100000, %edi
	movl $__payload_end, %ecx
	subl %esi, %ecx
	rep movsb
	ljmp $0x08, $0x100000

	.section .rodata
	.p2align 3
gdt16:
	.quad 0
	.quad 0x00CF9A000000FFFF		/* 0x08 code32 */
	.quad 0x00CF92000000FFFF		/* 0x10 data */
gdt16_end:
gdt16_desc:
	.word gdt16_end - gdt16 - 1
	.long gdt16

	.section .payload, "a"
	.incbin "core32.bin"
