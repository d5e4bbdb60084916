"""Model merge: TIES-merging of a run's last checkpoints onto the freshly initialised adapter.

ties: the tensor math (`ties_merge`: standard TIES, or the authors' merge), torch only. files: a run's
last checkpoints (found by `recfound.run_layout`), checking adapter headers, writing the merged adapter
file (`merge_run`, `merge_adapter_files`); local paths and object-store URIs alike.
"""

from __future__ import annotations

from recfound.merge.files import DEFAULT_LAST, MergePlan, merge_adapter_files, merge_run, plan_merge, plan_run
from recfound.merge.ties import METHODS, changed_fraction, ties_merge, ties_merge_tensor

__all__ = ["DEFAULT_LAST", "METHODS", "MergePlan", "changed_fraction", "merge_adapter_files", "merge_run",
           "plan_merge", "plan_run", "ties_merge", "ties_merge_tensor"]
