"""tdlib: extreme parameter compression of pre-trained BERT by Tucker decomposition (Ren et al., ICLR 2022).

Modules by role: ``stacking`` (weights <-> the (n, D, D) tensor), ``decompose`` (methods I-IV, CP,
TT), ``functional`` (HOOI and subspace kernels), ``layers`` (the factor bank and its linear maps),
``modeling`` (compress, save/load, parameter accounting), ``calibrate`` (the teacher's activations on
held-out text) and ``fitting`` (data-aware inits of the bank), ``models`` (teachers), ``ranks`` (rank
picker, MAC model), ``provenance`` (results records).
"""

from .calibrate import Calibration, cached_calibration, calibrate
from .decompose import CP, METHODS, PerMatrix, Raw, SharedFactors, TensorTrain, Tucker, decompose, make
from .errors import CheckpointError, ConfigError, DataError, RankError, TdlibError, UnsupportedModelError
from .fitting import BlockwiseFit
from .layers import BankLinear, TuckerBank
from .modeling import (
    CompressionSpec,
    ParamCount,
    compress,
    compression_spec,
    count_params,
    from_pretrained,
    reconstruct_dense,
    set_implementation,
)
from .models import load_model, load_tokenizer
from .ranks import BERT_BASE, MINILM, Geometry, encoder_macs, mac_ratio, pick_ranks
from .stacking import OPS, stack_weights, unstack_weights

__version__ = "0.1.0"

__all__ = [
    "BERT_BASE", "CP", "METHODS", "MINILM", "OPS", "BankLinear", "BlockwiseFit", "Calibration", "CheckpointError",
    "CompressionSpec", "ConfigError", "cached_calibration", "calibrate",
    "DataError", "Geometry", "ParamCount", "PerMatrix", "RankError", "Raw", "SharedFactors", "TdlibError",
    "TensorTrain", "Tucker", "TuckerBank", "UnsupportedModelError", "compress", "compression_spec", "count_params",
    "decompose", "encoder_macs", "from_pretrained", "load_model", "load_tokenizer", "mac_ratio", "make",
    "pick_ranks", "reconstruct_dense", "set_implementation", "stack_weights", "unstack_weights",
]
