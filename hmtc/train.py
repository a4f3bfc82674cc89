"""Training: AdamW with a head learning rate and layer-wise decay, warm-up and decay, clipping,
EMA of weights, early stopping on dev, length-bucketed batches, bf16 autocast, resume. A model
that fits in one pass (``one_pass``, e.g. TF-IDF) is fitted once instead.

A run folder holds ``run.json`` and ``config.json``, ``last/`` (checkpoint + optimizer state, for
resume; once the run has finished only its ``train_state.json``, unless ``train.keep_last``),
``best/`` (the best dev checkpoint) and, after evaluation, ``metrics.json``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from torch.nn.parallel import DistributedDataParallel

from .batching import length_batches
from .checkpoint import locate, save_checkpoint
from .config import RunConfig, TextSpec, dotted, upgrade_config
from .data.prepare import Prepared, prepare, taxonomy_for
from .distributed import DistContext, init_distributed
from .errors import ConfigError, HmtcError
from .frozen_store import FrozenStore, store_root, text_key
from .home import run_folder
from .inference import cache_lower_states, frozen_fingerprint, pick_device
from .io import RunLock, atomic_write_json, check_manifest, newest_valid, versioned_dir, versions
from .loading import load_checkpoint
from .losses import distillation_loss, fit_losses
from .metrics import evaluate
from .models import MODELS, autocast, create_model
from .models.base import check_fits
from .models.batches import iterate, iterate_states
from .models.dropout import use_fast_dropout
from .progress import progress_bar
from .record import now, write_run_files
from .registry import Registry
from .regularizers import backward_step, rdrop_loss, word_embeddings
from .slim import slim_checkpoint


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EMA:
    """Exponential moving average of trainable weights; ``swap()`` puts the average in place."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float):
        self.params, self.decay = params, decay
        self.shadow = [p.detach().clone() for p in params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))  # short memory early on
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - d)

    @contextlib.contextmanager
    def swap(self):
        with torch.no_grad():
            for p, s in zip(self.params, self.shadow):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, self.shadow):
                    tmp = p.detach().clone()
                    p.copy_(s)
                    s.copy_(tmp)


# learning-rate factor after warm-up, as a function of the share of those steps done
SCHEDULES: Registry = Registry("schedule")
SCHEDULES.register("linear")(lambda frac: max(0.0, 1.0 - frac))
SCHEDULES.register("cosine")(lambda frac: 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
SCHEDULES.register("constant")(lambda frac: 1.0)


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int):
    """Step -> learning-rate factor: linear warm-up over ``warmup_steps``, then ``schedule``."""
    decay = SCHEDULES.get(schedule)

    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return decay((step - warmup_steps) / max(1, total_steps - warmup_steps))
    return f


# keys that say where files go or how fast to score, not what is trained
_NEUTRAL_KEYS = {"name", "data.data_dir", "train.output_dir", "train.record_dir", "train.threads",
                 "train.eval_batch_size", "train.seeds", "train.baseline", "train.keep_last", "train.save_every"}


def config_changes(stored: dict, new: dict) -> dict[str, tuple]:
    """``{dotted key: (stored value, new value)}`` for every key whose value differs between two
    resolved run configs, other than those naming places or scoring speed (``_NEUTRAL_KEYS``)."""
    # an empty option table is no value of its own: its keys are compared where either side has them
    a, b = ({k: v for k, v in dotted(c).items() if v != {}} for c in (stored, new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys())
            if a.get(k) != b.get(k) and k not in _NEUTRAL_KEYS}


# what a run started from another's weights must share with it: these build the same network (what
# of it trains, model.freeze_*, is the new run's own)
_SAME_MODEL = ("name", "options", "layers", "windows", "window_length", "window_stride")


def start_from(source: str | Path, cfg: RunConfig, index) -> "torch.nn.Module":
    """The model a run with ``train.init_from = source`` trains: the trained run's or checkpoint's
    own, its encoder and tokenizer included (a finished run keeps only the vocabulary it uses:
    hmtc.slim), set up for this run. It must be the same model over the same taxonomy
    (``hmtc migrate`` carries a run onto an edited one)."""
    ckpt = load_checkpoint(locate(source)[1])
    config, init_index = ckpt.config, ckpt.index
    if list(init_index.ids) != list(index.ids):
        raise ConfigError(f"train.init_from {source}: its taxonomy is not this run's "
                          f"({init_index.n_nodes} vs {index.n_nodes} nodes, or another order); "
                          "set data.taxonomy to the file it was migrated to (hmtc migrate RUN NEW.tax -o RUN2)")
    differ = [k for k in _SAME_MODEL if getattr(config.model, k) != getattr(cfg.model, k)]
    if differ:
        raise ConfigError(f"train.init_from {source}: its model differs from this run's in "
                          f"{', '.join('model.' + k for k in differ)}; start from a run of the same model")
    model = ckpt.model
    model.model_config = cfg.model
    check_fits(model.encoder.backbone, cfg.model, cfg.data.max_length)
    model.encoder.freeze(cfg.model.freeze_embeddings, cfg.model.freeze_layers)
    model.set_text(TextSpec.of(cfg))
    if cfg.model.fast_dropout:
        use_fast_dropout(model)
    return model.train()


@dataclass
class TrainState:
    """Where a run stands: written with the weights as ``last/train_state.json`` (what ``--resume``
    continues from; once the run has finished, alone), read back by records and reports. The
    one-off costs (teacher logits, the frozen layers' cache) and what the cache took from earlier
    seeds or the store are kept only when they happened."""

    epoch: int = 0
    step: int = 0
    best: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0
    train_seconds: float = 0.0
    history: list = field(default_factory=list)
    bad_steps: int = 0
    last_finite_loss: float | None = None
    teacher_seconds: float | None = None
    cache_seconds: float | None = None
    cache_reused: int | None = None
    cache_stored: int | None = None
    slim: dict | None = None
    finished: bool = False

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, d: dict) -> TrainState:
        """A ``train_state.json`` (keys it does not know, such as an older file's, are left out)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class _Setup:
    """What :meth:`Trainer._setup` builds for the epochs to run."""

    model: torch.nn.Module
    data: Prepared
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    ema: EMA | None
    state: TrainState
    pad_id: int


class Trainer:
    """Train one configured run.

    Parameters
    ----------
    config : RunConfig
        From :func:`hmtc.config.load_config`.
    run_dir : Path, optional
        Default ``<train.output_dir>/<name>``.
    resume : bool
        Continue from ``run_dir/last``.
    stop_after_epochs : int, optional
        Stop (as if interrupted) after this many epochs of this process; for tests and
        time-boxed sessions. ``--resume`` continues.
    accept_changes : bool
        Resume although the config differs from the run's stored one (:func:`config_changes`);
        the changes are kept in ``run.json`` and the run's record. Without it such a resume is
        refused, naming the keys.
    frozen_caches : dict, optional
        The cached states of ``train.cache_frozen``, by :func:`~hmtc.inference.frozen_fingerprint`
        and then by each text's token ids, shared by the runs handed the same dict (the seeds of
        one set): a run takes the texts an earlier run cached and computes only the others.
    """

    def __init__(self, config: RunConfig, run_dir: str | Path | None = None, resume: bool = False,
                 stop_after_epochs: int | None = None, console: Console | None = None,
                 quiet: bool = False, frozen_caches: dict | None = None, accept_changes: bool = False):
        if not isinstance(config, RunConfig):
            raise TypeError(f"Trainer takes a RunConfig (hmtc.config.load_config, or RunConfig.from_dict for "
                            f"tables), not {type(config).__name__}")
        self.config = config
        self.run_dir = run_folder(config, run_dir)
        self.resume = resume
        if stop_after_epochs is not None and (isinstance(stop_after_epochs, bool) or stop_after_epochs < 1):
            raise HmtcError(f"stop after {stop_after_epochs} epochs: give 1 or more (leave it out to train them all)")
        self.stop_after_epochs = stop_after_epochs
        self.console = console or Console(stderr=True, emoji=False)
        self.quiet = quiet
        self.frozen_caches = frozen_caches
        self.accept_changes = accept_changes
        self.dist_ = DistContext()

    def fit(self) -> Path:
        """Train; returns the run folder (``best/`` holds the chosen checkpoint). The folder is
        locked meanwhile: a second writer is refused (under torchrun, rank 0 holds the lock)."""
        if os.environ.get("RANK", "0") != "0":
            return self._fit()
        with RunLock(self.run_dir):
            return self._fit()

    def _fit(self) -> Path:
        cfg, t = self.config, self.config.train
        last = self.run_dir / "last"
        if self.resume:         # the newest whole checkpoint, even if a crash left last/ behind
            self.resume_from_ = newest_valid(
                last, lambda f: (f / "train_state.json").is_file() and check_manifest(f) is None)
            if self.resume_from_ is None:
                raise HmtcError("nothing to resume: no whole last/ checkpoint with a train_state.json", self.run_dir)
            self._check_same_run()
            finished = json.loads((self.resume_from_ / "train_state.json").read_text(encoding="utf-8"))
            if finished.get("finished"):       # its weights and optimizer state are gone: nothing to continue
                self.console.print(f"{escape(str(self.run_dir))}: the run finished "
                                   f"({finished['epoch']} epochs); nothing to resume")
                self.state_, self.data_ = TrainState.from_json(finished), None
                return self.run_dir
        elif last.exists() or last.is_symlink() or versions(last):
            raise HmtcError("run folder exists; pass --resume to continue it or --out for a new one",
                            self.run_dir)
        if t.frozen_store and not t.cache_frozen:
            raise ConfigError("train.frozen_store stores the states of train.cache_frozen: set cache_frozen = true")
        if cfg.data.shots == 0 and MODELS.get(cfg.model.name).needs_examples:
            raise ConfigError(f"data.shots = 0 leaves no training text for model {cfg.model.name!r}; "
                              "model.name = \"zeroshot\" scores from the taxonomy's names alone")
        if MODELS.get(cfg.model.name).one_pass:
            if self.resume:
                raise HmtcError(f"a {cfg.model.name} run is fitted in one pass; there is nothing to resume",
                                self.run_dir)
            return self._fit_one_pass()
        setup = self._setup()
        model, data, optimizer, scheduler, ema, state, pad_id = (
            setup.model, setup.data, setup.optimizer, setup.scheduler, setup.ema, setup.state, setup.pad_id)
        main, n_train = self.dist_.is_main, len(data.token_ids["train"])
        say = self.console.print if main else (lambda *a, **k: None)
        done_here = 0
        with progress_bar(self.console, self.quiet) as progress:
            self.cache_ = self.teacher_ = self.dev_states_ = None
            if t.teacher:          # one-off teacher logits, counted as training time
                c0 = time.time()
                self.teacher_ = self._teacher_logits(data, progress)
                state.teacher_seconds = round((state.teacher_seconds or 0.0) + time.time() - c0, 1)
                state.train_seconds += time.time() - c0
            if t.cache_frozen and state.epoch < t.epochs:    # its one-off time counts as training time
                c0 = time.time()
                self.cache_, reused, stored = self._cache_frozen(model, data, pad_id, progress)
                state.cache_seconds = round((state.cache_seconds or 0.0) + time.time() - c0, 1)
                state.train_seconds += time.time() - c0
                if reused:
                    state.cache_reused = reused
                    say(f"frozen-layer cache: {reused} of {n_train} texts taken from an earlier seed")
                if stored:
                    state.cache_stored = stored
                    say(f"frozen-layer cache: {stored} of {n_train} texts read from the store")
                self.dev_states_ = self._dev_states(model, data, pad_id, progress)
            for epoch in range(state.epoch, t.epochs):
                if self.stop_after_epochs is not None and done_here >= self.stop_after_epochs:
                    break
                torch.manual_seed(t.seed * 1000 + epoch)    # dropout stream per epoch
                e0 = time.time()
                loss = self._train_epoch(model, data, optimizer, scheduler, ema, epoch, pad_id,
                                         progress, state)
                state.train_seconds += time.time() - e0
                with ema.swap() if ema else contextlib.nullcontext():
                    dev_metrics = self._dev_metrics(model, data, pad_id, progress)
                    score = dev_metrics[t.metric]
                    state.epoch = epoch + 1
                    improved = score > state.best
                    if improved:
                        state.best, state.best_epoch, state.bad_epochs = score, epoch + 1, 0
                        if main:
                            save_checkpoint(self.run_dir / "best", model, data.taxonomy, cfg,
                                            support=data.labels["train"].sum(0))
                    else:
                        state.bad_epochs += 1
                rec = {"epoch": epoch + 1, "train_loss": loss, "seconds": round(time.time() - e0, 1),
                       "samples_per_s": round(n_train / (time.time() - e0), 2),
                       **{f"dev_{k}": dev_metrics[k] for k in ("micro_f1", "macro_f1")}}
                state.history.append(rec)
                every = t.save_every
                if main and ((every and (epoch + 1) % every == 0) or (epoch + 1 == t.epochs and t.keep_last)):
                    self._save_state(last, model, data.taxonomy, optimizer, ema, state)
                say(f"epoch {epoch + 1}: loss {loss:.4f}, dev micro-F1 {dev_metrics['micro_f1']:.4f} "
                    f"macro-F1 {dev_metrics['macro_f1']:.4f}{' (best)' if improved else ''}, "
                    f"{rec['samples_per_s']} samples/s")
                done_here += 1
                if t.patience and state.bad_epochs >= t.patience:
                    say(f"early stop: no dev gain for {t.patience} epochs")
                    state.epoch = t.epochs
                    if main and (t.save_every or t.keep_last):
                        self._save_state(last, model, data.taxonomy, optimizer, ema, state)
                    break
        if main and state.epoch >= t.epochs:
            self._finish(last, state, model, data)
        self.dist_.close()
        self.state_ = state
        self.data_ = data
        return self.run_dir

    def _setup(self) -> _Setup:
        """Seeds, devices (and the process group under torchrun), the model (new, or the one
        ``train.init_from`` starts from), the data, the optimizer, schedule and EMA, the state
        (a resumed run's own), and the run folder's config.json / run.json."""
        cfg, t = self.config, self.config.train
        seed_everything(t.seed)
        self.dist_, ddp_device = init_distributed(t.device)
        torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1) // self.dist_.world))
        device = ddp_device or pick_device(t.device)
        self.device_ = device
        main = self.dist_.is_main
        if not main:
            self.quiet = True
        t0 = time.time()
        taxonomy = taxonomy_for(cfg)
        model = (start_from(t.init_from, cfg, taxonomy.compile()) if t.init_from
                 else create_model(cfg, taxonomy.compile()))
        tokenizer = model.tokenizer
        data = prepare(cfg, taxonomy, tokenizer, text_prefix=model.text_prefix)
        if not self.resume and not t.init_from and hasattr(model, "init_from_data"):     # e.g. prototypes from names and examples
            model.init_from_data(data.texts["train"], data.labels["train"])
        model.to(device)
        self.train_model_ = model
        if self.dist_.active:
            self.train_model_ = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        n_train = len(data.token_ids["train"])
        steps_per_epoch = math.ceil(n_train / t.batch_size)
        total = steps_per_epoch * t.epochs
        groups = model.encoder.param_groups(t.lr, t.layer_decay, t.weight_decay)
        groups.append({"params": model.head_parameters(), "lr": t.head_lr, "weight_decay": t.weight_decay})
        fused = device.type == "cpu"
        optimizer = torch.optim.AdamW(groups, lr=t.lr, foreach=not fused, fused=fused or None)
        for g in optimizer.param_groups:
            g["initial_lr"] = g["lr"]
        trainable = [p for g in groups for p in g["params"]]
        ema = EMA(trainable, t.ema) if t.ema > 0 else None
        state = TrainState()
        if self.resume:
            state = self._load_state(self.resume_from_, model, optimizer, ema)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lr_lambda(t.schedule, int(t.warmup * total), total), last_epoch=state.step - 1)
        if main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.resume:                 # a resumed run keeps how it was started
                atomic_write_json(self.run_dir / "config.json", cfg.to_dict())
            else:
                write_run_files(self.run_dir, cfg)
        say = self.console.print if main else (lambda *a, **k: None)
        for note in data.notes:
            say(f"note: {escape(note)}")
        say(f"[bold]{escape(cfg.name)}[/]: {n_train} train / {len(data.token_ids['dev'])} dev, "
            f"{data.index.n_nodes} nodes in {data.index.depth} levels, "
            f"{sum(p.numel() for p in trainable):,} trainable parameters, device {device}"
            f"{', bf16' if t.bf16 else ''}{f', {self.dist_.world} processes' if self.dist_.active else ''}; "
            f"setup {time.time() - t0:.1f}s")
        return _Setup(model, data, optimizer, scheduler, ema, state, pad_id)

    def _fit_one_pass(self) -> Path:
        """Fit a model that trains in one pass (``one_pass``) on the training split; writes
        ``run.json``, ``config.json``, ``best/`` and its copy ``last/`` (with a ``train_state.json``
        giving the fit time and dev figures to the run record)."""
        cfg, t = self.config, self.config.train
        seed_everything(t.seed)
        t0 = time.time()
        taxonomy = taxonomy_for(cfg)
        model = create_model(cfg, taxonomy.compile())       # option errors before the data loads
        data = prepare(cfg, taxonomy)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_run_files(self.run_dir, cfg)
        n_train = len(data.texts["train"])
        for note in data.notes:
            self.console.print(f"note: {escape(note)}")
        self.console.print(f"[bold]{escape(cfg.name)}[/]: {n_train} train / {len(data.texts['dev'])} dev, "
                           f"{data.index.n_nodes} nodes in {data.index.depth} levels, {cfg.model.name}; "
                           f"setup {time.time() - t0:.1f}s")
        t1 = time.time()
        model.fit(data.texts["train"], data.labels["train"], t.seed)
        seconds = time.time() - t1
        rec = {"epoch": 1, "seconds": round(seconds, 1), "samples_per_s": round(n_train / max(seconds, 1e-9), 2)}
        if data.texts["dev"]:         # a few-shot protocol may leave no dev text (data.dev_shots = 0)
            # decoded as the epochs' dev figures are: the run's whole policy, untuned
            pred = data.decoding.apply(model.scores(data.texts["dev"]), data.index, back_off=False)
            dev = evaluate(data.labels["dev"], pred, data.index, include_per_label=False)
            rec |= {"dev_micro_f1": dev["micro_f1"], "dev_macro_f1": dev["macro_f1"]}
        state = TrainState(epoch=1, best_epoch=1, train_seconds=seconds, history=[rec])
        save_checkpoint(self.run_dir / "best", model, data.taxonomy, cfg, support=data.labels["train"].sum(0))
        with versioned_dir(self.run_dir / "last") as tmp:
            # hard links save a second copy of the weights; files are only ever replaced, never edited
            shutil.copytree(self.run_dir / "best", tmp, dirs_exist_ok=True, copy_function=os.link)
            atomic_write_json(tmp / "train_state.json", state.to_json())
        self.console.print(f"fit {seconds:.1f}s" + (f"; dev micro-F1 {rec['dev_micro_f1']:.4f} macro-F1 "
                                                    f"{rec['dev_macro_f1']:.4f}" if "dev_micro_f1" in rec else
                                                    "; no dev texts"))
        self.state_, self.data_ = replace(state, epoch=t.epochs), data
        return self.run_dir

    def _train_epoch(self, model, data: Prepared, optimizer, scheduler, ema, epoch: int, pad_id: int,
                     progress: Progress, state: TrainState) -> float:
        t = self.config.train
        ids, y = data.token_ids["train"], data.labels["train"]
        fit_losses(model, y)        # label priors are not saved with the weights: fit every epoch (cheap)
        cached = self.cache_ is not None
        embeddings = word_embeddings(model) if (t.fgm_epsilon or t.gp_weight) and not cached else None
        batches = length_batches([len(x) for x in ids], t.batch_size, True, t.seed, epoch, t.bucket_size)
        task = progress.add_task(f"epoch {epoch + 1}/{t.epochs}", total=len(ids), info="")
        weights = [1.0] * len(batches)
        if self.dist_.active:
            # every rank takes its slice of the same global batch; DDP averages rank gradients, so a
            # slice's mean loss is weighted by its share of the batch to give the global mean exactly
            batches = [b for b in batches if len(b) >= self.dist_.world]
            weights = [len(self.dist_.shard(b)) * self.dist_.world / len(b) for b in batches]
            batches = [self.dist_.shard(b) for b in batches]
        model.train()
        total, n, start = 0.0, 0, time.time()
        stream = iterate_states(self.cache_, batches, y) if cached else iterate(ids, batches, pad_id, y)
        for w, (b, x, mask, labels) in zip(weights, stream):
            x, mask, labels = (v.to(self.device_) for v in (x, mask, labels))
            inputs = (None, mask, labels, x) if cached else (x, mask, labels, None)
            teacher = None if self.teacher_ is None else self.teacher_[torch.as_tensor(b)].to(self.device_)
            optimizer.zero_grad(set_to_none=True)
            step = functools.partial(self._batch_loss, self.train_model_, *inputs[:3], weight=w, teacher=teacher)
            if cached:      # FGM / GP perturb the cached states: the first trainable layer's input
                loss = backward_step(lambda s: step(lower_states=s), None, t.fgm_epsilon, t.gp_weight,
                                     states=x) / w
            else:
                loss = backward_step(step, embeddings, t.fgm_epsilon, t.gp_weight) / w
            # the norm is needed to see a non-finite gradient; an infinite bound leaves the gradients as they are
            norm = torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                                  t.clip or float("inf"))
            if self._finite(loss, norm):
                optimizer.step()
                scheduler.step()
                if ema:
                    ema.update()
                state.step += 1
                state.bad_steps, state.last_finite_loss = 0, float(loss)
                total += loss.item() * len(b)
                n += len(b)
            else:           # skipped (no update, the schedule waits); too many in a row is divergence
                state.bad_steps += 1
                if state.bad_steps >= t.max_bad_steps:
                    last = state.last_finite_loss
                    raise HmtcError(f"training diverged at epoch {epoch + 1}, step {state.step + state.bad_steps}: "
                                    f"{state.bad_steps} consecutive steps with a non-finite loss or gradient "
                                    f"(last finite loss {'none' if last is None else f'{last:.4g}'}); "
                                    "lower train.lr / train.head_lr", self.run_dir)
            progress.update(task, advance=len(b),
                            info=f"loss {total / max(1, n):.4f} · {n / (time.time() - start):.1f} samples/s")
        progress.remove_task(task)
        if n == 0:
            raise HmtcError(f"epoch {epoch + 1} took no optimizer step (no training batch, or every one skipped)",
                            self.run_dir)
        if self.dist_.active:       # report the loss over the whole epoch, not this rank's share
            sums = torch.tensor([total, float(n)])
            torch.distributed.all_reduce(sums)
            total, n = sums.tolist()
        return total / max(1, n)

    def _finite(self, loss: torch.Tensor, norm: torch.Tensor) -> bool:
        """Whether this step's loss and gradient norm are finite, on every rank of a DDP job."""
        ok = torch.isfinite(loss.detach().float()) & torch.isfinite(norm.detach().float())
        if self.dist_.active:
            flag = ok.float().reshape(1)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            ok = flag[0] > 0
        return bool(ok)

    def _batch_loss(self, model, input_ids, mask, labels, lower_states=None, weight: float = 1.0,
                    teacher: torch.Tensor | None = None) -> torch.Tensor:
        """The training loss of one batch under autocast, with R-Drop or distillation when configured."""
        t = self.config.train
        with autocast(self.device_, t.bf16):
            if t.rdrop_alpha:
                return weight * rdrop_loss(model, input_ids, mask, labels, t.rdrop_alpha, lower_states)
            out = model(input_ids, mask, labels=labels, lower_states=lower_states)
            if teacher is None:
                return weight * out.loss
            a = t.distill_alpha
            return weight * ((1 - a) * out.loss + a * distillation_loss(out.logits, teacher, t.distill_temperature))

    def _teacher_logits(self, data: Prepared, progress: Progress) -> torch.Tensor:
        """The teacher run's logits (S, N) on the training texts, in this run's node order; a
        seeds folder as teacher gives each seed's run its own seed's teacher."""
        t = self.config.train
        if t.rdrop_alpha:
            raise ConfigError("train.teacher cannot be combined with R-Drop (train.rdrop_alpha)")
        own_seed = Path(t.teacher) / f"seed-{t.seed}"
        folder = locate(own_seed if own_seed.is_dir() else t.teacher)[1]
        teacher = load_checkpoint(folder)
        if list(teacher.index.ids) != list(data.index.ids):
            raise ConfigError(f"train.teacher {t.teacher}: its taxonomy's nodes differ from this run's")
        return torch.from_numpy(teacher.scores(data.texts["train"], progress=progress))

    def _cache_frozen(self, model, data: Prepared, pad_id: int,
                      progress: Progress) -> tuple[list[torch.Tensor], int, int]:
        """Each training text's token states under the frozen part (bf16 when training in bf16), how
        many were taken from ``frozen_caches`` and how many read from the disk store
        (``train.frozen_store``) rather than computed."""
        t = self.config.train
        if not getattr(model, "supports_cache", False):
            raise ConfigError("train.cache_frozen does not work with this model/head "
                              "(its encoder input changes with the labels)")
        model.encoder.check_split()
        ids = data.token_ids["train"]
        key = frozen_fingerprint(model.encoder, t.bf16, model.windows)
        # under torchrun the main process writes the store; the others keep their states in memory
        store = FrozenStore(store_root() / key) if t.frozen_store and self.dist_.is_main else None
        known: dict = {}
        if self.frozen_caches is not None:
            # per text, not per split: each seed draws its own dev split from the training file
            if key not in self.frozen_caches:       # hold one frozen part's states at a time
                self.frozen_caches.clear()
            known = self.frozen_caches.setdefault(key, {})
        keys = [text_key(x) for x in ids]          # the store's names, in memory too
        missing = [i for i, k in enumerate(keys) if k not in known]
        stored = store.holds([keys[i] for i in missing]) if store is not None else 0
        built = cache_lower_states(model.encoder, [ids[i] for i in missing], pad_id, t.eval_batch_size,
                                   t.bf16, self.device_, progress, model.windows, store,
                                   keep=torch.bfloat16 if t.bf16 else None)
        if self.frozen_caches is None:
            return built, 0, stored
        for i, states in zip(missing, built):
            known[keys[i]] = states
        return [known[k] for k in keys], len(ids) - len(missing), stored

    def _dev_states(self, model, data: Prepared, pad_id: int,
                    progress: Progress) -> tuple[np.ndarray, list[torch.Tensor]]:
        """The dev texts' states under the frozen part, longest first (their order), computed once
        for a run that caches the frozen part, so each epoch's dev pass runs only the layers that
        train. Kept as computed (no cast) and batched as :meth:`score_ids` batches, so the dev
        scores are bitwise those of the uncached forward (CPU): the best epoch is the one the
        uncached pass picks. It matters most where dev is large against train: a short update of a
        trained run (experiments/findings.md, "A taxonomy that gains nodes")."""
        t, ids = self.config.train, data.token_ids["dev"]
        order = np.argsort(-np.asarray([len(x) for x in ids], dtype=np.int64), kind="stable")
        states = cache_lower_states(model.encoder, [ids[i] for i in order], pad_id, t.eval_batch_size, t.bf16,
                                    self.device_, progress, model.windows)
        return order, states

    def _dev_metrics(self, model, data: Prepared, pad_id: int, progress: Progress) -> dict:
        t = self.config.train
        if self.dev_states_ is not None:
            order, states = self.dev_states_
            logits = model.score_states(states, t.eval_batch_size, t.bf16, self.device_)
            scores = np.empty_like(logits)
            scores[order] = logits
        else:
            scores = model.score_ids(data.token_ids["dev"], t.eval_batch_size, t.bf16, self.device_, progress)
        pred = data.decoding.apply(scores, data.index, back_off=False)     # untuned: threshold 0
        return evaluate(data.labels["dev"], pred, data.index, include_per_label=False)

    # ---- resume state: optimizer, EMA and counters beside the checkpoint ----------------------
    def _save_state(self, folder: Path, model, taxonomy, optimizer, ema, state: TrainState) -> None:
        tensors, groups = {}, []
        sd = optimizer.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"opt.{pid}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        for g in sd["param_groups"]:
            groups.append({k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])})
        if ema:
            for i, s in enumerate(ema.shadow):
                tensors[f"ema.{i}"] = s
        tensors["rng.torch"] = torch.get_rng_state()
        blob = safetensors.torch.save({k: v.contiguous() for k, v in tensors.items()})
        meta = json.dumps({**state.to_json(), "param_groups": groups, "ema_updates": ema.updates if ema else 0},
                          ensure_ascii=False).encode("utf-8")
        save_checkpoint(folder, model, taxonomy, self.config,
                        extra_files={"train_state.safetensors": blob, "train_state.json": meta})

    def _check_same_run(self) -> None:
        """A resumed run is the run it resumes: its stored config must match this one (keys that
        only say where files go or how fast to score excepted), unless ``accept_changes``, which
        writes the changes into ``run.json``."""
        stored_path = self.run_dir / "config.json"
        try:
            stored = json.loads(stored_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise HmtcError("cannot resume: the run's config.json is missing or unreadable", stored_path) from None
        if not isinstance(stored, dict):
            raise HmtcError("cannot resume: the run's config.json holds no config table", stored_path)
        changes = config_changes(upgrade_config(stored), self.config.to_dict())
        if not changes:
            return
        listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in list(changes.items())[:6])
        if not self.accept_changes:
            raise HmtcError(f"--resume with another config than the run's ({len(changes)} key(s) differ: {listed}); "
                            "resume with the run's own settings, train into a new --out, or pass "
                            "--accept-changes to continue with these (run.json and the record keep them)",
                            self.run_dir)
        meta_path = self.run_dir / "run.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
        meta.setdefault("resumed_with_changes", []).append(
            {"at": now(), "changes": {k: list(v) for k, v in changes.items()}})
        atomic_write_json(meta_path, meta)
        self.console.print(f"note: resuming with {len(changes)} changed key(s): {escape(listed)}")

    def _finish(self, last: Path, state: TrainState, model, data: Prepared) -> None:
        """A finished run keeps one small copy of the weights: ``best/`` with its vocabulary
        pruned to what the training and dev texts and the taxonomy's names use and its tensors
        stored in ``train.save_dtype`` (:mod:`hmtc.slim`), and ``last/`` reduced to its
        ``train_state.json``, marked finished (the figures records and reports read): the last
        epoch's weights and optimizer state go unless ``train.keep_last``."""
        t = self.config.train
        prune = t.prune_vocab if isinstance(t.prune_vocab, bool) else \
            (self.config.data.shots == "all" and self.config.data.train_fraction >= 1.0)
        if prune or t.save_dtype != "float32":
            seen = [*data.texts["train"], *data.texts["dev"], *data.index.names,
                    *(d for d in data.index.descriptions if d)]
            prefixes = {model.text_prefix, str(getattr(model.config, "passage_prefix", ""))}
            state.slim = slim_checkpoint(self.run_dir / "best", seen, prefixes, prune, t.save_dtype)
        state.finished = True
        if not t.keep_last:
            with versioned_dir(last) as tmp:
                atomic_write_json(tmp / "train_state.json", state.to_json())

    def _load_state(self, folder: Path, model, optimizer, ema) -> TrainState:
        safetensors.torch.load_model(model, str(folder / "model.safetensors"), strict=False)
        meta = json.loads((folder / "train_state.json").read_text(encoding="utf-8"))
        tensors = safetensors.torch.load_file(str(folder / "train_state.safetensors"))
        opt_state: dict = {}
        for key, v in tensors.items():
            if key.startswith("opt."):
                _, pid, name = key.split(".", 2)
                opt_state.setdefault(int(pid), {})[name] = v
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta.pop("param_groups")})
        if ema:
            for i, s in enumerate(ema.shadow):
                s.copy_(tensors[f"ema.{i}"])
            ema.updates = meta.get("ema_updates", 0)
        torch.set_rng_state(tensors["rng.torch"])
        return TrainState.from_json(meta)

