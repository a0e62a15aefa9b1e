"""The core: the paper's two protocols and nothing else.

Stacking BERT's maps into one (12L, D, D) tensor (``stacking``), the decompositions I-IV, CP and TT (``decompose``,
``functional``), ranks and multiply-adds (``ranks``), the factorized layers (``layers``), the compressed model with
its save/load and parameter count (``modeling``), calibration and data-aware fits (``calibrate``, ``fitting``),
task heads (``heads``), equal-budget dense baselines (``baseline``), loading teachers (``pretrained``), matmul
precision (``precision``), the allocator's reuse of freed memory (``memory``), file I/O (``io``) and errors
(``errors``). It imports nothing else from tdlib.
"""
