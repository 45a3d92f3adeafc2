"""Loading the compiled CPU kernels' object files into this process without LLVM.

LLVM's own loader (llvmlite's MCJIT) keeps LLVM in every process that runs a kernel: about
45 MiB of resident memory, most of it the library's code, for machine code that is a few
hundred KiB. The kernels' object files are simple: emitted for x86-64 Linux with the large code
model, they hold code and constants and refer to other code through 64-bit absolute addresses
only (R_X86_64_64), to a handful of outside functions (memset, memcpy, fmod, CPython's
PyEval_SaveThread, ...). So this module places them itself: it lays their sections out in fresh
pages, resolves their symbols in this process, writes the relocations, and makes the code pages
executable (read-only) and the constants read-only. The pages stay for the life of the process
(`pages`).

`load(data)` returns {symbol name: address} for the object's defined functions. It raises
`Unsupported` for anything it does not handle (another architecture or relocation, writable
data, pages the system will not make executable); the caller then falls back to LLVM's loader.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import struct
import sys

__all__ = ["Unsupported", "usable", "load"]


class Unsupported(Exception):
    """The object file (or this system) needs more than this loader does."""


def usable():
    """Whether objects for this machine can be loaded here (x86-64 Linux)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


# ELF constants (the System V ABI and its x86-64 supplement)
_EM_X86_64 = 62
_SHT_SYMTAB, _SHT_RELA, _SHT_NOBITS, _SHT_REL = 2, 4, 8, 9
_SHF_WRITE, _SHF_ALLOC, _SHF_EXECINSTR = 0x1, 0x2, 0x4
_SHN_UNDEF, _SHN_ABS = 0, 0xFFF1
_STT_SECTION = 3
_R_X86_64_64 = 1
_SECTION = struct.Struct("<IIQQQQIIQQ")  # name type flags addr offset size link info align entsize
_SYMBOL = struct.Struct("<IBBHQQ")       # name info other shndx value size
_RELA = struct.Struct("<QQq")            # offset info addend
_PROT_READ, _PROT_EXEC = 0x1, 0x4

_libc = None
_PROT_WRITE = 0x2
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None)
    return _libc


def pages(size):
    """The address of `size` bytes of fresh zeroed, writable pages, which stay for the whole
    life of the process: never unmapped, not even by Python's teardown at exit, since native
    threads (the kernels' helper pool, OpenBLAS's parts on it) may still run code in them or
    read them then."""
    mmap = _c().mmap
    mmap.restype = ctypes.c_void_p
    mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                     ctypes.c_int, ctypes.c_long]
    address = mmap(None, size, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if address in (None, ctypes.c_void_p(-1).value):
        raise Unsupported(f"no memory for {size} bytes of pages")
    return address


def _outside_symbol(name, symbols):
    """The address of a symbol the object uses but does not define: one of `symbols` (the
    caller's: the native pool's), CPython's objects and functions, else whatever this process
    has loaded (the C library, libm)."""
    if name in symbols:
        return symbols[name]
    objects = {"_Py_TrueStruct": True, "_Py_FalseStruct": False, "_Py_NoneStruct": None}
    if name in objects:
        return id(objects[name])
    try:
        return ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value
    except AttributeError:
        pass
    try:
        return ctypes.cast(getattr(_c(), name), ctypes.c_void_p).value
    except AttributeError:
        raise Unsupported(f"the kernels need {name!r}, which this process does not have") \
            from None


def _name(strtab, offset):
    return strtab[offset:strtab.index(b"\0", offset)].decode()


def load(data, symbols=None):
    """{name: address} of the global symbols defined by ELF object `data`, placed in this
    process (see the module doc); `symbols` {name: address} adds to those it may use."""
    try:
        return _place(bytes(data), symbols or {})
    except (struct.error, IndexError, ValueError) as e:  # cut short or inconsistent
        raise Unsupported(f"not a well-formed object file ({e})") from None


def _place(data, symbols):
    if not usable() or data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise Unsupported("not a 64-bit little-endian ELF object of this machine")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, _ = struct.unpack_from("<HHH", data, 0x3A)
    if e_type != 1 or e_machine != _EM_X86_64 or shentsize != _SECTION.size:
        raise Unsupported("not a relocatable x86-64 object")
    sections = [_SECTION.unpack_from(data, shoff + i * shentsize) for i in range(shnum)]

    # Lay the allocated sections out: code pages first, then read-only pages
    code, constants, place = [], [], {}
    for i, (_, kind, flags, _, _, size, _, _, _, _) in enumerate(sections):
        if flags & _SHF_ALLOC and size:
            if flags & _SHF_WRITE or kind == _SHT_NOBITS:
                raise Unsupported("the object has writable data")
            (code if flags & _SHF_EXECINSTR else constants).append(i)
    page = mmap.PAGESIZE
    end = 0
    for group in (code, constants):
        end = -(-end // page) * page
        for i in group:
            align = max(sections[i][8], 1)
            end = -(-end // align) * align
            place[i] = end
            end += sections[i][5]
    code_end = -(-max([place[i] + sections[i][5] for i in code], default=0) // page) * page
    size = max(-(-end // page) * page, page)
    if any(sections[i][4] + sections[i][5] > len(data) for i in place):
        raise ValueError("a section beyond the end of the file")
    base = pages(size)
    for i, offset in place.items():
        start = sections[i][4]
        ctypes.memmove(base + offset, data[start:start + sections[i][5]], sections[i][5])

    # Symbols: where each one is, in this process
    symtab = next((s for s in sections if s[1] == _SHT_SYMTAB), None)
    if symtab is None:
        raise Unsupported("the object has no symbol table")
    strtab = data[sections[symtab[6]][4]:sections[symtab[6]][4] + sections[symtab[6]][5]]
    addresses, defined = [], {}
    for k in range(symtab[5] // _SYMBOL.size):
        name_at, info, _, shndx, value, _ = _SYMBOL.unpack_from(data, symtab[4] + k * _SYMBOL.size)
        name = _name(strtab, name_at)
        if shndx == _SHN_UNDEF:
            addresses.append(_outside_symbol(name, symbols) if name else 0)
        elif shndx == _SHN_ABS:
            addresses.append(value)
        elif shndx in place:
            addresses.append(base + place[shndx] + value)
            if info >> 4 and info & 0xF != _STT_SECTION and name:  # a global symbol
                defined[name] = addresses[-1]
        else:  # a symbol of a section not loaded (debug information)
            addresses.append(None)

    # Relocations of the loaded sections
    for kind_, target in ((s[1], s[7]) for s in sections):
        if kind_ == _SHT_REL and target in place:
            raise Unsupported("the object has REL relocations")
    for s in sections:
        if s[1] != _SHT_RELA or s[7] not in place:
            continue
        where, room = base + place[s[7]], sections[s[7]][5]
        for offset, info, addend in _RELA.iter_unpack(data[s[4]:s[4] + s[5]]):
            kind, symbol = info & 0xFFFFFFFF, info >> 32
            if kind != _R_X86_64_64 or symbol >= len(addresses) or addresses[symbol] is None:
                raise Unsupported(f"relocation type {kind} is not handled")
            if offset + 8 > room:
                raise Unsupported("a relocation outside its section")
            ctypes.c_uint64.from_address(where + offset).value = \
                (addresses[symbol] + addend) & 0xFFFFFFFFFFFFFFFF

    # Code pages: read and execute; constants: read only
    if not _protect(base, code_end, _PROT_READ | _PROT_EXEC) or \
            not _protect(base + code_end, size - code_end, _PROT_READ):
        raise Unsupported("this system does not allow executable pages made at run time")
    return defined


def _protect(address, length, prot):
    if length == 0:
        return True
    mprotect = _c().mprotect
    mprotect.restype, mprotect.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t,
                                                         ctypes.c_int]
    return mprotect(address, length, prot) == 0
