"""CPUID tables, parsers, enumeration rules and the feature catalogue."""

from .table import REGISTERS, BitDiff, CpuidFormatError, CpuidTable, Location, Regs

__all__ = ["REGISTERS", "BitDiff", "CpuidFormatError", "CpuidTable", "Location", "Regs"]
