"""Inference runtimes: the eager model (the reference), a compiled graph, and ONNX Runtime.

The eager compressed model keeps its trainable factors and builds its small matrices (M_i V^T or U M_i, folded) into
Python-side caches on the first eval forward. A graph compiler or exporter needs those as constants instead.
:func:`freeze` returns a copy in which every bank map is a :class:`FrozenMap`: the projection U^T (one tensor, shared
by every map that starts with xU, so the three identical x U^T products of a layer's Q, K and V are one common
subexpression for the compiler), the folded matrix and V, as plain tensors; a map that saves no multiply-adds runs as
its dense matrix. Nothing is rebuilt per forward. The dense model freezes to itself (a copy).

Runtimes (:data:`RUNTIMES`), each run through :func:`encoder_runner`, which returns a callable from the inputs to
the last hidden state (float32):

- ``eager``: the model as trained, transformers' SDPA attention. In bf16, a copy with its weights cast to bf16 once
  (as ``from_pretrained(..., torch_dtype=torch.bfloat16)`` loads a model), no autocast: autocast casts every weight
  at every forward, which took about half of the dense forward (measured on a 2-core AMX host at 1 x 128: dense
  71 -> 42 ms, IV-96-128 34 -> 26 ms).
- ``compiled``: ``torch.compile`` (inductor, ``freezing``: weights folded as constants, cast and pre-packed for
  oneDNN once; bf16 by autocast; ``max_autotune``: each GEMM oneDNN's or inductor's C++ template, whichever times
  faster, :func:`compile_frozen`) of the frozen model, its attention SDPA or matmuls and a softmax, whichever is
  faster on this CPU (:func:`cpu_attention`): bias + GELU, residual + LayerNorm (and the scaled, masked softmax)
  become fused loops. One compile per input shape (tens of seconds or more on 2 cores, autotuning included).
- ``onnxruntime``: the frozen model exported to ONNX (:func:`export_onnx`, dynamic batch and sequence axes; attention
  and bias + GELU fused into ONNX Runtime's kernels) and run by ONNX Runtime's CPU provider with all graph
  optimisations but its slower fused residual + LayerNorm (:data:`ORT_DISABLED_FUSIONS`). fp32 only: the CPU provider
  has no bf16 matmul.
- ``openvino``: the frozen model exported to OpenVINO's format through plain ONNX ops (:func:`export_openvino`) and
  run by OpenVINO's CPU plugin, which fuses them itself (bias + GELU into the FFN GEMM, attention into one subgraph) and
  picks its kernels for one input shape (compiled once per shape, as ``compiled`` is); fp32, and bf16 where the CPU
  has it natively (:func:`openvino_runner`).
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx_ir
import onnxruntime as ort
import openvino
import torch
import torch._dynamo.config as dynamo_config
import torch._inductor.config as inductor_config
import torch.nn.functional as F
from onnxscript.rewriter.ort_fusions import optimize_for_ort
from torch import nn

from tdlib.core.errors import ConfigError, check_choice
from tdlib.core.memory import retain_freed_memory
from tdlib.core.modeling_tdlib import BANK_NAME, BankLinear
from tdlib.core.precision import autocast, cpu_flags, isa_cap, native_bf16

RUNTIMES = ("eager", "compiled", "onnxruntime", "openvino")
INPUT_NAMES = ("input_ids", "attention_mask")
# ONNX Runtime's graph fusions left off: its fused residual + LayerNorm kernel (SkipLayerNormalization, onnxruntime
# 1.31 CPU provider) ran about 4x slower than an Add and a LayerNormalization on a 2-core AMX host (1 x 128 x 768:
# 0.27 vs 0.08 ms; 8 x 128: 2.1 vs 0.5 ms), and unfusing it made BERT-base dense 98.7 -> 93.2 ms and IV-96-128
# 34.3 -> 30.3 ms at 1 x 128 (8 x 128: 746 -> 693 and 273 -> 220 ms). export_onnx writes it unfused; onnx_session
# keeps ONNX Runtime from fusing it again (a session of your own: pass disabled_optimizers=ORT_DISABLED_FUSIONS).
ORT_DISABLED_FUSIONS = ("SkipLayerNormFusion",)
RECOMPILE_LIMIT = 256  # compiled graphs of one process (a model per shape and precision), dynamo's default is 8


class FrozenMap(nn.Module):
    """A bank map with its matrices computed once, as plain matmuls: y = ((x U) W) V^T + b, each outer factor only
    where the map's form has it.

    ``u_t`` is U^T (d x D), the one tensor every map that starts with xU reads (``fold``; None for ``fold_in`` and a
    dense map); ``weight`` the map's matrix in F.linear's layout: the folded M V^T ((b*D) x (a*d)), the folded U M
    ((b*d) x (a*D)), or the reconstructed dense W; ``v`` is V where the map ends with V^T (``fold_in``), applied to
    each of its ``blocks_out`` d-wide blocks.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, d_model: int, u_t: torch.Tensor | None = None,
                 v: torch.Tensor | None = None, blocks_in: int = 1, blocks_out: int = 1) -> None:
        super().__init__()
        self.u_t, self.v = u_t, v
        self.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.blocks_in, self.blocks_out, self.d_model = blocks_in, blocks_out, d_model

    @classmethod
    def from_bank_linear(cls, module: BankLinear, u_t: nn.Parameter, v: nn.Parameter) -> FrozenMap:
        """The frozen form of an eval :class:`BankLinear` (its own cached matrix, so the outputs are the same)."""
        module.eval()
        with torch.no_grad():
            weight = module.weight_for_forward()
        if module.implementation == "reconstructed":
            return cls(weight, module.bias, module.bank.d_model)
        return cls(weight, module.bias, module.bank.d_model, u_t=None if module.form == "fold_in" else u_t,
                   v=None if module.form == "fold" else v, blocks_in=module.a, blocks_out=module.b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.u_t is not None:
            if self.blocks_in == 1:
                x = F.linear(x, self.u_t)
            else:
                x = F.linear(x.unflatten(-1, (self.blocks_in, self.d_model)), self.u_t).flatten(-2)
        if self.v is None:
            return F.linear(x, self.weight, self.bias)
        z = F.linear(x, self.weight)
        if self.blocks_out == 1:
            return F.linear(z, self.v, self.bias)
        y = F.linear(z.unflatten(-1, (self.blocks_out, z.shape[-1] // self.blocks_out)), self.v).flatten(-2)
        return y if self.bias is None else y + self.bias


def cpu_attention() -> str:
    """The faster attention kernel of a frozen model on this CPU: ``'sdpa'`` where oneDNN has AMX, else ``'eager'``
    (matmuls and a softmax).

    Measured (2 cores, compiled, one process, interleaved rounds): on an AVX512-BF16 host without AMX, one BERT-base
    layer's attention at 8 x 128 took 3.6 ms with SDPA in fp32 and in bf16, 3.4 ms and 1.8 ms as matmuls, and
    IV-96-128 ran 1.18x, dense 1.05x faster with the matmuls in bf16; on an AMX host the matmuls' fused softmax took
    0.31 ms per layer at 1 x 128 in bf16, and SDPA ran IV-96-128 1.28x (1 x 128) and 1.36x (8 x 128), dense 1.11x
    and 1.16x faster in bf16, and both 1.03-1.08x faster in fp32.
    """
    cap = isa_cap().get("ONEDNN_MAX_CPU_ISA", "").upper()
    return "sdpa" if "amx_bf16" in cpu_flags() and (not cap or "AMX" in cap or cap == "ALL") else "eager"


def freeze(model: nn.Module, attention: str = "auto", keep_factorized: bool = False) -> nn.Module:
    """An eval copy whose bank maps are :class:`FrozenMap` (constants, no caches); ``model`` is left unchanged.

    Parameters
    ----------
    model : nn.Module
        A compressed (or dense) BERT model.
    attention : str
        The copy's attention kernel: ``'eager'`` (matmuls and a softmax, which a compiler fuses), ``'sdpa'``, or
        ``'auto'`` (:func:`cpu_attention` on a CPU, the model's own elsewhere).
    keep_factorized : bool
        Keep every map factorized. By default a map whose factorized forward costs no fewer multiply-adds than its
        dense matrix (:meth:`BankLinear.macs`; e.g. the attention output map at d = D/2: xU then the folded M V^T,
        2*D*d = D*D) runs as that matrix, rebuilt once here: one GEMM instead of two of the same total, at the cost
        of D*D parameters of memory. Measured on a 2-core AMX host, compiled in bf16 at 1 x 128, such a map's two
        products took 182 us against the dense map's 138 us.

    Returns
    -------
    nn.Module
        The copy: same outputs as ``model.eval()``, no parameter requiring grad, no bank (for a dense model, an
        eval copy). What ``torch.compile`` and :func:`export_onnx` take.
    """
    check_choice("attention", attention, ("auto", "eager", "sdpa"))
    with torch.inference_mode(False):  # called under inference_mode, the copy would be made of inference tensors
        frozen = copy.deepcopy(model).eval()
        if attention == "auto":
            attention = cpu_attention() if next(model.parameters()).device.type == "cpu" else None
        if attention and hasattr(frozen, "set_attn_implementation"):
            frozen.set_attn_implementation(attention)
        base = getattr(frozen, "base_model", frozen)
        bank = getattr(getattr(base, "encoder", None), BANK_NAME, None)
        if bank is not None:
            u_t = nn.Parameter(bank.U.detach().T.contiguous(), requires_grad=False)
            v = nn.Parameter(bank.V.detach().clone(), requires_grad=False)
            for name, module in list(frozen.named_modules()):
                if isinstance(module, BankLinear):
                    if (not keep_factorized and module.implementation == "factorized"
                            and module.macs() >= module.in_features * module.out_features):
                        module.implementation = "reconstructed"  # on the copy
                    parent, _, attr = name.rpartition(".")
                    setattr(frozen.get_submodule(parent), attr, FrozenMap.from_bank_linear(module, u_t, v))
            delattr(base.encoder, BANK_NAME)
        for p in frozen.parameters():
            p.requires_grad_(False)
    return frozen


def precision_copy(model: nn.Module, precision: str) -> nn.Module:
    """The model as the eager runtime runs it in ``precision``: the model itself (eval) in fp32; in bf16 an eval copy
    with its weights cast to bf16 once, run without autocast (which casts every weight at every forward)."""
    check_choice("precision", precision, ("fp32", "bf16"))
    if precision == "fp32":
        return model.eval()
    with torch.inference_mode(False):  # called under inference_mode, the copy would be made of inference tensors
        return copy.deepcopy(model).eval().to(torch.bfloat16)


def _hidden(output) -> torch.Tensor:
    return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]


class _Encoder(nn.Module):
    """input_ids, attention_mask -> last hidden state: the signature the runtimes share."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = getattr(model, "base_model", model)
        self.eval()  # the model is an eval copy; the wrapper follows it (torch.onnx.export warns on training mode)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _hidden(self.model(input_ids=input_ids, attention_mask=attention_mask))


def compile_frozen(fn: Callable, autotune: bool = False) -> Callable:
    """``torch.compile`` of a frozen model's forward (or a function of one): one graph (a graph break is an error),
    one compile per input shape, run under inductor's ``freezing`` (weights as constants, pre-packed), which applies
    only where grad is off. Every such graph of a process compiles the same forward code, and dynamo counts them all
    against one recompile limit (8 by default): the calls raise it to :data:`RECOMPILE_LIMIT`.

    ``autotune``: inductor's ``max_autotune``, each GEMM timed at compile as oneDNN's kernel and as inductor's own C++
    GEMM template (AMX or AVX-512 micro-kernels, with its epilogue fused), the faster kept. It costs compile time
    (the test suite's four compiles of two tiny models: 11 -> 74 s on 2 cores; inductor caches the timings on disk).
    Measured on a 2-core AMX host (one process, interleaved rounds, BERT-base geometry), autotuned against not: bf16
    at 1 x 128 dense 1.11x [1.08, 1.14] and IV-96-128 1.42x [1.39, 1.45] faster, at 8 x 128 dense 1.51x [1.46, 1.57]
    and IV-96-128 0.99x [0.94, 1.04]; fp32 0.97-1.09 at both sizes.
    """
    compiled = torch.compile(fn, dynamic=False, fullgraph=True)
    options = {"freezing": True, **({"max_autotune": True, "autotune_num_choices_displayed": 0} if autotune else {})}

    def call(*args):
        with inductor_config.patch(options), dynamo_config.patch(recompile_limit=RECOMPILE_LIMIT):
            return compiled(*args)
    return call


def export_onnx(model: nn.Module, path: str | Path, opset: int = 18, fuse: bool = True) -> Path:
    """Export the frozen encoder (input_ids, attention_mask -> last_hidden_state) to one ONNX file.

    Parameters
    ----------
    model : nn.Module
        A compressed (or dense) BERT model; it is frozen (:func:`freeze`) first, and left unchanged.
    path : path
        The ``.onnx`` file to write. It is written whole or not at all (made under a temporary name in the same
        folder, then renamed).
    opset : int
        The ONNX opset.
    fuse : bool
        Rewrite it into ONNX Runtime's fused kernels with onnxscript's ORT fusions
        (``onnxscript.rewriter.ort_fusions.optimize_for_ort``, written for this exporter's graphs): attention as one
        ``Attention`` op (Q, K and V packed; for a compressed model, over the shared xU) and bias + GELU, the form
        ONNX Runtime deploys BERT in; residual + LayerNorm is left as an Add and a LayerNormalization
        (:data:`ORT_DISABLED_FUSIONS`). ONNX Runtime's own BERT optimizer
        (``onnxruntime.transformers.optimizer``) matches the older TorchScript exporter's attention pattern, and
        fused no attention here (transformers' boolean mask).

    Returns
    -------
    Path
        ``path``. Batch and sequence axes are dynamic; the file runs in ONNX Runtime without tdlib or torch.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise ConfigError(f"export_onnx writes a .onnx file, got {str(path)!r}: name it e.g. 'model.onnx'")
    path.parent.mkdir(parents=True, exist_ok=True)
    # attention written as matmuls and a softmax: torch's SDPA exports with NaN guards (IsNaN, Where) in every layer,
    # which ONNX Runtime runs as separate ops (measured: IV-96-128 at 8 x 128, 400 -> 336 ms)
    encoder = _Encoder(freeze(model, attention="eager"))
    ids = torch.randint(1000, 2000, (2, 16))
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("seq", min=2, max=4096)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        part = Path(tmp) / path.name
        with torch.no_grad(), contextlib.redirect_stdout(None), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares")
            torch.onnx.export(encoder, (ids, torch.ones_like(ids)), str(part), input_names=list(INPUT_NAMES),
                              output_names=["last_hidden_state"], dynamic_shapes=shapes, opset_version=opset,
                              dynamo=True, external_data=False, verbose=False)
        if fuse:
            graph, _ = optimize_for_ort(onnx_ir.load(str(part)))
            _unfuse_skip_layer_norm(graph.graph)
            onnx_ir.save(graph, str(part))
        part.replace(path)
    return path


def _unfuse_skip_layer_norm(graph: onnx_ir.Graph) -> None:
    """Rewrite each ``SkipLayerNormalization`` (residual + bias + LayerNorm in one contrib op) back into ``Add`` and
    ``LayerNormalization``, in place (see :data:`ORT_DISABLED_FUSIONS` for why). Only its first output may be in use
    (the fusion of a post-LN BERT writes no other)."""
    for node in [n for n in graph if n.op_type == "SkipLayerNormalization" and n.domain == "com.microsoft"]:
        if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
            raise RuntimeError(f"{node.name}: a SkipLayerNormalization whose mean, inverse std or sum is read")
        x, skip, gamma, beta, *rest = node.inputs
        total = onnx_ir.node("Add", [x, skip])
        added = [total]
        if rest and rest[0] is not None:  # the bias of the map before it
            added.append(onnx_ir.node("Add", [total.outputs[0], rest[0]]))
        norm = onnx_ir.node("LayerNormalization", [added[-1].outputs[0], gamma, beta],
                            {"axis": -1, "epsilon": node.attributes.get_float("epsilon", 1e-12)})
        onnx_ir.convenience.replace_nodes_and_values(graph, node, [node], [*added, norm], [node.outputs[0]],
                                                     [norm.outputs[0]])


def onnx_session(path: str | Path, threads: int, optimized_path: str | Path | None = None) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with every graph optimisation but :data:`ORT_DISABLED_FUSIONS`, ``threads``
    intra-op threads, one inter-op; ``optimized_path``, where given, receives the graph it runs."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.log_severity_level = 3
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(ORT_DISABLED_FUSIONS))


def encoder_runner(model: nn.Module, runtime: str = "eager", precision: str = "fp32", threads: int = 2,
                   workdir: str | Path | None = None) -> Callable[[dict], torch.Tensor]:
    """A callable ``run(inputs) -> last hidden state`` (float32 tensor) of ``model`` under ``runtime``, on the model's
    device (``onnxruntime``: the CPU).

    Parameters
    ----------
    model : nn.Module
        A dense or compressed BERT encoder (or a model with one as ``base_model``).
    runtime : str
        One of :data:`RUNTIMES`.
    precision : str
        ``'fp32'`` or ``'bf16'`` (``eager``: a bf16 copy of the model; ``compiled``: autocast, its casts of the
        weights folded into the graph's constants; ``openvino``: its bf16 inference precision, native bf16 CPUs
        only); ``onnxruntime`` takes fp32 only.
    threads : int
        Intra-op threads (torch's are set by the caller; ONNX Runtime's and OpenVINO's here). The process keeps
        freed memory for reuse from here on (:func:`tdlib.core.memory.retain_freed_memory`).
    workdir : path, optional
        Where ``onnxruntime`` and ``openvino`` write their exported files (a temporary folder, removed with the
        runner, when None).

    Returns
    -------
    callable
        ``run(inputs)``, inputs a dict with ``input_ids`` and ``attention_mask``; the first call of ``compiled``
        compiles for that shape.
    """
    check_choice("runtime", runtime, RUNTIMES)
    check_choice("precision", precision, ("fp32", "bf16"))
    retain_freed_memory()  # activations freed by one forward are reused by the next, not unmapped (core.memory)
    device = next(model.parameters()).device  # the inputs go where the model is; autocast for that device
    if runtime == "eager":
        encoder = _Encoder(precision_copy(model, precision))

        def run(inputs: dict) -> torch.Tensor:
            with torch.inference_mode():
                return encoder(*(inputs[k].to(device) for k in INPUT_NAMES)).float()
        return run
    if runtime == "compiled":
        compiled = compile_frozen(_Encoder(freeze(model)), autotune=True)

        def run(inputs: dict) -> torch.Tensor:
            with torch.inference_mode(), autocast(precision, device):
                return compiled(*(inputs[k].to(device) for k in INPUT_NAMES)).float()
        return run
    if runtime == "openvino":
        return openvino_runner(model, precision, threads, workdir)
    if precision != "fp32":
        raise ConfigError("the onnxruntime runtime runs fp32 only (its CPU provider has no bf16 matmul): "
                          "use precision='fp32', or runtime='eager'/'compiled' for bf16")
    holder = tempfile.TemporaryDirectory() if workdir is None else None
    path = export_onnx(model, Path(holder.name if holder else workdir) / "encoder.onnx")
    session = onnx_session(path, threads)

    def run(inputs: dict) -> torch.Tensor:
        feeds = {name: np.ascontiguousarray(inputs[name].numpy(), dtype=np.int64) for name in INPUT_NAMES}
        return torch.from_numpy(session.run(None, feeds)[0])
    run._tmp = holder  # keep the folder alive as long as the runner
    return run


def export_openvino(model: nn.Module, path: str | Path) -> Path:
    """Export the frozen encoder (input_ids, attention_mask -> last_hidden_state) to OpenVINO's format.

    The model goes through plain ONNX ops (:func:`export_onnx` with ``fuse=False``: OpenVINO fuses the standard ops
    itself, bias + GELU into the FFN GEMM and attention into one subgraph, and reads no ONNX Runtime contrib op); each
    attention's K transpose is then folded into its score product (:func:`_transpose_keys_in_matmul`).

    Parameters
    ----------
    model : nn.Module
        A compressed (or dense) BERT model; it is frozen (:func:`freeze`) first, and left unchanged.
    path : path
        The ``.xml`` file to write (the graph); the weights go to the ``.bin`` beside it, in fp32. Both are written
        whole or not at all.

    Returns
    -------
    Path
        ``path``. ``openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})`` runs it without
        tdlib or torch, batch and sequence axes dynamic (the hint: OpenVINO's default on a CPU with AMX is bf16).
    """
    path = Path(path)
    if path.suffix != ".xml":
        raise ConfigError(f"export_openvino writes a .xml file (and its .bin), got {str(path)!r}: name it e.g. "
                          "'model.xml'")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        graph = openvino.Core().read_model(str(export_onnx(model, Path(tmp) / "encoder.onnx", fuse=False)))
        _transpose_keys_in_matmul(graph)
        part = Path(tmp) / path.name
        openvino.save_model(graph, str(part), compress_to_fp16=False)
        part.with_suffix(".bin").replace(path.with_suffix(".bin"))
        part.replace(path)
    return path


def _transpose_keys_in_matmul(graph: openvino.Model) -> None:
    """Rewrite each attention score product Q x Transpose(K, [0, 2, 3, 1]) as MatMul(Q, Transpose(K, [0, 2, 1, 3]),
    transpose_b=True), in place. The same product: the MatMul transposes K's last two axes itself.

    OpenVINO's CPU plugin fuses the score product, softmax and context product into one subgraph, but not a K
    transpose that moves the last axis: that ran as a separate copy of K in every layer. A transpose that keeps the
    last axis is a copy of whole 64-wide rows, and the transposed operand is the kernel's own. Measured on a 2-core
    AMX host (one process, interleaved rounds, BERT-base geometry): fp32 at 8 x 128 dense 1.02x [1.00, 1.04] and
    IV-96-128 1.05x [1.02, 1.07] faster, at 1 x 128 1.01x [1.00, 1.02] and 1.02x [1.02, 1.03]; bf16 at 8 x 128
    1.05x [1.04, 1.06] and 1.08x [1.06, 1.09].
    """
    for node in graph.get_ordered_ops():
        if node.get_type_name() != "MatMul" or any(node.get_attributes().values()):  # transpose_a or _b already set
            continue
        key = node.input_value(1).get_node()
        order = key.input_value(1).get_node() if key.get_type_name() == "Transpose" else None
        if order is None or order.get_type_name() != "Constant" or list(order.get_data()) != [0, 2, 3, 1]:
            continue
        heads_first = openvino.opset13.transpose(key.input_value(0), np.array([0, 2, 1, 3], np.int64))
        scores = openvino.opset13.matmul(node.input_value(0), heads_first.output(0), False, True)
        scores.set_friendly_name(node.get_friendly_name())
        for target in list(node.output(0).get_target_inputs()):
            target.replace_source_output(scores.output(0))
    graph.validate_nodes_and_infer_types()


def openvino_runner(model: nn.Module, precision: str = "fp32", threads: int = 2,
                    workdir: str | Path | None = None) -> Callable[[dict], torch.Tensor]:
    """``run(inputs) -> last hidden state`` of ``model`` under OpenVINO's CPU plugin (the ``openvino`` runtime of
    :func:`encoder_runner`).

    The model is exported once (:func:`export_openvino`) and compiled once per input shape on first use: the graph
    reshaped to that static shape, ``threads`` inference threads, one stream, latency hint, and its inference
    precision set explicitly (OpenVINO's default on a CPU with AMX is bf16, not fp32).

    Measured on a 2-core AMX host, IV-96-128 and dense on BERT-base geometry at 1 x 128, fp32, interleaved: dynamic
    shapes 24.0 and 80.3 ms, one static shape 22.8 and 77.9 ms (3.36x and 3.42x).
    """
    check_choice("precision", precision, ("fp32", "bf16"))
    if precision == "bf16" and not native_bf16():
        raise ConfigError("openvino runs bf16 only on a CPU with native bf16 (AMX-BF16 or AVX512-BF16, not capped "
                          "by ONEDNN_MAX_CPU_ISA): use precision='fp32' here, or runtime='eager' for emulated bf16")
    holder = tempfile.TemporaryDirectory() if workdir is None else None
    path = export_openvino(model, Path(holder.name if holder else workdir) / "encoder.xml")
    core = openvino.Core()
    config = {"INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
              "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
    requests: dict[tuple[int, ...], openvino.InferRequest] = {}

    def run(inputs: dict) -> torch.Tensor:
        feeds = [np.ascontiguousarray(inputs[name].numpy(), dtype=np.int64) for name in INPUT_NAMES]
        shape = feeds[0].shape
        if shape not in requests:
            graph = core.read_model(str(path))
            graph.reshape({name: list(shape) for name in INPUT_NAMES})
            requests[shape] = core.compile_model(graph, "CPU", config).create_infer_request()
        return torch.from_numpy(requests[shape].infer(feeds)[0])
    run._tmp = holder  # keep the folder alive as long as the runner
    return run
