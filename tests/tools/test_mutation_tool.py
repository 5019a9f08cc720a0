"""tools/mutation.py: survivor keys read from mutmut's copies, explanations, verdicts and the two scores."""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

from tests.helpers import ROOT

_spec = importlib.util.spec_from_file_location("mutation_tool", ROOT / "tools" / "mutation.py")
mt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mt)

# the shape of a file mutmut writes: the original and each mutant as sibling functions / methods
MUTANTS = textwrap.dedent(
    """
    def x_scale__mutmut_orig(x, k=2):
        y = x * k
        return y + 1

    def x_scale__mutmut_1(x, k=2):
        y = x / k
        return y + 1

    def x_scale__mutmut_2(x, k=3):
        y = x * k
        return y + 1

    class Norm:
        def xǁNormǁforward__mutmut_orig(self, x):
            a = x.mean()
            b = x.var()
            return (x - a) / b

        def xǁNormǁforward__mutmut_7(self, x):
            a = None
            b = None
            return (x - a) / b
    """
)


@pytest.fixture
def scratch(tmp_path):
    """A target folder holding one mutated module, as mutmut leaves it."""
    path = tmp_path / "mutants" / "normlight" / "norms" / "demo.py"
    path.parent.mkdir(parents=True)
    path.write_text(MUTANTS)
    return tmp_path


def test_key_names_the_function_and_the_changed_line(scratch):
    assert mt.mutant_key(scratch, "normlight.norms.demo.x_scale__mutmut_1") == (
        "norms/demo.py::scale: y = x * k => y = x / k"
    )


def test_key_of_a_changed_default_on_the_def_line(scratch):
    assert mt.mutant_key(scratch, "normlight.norms.demo.x_scale__mutmut_2") == (
        "norms/demo.py::scale: def scale(x, k=2): => def scale(x, k=3):"
    )


def test_key_of_a_method_joins_several_changed_lines(scratch):
    assert mt.mutant_key(scratch, "normlight.norms.demo.xǁNormǁforward__mutmut_7") == (
        "norms/demo.py::Norm.forward: a = x.mean() ⏎ b = x.var() => a = None ⏎ b = None"
    )


DOC = textwrap.dedent(
    """
    Some prose that mentions `norms/demo.py::scale: y = x * k => y = x / k` without a verdict.

    - `norms/demo.py::scale: def scale(x, k=2): => def scale(x, k=3):` equivalent: every caller passes k.
    - `norms/demo.py::Norm.forward: * => *` accepted: the statistics are checked elsewhere.
    - `` norms/demo.py::f: s = `a` => s = `b` `` caught: tests/x.py::test_y spawns processes (--check: KILLED).
    """
)


def test_explanations_need_a_list_item_and_a_verdict():
    rules = mt.explanations(DOC)
    assert [(k, v) for k, v, _ in rules] == [
        ("norms/demo.py::scale: def scale(x, k=2): => def scale(x, k=3):", "equivalent"),
        ("norms/demo.py::Norm.forward: * => *", "accepted"),
        ("norms/demo.py::f: s = `a` => s = `b`", "caught"),
    ]
    # the prose mention is no explanation
    assert mt.verdict("norms/demo.py::scale: y = x * k => y = x / k", rules) is None


def test_star_matches_any_characters_and_nothing_else_is_special():
    rules = mt.explanations(DOC)
    assert mt.verdict("norms/demo.py::Norm.forward: a = x.mean() => a = None", rules) == "accepted"
    assert mt.verdict("norms/demo.py::Norm.backward: a = 1 => a = 2", rules) is None
    # regex characters in a key are literal: "(" and "." must match themselves
    assert mt.verdict("norms/demo.py::scale: def scale(x, k=2): => def scale(x, k=3):", rules) == "equivalent"
    assert mt.verdict("norms/demo.py::scale: def scale(x, k=2): => def scale(x, k=4):", rules) is None
    assert mt.verdict(None, rules) is None


def record(killed, survivors, timeout=0, no_tests=0):
    """A recorded target run as mutation.json holds it."""
    return {
        "target": "demo",
        "commit": "abc",
        "total": killed + timeout + no_tests + len(survivors),
        "killed": killed,
        "timeout": timeout,
        "survived": len(survivors),
        "no_tests": no_tests,
        "suspicious": 0,
        "seconds": 1,
        "survivors": [{"name": f"m{i}", "key": k} for i, k in enumerate(survivors)],
        "modules": [],
        "tests": [],
    }


def test_scores_leave_out_equivalents_only():
    rules = mt.explanations(DOC)
    r = record(
        killed=90,
        timeout=2,
        no_tests=1,
        survivors=[
            "norms/demo.py::scale: def scale(x, k=2): => def scale(x, k=3):",  # equivalent
            "norms/demo.py::Norm.forward: a = 1 => a = 2",  # accepted
            "norms/demo.py::f: s = `a` => s = `b`",  # caught
            "norms/demo.py::g: z => w",  # unexplained
        ],
    )
    c = mt.tally(r, rules)
    assert (c["equivalent"], c["accepted"], c["caught"], c["unexplained"]) == (1, 1, 1, 1)
    assert c["raw"] == round(100 * 92 / 97, 1)
    assert c["score"] == round(100 * 93 / 96, 1)


def test_render_lists_each_survivor_with_its_verdict_and_the_stale_explanations(monkeypatch, tmp_path):
    doc = tmp_path / "testing.md"
    doc.write_text(DOC + f"\n{mt.TABLE_START}\nold table\n{mt.TABLE_END}\nafter\n")
    monkeypatch.setattr(mt, "EXPLANATIONS", doc)
    rows = [record(killed=9, survivors=["norms/demo.py::g: z => w", "norms/demo.py::Norm.forward: a => b"])]
    text = mt.render(rows)
    assert "- `norms/demo.py::g: z => w` (demo, `m0`): **UNEXPLAINED**" in text
    assert "- `norms/demo.py::Norm.forward: a => b` (demo, `m1`): accepted" in text
    assert "Unexplained survivors: 1." in text
    # the two explanations no survivor matched are listed as stale
    assert "match no recorded survivor: 2." in text
    mt.write_table(rows)
    written = doc.read_text()
    assert "old table" not in written and written.endswith(f"{mt.TABLE_END}\nafter\n")
    assert "| demo | abc | 11 | 9 | 0 | 2 | 0 | 0 | 0 | 1 | 1 | 81.8% | **81.8%** | 1 s |" in written
