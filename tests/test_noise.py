"""Error injection: exact recorded truth, honoured rates, reproducible seeds, source untouched."""
from __future__ import annotations

import fiftyone as fo
import numpy as np
import pytest

from grader.noise import TRUTH_ATTR, deleted_field_name, inject_errors, injected_truth, perturb_box


def _iou(a, b):
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    ih = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@pytest.fixture()
def many_boxes(tmp_path):
    """20 samples x 5 boxes = 100 eligible boxes (+1 crowd box that must stay untouched)."""
    from conftest import write_random_images

    paths = write_random_images(tmp_path / "imgs", 20, size=(64, 80))
    rng = np.random.default_rng(3)
    samples = []
    for k, p in enumerate(paths):
        dets = []
        for j in range(5):
            x, y = 0.02 + 0.18 * j, rng.uniform(0.05, 0.4)
            dets.append(fo.Detection(label=str(rng.choice(["cat", "dog", "car", "bus"])),
                                     bounding_box=[x, y, 0.15, rng.uniform(0.1, 0.3)],
                                     user_note=f"n{k}{j}"))
        if k == 0:
            dets.append(fo.Detection(label="cat", bounding_box=[0.1, 0.6, 0.3, 0.3], iscrowd=1))
        samples.append(fo.Sample(filepath=p, ground_truth=fo.Detections(detections=dets)))
    ds = fo.Dataset()
    ds.add_samples(samples)
    ds.default_classes = ["cat", "dog", "car", "bus"]
    ds.info["categories"] = [{"name": "cat", "supercategory": "animal"},
                             {"name": "dog", "supercategory": "animal"},
                             {"name": "car", "supercategory": "vehicle"},
                             {"name": "bus", "supercategory": "vehicle"}]
    ds.save()
    yield ds
    ds.delete()


RATES = {"badloc": 0.1, "swap": 0.08, "overlooked": 0.05, "spurious": 0.06, "duplicate": 0.07}


def test_injection_is_exact_and_source_untouched(many_boxes):
    ds = many_boxes
    before = ds.values("ground_truth", )
    before_dicts = [[d.to_dict() for d in s.detections] for s in before]
    rep = inject_errors(ds, "ground_truth", "noisy", rates=RATES, seed=7, badloc_iou=(0.3, 0.6))

    # Source labels unchanged (same dicts: label, box, attributes, ids).
    after = [[d.to_dict() for d in s.detections] for s in ds.values("ground_truth")]
    assert after == before_dicts

    assert rep.info["eligible_boxes"] == 100
    assert rep.info["injected"] == {"badloc": 10, "swap": 8, "overlooked": 5, "spurious": 6,
                                    "duplicate": 7}
    assert injected_truth(ds, "noisy") == {"none": 77 + 1, "badloc": 10, "swap": 8,
                                           "overlooked": 5, "spurious": 6, "duplicate": 7}
    dup_sources = set()

    src = {d.id: d for s in before for d in s.detections}
    seen = set()
    for s_noisy, s_del in zip(ds.values("noisy"), ds.values(deleted_field_name("noisy"))):
        for d in s_noisy.detections:
            t = d[TRUTH_ATTR]
            if t == "spurious":
                assert d.id not in src
                assert d.label in ds.default_classes
                continue
            if t == "duplicate":
                # A new box of the source's class, IoU 0.75-0.95 with a clean source box.
                o = src[d["injected_source"]]
                assert d.id not in src and d.label == o.label
                assert 0.75 - 1e-6 <= _iou(d.bounding_box, o.bounding_box) <= 0.95 + 1e-6
                assert abs(_iou(d.bounding_box, o.bounding_box) - d["injected_iou"]) < 1e-6
                dup_sources.add(o.id)
                continue
            o = src[d.id]
            seen.add(d.id)
            if o.has_field("user_note"):
                assert d["user_note"] == o["user_note"]  # other attributes carried over
            if t == "none":
                assert d.label == o.label and np.allclose(d.bounding_box, o.bounding_box)
            elif t == "badloc":
                assert d.label == o.label
                iou = _iou(d.bounding_box, o.bounding_box)
                assert 0.3 - 1e-6 <= iou <= 0.6 + 1e-6
                assert abs(iou - d["injected_iou"]) < 1e-6
                x, y, w, h = d.bounding_box
                assert x >= 0 and y >= 0 and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9
            elif t == "swap":
                assert d.label != o.label and d["injected_from"] == o.label
                assert np.allclose(d.bounding_box, o.bounding_box)
            if o.has_field("iscrowd") and o["iscrowd"]:
                assert t == "none"
        for d in s_del.detections:
            assert d.id in src and d.id not in seen
            assert d.label == src[d.id].label
            assert d[TRUTH_ATTR] == "overlooked"
    truth_by_id = {d.id: d[TRUTH_ATTR] for s in ds.values("noisy") for d in s.detections}
    assert len(dup_sources) == 7 and all(truth_by_id[i] == "none" for i in dup_sources)
    # duplicates sit at random places in the list, not always after their source
    pos = [[d[TRUTH_ATTR] for d in s.detections].index("duplicate")
           for s in ds.values("noisy") if "duplicate" in [d[TRUTH_ATTR] for d in s.detections]]
    assert min(pos) < max(pos)
    # every source box is either still present or recorded as deleted
    n_deleted = ds.count(f"{deleted_field_name('noisy')}.detections")
    assert len(seen) + n_deleted == len(src)


def test_spurious_boxes_are_on_background(many_boxes):
    ds = many_boxes
    inject_errors(ds, "ground_truth", "noisy", rates={"spurious": 0.1}, seed=1, spurious_max_iou=0.05)
    for gt, noisy in zip(ds.values("ground_truth"), ds.values("noisy")):
        for d in noisy.detections:
            if d[TRUTH_ATTR] == "spurious":
                assert max(_iou(d.bounding_box, g.bounding_box) for g in gt.detections) < 0.05


def test_seed_reproducible_and_different_seeds_differ(many_boxes):
    ds = many_boxes

    def snapshot(field):
        return [[(d.id if d[TRUTH_ATTR] not in ("spurious", "duplicate") else "new", d.label,
                  tuple(np.round(d.bounding_box, 9)), d[TRUTH_ATTR]) for d in s.detections]
                for s in ds.values(field)]

    inject_errors(ds, "ground_truth", "a", rates=RATES, seed=11)
    inject_errors(ds, "ground_truth", "b", rates=RATES, seed=11)
    inject_errors(ds, "ground_truth", "c", rates=RATES, seed=12)
    assert snapshot("a") == snapshot("b")
    assert snapshot("a") != snapshot("c")


def test_confusable_swap_stays_in_supercategory(many_boxes):
    ds = many_boxes
    inject_errors(ds, "ground_truth", "noisy", rates={"swap": 0.3}, seed=2, swap_to="confusable")
    sup = {"cat": "animal", "dog": "animal", "car": "vehicle", "bus": "vehicle"}
    swaps = [d for s in ds.values("noisy") for d in s.detections if d[TRUTH_ATTR] == "swap"]
    assert len(swaps) == 30
    assert all(sup[d.label] == sup[d["injected_from"]] and d.label != d["injected_from"] for d in swaps)


def test_refuses_to_overwrite_and_bad_input(many_boxes):
    ds = many_boxes
    with pytest.raises(ValueError, match="differ"):
        inject_errors(ds, "ground_truth", "ground_truth")
    with pytest.raises(ValueError, match="unknown error types"):
        inject_errors(ds, "ground_truth", "noisy", rates={"typo": 0.1})
    for bad in ({"swap": float("nan")}, {"swap": -0.1}, {"duplicate": 5}):
        with pytest.raises(ValueError, match="rates must be numbers in"):
            inject_errors(ds, "ground_truth", "noisy", rates=bad)
    with pytest.raises(ValueError, match="duplicate_iou"):
        inject_errors(ds, "ground_truth", "noisy", duplicate_iou=(0.9, 0.5))
    assert "noisy" not in ds.get_field_schema()
    with pytest.raises(ValueError, match="only 100 boxes"):
        inject_errors(ds, "ground_truth", "noisy", rates={"badloc": 0.6, "swap": 0.6})
    with pytest.raises(ValueError, match="does not exist"):
        inject_errors(ds, "nope", "noisy")
    inject_errors(ds, "ground_truth", "noisy", rates={"swap": 0.1}, seed=0)
    with pytest.raises(ValueError, match="already exists"):
        inject_errors(ds, "ground_truth", "noisy", rates={"swap": 0.1}, seed=0)
    inject_errors(ds, "ground_truth", "noisy", rates={"badloc": 0.2}, seed=0, overwrite=True)
    assert injected_truth(ds, "noisy")["badloc"] == 20 and injected_truth(ds, "noisy")["swap"] == 0


def test_perturb_box_hits_iou_range():
    rng = np.random.default_rng(0)
    for _ in range(50):
        box = [rng.uniform(0, 0.5), rng.uniform(0, 0.5), rng.uniform(0.05, 0.5), rng.uniform(0.05, 0.5)]
        out = perturb_box(box, (0.4, 0.5), rng)
        assert out is not None
        assert 0.4 - 1e-9 <= _iou(out[0], box) <= 0.5 + 1e-9
    # a box filling the image can still shrink; an impossible range gives None
    assert perturb_box([0, 0, 1, 1], (0.3, 0.6), rng) is not None


REAL = {"cross_duplicate": 0.06, "split": 0.05, "part": 0.05, "merge": 0.04,
        "missed_group": 0.03, "missed_edge": 0.02}


def test_real_looking_errors_are_opt_in_and_leave_todays_draws_alone(many_boxes):
    """Each real-looking type is recorded under the issue the registry knows, with its finer
    type in injected_kind; adding them changes none of today's errors for the same seed."""
    from grader.noise import KIND_ATTR, REAL_ERROR_TYPES

    ds = many_boxes
    src = {d.id: d for s in ds.values("ground_truth") for d in s.detections}
    sup = {"cat": "animal", "dog": "animal", "car": "vehicle", "bus": "vehicle"}
    inject_errors(ds, "ground_truth", "today", rates=RATES, seed=7)
    rep = inject_errors(ds, "ground_truth", "noisy", rates={**RATES, **REAL}, seed=7)

    def todays(field):
        return sorted((d.id if d[TRUTH_ATTR] not in ("spurious", "duplicate") else "new", d.label,
                       tuple(np.round(d.bounding_box, 9)), d[TRUTH_ATTR])
                      for s in ds.values(field) for d in s.detections
                      if d[TRUTH_ATTR] != "none" and not d.has_field(KIND_ATTR) or
                      (d.has_field(KIND_ATTR) and d[KIND_ATTR] is None and d[TRUTH_ATTR] != "none"))
    assert todays("today") == todays("noisy")
    assert not any(d.has_field(KIND_ATTR) for s in ds.values("today") for d in s.detections)

    kinds = rep.info["injected_kinds"]
    # 100 eligible boxes: exact counts, except missed_edge (no box of the fixture touches the
    # border), which is a counted skip rather than a silent shortfall.
    assert kinds == {"cross_duplicate": 6, "split": 5, "part": 5, "merge": 4, "missed_group": 3,
                     "missed_edge": 0}
    assert rep.skipped["missed_edge_no_candidate"] == 2
    noisy = [d for s in ds.values("noisy") for d in s.detections]
    gone = [d for s in ds.values(deleted_field_name("noisy")) for d in s.detections]
    for d in noisy + gone:
        k = d[KIND_ATTR] if d.has_field(KIND_ATTR) else None
        if k is None:
            continue
        issue = REAL_ERROR_TYPES[k] if not (k == "merge" and d in gone) else "overlooked"
        assert d[TRUTH_ATTR] == issue
        if k == "cross_duplicate":
            o = src[d["injected_source"]]
            assert d.label != o.label and sup[d.label] == sup[o.label] == sup[d["injected_from"]]
            assert 0.6 - 1e-6 <= _iou(d.bounding_box, o.bounding_box) <= 0.95 + 1e-6
        elif k == "part" and d.id in src:
            o = src[d.id].bounding_box
            assert abs(_iou(d.bounding_box, o) - d["injected_iou"]) < 1e-6
            assert 0.4 - 1e-6 <= d["injected_iou"] <= 0.7 + 1e-6
        elif k == "merge" and d in noisy:
            x, y, w, h = d.bounding_box       # the union covers the box it replaced
            ox, oy, ow, oh = src[d.id].bounding_box
            assert x <= ox + 1e-9 and y <= oy + 1e-9 and x + w >= ox + ow - 1e-9
    # a split leaves two boxes whose union is the object's box
    for d in noisy:
        if d.has_field(KIND_ATTR) and d[KIND_ATTR] == "split" and d.has_field("injected_source") \
                and d["injected_source"]:
            first = next(o for o in noisy if o.id == d["injected_source"])
            a, b = np.array(first.bounding_box), np.array(d.bounding_box)
            union = [min(a[0], b[0]), min(a[1], b[1]), max(a[0] + a[2], b[0] + b[2]),
                     max(a[1] + a[3], b[1] + b[3])]
            ox, oy, ow, oh = src[first.id].bounding_box
            assert np.allclose(union, [ox, oy, ox + ow, oy + oh])
    assert sum(1 for d in noisy if d.has_field(KIND_ATTR) and d[KIND_ATTR] == "split") == 10
    truth = injected_truth(ds, "noisy")
    assert truth["duplicate"] == 7 + 6 and truth["badloc"] == 10 + 2 * 5 + 5 + 4
    assert truth["overlooked"] == 5 + 4 + 3 and rep.info["injected"]["overlooked"] == 12
    from grader.noise import REAL_MIX_RATES

    mix = inject_errors(ds, "ground_truth", "mix", rates=REAL_MIX_RATES, seed=7)
    assert set(mix.info["injected_kinds"]) == {"cross_duplicate", "split", "merge", "part",
                                               "missed_edge", "missed_group"}
    with pytest.raises(ValueError, match="cross_duplicate_iou"):
        inject_errors(ds, "ground_truth", "x", rates=REAL, cross_duplicate_iou=(0.9, 0.5))


def test_missed_at_edges_and_in_groups(tmp_path):
    """missed_edge deletes only boxes touching the border; missed_group only boxes with two or
    more same-class neighbours."""
    from conftest import write_random_images
    from grader.noise import KIND_ATTR

    paths = write_random_images(tmp_path / "imgs", 6, size=(64, 64))
    samples = []
    for p in paths:
        dets = [fo.Detection(label="car", bounding_box=[0.0, 0.4, 0.2, 0.2]),      # edge
                fo.Detection(label="bus", bounding_box=[0.85, 0.1, 0.15, 0.2])]    # edge
        dets += [fo.Detection(label="cat", bounding_box=[0.3 + 0.12 * k, 0.5, 0.1, 0.1])
                 for k in range(3)]                                               # a group
        dets.append(fo.Detection(label="dog", bounding_box=[0.4, 0.15, 0.1, 0.1]))  # alone
        samples.append(fo.Sample(filepath=p, ground_truth=fo.Detections(detections=dets)))
    ds = fo.Dataset()
    ds.add_samples(samples)
    try:
        rep = inject_errors(ds, "ground_truth", "noisy", seed=0,
                            rates={"missed_edge": 0.25, "missed_group": 0.15})
        # one cat per image at most: once one is gone, the other two are no group any more
        assert rep.info["injected_kinds"] == {"missed_edge": 9, "missed_group": 5}
        gone = [d for s in ds.values("noisy_deleted") for d in s.detections]
        assert {d.label for d in gone if d[KIND_ATTR] == "missed_edge"} <= {"car", "bus"}
        assert {d.label for d in gone if d[KIND_ATTR] == "missed_group"} == {"cat"}
        assert all(d[TRUTH_ATTR] == "overlooked" for d in gone)
    finally:
        ds.delete()


def test_default_rates_output_is_pinned(tmp_path):
    """DEFAULT_RATES give exactly what they gave before the real-looking types existed (the
    shipped ensemble and every bench were made with them): digests computed with that code."""
    import hashlib
    import json

    from conftest import write_random_images

    paths = write_random_images(tmp_path / "imgs", 20, size=(64, 80))
    rng = np.random.default_rng(3)
    samples = []
    for p in paths:
        dets = []
        for j in range(5):
            x, y = 0.02 + 0.18 * j, rng.uniform(0.05, 0.4)
            dets.append(fo.Detection(label=str(rng.choice(["cat", "dog", "car", "bus"])),
                                     bounding_box=[x, y, 0.15, rng.uniform(0.1, 0.3)]))
        samples.append(fo.Sample(filepath=p, ground_truth=fo.Detections(detections=dets)))
    ds = fo.Dataset()
    ds.add_samples(samples)
    ds.default_classes = ["cat", "dog", "car", "bus"]
    try:
        for seed, want in ((0, "4bfc03ec5e11491b"), (1, "e9c2ea9599a76b24")):
            inject_errors(ds, "ground_truth", "noisy", seed=seed, overwrite=True)
            rows = []
            for f in ("noisy", "noisy_deleted"):
                for s in ds.values(f):
                    for d in (s.detections if s else []):
                        iou = d["injected_iou"] if d.has_field("injected_iou") else None
                        rows.append((d[TRUTH_ATTR], d.label, [round(v, 9) for v in d.bounding_box],
                                     round(iou, 9) if iou is not None else None,
                                     d["injected_from"] if d.has_field("injected_from") else None))
            assert hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16] == want, seed
    finally:
        ds.delete()
