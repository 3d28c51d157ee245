"""The "Label review" panel: counts, a sorted/filtered queue of suspect labels, a score histogram,
fixes with undo, and saved views. Every action calls a ``grader.review`` function.

The panel edits labels through its own fix log and never touches the App's Annotate tab
state; after each fix it asks the App to reload so both show the same data.
"""
from __future__ import annotations

import os

import fiftyone.operators as foo
import fiftyone.operators.types as types

from grader import review
from grader.scores import SCORES

from ..operators.review import ctx_user

PLUGIN = "@label-grader/label-grader"
ANY_SUSPECT = "__any__"
ALL_SCORED = "__all__"
ALL_CLASSES = "__all__"
QUEUE_ROWS = 15


def _ctl(ctx, name: str):
    """A control's value: inputs inside the ``controls`` stack live at ``controls.<name>``."""
    return ctx.panel.state.get(f"controls.{name}")


def _set_ctl(ctx, name: str, value) -> None:
    ctx.panel.state.set(f"controls.{name}", value)


def _gt_fields(ctx) -> list[str]:
    import fiftyone as fo

    if ctx.dataset is None:
        return []
    fields = sorted(ctx.dataset.get_field_schema(embedded_doc_type=fo.Detections))
    return [f for f in fields if not f.endswith("_overlooked")]


class LabelReviewPanel(foo.Panel):
    @property
    def config(self):
        return foo.PanelConfig(
            name="label_review",
            label="Label review",
            icon="fact_check",
            help_markdown="Review labels flagged by label-grader's judges: sort, filter, fix, undo.",
            surfaces="grid modal",
        )

    # ------------------------------------------------------------ lifecycle / events

    def on_load(self, ctx):
        fields = _gt_fields(ctx)
        if _ctl(ctx, "gt_field") not in fields:
            default = "ground_truth" if "ground_truth" in fields else (fields[0] if fields else None)
            _set_ctl(ctx, "gt_field", default)
        self._refresh(ctx)

    def on_change_view(self, ctx):
        self._refresh(ctx)

    def on_change_dataset(self, ctx):
        _set_ctl(ctx, "gt_field", None)
        self.on_load(ctx)

    def on_filter_change(self, ctx):
        # the App may call this before its own state patch lands: take the new value from params
        path = str(ctx.params.get("path") or "")
        if path and "value" in ctx.params:
            _set_ctl(ctx, path.split(".")[-1], ctx.params["value"])
        self._refresh(ctx)

    def refresh(self, ctx):
        self._refresh(ctx)

    def open_item(self, ctx):
        p = ctx.params
        ctx.ops.open_sample(id=p["sample_id"])
        ctx.ops.set_selected_labels([{"label_id": p["label_id"], "sample_id": p["sample_id"],
                                      "field": p["field"]}])

    def fix_item(self, ctx):
        p = ctx.params
        kind = p["kind"]
        try:
            if kind == "adopt":
                rec = review.adopt_candidate(ctx.dataset, p["sample_id"], p["label_id"],
                                             gt_field=_ctl(ctx, "gt_field"), user=ctx_user(ctx))
            else:
                kw = {"new_label": p.get("new_label")} if kind == "relabel" else {}
                rec = review.apply_fix(ctx.dataset, kind, p["sample_id"], p["label_id"],
                                       p["field"], user=ctx_user(ctx), **kw)
        except (KeyError, ValueError) as e:
            ctx.ops.notify(f"Fix failed: {e}", variant="error")
            return
        ctx.ops.notify(f"Fixed: {rec.summary()}", variant="success")
        ctx.ops.reload_dataset()
        self._refresh(ctx)

    def relabel_prompt(self, ctx):
        p = ctx.params
        ctx.prompt(f"{PLUGIN}/apply_fix", params={
            "kind": "relabel", "sample_id": p["sample_id"], "label_id": p["label_id"],
            "field": p["field"], "new_label": p.get("new_label") or ""},
            on_success=self.refresh)

    def undo(self, ctx):
        try:
            rec = review.undo_fix(ctx.dataset, ctx.params.get("fix_id") or None, user=ctx_user(ctx))
        except (LookupError, ValueError, review.FixConflictError) as e:
            ctx.ops.notify(f"Undo failed: {e}", variant="error")
            return
        ctx.ops.notify(f"Undone: {rec.summary()}", variant="success")
        ctx.ops.reload_dataset()
        self._refresh(ctx)

    def accept_all(self, ctx):
        ids = [q["label_id"] for q in (ctx.panel.state.queue or []) if not q["is_candidate"]]
        if not ids:
            ctx.ops.notify("No labels in the queue to accept", variant="warning")
            return
        rec = review.accept_labels(ctx.dataset, _ctl(ctx, "gt_field"), label_ids=ids,
                                   user=ctx_user(ctx))
        ctx.ops.notify(rec.summary() if rec else "nothing to accept", variant="success")
        ctx.ops.reload_dataset()
        self._refresh(ctx)

    def show_queue(self, ctx):
        items = self._queue(ctx, limit=None)
        ctx.ops.set_view(review.queue_view(self._view(ctx), items))

    def save_views(self, ctx):
        names = review.save_review_views(ctx.dataset, _ctl(ctx, "gt_field"))
        ctx.ops.notify(f"Saved views: {', '.join(names)}", variant="success")
        ctx.ops.reload_dataset()

    # ------------------------------------------------------------ data

    def _view(self, ctx):
        return ctx.view if ctx.view is not None else ctx.dataset

    def _queue(self, ctx, limit=QUEUE_ROWS):
        gt, score = _ctl(ctx, "gt_field"), _ctl(ctx, "score")
        if not gt or not score:
            return []
        issue = _ctl(ctx, "issue") or ANY_SUSPECT
        cls = _ctl(ctx, "cls")
        cls = cls if cls and cls != ALL_CLASSES else None
        thr = _ctl(ctx, "threshold")
        thr = float(thr) if isinstance(thr, (int, float)) and not isinstance(thr, bool) else None
        return review.review_queue(
            self._view(ctx), gt, score=score,
            issues=None if issue in (ANY_SUSPECT, ALL_SCORED) else [issue],
            classes=[cls] if cls else None, threshold=thr,
            suspects_only=issue != ALL_SCORED, limit=limit)

    def _refresh(self, ctx):
        view = self._view(ctx)
        gt = _ctl(ctx, "gt_field")
        if not gt:
            return
        avail = [s.attr for s in review.available_scores(view, gt)]
        ctx.panel.state.available = avail
        if _ctl(ctx, "score") not in avail:
            _set_ctl(ctx, "score", avail[0] if avail else None)
        score = _ctl(ctx, "score")
        ctx.panel.state.counts = review.issue_counts(view, gt)
        ctx.panel.state.classes = sorted(x for x in view.distinct(f"{gt}.detections.label") if x)
        items = self._queue(ctx)
        ctx.panel.state.queue = [{
            "sample_id": it.sample_id, "label_id": it.label_id, "field": it.field,
            "label": it.label, "value": it.value, "suggested": it.suggested_label,
            "pred_id": it.pred_id, "is_candidate": it.is_candidate, "issues": it.issues,
            "file": os.path.basename(it.filepath or ""),
        } for it in items]
        ctx.panel.state.hist = review.score_histogram(view, score, gt, bins=20) if score else None
        ctx.panel.state.log = [
            {"fix_id": r.fix_id, "summary": r.summary(), "undone": r.undone}
            for r in review.fix_log(ctx.dataset, limit=5)]

    # ------------------------------------------------------------ render

    def render(self, ctx):
        panel = types.Object()
        st = ctx.panel.state
        gt, score, thr = _ctl(ctx, "gt_field"), _ctl(ctx, "score"), _ctl(ctx, "threshold")
        if not gt:
            panel.md("No Detections field on this dataset.", name="empty")
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        counts = st.counts or {}
        issue_of = {s.tag: f"{s.issue} ({s.judge})" for s in SCORES if s.tag}
        parts = [f"**{issue_of.get(t, t)}**: {n}" for t, n in sorted(counts.items()) if n]
        panel.md("**Suspect labels in the current view** — " + (" · ".join(parts) or "none"),
                 name="counts_md")

        controls = panel.h_stack("controls", align_x="left", gap=2)
        fdd = types.Dropdown(label="Field")
        for f in _gt_fields(ctx):
            fdd.add_choice(f, label=f)
        controls.enum("gt_field", fdd.values(), default=gt, view=fdd,
                      on_change=self.on_filter_change)
        sdd = types.Dropdown(label="Sort by score")
        for a in st.available or []:
            sdd.add_choice(a, label=a)
        controls.enum("score", sdd.values(), default=score, view=sdd,
                      on_change=self.on_filter_change)
        idd = types.Dropdown(label="Issue")
        idd.add_choice(ANY_SUSPECT, label="any suspect")
        for t in sorted(t for t, n in counts.items() if n):
            idd.add_choice(t, label=t)
        idd.add_choice(ALL_SCORED, label="all scored labels")
        controls.enum("issue", idd.values(), default=_ctl(ctx, "issue") or ANY_SUSPECT, view=idd,
                      on_change=self.on_filter_change)
        cdd = types.Dropdown(label="Class")
        cdd.add_choice(ALL_CLASSES, label="all classes")
        for c in st.classes or []:
            cdd.add_choice(c, label=c)
        controls.enum("cls", cdd.values(), default=_ctl(ctx, "cls") or ALL_CLASSES, view=cdd,
                      on_change=self.on_filter_change)
        controls.float("threshold", label="Threshold", required=False,
                       description="raw score cut-off (blank: none)",
                       on_change=self.on_filter_change)

        hist = st.hist or {}
        if hist.get("counts"):
            edges = hist["edges"]
            centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
            shapes = []
            if isinstance(thr, (int, float)) and not isinstance(thr, bool):
                shapes = [{"type": "line", "x0": thr, "x1": thr, "y0": 0,
                           "y1": 1, "yref": "paper", "line": {"color": "red", "dash": "dash"}}]
            direction = "high" if hist.get("higher_is_suspect") else "low"
            panel.plot("histogram", data=[{"type": "bar", "x": centers, "y": hist["counts"],
                                           "name": score}],
                       layout={"title": f"{score} ({direction} = suspect, n={hist['n']})",
                               "height": 220, "margin": {"t": 40, "b": 30, "l": 40, "r": 10},
                               "bargap": 0.05, "shapes": shapes},
                       config={"displayModeBar": False}, height=30)

        if not st.available:
            panel.md(f"No judge scores on `{gt}` in this view yet: run a judge first "
                     "(e.g. `run_cleanlab`), then **Refresh**.", name="no_scores")
        queue = st.queue or []
        panel.md(f"**Queue ({len(queue)} shown, most suspect first)**", name="queue_title")
        for k, q in enumerate(queue):
            row = panel.h_stack(f"row_{k}", align_x="left", align_y="center", gap=1)
            value = "—" if q["value"] is None else f"{q['value']:.3f}"
            hint = f" → {q['suggested']}?" if q.get("suggested") else ""
            kind = "candidate " if q["is_candidate"] else ""
            row.md(f"`{value}` {kind}**{q['label']}**{hint} · {q['file']} · "
                   f"{', '.join(i.split(':', 1)[-1] for i in q['issues'])}", name=f"row_{k}_txt")
            ids = {"sample_id": q["sample_id"], "label_id": q["label_id"], "field": q["field"]}
            row.btn(f"row_{k}_open", label="Open", on_click=self.open_item, params=ids,
                    variant="outlined")
            if q["is_candidate"]:
                row.btn(f"row_{k}_adopt", label="Adopt", on_click=self.fix_item,
                        params={**ids, "kind": "adopt"}, variant="contained")
                continue
            row.btn(f"row_{k}_accept", label="Accept", on_click=self.fix_item,
                    params={**ids, "kind": "accept"}, variant="contained")
            if q.get("suggested"):
                row.btn(f"row_{k}_swap", label=f"Relabel {q['suggested']}", on_click=self.fix_item,
                        params={**ids, "kind": "relabel", "new_label": q["suggested"]})
            row.btn(f"row_{k}_relabel", label="Relabel…", on_click=self.relabel_prompt,
                    params={**ids, "new_label": q.get("suggested") or ""})
            if q.get("pred_id"):
                row.btn(f"row_{k}_box", label="Use pred box", on_click=self.fix_item,
                        params={**ids, "kind": "replace_box"})
            row.btn(f"row_{k}_delete", label="Delete", on_click=self.fix_item,
                    params={**ids, "kind": "delete"})

        actions = panel.h_stack("actions", align_x="left", gap=1)
        actions.btn("undo_last", label="Undo last fix", on_click=self.undo, variant="outlined")
        actions.btn("accept_all", label="Accept all shown", on_click=self.accept_all)
        actions.btn("show_queue", label="Show queue in grid", on_click=self.show_queue)
        actions.btn("save_views", label="Save review views", on_click=self.save_views)
        actions.btn("refresh", label="Refresh", on_click=self.refresh)

        log = st.log or []
        if log:
            panel.md("**Recent fixes**\n\n" + "\n".join(f"- {r['summary']}" for r in log),
                     name="log_md")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=1,
                                                         align_x="left", align_y="top"))


PANELS = [LabelReviewPanel]
