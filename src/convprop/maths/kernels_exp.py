"""e^x for the fused kernels (``kernels.py``): a polynomial that vectorises, where a
call to libm's exp would not, accurate to within a few ulp (float32 and float64)."""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


@intrinsic
def _pow2(typingctx, k):
    """2^k for a float k holding an integer in the normal exponent range, built from its
    bits: adding 1.5·2^52 (float32: 1.5·2^23) plus the exponent bias puts k + bias in the
    low bits; shifted into the exponent field, they are 2^k.  All vector instructions
    on AVX2 (which has no float64 -> int64 conversion)."""
    wide = k == types.float64
    ity = ir.IntType(64 if wide else 32)
    shift, magic = (52, 6755399441055744.0 + 1023) if wide else (23, 12582912.0 + 127)

    def codegen(context, builder, sig, args):
        fty = context.get_value_type(sig.return_type)
        biased = builder.bitcast(builder.fadd(args[0], ir.Constant(fty, magic)), ity)
        return builder.bitcast(builder.shl(biased, ir.Constant(ity, shift)), fty)

    return k(k), codegen


_LOG2E_64 = 1.4426950408889634
_LN2HI_64, _LN2LO_64 = 6.93147180369123816e-01, 1.90821492927058770e-10  # ln 2 = hi + lo
_EXP_C64 = tuple(1.0 / math.factorial(i) for i in range(14))
_LOG2E_32 = np.float32(1.4426950408889634)
_LN2HI_32, _LN2LO_32 = np.float32(0.693145751953125), np.float32(1.428606765330187e-06)
_EXP_C32 = tuple(np.float32(1.0 / math.factorial(i)) for i in range(8))
_HALF_32, _LIM_32 = np.float32(0.5), np.float32(87.0)


def _exp(x):
    """e^x, vectorisable (no libm call); overloaded for float32 and float64 below."""
    return math.exp(x)


@overload(_exp, jit_options={"fastmath": {"contract"}})
def _exp_overload(x):
    """Cody-Waite reduction x = k ln2 + r, |r| <= ln2/2, a Taylor polynomial for e^r
    (degree 13 in float64, 7 in float32: truncation below half an ulp), and 2^k built
    from its exponent bits.  |x| is clamped (708 / 87), where e^x would overflow; NaN
    passes through."""
    if x == types.float32:
        c = _EXP_C32

        def impl(x):
            y = min(max(x, -_LIM_32), _LIM_32)
            k = np.floor(y * _LOG2E_32 + _HALF_32)
            r = (y - k * _LN2HI_32) - k * _LN2LO_32
            p = c[7]
            p = p * r + c[6]
            p = p * r + c[5]
            p = p * r + c[4]
            p = p * r + c[3]
            p = p * r + c[2]
            p = p * r + c[1]
            p = p * r + c[0]
            e = p * _pow2(k)
            return e if x == x else x

        return impl
    c = _EXP_C64

    def impl(x):
        y = min(max(x, -708.0), 708.0)
        k = np.floor(y * _LOG2E_64 + 0.5)
        r = (y - k * _LN2HI_64) - k * _LN2LO_64
        p = c[13]
        p = p * r + c[12]
        p = p * r + c[11]
        p = p * r + c[10]
        p = p * r + c[9]
        p = p * r + c[8]
        p = p * r + c[7]
        p = p * r + c[6]
        p = p * r + c[5]
        p = p * r + c[4]
        p = p * r + c[3]
        p = p * r + c[2]
        p = p * r + c[1]
        p = p * r + c[0]
        e = p * _pow2(k)
        return e if x == x else x

    return impl
