"""The package reads as the pipeline: no import circle, and no judge depends on the ensemble."""
from __future__ import annotations

import ast
from pathlib import Path

GRADER = Path(__file__).resolve().parents[1] / "grader"


def _modules() -> dict[str, Path]:
    out = {}
    for p in GRADER.rglob("*.py"):
        parts = p.relative_to(GRADER.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Every import of a grader module by another, at any depth (function-level ones too)."""
    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rsplit(".", 1)[0] if "." in name else ""
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        pkg = m if p.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[:len(pkg.split(".")) - node.level + 1] if node.level else []
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in mods else mod for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                o = owner(t)
                if o and o != m and o.startswith("grader"):
                    edges[m].add(o)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_and_no_judge_depends_on_the_ensemble():
    edges = _edges(_modules())
    assert "grader.score_stats" in edges["grader.judges.consistency"]   # the walk sees imports
    assert _cycles(edges) == []
    bad = {m: sorted(t for t in ts if t.startswith("grader.ensemble"))
           for m, ts in edges.items() if m.startswith("grader.judges")}
    assert not {m: t for m, t in bad.items() if t}


def test_the_walk_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_box_grader_has_its_own_package_and_the_old_paths_re_export_it():
    import importlib

    from grader.judges import boxgrader
    old_mod = importlib.import_module("grader.judges.clipgrader.boxgrader")
    old_features = importlib.import_module("grader.judges.clipgrader.features")
    from grader.judges import clipgrader
    for name in ("train_boxgrader", "grade_boxgrader", "evaluate_boxgrader", "load_boxgrader"):
        # README's path (grader.judges.clipgrader), the old module and the new package: one object
        assert getattr(clipgrader, name) is getattr(old_mod, name) is getattr(boxgrader, name)
    assert old_mod.BoxGrader is boxgrader.BoxGrader and old_mod._build_head is not None
    assert old_features.YoloxFeatures is boxgrader.YoloxFeatures
    assert old_features.default_detector_path is boxgrader.default_detector_path
    assert boxgrader.DEFAULT_MAX_FPR == 0.04
    # the box grader's modules sit under judges/boxgrader/, and clipgrader's own modules do not
    # import them (the shared synthesis stays in clipgrader, which both use)
    edges = _edges(_modules())
    assert {"grader.judges.boxgrader.features", "grader.judges.boxgrader.model",
            "grader.judges.boxgrader.train", "grader.judges.boxgrader.grade"} <= set(edges)
    shims = {"grader.judges.clipgrader.boxgrader", "grader.judges.clipgrader.features"}
    assert not {m for m, ts in edges.items() if m.startswith("grader.judges.clipgrader")
                and m not in shims and any(t.startswith("grader.judges.boxgrader") for t in ts)}
    assert "grader.judges.clipgrader.synth" in edges["grader.judges.boxgrader.train"]


def test_the_cleanlab_package_exposes_the_names_the_module_had():
    from grader.judges import cleanlab
    before = ("RUN_KEY TAG_BADLOC TAG_SWAP TAG_OVERLOOKED TAG_ISSUE PROB_SOURCE_ATTR "
              "PROB_SOURCE_LOGITS PROB_SOURCE_SPREAD CleanlabParams CleanlabInputs "
              "resolve_run_inputs build_inputs image_aux CleanlabStats compute_stats "
              "CleanlabScores thresholds_for compute_scores CONFIG_FIELD DEFAULT_CHUNK "
              "MAX_CACHED_SAMPLES iter_chunks config_hash prepare score_samples run_cleanlab "
              "plan_sharded_run run_shard finalize_sharded_run check_output_fields suspects").split()
    assert sorted(cleanlab.__all__) == sorted(before)
    assert all(getattr(cleanlab, n) is not None for n in before)
    assert cleanlab.run_cleanlab.__module__ == "grader.judges.cleanlab.run"
    edges = _edges(_modules())
    # the layers only point down: inputs <- scoring <- writing <- run <- sharding
    assert "grader.judges.cleanlab.run" not in edges["grader.judges.cleanlab.writing"]
    assert "grader.judges.cleanlab.sharding" not in edges["grader.judges.cleanlab.run"]
