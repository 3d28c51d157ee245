"""ClipGrader core: synthesis, loss, model scoring, training, checkpoints, weight errors.

All models are tiny random-weight open_clip models built from a config: nothing is downloaded.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from grader.boxes import iou_matrix
from grader.judges.clipgrader import ClipWeightsError, load_grader, train_clipgrader
from grader.judges.clipgrader.loss import multi_positive_contrastive_loss, target_matrix
from grader.judges.clipgrader.model import TINY_MODEL, apply_lora
from grader.judges.clipgrader.prompts import class_prompts, target_index
from grader.judges.clipgrader.synth import background_box, perturb_box, split_by_image, synthesize
from grader.report import RunReport


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_grader(TINY_MODEL, None)


# ---------------------------------------------------------------------------- synthesis

box_st = st.tuples(st.floats(0, 300), st.floats(0, 200), st.floats(8, 300), st.floats(8, 200))


@settings(max_examples=150, deadline=None)
@given(b=box_st, seed=st.integers(0, 2 ** 32 - 1))
def test_perturbed_box_iou_in_bad_range(b, seed):
    W, H = 400.0, 300.0
    x, y, w, h = b
    gt = np.array([x, y, min(x + w, W), min(y + h, H)])
    if gt[2] - gt[0] < 4 or gt[3] - gt[1] < 4:
        return
    bad = perturb_box(gt, (W, H), np.random.default_rng(seed))
    iou = iou_matrix(bad[None], gt[None])[0, 0]
    assert 0.5 - 1e-9 <= iou <= 0.8 + 1e-9
    assert bad[0] >= 0 and bad[1] >= 0 and bad[2] <= W and bad[3] <= H


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 6), seed=st.integers(0, 2 ** 32 - 1), size=st.floats(10, 150))
def test_background_box_iou_at_most_02_with_every_gt(n, seed, size):
    rng = np.random.default_rng(seed)
    W, H = 320.0, 240.0
    xy = rng.uniform(0, [W - 40, H - 40], size=(n, 2))
    wh = rng.uniform(20, 120, size=(n, 2))
    gts = np.concatenate([xy, np.minimum(xy + wh, [W, H])], axis=1)
    bg = background_box(gts, (W, H), (size, size), rng)
    if bg is None:
        return
    assert 0 <= bg[0] < bg[2] <= W and 0 <= bg[1] < bg[3] <= H
    if n:
        assert iou_matrix(bg[None], gts).max() <= 0.2 + 1e-9


def test_synthesize_is_seeded_balanced_and_skips_small(synthetic_dataset):
    ds = synthetic_dataset
    rep = RunReport("t")
    a = synthesize(ds, "ground_truth", min_size=20, seed=3, report=rep)
    b = synthesize(ds, "ground_truth", min_size=20, seed=3)
    c = synthesize(ds, "ground_truth", min_size=20, seed=4)
    key = lambda items: [(i.sample_id, i.quality, i.box_xyxy) for i in items]
    assert key(a) == key(b) and key(a) != key(c)
    q = [i.quality for i in a]
    assert q.count("good") == q.count("bad") >= q.count("background") > 0
    # good boxes are exactly the GT boxes (in pixels)
    s = ds.first()
    W, H = s.metadata.width, s.metadata.height
    gt0 = s.ground_truth.detections[0]
    x, y, w, h = gt0.bounding_box
    good = [i for i in a if i.source_label_id == gt0.id and i.quality == "good"]
    if good:
        assert np.allclose(good[0].box_xyxy, [x * W, y * H, (x + w) * W, (y + h) * H])
    # a huge min_size skips everything and says why
    rep2 = RunReport("t")
    assert synthesize(ds, "ground_truth", min_size=10_000, report=rep2) == []
    assert rep2.skipped["small_object"] == 18


def test_split_by_image_is_disjoint(synthetic_dataset):
    items = synthesize(synthetic_dataset, "ground_truth", min_size=5)
    tr, va = split_by_image(items, 0.34, seed=1)
    assert tr and va and len(tr) + len(va) == len(items)
    assert not {i.sample_id for i in tr} & {i.sample_id for i in va}


# ---------------------------------------------------------------------------- loss

def test_loss_matches_hand_computed_case():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    txt = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    targets = [7, 7, 2]  # pairs 0 and 1 share a (class, quality) target
    g = target_matrix(targets)
    assert torch.allclose(g, torch.tensor([[.5, .5, 0], [.5, .5, 0], [0, 0, 1.]]))
    # logits rows [1,1,0], [0,0,1], [1,1,0]; by hand (see derivation in the module docstring):
    e = math.e
    image = (math.log(2 * e + 1) - 1 + math.log(2 + e) + math.log(2 * e + 1)) / 3
    text = (2 * (math.log(2 * e + 1) - 0.5) + math.log(2 + e)) / 3
    loss = multi_positive_contrastive_loss(img, txt, targets, 1.0)
    assert loss.item() == pytest.approx((image + text) / 2, abs=1e-6)


def test_loss_with_distinct_targets_is_clip_loss():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(5, 8), dim=1)
    txt = F.normalize(torch.randn(5, 8), dim=1)
    logits = 10 * img @ txt.T
    labels = torch.arange(5)
    clip = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert multi_positive_contrastive_loss(img, txt, [0, 1, 2, 3, 4], 10.0).item() == \
        pytest.approx(clip.item(), abs=1e-6)


# ---------------------------------------------------------------------------- model

def test_prompts_and_probabilities_are_consistent(tiny):
    classes = ["cat", "dog"]
    assert class_prompts(classes) == ["good bounding box of cat", "bad bounding box of cat",
                                      "good bounding box of dog", "bad bounding box of dog",
                                      "background"]
    assert target_index(1, "bad", 2) == 3 and target_index(None, "background", 2) == 4
    batch = torch.randint(0, 255, (4, 3, tiny.image_size, tiny.image_size), dtype=torch.uint8)
    p = tiny.probabilities(batch, [0, 1, 0, 1], classes)
    s = p["p_good"] + p["p_bad"] + p["p_background"]
    assert np.allclose(s, 1, atol=1e-5)
    assert (p["quality"] == np.stack([p["p_good"], p["p_bad"], p["p_background"]], 1).argmax(1)).all()
    # own-class scoring = softmax over exactly that class's two prompts and background
    with torch.no_grad():
        img = tiny.image_features(tiny.normalize(batch))
        logits = tiny.logit_scale * img @ tiny.text_features(classes).T
    ref = torch.softmax(logits[1, [2, 3, 4]], 0).numpy()
    assert np.allclose([p["p_good"][1], p["p_bad"][1], p["p_background"][1]], ref, atol=1e-5)
    pa = tiny.probabilities(batch, [0, 1, 0, 1], classes, all_classes=True)
    full = torch.softmax(logits, 1).numpy()
    assert np.allclose(pa["p_good"], full[[0, 1, 2, 3], [0, 2, 0, 2]], atol=1e-5)
    for i in range(4):
        if full[i].argmax() == 4:
            assert pa["pred_class"][i] == -1
        else:
            assert pa["pred_class"][i] == full[i, :4].reshape(2, 2).sum(1).argmax()


def _fixed_batch(g, n=12, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (n, g.image_size, g.image_size, 3), dtype=np.uint8)
    targets = [int(t) for t in rng.integers(0, 5, n)]
    return g.hwc_to_tensor(arr), targets


def _batch_loss(g, batch, targets, classes=("cat", "dog")):
    img = g.image_features(g.normalize(batch))
    txt = g.text_features(list(classes))[targets]
    return multi_positive_contrastive_loss(img, txt, targets, g.logit_scale.detach())


def test_one_training_step_reduces_loss_on_fixed_batch():
    torch.manual_seed(1)
    g = load_grader(TINY_MODEL, None)
    batch, targets = _fixed_batch(g)
    g.model.train()
    opt = torch.optim.AdamW(g.model.visual.parameters(), lr=1e-3)
    text_before = g.text_features(["cat", "dog"]).clone()
    loss0 = _batch_loss(g, batch, targets)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    loss1 = _batch_loss(g, batch, targets)
    assert loss1.item() < loss0.item()
    g._text_cache.clear()
    assert torch.allclose(g.text_features(["cat", "dog"]), text_before)  # text tower untouched


def test_lora_starts_as_identity_and_trains_only_adapters():
    torch.manual_seed(2)
    g = load_grader(TINY_MODEL, None)
    batch, targets = _fixed_batch(g, seed=3)
    with torch.no_grad():
        before = g.image_features(g.normalize(batch)).clone()
    base = {n: p.detach().clone() for n, p in g.model.visual.named_parameters()}
    params = apply_lora(g.model.visual, rank=4)
    with torch.no_grad():
        assert torch.allclose(g.image_features(g.normalize(batch)), before, atol=1e-6)
    for p in g.model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-2)
    loss0 = _batch_loss(g, batch, targets)
    loss0.backward()
    opt.step()
    assert _batch_loss(g, batch, targets).item() < loss0.item()
    for n, p in g.model.visual.named_parameters():
        key = n.replace("parametrizations.", "").replace(".original", "")
        if "lora_" not in n and key in base:
            assert torch.equal(p, base[key]), n


# ---------------------------------------------------------------------------- training

def test_train_checkpoint_roundtrip_and_resume(synthetic_dataset, tmp_path):
    ds = synthetic_dataset
    kw = dict(model_name=TINY_MODEL, pretrained=None, batch_size=8, lr=1e-3, min_size=5,
              val_fraction=0.34, seed=0, num_workers=0)
    full = train_clipgrader(ds, "ground_truth", str(tmp_path / "full"), epochs=2, **kw)
    assert len(full.history) == 2 and full.num_val > 0 and full.num_train > 0
    assert os.path.isfile(full.best_checkpoint) and os.path.isfile(full.last_checkpoint)
    assert {"train_loss", "val_loss", "val_accuracy"} <= set(full.history[0])

    # round-trip: a reloaded checkpoint grades exactly like the weights that were saved
    g = load_grader(checkpoint=full.last_checkpoint)
    assert g.meta["classes"] == ["cat", "dog"]
    batch, _ = _fixed_batch(g, seed=5)
    again = load_grader(checkpoint=full.last_checkpoint)
    p1 = g.probabilities(batch, [0, 1] * 6, ["cat", "dog"])
    p2 = again.probabilities(batch, [0, 1] * 6, ["cat", "dog"])
    assert np.allclose(p1["p_good"], p2["p_good"])
    fresh = load_grader(TINY_MODEL, None)
    assert not np.allclose(fresh.probabilities(batch, [0, 1] * 6, ["cat", "dog"])["p_good"],
                           p1["p_good"])

    # resume: 1 epoch, then resume to 2 epochs == 2 epochs straight
    part = train_clipgrader(ds, "ground_truth", str(tmp_path / "part"), epochs=1, **kw)
    assert len(part.history) == 1
    resumed = train_clipgrader(ds, "ground_truth", str(tmp_path / "part"), epochs=2, resume=True,
                               **kw)
    assert [h["epoch"] for h in resumed.history] == [0, 1]
    assert resumed.history[0] == part.history[0]
    a = torch.load(full.last_checkpoint, weights_only=True)["state_dict"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_lora_training_checkpoint_roundtrip(synthetic_dataset, tmp_path):
    res = train_clipgrader(synthetic_dataset, "ground_truth", str(tmp_path / "lora"),
                           model_name=TINY_MODEL, pretrained=None, epochs=1, batch_size=8,
                           lr=1e-2, lora_rank=4, min_size=5, num_workers=0)
    sd = torch.load(res.last_checkpoint, weights_only=True)["state_dict"]
    assert any("lora_A" in k for k in sd)
    g = load_grader(checkpoint=res.last_checkpoint)
    assert g.lora_rank == 4
    torch.manual_seed(0)  # train_clipgrader seeds torch with its seed before building the model
    base = load_grader(TINY_MODEL, None).model.state_dict()
    # LoRA leaves the start model's weights frozen: only the adapters moved
    k = next(k for k in sd if k.endswith("parametrizations.in_proj_weight.original"))
    assert torch.equal(sd[k], base[k.replace("parametrizations.", "").replace(".original", "")])
    lora_b = [v for k, v in sd.items() if k.endswith("lora_B")]
    assert any(v.abs().sum() > 0 for v in lora_b)


# ---------------------------------------------------------------------------- weight errors

def test_missing_weights_file_names_what_to_provide(tmp_path):
    with pytest.raises(ClipWeightsError) as e:
        load_grader("ViT-B-32", str(tmp_path / "nope" / "weights.pt"))
    msg = str(e.value)
    assert "weights file not found" in msg and "checkpoint=" in msg and "pretrained=" in msg


def test_missing_checkpoint_and_unknown_tag_errors(tmp_path):
    with pytest.raises(ClipWeightsError, match="checkpoint not found"):
        load_grader(checkpoint=str(tmp_path / "best.pt"))
    with pytest.raises(ClipWeightsError, match="not a pretrained tag.*openai"):
        load_grader("ViT-B-32", "no-such-tag")
    with pytest.raises(ClipWeightsError, match="unknown open_clip architecture"):
        load_grader("ViT-Q-99", None)
    bogus = tmp_path / "x.pt"
    torch.save({"a": torch.zeros(1)}, bogus)
    with pytest.raises(ClipWeightsError, match="not a ClipGrader checkpoint"):
        load_grader(checkpoint=str(bogus))


def test_uncached_pretrained_tag_offline_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(ClipWeightsError) as e:
        load_grader("ViT-B-32", "openai", cache_dir=str(tmp_path / "empty-cache"))
    msg = str(e.value)
    assert "model='ViT-B-32' pretrained='openai'" in msg and "checkpoint=" in msg


def test_synthesize_on_real_coco128_counts(coco128):
    """On real COCO boxes: one good/bad per object of >= 20 px, small ones skipped and counted."""
    rep = RunReport("t")
    items = synthesize(coco128, "ground_truth", min_size=20, seed=0, report=rep)
    W = coco128.values("metadata.width")
    H = coco128.values("metadata.height")
    boxes = coco128.values("ground_truth.detections.bounding_box")
    big = sum(min(b[2] * w, b[3] * h) >= 20 for bs, w, h in zip(boxes, W, H) for b in (bs or []))
    q = [i.quality for i in items]
    assert q.count("good") == q.count("bad") == big
    assert q.count("background") + rep.skipped.get("no_background_found", 0) == big
    assert rep.skipped["small_object"] == sum(len(bs or []) for bs in boxes) - big
    for it in items[:300]:
        if it.quality == "bad":
            good = next(g for g in items if g.source_label_id == it.source_label_id
                        and g.quality == "good")
            iou = iou_matrix(np.array([it.box_xyxy]), np.array([good.box_xyxy]))[0, 0]
            assert 0.5 - 1e-9 <= iou <= 0.8 + 1e-9


def test_bf16_autocast_scores_close_to_fp32(tiny):
    g16 = load_grader(TINY_MODEL, None, precision="bf16")
    g16.model.load_state_dict(tiny.model.state_dict())
    batch, _ = _fixed_batch(tiny, seed=9)
    a = tiny.probabilities(batch, [0, 1] * 6, ["cat", "dog"])
    b = g16.probabilities(batch, [0, 1] * 6, ["cat", "dog"])
    assert np.allclose(b["p_good"] + b["p_bad"] + b["p_background"], 1, atol=1e-5)
    assert np.allclose(a["p_good"], b["p_good"], atol=0.05)
    with pytest.raises(ValueError, match="precision"):
        load_grader(TINY_MODEL, None, precision="int3")
