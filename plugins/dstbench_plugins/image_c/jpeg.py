"""What PIL's `save(format="JPEG", quality=q)` and `open` do to an RGB image, in tensor operations on the images'
device: libjpeg-turbo's baseline round trip with its default settings, its integer arithmetic step by step as its C
code computes it, so that the result is the same bytes as libjpeg's (the tests compare them on thousands of images).

- jccolor.c: RGB to YCbCr in 16-bit fixed point; jcsample.c: 2×2 chroma averages (4:2:0) with alternating biases;
  jcprepct.c / jcsample.c: edges replicated out to whole blocks;
- jfdctint.c: the "islow" forward DCT in 13-bit fixed point; jcdctmgr.c's quantization;
- the standard quantization tables of the JPEG standard's Annex K, scaled by `jpeg_quality_scaling`;
- jidctint.c: the islow inverse DCT and its range limit, which wraps at ±512 before clamping;
- jdsample.c: "fancy" triangular chroma upsampling (plain replication below three chroma columns); jdcolor.c:
  YCbCr to RGB in fixed point.

Huffman coding is lossless, so it is left out. On the CPU libjpeg itself is faster; accelerators use this, and keep
the images on the device.
"""

from __future__ import annotations

import functools

import torch

_LUMA = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8,) * 4,
)


def _fixed(value: float, bits: int) -> int:
    return int(value * (1 << bits) + 0.5)


_CONST_BITS, _PASS1_BITS = 13, 2
# jfdctint.c / jidctint.c's constants FIX_0_298631336 ..., named by their values: FIX(x) at CONST_BITS
_C = {
    name: _fixed(float(name), _CONST_BITS)
    for name in (
        "0.298631336", "0.390180644", "0.541196100", "0.765366865", "0.899976223", "1.175875602",
        "1.501321110", "1.847759065", "1.961570560", "2.053119869", "2.562915447", "3.072711026",
    )
}  # fmt: skip


def round_trip(images: torch.Tensor, quality: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) → uint8 (N, 3, H, W): the images saved as JPEGs at `quality` (1..100) and read back."""
    n, _, height, width = images.shape
    y, cb, cr = _ycc(images.to(torch.int32))
    chroma_h, chroma_w = -(-height // 2), -(-width // 2)
    # Chroma: rows padded to even, columns to whole 8-column chroma blocks, averaged 2×2; then the last chroma row
    # repeated down to whole blocks (libjpeg pads below after downsampling, to the right before).
    wide = -(-chroma_w // 8) * 16
    chroma = _downsample(_replicate(torch.cat([cb, cr]), 2 * chroma_h, wide))
    chroma = _replicate(chroma, -(-chroma_h // 8) * 8, wide // 2)
    luma = _replicate(y, -(-height // 8) * 8, -(-width // 8) * 8)
    luma, chroma = _code(luma, chroma, quality)
    chroma = _upsample(chroma[:, :chroma_h, :chroma_w])[:, :height, :width]
    return _rgb(luma[:, :height, :width], *chroma.split(n))


def _ycc(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """jccolor.c's rgb_ycc_convert of int32 (N, 3, H, W): Y, Cb, Cr (N, H, W)."""
    r, g, b = x.unbind(1)
    half, offset = 1 << 15, (128 << 16) + (1 << 15) - 1  # Cb and Cr round with 0.5 - ε, so never reach 256
    y = (r * _fixed(0.299, 16) + g * _fixed(0.587, 16) + b * _fixed(0.114, 16) + half) >> 16
    cb = (b * _fixed(0.5, 16) - r * _fixed(0.16874, 16) - g * _fixed(0.33126, 16) + offset) >> 16
    cr = (r * _fixed(0.5, 16) - g * _fixed(0.41869, 16) - b * _fixed(0.08131, 16) + offset) >> 16
    return y, cb, cr


def _rgb(y: torch.Tensor, cb: torch.Tensor, cr: torch.Tensor) -> torch.Tensor:
    """jdcolor.c's ycc_rgb_convert: uint8 (N, 3, H, W)."""
    cb, cr = cb - 128, cr - 128
    half = 1 << 15
    red = y + ((cr * _fixed(1.402, 16) + half) >> 16)
    green = y + ((half - cb * _fixed(0.34414, 16) - cr * _fixed(0.71414, 16)) >> 16)
    blue = y + ((cb * _fixed(1.772, 16) + half) >> 16)
    return torch.stack([red, green, blue], 1).clamp_(0, 255).to(torch.uint8)


def _replicate(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, h, w) extended to (N, height, width) by repeating its last row and column."""
    h, w = x.shape[-2:]
    if height > h:
        x = x.index_select(1, torch.arange(height, device=x.device).clamp_(max=h - 1))
    if width > w:
        x = x.index_select(2, torch.arange(width, device=x.device).clamp_(max=w - 1))
    return x


def _downsample(x: torch.Tensor) -> torch.Tensor:
    """jcsample.c's h2v2_downsample: each 2×2 sum plus a bias of 1, 2, 1, 2, ... along the row, over 4."""
    total = x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]
    bias = torch.arange(total.shape[-1], dtype=torch.int32, device=x.device).remainder_(2).add_(1)
    return (total + bias) >> 2


def _upsample(x: torch.Tensor) -> torch.Tensor:
    """jdsample.c's h2v2_fancy_upsample of (N, h, w) to (N, 2h, 2w): each output sample 9/16 of its nearest input,
    3/16 of the next along each axis and 1/16 of the diagonal one, edges repeated; biases 8 and 7 alternate.
    Below three columns libjpeg repeats each sample 2×2 instead."""
    n, h, w = x.shape
    if w <= 2:
        return x.repeat_interleave(2, 1).repeat_interleave(2, 2)
    above = torch.cat([x[:, :1], x[:, :-1]], 1)
    below = torch.cat([x[:, 1:], x[:, -1:]], 1)
    triple = 3 * x
    sums = torch.stack([triple + above, triple + below], 2).view(n, 2 * h, w)  # column sums of rows 2i and 2i + 1
    left = torch.cat([sums[..., :1], sums[..., :-1]], 2)
    right = torch.cat([sums[..., 1:], sums[..., -1:]], 2)
    triple = 3 * sums
    return torch.stack([(triple + left + 8) >> 4, (triple + right + 7) >> 4], 3).view(n, 2 * h, 2 * w)


def _code(luma: torch.Tensor, chroma: torch.Tensor, quality: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward DCT, quantization, dequantization and inverse DCT of every 8×8 block of the luma planes (N, H, W)
    and of the chroma planes (2N, H', W'), all blocks at once: the decoded samples, in planes of the same shapes."""
    luma_blocks = _blocks(luma)
    coefficients = _dct(torch.cat([luma_blocks, _blocks(chroma)]).sub_(128).to(torch.float64))
    luma_table, chroma_table = _tables(quality, luma.device)
    split = len(luma_blocks)
    dequantized = torch.cat(
        [_requantize(coefficients[:split], luma_table), _requantize(coefficients[split:], chroma_table)]
    )
    samples = _idct(dequantized).to(torch.int32)
    return _planes(samples[:split], luma.shape), _planes(samples[split:], chroma.shape)


def _blocks(planes: torch.Tensor) -> torch.Tensor:
    """(N, H, W), H and W multiples of 8 → its 8×8 blocks (N · H/8 · W/8, 8, 8), row by row."""
    n, h, w = planes.shape
    return planes.view(n, h // 8, 8, w // 8, 8).transpose(2, 3).reshape(-1, 8, 8)


def _planes(blocks: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    n, h, w = shape
    return blocks.view(n, h // 8, w // 8, 8, 8).transpose(2, 3).reshape(n, h, w)


@functools.lru_cache(maxsize=16)
def _tables(quality: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The luma and chroma quantization tables scaled to `quality` as jcparam.c scales them (baseline: 1..255),
    float64 (8, 8). Cached per device: made from Python numbers, a copy the host would wait for."""
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    tables = [[[min(max((v * scale + 50) // 100, 1), 255) for v in row] for row in base] for base in (_LUMA, _CHROMA)]
    luma, chroma = torch.tensor(tables, dtype=torch.float64).to(device)
    return luma, chroma


def _requantize(coefficients: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Coefficients (B, 8, 8) quantized and dequantized. The islow DCT's outputs are 8 × too large, so each is
    divided by 8 × the table entry, rounding halves away from zero. (jcdctmgr.c multiplies by reciprocals instead,
    which give the same quotients for every 16-bit coefficient and these divisors: tests check them all.) Integers
    below 2**16 in float64: the floor of the quotient is exact."""
    divisor = table * 8
    magnitude = (coefficients.abs() + (divisor // 2)).div_(divisor, rounding_mode="floor")
    return magnitude.copysign_(coefficients).mul_(table)


# The DCTs as libjpeg computes them: each 1-D pass forms eight integer linear combinations of its inputs (the terms
# below, written as jfdctint.c and jidctint.c write them), then rounds each down by a power of two, DESCALE(x, n) =
# (x + 2**(n-1)) >> n. Here each pass is one matrix product in float64, the matrix rows scaled by 2**-n, and
# floor(product + 1/2) is DESCALE: every product and partial sum is a multiple of 2**-18 below 2**34 in magnitude
# (libjpeg-turbo's SIMD code holds these values in 16- and 32-bit lanes), at most 52 bits, exact in float64 whatever
# the order of the sums.


def _fdct_terms(v: list[torch.Tensor]) -> list[torch.Tensor]:
    """jfdctint.c's eight sums of one row or column, before descaling (out0 and out4 are tmp10 ± tmp11)."""
    tmp0, tmp7 = v[0] + v[7], v[0] - v[7]
    tmp1, tmp6 = v[1] + v[6], v[1] - v[6]
    tmp2, tmp5 = v[2] + v[5], v[2] - v[5]
    tmp3, tmp4 = v[3] + v[4], v[3] - v[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    z1 = (tmp12 + tmp13) * _C["0.541196100"]
    z5 = (tmp4 + tmp6 + tmp5 + tmp7) * _C["1.175875602"]
    z2 = (tmp5 + tmp6) * -_C["2.562915447"]
    z3 = (tmp4 + tmp6) * -_C["1.961570560"] + z5
    z4 = (tmp5 + tmp7) * -_C["0.390180644"] + z5
    z1_odd = (tmp4 + tmp7) * -_C["0.899976223"]
    return [
        tmp10 + tmp11,
        tmp7 * _C["1.501321110"] + z1_odd + z4,
        z1 + tmp13 * _C["0.765366865"],
        tmp6 * _C["3.072711026"] + z2 + z3,
        tmp10 - tmp11,
        tmp5 * _C["2.053119869"] + z2 + z4,
        z1 - tmp12 * _C["1.847759065"],
        tmp4 * _C["0.298631336"] + z1_odd + z3,
    ]


def _idct_terms(v: list[torch.Tensor]) -> list[torch.Tensor]:
    """jidctint.c's eight sums of one column or row of dequantized coefficients, before descaling."""
    z1 = (v[2] + v[6]) * _C["0.541196100"]
    tmp2 = z1 - v[6] * _C["1.847759065"]
    tmp3 = z1 + v[2] * _C["0.765366865"]
    tmp0 = (v[0] + v[4]) * (1 << _CONST_BITS)
    tmp1 = (v[0] - v[4]) * (1 << _CONST_BITS)
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    z5 = (v[7] + v[3] + v[5] + v[1]) * _C["1.175875602"]
    z1 = (v[7] + v[1]) * -_C["0.899976223"]
    z2 = (v[5] + v[3]) * -_C["2.562915447"]
    z3 = (v[7] + v[3]) * -_C["1.961570560"] + z5
    z4 = (v[5] + v[1]) * -_C["0.390180644"] + z5
    odd0 = v[7] * _C["0.298631336"] + z1 + z3
    odd1 = v[5] * _C["2.053119869"] + z2 + z4
    odd2 = v[3] * _C["3.072711026"] + z2 + z3
    odd3 = v[1] * _C["1.501321110"] + z1 + z4
    return [
        tmp10 + odd3,
        tmp11 + odd2,
        tmp12 + odd1,
        tmp13 + odd0,
        tmp13 - odd0,
        tmp12 - odd1,
        tmp11 - odd2,
        tmp10 - odd3,
    ]


def _pass_matrix(terms, shifts: tuple[int, ...]) -> torch.Tensor:
    """The (8, 8) float64 matrix of a pass: row k holds term k's integer coefficients times 2**-shifts[k]."""
    rows = torch.stack(terms(list(torch.eye(8, dtype=torch.float64).unbind(0))))
    return rows * torch.tensor([2.0**-shift for shift in shifts], dtype=torch.float64)[:, None]


_N1, _N2 = _CONST_BITS - _PASS1_BITS, _CONST_BITS + _PASS1_BITS
_PASSES = {  # the first forward pass keeps PASS1_BITS more bits (out0, out4 shifted left); the inverse's second
    # pass also divides by 8
    "fdct rows": _pass_matrix(_fdct_terms, (-_PASS1_BITS, _N1, _N1, _N1, -_PASS1_BITS, _N1, _N1, _N1)),
    "fdct columns": _pass_matrix(_fdct_terms, (_PASS1_BITS, _N2, _N2, _N2, _PASS1_BITS, _N2, _N2, _N2)),
    "idct columns": _pass_matrix(_idct_terms, (_N1,) * 8),
    "idct rows": _pass_matrix(_idct_terms, (_N2 + 3,) * 8),
}


@functools.lru_cache(maxsize=8)
def _pass_matrices(device: torch.device) -> dict[str, torch.Tensor]:
    return {name: matrix.to(device) for name, matrix in _PASSES.items()}


def _dct(blocks: torch.Tensor) -> torch.Tensor:
    """jfdctint.c's jpeg_fdct_islow of level-shifted samples (B, 8, 8), float64: rows, then columns."""
    m = _pass_matrices(blocks.device)
    rows = (blocks @ m["fdct rows"].T).add_(0.5).floor_()
    return (m["fdct columns"] @ rows).add_(0.5).floor_()


def _idct(coefficients: torch.Tensor) -> torch.Tensor:
    """jidctint.c's jpeg_idct_islow of dequantized coefficients (B, 8, 8), float64: columns, then rows, then its
    range limit (the sum wraps to 10 bits, then is clamped to 0..255 around 128)."""
    m = _pass_matrices(coefficients.device)
    columns = (m["idct columns"] @ coefficients).add_(0.5).floor_()
    x = (columns @ m["idct rows"].T).add_(0.5).floor_()
    return x.add_(512).remainder_(1024).sub_(384).clamp_(0, 255)
