"""Review suspect labels: the queue, fixes with exact undo, the fix log, and saved views.

Every action of the App's review panel is one of these functions, so curation scripts can do
the same thing::

    from grader import review
    items = review.review_queue(ds, score="cleanlab_swap", issues=["swap"])
    rec = review.relabel(ds, items[0].sample_id, items[0].label_id)  # suggested class
    review.undo_fix(ds, rec.fix_id)
    review.save_review_views(ds)
"""
from .fixes import (FIX_KINDS, REVIEWED_FIXED_TAG, REVIEWED_TAGS, FixConflictError,
                    accept_label, accept_labels, adopt_candidate, apply_fix, candidates_field,
                    delete_label, label_state, pending_fixes, recover_fixes, relabel,
                    replace_box, same_state, undo_fix, validate_box)
from .log import (LOG_COLLECTION, FixRecord, clear_fix_log, count_fixes, fix_log, get_fix,
                  record_to_json)
from .queue import (QueueItem, available_scores, issue_counts, queue_view, review_queue,
                    score_histogram)
from .queue import (QueuePage, add_suggestions, ensure_review_indexes, queue_filter_view,
                    review_page, review_snapshot)
from .views import review_views, save_review_views

__all__ = [
    "FIX_KINDS", "REVIEWED_FIXED_TAG", "REVIEWED_TAGS", "FixConflictError", "accept_label",
    "accept_labels", "adopt_candidate", "apply_fix", "candidates_field", "delete_label",
    "relabel", "replace_box", "undo_fix", "label_state", "pending_fixes", "recover_fixes",
    "same_state", "validate_box", "LOG_COLLECTION", "FixRecord", "clear_fix_log",
    "count_fixes", "fix_log", "get_fix", "record_to_json", "QueueItem", "available_scores",
    "issue_counts", "queue_view", "review_queue", "score_histogram", "review_views",
    "save_review_views", "QueuePage", "add_suggestions", "ensure_review_indexes",
    "queue_filter_view", "review_page", "review_snapshot",
]
