"""Settings shared by every test module."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    # The test models are tiny: extra threads only spin against each other and other processes on a 2-core machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# Whole files that start processes, train, or run the full example: marked here by file so that `make test-fast`
# (-m "not slow and not notebooks and not paper") is the inner loop, and `make test` still runs everything.
FILE_MARKERS = {
    "test_notebooks.py": "notebooks",  # every notebook under a Jupyter kernel
    "test_paper.py": "paper",  # the paper example as a sweep, and pdflatex
    **dict.fromkeys(("test_signals.py", "test_sweep.py", "test_interruption.py", "test_model_names.py", "test_stage_naming.py",
                     "test_pipelines.py", "test_sweep_outcomes.py", "test_small_depths.py", "test_study_pretraining.py",
                     "test_niah_data.py", "test_hostile_inputs.py", "test_steps.py"), "slow"),
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        marker = FILE_MARKERS.get(item.path.name)
        if marker:
            item.add_marker(getattr(pytest.mark, marker))
