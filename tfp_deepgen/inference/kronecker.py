"""`KroneckerFactors`: a block-diagonal curvature with Kronecker-factored blocks.

The curvature of a Laplace approximation with `hessian="kron"` (Ritter et al.
2018): for each layer l a block `scale * A_l ⊗ G_l`, plus a prior precision
`delta_l` on the diagonal,

    precision = blockdiag_l(scale * A_l ⊗ G_l + delta_l I).

Everything goes through the eigendecompositions `A = Q_A diag(λ_A) Q_A^T`,
`G = Q_G diag(λ_G) Q_G^T`, so the `(P, P)` matrix is never formed: the
eigenvalues of a block are `scale * λ_A,i λ_G,j + delta_l`, and for a layer's
parameters arranged as a `(dA, dG)` matrix V (the kernel's rows, then the bias
row, each of `outputs` values: the `flat_values([kernel, bias])` order, see
`tdg.inference.kfac`), `(A ⊗ G) vec(V) = vec(A V G)`.

All methods are TF ops that run inside `tf.function` and under
`jit_compile=True`. The state is the list of factor tensors `tensors()`
(`[A_1, G_1, A_2, G_2, ...]`), which a Keras model can hold as
non-trainable weights and rebuild from with `from_tensors`.

Example:

>>> import numpy as np
>>> factors = KroneckerFactors([(np.eye(2), 2 * np.eye(3))])
>>> factors.num_parameters
6
>>> round(float(factors.log_det(prior_precision=1.0)), 4)  # 6 log(2 + 1)
6.5917
"""

import tensorflow as tf

from tfp_deepgen.inference.kfac import kfac_factors

__all__ = ["KroneckerFactors", "kron"]


def kron(a, g):
    """The Kronecker product `a ⊗ g` as a dense matrix: entry `[(i, c), (j, d)] = a[i, j] g[c, d]`.

    Index `(i, c)` is `i * g.shape[0] + c`: the row-major flattening of a
    `(dA, dG)` parameter matrix such as `[kernel; bias]`.

    Example:

    >>> kron(tf.eye(2), tf.ones((2, 2))).numpy().astype(int)
    array([[1, 1, 0, 0],
           [1, 1, 0, 0],
           [0, 0, 1, 1],
           [0, 0, 1, 1]])
    """
    a, g = tf.convert_to_tensor(a), tf.convert_to_tensor(g)
    size = a.shape[0] * g.shape[0]
    return tf.reshape(a[:, None, :, None] * g[None, :, None, :], [size, size])


class KroneckerFactors:
    """Per-layer Kronecker factors `(A_l, G_l)` of a curvature, and what a Laplace posterior needs.

    Build one with `from_data` (KFAC of a model on data, see
    `tdg.inference.kfac`) or from stored factors with `from_tensors`.
    Each factor pair `(A, G)` covers one layer's parameters `[kernel, bias]`
    flattened by `tdg.inference.flat_values`; the layers follow one another in
    the flat vector. `prior_precision` below is a scalar or one value per
    layer; `scale` multiplies every `A ⊗ G` (e.g. 1 / temperature).

    Args:
        factors: A list of `(A, G)` pairs of symmetric positive semi-definite
            matrices (arrays or tensors; float32 unless given as float64).

    Example:

    >>> import numpy as np
    >>> factors = KroneckerFactors([(np.eye(2), np.eye(1)), (np.eye(3), 4 * np.eye(2))])
    >>> factors.layer_sizes
    [2, 6]
    >>> factors.precision_diagonal(prior_precision=[1.0, 0.0]).numpy()  # float64 in, out
    array([2., 2., 4., 4., 4., 4., 4., 4.])
    """

    def __init__(self, factors):
        factors = [tuple(pair) for pair in factors]
        if not factors or any(len(pair) != 2 for pair in factors):
            raise ValueError(
                "`factors` must be a non-empty list of (A, G) pairs; received "
                f"{len(factors)} entries of lengths {[len(p) for p in factors]}."
            )
        self.factors = [
            tuple(_as_matrix(f, name) for f, name in zip(p, "AG", strict=True)) for p in factors
        ]
        self.dtype = self.factors[0][0].dtype
        self._eigen = None

    @classmethod
    def from_data(cls, model, layers, x, y=None, curvature="ggn", batch_size=32):
        """KFAC factors of `layers` of `model` over `(x, y)`.

        `A ⊗ G` approximates the SUM over the examples of each layer's GGN (or
        empirical Fisher) block, laplace-torch's convention; see
        `tdg.inference.kfac.kfac_factors` for the arguments.

        Example:

        >>> import keras, numpy as np, tfp_deepgen as tdg
        >>> head = tdg.heads.IndependentNormal(scale=0.5)
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1), head])
        >>> x = np.array([[1.0, 0.0], [0.0, 2.0]], "float32")
        >>> factors = KroneckerFactors.from_data(model, "all", x)
        >>> factors.to_dense().numpy()  # [x, 1]^T [x, 1] / 0.5**2, exactly
        array([[ 4.,  0.,  4.],
               [ 0., 16.,  8.],
               [ 4.,  8.,  8.]], dtype=float32)
        """
        return cls(kfac_factors(model, layers, x, y, curvature, batch_size))

    @classmethod
    def from_tensors(cls, tensors):
        """Rebuilds from `tensors()`'s list `[A_1, G_1, A_2, G_2, ...]` (e.g. Keras weights)."""
        tensors = list(tensors)
        if len(tensors) % 2:
            raise ValueError(
                f"`tensors` must hold A_1, G_1, A_2, G_2, ...; received {len(tensors)} tensors."
            )
        return cls(list(zip(tensors[::2], tensors[1::2], strict=True)))

    def tensors(self):
        """The factors as one list `[A_1, G_1, A_2, G_2, ...]`: the state to store."""
        return [f for pair in self.factors for f in pair]

    @property
    def num_layers(self):
        """The number of layers (factor pairs)."""
        return len(self.factors)

    @property
    def layer_sizes(self):
        """The number of parameters `dA * dG` of each layer, in order."""
        return [int(a.shape[0]) * int(g.shape[0]) for a, g in self.factors]

    @property
    def num_parameters(self):
        """P, the length of the flat parameter vector covered."""
        return sum(self.layer_sizes)

    def eigendecomposition(self):
        """Per layer `(λ_A, Q_A, λ_G, Q_G)`, eigenvalues clipped at 0 (cached when eager)."""
        if self._eigen is not None:
            return self._eigen
        eigen = []
        for a, g in self.factors:
            lam_a, q_a = tf.linalg.eigh(a)
            lam_g, q_g = tf.linalg.eigh(g)
            eigen.append((tf.maximum(lam_a, 0.0), q_a, tf.maximum(lam_g, 0.0), q_g))
        if tf.executing_eagerly():
            self._eigen = eigen
        return eigen

    def _deltas(self, prior_precision):
        """`prior_precision` as one value per layer, shape `(L,)`."""
        delta = tf.convert_to_tensor(prior_precision)
        if delta.shape.rank not in (0, 1) or (
            delta.shape.rank == 1 and delta.shape[0] not in (1, self.num_layers)
        ):
            raise ValueError(
                "`prior_precision` must be a scalar or hold one value per layer "
                f"({self.num_layers}); received shape {tuple(delta.shape)}."
            )
        return tf.broadcast_to(tf.cast(delta, self.dtype), [self.num_layers])

    def _block_eigenvalues(self, prior_precision, scale):
        """Per layer the `(dA, dG)` eigenvalues `scale λ_A,i λ_G,j + delta_l`."""
        deltas = self._deltas(prior_precision)
        scale = tf.cast(scale, self.dtype)
        return [
            scale * lam_a[:, None] * lam_g[None, :] + deltas[index]
            for index, (lam_a, _, lam_g, _) in enumerate(self.eigendecomposition())
        ]

    def log_det(self, prior_precision=0.0, scale=1.0):
        """`log det` of the precision: `sum_l sum_ij log(scale λ_A,i λ_G,j + delta_l)`."""
        values = self._block_eigenvalues(prior_precision, scale)
        return tf.add_n([tf.reduce_sum(tf.math.log(v)) for v in values])

    def precision_diagonal(self, prior_precision=0.0, scale=1.0):
        """The diagonal of the precision, flat `(P,)`: `scale diag(A) ⊗ diag(G) + delta_l`."""
        deltas = self._deltas(prior_precision)
        scale = tf.cast(scale, self.dtype)
        parts = [
            tf.reshape(scale * tf.linalg.diag_part(a)[:, None] * tf.linalg.diag_part(g), [-1])
            + deltas[index]
            for index, (a, g) in enumerate(self.factors)
        ]
        return tf.concat(parts, 0)

    def _split(self, vectors):
        """`vectors` `(..., P)` as one `(..., dA, dG)` tensor per layer."""
        vectors = tf.cast(vectors, self.dtype)
        batch = tf.shape(vectors)[:-1]
        return [
            tf.reshape(part, tf.concat([batch, [a.shape[0], g.shape[0]]], 0))
            for part, (a, g) in zip(
                tf.split(vectors, self.layer_sizes, axis=-1), self.factors, strict=True
            )
        ]

    def _join(self, parts, batch):
        return tf.concat([tf.reshape(p, tf.concat([batch, [-1]], 0)) for p in parts], -1)

    def matmul(self, vectors, prior_precision=0.0, scale=1.0):
        """The precision times `vectors` of shape `(..., P)`, same shape."""
        deltas = self._deltas(prior_precision)
        scale = tf.cast(scale, self.dtype)
        parts = [
            scale * tf.einsum("ij,...jk,kl->...il", a, v, g) + deltas[index] * v
            for index, ((a, g), v) in enumerate(
                zip(self.factors, self._split(vectors), strict=True)
            )
        ]
        return self._join(parts, tf.shape(vectors)[:-1])

    def _eigen_apply(self, vectors, power, prior_precision, scale):
        """`precision ** power` times `vectors`, through the eigenbases."""
        values = self._block_eigenvalues(prior_precision, scale)
        parts = [
            tf.einsum(
                "ij,...jk,lk->...il",
                q_a,
                tf.einsum("ji,...jk,kl->...il", q_a, v, q_g) * value**power,
                q_g,
            )
            for (_, q_a, _, q_g), value, v in zip(
                self.eigendecomposition(), values, self._split(vectors), strict=True
            )
        ]
        return self._join(parts, tf.shape(vectors)[:-1])

    def solve(self, vectors, prior_precision, scale=1.0):
        """The covariance (inverse precision) times `vectors` of shape `(..., P)`."""
        return self._eigen_apply(vectors, -1.0, prior_precision, scale)

    def sample(self, seed, num_samples, prior_precision, scale=1.0):
        """Deviations `(S, P)` from `N(0, precision^-1)`, in the flat parameter order.

        Per layer `(Q_A ⊗ Q_G) diag((scale λ_A λ_G + delta)^-1/2) z`, computed
        as `Q_A Z Q_G^T` on `(dA, dG)` matrices of standard Normal draws.

        Args:
            seed: A shape `[2]` integer seed for `tf.random.stateless_normal`.
            num_samples: S, a Python integer.
            prior_precision: A scalar or one value per layer, > 0 where a
                factor is singular.
            scale: Multiplies every `A ⊗ G`.
        """
        z = tf.random.stateless_normal(
            [num_samples, self.num_parameters], seed, dtype=self.dtype, alg="philox"
        )
        return self._eigen_apply(z, -0.5, prior_precision, scale)

    def layer_block(self, index, prior_precision=0.0, scale=1.0):
        """Layer `index`'s `(P_l, P_l)` block `scale A ⊗ G + delta I`, in flat order."""
        a, g = self.factors[index]
        block = tf.cast(scale, self.dtype) * kron(a, g)
        return block + self._deltas(prior_precision)[index] * tf.eye(block.shape[0], dtype=a.dtype)

    def to_dense(self, prior_precision=0.0, scale=1.0):
        """The whole `(P, P)` block-diagonal precision (for small models and tests)."""
        blocks = [
            tf.linalg.LinearOperatorFullMatrix(self.layer_block(i, prior_precision, scale))
            for i in range(self.num_layers)
        ]
        return tf.linalg.LinearOperatorBlockDiag(blocks).to_dense()


def _as_matrix(value, name):
    tensor = tf.convert_to_tensor(value)
    if tensor.dtype != tf.float64:
        tensor = tf.cast(tensor, tf.float32)
    if tensor.shape.rank != 2 or tensor.shape[0] != tensor.shape[1]:
        raise ValueError(
            f"Each factor {name} must be a square matrix; received shape {tuple(tensor.shape)}."
        )
    return tensor
