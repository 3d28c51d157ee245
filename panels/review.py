"""The "Label review" panel: counts, a score histogram, a paged queue of suspect labels with crop
previews, and a review mode that steps through the queue one label at a time by keyboard.

Every action calls a ``grader.review`` function with the label id and the state token the
panel showed, so a label that changed meanwhile is refused (``FixConflictError``), never
overwritten. The queue is a snapshot (one page, its ids and states) until the user presses
Refresh or changes a filter; a fix marks its item as decided and moves on without re-querying
the database or reloading the App's grid. The panel reads the App's view (``ctx.view``, with
the sidebar filters) and never sets it, except on an explicit "Show queue in grid".
"""
from __future__ import annotations

import inspect
import json
import os
import pickle
import threading
import time

import fiftyone.operators as foo
import fiftyone.operators.types as types
import pydash

from grader import review
from grader.review import preview
from grader.scores import GT_ISSUES, SCORES, get_spec

from ..operators.review import ctx_user

PLUGIN = "@label-grader/label-grader"
ANY_SUSPECT = "__any__"
ALL_SCORED = "__all__"
ALL_CLASSES = "__all__"
PAGE_SIZE = 12
THUMB = 160      # grid preview size (px)
LARGE = 480      # review-mode preview size (px)
PREFETCH = 2     # review mode renders this many next previews ahead
PREFETCH_DELAY_S = 0.15
NUM_CLASS_KEYS = 9
_KEYS_LOCK = threading.Lock()  # review keys are handled one at a time, in the order pressed
_SESSION_LOCK = threading.Lock()  # guards _SESSIONS merges between overlapping handlers
#: The review session: kept here, per panel, never written into the App's panel state.
_SESSION_KEYS = ("cursor", "page", "log", "undo_stack", "mode", "controls", "view_key",
                 "surface", "available", "all_classes", "counts", "hist", "draft", "grid_stale")
_SESSIONS: dict[str, dict] = {}  # panel id -> the review session after the last handler

#: One key per decision in review mode (panels/js/review_keys.js sends each key pressed).
KEYS = {
    "a": "accept", "s": "use_class", "b": "use_box", "d": "delete", "u": "undo",
    "n": "next", "j": "next", "p": "prev", "k": "prev", "c": "adopt",
    "e": "save_box", "r": "reset_box",
}
KEY_HELP_SHORT = ("a accept · s suggested class · 1-9 or / class · b suggested box · arrows edit "
                  "the box, e save · d delete · c adopt · u undo · n/p next/prev")
#: Box nudges in review mode (arrow keys from panels/js/review_keys.js): arrows move the box,
#: shift+arrows move its right / bottom edge. One step is NUDGE of the image side.
NUDGE = 0.01
NUDGES = {"left": (-1, 0, 0, 0), "right": (1, 0, 0, 0), "up": (0, -1, 0, 0), "down": (0, 1, 0, 0),
          "shift+left": (0, 0, -1, 0), "shift+right": (0, 0, 1, 0),
          "shift+up": (0, 0, 0, -1), "shift+down": (0, 0, 0, 1)}
KEY_HELP = ("a accept · s use suggested class · 1-9 relabel to that class · / search classes · "
            "b use suggested box · arrows move the box, shift+arrows its right/bottom edge, "
            "e save the edited box, r reset it · d delete · c adopt candidate · u undo · "
            "n/j next · p/k previous")


def _ctl(ctx, name: str):
    """A control's value: inputs inside the ``controls`` stack live at ``controls.<name>``."""
    return ctx.panel.state.get(f"controls.{name}")


def _set_ctl(ctx, name: str, value) -> None:
    """Set a control's value in the review session (the ``LabelGraderControl`` components show
    it). Never in the App's panel state: every App state write makes the App save its spaces
    and reload its page, which cleared a sidebar filter just applied (issue 23)."""
    _put(ctx, f"controls.{name}", value)


def _gt_fields(ctx) -> list[str]:
    import fiftyone as fo

    if ctx.dataset is None:
        return []
    fields = sorted(ctx.dataset.get_field_schema(embedded_doc_type=fo.Detections))
    return [f for f in fields if not f.endswith("_overlooked")]


def _pred_field(ctx) -> str:
    """The predictions field the last cleanlab run used (its suggested boxes come from it)."""
    try:
        cfg = _ds(ctx).get_run_info("label_grader_cleanlab").config
        return getattr(cfg, "pred_field", None) or "predictions"
    except Exception:  # no run recorded: the conventional name
        return "predictions"


def _dataset_classes(ctx, gt: str) -> list[str]:
    ds = _ds(ctx)
    cls = (ds.classes or {}).get(gt) or ds.default_classes
    if cls:
        return list(cls)
    return sorted(x for x in ds.distinct(f"{gt}.detections.label") if x)


def _call(fn, *args, **kw):
    """Call a fix, passing only the keywords it accepts (``expected_state`` pins the label)."""
    params = inspect.signature(fn).parameters
    return fn(*args, **{k: v for k, v in kw.items() if k in params and v is not None})


def _session(method):
    """Run a panel handler on the review session as the last handler left it.

    The session (queue page, cursor, decisions, undo stack, mode) lives here, per panel, and
    is written with :func:`_put`, never into the App's panel state: every App state change is
    saved into the App's spaces and makes the App refetch its page and send view events, which
    costs far more than the handler itself. It is laid over the state the App sends before each
    handler (and before each render); after the handler, what it changed is kept.
    """
    import functools

    @functools.wraps(method)
    def wrapper(self, ctx):
        if method.__name__ == "on_load":  # a new panel: a new session
            _SESSIONS.pop(_pid(ctx), None)
        pid = _restore_session(ctx)
        before = _clone({k: ctx.panel.state.get(k) for k in _SESSION_KEYS})
        out = method(self, ctx)
        after = {k: ctx.panel.state.get(k) for k in _SESSION_KEYS}
        changed = _clone({k: v for k, v in after.items() if v != before[k]})
        # Handlers can overlap (a filter's refresh still running when "Review mode" is
        # clicked): keep what this one changed on top of what the others left, not the
        # whole state as it was when this one started.
        with _SESSION_LOCK:
            merged = {**_SESSIONS.get(pid, before), **changed}
            _SESSIONS[pid] = merged
        ctx.panel.state._data.update(_clone({k: v for k, v in merged.items()
                                             if k not in changed}))
        if (merged.get("mode") == "review" and before.get("mode") != "review"
                and "mode" not in changed):  # another handler entered review mode meanwhile
            self._show(ctx, int(merged.get("cursor") or 0))
        return out

    return wrapper


def _restore_session(ctx) -> str:
    """Lay this panel's kept review session over the state the App sent; return the panel id."""
    pid = _pid(ctx)
    if pid in _SESSIONS:
        ctx.panel.state._data.update(_clone(_SESSIONS[pid]))
    return pid


def _clone(value):
    """A deep copy of session values (plain dicts, lists, numbers, strings): a pickle round
    trip, ~10x faster than ``copy.deepcopy``, which took ~25 ms of every key's handler."""
    return pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))


def _put(ctx, key: str, value) -> None:
    """Set a review-session value (a dotted path) for this handler and its render only; the
    ``_session`` wrapper keeps it for the next handler."""
    pydash.set_(ctx.panel.state._data, key, value)


def _pid(ctx) -> str:
    return f"{ctx.panel.id or ''}:{_dataset_name(ctx)}"


def _dataset_name(ctx) -> str:
    """The App's dataset name, read from the request (``ctx.dataset`` would load it)."""
    name = (ctx.request_params or {}).get("dataset_name")
    if name:
        return name
    return ctx.dataset.name if ctx.dataset else ""


#: The datasets the review keys write to (name -> ``fo.Dataset``), held here so the
#: Dataset singleton stays loaded between requests.
_DATASETS: dict[str, object] = {}


def _ds(ctx):
    """The App's dataset for the review keys' fixes, without reloading it.

    ``ctx.dataset`` reloads the dataset document and re-declares its fields on every request
    (~60-100 ms on 2 busy cores, most of a key's handler); a fix only needs its collections.
    FiftyOne's datasets are singletons per name, so any other panel event or operator that
    reads ``ctx.dataset`` reloads this same object; the panel's non-key events (load, refresh,
    filters) still go through ``ctx.dataset`` and keep it current.
    """
    name = (ctx.request_params or {}).get("dataset_name")
    ds = _DATASETS.get(name) if name else None
    if ds is None or ds.deleted:
        ds = ctx.dataset
        if ds is not None:
            _DATASETS[ds.name] = ds
    return ds


def _debug(msg: str) -> None:
    """Append a line to the file named by LABEL_GRADER_PANEL_DEBUG (the App server runs the
    panel in a process whose output is not kept)."""
    path = os.environ.get("LABEL_GRADER_PANEL_DEBUG")
    if path:
        with open(path, "a") as f:
            f.write(f"{time.time():.3f} {msg}\n")


def _view_key(ctx) -> str:
    """What the App's view is (its stages, with the sidebar filters), to tell a real change."""
    view = ctx.view
    if view is None:
        return ""
    stages = [(type(st).__name__, st._kwargs()) for st in getattr(view, "_stages", [])]
    return json.dumps([ctx.dataset.name if ctx.dataset else None, stages], sort_keys=True,
                      default=str)


#: The panel's remembered choices, per dataset (FiftyOne's execution store, in the database).
STORE = "label_grader_review"
#: Default sort: the ensemble of every judge when it was computed (on coco128-val it puts 9 of
#: 14 injected errors in the top 20, cleanlab_badloc 2), then any ensemble score.
DEFAULT_SORT = ("ensemble_any", "ensemble_swap", "ensemble_badloc", "ensemble_spurious",
                "ensemble_duplicate")
#: Suspect tags that only candidates (boxes missing from GT) carry.
CANDIDATE_TAGS = frozenset(s.tag for s in SCORES if s.on_candidates and s.tag)
#: The candidates' sort when the overlooked issue is picked, best first: on coco128 (2 seeds of
#: 5 % of each error type deleted, bench/eval_judges.py --split dev --repeats 2)
#: ``overlooked_score`` put 36-44 % of the deleted boxes in its top 2N, cleanlab's 15 %.
CANDIDATE_SORT = ("overlooked_score", "cleanlab_overlooked")


def _stored_score(ctx, gt: str) -> str | None:
    try:
        return ctx.store(STORE).get(f"score:{gt}")
    except Exception as e:  # noqa: BLE001 - no store (old database): the default applies
        _debug(f"store read failed: {e}")
        return None


def _remember_score(ctx, gt: str, score: str | None) -> None:
    """Keep the user's sort choice for this dataset and field, so a reopened panel keeps it."""
    if not gt or not score:
        return
    try:
        ctx.store(STORE).set(f"score:{gt}", score)
    except Exception as e:  # noqa: BLE001 - remembering is a convenience, never a failure
        _debug(f"store write failed: {e}")


def default_score(available: list[str], stored: str | None = None) -> str | None:
    """The sort score a panel opens with: the one the user chose last (when still present),
    else the first of :data:`DEFAULT_SORT` present, else the first ground-truth score."""
    if stored in available:
        return stored
    for a in DEFAULT_SORT:
        if a in available:
            return a
    gt_scores = [a for a in available if not get_spec(a).on_candidates]
    return (gt_scores or available or [None])[0]


def queue_score(score: str | None, issue: str | None, available: list[str]) -> str | None:
    """The score the queue sorts by: ``score``, except that an issue only candidates carry
    (overlooked) needs a candidates' score, since a ground-truth score lists no candidate."""
    if issue in CANDIDATE_TAGS and score and not get_spec(score).on_candidates:
        cand = [a for a in available if get_spec(a).on_candidates
                and (get_spec(a).tag == issue or not get_spec(a).tag)]
        cand.sort(key=lambda a: CANDIDATE_SORT.index(a) if a in CANDIDATE_SORT
                  else len(CANDIDATE_SORT))
        return cand[0] if cand else score
    return score


def open_panels(dataset_name: str) -> list[str]:
    """Ids of the Label review panels with a review session on ``dataset_name`` (this App
    server's)."""
    with _SESSION_LOCK:
        keys = list(_SESSIONS)
    return [pid for pid, _, name in (k.rpartition(":") for k in keys)
            if name == dataset_name and pid]


def refresh_requests(ctx) -> list:
    """App requests that have every Label review panel open on ``ctx``'s dataset re-read its
    scores, counts and queue; ``Grade labels`` yields them when its run ends. The panel's queue
    is otherwise a snapshot until Refresh (issue 23.7)."""
    return [ctx.trigger(f"{PLUGIN}/label_review", {"__method__": "on_grade_done", "panel_id": pid})
            for pid in open_panels(_dataset_name(ctx))]


def _issue_name(tag: str) -> str:
    return tag.split(":", 1)[-1]


def _filter_issue(tag: str | None) -> str | None:
    """The label issue (``grader.scores.GT_ISSUES``) of the issue filter's suspect tag, by the
    registry (``suspect:boxgrader_background`` -> ``spurious``); None for "any suspect"."""
    issue = next((s.issue for s in SCORES if tag and s.tag == tag), None)
    return issue if issue in GT_ISSUES else None


class LabelReviewPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="label_review",
            label="Label review",
            icon="fact_check",
            help_markdown="Review labels flagged by label-grader's judges: sort, filter, fix, undo. "
                          "Review mode steps through the queue by keyboard: " + KEY_HELP,
            surfaces="grid modal",
        )

    # ------------------------------------------------------------ lifecycle / events

    @_session
    def on_load(self, ctx):
        fields = _gt_fields(ctx)
        if _ctl(ctx, "gt_field") not in fields:
            default = "ground_truth" if "ground_truth" in fields else (fields[0] if fields else None)
            _set_ctl(ctx, "gt_field", default)
        if ctx.panel.state.mode is None:
            _put(ctx, "mode", "list")
        self._refresh(ctx)

    @_session
    def on_change_view(self, ctx):
        # Follow the App's view (and its sidebar filters) by reading it; never write it back.
        # The App also sends this event when nothing changed: then the snapshot stays put.
        if _view_key(ctx) != ctx.panel.state.get("view_key"):
            self._refresh(ctx)

    @_session
    def on_change_current_sample(self, ctx):
        if ctx.panel.state.get("surface") == "modal":
            self._refresh(ctx)

    @_session
    def on_change_dataset(self, ctx):
        _set_ctl(ctx, "gt_field", None)
        self.on_load(ctx)

    @_session
    def on_filter_change(self, ctx):
        # the App may call this before its own state patch lands: take the new value from params
        # a LabelGraderControl sends {name, value}; an App input sends {path, value}
        name = str(ctx.params.get("name") or ctx.params.get("path") or "").split(".")[-1]
        if name and "value" in ctx.params:
            _set_ctl(ctx, name, ctx.params["value"])
        if name == "score":
            _remember_score(ctx, _ctl(ctx, "gt_field"), ctx.params.get("value"))
        elif name == "issue":  # overlooked: show the candidates' score the queue sorts by
            avail = ctx.panel.state.available or []
            score = queue_score(_ctl(ctx, "score"), ctx.params.get("value"), avail)
            _set_ctl(ctx, "score", score)
        self._refresh(ctx)

    @_session
    def on_grade_done(self, ctx):
        """A "Grade labels" run on this dataset ended (its operator triggers this, see
        :func:`refresh_requests`): the new scores, counts and queue, read now. The sort goes to
        the default (the ensemble, when the run made it) unless the user chose one."""
        gt = _ctl(ctx, "gt_field")
        if gt and _stored_score(ctx, gt) is None:
            _set_ctl(ctx, "score", None)
        self._refresh(ctx)
        ctx.ops.notify("Label review: queue re-read after the grading run", variant="info")

    def on_unload(self, ctx):
        """The panel was closed: its review session goes, so no later grade run triggers it."""
        with _SESSION_LOCK:
            _SESSIONS.pop(_pid(ctx), None)

    @_session
    def on_log_y(self, ctx):
        _set_ctl(ctx, "log_y", bool(ctx.params.get("value")))

    @_session
    def refresh(self, ctx):
        self._refresh(ctx)
        # the App's samples, re-read; not reload_dataset, which also clears the sidebar filters
        self._reload_grid(ctx)

    @_session
    def next_page(self, ctx):
        self._next_page(ctx)

    def _next_page(self, ctx) -> None:
        page = ctx.panel.state.page or {}
        undecided = sum(1 for q in page.get("items", []) if not q.get("decided"))
        # decided items left the queue, so the next page starts earlier by that many
        self._load_page(ctx, page.get("skip", 0) + undecided)

    @_session
    def prev_page(self, ctx):
        page = ctx.panel.state.page or {}
        self._load_page(ctx, max(0, page.get("skip", 0) - PAGE_SIZE))

    @_session
    def enter_review(self, ctx):
        _put(ctx, "mode", "review")
        k = ctx.params.get("index")
        items = (ctx.panel.state.page or {}).get("items", [])
        if k is None:
            k = next((i for i, q in enumerate(items) if not q.get("decided")), 0)
        self._show(ctx, int(k))

    @_session
    def leave_review(self, ctx):
        _put(ctx, "mode", "list")
        if ctx.panel.state.get("grid_stale"):  # the review session's fixes, in the grid
            _put(ctx, "grid_stale", False)
            self._reload_grid(ctx)

    def open_item(self, ctx):
        p = ctx.params
        ctx.ops.open_sample(id=p["sample_id"])
        ctx.ops.set_selected_labels([{"label_id": p["label_id"], "sample_id": p["sample_id"],
                                      "field": p["field"]}])

    def on_hotkey(self, ctx):
        """A key pressed in review mode, sent at once by the ``LabelGraderKeys`` component
        (``panels/js/review_keys.js``): one command. Keys are handled one at a time, in the
        order pressed."""
        with _KEYS_LOCK:
            self._hotkey(ctx)

    @_session
    def _hotkey(self, ctx) -> None:
        key = str(ctx.params.get("key") or "").lower()
        _debug(f"hotkey {key!r} cursor={ctx.panel.state.cursor}")
        if key in NUDGES:
            self._nudge(ctx, NUDGES[key])
        elif key:
            self._keys(ctx, key[:1])

    def _keys(self, ctx, new: str) -> None:
        for ch in new.lower():
            if ch.isdigit() and ch != "0":
                self._relabel_nth(ctx, int(ch) - 1)
            elif ch in KEYS:
                self._command(ctx, KEYS[ch])

    @_session
    def act(self, ctx):
        """A button: ``kind`` on the item at ``index`` of the page (default: the current one)."""
        kind = ctx.params.get("kind")
        if kind in ("next", "prev", "undo"):
            return self._command(ctx, kind)
        k = ctx.params.get("index")
        if k is not None:
            _put(ctx, "cursor", int(k))
        self._fix(ctx, kind, new_label=ctx.params.get("new_label"),
                  allow_new_class=bool(ctx.params.get("allow_new_class")))

    def on_relabel_pick(self, ctx):
        """A class chosen in the review mode's class picker (``LabelGraderClassPicker``), sent
        once with the id of the label it was drawn for. A choice for another label than the
        one shown (it moved on meanwhile) is refused: it never lands on the next label."""
        with _KEYS_LOCK:  # after any key still being handled, like a key press
            self._relabel_pick(ctx)

    @_session
    def _relabel_pick(self, ctx) -> None:
        label, lid = ctx.params.get("value"), ctx.params.get("label_id")
        _, q = self._current(ctx)
        _debug(f"pick {label!r} for {lid} shown={q and q['label_id']}")
        if not label:
            return
        if q is None or not lid or lid != q["label_id"]:
            ctx.ops.notify("Not relabelled: the label shown changed before the choice arrived; "
                           "choose again", variant="warning")
            return
        # a class outside the dataset's only on the picker's explicit "new class" choice
        new = bool(ctx.params.get("new_class"))
        if new and label in _dataset_classes(ctx, _ctl(ctx, "gt_field")):
            new = False
        self._fix(ctx, "relabel", new_label=str(label).strip(), allow_new_class=new)

    @_session
    def undo(self, ctx):
        self._command(ctx, "undo")

    @_session
    def accept_all(self, ctx):
        items = [q for q in (ctx.panel.state.page or {}).get("items", [])
                 if not q["is_candidate"] and not q.get("decided")]
        if not items:
            ctx.ops.notify("No labels on this page to accept", variant="warning")
            return
        rec = review.accept_labels(ctx.dataset, _ctl(ctx, "gt_field"),
                                   label_ids=[q["label_id"] for q in items], user=ctx_user(ctx))
        if rec is not None:
            self._mark(ctx, {q["label_id"]: "accepted" for q in items}, rec)
            self._reload_grid(ctx)
        ctx.ops.notify(rec.summary() if rec else "nothing to accept", variant="success")

    @_session
    def show_queue(self, ctx):
        f = self._filters(ctx)
        if f is None:
            return
        ctx.ops.set_view(review.queue_filter_view(self._view(ctx), **f))

    @_session
    def save_views(self, ctx):
        names = review.save_review_views(ctx.dataset, _ctl(ctx, "gt_field"))
        ctx.ops.notify(f"Saved views: {', '.join(names) or 'none (nothing to review)'}",
                       variant="success")

    # ------------------------------------------------------------ commands

    def _command(self, ctx, cmd: str) -> None:
        if cmd == "next":
            return self._step(ctx, +1)
        if cmd == "prev":
            return self._step(ctx, -1)
        if cmd == "undo":
            return self._undo(ctx)
        if cmd == "use_class":
            return self._relabel_nth(ctx, 0, hints_only=True)
        if cmd == "save_box":
            return self._save_draft(ctx)
        if cmd == "reset_box":
            _put(ctx, "draft", None)
            return self._show(ctx, int(ctx.panel.state.cursor or 0))
        kind = {"accept": "accept", "use_box": "replace_box", "delete": "delete",
                "adopt": "adopt"}[cmd]
        self._fix(ctx, kind)

    def _current(self, ctx) -> tuple[int, dict | None]:
        items = (ctx.panel.state.page or {}).get("items", [])
        k = int(ctx.panel.state.cursor or 0)
        return k, (items[k] if 0 <= k < len(items) else None)

    def _relabel_nth(self, ctx, n: int, hints_only: bool = False) -> None:
        _, q = self._current(ctx)
        if q is None:
            return
        choices = q.get("class_hints", []) if hints_only else self._class_choices(ctx, q)
        if n >= len(choices):
            ctx.ops.notify("No suggested class for this label" if hints_only
                           else f"No class number {n + 1}", variant="warning")
            return
        self._fix(ctx, "relabel", new_label=choices[n])

    def _class_choices(self, ctx, q: dict) -> list[str]:
        """Classes to relabel to: the judges' suggestions first, then the dataset's classes."""
        out = [h for h in q.get("class_hints", []) if h != q.get("label")]
        classes = ctx.panel.state.get("all_classes") or []
        return out + [c for c in classes if c not in out and c != q.get("label")]

    def _fix(self, ctx, kind: str, new_label: str | None = None,
             allow_new_class: bool = False, box: list[float] | None = None) -> None:
        k, q = self._current(ctx)
        if q is None:
            ctx.ops.notify("No label selected", variant="warning")
            return
        if q.get("decided"):
            ctx.ops.notify(f"Already decided ({q['decided']}); undo first", variant="warning")
            return
        if kind == "adopt" and not q["is_candidate"]:
            ctx.ops.notify("Adopt applies to overlooked candidates", variant="warning")
            return
        if q["is_candidate"] and kind not in ("adopt", "delete", "accept"):
            ctx.ops.notify("An overlooked candidate can be adopted or left alone", variant="warning")
            return
        _debug(f"fix {kind} cursor={k} label={q['label_id']}")
        ds, gt, user = _ds(ctx), _ctl(ctx, "gt_field"), ctx_user(ctx)
        common = dict(user=user, expected_state=q.get("state"))
        try:
            if kind == "adopt" or (q["is_candidate"] and kind == "accept"):
                rec = _call(review.adopt_candidate, ds, q["sample_id"], q["label_id"],
                            gt_field=gt, **common)
                kind = "adopt"
            elif kind == "accept":
                rec = _call(review.accept_label, ds, q["sample_id"], q["label_id"],
                            field=q["field"], **common)
            elif kind == "relabel":
                rec = _call(review.relabel, ds, q["sample_id"], q["label_id"],
                            new_label=new_label, field=q["field"],
                            allow_new_class=allow_new_class or None, **common)
            elif kind == "replace_box" and box is not None:  # the box edited in review mode
                rec = _call(review.replace_box, ds, q["sample_id"], q["label_id"],
                            field=q["field"], box=box, **common)
            elif kind == "replace_box":
                if not q.get("pred_id"):
                    ctx.ops.notify("No suggested box for this label", variant="warning")
                    return
                rec = _call(review.replace_box, ds, q["sample_id"], q["label_id"],
                            field=q["field"], pred_field=_pred_field(ctx), pred_id=q["pred_id"],
                            **common)
            elif kind == "delete":
                # the issue the curator filtered by says why; else the label's own scores do
                rec = _call(review.delete_label, ds, q["sample_id"], q["label_id"],
                            field=q["field"], issue=_filter_issue(_ctl(ctx, "issue")), **common)
            else:
                raise ValueError(f"unknown action {kind!r}")
        except review.FixConflictError as e:
            ctx.ops.notify(f"Refused: the label changed since it was shown ({e}). Refresh.",
                           variant="error")
            return
        except (KeyError, ValueError) as e:
            ctx.ops.notify(f"Fix failed: {e}", variant="error")
            return
        word = {"accept": "accepted", "relabel": f"relabelled → {new_label}",
                "replace_box": "box edited" if box is not None else "box replaced", "delete": "deleted", "adopt": "adopted"}[kind]
        self._mark(ctx, {q["label_id"]: word}, rec)
        if self._rerank(ctx):
            pass   # the queue was re-read in its new order; its first item is shown
        elif ctx.panel.state.mode == "review":
            self._step(ctx, +1, undecided_only=True)
        self._grid_changed(ctx)

    def _rerank(self, ctx) -> bool:
        """Every ``REFIT_EVERY`` review decisions the ensemble learns from them
        (:func:`grader.ensemble.refit_if_due`) and, when the queue is sorted by an ensemble
        score, the labels not yet reviewed are re-read in the new order. True when it did."""
        from grader.ensemble import refit_if_due

        gt = _ctl(ctx, "gt_field")
        try:
            rep = refit_if_due(_ds(ctx), gt)
        except Exception as e:  # noqa: BLE001 - the review goes on in the old order
            _debug(f"re-ranking failed: {e!r}")
            return False
        if rep is None:
            return False
        n = sum((rep.info.get("reviews") or {}).get("fixed", {}).values()) + \
            (rep.info.get("reviews") or {}).get("accepted", 0)
        ctx.ops.notify(f"Queue re-ranked: the ensemble learned from {n} review decisions",
                       variant="info")
        if not str(_ctl(ctx, "score") or "").startswith("ensemble_"):
            return False
        self._load_page(ctx, 0)
        return True

    def _grid_changed(self, ctx) -> None:
        """A fix changed labels the App's grid shows: re-read them now in list mode; in review
        mode once, on leaving it. (Re-drawing the grid costs the App ~0.4 s per fix on 2 busy
        cores, which doubled the key -> next label time: 297 -> 689 ms median.)"""
        if ctx.panel.state.mode == "review":
            _put(ctx, "grid_stale", True)
        else:
            self._reload_grid(ctx)

    def _reload_grid(self, ctx) -> None:
        """Have the App re-read its samples, so the grid and the modal draw the label as it is
        now (a changed box, a deleted label). The App's page only: the panel's queue stays a
        snapshot, and the sidebar filters and the view stay as they are."""
        ctx.ops.reload_samples()

    def _draft(self, ctx, q: dict | None) -> list[float] | None:
        """The box being edited for the label shown (None: not edited)."""
        d = ctx.panel.state.draft or {}
        return d.get("box") if q is not None and d.get("label_id") == q["label_id"] else None

    def _nudge(self, ctx, step: tuple[int, int, int, int]) -> None:
        """Move the shown label's box (or one of its edges) by one step, as a draft: nothing is
        written until ``e`` saves it (one fix, undone by ``u``)."""
        _, q = self._current(ctx)
        if q is None or q["is_candidate"] or q.get("decided") or not q.get("box"):
            return
        x, y, w, h = self._draft(ctx, q) or q["box"]
        dx, dy, dw, dh = (v * NUDGE for v in step)
        w, h = max(NUDGE, w + dw), max(NUDGE, h + dh)
        x = min(max(0.0, x + dx), 1.0 - w)
        y = min(max(0.0, y + dy), 1.0 - h)
        w, h = min(w, 1.0 - x), min(h, 1.0 - y)
        _put(ctx, "draft", {"label_id": q["label_id"], "box": [x, y, w, h]})
        self._show(ctx, int(ctx.panel.state.cursor or 0))

    def _save_draft(self, ctx) -> None:
        _, q = self._current(ctx)
        box = self._draft(ctx, q)
        if box is None:
            ctx.ops.notify("No edited box: move it with the arrow keys first", variant="warning")
            return
        _put(ctx, "draft", None)
        self._fix(ctx, "replace_box", box=box)

    def _mark(self, ctx, decided: dict, rec) -> None:
        page = ctx.panel.state.page or {}
        items = page.get("items", [])
        for i, q in enumerate(items):
            if q["label_id"] in decided:
                _put(ctx, f"page.items.{i}.decided", decided[q["label_id"]])
                _put(ctx, f"page.items.{i}.fix_id", rec.fix_id)
        stack = list(ctx.panel.state.undo_stack or [])
        shown = [dict(q, decided=None) for q in items if q["label_id"] in decided]
        stack.append({"fix_id": rec.fix_id, "label_ids": list(decided),
                      "items": shown if len(shown) == 1 else []})
        _put(ctx, "undo_stack", stack[-50:])
        log = [{"fix_id": rec.fix_id, "summary": rec.summary()}] + list(ctx.panel.state.log or [])
        _put(ctx, "log", log[:5])
        # no texts pushed here: in review mode the caller shows the next label, whose picture
        # and texts go out together (each panel data write is one more App operation)

    def _undo(self, ctx) -> None:
        stack = list(ctx.panel.state.undo_stack or [])
        fix_id = stack[-1]["fix_id"] if stack else None
        try:
            rec = review.undo_fix(_ds(ctx), fix_id, user=ctx_user(ctx))
        except (LookupError, ValueError, review.FixConflictError) as e:
            ctx.ops.notify(f"Undo failed: {e}", variant="error")
            return
        undone = set(stack[-1]["label_ids"]) if stack else {rec.label_id}
        _put(ctx, "undo_stack", stack[:-1])
        items = (ctx.panel.state.page or {}).get("items", [])
        back = None
        for i, q in enumerate(items):
            if q["label_id"] in undone and q.get("decided"):
                _put(ctx, f"page.items.{i}.decided", None)
                back = i if back is None else back
        if back is None and stack and stack[-1].get("items") and ctx.panel.state.mode == "review":
            # the label was on an earlier page: bring it back in front of the current item
            k = int(ctx.panel.state.cursor or 0)
            items = list(items)
            items[k:k] = stack[-1]["items"]
            _put(ctx, "page.items", items)
            back = k
        log = [{"fix_id": rec.fix_id, "summary": "undone: " + rec.summary()}]
        _put(ctx, "log", (log + list(ctx.panel.state.log or []))[:5])
        ctx.ops.notify(f"Undone: {rec.summary()}", variant="success")
        if back is not None and ctx.panel.state.mode == "review":
            self._show(ctx, back)
        else:
            self._push_texts(ctx)
        self._grid_changed(ctx)

    def _step(self, ctx, delta: int, undecided_only: bool = False) -> None:
        items = (ctx.panel.state.page or {}).get("items", [])
        k = int(ctx.panel.state.cursor or 0) + delta
        while undecided_only and 0 <= k < len(items) and items[k].get("decided"):
            k += delta
        if k >= len(items):
            page = ctx.panel.state.page or {}
            undecided = sum(1 for q in items if not q.get("decided"))
            if page.get("skip", 0) + undecided < page.get("total", 0):
                self._next_page(ctx)  # the queue goes on: its next page, from the database
                items = (ctx.panel.state.page or {}).get("items", [])
                k = 0
            else:
                k = len(items) - 1
        self._show(ctx, max(0, min(k, len(items) - 1)))

    def _show(self, ctx, k: int) -> None:
        _put(ctx, "cursor", k)
        _, q = self._current(ctx)
        if q is not None:
            draft = self._draft(ctx, q)
            shown = dict(q, box=draft, suggested_box=q["box"], suggested_label=None,
                         suggested_iou=None) if draft else q  # edited: the old box in green
            # the picture and the texts in one panel data write: the App runs each write as its
            # own operation with its own re-render, and the next label shows after the last
            ctx.panel.set_data({"review_body.review_img": self._preview(shown, LARGE),
                                **self._texts(ctx)})
            self._prefetch(ctx, k)

    def _prefetch(self, ctx, k: int) -> None:
        """Render the next labels' large previews in the background (preview's cache keeps
        them), so the key that moves on only sends a cached picture."""
        items = (ctx.panel.state.page or {}).get("items", [])
        ahead = [q for q in items[k + 1:k + 1 + PREFETCH] if not q.get("decided")]
        if ahead:
            def work() -> None:
                time.sleep(PREFETCH_DELAY_S)  # after this key's reply is out: no GIL contest
                for q in ahead:
                    self._preview(q, LARGE)

            threading.Thread(target=work, daemon=True).start()

    def _push_texts(self, ctx) -> None:
        """The review mode's texts also go out as panel data, which the App's delayed
        state writes cannot roll back (markdown shows its data before its default)."""
        data = self._texts(ctx)
        if data:
            ctx.panel.set_data(data)

    def _texts(self, ctx) -> dict:
        """The review mode's position and side texts as panel data ({} outside review mode)."""
        _, q = self._current(ctx)
        if ctx.panel.state.mode != "review" or q is None:
            return {}
        return {"review_head.review_pos": self._pos_text(ctx, q),
                "review_body.review_side.review_txt": self._side_text(q, self._draft(ctx, q))}

    # ------------------------------------------------------------ data

    def _view(self, ctx):
        view = ctx.view if ctx.view is not None else ctx.dataset
        if ctx.panel.state.get("surface") == "modal" and ctx.current_sample:
            view = view.select(ctx.current_sample)  # the modal's panel: this sample's labels
        return view

    def _filters(self, ctx) -> dict | None:
        gt, score = _ctl(ctx, "gt_field"), _ctl(ctx, "score")
        if not gt or not score:
            return None
        issue = _ctl(ctx, "issue") or ANY_SUSPECT
        score = queue_score(score, issue, ctx.panel.state.available or [])
        cls = _ctl(ctx, "cls")
        thr = _ctl(ctx, "threshold")
        thr = float(thr) if isinstance(thr, (int, float)) and not isinstance(thr, bool) else None
        return dict(gt_field=gt, score=score,
                    issues=None if issue in (ANY_SUSPECT, ALL_SCORED) else [issue],
                    classes=[cls] if cls and cls != ALL_CLASSES else None, threshold=thr,
                    suspects_only=issue != ALL_SCORED)

    def _preview(self, q: dict, size: int) -> str:
        item = review.QueueItem(**{k: q.get(k) for k in (
            "sample_id", "label_id", "field", "label", "filepath", "score", "value",
            "suspicion", "is_candidate", "box", "suggested_label", "suggested_box",
            "suggested_iou")})
        return preview.item_preview(item, size=size)

    def _load_page(self, ctx, skip: int, page=None) -> None:
        f = self._filters(ctx)
        if f is None:
            _put(ctx, "page", {"items": [], "total": 0, "skip": 0})
            return
        view = self._view(ctx)
        if page is None:
            page = review.review_page(view, skip=skip, limit=PAGE_SIZE, **f,
                                      available=self._avail_specs(ctx))
        review.add_suggestions(view, page.items, pred_field=_pred_field(ctx),
                               gt_field=f["gt_field"])
        items = []
        for it in page.items:
            d = {k: getattr(it, k) for k in (
                "sample_id", "label_id", "field", "label", "filepath", "score", "value",
                "suspicion", "is_candidate", "box", "suggested_label", "suggested_box",
                "suggested_iou", "box_warning", "class_hints", "pred_id", "state", "rank",
                "swap_value", "delete_hint")}
            d["issues"] = [_issue_name(t) for t in it.issues]
            d["file"] = os.path.basename(it.filepath or "")
            d["decided"] = None
            items.append(d)
        _put(ctx, "page", {"items": items, "total": page.total, "skip": page.skip})
        _put(ctx, "cursor", 0)
        # images travel as panel data (not state, which the App sends back on every event),
        # at the component's path inside its row
        ctx.panel.set_data({f"row_{k}.thumb_{k}": self._preview(q, THUMB)
                            for k, q in enumerate(items)})
        if ctx.panel.state.mode == "review" and items:
            self._show(ctx, 0)

    def _avail_specs(self, ctx):
        return [get_spec(a) for a in (ctx.panel.state.available or [])]

    def _refresh(self, ctx):
        if ctx.panel.state.get("surface") is None:
            _put(ctx, "surface", "modal" if getattr(ctx, "current_sample", None) else "grid")
        _put(ctx, "view_key", _view_key(ctx))
        view = self._view(ctx)
        gt = _ctl(ctx, "gt_field")
        if not gt:
            return
        avail = review.available_scores(view, gt)
        _put(ctx, "available", [s.attr for s in avail])
        if _ctl(ctx, "score") not in ctx.panel.state.available:
            _set_ctl(ctx, "score", default_score(ctx.panel.state.available,
                                                 _stored_score(ctx, gt)))
        _put(ctx, "all_classes", _dataset_classes(ctx, gt))
        f = self._filters(ctx)
        if f is None:
            _put(ctx, "counts", review.issue_counts(view, gt))
            _put(ctx, "hist", None)
            return self._load_page(ctx, 0)
        # counts, histogram and the first page in one pass over the labels
        snap = review.review_snapshot(view, skip=0, limit=PAGE_SIZE, bins=20, available=avail,
                                      **{k: v for k, v in f.items()})
        _put(ctx, "counts", snap["counts"])
        _put(ctx, "hist", snap["hist"])
        self._load_page(ctx, 0, page=snap["page"])

    # ------------------------------------------------------------ render

    def render(self, ctx):
        _restore_session(ctx)  # the App's panel state does not hold the review session
        panel = types.Object()
        st = ctx.panel.state
        gt = _ctl(ctx, "gt_field")
        if not gt:
            panel.md("No Detections field on this dataset.", name="empty")
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        if st.mode == "review":
            self._render_review(ctx, panel)
        else:
            self._render_list(ctx, panel)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=1,
                                                         align_x="left", align_y="top"))

    def _render_controls(self, ctx, panel) -> None:
        st = ctx.panel.state
        counts = st.counts or {}
        issue_of = {s.tag: f"{s.issue} ({s.judge})" for s in SCORES if s.tag}
        parts = [f"**{issue_of.get(t, t)}**: {n}" for t, n in sorted(counts.items()) if n]
        where = "this sample" if st.get("surface") == "modal" else "the current view"
        panel.md(f"**Suspect labels in {where}** — " + (" · ".join(parts) or "none"),
                 name="counts_md")
        rows = [panel.h_stack("controls", align_x="left", align_y="bottom", gap=2),
                panel.h_stack("controls2", align_x="left", align_y="bottom", gap=2)]

        def control(name: str, kind: str, label: str, value, choices=(), on_change=None):
            # the plugin's own inputs (panels/js/review_keys.js): no App state writes; three
            # to a row so they fit a narrow split
            row = rows[0] if name in ("gt_field", "score", "issue") else rows[1]
            row.view(name, types.View(
                component="LabelGraderControl", composite_view=True, kind=kind, name=name,
                label=label, value=value, choices=[list(c) for c in choices],
                on_change=on_change or self.on_filter_change))

        control("gt_field", "select", "Field", _ctl(ctx, "gt_field"),
                [(f, f) for f in _gt_fields(ctx)])
        control("score", "select", "Sort by score", _ctl(ctx, "score"),
                [(a, a) for a in st.available or []])
        issues = ([(ANY_SUSPECT, "any suspect")]
                  + [(t, t) for t in sorted(t for t, n in counts.items() if n)]
                  + [(ALL_SCORED, "all scored labels")])
        control("issue", "select", "Issue", _ctl(ctx, "issue") or ANY_SUSPECT, issues)
        control("cls", "select", "Class", _ctl(ctx, "cls") or ALL_CLASSES,
                [(ALL_CLASSES, "all classes")] + [(c, c) for c in st.all_classes or []])
        score = _ctl(ctx, "score")
        side = ""
        if score:
            side = "≥" if get_spec(score).higher_is_suspect else "≤"
        control("threshold", "number", f"Threshold (suspect: score {side} it; blank: none)",
                _ctl(ctx, "threshold"))
        control("log_y", "checkbox", "log y", bool(_ctl(ctx, "log_y")), on_change=self.on_log_y)

    def _render_hist(self, ctx, panel) -> None:
        plot = self._hist_plot(ctx)
        if plot is None:
            return
        panel.plot("histogram", data=plot["data"], layout=plot["layout"],
                   config={"displayModeBar": False, "responsive": True}, height=32)

    def _hist_plot(self, ctx) -> dict | None:
        """The histogram's plotly data and layout (None: no scores to draw)."""
        hist = ctx.panel.state.hist or {}
        if not hist.get("counts"):
            return None
        thr = _ctl(ctx, "threshold")
        edges = hist["edges"]
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        high = hist.get("higher_is_suspect")
        shapes, notes = [], []
        if isinstance(thr, (int, float)) and not isinstance(thr, bool):
            x0, x1 = (thr, edges[-1]) if high else (edges[0], thr)
            shapes = [{"type": "rect", "x0": x0, "x1": x1, "y0": 0, "y1": 1, "yref": "paper",
                       "fillcolor": "rgba(255,0,0,0.08)", "line": {"width": 0}},
                      {"type": "line", "x0": thr, "x1": thr, "y0": 0, "y1": 1, "yref": "paper",
                       "line": {"color": "red", "dash": "dash"}}]
            notes = [{"x": thr, "y": 1, "yref": "paper", "showarrow": False,
                      "xanchor": "left" if high else "right",
                      "text": ("suspect →" if high else "← suspect") + f" ({'≥' if high else '≤'} {thr:g})",
                      "font": {"color": "red"}}]
        log_y = bool(_ctl(ctx, "log_y"))
        filt = []
        if _ctl(ctx, "issue") not in (None, ANY_SUSPECT, ALL_SCORED):
            filt.append(_ctl(ctx, "issue"))
        if _ctl(ctx, "cls") not in (None, ALL_CLASSES):
            filt.append(f"class {_ctl(ctx, 'cls')}")
        title = (f"{hist['score']}: {hist['n']} labels" + (f" ({', '.join(filt)})" if filt else "")
                 + f" — {'high' if high else 'low'} = suspect")
        return {"data": [{"type": "bar", "x": centers, "y": hist["counts"],
                          "name": hist["score"], "marker": {"color": "#6c8ebf"}}],
                "layout": {"title": {"text": title, "font": {"size": 13}}, "height": 230,
                           "width": 540, "margin": {"t": 36, "b": 40, "l": 50, "r": 10},
                           "bargap": 0.05,
                           "xaxis": {"title": {"text": f"{hist['score']} (raw score)"}},
                           "yaxis": {"title": {"text": "labels"},
                                     "type": "log" if log_y else "linear"},
                           "shapes": shapes, "annotations": notes}}

    def _item_text(self, q: dict, k_label: str) -> str:
        value = "—" if q["value"] is None else f"{q['value']:.3f}"
        kind = "candidate " if q["is_candidate"] else ""
        txt = f"**#{q['rank'] + 1}** `{value}` {kind}**{q['label']}**"
        if q.get("suggested_label"):
            txt += f" → {q['suggested_label']}?"
        if q.get("suggested_iou") is not None:
            txt += f" · suggested box IoU {q['suggested_iou']:.2f}"
        txt += f" · {q['file']} · {', '.join(q['issues'])}"
        if q.get("box_warning"):
            txt += f"  \n⚠ {q['box_warning']}"
        if q.get("delete_hint"):
            txt += f"  \n✗ {q['delete_hint']}: delete?"
        if q.get("decided"):
            txt = f"~~{txt}~~ ✔ **{q['decided']}**"
        return txt

    def _render_list(self, ctx, panel) -> None:
        # laid out for a narrow split (the panel is ~570 px wide at 1440x900): short rows,
        # the buttons under each label's text, the main actions first
        st = ctx.panel.state
        page = st.page or {}
        items, total, skip = page.get("items", []), page.get("total", 0), page.get("skip", 0)
        self._render_controls(ctx, panel)
        self._render_actions(ctx, panel, bool(items))
        self._render_hist(ctx, panel)
        if not st.available:
            panel.md(f"No judge scores on `{_ctl(ctx, 'gt_field')}` in this view yet: run a judge "
                     "first (e.g. `run_cleanlab`), then **Refresh**.", name="no_scores")
        nav = panel.h_stack("queue_nav", align_x="left", align_y="center", gap=1)
        shown = f"{skip + 1}–{skip + len(items)}" if items else "0"
        nav.md(f"**Queue: {shown} of {total}**, most suspect first — a snapshot until Refresh",
               name="queue_title")
        nav.btn("prev_page", label="◀ Page", on_click=self.prev_page, disabled=skip == 0)
        nav.btn("next_page", label="Page ▶", on_click=self.next_page,
                disabled=skip + len(items) >= total)
        for k, q in enumerate(items):
            row = panel.h_stack(f"row_{k}", align_x="left", align_y="top", gap=1)
            row.img(f"thumb_{k}", height=f"{THUMB // 2 + 10}px", width=f"{THUMB // 2}px",
                    alt_text=q["label"] or "",
                    on_click=self.enter_review, params={"index": k})
            col = row.v_stack(f"row_{k}_col", align_x="left", gap=0)
            col.md(self._item_text(q, str(k)), name=f"row_{k}_txt")
            if q.get("decided"):
                continue
            ids = {"index": k}
            bar = col.h_stack(f"row_{k}_bar", align_x="left", gap=1)
            if q["is_candidate"]:
                bar.btn(f"row_{k}_adopt", label="Adopt", on_click=self.act,
                        params={**ids, "kind": "adopt"}, variant="contained")
                bar.btn(f"row_{k}_reject", label="Delete", on_click=self.act,
                        params={**ids, "kind": "delete"})
                continue
            bar.btn(f"row_{k}_accept", label="Accept", on_click=self.act,
                    params={**ids, "kind": "accept"}, variant="contained")
            if q.get("suggested_label"):
                bar.btn(f"row_{k}_swap", label=f"Relabel {q['suggested_label']}",
                        on_click=self.act,
                        params={**ids, "kind": "relabel", "new_label": q["suggested_label"]})
            if q.get("pred_id"):
                bar.btn(f"row_{k}_box", label="Use box" + (" ⚠" if q.get("box_warning") else ""),
                        on_click=self.act, params={**ids, "kind": "replace_box"})
            bar2 = col.h_stack(f"row_{k}_bar2", align_x="left", gap=1)
            bar2.btn(f"row_{k}_delete", label="Delete", on_click=self.act,
                     params={**ids, "kind": "delete"},
                     variant="contained" if q.get("delete_hint") else None)
            bar2.btn(f"row_{k}_open", label="Open", on_click=self.open_item,
                     params={k2: q[k2] for k2 in ("sample_id", "label_id", "field")},
                     variant="outlined")
        log = st.log or []
        if log:
            panel.md("**Recent fixes**\n\n" + "\n".join(f"- {r['summary']}" for r in log),
                     name="log_md")

    def _render_actions(self, ctx, panel, has_items: bool) -> None:
        st = ctx.panel.state
        actions = panel.h_stack("actions", align_x="left", gap=1)
        actions.btn("review_mode", label="Review mode (keyboard)", on_click=self.enter_review,
                    variant="contained", disabled=not has_items)
        actions.btn("accept_all", label="Accept all on this page", on_click=self.accept_all)
        actions.btn("refresh", label="Refresh", on_click=self.refresh)
        more = panel.h_stack("actions2", align_x="left", gap=1)
        more.btn("show_queue", label="Show queue in grid", on_click=self.show_queue)
        more.btn("save_views", label="Save review views", on_click=self.save_views)
        stack = st.undo_stack or []
        last = next((r["summary"] for r in (st.log or []) if stack and r["fix_id"] == stack[-1]["fix_id"]), None)
        panel.h_stack("actions3", align_x="left").btn(
            "undo_last", label=f"Undo: {last}" if last else "Undo last fix", on_click=self.undo,
            variant="outlined")

    def _pos_text(self, ctx, q: dict) -> str:
        page = ctx.panel.state.page or {}
        items, total = page.get("items", []), page.get("total", 0)
        n_done = sum(1 for x in items if x.get("decided"))
        return (f"**Label {q['rank'] + 1} of {total}** ({n_done} decided on this page) — "
                f"`{q['label_id']}`")

    def _side_text(self, q: dict, draft: list[float] | None = None) -> str:
        if draft:
            return (self._item_text(q, "cur") + "\n\n**Box edited, not saved**: "
                    f"[{', '.join(f'{v:.3f}' for v in draft)}] — **e** save · **r** reset  \n"
                    "magenta: the edited box · green: the box as labelled")
        return (self._item_text(q, "cur") + "\n\n"
                "magenta: the label's box · green: the suggested box / candidate · "
                "arrows: edit the box")

    def _render_review(self, ctx, panel) -> None:
        st = ctx.panel.state
        k, q = self._current(ctx)
        head = panel.h_stack("review_head", align_x="left", align_y="center", gap=1)
        head.btn("leave_review", label="◀ Back to the list", on_click=self.leave_review,
                 variant="outlined")
        if q is None:
            head.md("**Nothing to review** with these filters.", name="review_empty")
            return
        head.md(self._pos_text(ctx, q), name="review_pos")
        panel.view("hotkeys", types.View(component="LabelGraderKeys", composite_view=True,
                                          on_key=self.on_hotkey, help=KEY_HELP_SHORT))
        # the buttons above the picture, in short rows: all on screen in a ~570 px wide split
        # at 1440x900 (issue 23.7)
        acts = panel.v_stack("review_actions", align_x="left", gap=0)
        bar = acts.h_stack("review_bar", align_x="left", gap=1)
        bar2 = acts.h_stack("review_bar2", align_x="left", gap=1)
        nav = acts.h_stack("review_nav", align_x="left", gap=1)
        body = panel.v_stack("review_body", align_x="left", align_y="top", gap=1)
        body.img("review_img", height=f"{LARGE + preview.CAPTION_H}px", width=f"{LARGE}px",
                 alt_text=q["label"] or "")
        side = body.v_stack("review_side", align_x="left", gap=1)
        side.md(self._side_text(q, self._draft(ctx, q)), name="review_txt")
        if not q.get("decided"):
            if q["is_candidate"]:
                bar.btn("r_adopt", label="Adopt [c]", on_click=self.act,
                        params={"kind": "adopt"}, variant="contained")
            else:
                bar.btn("r_accept", label="Accept [a]", on_click=self.act,
                        params={"kind": "accept"}, variant="contained")
                if q.get("class_hints"):
                    bar.btn("r_swap", label=f"Relabel {q['class_hints'][0]} [s]",
                            on_click=self.act,
                            params={"kind": "relabel", "new_label": q["class_hints"][0]})
                if q.get("pred_id"):
                    bar2.btn("r_box", label="Use box [b]" + (" ⚠" if q.get("box_warning") else ""),
                             on_click=self.act, params={"kind": "replace_box"})
            if q.get("delete_hint") and not q["is_candidate"]:
                bar2.btn("r_delete", label="Delete [d] — likely no object", on_click=self.act,
                         params={"kind": "delete"}, variant="contained")
            else:
                bar2.btn("r_delete", label="Delete [d]", on_click=self.act,
                         params={"kind": "delete"})
        nav.btn("r_undo", label="Undo [u]", on_click=self.act, params={"kind": "undo"})
        nav.btn("r_prev", label="◀ Prev [p]", on_click=self.act, params={"kind": "prev"})
        nav.btn("r_next", label="Next [n] ▶", on_click=self.act, params={"kind": "next"})
        if not q["is_candidate"] and not q.get("decided"):
            choices = self._class_choices(ctx, q)
            rel = side.v_stack("review_ctl", align_x="left", gap=1)
            # a searchable picker (panels/js/review_keys.js) that names the label it is for;
            # the App's dropdown re-sent its value onto the next label (issue 23)
            rel.view("relabel_to", types.View(
                component="LabelGraderClassPicker", composite_view=True,
                on_pick=self.on_relabel_pick, label_id=q["label_id"], choices=choices,
                current=q["label"],
                label="Relabel to (suggestions first)"))
            keys = " · ".join(f"{i + 1} {c}" for i, c in enumerate(choices[:NUM_CLASS_KEYS]))
            rel.md(f"Keys: {keys}", name="class_keys")
        log = st.log or []
        if log:
            side.md("**Recent fixes**\n\n" + "\n".join(f"- {r['summary']}" for r in log),
                    name="review_log")


PANELS = [LabelReviewPanel]
