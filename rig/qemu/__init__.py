"""QEMU: command line, binaries, launcher over QMP, and the CPU-model layer model."""
