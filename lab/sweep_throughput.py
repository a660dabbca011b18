"""Sweep throughput: the same sweep run serially (one job at a time) and packed (several jobs per GPU).

`python -m lab sweep_throughput --data-dir DIR --out docs/perf/sweep_throughput.json
[--jobs-per-gpu N]` runs, as `slmbench -m hydra/launcher=parallel` runs it, the default sweep's
methods (conf/config.yaml hydra.sweeper.params.method) x 1 seed x 1 epoch of SmolLM2-135M on GSM8K
with evaluation, at the fast settings (packed rows of 16k tokens, sqrt lr scaling, the chunked
loss, compiled layers, the loss read every 10 steps, the static eval engine), three times:

1. `serial`: jobs_per_gpu=1, a fresh store and a fresh compile cache: its first training job
   compiles cold (`cold_epoch_s`).
2. `packed`: jobs_per_gpu=N, a fresh store, the serial sweep's compile cache, admission by the
   serial runs' memory peaks (hydra.launcher.peaks_from; else expected_job_gib); with `--mps` its jobs
   are clients of the sweep's MPS server (hydra.launcher.mps=true: their kernels run side by side).
   `packed_time_sliced` (run only when named): the same without MPS, the card time-sliced, to show
   what MPS buys on the same machine.
3. `warm_solo`: the full fine-tune alone, a fresh store, the same cache: `warm_epoch_s` (its
   compile hits the cache; time measured alone, since packed jobs share the card).
4. `eval_reference`: the evaluation engines side by side on the same machine (`python -m lab
   real_workload --parts eval`: HF generate, the reference, and the static engine the sweeps use on
   the same GSM8K prompts): `eval_vs_hf_generate`, the static engine's speed-up.

`--stages` runs some of them; the JSON at `--out` keeps the stages an earlier call of the same
sitting wrote (same `--work-dir`: the packed sweep reuses the serial sweep's compile cache), and is
written again after every stage, so a call that runs out of time keeps what it finished.

Each sweep's wall time is its `slmbench` process's, launcher and every job included. The JSON holds
per run: accuracy with its 95% interval, final train loss, train and eval seconds, compile cache
hits, the device share; and the targets' checks (docs/performance.md renders it: `markdown`).
`--quick`: a CPU smoke run (tiny model, arithmetic, 3 steps, two methods); its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The fast settings, as lab/real_workload.py's harness_fast trains them (PACKED_FAST and
# FAST_SETTINGS there), with train.cuda_graphs=auto: one sweep runs every method with the same
# settings, and only full and LoRA keep their trainable set (Method.cuda_graph_safe), so only
# theirs replay the decoder (the records' fast_path.cuda_graphs).
FAST = ("train.batching=packed", "train.pack_tokens=16384", "train.lr_scaling=sqrt", "train.fast_path=chunked_ce",
        "train.compile=true", "train.cuda_graphs=auto", "train.log_every=10", "eval.engine=static",
        "eval.batch_size=512")
# lr per method, as the reference workload's method rows (real_workload.py --lr / --lora-lr).
LR_BY_METHOD = {"none": 1e-5, "full": 1e-5, "lora": 2e-4, "topk": 1e-5, "adagradselect": 1e-5, "ist": 1e-5,
                "lisa": 1e-5, "badam": 1e-5}
# --quick: CPU, a tiny pretrained base on the arithmetic task; compile off (Inductor on CPU: minutes).
QUICK = ("model=tiny-llama", "task=arithmetic", "train.max_steps=3", "eval.limit=8")
QUICK_METHODS = "none,lora"
TARGETS = {"speedup_min": 3.0, "cold_epoch_s_max": 12.0, "warm_epoch_s_max": 9.0, "loss_rel_diff_max": 0.01,
           "eval_speedup_min": 10.0}
STAGES = ("serial", "packed", "warm_solo", "eval_reference")
EXTRA_STAGES = ("packed_time_sliced",)  # run only when named in --stages


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None, help="folder with gsm8k/{train,test}.jsonl")
    p.add_argument("--out", type=Path, default=Path("docs/perf/sweep_throughput.json"))
    p.add_argument("--jobs-per-gpu", type=int, default=4, help="the packed sweep's jobs per GPU (CPU: jobs at once)")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="where the sweeps' dirs, stores and compile cache go (default: outputs/sweep_throughput/<time>)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="the runs' cache_dir (default: <work-dir>/cache, fresh: the serial sweep compiles cold)")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: the config's default sweep; --quick: none,lora)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="more overrides for every job")
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny model, arithmetic, 3 steps, 2 methods")
    p.add_argument("--mps", action="store_true",
                   help="the packed stage's jobs run as clients of the sweep's MPS server (hydra.launcher.mps=true)")
    p.add_argument("--stages", nargs="+", choices=STAGES + EXTRA_STAGES, default=list(STAGES),
                   help="the stages this call runs (the JSON at --out keeps the others' results)")
    p.add_argument("--fresh", action="store_true", help="start a new JSON instead of adding to the one at --out")
    p.add_argument("--eval-limit", type=int, default=512, help="eval_reference: GSM8K test prompts both engines answer")


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """The work and cache dirs' defaults, --quick's methods."""
    if not args.quick and args.data_dir is None:
        raise SystemExit("python -m lab sweep_throughput: --data-dir is needed (gsm8k/train.jsonl and "
                         "gsm8k/test.jsonl), or --quick")
    args.work_dir = args.work_dir or REPO / "outputs" / "sweep_throughput" / time.strftime("%Y%m%d-%H%M%S")
    args.cache_dir = args.cache_dir or args.work_dir / "cache"
    args.methods = args.methods or (QUICK_METHODS if args.quick else None)
    packed = {"packed", "packed_time_sliced"} & set(args.stages)
    if packed and "serial" not in args.stages and not Path(args.cache_dir).exists():
        raise SystemExit(f"python -m lab sweep_throughput: the packed stage reuses the serial stage's compile "
                         f"cache, and {args.cache_dir} does not exist: run serial first, with the same --work-dir")
    return args


def sweep_overrides(args) -> list[str]:
    """The overrides every job of the three sweeps shares."""
    if args.quick:
        return [*QUICK, "seed=0", "device=cpu", "wandb.mode=disabled", *args.set]  # one seed: the default sweep has three
    gsm8k = Path(args.data_dir).resolve() / "gsm8k"
    return ["model=smollm2-135m", "task=gsm8k", f"task.train.path={gsm8k / 'train.jsonl'}",
            f"task.eval.gsm8k_test.path={gsm8k / 'test.jsonl'}", "train.epochs=1", "train.max_steps=null",
            "train.batch_size=16", *(f"+lr_by_method.{m}={lr}" for m, lr in LR_BY_METHOD.items()),
            "train.lr='${lr_by_method.${hydra:runtime.choices.method}}'", "seed=0", *FAST, "wandb.mode=disabled",
            *args.set]


def child_env() -> dict:
    """The checkout first on the children's path, the caller's PYTHONPATH kept after it (packages
    installed with --target, as on the device machine, live there)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def run_sweep(args, name: str, jobs_per_gpu: int, extra: list[str] = (), mps: bool = False) -> dict:
    """One `slmbench -m` sweep in its own sweep dir and store: its wall time and its records."""
    root = Path(args.work_dir) / name
    launcher = ["hydra/launcher=parallel", f"hydra.launcher.jobs_per_gpu={jobs_per_gpu}",
                f"hydra.launcher.n_parallel={jobs_per_gpu}", f"hydra.launcher.mps={str(mps).lower()}",
                f"hydra.sweep.dir={root / 'sweep'}",
                f"store_dir={root / 'store'}", f"cache_dir={Path(args.cache_dir).resolve()}"]
    methods = [f"method={args.methods}"] if args.methods and not any(e.startswith("method=") for e in extra) else []
    command = [sys.executable, "-m", "bench.cli", "-m", *launcher, *sweep_overrides(args), *methods, *extra]
    # A stage run again in the same work dir starts afresh: its store would otherwise serve the
    # earlier runs' records (skip-finished) in seconds, and the launcher would admit jobs by their peaks.
    for earlier in (root / "sweep", root / "store"):
        if earlier.exists():
            print(f"sweep_throughput: {name}: removing the earlier run of this stage, {earlier}", flush=True)
            shutil.rmtree(earlier)
    root.mkdir(parents=True, exist_ok=True)
    env = child_env()
    start = time.perf_counter()
    with open(root / "sweep.log", "w") as log:
        proc = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - start
    records = sorted((json.loads(p.read_text()) for p in (root / "sweep").glob("*/result.json")),
                     key=lambda r: r["started_at"])
    if proc.returncode != 0 or not records:
        raise RuntimeError(f"sweep {name} exited {proc.returncode} with {len(records)} records; see {root / 'sweep.log'}")
    return {"wall_s": wall, "jobs_per_gpu": jobs_per_gpu, "mps": mps, "command": command[1:],
            "runs": [run_row(r) for r in records]}


def run_row(record: dict) -> dict:
    metrics = record.get("metrics") or {}
    return {"method": record["method"], "status": record["status"], "accuracy": metrics.get("accuracy"),
            "accuracy_ci95": metrics.get("accuracy_ci95"), "final_train_loss": metrics.get("final_train_loss"),
            "train_wall_clock_s": metrics.get("train_wall_clock_s"), "eval_wall_clock_s": metrics.get("eval_wall_clock_s"),
            "peak_gpu_reserved_gib": metrics.get("peak_gpu_reserved_gib"), "train_steps": metrics.get("train_steps"),
            "compile": record.get("compile"), "fast_path": record.get("fast_path"),
            "device_share": record.get("device_share"), "device_name": (record.get("env") or {}).get("device_name"),
            "started_at": record.get("started_at"), "finished_at": record.get("finished_at")}


def first_training_run(runs: list[dict]) -> dict | None:
    return next((r for r in runs if r["status"] == "ok" and r["train_steps"]), None)


def at_least(value, floor) -> bool | None:
    """None where the stage that measures `value` has not run (a check not made, neither met nor missed)."""
    return None if value is None else value >= floor


def at_most(value, ceiling) -> bool | None:
    return None if value is None else value <= ceiling


def checks(report: dict) -> dict:
    """The targets (issue: packed >= 3x serial; cold epoch <= 12 s, warm <= 9 s; packing changes no
    result: final train loss within 1%, packed accuracy inside the serial run's 95% interval)."""
    serial = {r["method"]: r for r in report["serial"]["runs"]} if report.get("serial") else {}
    packed = {r["method"]: r for r in report["packed"]["runs"]} if report.get("packed") else {}
    same_results = {}
    for method, s in serial.items():
        p = packed.get(method)
        if p is None or s["status"] != "ok" or p["status"] != "ok":
            same_results[method] = {"ok": False, "why": "a run did not finish ok"}
            continue
        loss_diff = (abs(p["final_train_loss"] - s["final_train_loss"]) / abs(s["final_train_loss"])
                     if s["final_train_loss"] else None)
        low, high = s["accuracy_ci95"] or (None, None)
        inside = low is not None and low <= p["accuracy"] <= high
        same_results[method] = {"loss_rel_diff": loss_diff, "accuracy_inside_serial_ci95": inside,
                                "ok": inside and (loss_diff is None or loss_diff <= TARGETS["loss_rel_diff_max"])}
    cold, warm, speedup, eval_speedup = (report[k] for k in ("cold_epoch_s", "warm_epoch_s", "speedup",
                                                              "eval_vs_hf_generate"))
    return {"speedup": {"value": speedup, "target": TARGETS["speedup_min"],
                        "ok": at_least(speedup, TARGETS["speedup_min"])},
            "cold_epoch_s": {"value": cold, "target": TARGETS["cold_epoch_s_max"],
                             "ok": at_most(cold, TARGETS["cold_epoch_s_max"])},
            "warm_epoch_s": {"value": warm, "target": TARGETS["warm_epoch_s_max"],
                             "ok": at_most(warm, TARGETS["warm_epoch_s_max"]),
                             "cache_hit": report["warm_compile_cache_hit"]},
            "packing_changes_no_result": {"per_method": same_results,
                                          "ok": all(m["ok"] for m in same_results.values()) if same_results else None},
            "eval_vs_hf_generate": {"value": eval_speedup, "target": TARGETS["eval_speedup_min"],
                                    "ok": at_least(eval_speedup, TARGETS["eval_speedup_min"])}}


def commit() -> dict:
    """HEAD (and whether the files differ from it), and the tree of the files as they are: on the device
    machine `.git` is its session's first commit while the files are newer, so the tree names the code
    that ran (bench/records/recorder.py, as every run's record and lab/real_workload.py name it)."""
    from bench.records.recorder import code_version, worktree_tree_sha

    sha, dirty = code_version()
    return {"sha": sha, "dirty": dirty, "worktree_tree_sha": worktree_tree_sha(REPO)}


def eval_reference(args) -> dict:
    """Both eval engines on the same prompts, in a process of their own (lab/real_workload.py's eval part)."""
    out = Path(args.work_dir) / "eval_reference.json"
    # --quick: SmolLM2 (the install's GGUF) on the committed GSM8K rows, a few prompts on the CPU
    size = (["--quick", "--device", "cpu", "--data-dir", str(REPO / "tests" / "fixtures")] if args.quick else
            ["--data-dir", str(Path(args.data_dir).resolve()), "--eval-limit", str(args.eval_limit), "--identical-n", "64"])
    # the sweep's cache_dir: the model's converted weights (SmolLM2's GGUF) are made once for both
    command = [sys.executable, "-m", "lab", "real_workload", "--parts", "eval", "--fresh", "--out", str(out), *size,
               "--set", f"cache_dir={Path(args.cache_dir).resolve()}"]
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(args.work_dir) / "eval_reference.log", "w") as log:
        proc = subprocess.run(command, cwd=REPO, env=child_env(), stdout=log,
                              stderr=subprocess.STDOUT)
    engines = json.loads(out.read_text()).get("eval", {}) if out.exists() else {}
    if proc.returncode != 0 or "hf" not in engines:
        raise RuntimeError(f"eval_reference exited {proc.returncode}; see {Path(args.work_dir) / 'eval_reference.log'}")
    hf, static = engines["hf"], engines["static"]
    return {"command": command[1:], "prompts": engines["prompts"], "precision": engines["precision"],
            "hf_generate_s": hf["seconds"], "static_s": static["seconds"], "speedup": hf["seconds"] / static["seconds"],
            "accuracy_hf": hf["accuracy"], "accuracy_static": static["accuracy"],
            "identical_fp32": static["identical_fp32"], "batch_sizes": {"hf": hf["batch_size"], "static": static["batch_size"]}}


def serial_peaks(args) -> list[str]:
    """The packed sweeps admit their jobs by the peaks the serial sweep's runs recorded (its store),
    as a second sweep into one store would: each packed sweep has a fresh store of its own."""
    store = Path(args.work_dir) / "serial" / "store"
    return [f"hydra.launcher.peaks_from=[{store.resolve()}]"] if store.is_dir() else []


def run_stage(args, stage: str) -> dict:
    if stage == "serial":
        return run_sweep(args, "serial", 1)
    if stage == "packed":
        return run_sweep(args, "packed", args.jobs_per_gpu, serial_peaks(args), mps=args.mps)
    if stage == "packed_time_sliced":
        return run_sweep(args, "packed_time_sliced", args.jobs_per_gpu, serial_peaks(args))
    if stage == "warm_solo":
        return run_sweep(args, "warm_solo", 1, [f"method={'lora' if args.quick else 'full'}"])
    return eval_reference(args)


def derived(report: dict) -> dict:
    """The figures the targets read, from the stages present (a missing stage leaves its figures null)."""
    serial, packed, warm, sliced = (report.get(k) for k in ("serial", "packed", "warm_solo", "packed_time_sliced"))
    runs = lambda sweep, key: {r["method"]: r[key] for r in sweep["runs"]} if sweep else {}  # noqa: E731
    cold_run = first_training_run(serial["runs"]) if serial else None
    warm_run = first_training_run(warm["runs"]) if warm else None
    warm_compile = (warm_run or {}).get("compile") or {}
    reference = report.get("eval_reference")
    return {
        "device": next((r["device_name"] for s in (serial, packed, warm) if s for r in s["runs"] if r["device_name"]),
                       report.get("device")),
        "serial_wall_s": serial and serial["wall_s"], "packed_wall_s": packed and packed["wall_s"],
        "jobs_per_gpu": packed and packed["jobs_per_gpu"], "packed_mps": bool(packed and packed.get("mps")),
        "speedup": serial["wall_s"] / packed["wall_s"] if serial and packed else None,
        "packed_time_sliced_wall_s": sliced and sliced["wall_s"],
        "speedup_time_sliced": serial["wall_s"] / sliced["wall_s"] if serial and sliced else None,
        "cold_epoch_s": (cold_run or {}).get("train_wall_clock_s"), "cold_method": (cold_run or {}).get("method"),
        "warm_epoch_s": (warm_run or {}).get("train_wall_clock_s"), "warm_method": (warm_run or {}).get("method"),
        "warm_compile_cache_hit": bool(warm_compile.get("fx_graph_cache_hit") or warm_compile.get("aot_autograd_cache_hit")),
        "accuracy_serial": runs(serial, "accuracy"), "accuracy_packed": runs(packed, "accuracy"),
        "final_train_loss_serial": runs(serial, "final_train_loss"), "final_train_loss_packed": runs(packed, "final_train_loss"),
        "eval_wall_clock_s_serial": runs(serial, "eval_wall_clock_s"), "eval_wall_clock_s_packed": runs(packed, "eval_wall_clock_s"),
        "eval_vs_hf_generate": reference and reference["speedup"],
    }


def measure(args, command: str = "", save=lambda report: None) -> dict:
    """The stages asked for, added to the JSON an earlier call of the sitting wrote; saved after each."""
    report = json.loads(args.out.read_text()) if args.out.exists() and not args.fresh else {}
    report.update(commit=commit(), quick=args.quick, overrides=sweep_overrides(args))
    report.setdefault("stages_run", {})
    for stage in args.stages:
        report[stage] = run_stage(args, stage)
        report["stages_run"][stage] = {"command": command, "commit": report["commit"],
                                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        report.update(derived(report))
        report["checks"] = checks(report)
        save(report)
    return report


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def code_line(report: dict) -> str:
    """Which code ran each stage: the tree of its files where `.git` was older than them."""
    calls = {}
    for stage, run in report.get("stages_run", {}).items():
        c = run["commit"]
        code = (f"git tree {c['worktree_tree_sha'][:12]}" if c.get("dirty") and c.get("worktree_tree_sha")
                else f"commit {(c.get('sha') or '?')[:12]}{' (dirty)' if c.get('dirty') else ''}")
        calls.setdefault(code, []).append(stage)
    return "; ".join(f"{', '.join(stages)}: {code}" for code, stages in calls.items()) or "code unknown"


def markdown(report: dict) -> str:
    """The JSON as a docs/performance.md section (a stage not run reads –)."""
    c = report["checks"]
    mark = lambda ok: "met" if ok else ("n/a" if ok is None else "missed")  # noqa: E731
    serial_runs = (report.get("serial") or {}).get("runs", [])
    ref = report.get("eval_reference") or {}
    ratio = lambda v: "–" if v is None else f"{v:.2f}x"  # noqa: E731
    mps = " under MPS" if report.get("packed_mps") else ""
    lines = [f"## Sweep throughput: {len(serial_runs)} runs, serial vs {report['jobs_per_gpu']} jobs per GPU{mps}",
             "", f"Device: {report['device']}; {code_line(report)}{'; --quick (figures mean nothing)' if report['quick'] else ''}.",
             "", "| target | value | goal | |", "|---|---|---|---|",
             f"| packed throughput{mps} (serial / packed wall) | {ratio(report['speedup'])} "
             f"({_fmt(report['serial_wall_s'], 0)} s / {_fmt(report['packed_wall_s'], 0)} s) | >= {TARGETS['speedup_min']:.0f}x "
             f"| {mark(c['speedup']['ok'])} |",
             f"| cold epoch ({report['cold_method']}, first job, fresh cache) | {_fmt(report['cold_epoch_s'])} s "
             f"| <= {TARGETS['cold_epoch_s_max']:.0f} s | {mark(c['cold_epoch_s']['ok'])} |",
             f"| warm epoch ({report['warm_method']} alone, cache {'hit' if report['warm_compile_cache_hit'] else 'missed'}) "
             f"| {_fmt(report['warm_epoch_s'])} s | <= {TARGETS['warm_epoch_s_max']:.0f} s | {mark(c['warm_epoch_s']['ok'])} |",
             f"| packing changes no result (loss within 1%, accuracy in serial 95% CI) | | | "
             f"{mark(c['packing_changes_no_result']['ok'])} |",
             f"| evaluation: static engine vs HF generate ({ref.get('prompts', '–')} prompts, same machine) "
             f"| {ratio(report.get('eval_vs_hf_generate'))} ({_fmt(ref.get('hf_generate_s'))} s / {_fmt(ref.get('static_s'))} s) "
             f"| >= {TARGETS['eval_speedup_min']:.0f}x | {mark(c['eval_vs_hf_generate']['ok'])} |",
             "", "| method | accuracy serial | accuracy packed | loss serial | loss packed | train s serial | "
             "train s packed | eval s serial | eval s packed | jobs on card (packed) | compile cache hits (packed) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    packed = {r["method"]: r for r in (report.get("packed") or {}).get("runs", [])}
    for s in serial_runs:
        p = packed.get(s["method"], {})
        share, comp = p.get("device_share") or {}, p.get("compile") or {}
        lines.append(f"| {s['method']} | {_fmt(s['accuracy'], 3)} | {_fmt(p.get('accuracy'), 3)} | "
                     f"{_fmt(s['final_train_loss'], 4)} | {_fmt(p.get('final_train_loss'), 4)} | "
                     f"{_fmt(s['train_wall_clock_s'])} | {_fmt(p.get('train_wall_clock_s'))} | "
                     f"{_fmt(s['eval_wall_clock_s'])} | {_fmt(p.get('eval_wall_clock_s'))} | "
                     f"{share.get('jobs_on_device_max', '–')} | {comp.get('fx_graph_cache_hit', '–')} |")
    lines += ["", "Packed jobs share the card: their train and eval seconds are not the methods' own "
              "(device_share.jobs_on_device_max > 1); time comparisons use solo runs."]
    if report.get("packed_time_sliced_wall_s"):
        lines += ["", f"The same packed sweep without MPS (the card time-sliced between the jobs' processes), "
                  f"same machine and sitting: {report['packed_time_sliced_wall_s']:.0f} s, "
                  f"{ratio(report['speedup_time_sliced'])} serial."]
    if serial_runs and report.get("serial_wall_s"):
        in_runs = sum(r["finished_at"] - r["started_at"] for r in serial_runs if r.get("finished_at"))
        lines += ["", f"Where the serial sweep's {report['serial_wall_s']:.0f} s went: {in_runs:.0f} s inside the "
                  f"runs (their records' start to finish: set-up, training, evaluation, recording), the other "
                  f"{report['serial_wall_s'] - in_runs:.0f} s before each run's record begins (a new process: Python, "
                  f"torch and Hydra's compose) and in the launcher. Its first training job compiled cold; the "
                  f"packed sweep reused that cache, as every later job of a sweep does."]
    if ref:
        same, n = ref["identical_fp32"]
        lines += ["", f"Evaluation: both engines answered the same {ref['prompts']} GSM8K test prompts in "
                  f"{ref['precision']} (accuracy {_fmt(ref['accuracy_hf'], 3)} HF generate, "
                  f"{_fmt(ref['accuracy_static'], 3)} static); in fp32 their texts were identical on {same} of {n}."]
    if report.get("provenance_note"):  # written by hand into the JSON after a device run: which code, which calls
        lines += ["", f"Provenance: {report['provenance_note']}"]
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace, command: str) -> None:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = measure(args, command, save=lambda r: args.out.write_text(json.dumps(r, indent=2) + "\n"))
    print(markdown(report))

