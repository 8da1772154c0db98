"""Item response theory: how hard is each generated item, judged by K solvers' answers.

Following Kordi et al.'s use of IRT to grade the difficulty of LLM training data, every
generated item (a question) is answered by K solver configurations (different models, or
one model with different seeds), each answer is graded 0/1, and an IRT model turns that
items x solvers matrix into one difficulty per item (with a standard error) and one ability
per solver. Difficulty is on the same logit scale as ability, so unlike the raw solve rate it
does not depend on which solvers happened to answer an item (missing answers are allowed).

Models (``sigmoid(t) = 1 / (1 + exp(-t))``)::

    2PL:  P(solver j answers item i correctly) = sigmoid(a_i * (theta_j - b_i))
    1PL:  the same with a_i = 1 (the Rasch model)

``b_i`` is the item's difficulty, ``a_i`` its discrimination (how sharply it separates weak
from strong solvers), ``theta_j`` the solver's ability. The 2PL (the default) also flags
suspect items: one that strong solvers fail and weak ones pass (say, a wrong reference
answer) gets a discrimination near the bottom of the range (a > 0 always: it is fitted as
log a). With K ~ 20 solvers, though, each a is poorly determined (its correlation with the
truth is only ~0.4 in simulation) and the difficulty comes out about as well as under the
1PL, which has one parameter per item and keeps the solve-rate ordering exactly (with no
missing answers, items with the same number of correct answers get the same difficulty).

Why joint MAP rather than plain joint maximum likelihood (JML): with ~20 solvers many
generated items are answered correctly (or wrongly) by every solver, and their JML difficulty
is -inf (+inf); JML is also biased by O(1/K) when every item has only K answers. Weakly
informative Gaussian priors (ability ~ N(0, 1), difficulty ~ N(0, 2^2), log discrimination
~ N(0, 0.5^2) by default) keep every estimate finite (an all-wrong item lands above every
mixed item, at a distance set by the prior) and shrink the noisy ones a little. They also
identify the model: the likelihood only sees ``a * (theta - b)``, which is unchanged by
shifting theta and b together, or by scaling theta and b up and a down. The zero-mean priors
on ability and difficulty fix the location; the prior on log a (median discrimination 1)
together with ability ~ N(0, 1) fixes the scale. For the 1PL the scale is fixed by a = 1.

Estimation maximises the joint log posterior over all parameters at once with scipy's
L-BFGS-B, using an analytic gradient computed in vectorised numpy over the whole matrix (no
Python loop over items), on variables rescaled by a rough diagonal of the Hessian so that the
20 abilities (each seen by thousands of items) and the item parameters (each seen by K
solvers) have comparable curvature. 100k items x 20 solvers fits in 1-4 s (see
`_one_blas_thread` for why threadpoolctl, if installed, is used to keep that figure on a busy
machine).

Standard errors come from the Laplace approximation of the joint posterior, with the Fisher
information plus the prior precision in place of the Hessian. Each item's variance is the
inverse of its own 2x2 (1x1 for the 1PL) block, i.e. its variance given the abilities, plus
the (small) part the abilities' uncertainty adds; the abilities' K x K covariance is the
Schur complement after eliminating every item block. Counting the item uncertainty matters
for the abilities: the abilities' SEs computed with the items held fixed are ~25% too small
(95% intervals covered the truth ~85% of the time in simulation, ~95% with the full form).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats

try:  # optional: keeps OpenBLAS to one thread while fitting (see _one_blas_thread)
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover - depends on the environment
    threadpool_limits = None

__all__ = [
    "DifficultyBins",
    "Fit",
    "Objective",
    "Simulated",
    "difficulty_bins",
    "fit",
    "predict",
    "recovery",
    "simulate",
]

MODELS = ("1pl", "2pl")


def _check_model(model: str) -> str:
    model = model.lower()
    if model not in MODELS:
        raise ValueError(f"model must be one of {MODELS}, got {model!r}")
    return model


# --------------------------------------------------------------------------- simulation


@dataclass
class Simulated:
    """Synthetic responses with the parameters that generated them."""

    responses: np.ndarray  # (items, solvers) float: 0.0 / 1.0 / NaN (missing)
    difficulty: np.ndarray  # (items,) true b
    discrimination: np.ndarray  # (items,) true a (all ones for the 1PL)
    ability: np.ndarray  # (solvers,) true theta
    model: str


def simulate(
    n_items: int,
    n_solvers: int,
    *,
    model: str = "2pl",
    seed: int = 0,
    difficulty_mean: float = 0.0,
    difficulty_sd: float = 1.5,
    ability_sd: float = 1.0,
    log_discrimination_sd: float = 0.3,
    missing: float = 0.0,
) -> Simulated:
    """Draw a response matrix from a known 1PL/2PL model.

    Generating distributions (defaults):

    - difficulty ``b ~ N(difficulty_mean, difficulty_sd^2) = N(0, 1.5^2)``: generated items
      range from ones every solver gets right to ones none does, ~5% of items lie beyond
      the easiest or the hardest solver;
    - ability: a ladder of K evenly spread models, ``theta_j = ability_sd *
      Phi^-1((j + 0.5) / K)`` (the normal quantiles, so the ladder has mean 0 and standard
      deviation ~``ability_sd``, matching the N(0, 1) prior of :func:`fit`);
    - discrimination ``a ~ LogNormal(0, log_discrimination_sd^2) = LogNormal(0, 0.3^2)`` for
      the 2PL (a in ~[0.55, 1.8]), ``a = 1`` for the 1PL;
    - each answer ~ Bernoulli(sigmoid(a_i (theta_j - b_i))); then a fraction ``missing`` of
      the entries is set to NaN at random, keeping at least one answer per item and solver.

    How well difficulty can be recovered depends mostly on ``difficulty_sd`` relative to
    the per-item standard error, which with K = 20 solvers is ~0.5-0.6 logits in the middle
    of the ability range and larger outside it.
    """
    model = _check_model(model)
    if n_items < 1 or n_solvers < 1:
        raise ValueError("n_items and n_solvers must be >= 1")
    if not 0.0 <= missing < 1.0:
        raise ValueError(f"missing must be in [0, 1), got {missing}")
    rng = np.random.default_rng(seed)
    b = rng.normal(difficulty_mean, difficulty_sd, n_items)
    theta = ability_sd * stats.norm.ppf((np.arange(n_solvers) + 0.5) / n_solvers)
    if model == "2pl":
        a = np.exp(rng.normal(0.0, log_discrimination_sd, n_items))
    else:
        a = np.ones(n_items)
    p = _sigmoid(a[:, None] * (theta[None, :] - b[:, None]))
    y = (rng.random(p.shape) < p).astype(float)
    if missing > 0:
        drop = rng.random(y.shape) < missing
        # Keep every item and every solver with at least one answer.
        for axis in (1, 0):
            empty = np.flatnonzero(drop.all(axis=axis))
            if empty.size:
                other = rng.integers(0, y.shape[axis], empty.size)
                if axis == 1:
                    drop[empty, other] = False
                else:
                    drop[other, empty] = False
        y[drop] = np.nan
    return Simulated(responses=y, difficulty=b, discrimination=a, ability=theta, model=model)


# --------------------------------------------------------------------------- objective


def _sigmoid(z: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _validate(responses: Any) -> np.ndarray:
    """Return responses as a float (items, solvers) array, or raise a clear ValueError."""
    y = np.asarray(responses)
    if y.ndim != 2:
        raise ValueError(f"responses must be a 2-D (items, solvers) array, got shape {y.shape}")
    if y.shape[0] < 1 or y.shape[1] < 1:
        raise ValueError(f"responses must have at least one item and one solver, got {y.shape}")
    real = np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)
    if not (real or np.issubdtype(y.dtype, np.bool_)):
        raise ValueError(f"responses must be numeric (0/1/NaN), got dtype {y.dtype}")
    y = y.astype(float)
    seen = ~np.isnan(y)
    bad = seen & (y != 0.0) & (y != 1.0)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"responses must be 0, 1 or NaN (missing); found {float(y[i, j])!r} at item {i}, "
            f"solver {j} ({int(bad.sum())} such entries)"
        )
    for axis, what in ((1, "items"), (0, "solvers")):
        empty = np.flatnonzero(~seen.any(axis=axis))
        if empty.size:
            shown = ", ".join(map(str, empty[:10])) + (", ..." if empty.size > 10 else "")
            raise ValueError(
                f"{what} with no responses (all NaN) at index {shown}: "
                f"drop them before fitting, there is nothing to estimate them from"
            )
    return y


class Objective:
    """Negative joint log posterior of a 1PL/2PL model and its analytic gradient.

    The parameter vector is ``x = [theta (K), b (N), log a (N, 2PL only)]``. Calling the
    object returns ``(value, gradient)``, as ``scipy.optimize.minimize(jac=True)`` wants.
    Exposed so that tests can check the gradient against finite differences. It keeps
    work arrays between calls, so one instance must not be called from two threads at once.
    """

    def __init__(
        self,
        responses: np.ndarray,
        *,
        model: str = "2pl",
        prior_sd_ability: float = 1.0,
        prior_sd_difficulty: float = 2.0,
        prior_sd_log_discrimination: float = 0.5,
    ) -> None:
        self.model = _check_model(model)
        for name, sd in (
            ("prior_sd_ability", prior_sd_ability),
            ("prior_sd_difficulty", prior_sd_difficulty),
            ("prior_sd_log_discrimination", prior_sd_log_discrimination),
        ):
            if not (np.isfinite(sd) and sd > 0):
                raise ValueError(f"{name} must be a positive number, got {sd!r}")
        y = _validate(responses)
        seen = ~np.isnan(y)
        self.n_items, self.n_solvers = y.shape
        self.mask = None if seen.all() else seen.astype(float)
        y = np.where(seen, y, 0.0)
        self.sign = 1.0 - 2.0 * y  # +1 for a wrong answer, -1 for a right one
        self.neg_sign = -self.sign if self.mask is None else -self.sign * self.mask
        self.n_item = seen.sum(axis=1).astype(float)
        self.n_solver = seen.sum(axis=0).astype(float)
        self.correct_item = y.sum(axis=1)
        self.correct_solver = y.sum(axis=0)
        self.prec_theta = 1.0 / prior_sd_ability**2
        self.prec_b = 1.0 / prior_sd_difficulty**2
        self.prec_loga = 1.0 / prior_sd_log_discrimination**2
        self.n_params = self.n_solvers + self.n_items * (2 if self.model == "2pl" else 1)
        self._z, self._u, self._t = (np.empty(y.shape) for _ in range(3))

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Split x into (theta, b, log a); log a is zeros for the 1PL."""
        k, n = self.n_solvers, self.n_items
        theta, b = x[:k], x[k : k + n]
        loga = x[k + n :] if self.model == "2pl" else np.zeros(n)
        return theta, b, loga

    def _masked(self, m: np.ndarray) -> np.ndarray:
        return m if self.mask is None else m * self.mask

    def log_likelihood(self, x: np.ndarray) -> float:
        """Bernoulli log likelihood of the observed answers (no prior)."""
        theta, b, loga = self.unpack(x)
        u = self.sign * (np.exp(loga)[:, None] * (theta[None, :] - b[:, None]))
        # log P(y | z) = -softplus((1 - 2y) z), softplus computed without overflow.
        softplus = np.maximum(u, 0.0) + np.log1p(np.exp(-np.abs(u)))
        return -float(self._masked(softplus).sum())

    def __call__(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        theta, b, loga = self.unpack(x)
        a = np.exp(loga)
        # The (items, solvers) work arrays are reused between calls (in place, out=): at
        # 100k x 20 allocating fresh 16 MB arrays costs about a third of the time.
        z = np.subtract(theta[None, :], b[:, None], out=self._z)
        z *= a[:, None]
        # With u = (1 - 2y) z, log P(y | z) = -softplus(u) and y - sigmoid(z) =
        # -(1 - 2y) sigmoid(u): one exp and one log1p over the matrix, no branches.
        u = np.multiply(self.sign, z, out=self._u)
        softplus = np.abs(u, out=self._t)
        np.negative(softplus, out=softplus)
        np.exp(softplus, out=softplus)
        np.log1p(softplus, out=softplus)
        softplus += np.maximum(u, 0.0)
        nll = softplus.sum() if self.mask is None else np.einsum("ij,ij->", softplus, self.mask)
        r = np.subtract(u, softplus, out=u)
        np.exp(r, out=r)  # sigmoid(u) = exp(u - softplus(u)), never overflows
        r *= self.neg_sign  # d loglik / dz, zero where the answer is missing
        # einsum, not @: OpenBLAS threads its dot products, and on a busy machine waking its
        # threads for a 200k-long dot costs milliseconds (20x slower fits were measured).
        prior = 0.5 * (
            self.prec_theta * np.einsum("i,i->", theta, theta)
            + self.prec_b * np.einsum("i,i->", b, b)
            + (self.prec_loga * np.einsum("i,i->", loga, loga) if self.model == "2pl" else 0.0)
        )
        g_theta = -np.einsum("ij,i->j", r, a) + self.prec_theta * theta
        g_b = a * r.sum(axis=1) + self.prec_b * b
        parts = [g_theta, g_b]
        if self.model == "2pl":
            parts.append(-np.einsum("ij,ij->i", r, z) + self.prec_loga * loga)
        return float(prior + nll), np.concatenate(parts)

    def start(self) -> np.ndarray:
        """A starting point from smoothed solve rates (Rasch-like logits)."""
        k_rate = (self.correct_solver + 0.5) / (self.n_solver + 1.0)
        i_rate = (self.correct_item + 0.5) / (self.n_item + 1.0)
        theta = np.log(k_rate / (1 - k_rate))
        theta -= theta.mean()
        b = -np.log(i_rate / (1 - i_rate)) + theta.mean()
        parts = [theta, b] + ([np.zeros(self.n_items)] if self.model == "2pl" else [])
        return np.concatenate(parts)

    def scale(self) -> np.ndarray:
        """Rough sqrt of the Hessian's diagonal, to precondition L-BFGS-B.

        An ability is informed by every item (curvature ~0.2 per answer), an item only by its
        K answers; without rescaling the optimiser crawls along the ability directions.
        """
        parts = [
            np.sqrt(0.2 * self.n_solver + self.prec_theta),
            np.sqrt(0.2 * self.n_item + self.prec_b),
        ]
        if self.model == "2pl":
            parts.append(np.sqrt(0.2 * self.n_item + self.prec_loga))
        return np.concatenate(parts)

    def laplace(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Laplace approximation of the posterior at x: ``(ability_cov, var_b, var_log_a)``.

        The Hessian of the negative log posterior is replaced by the Fisher (expected)
        information plus the prior precision, which is always positive definite. It has an
        arrow shape: a diagonal K x K block for the abilities, one 2x2 block per item
        ((b, log a); 1x1 for the 1PL) and the couplings between each item and each solver.
        Eliminating the item blocks (a Schur complement) gives the abilities' K x K
        covariance; each item's variance is its own block's inverse (its variance given the
        abilities, the dominant part) plus what the abilities' uncertainty adds. All of it
        is O(N K^2) vectorised numpy, no K + 2N square matrix is formed.
        """
        theta, b, loga = self.unpack(x)
        a = np.exp(loga)
        z = a[:, None] * (theta[None, :] - b[:, None])
        w = self._masked(_sigmoid(z) * _sigmoid(-z))
        info_theta = (w * (a**2)[:, None]).sum(axis=0) + self.prec_theta
        ibb = a**2 * w.sum(axis=1) + self.prec_b
        # Coupling of item i's b (and log a) with solver j: E[dz/dtheta_j * dz/db_i] w etc.
        cb = -(a**2)[:, None] * w
        if self.model == "2pl":
            cl = w * (a[:, None] * z)
            ibl = -a * (w * z).sum(axis=1)
            ill = np.einsum("ij,ij->i", w, z * z) + self.prec_loga
            det = ibb * ill - ibl**2
            var_b, var_loga = ill / det, ibb / det
            # D = (item block)^-1 C^T, per item: rows for b and log a.
            db = (ill[:, None] * cb - ibl[:, None] * cl) / det[:, None]
            dl = (ibb[:, None] * cl - ibl[:, None] * cb) / det[:, None]
            schur = np.diag(info_theta) - cb.T @ db - cl.T @ dl
        else:
            var_b, var_loga = 1.0 / ibb, np.zeros(self.n_items)
            db = cb / ibb[:, None]
            schur = np.diag(info_theta) - cb.T @ db
        ability_cov = np.linalg.inv(schur)
        var_b = var_b + np.einsum("ik,kl,il->i", db, ability_cov, db)
        if self.model == "2pl":
            var_loga = var_loga + np.einsum("ik,kl,il->i", dl, ability_cov, dl)
        return ability_cov, var_b, var_loga


# --------------------------------------------------------------------------- fitting


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    """Limit OpenBLAS to one thread for the duration of a fit, if threadpoolctl is present.

    L-BFGS-B's own vector updates (200k-long dot products and axpys at 100k items) go
    through scipy's OpenBLAS, which splits them over threads; they are memory-bound, so the
    threads gain nothing, and on a busy machine waking them costs milliseconds per call:
    100k x 20 2PL fits took 3x longer, 10k x 20 ones up to 20x. The limit is process-wide
    while it lasts (other threads' BLAS calls also get one thread). Without threadpoolctl,
    OPENBLAS_NUM_THREADS=1 in the environment before start-up has the same effect.
    """
    if threadpool_limits is None:
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class Fit:
    """Estimated IRT parameters.

    ``difficulty`` (b) and ``ability`` (theta) share one logit scale: a solver with theta = b
    answers the item correctly with probability 1/2. Standard errors are the Laplace
    approximation's (see the module docstring), so ``difficulty +- 1.96 * difficulty_se`` is
    a ~95% interval. For the 1PL, ``discrimination`` is all ones and ``discrimination_se``
    and ``log_discrimination_se`` all zeros (fixed, not estimated). For the 2PL,
    ``discrimination_se`` is the delta-method SE of a; the approximation is Gaussian in
    log a, so a 95% interval for a is ``a * exp(+-1.96 * log_discrimination_se)``.
    ``log_likelihood`` is that of the answers alone, ``log_posterior`` adds the log priors
    (without their normalising constants); ``converged`` and ``iterations``
    are L-BFGS-B's, ``message`` its reason for stopping.
    """

    difficulty: np.ndarray
    difficulty_se: np.ndarray
    discrimination: np.ndarray
    discrimination_se: np.ndarray
    log_discrimination_se: np.ndarray
    ability: np.ndarray
    ability_se: np.ndarray
    ability_cov: np.ndarray  # (solvers, solvers) Laplace covariance of the abilities
    model: str
    log_likelihood: float
    log_posterior: float
    converged: bool
    iterations: int
    n_observed: np.ndarray  # answers per item
    message: str = ""
    priors: dict[str, float] = field(default_factory=dict)

    def items(self) -> list[dict[str, float]]:
        """One dict per item (index, difficulty, its SE, discrimination, its SE, answers)."""
        return [
            {
                "index": i,
                "difficulty": float(self.difficulty[i]),
                "difficulty_se": float(self.difficulty_se[i]),
                "discrimination": float(self.discrimination[i]),
                "discrimination_se": float(self.discrimination_se[i]),
                "n_observed": int(self.n_observed[i]),
            }
            for i in range(self.difficulty.size)
        ]


def fit(
    responses: np.ndarray,
    *,
    model: str = "2pl",
    prior_sd_ability: float = 1.0,
    prior_sd_difficulty: float = 2.0,
    prior_sd_log_discrimination: float = 0.5,
    max_iter: int = 2000,
    tol: float = 1e-5,
) -> Fit:
    """Fit a 1PL or 2PL model by joint MAP (see the module docstring for why).

    ``responses`` is an (items, solvers) array of 0/1 with NaN for missing answers (bool and
    integer arrays are accepted). Raises ValueError for a wrong shape, a value other than
    0/1/NaN, or an item or solver without any answer (the error names its index; drop such
    rows first, as a prior-only estimate would look like a real "medium" difficulty).

    Priors (all Gaussian, zero mean): ability ~ N(0, prior_sd_ability^2), difficulty ~
    N(0, prior_sd_difficulty^2), log discrimination ~ N(0, prior_sd_log_discrimination^2).
    ``tol`` is L-BFGS-B's projected-gradient tolerance in the rescaled variables, i.e.
    roughly in units of each parameter's standard error.
    """
    obj = Objective(
        responses,
        model=model,
        prior_sd_ability=prior_sd_ability,
        prior_sd_difficulty=prior_sd_difficulty,
        prior_sd_log_discrimination=prior_sd_log_discrimination,
    )
    s = obj.scale()

    def scaled(u: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = obj(u / s)
        return f, g / s

    # Keep log a in a sane range so a wild line-search step cannot overflow exp(log a).
    k, n = obj.n_solvers, obj.n_items
    bounds = None
    if obj.model == "2pl":
        lo = np.full(obj.n_params, -np.inf)
        hi = np.full(obj.n_params, np.inf)
        lo[k + n :], hi[k + n :] = -5.0, 5.0
        bounds = optimize.Bounds(lo * s, hi * s)
    with _one_blas_thread():
        res = optimize.minimize(
            scaled,
            obj.start() * s,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-10, "maxcor": 10},
        )
        x = res.x / s
        ability_cov, var_b, var_loga = obj.laplace(x)
    theta, b, loga = obj.unpack(x)
    a = np.exp(loga)
    se_loga = np.sqrt(var_loga)
    return Fit(
        difficulty=b.copy(),
        difficulty_se=np.sqrt(var_b),
        discrimination=a,
        discrimination_se=a * se_loga,
        log_discrimination_se=se_loga,
        ability=theta.copy(),
        ability_se=np.sqrt(np.diag(ability_cov)),
        ability_cov=ability_cov,
        model=obj.model,
        log_likelihood=obj.log_likelihood(x),
        log_posterior=-float(res.fun),
        converged=bool(res.success),
        iterations=int(res.nit),
        n_observed=obj.n_item.astype(int),
        message=str(res.message),
        priors={
            "ability": prior_sd_ability,
            "difficulty": prior_sd_difficulty,
            "log_discrimination": prior_sd_log_discrimination,
        },
    )


def predict(fit: Fit, ability: np.ndarray | None = None) -> np.ndarray:
    """P(correct) for every item and solver: an (items, solvers) array.

    ``ability`` defaults to the fitted solvers; pass other abilities (on the same scale) to
    ask how a new solver of known ability would fare on each item.
    """
    theta = fit.ability if ability is None else np.atleast_1d(np.asarray(ability, float))
    return _sigmoid(fit.discrimination[:, None] * (theta[None, :] - fit.difficulty[:, None]))


# --------------------------------------------------------------------------- diagnostics


def _compare(true: np.ndarray, est: np.ndarray, se: np.ndarray | None) -> dict[str, float]:
    out = {
        "pearson": float(stats.pearsonr(true, est)[0]) if np.ptp(true) > 0 else float("nan"),
        "spearman": float(stats.spearmanr(true, est)[0]) if np.ptp(true) > 0 else float("nan"),
        "rmse": float(np.sqrt(np.mean((true - est) ** 2))),
    }
    if se is not None:
        out["coverage"] = float(np.mean(np.abs(true - est) <= 1.96 * se))
    return out


def recovery(sim: Simulated, fit: Fit) -> dict[str, float]:
    """How well ``fit`` recovers the parameters that generated ``sim``.

    Returns flat keys ``{difficulty,ability,discrimination}_{pearson,spearman,rmse,coverage}``
    (discrimination only when both are 2PL; its RMSE and coverage are on log a, where the
    Laplace interval is symmetric). Coverage is the share of true values inside the estimate
    +-1.96 SE. RMSE and coverage assume the fit's scale matches the simulation's, which holds
    for :func:`simulate`'s defaults (their location and scale match the fit's priors);
    correlations do not depend on it.
    """
    out: dict[str, float] = {}
    pairs: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]] = [
        ("difficulty", sim.difficulty, fit.difficulty, fit.difficulty_se),
        ("ability", sim.ability, fit.ability, fit.ability_se),
    ]
    if sim.model == "2pl" and fit.model == "2pl":
        pairs.append(
            (
                "discrimination",
                np.log(sim.discrimination),
                np.log(fit.discrimination),
                fit.log_discrimination_se,
            )
        )
    for name, true, est, se in pairs:
        for key, value in _compare(true, est, se).items():
            out[f"{name}_{key}"] = value
    if "discrimination_pearson" in out:
        # Correlations on the a scale itself, the way they are usually quoted.
        a = _compare(sim.discrimination, fit.discrimination, None)
        out["discrimination_pearson"] = a["pearson"]
    return out


@dataclass
class DifficultyBins:
    """Items split into equal-count difficulty bins (bin 0 is the easiest)."""

    assignment: np.ndarray  # (items,) int bin index
    edges: np.ndarray  # (n_bins + 1,) difficulty boundaries, min .. max
    labels: list[str]
    counts: np.ndarray  # (n_bins,) items per bin

    def label_of(self) -> list[str]:
        """The label of each item's bin, in item order."""
        return [self.labels[k] for k in self.assignment]


_DEFAULT_LABELS = {
    2: ["easy", "hard"],
    3: ["easy", "medium", "hard"],
    4: ["easy", "medium", "hard", "very hard"],
    5: ["very easy", "easy", "medium", "hard", "very hard"],
}


def difficulty_bins(
    difficulty: np.ndarray, n_bins: int, *, labels: list[str] | None = None
) -> DifficultyBins:
    """Split items into ``n_bins`` quantile bins of difficulty, for balancing a dataset.

    Bins are cut by rank, so their sizes differ by at most one even when many items share a
    difficulty (all-correct items do, under the same solvers); ties are broken by item order.
    ``edges[k]`` is the midpoint between the last difficulty of bin k - 1 and the first of
    bin k. Default labels are words for 2..5 bins (e.g. easy/medium/hard), else "q1".."qn".
    """
    d = np.asarray(difficulty, dtype=float)
    if d.ndim != 1 or d.size == 0:
        raise ValueError("difficulty must be a non-empty 1-D array")
    if not np.isfinite(d).all():
        raise ValueError("difficulty must be finite (no NaN/inf)")
    if not 1 <= n_bins <= d.size:
        raise ValueError(f"n_bins must be in [1, {d.size}], got {n_bins}")
    if labels is None:
        labels = _DEFAULT_LABELS.get(n_bins, [f"q{k + 1}" for k in range(n_bins)])
    if len(labels) != n_bins:
        raise ValueError(f"need {n_bins} labels, got {len(labels)}")
    order = np.argsort(d, kind="stable")
    assignment = np.empty(d.size, dtype=int)
    assignment[order] = np.arange(d.size) * n_bins // d.size
    sorted_d = d[order]
    starts = np.searchsorted(assignment[order], np.arange(1, n_bins))
    inner = (sorted_d[starts - 1] + sorted_d[starts]) / 2
    edges = np.concatenate([[sorted_d[0]], inner, [sorted_d[-1]]])
    counts = np.bincount(assignment, minlength=n_bins)
    return DifficultyBins(assignment=assignment, edges=edges, labels=list(labels), counts=counts)
