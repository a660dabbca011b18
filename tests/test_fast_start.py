"""`slmbench`'s start: Hydra composes and the config is checked before torch, transformers or an
eval engine is imported, so `--help`, `--cfg job` and a misspelt key answer in about a second."""
from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO, run_cli

HEAVY = ("torch", "transformers", "peft", "pandas", "bench.eval.evaluate", "bench.run.recipe")

PROBE = f"""
import sys
import bench.cli
from hydra import compose, initialize_config_dir
from bench.config.checks import ConfigError, check_known_keys, check_numbers
for override, pure_check in (("+train.lrr=1", check_known_keys), ("eval.limit=0", check_numbers)):
    with initialize_config_dir(config_dir={str(REPO / 'conf')!r}, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[override])
    try:
        pure_check(cfg)
        print("NOT REFUSED")
    except ConfigError as err:
        print("refused:", err)
print("loaded:", sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_the_cli_and_the_key_check_load_no_torch(tmp_path):
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: train.lrr is not a known key; did you mean train.lr?" in proc.stdout
    assert "refused: eval.limit must be positive or null (every example), got 0" in proc.stdout
    assert "loaded: []" in proc.stdout, proc.stdout


def test_a_misspelt_key_is_refused_in_one_line_and_help_is_ours(tmp_path):
    proc = run_cli(tmp_path, "+train.lrr=1", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["slmbench: config error: train.lrr is not a known key; "
                                                "did you mean train.lr?"]
    assert not (tmp_path / "outputs" / "store").exists()  # refused before the run was built
    help_text = run_cli(tmp_path, "--help").stdout
    assert help_text.startswith("slmbench: ") and "powered by Hydra" not in help_text
    assert "method: " in help_text  # the config groups are listed
