"""The settings of the distillation experiments (notebooks 02, 03, 05 and the training CLI): one typed, frozen
record, validated once where it is made.

Why a dataclass and not a dict: the same values travel through teacher fine-tuning, general and task
distillation and the records' cache keys; a misspelt key or a wrong type should fail here, with the field's
name, not an hour later inside a training run. ``params/<profile>.yaml`` holds the values (the notebooks'
parameters cells carry the ``cpu`` ones); the defaults below are the paper's recipe (`paper` profile).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from tdlib.core.errors import ConfigError, check_choice
from tdlib.core.heads import POOLINGS
from tdlib.core.modeling_tdlib import init_name
from tdlib.core.precision import PRECISIONS
from tdlib.data.glue import get_task
from tdlib.distill.losses import OBJECTIVES

PAPER_TASK_EPOCHS = {"cola": [20, 30], "mnli": [3, 3], "mrpc": [20, 20], "sst2": [5, 5], "stsb": [15, 5],
                     "qqp": [3, 3], "qnli": [10, 10], "rte": [20, 20]}


@dataclass(frozen=True)
class Settings:
    """Every value an experiment reads. A per-task setting is one value for every task or a ``{task: value}`` dict."""

    teacher: str = "minilm"
    tasks: list = field(default_factory=lambda: ["cola", "sst2", "mrpc", "stsb", "rte"])
    students: list = field(default_factory=lambda: [[36, 192], [16, 96]])  # (rank_layer, rank_dim)
    baselines: list = field(default_factory=lambda: [[1, 384], [1, 144]])  # (layers, hidden) per student
    ops: str = "san_ffn"
    # the task head (tdlib.core.heads): BERT's [CLS] pooler, "mean" (sentence-transformers' pooling) or, for a
    # regression task on sentence pairs, "cosine" of the two sentences' embeddings; one value or {task: value}
    pooling: str | dict = "cls"
    max_train_examples: int | dict | None = None  # per task; None: all
    max_length: int | None = None  # None: the task's 64/128
    batch_size: int = 32
    finetune_steps: int | dict | None = None  # per task; None: finetune_epochs
    finetune_epochs: float | dict = 3.0  # per task
    finetune_lr: float | dict = 5e-5  # per task
    # the task head's lr in teacher fine-tuning (TrainConfig.head_lr), per task; None: finetune_lr
    finetune_head_lr: float | dict | None = None
    general_steps: int = 1000
    general_sequences: int = 100_000
    general_max_length: int = 128
    general_lr: float = 1e-4
    # general distillation with the teacher online: its targets from one compiled graph (TrainConfig.compile_teacher)
    compile_teacher: bool = False
    stage1_steps: int | None = None  # None: task_epochs
    stage2_steps: int | None = None
    # stage-2 steps at which each task run also takes the dev metrics (0: the model stage 1 left; the last must
    # be stage2_steps): the task-distillation curve notebooks 03 and 09 read; None: the final model only
    task_curve: list | None = None
    task_lr: float = 5e-5
    # task distillation's stage-1 loss against the fine-tuned teacher: the paper's "last_layer" or
    # "all_layers_cos" (tdlib.distill.losses.objective_loss)
    task_objective: str = "last_layer"
    # task distillation once per seed (the seed of both stages' data order and step draws; the teacher, the
    # general-distilled encoder and the training data stay those of ``seed``): a record gives each model's mean
    # over the seeds and their range. None: once, with ``seed``
    task_seeds: list | None = None
    task_epochs: dict = field(default_factory=lambda: dict(PAPER_TASK_EPOCHS))  # (stage1, stage2) per task
    checkpoint_every: int = 200
    seed: int = 0
    # how a step runs (tdlib.distill.loop.TrainConfig): matmul precision for training and evaluation, and two choices
    # of the distillation stages (the paper's recipe: dropout on, every parameter trains)
    precision: str = "auto"
    distill_dropout: bool = True
    train_word_embeddings: bool = True
    # general distillation reads the teacher's targets from a 16-bit cache shared by every student
    # (tdlib.distill.teacher_cache); off by default (the paper profile's corpus would need terabytes)
    teacher_cache: bool = False
    # general distillation's loss: the paper's "last_layer" or "all_layers_cos" (tdlib.distill.losses.objective_loss)
    general_objective: str = "last_layer"
    # the student's init (protocol 1): "pretrained" (the paper's Tucker fit), "whitened" or "local" (data-aware,
    # tdlib.core.fitting; calibrated on held-out text), "random" or "zero" (tdlib.compress)
    init: str = "pretrained"
    # recovery curves (tdlib.distill.proxies) at this many geometric steps of general distillation; 0: no curve
    curve_points: int = 0
    proxy_sequences: int = 256
    proxy_pairs: int | None = None  # the first STS-B dev pairs the proxies score; None: all (quick runs: fewer)
    # curve-only runs of the first Tucker student, each a dict of spec overrides: {"init": "zero"},
    # {"objective": "last_layer"} (protocol 1's controls, the paper's loss as the reference line)
    controls: list = field(default_factory=list)
    # the method experiment (notebook 02): one task, one budget (encoder weights / ratio), these methods; with
    # ``general``, each method's student is decomposed from the pre-trained teacher and general-distilled (this
    # record's general_* settings, as in notebook 03) before its task distillation, instead of decomposed from the
    # fine-tuned teacher
    task: str | None = None
    ratio: float | None = None
    methods: list | None = None
    general: bool = False

    def validate(self) -> Settings:
        if not isinstance(self.compile_teacher, bool):
            raise ConfigError(f"compile_teacher must be true or false, got {self.compile_teacher!r}")
        if self.proxy_pairs is not None and (isinstance(self.proxy_pairs, bool) or not isinstance(self.proxy_pairs, int)
                                             or self.proxy_pairs < 2):
            raise ConfigError(f"proxy_pairs must be None (every STS-B dev pair) or a number of pairs >= 2, "
                              f"got {self.proxy_pairs!r}")
        check_pooling(self.pooling, self.tasks)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("general_objective", self.general_objective, OBJECTIVES)
        check_choice("task_objective", self.task_objective, OBJECTIVES)
        init_name(self.init)
        for name in ("batch_size", "general_steps", "general_sequences", "general_max_length"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.general, bool):
            raise ConfigError(f"general must be true or false (general distillation before each method's task "
                              f"distillation), got {self.general!r}")
        if isinstance(self.curve_points, bool) or not isinstance(self.curve_points, int) or self.curve_points < 0:
            raise ConfigError(f"curve_points must be an integer >= 0 (0: no recovery curve), got {self.curve_points!r}")
        head_lr = self.finetune_head_lr
        head_lrs = head_lr.values() if isinstance(head_lr, dict) else [head_lr]
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0) for v in head_lrs):
            raise ConfigError(f"finetune_head_lr must be a positive number, null (the task's finetune_lr) or a "
                              f"{{task: value}} dict of them, got {self.finetune_head_lr!r}")
        if self.task_seeds is not None and (
                not isinstance(self.task_seeds, list | tuple) or not self.task_seeds
                or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in self.task_seeds)
                or len(set(self.task_seeds)) != len(self.task_seeds)):
            raise ConfigError(f"task_seeds must be a list of distinct integers >= 0, e.g. [0, 1, 2] (or null: "
                              f"once, with seed), got {self.task_seeds!r}")
        if self.task_curve is not None:
            if self.stage2_steps is None:
                raise ConfigError("task_curve needs stage2_steps (a curve ends at the run's last step); set "
                                  "stage2_steps or task_curve: null")
            check_curve(self.task_curve, self.stage2_steps, "task_curve")
        for pair_list, what in ((self.students, "students: [rank_layer, rank_dim]"),
                                (self.baselines or [], "baselines: [layers, hidden]")):
            if not all(isinstance(p, list | tuple) and len(p) == 2 for p in pair_list if p):
                raise ConfigError(f"every entry of {what.split(':')[0]} is a pair ({what}), got {pair_list!r}")
        for override in self.controls:
            if not isinstance(override, dict):
                raise ConfigError(f"a control is a dict of overrides, e.g. {{init: zero}}; got {override!r}")
            unknown = sorted(set(override) - {"init", "objective"})
            if unknown:
                raise ConfigError(f"a control overrides 'init' and/or 'objective', not {unknown}: "
                                  "e.g. {init: random}")
            init_name(override.get("init", "pretrained"))
            check_choice("objective", override.get("objective", "last_layer"), OBJECTIVES)
        return self

    def seeds_for_tasks(self) -> list[int]:
        """The seeds task distillation runs with: ``task_seeds``, else ``[seed]``."""
        return list(self.task_seeds) if self.task_seeds else [self.seed]

    def pooling_for(self, task: str) -> str:
        """The task head of ``task`` (``pooling`` is one value or a dict that names every task)."""
        return self.pooling[task] if isinstance(self.pooling, dict) else self.pooling

    def replace(self, **changes) -> Settings:
        return dataclasses.replace(self, **changes).validate()

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def check_curve(curve: list[int], stage2_steps: int, name: str = "curve") -> list[int]:
    """The curve's steps, sorted; each within stage 2 (0 = the model stage 1 left), the last one its end.
    ``name`` is the parameter an error names."""
    if not isinstance(curve, list | tuple) or not curve or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in curve):
        raise ConfigError(f"{name} must be a list of stage-2 steps >= 0, e.g. [0, 20, 40], got {curve!r}")
    if max(curve) != stage2_steps:
        raise ConfigError(f"{name} must end at stage2_steps ({stage2_steps}), got {sorted(curve)}: its last point "
                          "is the run's final model")
    return sorted(set(curve))


EXPERIMENT_ONLY = ("task", "ratio", "methods", "general")  # the method experiment's own fields
# the notebooks' GLUE parameters: a notebook passes every parameter named here (and only those)
GLUE_DEFAULTS: dict = {f.name: getattr(Settings(), f.name) for f in dataclasses.fields(Settings)
                       if f.name not in EXPERIMENT_ONLY}
# GLUE parameters that notebooks 03 and 05 gained after their records were made: left out of a record's key at
# this value (the one that computes what those records computed), so every earlier record keeps its hash and
# notebooks 07 and 09, keyed by 03's settings, keep theirs
UNKEYED_AT: dict = {"finetune_head_lr": None, "compile_teacher": False, "proxy_pairs": None}


def keyed(params: dict) -> dict:
    """``params`` as a GLUE record's key holds them: :data:`UNKEYED_AT` fields at that value left out."""
    return {k: v for k, v in params.items() if not (k in UNKEYED_AT and v == UNKEYED_AT[k])}


def settings(params: dict | Settings) -> Settings:
    """``params`` over the defaults, validated; unknown names are one error naming the known ones."""
    if isinstance(params, Settings):
        return params.validate()
    known = {f.name for f in dataclasses.fields(Settings)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(f"unknown experiment parameter(s) {unknown}; known: {sorted(GLUE_DEFAULTS)}")
    return Settings(**params).validate()


def check_pooling(pooling: str | dict, tasks: list[str]) -> None:
    """One ConfigError for a head that does not exist or does not fit its task (``pooling``: one or per task)."""

    if not isinstance(pooling, dict):
        if pooling == "cosine":
            raise ConfigError("pooling 'cosine' is a head for sentence-pair regression (STS-B); set it per task, "
                              "e.g. pooling: {cola: mean, stsb: cosine, ...}")
        check_choice("pooling", pooling, POOLINGS)
        return
    missing = [t for t in tasks if t not in pooling]
    if missing:
        raise ConfigError(f"pooling is set per task but names no head for {missing}; give every task of "
                          f"'tasks' one of {list(POOLINGS)}, e.g. {{{missing[0]}: mean}}")
    for task, value in pooling.items():
        check_choice(f"pooling of {task}", value, POOLINGS)
        spec = get_task(task)
        if value == "cosine" and (spec.text_b is None or not spec.is_regression):
            raise ConfigError(f"pooling 'cosine' scores sentence pairs with one number; {spec.name} is not a "
                              "regression task on pairs (STS-B is): use 'mean' or 'cls'")
