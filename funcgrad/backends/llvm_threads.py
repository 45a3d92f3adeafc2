"""The kernels' helper thread, in native code: what splits a kernel's loop, and OpenBLAS's
products, across two threads without the GIL and without waking a sleeping thread each time.

A Python helper thread (llvm_runtime's `_split`) costs two thread wake-ups and several GIL
hand-offs per split call; on a 2-core virtual machine that was 50-150 µs a call, so a 370 µs
kernel ran in 260 µs on two threads rather than 190. Worse, after every matrix product
OpenBLAS's own idle thread spins on the second core for about 0.1 s, so a kernel split right
after a product ran slower on two threads than on one (gelu after a product: 438 against
350 µs, 2026-12-07).

This module is LLVM IR for a pool of helper threads (`POOL_IR`), compiled once (and kept on
disk) and loaded like the kernels by llvm_runtime. Its state lives in memory of the process's
own (`POOL_FIELDS`, the symbol `fg_pool_state`), since loaded objects are read-only:

- `fg_pool_run(fn, data, parts, together)` runs `fn(data, k)` for k in [0, parts), the caller
  and the helpers taking parts as they come (a helper that is slow to start costs no wait: the
  caller takes its parts too), and returns when all are done. It is called with the GIL
  released. A second caller while the pool is busy (another Python thread) runs all parts
  itself, or with `together` (parts that wait for each other: OpenBLAS's) runs them on
  threads started for them (also when OpenBLAS is called inside a part, so it never waits
  for itself).
- `fg_pool_kernel(kernel, args, dims_low, dims_high)`: a kernel's two halves (the kernels'
  call wrappers call it when given two loop-range arrays).
- `fg_pool_gemm(job)`: a batch of small matrix products, half the batch on each thread.
- `fg_blas_callback`: OpenBLAS's caller-managed threading callback
  (`openblas_set_threads_callback_function`): BLAS's parts run on the same threads, so no
  second idle thread spins beside the helper. OpenBLAS partitions each product exactly as with
  its own threads, so results are the same. Its parts wait for each other, so each gets a
  thread of its own (helpers are started for them).
- The helpers (started by `fg_pool_start` or the first use, with pthread_create; a fork's
  child starts its own) spin (with `pause`) for `SPIN_CYCLES` time-stamp cycles (about
  0.4 ms) after each job for the next one, then sleep on a futex until woken.

Linux on x86-64 only (futex, pause, rdtsc); elsewhere `supported()` is False and the kernels
use the Python helper.
"""

from __future__ import annotations

import platform
import sys

__all__ = ["supported", "POOL_IR", "POOL_SYMBOLS", "POOL_FIELDS", "POOL_STATE_BYTES",
           "SPIN_CYCLES"]

# How long the helper keeps looking for the next job before it sleeps (time-stamp counter
# cycles; 2^20 is about 0.4 ms at 2.5 GHz): a training step's kernels and products follow each
# other closer than that, an idle program's helper is asleep within a millisecond.
SPIN_CYCLES = 1 << 20

_SYS_FUTEX = 202          # x86-64
_FUTEX_WAIT_PRIVATE = 128
_FUTEX_WAKE_PRIVATE = 129


def supported():
    """Whether the native pool runs here (Linux, x86-64)."""
    return sys.platform.startswith("linux") and platform.machine() in ("x86_64", "AMD64")


# The C library functions the pool calls (their addresses are given to LLVM's linker).
POOL_SYMBOLS = ("syscall", "sched_yield", "pthread_create", "pthread_detach", "pthread_join")

_POOL_IR = f"""
declare i64 @syscall(i64, ...)
declare i32 @sched_yield()
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @pthread_detach(i64)
declare i32 @pthread_join(i64, ptr)
declare void @llvm.x86.sse2.pause()
declare i64 @llvm.readcyclecounter()

@fg_pool_state = external global i8   ; POOL_FIELDS, in memory the process owns

; Take and run parts of job s until none is left.
define internal void @fgp_take(i64 %s) nounwind {{
entry:
  br label %loop
loop:
  %w = load atomic i64, ptr @fgp_next seq_cst, align 8
  %job = lshr i64 %w, 16
  %k = and i64 %w, 65535
  %same = icmp eq i64 %job, %s
  br i1 %same, label %check, label %out
check:
  %n = load atomic i64, ptr @fgp_parts monotonic, align 8
  %more = icmp ult i64 %k, %n
  br i1 %more, label %claim, label %out
claim:
  %w1 = add i64 %w, 1
  %r = cmpxchg ptr @fgp_next, i64 %w, i64 %w1 seq_cst seq_cst
  %ok = extractvalue {{ i64, i1 }} %r, 1
  br i1 %ok, label %run, label %loop
run:
  %fn = load atomic ptr, ptr @fgp_fn monotonic, align 8
  %data = load atomic ptr, ptr @fgp_data monotonic, align 8
  call void %fn(ptr %data, i64 %k)
  %old = atomicrmw add ptr @fgp_done, i64 1 seq_cst
  br label %loop
out:
  ret void
}}

; A helper thread's loop (never returns): it looks at once for a job in progress.
define internal ptr @fgp_worker(ptr %arg) nounwind {{
entry:
  %seen = alloca i64
  store i64 -1, ptr %seen
  br label %spin_start
spin_start:
  %t0 = call i64 @llvm.readcyclecounter()
  br label %spin
spin:
  %s = load atomic i64, ptr @fgp_seq seq_cst, align 8
  %last = load i64, ptr %seen
  %new = icmp ne i64 %s, %last
  br i1 %new, label %work, label %idle
work:
  store i64 %s, ptr %seen
  call void @fgp_take(i64 %s)
  br label %spin_start
idle:
  call void @llvm.x86.sse2.pause()
  %t = call i64 @llvm.readcyclecounter()
  %dt = sub i64 %t, %t0
  %long = icmp ugt i64 %dt, {SPIN_CYCLES}
  br i1 %long, label %sleep, label %spin
sleep:
  store atomic i32 1, ptr @fgp_sleeping seq_cst, align 4
  %s2 = load atomic i64, ptr @fgp_seq seq_cst, align 8
  %last2 = load i64, ptr %seen
  %new2 = icmp ne i64 %s2, %last2
  br i1 %new2, label %spin_start, label %wait
wait:
  %rc = call i64 (i64, ...) @syscall(i64 {_SYS_FUTEX}, ptr @fgp_sleeping,
                                     i32 {_FUTEX_WAIT_PRIVATE}, i32 1, ptr null)
  br label %spin_start
}}

; Start helper threads until there are at least n.
define internal void @fgp_helpers_at_least(i32 %n) nounwind {{
entry:
  %tid = alloca i64
  br label %loop
loop:
  %h = load atomic i32, ptr @fgp_helpers seq_cst, align 4
  %enough = icmp sge i32 %h, %n
  br i1 %enough, label %out, label %grow
grow:
  %h1 = add i32 %h, 1
  %r = cmpxchg ptr @fgp_helpers, i32 %h, i32 %h1 seq_cst seq_cst
  %ok = extractvalue {{ i32, i1 }} %r, 1
  br i1 %ok, label %spawn, label %loop
spawn:
  %e = call i32 @pthread_create(ptr %tid, ptr null, ptr @fgp_worker, ptr null)
  %failed = icmp ne i32 %e, 0
  br i1 %failed, label %undo, label %detach
undo:
  %u = atomicrmw sub ptr @fgp_helpers, i32 1 seq_cst
  br label %out
detach:
  %t = load i64, ptr %tid
  %d = call i32 @pthread_detach(i64 %t)
  br label %loop
out:
  ret void
}}

; fn(data, k) for k in [0, parts) on this thread and the helpers; returns when all are done.
; together = 0: the parts may run one after another (a kernel's halves): while the pool is in
; use, this thread runs them all itself. together = 1: each part must have a thread of its own
; (OpenBLAS's parts wait for each other): helpers are started for them, and while the pool is
; in use (another thread's job, or OpenBLAS called inside a part of this one) threads of their
; own (fgp_own_threads).
define void @fg_pool_run(ptr %fn, ptr %data, i64 %parts, i32 %together) nounwind {{
entry:
  %several = icmp ugt i64 %parts, 1
  br i1 %several, label %helpers, label %serial
helpers:
  %p32 = trunc i64 %parts to i32
  %want = sub i32 %p32, 1
  call void @fgp_helpers_at_least(i32 %want)
  %h = load atomic i32, ptr @fgp_helpers seq_cst, align 4
  %has = icmp sge i32 %h, %want
  br i1 %has, label %lock, label %taken
lock:
  %b = atomicrmw xchg ptr @fgp_busy, i32 1 seq_cst
  %free = icmp eq i32 %b, 0
  br i1 %free, label %post, label %taken
taken:
  %must = icmp ne i32 %together, 0
  br i1 %must, label %own, label %serial
own:
  call void @fgp_own_threads(ptr %fn, ptr %data, i64 %parts)
  ret void
serial:
  %i = phi i64 [0, %entry], [0, %taken], [%i1, %serial_body]
  %left = icmp ult i64 %i, %parts
  br i1 %left, label %serial_body, label %serial_end
serial_body:
  call void %fn(ptr %data, i64 %i)
  %i1 = add i64 %i, 1
  br label %serial
serial_end:
  ret void
post:
  %s0 = load atomic i64, ptr @fgp_seq monotonic, align 8
  %s = add i64 %s0, 1
  store atomic ptr %fn, ptr @fgp_fn monotonic, align 8
  store atomic ptr %data, ptr @fgp_data monotonic, align 8
  store atomic i64 %parts, ptr @fgp_parts monotonic, align 8
  store atomic i64 0, ptr @fgp_done seq_cst, align 8
  %w = shl i64 %s, 16
  store atomic i64 %w, ptr @fgp_next seq_cst, align 8
  store atomic i64 %s, ptr @fgp_seq seq_cst, align 8
  %sl = load atomic i32, ptr @fgp_sleeping seq_cst, align 4
  %asleep = icmp ne i32 %sl, 0
  br i1 %asleep, label %wake, label %take
wake:
  store atomic i32 0, ptr @fgp_sleeping seq_cst, align 4
  %rc = call i64 (i64, ...) @syscall(i64 {_SYS_FUTEX}, ptr @fgp_sleeping,
                                     i32 {_FUTEX_WAKE_PRIVATE}, i32 2147483647)
  br label %take
take:
  call void @fgp_take(i64 %s)
  br label %wait
wait:
  %tries = phi i64 [0, %take], [%tries1, %again], [%tries1, %give]
  %d = load atomic i64, ptr @fgp_done seq_cst, align 8
  %all = icmp uge i64 %d, %parts
  br i1 %all, label %finish, label %again
again:
  call void @llvm.x86.sse2.pause()
  %tries1 = add i64 %tries, 1
  %often = and i64 %tries1, 4095
  %yield = icmp eq i64 %often, 0
  br i1 %yield, label %give, label %wait
give:
  %y = call i32 @sched_yield()
  br label %wait
finish:
  store atomic i32 0, ptr @fgp_busy seq_cst, align 4
  ret void
}}

; Parts that wait for each other while the pool is in use or has no helpers: parts 1.. on
; threads started for them (and joined), part 0 here.
define internal ptr @fgp_own_thread(ptr %arg) nounwind {{
  %fn = load ptr, ptr %arg
  %dp = getelementptr ptr, ptr %arg, i64 1
  %data = load ptr, ptr %dp
  %kp = getelementptr ptr, ptr %arg, i64 2
  %k = load i64, ptr %kp
  call void %fn(ptr %data, i64 %k)
  ret ptr null
}}

define internal void @fgp_own_threads(ptr %fn, ptr %data, i64 %parts) nounwind {{
entry:
  %tids = alloca i64, i64 %parts
  %args = alloca [3 x i64], i64 %parts
  br label %start
start:
  %k = phi i64 [1, %entry], [%k1, %started]
  %more = icmp ult i64 %k, %parts
  br i1 %more, label %spawn, label %mine
spawn:
  %a = getelementptr [3 x i64], ptr %args, i64 %k
  store ptr %fn, ptr %a
  %a1 = getelementptr ptr, ptr %a, i64 1
  store ptr %data, ptr %a1
  %a2 = getelementptr ptr, ptr %a, i64 2
  store i64 %k, ptr %a2
  %t = getelementptr i64, ptr %tids, i64 %k
  %e = call i32 @pthread_create(ptr %t, ptr null, ptr @fgp_own_thread, ptr %a)
  %failed = icmp ne i32 %e, 0
  br i1 %failed, label %inline, label %started
inline:
  store i64 0, ptr %t
  call void %fn(ptr %data, i64 %k)
  br label %started
started:
  %k1 = add i64 %k, 1
  br label %start
mine:
  call void %fn(ptr %data, i64 0)
  br label %join
join:
  %j = phi i64 [1, %mine], [%j1, %joined]
  %left = icmp ult i64 %j, %parts
  br i1 %left, label %one, label %out
one:
  %tj = getelementptr i64, ptr %tids, i64 %j
  %tid = load i64, ptr %tj
  %real = icmp ne i64 %tid, 0
  br i1 %real, label %wait, label %joined
wait:
  %r = call i32 @pthread_join(i64 %tid, ptr null)
  br label %joined
joined:
  %j1 = add i64 %j, 1
  br label %join
out:
  ret void
}}

; A kernel's halves: data is (kernel, args, dims of part 0, dims of part 1).
define internal void @fgp_kernel_part(ptr %data, i64 %k) nounwind {{
  %kernel = load ptr, ptr %data
  %ap = getelementptr ptr, ptr %data, i64 1
  %args = load ptr, ptr %ap
  %i = add i64 %k, 2
  %dp = getelementptr ptr, ptr %data, i64 %i
  %dims = load ptr, ptr %dp
  call void %kernel(ptr %args, ptr %dims)
  ret void
}}

define void @fg_pool_kernel(ptr %kernel, ptr %args, ptr %dims0, ptr %dims1) nounwind {{
  %data = alloca [4 x ptr]
  store ptr %kernel, ptr %data
  %p1 = getelementptr ptr, ptr %data, i64 1
  store ptr %args, ptr %p1
  %p2 = getelementptr ptr, ptr %data, i64 2
  store ptr %dims0, ptr %p2
  %p3 = getelementptr ptr, ptr %data, i64 3
  store ptr %dims1, ptr %p3
  call void @fg_pool_run(ptr @fgp_kernel_part, ptr %data, i64 2, i32 0)
  ret void
}}

; OpenBLAS's parts: data is (dojob, jobdata, element size, dojob_data); part k runs
; dojob(k, jobdata + k * size, dojob_data) (k: the thread number OpenBLAS's buffers are
; chosen by, distinct among the parts running at once).
define internal void @fgp_blas_part(ptr %data, i64 %k) nounwind {{
  %dojob = load ptr, ptr %data
  %jp = getelementptr ptr, ptr %data, i64 1
  %jobs = load ptr, ptr %jp
  %sp = getelementptr ptr, ptr %data, i64 2
  %size = load i64, ptr %sp
  %xp = getelementptr ptr, ptr %data, i64 3
  %extra = load i32, ptr %xp
  %off = mul i64 %k, %size
  %job = getelementptr i8, ptr %jobs, i64 %off
  %k32 = trunc i64 %k to i32
  call void %dojob(i32 %k32, ptr %job, i32 %extra)
  ret void
}}

define void @fg_blas_callback(i32 %sync, ptr %dojob, i32 %numjobs, i64 %size, ptr %jobs,
                              i32 %extra) nounwind {{
  %data = alloca [4 x i64]
  store ptr %dojob, ptr %data
  %p1 = getelementptr ptr, ptr %data, i64 1
  store ptr %jobs, ptr %p1
  %p2 = getelementptr ptr, ptr %data, i64 2
  store i64 %size, ptr %p2
  %p3 = getelementptr ptr, ptr %data, i64 3
  store i32 %extra, ptr %p3
  %n = sext i32 %numjobs to i64
  call void @fg_pool_run(ptr @fgp_blas_part, ptr %data, i64 %n, i32 1)
  ret void
}}

; A batch of small matrix products, half the batch on each thread: job is i64s (gemm, double,
; transA, transB, M, N, K, lda, ldb, ldc, batch, offsets, A, B, C), gemm OpenBLAS's 64-bit-int
; cblas_sgemm or cblas_dgemm (row-major), offsets the byte offsets of each product's A, B and C.
; Each product is the single call NumPy's matmul makes for it (small enough that OpenBLAS
; runs it on the calling thread).
define internal void @fgp_gemm_part(ptr %job, i64 %k) nounwind {{
entry:
  %f = getelementptr i64, ptr %job, i64 0
  %gemm = load ptr, ptr %f
  %v = call i64 @fgp_at(ptr %job, i64 1)
  %ta64 = call i64 @fgp_at(ptr %job, i64 2)
  %tb64 = call i64 @fgp_at(ptr %job, i64 3)
  %ta = trunc i64 %ta64 to i32
  %tb = trunc i64 %tb64 to i32
  %m = call i64 @fgp_at(ptr %job, i64 4)
  %n = call i64 @fgp_at(ptr %job, i64 5)
  %kk = call i64 @fgp_at(ptr %job, i64 6)
  %lda = call i64 @fgp_at(ptr %job, i64 7)
  %ldb = call i64 @fgp_at(ptr %job, i64 8)
  %ldc = call i64 @fgp_at(ptr %job, i64 9)
  %batch = call i64 @fgp_at(ptr %job, i64 10)
  %op = getelementptr i64, ptr %job, i64 11
  %offs = load ptr, ptr %op
  %ap = getelementptr i64, ptr %job, i64 12
  %a = load ptr, ptr %ap
  %bp = getelementptr i64, ptr %job, i64 13
  %b = load ptr, ptr %bp
  %cp = getelementptr i64, ptr %job, i64 14
  %c = load ptr, ptr %cp
  %lo0 = mul i64 %batch, %k
  %lo = udiv i64 %lo0, 2
  %k1 = add i64 %k, 1
  %hi0 = mul i64 %batch, %k1
  %hi = udiv i64 %hi0, 2
  %double = icmp ne i64 %v, 0
  br label %loop
loop:
  %i = phi i64 [%lo, %entry], [%i1, %next]
  %more = icmp ult i64 %i, %hi
  br i1 %more, label %body, label %out
body:
  %o3 = mul i64 %i, 3
  %oa = call i64 @fgp_at(ptr %offs, i64 %o3)
  %o3b = add i64 %o3, 1
  %ob = call i64 @fgp_at(ptr %offs, i64 %o3b)
  %o3c = add i64 %o3, 2
  %oc = call i64 @fgp_at(ptr %offs, i64 %o3c)
  %ai = getelementptr i8, ptr %a, i64 %oa
  %bi = getelementptr i8, ptr %b, i64 %ob
  %ci = getelementptr i8, ptr %c, i64 %oc
  br i1 %double, label %d, label %s
s:
  call void %gemm(i32 101, i32 %ta, i32 %tb, i64 %m, i64 %n, i64 %kk, float 1.0, ptr %ai,
                  i64 %lda, ptr %bi, i64 %ldb, float 0.0, ptr %ci, i64 %ldc)
  br label %next
d:
  call void %gemm(i32 101, i32 %ta, i32 %tb, i64 %m, i64 %n, i64 %kk, double 1.0, ptr %ai,
                  i64 %lda, ptr %bi, i64 %ldb, double 0.0, ptr %ci, i64 %ldc)
  br label %next
next:
  %i1 = add i64 %i, 1
  br label %loop
out:
  ret void
}}

define internal i64 @fgp_at(ptr %p, i64 %i) alwaysinline nounwind {{
  %g = getelementptr i64, ptr %p, i64 %i
  %x = load i64, ptr %g
  ret i64 %x
}}

define void @fg_pool_gemm(ptr %job) nounwind {{
  call void @fg_pool_run(ptr @fgp_gemm_part, ptr %job, i64 2, i32 0)
  ret void
}}

; Start the first helper (the pool is otherwise started by its first use).
define void @fg_pool_start() nounwind {{
  call void @fgp_helpers_at_least(i32 1)
  ret void
}}

"""

# The pool's state: byte offsets of its fields in `fg_pool_state` (each on a cache line of its
# own where threads write it): the last job posted, (job << 16) | the next part to take, parts
# of the job finished, the job (function, data, parts), the futex sleeping helpers wait on
# (int32), whether a caller is using the pool (int32), helper threads started (int32).
POOL_FIELDS = {"seq": 0, "next": 64, "done": 128, "fn": 192, "data": 200, "parts": 208,
               "sleeping": 256, "busy": 320, "helpers": 384}
POOL_STATE_BYTES = 448


def _with_fields(ir):
    """The IR with each `@fgp_<field>` an address inside `fg_pool_state`."""
    for name, offset in sorted(POOL_FIELDS.items(), key=lambda kv: -len(kv[0])):
        ir = ir.replace(f"@fgp_{name} ", f"getelementptr (i8, ptr @fg_pool_state, i64 {offset}) ")
        ir = ir.replace(f"@fgp_{name},", f"getelementptr (i8, ptr @fg_pool_state, i64 {offset}),")
    return ir


POOL_IR = _with_fields(_POOL_IR)
