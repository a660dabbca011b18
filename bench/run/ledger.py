"""The ledger of one run: everything a run writes to disk, and what makes a run survive a sweep.

A `Run` (bench/run/recipe.py) builds, trains and evaluates, and writes nothing. The entry
(bench/cli.py) wraps it in a `RunLedger`, which owns what is recorded about it: its identity (the
run key, the data files' hashes), its store's lock (bench/run/store.py), result.json in its three
states (`running`, `ok`, a failure), assembled in `record` only, metrics.jsonl and W&B (the
recorder), the checkpoints and the resume from them, the kept model, the reuse of a finished run,
and the stop signals. The signals live here because what they do is recording: a signal stops the
run with a checkpoint and a record, then is handed on. A run with no ledger (the base pretraining,
the lab, the tests) keeps Python's own handling of Ctrl-C and SIGTERM.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from bench.config.checks import check_run_dir, check_save_target
from bench.errors import input_error
from bench.models import saving
from bench.records.recorder import RunRecorder, environment, redacted_config, write_json_atomic
from bench.records.schema import METRICS_FILE, METRIC_KEYS, RESULT_FILE, SAMPLES_FILE
from bench.run.checkpoint import CheckpointDir, params_digest
from bench.run.recipe import Run
from bench.run.resume import Diverged, Preempted, PreemptionSignals, data_file_hashes, run_key
from bench.run.store import RunStore, this_process

log = logging.getLogger("slmbench")


def failure_status(err: BaseException) -> str:
    """A failed record's status: oom, preempted | interrupted (the signal's), else failed."""
    if isinstance(err, Preempted):
        return err.status  # Ctrl-C: interrupted; SIGTERM, SIGUSR1: preempted
    return "oom" if isinstance(err, torch.OutOfMemoryError) else "failed"


def failure_error(err: BaseException, step: int) -> dict:
    """A failed record's `error`: what was raised, at which step, and its reason when it has a name."""
    if isinstance(err, Diverged):
        return {"type": type(err).__name__, "message": str(err), "step": err.step, "reason": "diverged"}
    return {"type": type(err).__name__, "message": str(err), "step": step}


class RunLedger:
    """The records of one run in `run_dir`, and the observer of its training steps."""

    def __init__(self, cfg: DictConfig, run_dir: Path | str, names: dict[str, str], wandb_group: str | None = None):
        self.cfg, self.run_dir, self.names, self.wandb_group = cfg, Path(run_dir), names, wandb_group
        # The identity: every value as the run uses it, and the data files' contents (an edited
        # file is another run).
        config = OmegaConf.to_container(cfg, resolve=True)
        self.data_files = data_file_hashes(config["task"])
        self.key = run_key(config, self.data_files)
        self.store = RunStore(cfg.store_dir, self.key)
        self.config = redacted_config(cfg)  # what the records and W&B show of it
        self.started_at = time.time()  # with finished_at: the overlap of jobs
        self.signals = PreemptionSignals()  # entered by the entry around every phase (bench/cli.py)
        # Filled as the run gets further; a failure records however far it got.
        self.run: Run | None = None
        self.env: dict | None = None
        self.recorder: RunRecorder | None = None  # started once the run is built
        self.checkpoints: CheckpointDir | None = None
        self.added: dict = {}  # what the ledger adds to the record: resumed_from_step, saved_model
        self.record_written = False  # whether this process wrote result.json in the run dir

    def record(self, status: str, **outcome) -> dict:
        """result.json, assembled here only: the identity, what the run found out about itself so
        far (`Run.facts`), what this ledger added, then the outcome. Keys keep their first place."""
        facts = self.run.facts if self.run is not None else {}
        return {"status": status, **self.names, "seed": self.cfg.get("seed"), "run_key": self.key,
                "run_dir": str(self.run_dir), "started_at": self.started_at,
                **this_process(), "data_files": self.data_files,  # pid, host: is a `running` record alive?
                "metrics": {k: None for k in METRIC_KEYS}, "config": self.config, "env": self.env,
                "schedule": None,  # the lr and warm-up used (train.lr_scaling), once the optimizer is built
                **facts, **self.added, **outcome}

    # -- skip-finished ---------------------------------------------------------------------------

    def finished(self) -> dict | None:
        """The finished record of this run's identity, unless `sweep.rerun` asks to run it again."""
        return None if self.cfg.sweep.rerun else self.store.finished_record()

    def reuse(self, done: dict) -> dict:
        """The run dir gets the finished run's result.json, metrics.jsonl and samples.jsonl."""
        check_run_dir(self.run_dir, self.key)
        log.info("already finished in %s: skipped (sweep.rerun=true runs it again)", done["run_dir"])
        return self.store.reuse_into(self.run_dir)

    # -- build -----------------------------------------------------------------------------------

    def build(self) -> Run:
        """The run, built between this ledger's own steps: the run's runtime (the environment is
        then known), the store claimed, the run's other steps, the recorder (after every step that
        refuses bad input: a refusal starts no W&B run), the resume from the latest checkpoint."""
        self.run = Run(self.cfg)
        self.env = environment(self.run.device)
        self.claim()
        self.run.setup()
        wandb_cfg = OmegaConf.merge(self.cfg.wandb, {"group": self.cfg.wandb.group or self.wandb_group})
        self.recorder = RunRecorder(self.run_dir, self.config, wandb_cfg, self.names)  # redacted
        self.resume()
        return self.run

    def claim(self) -> None:
        """Refuse a run dir that holds another run's record; lock the run's store (a second copy of
        this run is refused, naming the holder; an unwritable store_dir is found here, not after
        training); check that `train.save_model` can write its target; then write the `running`
        record, which a killed run leaves behind (reports show it as `died`)."""
        check_run_dir(self.run_dir, self.key)
        self.store.acquire()
        if self.cfg.train.save_model:
            check_save_target(self.run_dir / "model")
        write_json_atomic(self.run_dir / RESULT_FILE, self.record("running"))
        self.record_written = True

    def resume(self) -> None:
        """Continue from this identity's latest checkpoint (train.resume, unless sweep.rerun); the
        steps it holds are logged again, so metrics.jsonl and W&B show the whole run."""
        self.checkpoints = CheckpointDir(self.store.checkpoints, self.cfg.train.keep_checkpoints)
        resume = self.run.state is not None and self.cfg.train.resume and not self.cfg.sweep.rerun
        saved = self.checkpoints.load_latest() if resume else None
        if saved is not None:
            self.run.load_state_dict(saved)
            for logged in self.run.history:
                self.recorder.log_step(logged["step"], {k: v for k, v in logged.items() if k != "step"})
            self.added["resumed_from_step"] = saved["step"]

    # -- train, keep the model, evaluate ---------------------------------------------------------

    def train(self) -> None:
        """The run trains with this ledger observing each step. A stop signal waits for the end of
        its step, whose checkpoint is then saved (`step_end`). Trained to the end, the run lets go of
        what only training holds on the device (`Run.release_training_memory`)."""
        self.signals.phase, self.signals.deferred = "train", True
        try:
            self.run.train(observers=[self])
        finally:
            self.signals.deferred = False
        if self.signals.received is not None:  # came after the last step's end: its checkpoint is saved
            raise Preempted(self.signals.received, self.run.step)
        self.run.release_training_memory()  # evaluation, and the jobs beside this one, get that memory

    def step_start(self, step: int) -> None:
        pass

    def step_end(self, step: int, metrics: dict) -> None:
        """Log the step; stop a diverged run (no checkpoint of its state); checkpoint every
        `train.checkpoint_every` steps, on a stop signal (then stop) and at the end of training: a
        signal during evaluation loses no training, and the relaunch goes straight to evaluation."""
        self.recorder.log_step(step, metrics)
        checked = {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"]}  # None: not read this step
        if any(v is not None and not math.isfinite(v) for v in checked.values()):
            raise Diverged(step, checked)
        every, received = self.cfg.train.checkpoint_every, self.signals.received
        if received or step == self.run.total_steps or (every and step % every == 0):
            self.checkpoints.save(step, self.run.state_dict())
        if received:
            raise Preempted(received, step)

    def keep_model(self) -> dict | None:
        """`train.save_model`: the trained model to <run dir>/model/ (bench/models/saving.py), before
        evaluation, so the model kept is the model evaluated; its path, size and kind go to the record."""
        if not self.cfg.train.save_model:
            return None
        self.signals.phase = "saving the model"
        run = self.run
        kept = self.added["saved_model"] = saving.save_model(run.model, run.tokenizer, self.run_dir / "model",
                                                             run.weights_from)
        log.info("model kept in %s (%s); evaluate it again with model.path=%s", kept["path"], kept["kind"],
                 kept["path"])
        return kept

    def evaluate(self) -> dict:
        """The run evaluates; a stop signal now stops it at once, and the record says so."""
        self.signals.phase = "evaluation"
        return self.run.evaluate()

    # -- record ----------------------------------------------------------------------------------

    def finish(self) -> dict:
        """Record an `ok` run: samples, result.json (run dir and store), W&B summary."""
        self.signals.phase = "recording"
        run = self.run
        record = self.record("ok", **run.performance_record(), metrics=run.metrics(), eval_protocol=run.eval_protocol,
                             final_params_sha256=params_digest(run.model, run.params), finished_at=time.time())
        self.recorder.write_samples(run.samples, primary_metric=run.task.primary_metric)
        self.recorder.write_result(record)
        self.recorder.log_artifact(f"record-{self.key}", "run-record",
                                   [self.run_dir / f for f in (RESULT_FILE, METRICS_FILE, SAMPLES_FILE)])
        self.recorder.close()
        self.store.save_finished(record, self.run_dir)  # what skip-finished serves; checkpoints go
        self.store.release()
        return record

    @contextlib.contextmanager
    def refusing_bad_input(self):
        """Around the build: bad input (bench/errors.py input_error) is refused, with no record;
        any other error is recorded as a failure. The error is raised again either way."""
        try:
            yield
        except BaseException as err:
            self.refuse(err) if input_error(err) is not None else self.fail(err)
            raise

    @contextlib.contextmanager
    def recording_failure(self):
        """Around training, evaluation and the record: any error is recorded as a failure, then raised again."""
        try:
            yield
        except BaseException as err:
            self.fail(err)
            raise

    def refuse(self, err: BaseException) -> None:
        """Bad input found before training: no record counts it as a run. The `running` record this
        process wrote (if it got that far) is taken back, the W&B run finished, the lock released."""
        self.signals.deferred = True
        if self.recorder is not None:
            self.recorder.close(failed=True)
        if self.record_written:
            (self.run_dir / RESULT_FILE).unlink(missing_ok=True)
        self.store.release()

    def fail(self, err: BaseException) -> dict:
        """Record a run that raised (failed | oom | preempted | interrupted); a stop signal is then handed on.
        A record that cannot be written (a full disk) is logged once, naming the file and why; the
        caller then re-raises the run's own error, so one traceback shows what went wrong."""
        self.signals.deferred = True  # a signal now waits until the record is written
        run = self.run
        record = self.record(failure_status(err), error=failure_error(err, run.step if run is not None else 0),
                             **(run.performance_record() if run is not None else {}), finished_at=time.time())
        try:
            if self.recorder is None:
                write_json_atomic(self.run_dir / RESULT_FILE, record)
            else:
                self.recorder.record_failure(record)  # never raises from W&B: the signal below is handed on
        except OSError as write_err:
            log.error("the %s record could not be written to %s: %s (the run itself stopped with %s: %s)",
                      record["status"], self.run_dir / RESULT_FILE, write_err, type(err).__name__, err)
        self.store.release()
        signum = err.signum if isinstance(err, Preempted) else self.signals.received
        if signum is not None:
            self.signals.redeliver(signum)
        return record
