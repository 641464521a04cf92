"""Reports drawn from finished results: the demo's REPORT.md, the numbers the paper quotes, the benchmark tables for print.

    from genir_mech.reporting.report import paper_report
    manifest = run_sweep(config)                 # the paper example (examples/paper.yaml), as `genir-mech demo` runs it
    paper_report(config, manifest)               # -> <out>/REPORT.md and <out>/numbers.tex
    python -m genir_mech.reporting.benchmarks bench/results paper/results/bench

Nothing here runs a model: each report reads the tables and summaries a
finished sweep recorded (SWEEP.json and `<out>/<model>/<experiment>/`), and
the model's shape from its config.

    results     one model's results in a finished sweep, found by experiment (SweepResults)
    facts       every number REPORT.md and paper/main.tex state, read from those results
    report      REPORT.md (findings in sentences above each figure and table) and numbers.tex (\\gm macros)
    benchmarks  bench/results/*.md as LaTeX tables and \\bench macros
"""
