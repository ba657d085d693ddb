"""Structured maps from a small coordinate vector α [d] to one weight matrix's update, never a dense D×d matrix.

Each projection is a module holding only what its seed or its base weights
determine (non-persistent buffers, rebuilt on load, never saved) and maps the
shared α to that matrix's flattened update ΔW [D_m]. Stacked over all wrapped
matrices they form one P [D, d] (D = Σ D_m) whose columns have unit norm, so
||P α|| ≈ ||α|| whichever projection is used:

  fastfood  Li et al. 2018 / Aghajanyan et al. 2021: blocks of H G Π H B
            (H Walsh–Hadamard, G Gaussian, Π a permutation, B random signs),
            O(D log d) per product.
  sparse    very sparse random projection (Li, Hastie & Church 2006),
            entries ±sqrt(s) with probability 1/(2s) each, s = sqrt(D).
  svd       the matrix's own top singular pairs: ΔW = U_k diag(α_m) V_kᵀ.
"""

import math

import torch
from torch import nn


def sylvester_hadamard(size: int) -> torch.Tensor:
    """The ±1 Walsh–Hadamard matrix of a power-of-two size, [size, size]; H_2n = [[H_n, H_n], [H_n, -H_n]]."""
    matrix = torch.ones(1, 1)
    while matrix.shape[0] < size:
        matrix = torch.cat([torch.cat([matrix, matrix], 1), torch.cat([matrix, -matrix], 1)], 0)
    return matrix


def hadamard_transform(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Unnormalised Walsh–Hadamard transform over the last dimension: x [..., L] → [..., L], L a power of two.

    H_L is the Kronecker product of Sylvester matrices over groups of index bits (each
    one the top-left corner of `factor` [F, F]), so the transform is a few dense
    matmuls of x reshaped: the smallest group first, the lowest bits last as one plain
    GEMM [N·L/F, F] × [F, F], so that no matmul runs over a tiny trailing axis.
    """
    length, shape = x.shape[-1], x.shape
    bits, factor_bits = length.bit_length() - 1, factor.shape[0].bit_length() - 1
    groups = ([bits % factor_bits] if bits % factor_bits else []) + [factor_bits] * (bits // factor_bits)
    after = length
    for group in groups:
        size = 1 << group
        h = factor[:size, :size].to(x.dtype)  # symmetric
        after //= size
        x = x.reshape(-1, size) @ h if after == 1 else torch.matmul(h, x.reshape(-1, size, after))
    return x.reshape(shape)


class FastfoodProjection(nn.Module):
    """ΔW_m = rows of stacked Fastfood blocks V_b = c_b · H G_b Π_b H B_b applied to α padded to L = 2^⌈log2 d⌉.

    One matrix of D_m weights takes ⌈D_m / L⌉ blocks (the last one cut). Π_b H B_b e_j
    has L entries ±1, G_b turns its squared norm into ||G_b||² and H multiplies that by L,
    so every column of a block has norm exactly sqrt(L)·||G_b||; c_b = 1 / (||G_b||·sqrt(D))
    then gives the columns of the whole stacked P [D, d] unit norm (up to the cut rows).
    Aghajanyan et al.'s code uses one block of 2^⌈log2 D_m⌉ rows per matrix and no row
    scaling S; this keeps the latter but stacks blocks as Le et al.'s Fastfood does,
    O(D_m log d) rather than O(D_m log D_m), with less padding.
    """

    def __init__(self, numel: int, dim: int, total_numel: int, generator: torch.Generator):
        super().__init__()
        self.numel, self.dim = numel, dim
        width = 1 << max(dim - 1, 1).bit_length()  # L ≥ d, a power of two
        blocks = -(-numel // width)
        signs = torch.randint(0, 2, (blocks, width), generator=generator).float() * 2 - 1
        order = torch.rand(blocks, width, generator=generator).argsort(dim=1)  # Π_b
        gaussian = torch.randn(blocks, width, generator=generator)
        gaussian = gaussian / (gaussian.norm(dim=1, keepdim=True) * math.sqrt(total_numel))  # G_b scaled by c_b
        # float signs and int64 positions: CPU kernels for int8 products and int32 gathers run 4-50x slower
        self.register_buffer("signs", signs, persistent=False)  # B [blocks, L]
        self.register_buffer("order", order, persistent=False)  # Π [blocks, L] int64
        self.register_buffer("gaussian", gaussian, persistent=False)  # c·G [blocks, L]
        self.register_buffer("hadamard", sylvester_hadamard(min(width, 32)), persistent=False)  # [F, F]

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """α [d] → ΔW_m flattened [D_m]."""
        blocks, width = self.signs.shape
        x = nn.functional.pad(alpha, (0, width - self.dim)) * self.signs  # [blocks, L]
        x = hadamard_transform(x, self.hadamard)
        x = x.gather(1, self.order) * self.gaussian
        return hadamard_transform(x, self.hadamard).flatten()[: self.numel]


class SparseProjection(nn.Module):
    """ΔW_m = P_m α with P_m [D_m, d] a very sparse random matrix, kept as (row, column, value) triples.

    Li et al. 2006: entries are ±sqrt(s) with probability 1/(2s) each and 0 otherwise,
    s = sqrt(D). The D_m·d/s non-zeros are drawn at uniform positions (a repeat adds up,
    rare); values carry 1/sqrt(D), so columns have unit norm in expectation. With
    d < sqrt(D) many weights have no non-zero in their row and stay fixed.
    """

    def __init__(self, numel: int, dim: int, total_numel: int, generator: torch.Generator):
        super().__init__()
        self.numel = numel
        sparsity = math.sqrt(total_numel)
        count = round(numel * dim / sparsity)
        rows = torch.randint(0, numel, (count,), generator=generator)
        columns = torch.randint(0, dim, (count,), generator=generator)
        signs = torch.randint(0, 2, (count,), generator=generator).float() * 2 - 1
        rows, order = rows.sort()  # scattering in row order touches ΔW's memory once, in sequence
        self.register_buffer("rows", rows, persistent=False)  # [nnz] int64 (int32 indexing is slower on CPU)
        self.register_buffer("columns", columns[order], persistent=False)  # [nnz] int64
        self.register_buffer("values", signs[order] * math.sqrt(sparsity / total_numel), persistent=False)  # [nnz]

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """α [d] → ΔW_m flattened [D_m]."""
        picked = alpha.index_select(0, self.columns) * self.values  # [nnz]
        return alpha.new_zeros(self.numel).index_add(0, self.rows, picked)


class SingularProjection(nn.Module):
    """ΔW_m = U_k diag(α[offset : offset + k]) V_kᵀ from the top-k singular pairs of the frozen W₀ [out, in].

    Adding it shifts W₀'s top-k singular values by α and keeps their vectors. The pairs
    come from the eigenvectors of the smaller Gram matrix (float64 on the CPU, the same
    on every machine); each u_i v_iᵀ is unchanged when an eigenvector comes back
    negated, so the basis is recomputed from W₀ on load and never stored.
    """

    def __init__(self, weight: torch.Tensor, offset: int, rank: int):
        super().__init__()
        self.offset, self.rank = offset, rank
        w = weight.detach().to("cpu", torch.float64)  # [out, in]
        tall = w.shape[0] >= w.shape[1]
        gram = w.T @ w if tall else w @ w.T  # [min, min]
        eigenvalues, vectors = torch.linalg.eigh(gram)  # ascending
        top = vectors[:, -rank:].flip(1)  # [min, k], rank ≥ 1
        singular = eigenvalues[-rank:].flip(0).clamp(min=1e-300).sqrt()  # [k]
        other = (w @ top if tall else w.T @ top) / singular  # the partner vectors [max, k]
        left, right = (other, top) if tall else (top, other)
        self.register_buffer("left", left.float(), persistent=False)  # U_k [out, k]
        self.register_buffer("right", right.T.float(), persistent=False)  # V_kᵀ [k, in]

    def forward(self, alpha: torch.Tensor) -> torch.Tensor:
        """α [d] → ΔW_m flattened [out·in]."""
        shifts = alpha[self.offset: self.offset + self.rank]  # [k]
        return ((self.left * shifts) @ self.right).flatten()
