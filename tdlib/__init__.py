"""tdlib: extreme parameter compression of pre-trained BERT by Tucker decomposition (Ren et al., ICLR 2022).

``import tdlib`` loads the core alone (:mod:`tdlib.core`): compress a teacher, count its parameters, pick ranks,
save and load (and registers the compressed BERT, model type ``tdlib_bert``, with transformers' Auto classes), export
a student for sentence-transformers. The layers above it are imported by name: :mod:`tdlib.data` <-
:mod:`tdlib.distill` <- :mod:`tdlib.studies` <- :mod:`tdlib.paper` <- the CLI (``python -m tdlib``).
"""

from tdlib.core.calibrate import Calibration, calibrate
from tdlib.core.decompose import CP, METHODS, PerMatrix, Raw, SharedFactors, TensorTrain, Tucker, decompose, make
from tdlib.core.deploy import encoder_runner, export_onnx, export_openvino, freeze
from tdlib.core.errors import CheckpointError, ConfigError, DataError, RankError, TdlibError, UnsupportedModelError
from tdlib.core.export import export_sentence_transformers
from tdlib.core.fitting import BlockwiseFit
from tdlib.core.memory import retain_freed_memory
from tdlib.core.modeling import (
    ParamCount,
    compress,
    compression_spec,
    count_params,
    from_pretrained,
    reconstruct_dense,
    set_implementation,
)
from tdlib.core.modeling_tdlib import (
    OPS,
    BankLinear,
    CompressionSpec,
    TdlibBertConfig,
    TdlibBertForSequenceClassification,
    TdlibBertModel,
    TuckerBank,
    model_card,
)
from tdlib.core.pretrained import load_model, load_tokenizer
from tdlib.core.ranks import BERT_BASE, MINILM, Geometry, encoder_macs, mac_ratio, pick_ranks
from tdlib.core.stacking import stack_weights, unstack_weights

__version__ = "0.1.0"

__all__ = [
    "BERT_BASE", "CP", "METHODS", "MINILM", "OPS", "BankLinear", "BlockwiseFit", "Calibration", "CheckpointError",
    "CompressionSpec", "ConfigError", "calibrate",
    "DataError", "Geometry", "ParamCount", "PerMatrix", "RankError", "Raw", "SharedFactors", "TdlibError",
    "TensorTrain", "Tucker", "TuckerBank", "UnsupportedModelError", "compress", "compression_spec", "count_params",
    "TdlibBertConfig", "TdlibBertForSequenceClassification", "TdlibBertModel", "export_sentence_transformers",
    "model_card", "decompose", "encoder_macs", "from_pretrained", "load_model", "load_tokenizer", "mac_ratio", "make",
    "pick_ranks", "reconstruct_dense", "freeze", "export_onnx", "export_openvino", "encoder_runner",
    "retain_freed_memory", "set_implementation", "stack_weights", "unstack_weights",
]
