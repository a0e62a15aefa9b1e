"""Data: GLUE tasks (``glue``), the general-distillation corpus (``corpus``), batch collation (``collate``) and the
calibration text of the data-aware inits (``calibration``). Imports the core only."""
