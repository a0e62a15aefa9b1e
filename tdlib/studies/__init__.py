"""The studies behind the claims: settings (``settings``), the experiment drivers and their aggregation
(``experiments``), the C1 method comparison (``methods``), the init study (``inits``), the budget study
(``budget``), the speed benchmarks (``speed``, ``train_speed``), and the records they write (``records``,
``provenance``). Imports the core, data and distill."""
