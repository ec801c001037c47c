# A tiny 32-bit multiboot (v1) kernel for the runtime's tests.
#
# It prints one line on the first serial port (COM1), then either exits through qemu's
# isa-debug-exit device (port 0xf4) with the value CODE, or halts forever when LOOP is
# defined. NOHEADER leaves the multiboot header out, giving an ELF that is not a kernel.
#
#   as --32 --defsym CODE=3 hello.S -o hello.o        # exits: qemu reports (3 << 1) | 1 = 7
#   as --32 --defsym LOOP=1 hello.S -o loop.o         # prints, then idles until quit
#   ld -m elf_i386 -Ttext 0x100000 -e _start hello.o -o hello.elf

.ifndef CODE
    .set CODE, 0
.endif

# Everything lives in .text, which the linker puts first: the multiboot header must sit in
# the first 8 KiB of the file.
.section .text
.code32

.ifndef NOHEADER
    .set MB_MAGIC, 0x1BADB002
    # flags 0: an ELF image needs no load addresses in the header
    .set MB_FLAGS, 0
    .align 4
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
.endif

.global _start
_start:
    cli
    mov $message, %esi
next_char:
    movb (%esi), %bl
    testb %bl, %bl
    jz printed
wait_transmitter:
    # line status register: bit 5 set when the transmit holding register is empty
    mov $0x3fd, %dx
    inb %dx, %al
    testb $0x20, %al
    jz wait_transmitter
    mov $0x3f8, %dx
    movb %bl, %al
    outb %al, %dx
    inc %esi
    jmp next_char

printed:
.ifdef LOOP
halt_forever:
    # interrupts stay off, so the vCPU sleeps and qemu idles; QMP still answers
    hlt
    jmp halt_forever
.else
    mov $CODE, %eax
    outl %eax, $0xf4
    # not under qemu with isa-debug-exit: stop here
    hlt
    jmp printed
.endif

message:
    .ascii "edgeio test kernel: hello from COM1\n"
    .byte 0
