"""analysis/paper_numbers.py: the shipped reference file, users' files, and ours beside them."""
from __future__ import annotations

import math

import pytest

from analysis.collect import collect
from analysis.paper_numbers import (COLUMNS, DEFAULT_FILE, NOT_COMPARABLE, PaperNumbersError, compare_with_ours,
                                    load_paper_numbers)
from analysis_records import paper_runs, record, smoke_record, write

HEADER = ",".join(COLUMNS)


def test_shipped_file_holds_the_adagradselect_abstract_and_no_invented_numbers():
    claims = load_paper_numbers([DEFAULT_FILE])
    assert set(claims["paper"]) == {"AdaGradSelect (arXiv 2512.15764)"}
    by_metric = {(r.metric, r.task, r.model): r for r in claims.itertuples()}
    time = by_metric[("train_wall_clock_s", "", "mean")]
    assert time.value == -12 and time.baseline == "full"
    assert by_metric[("peak_gpu_memory_gib", "", "mean")].value == -35
    # The authors' post: "up to 35 percent", set beside our best model; ours is allocated memory.
    up_to = by_metric[("peak_gpu_memory_gib", "", "best")]
    assert up_to.value == -35 and "up to 35 percent" in up_to.source and "allocated" in up_to.note
    # Keyed to the eval-set names the metamathqa task records (conf/task/metamathqa.yaml).
    gsm8k = by_metric[("accuracy", "gsm8k_test", "mean")]
    assert gsm8k.value == 3 and gsm8k.baseline == "lora"
    # "comparable accuracy on MATH" has no number: the cell stays empty.
    assert math.isnan(by_metric[("accuracy", "math500", "mean")].value)
    assert all("abstract" in s or "blog" in s for s in claims["source"])
    assert set(claims["task"]) - {""} <= set(_metamathqa_eval_sets())


def _metamathqa_eval_sets() -> list[str]:
    from omegaconf import OmegaConf

    from conftest import REPO

    return list(OmegaConf.load(REPO / "conf" / "task" / "metamathqa.yaml").eval)


def test_the_paper_protocol_records_fill_every_shipped_row(tmp_path):
    """Records as `+experiment=adagradselect_paper` writes them (metamathqa: gsm8k_test, math500)."""
    job = 0
    for model, (lora_gsm8k, ours_gsm8k, memory) in {"qwen2.5-0.5b": (0.30, 0.34, 6.0),
                                                    "llama3.2-1b": (0.40, 0.42, 10.0)}.items():
        for method, gsm8k, mem, seconds in (("full", 0.40, 12.0, 100.0), ("lora", lora_gsm8k, 8.0, 90.0),
                                            ("adagradselect", ours_gsm8k, memory, 88.0)):
            write(tmp_path, f"{job}-{method}-{model}-s0", record(method, model, 0, gsm8k=gsm8k, math500=0.2,
                                                                 peak_gpu_memory_gib=mem, train_wall_clock_s=seconds))
            job += 1
    compared = compare_with_ours(collect([tmp_path]), load_paper_numbers([DEFAULT_FILE])).set_index(["model", "metric", "task"])
    assert compared.loc[("mean", "accuracy", "gsm8k_test"), "ours"] == pytest.approx(3.0)  # (4 + 2) / 2 points
    assert compared.loc[("mean", "accuracy", "math500"), "ours"] == pytest.approx(0.0)
    assert compared.loc[("mean", "peak_gpu_memory_gib", ""), "ours"] == pytest.approx((-50 + -100 / 6) / 2)
    best = compared.loc[("best", "peak_gpu_memory_gib", "")]
    assert best["ours"] == pytest.approx(-50.0) and best["ours_over"] == "metamathqa/qwen2.5-0.5b"
    assert compared["ours"].notna().all()


def test_the_smoke_experiment_fills_every_row_its_records_can_answer(tmp_path):
    """Records as `+experiment=adagradselect_paper_smoke` names them: task and eval set
    `arithmetic`, tiny models, CPU (no GPU memory). They answer the time and primary-accuracy
    rows; the GSM8K/MATH and GPU-memory rows stay empty."""
    job = 0
    for model in ("tiny-qwen2", "tiny-llama"):
        for method, right, seconds in (("full", 6, 10.0), ("lora", 5, 12.0), ("adagradselect", 7, 9.0)):
            name, body, lines = smoke_record(method, model, 0, [True] * right + [False] * (10 - right),
                                             train_wall_clock_s=seconds, peak_gpu_memory_gib=None)
            write(tmp_path, f"{job}-{name}", body, lines)
            job += 1
    compared = compare_with_ours(collect([tmp_path]), load_paper_numbers([DEFAULT_FILE])).set_index(["model", "metric", "task"])
    # CPU timings of tiny models say nothing about the papers' GPU claims: not compared.
    time = compared.loc[("mean", "train_wall_clock_s", "")]
    assert math.isnan(time["ours"]) and time["comparable"] == NOT_COMPARABLE
    assert compared.loc[("mean", "accuracy", ""), "ours"] == pytest.approx(10.0)
    assert compared.loc[("mean", "accuracy", ""), "ours_over"] == "arithmetic/tiny-qwen2, arithmetic/tiny-llama"
    for key in [("mean", "accuracy", "gsm8k_test"), ("mean", "accuracy", "math500"),
                ("mean", "peak_gpu_memory_gib", ""), ("best", "peak_gpu_memory_gib", "")]:  # noqa: E501
        assert math.isnan(compared.loc[key, "ours"]), key


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
    runs["model"] = runs["model"].replace({"m1": "qwen2.5-0.5b"})  # a paper model on GPU (it recorded GPU memory)
    claims_file = tmp_path / "claims.csv"
    claims_file.write_text(
        f"{HEADER}\n"
        "t,qwen2.5-0.5b,lora,full,,peak_gpu_memory_gib,change_pct,-40,src,\n"   # ours: 6 vs 12 GiB -> -50%
        "t,mean,lora,full,gsm8k_test,accuracy,difference,-15,src,\n"        # ours: m1 40-60 = -20; m2 has no full
        "t,qwen2.5-0.5b,full,,gsm8k_test,accuracy,value,58,src,\n"                    # ours: 60%
        "t,mean,lora,full,,train_wall_clock_s,change_pct,,src,\n"       # no paper number, ours still shown
        "t,m9,lora,full,,train_wall_clock_s,change_pct,-5,src,\n")      # a model we never ran: empty
    compared = compare_with_ours(runs, load_paper_numbers([claims_file]))
    assert compared["ours"].iloc[0] == pytest.approx(-50.0)
    assert compared["ours"].iloc[1] == pytest.approx(-20.0) and compared["ours_over"].iloc[1] == "metamathqa/qwen2.5-0.5b"
    assert compared["ours"].iloc[2] == pytest.approx(60.0)
    assert compared["ours"].iloc[3] == pytest.approx(-10.0) and math.isnan(compared["value"].iloc[3])
    assert math.isnan(compared["ours"].iloc[4]) and compared["ours_over"].iloc[4] == ""


def test_time_and_memory_claims_only_beside_gpu_runs_of_the_papers_models(tmp_path):
    claims = load_paper_numbers([DEFAULT_FILE])
    for job, (method, seconds, memory) in enumerate([("full", 100.0, 12.0), ("adagradselect", 88.0, 7.8)]):
        body = record(method, "smollm2-135m", 0, gsm8k=0.5, train_wall_clock_s=seconds, peak_gpu_memory_gib=memory)
        body["env"]["device_name"] = "NVIDIA H100 80GB HBM3"
        write(tmp_path / "gpu", f"{job}-{method}", body)
        cpu = record(method, "tiny-llama", 0, gsm8k=0.5, train_wall_clock_s=seconds)
        cpu["env"]["device_name"] = "cpu"
        write(tmp_path / "cpu", f"{job}-{method}", cpu)
    on_cpu = compare_with_ours(collect([tmp_path / "cpu"]), claims).set_index(["model", "metric", "task"])
    assert on_cpu.loc[("mean", "train_wall_clock_s", ""), "comparable"] == NOT_COMPARABLE
    assert math.isnan(on_cpu.loc[("mean", "train_wall_clock_s", ""), "ours"])
    small = compare_with_ours(collect([tmp_path / "gpu"]), claims).set_index(["model", "metric", "task"])
    time = small.loc[("mean", "train_wall_clock_s", "")]
    assert time["comparable"] == "not the paper's model (135M)" and time["ours"] == pytest.approx(-12.0)
    assert small.loc[("mean", "accuracy", ""), "comparable"] == ""  # accuracy claims: any model
