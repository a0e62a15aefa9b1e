"""Command line: ``python -m tdlib <command> ...``, a thin mirror of the Python API.

Errors on bad input (TdlibError) print one line, ``error: ...``, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from sentence_transformers import SentenceTransformer

from tdlib.core.baseline import ffn_for_budget
from tdlib.core.deploy import ORT_DISABLED_FUSIONS, export_onnx, export_openvino
from tdlib.core.errors import ConfigError, TdlibError
from tdlib.core.export import FORMATS, export_sentence_transformers
from tdlib.core.fitting import BlockwiseFit
from tdlib.core.heads import pooling_of
from tdlib.core.io import write_json_atomic
from tdlib.core.modeling import compress, compression_spec, count_params, from_pretrained
from tdlib.core.modeling_tdlib import DATA_AWARE, INIT_ALIASES, INITS, init_name, write_model_card
from tdlib.core.pretrained import load_model, load_tokenizer, saved_pooling
from tdlib.core.ranks import Geometry, pick_ranks
from tdlib.data.calibration import cached_calibration
from tdlib.data.glue import get_task, task_files
from tdlib.distill.loop import TrainingInterrupted, is_main_process
from tdlib.distill.proxies import st_stsb
from tdlib.paper.reproduce import load_profile, scaling_params, use_shared_data
from tdlib.studies import experiments, scaling
from tdlib.studies.provenance import seed_everything
from tdlib.studies.records import runs_dir, save_record
from tdlib.studies.runs import Data, dev_logits, dev_metrics, run_general, run_task_student, run_teacher, tucker_budget
from tdlib.studies.settings import settings
from tdlib.studies.specs import BaselineSpec, GivenSpec, TuckerSpec
from tdlib.studies.speed import GEOMETRIES, run_speed, time_tucker
from tdlib.studies.train_speed import profile_train_bench


def _print_counts(counts) -> None:
    print(f"  decomposed parameters : {counts.decomposed:,} (dense maps: {counts.raw_decomposable:,})")
    print(f"  compression ratio     : {counts.ratio:.2f}x (encoder weights), "
          f"{counts.ratio_with_bias_ln:.2f}x (with biases/LayerNorm)")
    print(f"  encoder / embeddings / head / total: {counts.encoder:,} / {counts.embeddings:,} / "
          f"{counts.head:,} / {counts.total:,}")


def cmd_compress(args) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise TdlibError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    start = time.perf_counter()
    print(f"loading teacher {args.teacher!r}", flush=True)
    model = load_model(args.teacher, num_labels=args.num_labels)
    calibration = fit_options = None
    if init_name(args.init) in DATA_AWARE:
        print(f"calibrating on {args.calibration_sequences} held-out sequences (TDLIB_HELDOUT or the corpus's "
              "heldout folder)", flush=True)
        calibration = cached_calibration(model, load_tokenizer(args.teacher), runs_dir("cli") / "calibration",
                                         args.calibration_sequences, ops=args.ops)
        fit_options = BlockwiseFit(steps=args.fit_steps, seed=args.seed, progress=True)
    print(f"decomposing ({args.ops}) with Tucker rank_layer={args.rank_layer} rank_dim={args.rank_dim}, "
          f"init {args.init}", flush=True)
    student = compress(model, args.rank_layer, args.rank_dim, ops=args.ops, init=args.init, seed=args.seed,
                       n_iter_max=args.n_iter_max, progress=True, calibration=calibration, fit=fit_options)
    counts = count_params(student)
    fit = student.tdlib_decomposition
    print(f"compressed {args.teacher} -> IV-{args.rank_layer}-{args.rank_dim} ({args.ops})")
    _print_counts(counts)
    if fit is not None:
        print(f"  relative weight error : {fit.errors_[-1]:.4f} after {len(fit.errors_)} HOOI sweeps "
              f"({fit.fit_seconds_:.1f} s)")
    tmp = out.with_name(out.name + ".partial")
    student.save_pretrained(tmp)
    try:
        load_tokenizer(args.teacher).save_pretrained(tmp)
    except TdlibError:
        pass
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"saved to {out} ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_info(args) -> int:
    model = load_model(args.path)
    spec = compression_spec(model)
    print(f"{args.path}: {type(model).__name__}")
    if spec:
        print(f"  Tucker IV-{spec.rank_layer}-{spec.rank_dim}, ops={spec.ops}, n={spec.n}, D={spec.d_model}, "
              f"base={spec.base_model_type}, implementation={spec.implementation}")
    else:
        print("  dense (not compressed by tdlib)")
    _print_counts(count_params(model))
    return 0


def cmd_export(args) -> int:
    """A saved student in a deployment format: a sentence-transformers directory with its model card, one ONNX file
    (the encoder: input_ids, attention_mask -> last_hidden_state) that ONNX Runtime runs without tdlib, or the same
    encoder as OpenVINO's .xml and .bin."""
    if args.format in ("onnx", "openvino"):
        out = Path(args.out)
        written = [out, out.with_suffix(".bin")] if args.format == "openvino" else [out]
        for path in written:
            if path.exists() and not args.overwrite:
                raise ConfigError(f"{path} exists: pass --overwrite to replace it, or another --out")
        if args.format == "onnx":
            export_onnx(from_pretrained(args.path), out)
            print(f"wrote {out}: onnxruntime.InferenceSession('{out}', "
                  f"disabled_optimizers={list(ORT_DISABLED_FUSIONS)}) runs it (inputs input_ids, attention_mask)")
        else:
            export_openvino(from_pretrained(args.path), out)
            print(f"wrote {out} and {out.with_suffix('.bin')}: openvino.Core().compile_model('{out}', 'CPU', "
                  "{'INFERENCE_PRECISION_HINT': 'f32'}) runs it (inputs input_ids, attention_mask)")
        return 0
    use_shared_data()
    out = export_sentence_transformers(args.path, args.out, args.teacher, overwrite=args.overwrite)
    if args.stsb:
        st = SentenceTransformer(str(out), device="cpu")
        score = st_stsb(st)
        print(f"zero-shot STS-B dev Spearman x 100 (sentence-transformers' evaluator): {score:.2f}")
        write_model_card(st[0].auto_model, out, "sentence-transformers",
                         {"zero-shot STS-B dev Spearman x 100 (sentence-transformers' evaluator)": f"{score:.2f}"})
    print(f"wrote {out}: SentenceTransformer('{out}') loads it (with tdlib imported, or trust_remote_code=True)")
    return 0


def cmd_ranks(args) -> int:
    geom = Geometry.of(load_model(args.teacher))
    choices = pick_ranks(geom, ratio=args.ratio, budget=args.budget, ops=args.ops, rank_dim_step=args.step,
                         seq_len=args.seq_len)
    if args.json:
        print(json.dumps([c.as_dict() for c in choices], indent=2))
        return 0
    print(f"{'rank_layer':>10} {'rank_dim':>8} {'params':>12} {'ratio':>8} {'MAC ratio':>9}")
    for c in choices:
        print(f"{c.rank_layer:>10} {c.rank_dim:>8} {c.n_params:>12,} {c.ratio:>7.2f}x {c.mac_ratio:>8.2f}x")
    return 0


def _pairs(text: str, name: str) -> list[tuple[int, int]]:
    try:
        return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item]
    except ValueError:
        raise TdlibError(f"--{name} takes AxB pairs separated by commas, e.g. 8x128,1x32; got {text!r}") from None


def cmd_bench(args) -> int:
    seed_everything(args.seed)
    if args.what == "train":
        configs, baselines = _pairs(args.configs, "configs"), _pairs(args.baselines, "baselines")
        setting = {"precision": args.precision, "dropout": not args.no_dropout,
                   "train_word_embeddings": not args.freeze_word_embeddings}
        result = profile_train_bench(args.teacher, configs, baselines, "san_ffn", setting, args.threads,
                                     min_run_time=args.min_run_time, seed=args.seed)
        print(f"{'stage':14} {'model':20} {'setting':31} {'precision':9} {'ms/step':>8} {'tokens/s':>9} "
              f"{'of roof':>7}  x paper recipe [95%]")
        for r in result["rows"]:
            x = f"{r['speedup']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" if "speedup" in r else ""
            print(f"{r['stage']:14} {r['model']:20} {r['setting']:31} {r['precision']:9} {r['step_ms']:>8.0f} "
                  f"{r['tokens_per_s']:>9.0f} {r['fraction_of_roofline']:>7.2f}  {x}")
        params = {"what": "train", "teacher": args.teacher, "configs": configs, "baselines": baselines,
                  **setting, "threads": args.threads}
    elif args.what == "tucker":
        shape = tuple(int(v) for v in args.shape.split("x"))
        result = time_tucker(shape, args.rank_layer, args.rank_dim, args.seed, args.threads)
        print(f"Tucker-HOOI {args.shape} rank ({args.rank_layer}, {args.rank_dim}, {args.rank_dim}): "
              f"{result['seconds']:.1f} s, {result['sweeps']} sweeps, relative error {result['rel_error']:.4f}, "
              f"{args.threads} threads")
        params = {"what": "tucker", "shape": list(shape), "rank_layer": args.rank_layer, "rank_dim": args.rank_dim}
    else:
        if args.geometry not in GEOMETRIES:
            raise TdlibError(f"unknown geometry {args.geometry!r}; choose one of {sorted(GEOMETRIES)}")
        configs, grid = _pairs(args.configs, "configs"), _pairs(args.grid, "grid")
        result = run_speed(args.geometry, configs, grid, args.threads, args.min_run_time, not args.no_peers,
                           not args.no_memory, args.seed)
        print(f"{'model':28} {'batch':>5} {'seq':>4} {'ms':>8} {'speedup':>7} {'MAC x':>6} {'of MAC':>6} "
              f"{'params':>10} {'peak MB':>7}")
        for r in result["rows"]:
            peak = r.get("peak_forward_mb")
            print(f"{r['model']:28} {r['batch']:>5} {r['seq_len']:>4} {r['median_ms']:>8.1f} {r['speedup']:>6.2f}x "
                  f"{r['mac_ratio']:>5.2f}x {r['fraction_of_mac_limit']:>6.2f} {r['decomposed_params']:>10,} "
                  f"{'' if peak is None else f'{peak:.0f}':>7}")
        params = {"what": "speed", "geometry": args.geometry, "configs": configs, "grid": grid,
                  "threads": args.threads, "min_run_time": args.min_run_time}
    if args.out:
        save_record(args.out, params, result, seed=args.seed)
        print(f"wrote {args.out}")
    return 0


# -- training and evaluation ------------------------------------------------------------------------
def _settings(args, **extra):
    keys = ("teacher", "max_train_examples", "max_length", "batch_size", "seed", "checkpoint_every")
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    return settings({**given, **{k: v for k, v in extra.items() if v is not None}})


def _write_results(out: Path, params: dict, result: dict, seed: int, data_files=()) -> None:
    if not is_main_process():
        return
    save_record(out / "results.json", params, result, seed=seed, data_files=data_files)
    print(f"wrote {out / 'results.json'}")


def _task_files(task: str) -> list:
    return task_files(task)


def _print_metrics(label: str, metrics: dict) -> None:
    print(f"{label}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))


def cmd_finetune(args) -> int:
    s = _settings(args, finetune_steps=args.steps, finetune_epochs=args.epochs, finetune_lr=args.lr,
                  finetune_head_lr=args.head_lr, tasks=[args.task], pooling={args.task: args.pooling})
    out = Path(args.out)
    model_dir, info = run_teacher(s, Data(s, load_tokenizer(s.teacher)), args.task, out=out)
    _print_metrics(f"{args.task} dev ({model_dir})", info["metrics"])
    _write_results(out, {"command": "finetune", "task": args.task, **s.as_dict()}, info, s.seed,
                   _task_files(args.task))
    return 0


def cmd_distill(args) -> int:
    out = Path(args.out)
    if args.stage == "general":
        s = _settings(args, general_steps=args.steps, general_sequences=args.sequences, general_lr=args.lr,
                      general_max_length=args.corpus_max_length)
        if args.rank_layer and args.rank_dim:
            spec = TuckerSpec(args.rank_layer, args.rank_dim, args.ops)
        elif args.layers and args.hidden:
            ffn = args.ffn
            if ffn is None and args.budget_of:
                rl, rd = _pairs(args.budget_of, "budget-of")[0]
                ffn = ffn_for_budget(tucker_budget(load_model(s.teacher), rl, rd, args.ops), args.layers,
                                     args.hidden)
            if ffn is None:
                raise TdlibError("a dense baseline needs --ffn, or --budget-of LxD to match a Tucker student")
            spec = BaselineSpec(args.layers, args.hidden, ffn, args.budget_of)
        else:
            raise TdlibError("distill general needs --rank-layer and --rank-dim (Tucker student) or --layers and "
                             "--hidden (dense baseline)")
        if args.corpus:
            os.environ["TDLIB_CORPUS"] = args.corpus
        model_dir, info = run_general(s, spec, load_tokenizer(s.teacher), None, {}, out=out)
        print(f"{spec.name}: {info['params']:,} encoder weights, final loss {info['final_loss']:.4f}, "
              f"{info['seconds']:.0f} s -> {model_dir}")
        _write_results(out, {"command": "distill general", "student": spec.as_dict(), **s.as_dict()}, info, s.seed)
        return 0
    if not (args.student and args.task):
        raise TdlibError("distill task needs --student (a general-distilled model dir) and --task; "
                         "--teacher is the fine-tuned teacher's dir")
    s = _settings(args, stage1_steps=args.stage1_steps, stage2_steps=args.stage2_steps, task_lr=args.lr,
                  tasks=[args.task], pooling={args.task: saved_pooling(args.teacher)})
    spec = GivenSpec(Path(args.student).name)
    info = run_task_student(s, spec, Data(s, load_tokenizer(s.teacher)), args.task, Path(args.student),
                            Path(args.teacher), None, out=out)
    _print_metrics(f"{args.task} dev ({info['model']})", info["metrics"])
    _write_results(out, {"command": "distill task", "student": args.student, "task": args.task,
                         **s.as_dict()}, info,
                   s.seed, _task_files(args.task))
    return 0


def _evaluation_tokenizer(args, s: dict):
    """The tokenizer a model directory was saved with; else ``--tokenizer``; else the teacher's, said aloud."""

    if args.tokenizer:
        return load_tokenizer(args.tokenizer)
    if (Path(args.model) / "tokenizer_config.json").is_file():
        return load_tokenizer(args.model)
    print(f"note: {args.model} holds no tokenizer; using the teacher's ({s['teacher']!r}); pass --tokenizer "
          "if the model was trained with another", file=sys.stderr)
    return load_tokenizer(s.teacher)


def cmd_evaluate(args) -> int:
    get_task(args.task)  # an unknown or refused task fails before the model loads
    model = load_model(args.model)
    if not hasattr(model, "classifier"):
        raise TdlibError(f"{args.model} has no classification head; evaluate a fine-tuned or task-distilled model")
    s = _settings(args, tasks=[args.task], pooling={args.task: pooling_of(model)})  # data encoded for its head
    data = Data(s, _evaluation_tokenizer(args, s))
    metrics = dev_metrics(args.task, data, dev_logits(model, args.task, data))
    _print_metrics(f"{args.task} dev ({args.model})", metrics)
    if args.out:
        _write_results(Path(args.out), {"command": "evaluate", "model": args.model, "task": args.task, **s.as_dict()},
                       {"metrics": metrics}, s.seed, _task_files(args.task))
    return 0


def cmd_experiment(args) -> int:
    """One whole experiment in this process (what ``run_experiment`` starts under ``accelerate launch``)."""

    params = json.loads(Path(args.params).read_text())
    result = experiments.EXPERIMENTS[args.kind](settings(params), args.workdir, progress=True)
    if is_main_process():
        write_json_atomic(args.out, result)
    return 0


def cmd_scaling(args) -> int:
    """The scaling study's missing points, budget by budget (hours; resumable: run it again to go on)."""

    use_shared_data()
    if scaling.NAME not in load_profile(args.profile):
        raise TdlibError(f"params/{args.profile}.yaml has no {scaling.NAME} section: the study's settings live there")
    params = scaling_params(args.profile)
    if args.list:
        found, missing = scaling.points(params, args.profile)
        print(f"{len(found)} points recorded; {len(missing)} missing:" + "".join(f"\n  {m}" for m in missing))
        return 0
    scaling.run_study(params, args.profile, max_points=args.max_points)
    return 0


def _common_training(p) -> None:
    p.add_argument("--teacher", default="minilm", help="pre-trained (general) or fine-tuned (task) teacher")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max-train-examples", type=int, default=None, help="subsample the training set (seeded)")
    p.add_argument("--max-length", type=int, default=None, help="token length (default: 64 CoLA/SST-2, else 128)")
    p.add_argument("--checkpoint-every", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", required=True, help="run directory (rerunning the command resumes it)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tdlib", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compress", help="Tucker-compress a BERT-family model and save it")
    p.add_argument("--teacher", default="minilm", help="'minilm' (embedded), a hub id or a local directory")
    p.add_argument("--rank-layer", type=int, required=True, help="l: size of the matrix bank")
    p.add_argument("--rank-dim", type=int, required=True, help="d: dimension rank")
    p.add_argument("--ops", default="san_ffn", choices=["san", "ffn", "san_ffn"])
    p.add_argument("--init", default="pretrained", choices=[*INITS, *INIT_ALIASES],
                   help="pretrained (= tucker, the paper's); whitened, local: data-aware (tdlib.core.fitting); "
                        "controls")
    p.add_argument("--calibration-sequences", type=int, default=128,
                   help="held-out sequences of 128 tokens for the data-aware inits")
    p.add_argument("--fit-steps", type=int, default=100, help="steps of the block-wise fit (init local)")
    p.add_argument("--num-labels", type=int, default=None, help="add a sequence-classification head")
    p.add_argument("--n-iter-max", type=int, default=100, help="HOOI sweeps at most")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("info", help="describe a saved (compressed or dense) model")
    p.add_argument("path")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="save a student for its users' tools: a sentence-transformers directory "
                                      "with the teacher's pooling and normalisation, and a model card; or "
                                      "(--format onnx) one ONNX file for ONNX Runtime, or (--format openvino) "
                                      "OpenVINO's .xml and .bin")
    p.add_argument("path", help="a saved student (tdlib checkpoint or dense baseline)")
    p.add_argument("--out", required=True)
    p.add_argument("--format", choices=FORMATS, default="sentence-transformers")
    p.add_argument("--teacher", default="minilm", help="the sentence-transformers teacher whose pooling to keep")
    p.add_argument("--stsb", action="store_true", help="score zero-shot STS-B dev (GLUE_DIR) into the model card")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ranks", help="list Tucker ranks meeting a compression ratio or parameter budget")
    p.add_argument("--teacher", default="minilm")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--ratio", type=float)
    g.add_argument("--budget", type=int)
    p.add_argument("--ops", default="san_ffn", choices=["san", "ffn", "san_ffn"])
    p.add_argument("--step", type=int, default=16, help="rank_dim grid step")
    p.add_argument("--seq-len", type=int, default=128, help="sequence length for the MAC ratio")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ranks)

    p = sub.add_parser("bench", help="time dense vs compressed inference, training throughput, or the Tucker fit")
    p.add_argument("what", choices=["speed", "tucker", "train"])
    p.add_argument("--geometry", default="minilm", help="minilm (real weights), bert-base or tiny (random weights)")
    p.add_argument("--configs", default="36x192,16x96", help="Tucker configs LxD, comma separated")
    p.add_argument("--grid", default="1x32,1x128,8x32,8x128,32x128", help="batch x seq_len points")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-run-time", type=float, default=1.0, help="seconds of timing per cell")
    p.add_argument("--no-peers", action="store_true", help="skip the method-II and tltorch peers")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--shape", default="144x768x768", help="tucker: tensor shape")
    p.add_argument("--teacher", default="minilm", help="train: the teacher whose stages are timed")
    p.add_argument("--baselines", default="1x384,1x144", help="train: equal-budget dense baselines LAYERSxHIDDEN")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"], help="train: profile precision")
    p.add_argument("--no-dropout", action="store_true", help="train: dropout off in distillation")
    p.add_argument("--freeze-word-embeddings", action="store_true", help="train: word embeddings frozen")
    p.add_argument("--rank-layer", type=int, default=72)
    p.add_argument("--rank-dim", type=int, default=384)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write a results JSON with provenance here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("finetune", help="fine-tune a teacher on a GLUE task (GLUE_DIR or the hub)")
    p.add_argument("--task", required=True)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--epochs", type=float, default=None)
    p.add_argument("--pooling", choices=["cls", "mean", "cosine"], default="cls",
                   help="the head reads [CLS] (BERT's, the paper's), the token mean (sentence-transformers "
                        "teachers such as minilm) or, for STS-B, the cosine of the two sentences' mean "
                        "embeddings; task students inherit the teacher's head")
    p.add_argument("--head-lr", type=float, default=None,
                   help="learning rate of the task head (pooler and classifier); default: --lr")
    _common_training(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("distill", help="general distillation (corpus) or two-stage task distillation")
    p.add_argument("stage", choices=["general", "task"])
    p.add_argument("--rank-layer", type=int, help="general: Tucker student's l")
    p.add_argument("--rank-dim", type=int, help="general: Tucker student's d")
    p.add_argument("--ops", default="san_ffn", choices=["san", "ffn", "san_ffn"])
    p.add_argument("--layers", type=int, help="general: dense baseline's layers")
    p.add_argument("--hidden", type=int, help="general: dense baseline's hidden size")
    p.add_argument("--ffn", type=int, help="general: dense baseline's FFN width")
    p.add_argument("--budget-of", help="general: LxD of the Tucker student whose budget the baseline matches")
    p.add_argument("--corpus", help="general: text file or folder (default TDLIB_CORPUS, then the hub)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--sequences", type=int, default=None, help="general: packed sequences to read")
    p.add_argument("--corpus-max-length", type=int, default=None)
    p.add_argument("--student", help="task: general-distilled student's model dir")
    p.add_argument("--task", help="task: GLUE task")
    p.add_argument("--stage1-steps", type=int, default=None)
    p.add_argument("--stage2-steps", type=int, default=None)
    _common_training(p)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="GLUE dev metrics of a fine-tuned or distilled model")
    p.add_argument("--model", required=True)
    p.add_argument("--task", required=True)
    p.add_argument("--tokenizer", help="default: the model directory's own, else the --teacher's")
    p.add_argument("--teacher", default="minilm")
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", help="write results.json with provenance here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("scaling", help="the distillation scaling study (notebook 10): compute its missing points, "
                                       "budget by budget; many hours, resumable")
    p.add_argument("--profile", default="cpu", help="params/<profile>.yaml's 10_scaling section")
    p.add_argument("--max-points", type=int, default=None, help="stop after computing this many points")
    p.add_argument("--list", action="store_true", help="only list the points recorded and missing")
    p.set_defaults(func=cmd_scaling)

    p = sub.add_parser("experiment", help="run a whole GLUE or method experiment from a params JSON (what "
                                          "notebooks launch on several processes)")
    p.add_argument("kind", choices=["glue", "methods", "teacher"])
    p.add_argument("--params", required=True, help="JSON of experiment settings (tdlib.studies.settings.GLUE_DEFAULTS)")
    p.add_argument("--workdir", required=True, help="where training runs live (resumable)")
    p.add_argument("--out", required=True, help="result JSON, written by the main process")
    p.set_defaults(func=cmd_experiment)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except TdlibError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TrainingInterrupted as exc:
        print(exc, file=sys.stderr)
        return 130
