"""Train, then evaluate: what `cxrkit train` and `cxrkit.train` do.

Training (`cxrkit.training.fit`) and evaluation (`cxrkit.evaluation`) know nothing of each
other; this module chains them.
"""

from __future__ import annotations

from pathlib import Path


def train_and_evaluate(config=None, *, use_test: bool = True, **options) -> Path:
    """`cxrkit.training.fit.train` with the same arguments, then, when `use_test` is set, the
    run's own test evaluation (metrics, operating points, report) on the process that wrote the
    run folder (rank 0 under DDP). Returns the run folder."""
    from cxrkit.training import fit

    run_dir = fit.train(config, use_test=use_test, **options)
    if use_test and fit.is_main_process():
        from cxrkit.evaluation import evaluate_run

        evaluate_run(run_dir, overwrite=True)
    return run_dir
