"""The in-guest side: the CPUID probe's protocol and build, serial and SSH channels."""
