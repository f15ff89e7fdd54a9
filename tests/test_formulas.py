"""The rules against the project's formula document, docs/algorithms.md, computed independently
in numpy float64 straight from the written formulas: Prox-SGD and sqrt(t)-Prox-SGD (sections 1
and 2), RDA and iRDA (sections 3 and 4), the iRDA initialisation (section 5) and the sparsity
measure (section 10); OBProx-SG and pDCA_e are in tests/test_obprox_pdca.py. And a check that
every section the code cites exists in docs/algorithms.md."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import sparseopt
from sparseopt import reference

BACKENDS = ["reference"] + (["native"] if sparseopt.ops.extension_loaded() else [])


def soft(u: np.ndarray, a: float) -> np.ndarray:
    return np.sign(u) * np.maximum(np.abs(u) - a, 0.0)


def _fn(name: str, backend: str):
    return getattr(reference, name) if backend == "reference" else getattr(torch.ops.sparseopt, name)


def _data(rng: np.random.Generator, n: int = 2001, steps: int = 30):
    w = rng.standard_normal(n)
    w[::5] = 0.0
    grads = [rng.standard_normal(n) * 0.3 + 0.2 * np.sign(w) for _ in range(steps)]
    return w, grads


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("momentum,wd", [(0.0, 0.0), (0.9, 0.01)])
def test_prox_sgd_formula(backend: str, momentum: float, wd: float) -> None:
    lr, lam = 0.1, 0.3
    w, grads = _data(np.random.default_rng(0))
    m = np.zeros_like(w)
    p = torch.tensor(w)
    buf = [torch.zeros_like(p)] if momentum else []
    for g in grads:
        gg = g + wd * w
        if momentum:
            m = momentum * m + gg
            gg = m
        w = soft(w - lr * gg, lr * lam)
        _fn("prox_sgd_step_", backend)([p], [torch.tensor(g)], buf, lr, lam, momentum, wd)
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, atol=1e-14)
    assert np.array_equal(p.numpy() == 0, w == 0)  # exact zeros exactly where |u| <= lr*lambda
    assert 0 < (w == 0).mean() < 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_sqrt_t_prox_sgd_formula(backend: str) -> None:
    lr, lam, gamma = 0.1, 0.02, 2.0
    w, grads = _data(np.random.default_rng(1))
    p, step = torch.tensor(w), torch.zeros((), dtype=torch.float32)
    for t, g in enumerate(grads, start=1):
        w = soft(w - lr * g, lam * math.sqrt(t) / gamma)
        _fn("sqrt_t_prox_sgd_step_", backend)(
            [p], [torch.tensor(g)], [], [step], lr, lam, gamma, 0.0, 0.0
        )
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, atol=1e-14)
    assert step.item() == len(grads)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("retrain_after", [-1, 10])
def test_rda_irda_formula(backend: str, center: bool, retrain_after: int) -> None:
    lam, gamma = 0.15, 4.0
    rng = np.random.default_rng(2)
    w, grads = _data(rng)
    w0 = rng.standard_normal(w.shape) if center else np.zeros_like(w)
    gbar = np.zeros_like(w)
    p, gb, step = torch.tensor(w), torch.zeros(w.shape, dtype=torch.float64), torch.zeros(())
    centers = [torch.tensor(w0)] if center else []
    for t, g in enumerate(grads, start=1):
        if retrain_after >= 0 and t > retrain_after:
            g = np.where(w == 0, 0.0, g)  # eq. 29-31: mask from the current w
            frozen = w == 0
        else:
            frozen = np.zeros(w.shape, bool)
        gbar = gbar + (g - gbar) / t
        s = math.sqrt(t) / gamma
        w = np.where(frozen, 0.0, soft(w0 - s * gbar, s * lam))
        _fn("rda_step_", backend)(
            [p], [torch.tensor(g)], [gb], centers, [step], 1.0, lam, gamma, False, retrain_after
        )
    np.testing.assert_allclose(p.numpy(), w, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gb.numpy(), gbar, rtol=1e-12, atol=1e-15)
    if not center:  # with w0 = 0: w == 0 iff |gbar| <= lambda (outside retraining)
        if retrain_after < 0:
            assert np.array_equal(p.numpy() == 0, np.abs(gbar) <= lam)


def test_irda_init_statistics() -> None:
    w = torch.empty(256, 64, 3, 3)
    gen = torch.Generator().manual_seed(0)
    sparseopt.init.irda_(w, s=5.0, generator=gen)
    sigma = 5.0 / math.sqrt(64 * 9)
    assert w.abs().max() <= math.sqrt(3) * sigma
    assert abs(w.std().item() - sigma) < 0.01 * sigma
    assert abs(w.mean().item()) < 0.01 * sigma
    lin = torch.nn.Linear(100, 10)
    bias = lin.bias.detach().clone()
    sparseopt.init.irda_model_(lin, s=2.0)
    assert lin.weight.abs().max() <= math.sqrt(3) * 2.0 / 10.0
    assert torch.equal(lin.bias, bias)  # biases are not iRDA-initialised


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "3"])
def test_irda_init_rejects_bad_s(bad) -> None:
    with pytest.raises(ValueError, match="s"):
        sparseopt.init.irda_(torch.empty(3, 3), bad)
    with pytest.raises(ValueError, match="at least 2 dims"):
        sparseopt.init.irda_(torch.empty(3), 1.0)


def test_sparsity_and_report() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[0].weight.zero_()  # 72 of 72 zeros
        model[2].weight.fill_(1.0)  # 0 of 12
        model[2].weight[0, :2] = 0  # 2 of 12
        model[0].bias.zero_()  # not covered by default
    assert sparseopt.sparsity(model) == pytest.approx(74 / 84)
    assert sparseopt.sparsity(model, l1_on="all") == pytest.approx(78 / 91)
    assert sparseopt.sparsity(model.parameters()) == pytest.approx(74 / 84)
    report = sparseopt.sparsity_report(model)
    assert report.total == pytest.approx(74 / 84)
    text = str(report)
    assert "0.weight" in text and "2.weight" in text
    assert "| 0.weight |" in report.to_markdown()
    with pytest.raises(ValueError, match="l1_on"):
        sparseopt.sparsity(model, l1_on="biases")


# -- docs/algorithms.md: the sections the code cites ---------------------------------------------

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "algorithms.md"
CITING = [("csrc", (".h", ".cuh", ".cpp", ".cu")), ("sparseopt", (".py",)), ("tests", (".py",)),
          ("benchmarks", (".py",)), ("examples", (".py",))]  # fmt: skip
_NUMBERS = r"\d+(?:\s*(?:-|,|and)\s*\d+)*"  # "7", "1 and 2", "1-4", "6, 7"
# "docs/algorithms.md section 7" (also across a wrapped comment line, or after a markdown link:
# "[docs/algorithms.md](docs/algorithms.md) section 7") or "§7".
_CITATION = re.compile(
    rf"algorithms\.md\)?,?[\s/#*]+sections?[\s/#*]+({_NUMBERS})|§\s*({_NUMBERS})"
)
# Each section's number pinned to what it is about, since code cites the numbers.
SECTION_TOPICS = {0: "step counter", 1: "Prox-SGD", 2: "sqrt(t)-Prox-SGD", 3: "RDA",
                  4: "retraining", 5: "initialisation", 6: "OBProx-SG", 7: "pDCA_e",
                  8: "Adam", 9: "AdaHessian", 10: "Sparsity"}  # fmt: skip
# The sections each rule header and reference module must cite (at least).
REQUIRED_CITATIONS = {
    "csrc/rules/common.h": {0}, "csrc/rules/bits.h": {6, 7},
    "csrc/rules/prox_sgd.h": {1, 2}, "csrc/rules/rda.h": {3, 4},
    "csrc/rules/obproxsg.h": {6}, "csrc/rules/pdca.h": {0, 7},
    "csrc/rules/adam.h": {8}, "csrc/rules/adahessian.h": {9},
    "sparseopt/reference/_common.py": {0}, "sparseopt/reference/l1.py": {1, 2, 3, 4},
    "sparseopt/reference/obprox_pdca.py": {0, 6, 7}, "sparseopt/reference/adam.py": {8},
    "sparseopt/reference/adahessian.py": {9},
}  # fmt: skip


def _doc_sections() -> dict[int, str]:
    return {int(m[1]): m[2] for m in re.finditer(r"^## (\d+)\. (.*)$", DOC.read_text(), re.M)}


def _cited(text: str) -> set[int]:
    out: set[int] = set()
    for m in _CITATION.finditer(text):
        for part in re.split(r"\s*(?:,|and)\s*", m[1] or m[2]):
            lo, _, hi = part.partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _citing_files() -> list[Path]:
    files = [REPO / "README.md"]
    for folder, suffixes in CITING:
        files += sorted(p for p in (REPO / folder).rglob("*") if p.suffix in suffixes)
    return files


def test_citation_parser() -> None:
    assert _cited("see docs/algorithms.md section 7 and docs/algorithms.md sections 1-4") == {
        1, 2, 3, 4, 7}  # fmt: skip
    assert _cited("(docs/algorithms.md\n// section 6; x)") == {6}
    assert _cited("[docs/algorithms.md](docs/algorithms.md) section 9, and §3 or §§") == {9, 3}
    assert _cited("docs/algorithms.md sections 6 and 7, iRDA paper section 3.5") == {6, 7}
    assert _cited("the iRDA paper, section 3.5, eq. 25") == set()


def test_docs_algorithms_has_every_section_the_code_cites() -> None:
    sections = _doc_sections()
    assert sorted(sections) == list(range(len(sections)))  # numbered 0, 1, 2, ... in order
    for number, topic in SECTION_TOPICS.items():
        assert topic in sections.get(number, ""), (number, sections.get(number))
    missing, count = [], 0
    for path in _citing_files():
        cited = _cited(path.read_text(encoding="utf-8"))
        count += len(cited)
        missing += [f"{path.relative_to(REPO)}: section {n}" for n in sorted(cited - set(sections))]
    assert not missing, f"cited but not in docs/algorithms.md: {missing}"
    assert count >= 30  # the scan does find the citations


def test_rule_headers_and_references_cite_their_sections() -> None:
    headers = {f"csrc/rules/{p.name}" for p in (REPO / "csrc" / "rules").glob("*.h")}
    assert headers <= set(REQUIRED_CITATIONS), headers - set(REQUIRED_CITATIONS)
    for rel, needed in REQUIRED_CITATIONS.items():
        cited = _cited((REPO / rel).read_text(encoding="utf-8"))
        assert needed <= cited, f"{rel} cites sections {sorted(cited)}, needs {sorted(needed)}"
