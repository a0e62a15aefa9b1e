"""Knowledge distillation: the forward taps (``forward``), the objectives (``losses``), the training loop with exact
resume (``loop``), the stages of the paper's recipe (``stages``), the teacher's cached targets (``teacher_cache``)
and the recovery proxies (``proxies``). Imports the core and data."""
