"""Registry lookups, formula metrics, Needs, and the `evoprune metrics` command."""

from __future__ import annotations

import pytest

from evoprune.cli import main
from evoprune.errors import EvopruneError
from evoprune.expr import FormulaError, analyse, simplify
from evoprune.metrics import (
    Metric,
    Needs,
    UnknownMetricError,
    get_metric,
    list_metrics,
    register_metric,
    unregister_metric,
)

EXPECTED = {"AbsSNR", "FDR", "SymDiv", "Tstats", "WL1", "WL2", "GeoMedian", "DI", "MMD", "FPGM", "BNScale", "Taylor",
            "random", "GA_Func1", "GA_Func2", "GA_Func3", "GA_Func4", "GA_inspired_1", "GA_inspired_2"}


def test_library_contents_and_kinds():
    ms = {m.name: m for m in list_metrics()}
    assert EXPECTED <= set(ms)
    assert {n for n, m in ms.items() if m.kind == "seed"} == {"AbsSNR", "FDR", "SymDiv", "Tstats", "WL1", "WL2",
                                                               "GeoMedian"}
    assert all(m.doc and m.source for m in ms.values())
    assert ms["MMD"].tree is None and ms["FPGM"].tree is not None


@pytest.mark.parametrize("alias,name", [("eq3", "GA_Func2"), ("L1", "WL1"), ("l2", "WL2"), ("TwoT", "Tstats"),
                                        ("absnr".replace("n", "sn", 1), "AbsSNR"), ("bn", "BNScale"),
                                        ("GA_Inspired_Func2", "GA_inspired_2")])
def test_aliases_and_case_insensitive_names(alias, name):
    assert get_metric(alias).name == name


def test_needs_are_declared():
    assert get_metric("eq3").needs == Needs(stats=True, labels=True)
    assert get_metric("DI").needs == Needs(features=True, labels=True)
    assert get_metric("WL1").needs == Needs(weight=True)
    assert get_metric("MMD").needs == Needs(features=True, labels=True)
    assert get_metric("BNScale").needs == Needs(bn=True)
    assert get_metric("Taylor").needs.grads
    assert get_metric("var(X)").needs == Needs(stats=True)
    assert not get_metric("var(X)").label_aware
    assert (Needs(stats=True) | Needs(labels=True)) == Needs(stats=True, labels=True)


def test_any_formula_is_a_metric():
    m = get_metric("  div(var(P), rho5(var(Q))) ")
    assert m.kind == "formula" and m.formula == "div(var(P), rho5(var(Q)))" and m.label_aware


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownMetricError) as info:
        get_metric("SymDvi")
    assert "SymDiv" in info.value.suggestions and "did you mean: SymDiv" in str(info.value)
    assert isinstance(info.value, EvopruneError)
    with pytest.raises(UnknownMetricError, match="GA_Func2"):
        get_metric("GA_Fnuc2")


def test_broken_formulas_raise_formula_errors():
    with pytest.raises(FormulaError, match="unknown function 'vra'"):
        get_metric("div(vra(P), N)")


def test_register_metric_refuses_clashes():
    with pytest.raises(ValueError, match="already"):
        register_metric(Metric.from_formula("var(P)", name="eq3"))
    m = register_metric(Metric.from_formula("div(var(P), rho1(var(Q)))", name="test_only_hof_1", kind="evolved",
                                            aliases=("hof1",)))
    try:
        assert get_metric("TEST_ONLY_HOF_1") is m and get_metric("hof1") is m
    finally:
        unregister_metric("test_only_hof_1")
    with pytest.raises(UnknownMetricError):
        get_metric("hof1")


def test_metric_validates_kind():
    with pytest.raises(ValueError, match="kind"):
        Metric.from_formula("var(P)", kind="magic")


def test_cli_list(capsys):
    assert main(["metrics", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("AbsSNR", "GA_Func2", "eq3", "MMD", "BNScale"):
        assert name in out


def test_cli_list_filters_by_kind(capsys):
    assert main(["metrics", "list", "--kind", "evolved"]) == 0
    out = capsys.readouterr().out
    assert "GA_Func3" in out and "AbsSNR" not in out


def test_cli_show_prints_all_forms(capsys):
    assert main(["metrics", "show", "eq3"]) == 0
    out = capsys.readouterr().out
    assert "prefix:" in out and "infix:" in out and "LaTeX:" in out
    assert "Equation 3" in out and "streaming moments" in out


# Library metrics whose formula needs the raw feature maps even after simplification, and why. Every other
# tree-expressible metric is scored from streamed statistics or the weights alone.
RAW_MAPS_AFTER_SIMPLIFICATION = {
    "DI": "inverts the D×D scatter matrix (X − m_X)ᵀ(X − m_X) of each channel: matrix work on X, no moment form",
}
# Library metrics whose formula simplifies, and what that changes.
SIMPLIFIED = {"EP_Func1": "its var(N) term is zero; as evolved that term divides by P and needed the raw maps",
              "EP_Func2": "std(D·(WI − N)) is D·std(WI): the shift and the factor leave the spread, no [C, L, K] broadcast"}


def test_library_metrics_take_the_statistics_path_whenever_their_simplified_form_allows():
    trees = {m.name: m for m in list_metrics() if m.tree is not None}
    assert {n for n, m in trees.items() if m.simplified != m.tree} == set(SIMPLIFIED)
    for name, m in trees.items():
        needs_raw = analyse(simplify(m.tree)).needs_features
        assert needs_raw == (name in RAW_MAPS_AFTER_SIMPLIFICATION), name
        assert m.needs.features == needs_raw and m.needs.stats == (not needs_raw and analyse(m.tree).uses_maps), name
    assert get_metric("EP_Func1").needs == Needs(stats=True, labels=True, weight=True)
    assert analyse(get_metric("EP_Func1").tree).needs_features  # as evolved


def test_cli_show_prints_as_evolved_and_simplified_forms(capsys):
    assert main(["metrics", "show", "EP_Func1"]) == 0
    out = capsys.readouterr().out
    assert "as evolved:" in out and "simplified (what scoring evaluates" in out
    assert "as written it would be evaluated from raw feature maps" in out and "evaluated from streaming moments" in out
    assert out.count("prefix:") == 2
    assert main(["metrics", "show", "add(var(P), mul(mX, 1.0))"]) == 0
    out = capsys.readouterr().out
    assert "as written:" in out and "prefix:  add(var(P), mX)" in out
    assert main(["metrics", "show", "eq3"]) == 0
    assert capsys.readouterr().out.count("prefix:") == 1  # nothing to simplify: one form


def test_cli_show_formula_and_errors(capsys):
    assert main(["metrics", "show", "sqrt(sum(pow2(WI)))"]) == 0
    assert "weights only" in capsys.readouterr().out
    assert main(["metrics", "show", "add(P, mx)"]) == 2
    err = capsys.readouterr().err
    assert "unknown operand 'mx'" in err and "^^" in err and "mX" in err
    assert main(["metrics", "show", "Taylr"]) == 2
    assert "did you mean: Taylor" in capsys.readouterr().err
