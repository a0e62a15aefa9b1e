"""The artifact: parameter profiles and ``make reproduce`` (``reproduce``), the claims table (``report``), figures
(``plots``) and published reference numbers (``published``). The only layer that knows ``notebooks/`` and
``params/``."""
