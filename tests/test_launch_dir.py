"""Relative paths in a run's config are read from the directory `slmbench` is started in (the
user's shell), not from where the code is installed: a model kept by one run and data files beside
the user, named relatively, from a directory that is not the repository."""
from __future__ import annotations

import json
import re

from conftest import REPO, run_cli

QUIET = ("wandb.mode=disabled", "device=cpu")


def _record(run_dir):
    return json.loads((run_dir / "result.json").read_text())


def test_relative_model_path_and_data_are_read_from_the_launch_dir(kept_full_model, cache_dir):
    work = kept_full_model["work"]  # the user's directory: not the repository, not its parent
    assert not str(work).startswith(str(REPO))

    trained = _record(kept_full_model["kept"])  # hydra.run.dir=runs/keep, train.save_model=true
    assert trained["saved_model"]["path"] == str(work / "runs" / "keep" / "model")
    assert f"model kept in {work / 'runs' / 'keep' / 'model'}" in kept_full_model["kept_output"]  # said, not only recorded
    assert re.fullmatch(r"[0-9a-f]{40}", trained["env"]["git_sha"])  # the code's own checkout (PYTHONPATH)

    again = _record(kept_full_model["again"])  # model.path=runs/keep/model
    assert again["weights"]["loaded_from"] == str(work / "runs" / "keep" / "model")
    assert again["metrics"]["accuracy"] == trained["metrics"]["accuracy"]

    # Relative data files, on the real SmolLM2 GGUF that the install brings (converted once into cache_dir).
    run_cli(work, "method=none", "model=smollm2-135m", "task=gsm8k", "task.train.path=data/train.jsonl",
            "task.eval.gsm8k_test.path=data/test.jsonl", "train.batch_size=2", "eval.limit=1", "eval.max_new_tokens=2",
            "hydra.run.dir=runs/gsm8k", f"cache_dir={cache_dir}", *QUIET)
    gsm8k = _record(work / "runs" / "gsm8k")
    assert gsm8k["status"] == "ok"
    assert set(gsm8k["data_files"]) == {str(work / "data" / "train.jsonl"), str(work / "data" / "test.jsonl")}
    assert len(list((work / "outputs" / "store").iterdir())) == 3  # store_dir, relative too: the three runs' stores
