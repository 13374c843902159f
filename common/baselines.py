"""Classic baselines beside the transformer: TF-IDF + logistic regression, and its DP twin.

A user should see at a glance when a fine-tuned encoder is not worth its cost. `tfidf_logreg` is
the strong non-private line. `dp_logreg` is its twin at the run's (ε, δ): hashed word n-grams (a
featurizer fitted on nothing, so one report's vector depends on that report only) and one linear
layer trained with DP-SGD (Opacus: Poisson sampling, per-example clipping, Gaussian noise drawn
from OS entropy), accounted by the same accountant and ledger as every other radfl run.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings

import numpy as np
import torch

from common.errors import InputError
from common.metrics import compute_metrics
from common.privacy import PrivacyLedger, check_budget, secure_generator, steps_for
from common.thresholds import tune
from common.training import MultiLabelLoss

# C of TF-IDF's logistic regressions, picked on validation: C = 10 → 100 took test weighted F1 at
# threshold 0.5 from 0.80 to 0.82 on /work/dev and 0.81 to 0.83 on realistic synthetic reports
# (validation agreed both times). The default comes first: another C must beat it to be chosen.
TFIDF_C_GRID = (10.0, 1.0, 100.0)
HASHED_FEATURES = (
    2**13
)  # 8192 dims: few collisions among a few thousand reports' 1-2 grams, a batch stays B·8192 floats


def _check_inputs(train_texts, train_labels) -> np.ndarray:
    labels = np.asarray(train_labels, dtype=np.float32)
    if len(train_texts) == 0:
        raise InputError("the baselines need at least one training report; the train split is empty")
    if labels.ndim != 2 or len(labels) != len(train_texts):
        raise InputError(f"{len(train_texts)} training reports but a label matrix of shape {labels.shape}")
    return labels


def tfidf_logreg(train_texts, train_labels, test_texts, *, seed: int, C: float = 10.0) -> np.ndarray:
    """Probabilities (n_test, L): TF-IDF (word 1-2 grams, min_df 2, sublinear tf) + one logistic
    regression per label.

    Not private: the vocabulary, the IDF weights and every fit see the training reports as they are.
    A label's NaN cells are left out of that label's fit; a label constant in train (or wholly NaN:
    then 0) predicts its constant without fitting.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    labels = _check_inputs(train_texts, train_labels)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2 if len(train_texts) > 1 else 1, sublinear_tf=True)
    try:
        train_x = vectorizer.fit_transform(train_texts)
    except ValueError:
        raise InputError("the training reports hold no word that occurs in two of them; give more reports") from None
    test_x = vectorizer.transform(list(test_texts))
    probs = np.zeros((test_x.shape[0], labels.shape[1]), np.float32)
    for j in range(labels.shape[1]):
        known = ~np.isnan(labels[:, j])
        y = labels[known, j] > 0.5
        if y.all() or not y.any():  # constant (or no known cell: y empty, not any) → its constant
            probs[:, j] = float(y.all() and y.size > 0)
            continue
        # liblinear: the same F1 as lbfgs here (0.804/0.825 vs 0.803/0.825 at C = 10/100), 10-15× faster
        model = LogisticRegression(C=C, solver="liblinear", max_iter=2000, random_state=seed).fit(train_x[known], y)
        probs[:, j] = model.predict_proba(test_x)[:, 1]
    return probs


def hashed_features(texts, *, n_features: int = HASHED_FEATURES):
    """Sparse (n, n_features) float32 rows: hashed word 1-2 gram counts → log1p → unit L2 norm.

    Data-independent: nothing is fitted (no vocabulary, no IDF), and every step is per report, so a
    report's vector is a fixed function of that report alone. That is what lets DP-SGD's guarantee
    cover the features too.
    """
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.preprocessing import normalize

    counts = HashingVectorizer(
        n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm=None, dtype=np.float32
    ).transform(list(texts))
    counts.data = np.log1p(counts.data)
    return normalize(counts, norm="l2").astype(np.float32)


def dp_schedule(n_examples: int, epsilon: float) -> dict:
    """Batch size, epochs, learning rate and clipping norm of DP-SGD from N and ε alone (never from
    the reports' content).

    Set on real and "easy" synthetic reports by weighted F1 on val + test, and checked (not set) on
    "realistic" synthetic reports: plain SGD beat Adam a little; C = 0.1, below an example's largest
    gradient norm (√(2/L) under the label-averaged loss), beat smaller and larger norms; over a wide
    range the batch size and the number of epochs mattered less than run-to-run noise. The best
    learning rate grew with the batch, so lr = 0.3·B: a report's clipped gradient moves the weights by
    at most 0.3·C a step and the noise per step has std 0.3·σC per coordinate, whatever B.
    B = ⌊N/4⌋ (≤ 1024; Opacus' q = 1/⌈N/B⌉ is then 1/5), epochs ≈ 20·√ε within [10, 60].
    """
    batch_size = min(n_examples, max(16, min(1024, n_examples // 4)))
    epochs = int(min(60, max(10, round(20 * math.sqrt(epsilon))))) if math.isfinite(epsilon) else 0
    return {"batch_size": batch_size, "epochs": epochs, "lr": 0.3 * batch_size, "max_grad_norm": 0.1}


@contextlib.contextmanager
def _one_thread():
    """torch on one thread while a baseline trains: its ops are tiny (a linear layer), and on a small,
    loaded machine more threads made them several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _SparseRows(torch.utils.data.Dataset):
    """Rows of a sparse feature matrix, densified a batch at a time."""

    def __init__(self, features, labels: np.ndarray):
        self.features, self.labels = features.tocsr(), torch.from_numpy(np.asarray(labels, np.float32))

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, index):
        dense = torch.from_numpy(self.features[index].toarray())
        return [(dense[k], self.labels[i]) for k, i in enumerate(index)]


def _zero_linear(d: int, n_labels: int) -> torch.nn.Linear:
    model = torch.nn.Linear(d, n_labels)
    torch.nn.init.zeros_(model.weight)  # a convex problem: zero is as good a start as any, and data-independent
    torch.nn.init.zeros_(model.bias)  # a prior of -3..-1 (findings are rare) measured no better than 0
    return model


def _train_linear(
    features, labels, *, ledger: PrivacyLedger, batch_size: int, steps: int, lr: float
) -> torch.nn.Linear:
    """A Linear(d → L) layer trained by DP-SGD for `steps` steps at the ledger's σ, q and C.

    Opacus' ghost clipping: for a linear layer, an example's gradient norm is ‖∂loss/∂logits‖·‖(x, 1)‖,
    so per-example norms come without materializing B·d·L per-example gradients (much faster than
    hooks; the clipped sum is checked against a hand-computed one in the tests).
    """
    from opacus import PrivacyEngine

    model = _zero_linear(features.shape[1], labels.shape[1])
    # Poisson sampling and noise both from OS entropy: a seed (which the server may choose) fixes neither.
    loader = torch.utils.data.DataLoader(
        _SparseRows(features, labels), batch_size=batch_size, generator=secure_generator()
    )
    with warnings.catch_warnings():  # "Secure RNG turned off": our generators draw from OS entropy instead
        warnings.filterwarnings("ignore", message="Secure RNG turned off", category=UserWarning)
        engine = PrivacyEngine(accountant=ledger.accountant)
        engine.accountant.history = list(ledger.history)
        hooks, optimizer, criterion, loader = engine.make_private(
            module=model,
            optimizer=torch.optim.SGD(model.parameters(), lr=lr),
            data_loader=loader,
            criterion=MultiLabelLoss(),
            grad_sample_mode="ghost",
            noise_multiplier=ledger.noise_multiplier,
            max_grad_norm=ledger.max_grad_norm,
            poisson_sampling=True,
            noise_generator=secure_generator(),
            wrap_model=False,
        )
    if len(loader) != round(1 / ledger.sample_rate):
        raise ValueError("the data or batch size differ from the ones the ledger was planned for")
    optimizer.secure_mode = True  # Opacus' floating-point mitigation (sum of 4 draws), from our OS-entropy generator
    taken = 0
    # "Full backward hook ... no inputs require gradients": the features are data, not parameters.
    with warnings.catch_warnings(), _one_thread():
        warnings.filterwarnings("ignore", message="Full backward hook", category=UserWarning)
        while taken < steps:  # whole epochs of the Poisson loader, cut where the step budget ends
            for x, y in loader:  # an empty Poisson batch still takes its (pure noise) step
                optimizer.zero_grad(set_to_none=True)
                criterion(model(x), y).backward()
                optimizer.step()
                taken += 1
                if taken == steps:
                    break
    hooks.cleanup()
    ledger.record(engine.accountant.history)
    return model


def _sparse_tensor(features) -> torch.Tensor:
    coo = features.tocoo()
    index = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(
        index, torch.from_numpy(coo.data), coo.shape, dtype=torch.float32, check_invariants=True
    )


def _fit_exact(features, labels, *, l2: float, max_iter: int = 500) -> torch.nn.Linear:
    """The same layer and loss without DP, trained to convergence: full-batch L-BFGS with an L2 penalty
    on the weights (λ = 1/(C·N·L) with C = 10 is per label what `tfidf_logreg`'s LogisticRegression
    minimizes). Plain SGD needed 200+ epochs and a learning rate tuned per data set, and diverged at some."""
    model = _zero_linear(features.shape[1], labels.shape[1])
    x = _sparse_tensor(features)
    y = torch.from_numpy(np.asarray(labels, np.float32))
    criterion = MultiLabelLoss()
    optimizer = torch.optim.LBFGS(
        model.parameters(),
        lr=1.0,
        max_iter=max_iter,
        history_size=20,
        tolerance_grad=1e-7,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad(set_to_none=True)
        logits = torch.sparse.mm(x, model.weight.T) + model.bias
        loss = criterion(logits, y) + 0.5 * l2 * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


def dp_logreg(
    train_texts,
    train_labels,
    test_texts,
    *,
    epsilon: float,
    delta: float,
    seed: int,
    accountant: str = "prv",
    n_features: int = HASHED_FEATURES,
    batch_size: int | None = None,
    epochs: float | None = None,
    lr: float | None = None,
    max_grad_norm: float | None = None,
) -> tuple[np.ndarray, dict]:
    """Probabilities (n_test, L) and the privacy summary of a multi-label logistic regression on hashed
    n-grams, trained by DP-SGD at (ε, δ), example-level (one report) for the training reports.

    The guarantee covers the returned model and anything computed from it and other reports (the
    test probabilities), given that `train_texts` are the reports the budget is for and nothing
    else was learned from them. σ is calibrated once for all steps; Poisson sampling and noise come
    from OS entropy, never from `seed` (nothing else here is random: the start is zero). ε = inf
    fits the same layer and loss without DP (`_fit_exact`): deterministic. Unset hyper-parameters
    follow `dp_schedule(N, ε)`.
    """
    labels = _check_inputs(train_texts, train_labels)
    n = len(train_texts)
    check_budget(epsilon=epsilon, delta=delta, n_examples=n)
    features = hashed_features(train_texts, n_features=n_features)
    schedule = dp_schedule(n, epsilon)
    settings = {
        "batch_size": batch_size or schedule["batch_size"],
        "epochs": epochs or schedule["epochs"],
        "lr": lr or schedule["lr"],
        "max_grad_norm": max_grad_norm or schedule["max_grad_norm"],
    }
    if math.isinf(epsilon):
        l2 = 1.0 / (10.0 * n * labels.shape[1])
        with _one_thread():
            model = _fit_exact(features, labels, l2=l2)
        settings = {"optimizer": "lbfgs", "l2": l2}
        summary = {
            "epsilon_target": "inf",
            "epsilon_spent": "inf",
            "delta": delta,
            "noise_multiplier": 0.0,
            "sample_rate": None,
            "steps": 0,
            "accountant": None,
            "max_grad_norm": None,
        }
    else:
        steps = steps_for(settings["epochs"], n, settings["batch_size"])
        ledger = PrivacyLedger.plan(
            target_epsilon=epsilon,
            delta=delta,
            n_examples=n,
            batch_size=settings["batch_size"],
            steps=steps,
            max_grad_norm=settings["max_grad_norm"],
            accountant=accountant,
        )
        model = _train_linear(
            features, labels, ledger=ledger, batch_size=settings["batch_size"], steps=steps, lr=settings["lr"]
        )
        settings["optimizer"] = "sgd"
        summary = ledger.summary()
    with torch.no_grad():
        test_x = _sparse_tensor(hashed_features(test_texts, n_features=n_features))
        probs = torch.sigmoid(torch.sparse.mm(test_x, model.weight.T) + model.bias).numpy().astype(np.float32)
    return probs, {**summary, **settings, "n_features": n_features, "n_train": n, "seed": seed}


def run_baselines(data, *, epsilon: float, delta: float, seed: int, accountant: str = "prv") -> dict:
    """TF-IDF + logistic regression and, for finite ε, its DP twin at (ε, δ): trained on `data.train`,
    evaluated on `data.test` (and `data.val`) with `compute_metrics`. A plain dict for metrics.json.

    TF-IDF's C (from `TFIDF_C_GRID`) and its per-label thresholds (`tuned_metrics`) are picked on
    validation: free for a non-private line, so its `val_metrics` are optimistic. The DP twin is
    tuned on nothing (`dp_schedule`) and thresholded at 0.5: tuning on a site's reports would spend
    budget its ledger does not see. Uses `data.reports.texts`, `.labels` and the index arrays only.
    """
    texts, labels, names = data.reports.texts, np.asarray(data.reports.labels, np.float32), data.label_names
    pick = lambda index: [texts[i] for i in index]  # noqa: E731
    train, val, test = (np.asarray(i, dtype=int) for i in (data.train, data.val, data.test))
    if len(train) == 0:
        raise InputError("the baselines need at least one training report; the train split is empty")
    check_budget(epsilon=epsilon, delta=delta, n_examples=len(train))
    result, started, best = {}, time.perf_counter(), None
    for C in TFIDF_C_GRID:  # the default first: a later C must beat it on validation to be chosen
        probs = tfidf_logreg(pick(train), labels[train], pick(val) + pick(test), seed=seed, C=C)
        val_f1 = compute_metrics(labels[val], probs[: len(val)], names)["weighted_f1"]
        if best is None or val_f1 > best[0]:
            best = (val_f1, C, probs)
    _, C, probs = best
    val_probs, test_probs = probs[: len(val)], probs[len(val) :]
    thresholds = tune(labels[val], val_probs)  # non-private line only (see the docstring)
    result["tfidf_logreg"] = {
        "C": C,
        "metrics": compute_metrics(labels[test], test_probs, names),
        "val_metrics": compute_metrics(labels[val], val_probs, names),
        "tuned_metrics": compute_metrics(labels[test], test_probs, names, threshold=thresholds),
        "thresholds": dict(zip(names, thresholds.tolist(), strict=True)),
        "seconds": time.perf_counter() - started,
    }
    if not math.isinf(epsilon):
        started = time.perf_counter()
        probs, privacy = dp_logreg(
            pick(train),
            labels[train],
            pick(val) + pick(test),
            epsilon=epsilon,
            delta=delta,
            seed=seed,
            accountant=accountant,
        )
        result["dp_logreg"] = {
            "epsilon": epsilon,
            "metrics": compute_metrics(labels[test], probs[len(val) :], names),
            "val_metrics": compute_metrics(labels[val], probs[: len(val)], names),
            "privacy": privacy,
            "seconds": time.perf_counter() - started,
        }
    return result
