"""analysis/paper_numbers.py: the shipped reference file, users' files, and ours beside them."""
from __future__ import annotations

import math

import pytest

from analysis.collect import collect
from analysis.paper_numbers import COLUMNS, DEFAULT_FILE, PaperNumbersError, compare_with_ours, load_paper_numbers
from analysis_records import paper_runs

HEADER = ",".join(COLUMNS)


def test_shipped_file_holds_the_adagradselect_abstract_and_no_invented_numbers():
    claims = load_paper_numbers([DEFAULT_FILE])
    assert set(claims["paper"]) == {"AdaGradSelect (arXiv 2512.15764)"}
    by_metric = {(r.metric, r.task): r for r in claims.itertuples()}
    assert by_metric[("train_wall_clock_s", "")].value == -12 and by_metric[("train_wall_clock_s", "")].baseline == "full"
    assert by_metric[("peak_gpu_memory_gib", "")].value == -35
    assert by_metric[("accuracy", "gsm8k")].value == 3 and by_metric[("accuracy", "gsm8k")].baseline == "lora"
    # "comparable accuracy on MATH" has no number: the cell stays empty.
    assert math.isnan(by_metric[("accuracy", "math500")].value)
    assert all("abstract" in s for s in claims["source"])


def test_user_rows_are_appended(tmp_path):
    extra = tmp_path / "mine.csv"
    extra.write_text(f"{HEADER}\nmy paper,m1,full,,gsm8k,accuracy,value,58,\"my table 2\",\n")
    claims = load_paper_numbers([DEFAULT_FILE, extra])
    assert claims.iloc[-1]["paper"] == "my paper" and claims.iloc[-1]["value"] == 58.0
    assert claims.iloc[-1]["file"] == str(extra)


@pytest.mark.parametrize("row, message", [
    ("p,m1,full,,gsm8k,accuracy,absolute,58,src,", r"mine.csv:3: kind='absolute'; allowed: value, change_pct, difference"),
    ("p,m1,lora,,,peak_gpu_memory_gib,change_pct,-35,src,", r"mine.csv:3: kind=change_pct needs a 'baseline'"),
    ("p,m1,full,,gsm8k,accuracy,value,about 58,src,", r"mine.csv:3: value='about 58' is not a number"),
    ("p,m1,full,,gsm8k,accuracy,value,58,,", r"mine.csv:3: column 'source' is empty"),
])
def test_a_bad_reference_row_names_file_and_line(tmp_path, row, message):
    extra = tmp_path / "mine.csv"
    extra.write_text(f"{HEADER}\np,m1,full,,gsm8k,accuracy,value,58,src,\n{row}\n")
    with pytest.raises(PaperNumbersError, match=message):
        load_paper_numbers([extra])


def test_missing_columns_are_named(tmp_path):
    extra = tmp_path / "mine.csv"
    extra.write_text("paper,model,value\np,m1,3\n")
    with pytest.raises(PaperNumbersError, match=r"mine.csv:1: missing columns \['method'"):
        load_paper_numbers([extra])


def test_ours_beside_each_claim(tmp_path):
    runs = collect([paper_runs(tmp_path / "runs")])
    claims_file = tmp_path / "claims.csv"
    claims_file.write_text(
        f"{HEADER}\n"
        "t,m1,lora,full,,peak_gpu_memory_gib,change_pct,-40,src,\n"   # ours: 6 vs 12 GiB -> -50%
        "t,mean,lora,full,gsm8k,accuracy,difference,-15,src,\n"        # ours: m1 40-60 = -20; m2 has no full
        "t,m1,full,,gsm8k,accuracy,value,58,src,\n"                    # ours: 60%
        "t,mean,lora,full,,train_wall_clock_s,change_pct,,src,\n"       # no paper number, ours still shown
        "t,m9,lora,full,,train_wall_clock_s,change_pct,-5,src,\n")      # a model we never ran: empty
    compared = compare_with_ours(runs, load_paper_numbers([claims_file]))
    assert compared["ours"].iloc[0] == pytest.approx(-50.0)
    assert compared["ours"].iloc[1] == pytest.approx(-20.0) and compared["ours_over"].iloc[1] == "metamathqa/m1"
    assert compared["ours"].iloc[2] == pytest.approx(60.0)
    assert compared["ours"].iloc[3] == pytest.approx(-10.0) and math.isnan(compared["value"].iloc[3])
    assert math.isnan(compared["ours"].iloc[4]) and compared["ours_over"].iloc[4] == ""
