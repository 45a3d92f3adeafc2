"""Float32 math for the compiled CPU kernels, as LLVM IR that vectorizes (no calls, no branches):
`exp`, `log` and `tanh` with the classic Cody-Waite range reductions and Cephes' minimax polynomials
(S. L. Moshier, "Methods and Programs for Mathematical Functions", 1989), evaluated with fused
multiply-adds. Each is within 1 ulp of the correctly rounded result (NumPy's own SIMD float32
loops: exp 2, log 3, tanh 1; tests/test_lowering.py checks the agreement with NumPy), and gives
NumPy's values at the special points: NaN, +-inf, +-0, overflow, underflow and subnormals.

Other float functions are not written here: an equation needing one runs NumPy's SIMD loop
(llvm_expr.can_translate leaves it out of the kernels).
"""

from __future__ import annotations

import struct

__all__ = ["FUNCTIONS", "definition"]


def _f(v):
    """A float32 value as an LLVM IR float constant (the double with the same value)."""
    import numpy as np
    return "0x%016X" % struct.unpack("<Q", struct.pack("<d", float(np.float32(v))))[0]


FUNCTIONS = {("exp", "float"): "fg_expf", ("log", "float"): "fg_logf",
             ("tanh", "float"): "fg_tanhf"}


_DECLS = ("declare float @llvm.fma.f32(float, float, float)",
          "declare float @llvm.rint.f32(float)",
          "declare float @llvm.minnum.f32(float, float)",
          "declare float @llvm.maxnum.f32(float, float)",
          "declare float @llvm.fabs.f32(float)",
          "declare float @llvm.copysign.f32(float, float)")

def _exp_reduction(x):
    """IR lines shared by exp and tanh: with k = rint(x / ln2) (`%k`, `%ki` as i32) and
    r = x - k ln2, `%p` = e^r = 1 + r + r^2 P(r), for the float register `x`."""
    return f"""  %t = fmul float {x}, {_f(1.44269504088896341)}
  %k = call float @llvm.rint.f32(float %t)
  %r1 = call float @llvm.fma.f32(float %k, float {_f(-0.693359375)}, float {x})
  %r = call float @llvm.fma.f32(float %k, float {_f(2.12194440e-4)}, float %r1)
  %p0 = call float @llvm.fma.f32(float {_f(1.9875691500e-4)}, float %r, float {_f(1.3981999507e-3)})
  %p1 = call float @llvm.fma.f32(float %p0, float %r, float {_f(8.3334519073e-3)})
  %p2 = call float @llvm.fma.f32(float %p1, float %r, float {_f(4.1665795894e-2)})
  %p3 = call float @llvm.fma.f32(float %p2, float %r, float {_f(1.6666665459e-1)})
  %p4 = call float @llvm.fma.f32(float %p3, float %r, float {_f(5.0000001201e-1)})
  %r2 = fmul float %r, %r
  %p5 = call float @llvm.fma.f32(float %p4, float %r2, float %r)
  %p = fadd float %p5, 1.0
  %ki = fptosi float %k to i32
"""


# exp: x = k ln2 + r, |r| <= ln2/2, ln2 = LN2_HI + LN2_LO with LN2_HI exact in 9 bits (k ln2_hi
# is exact for |k| < 2^15); e^r = 1 + r + r^2 P(r); the result is scaled by 2^k in two steps so
# that subnormal results round once more only there.
_EXP = f"""define internal float @fg_expf(float %x) #1 {{
  %c0 = call float @llvm.maxnum.f32(float %x, float {_f(-104.0)})
  %c = call float @llvm.minnum.f32(float %c0, float {_f(89.0)})
{_exp_reduction('%c')}  %k1 = ashr i32 %ki, 1
  %k2 = sub i32 %ki, %k1
  %e1 = add i32 %k1, 127
  %e2 = add i32 %k2, 127
  %b1 = shl i32 %e1, 23
  %b2 = shl i32 %e2, 23
  %s1 = bitcast i32 %b1 to float
  %s2 = bitcast i32 %b2 to float
  %y0 = fmul float %p, %s1
  %y = fmul float %y0, %s2
  %over = fcmp ogt float %x, {_f(88.72283935546875)}
  %y1 = select i1 %over, float 0x7FF0000000000000, float %y
  %under = fcmp olt float %x, {_f(-103.97208404541016)}
  %y2 = select i1 %under, float 0.0, float %y1
  %nan = fcmp uno float %x, %x
  %y3 = select i1 %nan, float %x, float %y2
  ret float %y3
}}
"""

# log: x = m 2^e with m in [sqrt(1/2), sqrt(2)); log(x) = f - f^2/2 + f^3 P(f) + e ln2, f = m - 1
# (subnormal x scaled by 2^25 first).
_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
          1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
          3.3333331174e-1)


def _log():
    poly = [f"  %q0 = call float @llvm.fma.f32(float {_f(_LOG_P[0])}, float %f, "
            f"float {_f(_LOG_P[1])})"]
    for i, c in enumerate(_LOG_P[2:], 1):
        poly.append(f"  %q{i} = call float @llvm.fma.f32(float %q{i - 1}, float %f, "
                    f"float {_f(c)})")
    last = f"%q{len(_LOG_P) - 2}"
    return f"""define internal float @fg_logf(float %x) #1 {{
  %sub = fcmp olt float %x, {_f(1.1754943508222875e-38)}
  %xs = fmul float %x, {_f(33554432.0)}
  %xn = select i1 %sub, float %xs, float %x
  %eadj = select i1 %sub, i32 -25, i32 0
  %bits = bitcast float %xn to i32
  %ebits = lshr i32 %bits, 23
  %ebyte = and i32 %ebits, 255
  %e0 = sub i32 %ebyte, 126
  %e1 = add i32 %e0, %eadj
  %mbits = and i32 %bits, 8388607
  %mb = or i32 %mbits, 1056964608
  %m = bitcast i32 %mb to float
  %lowm = fcmp olt float %m, {_f(0.707106781186547524)}
  %e2 = sub i32 %e1, 1
  %e = select i1 %lowm, i32 %e2, i32 %e1
  %m2 = fadd float %m, %m
  %mm = select i1 %lowm, float %m2, float %m
  %f = fsub float %mm, 1.0
  %z = fmul float %f, %f
{chr(10).join(poly)}
  %fz = fmul float %f, %z
  %y0 = fmul float {last}, %fz
  %ef = sitofp i32 %e to float
  %y1 = call float @llvm.fma.f32(float %ef, float {_f(-2.12194440e-4)}, float %y0)
  %y2 = call float @llvm.fma.f32(float %z, float -0.5, float %y1)
  %r0 = fadd float %f, %y2
  %r = call float @llvm.fma.f32(float %ef, float {_f(0.693359375)}, float %r0)
  %zero = fcmp oeq float %x, 0.0
  %r1 = select i1 %zero, float 0xFFF0000000000000, float %r
  %neg = fcmp olt float %x, 0.0
  %r2 = select i1 %neg, float 0x7FF8000000000000, float %r1
  %inf = fcmp oeq float %x, 0x7FF0000000000000
  %r3 = select i1 %inf, float %x, float %r2
  %nan = fcmp uno float %x, %x
  %r4 = select i1 %nan, float %x, float %r3
  ret float %r4
}}
"""


# tanh: |x| < 0.625: x + x^3 P(x^2) (Cephes' tanhf polynomial); otherwise with t = e^(-2|x|),
# tanh|x| = (1 - t) / (1 + t), t from the exp reduction above on [-87, 0] (a normal result:
# one scaling, no special cases), the sign copied from x. NaN passes through the polynomial.
_TANH = f"""define internal float @fg_tanhf(float %x) #1 {{
  %z = call float @llvm.fabs.f32(float %x)
  %a0 = fmul float %z, -2.0
  %a = call float @llvm.maxnum.f32(float %a0, float {_f(-87.0)})
{_exp_reduction('%a')}  %kb = shl i32 %ki, 23
  %pb = bitcast float %p to i32
  %eb = add i32 %pb, %kb
  %e = bitcast i32 %eb to float
  %num = fsub float 1.0, %e
  %den = fadd float 1.0, %e
  %q = fdiv float %num, %den
  %big = call float @llvm.copysign.f32(float %q, float %x)
  %zz = fmul float %x, %x
  %s0 = call float @llvm.fma.f32(float {_f(-5.70498872745e-3)}, float %zz,
                                 float {_f(2.06390887954e-2)})
  %s1 = call float @llvm.fma.f32(float %s0, float %zz, float {_f(-5.37397155531e-2)})
  %s2 = call float @llvm.fma.f32(float %s1, float %zz, float {_f(1.33314422036e-1)})
  %s3 = call float @llvm.fma.f32(float %s2, float %zz, float {_f(-3.33332819422e-1)})
  %s4 = fmul float %s3, %zz
  %small0 = call float @llvm.fma.f32(float %s4, float %x, float %x)
  %zero = fcmp oeq float %x, 0.0
  %small = select i1 %zero, float %x, float %small0
  %isbig = fcmp oge float %z, 0.625
  %y = select i1 %isbig, float %big, float %small
  ret float %y
}}
"""

_DEFINITIONS = {"fg_expf": _EXP, "fg_logf": _log(), "fg_tanhf": _TANH}


def definition(name, module):
    """The IR text of math function `name`, declaring what it uses in `module`."""
    for d in _DECLS:
        module.declare(d)
    return _DEFINITIONS[name]
