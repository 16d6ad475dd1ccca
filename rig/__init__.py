"""kvm-cpuid-rig: a test rig for the CPUID that QEMU/KVM guests see."""

__version__ = "0.1.0"
