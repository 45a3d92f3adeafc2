"""LLVM's part of the compiled CPU kernels: a module's IR text in, an object file out.

`compile_ir(text)` runs LLVM (llvmlite) in the process that calls it. Run as a script, the
module is the compiler process the kernel runtime starts (`llvm_runtime`, the
`kernel_compiler` setting): it reads requests on stdin and answers on stdout until it has been
idle for `IDLE_SECONDS` (or the seconds its first argument gives) or its stdin closes. That
keeps LLVM (about 45 MiB resident, the library's code and its heap) out of the process that
trains, which only loads the machine code (`llvm_loader`).

The protocol, in both directions a little-endian 8-byte length, then that many bytes:
request = the module text (UTF-8); answer = b"o" + the object file, or b"e" + an error message.

This file imports only the standard library and llvmlite (it runs as a script, without the
funcgrad package, to start fast).
"""

from __future__ import annotations

import os
import select
import struct
import sys

IDLE_SECONDS = 3.0   # the compiler process exits after this long without a request

_ENV = None


def target():
    """(llvm, target machine, function attributes) for this host, set up once."""
    global _ENV
    if _ENV is None:
        import llvmlite.binding as llvm
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        cpu, features = llvm.get_host_cpu_name(), llvm.get_host_cpu_features().flatten()
        tm = llvm.Target.from_default_triple().create_target_machine(
            cpu=cpu, features=features, opt=3, reloc="default", codemodel="jitdefault")
        # 512-bit vectors where the CPU has them (LLVM's default prefers 256 on x86)
        wide = ('"prefer-vector-width"="512" "min-legal-vector-width"="512" '
                if "+avx512f" in features else "")
        attrs = (f'attributes #0 = {{ nounwind {wide}}}\n'
                 f'attributes #1 = {{ nounwind alwaysinline {wide}}}\n'
                 f'attributes #2 = {{ nounwind noinline {wide}}}\n')
        _ENV = (llvm, tm, attrs)
    return _ENV


def compile_ir(text):
    """The object file (bytes) of module `text`, whose functions use the attribute groups #0
    (plain), #1 (always inlined) and #2 (never inlined), which this adds for the host CPU."""
    llvm, tm, attrs = target()
    mod = llvm.parse_assembly(text + attrs)
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return tm.emit_object(mod)


def _read_exactly(stream, n):
    data = b""
    while len(data) < n:
        chunk = stream.read(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _serve(requests, answers, idle=IDLE_SECONDS):
    """Answer requests until idle for `idle` seconds or the input ends."""
    while True:
        ready, _, _ = select.select([requests], [], [], idle)
        if not ready:
            return
        head = _read_exactly(requests, 8)
        if head is None:
            return
        text = _read_exactly(requests, struct.unpack("<Q", head)[0])
        if text is None:
            return
        try:
            answer = b"o" + compile_ir(text.decode())
        except Exception as e:  # noqa: BLE001 (sent back to the caller, who raises it)
            answer = b"e" + f"{type(e).__name__}: {e}".encode()
        answers.write(struct.pack("<Q", len(answer)) + answer)
        answers.flush()


if __name__ == "__main__":  # python llvm_compiler.py [idle seconds]
    _serve(os.fdopen(sys.stdin.fileno(), "rb", buffering=0), sys.stdout.buffer,
           float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_SECONDS)
