"""Experiments end to end: one module per experiment, each `run_<experiment>(model, data, out, config) -> summary`.

    from genir_mech.pipelines.ablate import AblateConfig, run_ablate
    summary = run_ablate(gm, dataset, "runs/ablate/dsi-synth", AblateConfig(stages="stages.json", max_queries=256))

`model` is a loaded GenIRModel, `data` a RetrievalDataset (or a list of
QueryPair for patch/attribute), `out` the output folder, `config` the
experiment's dataclass of parameters (all with defaults). Each pipeline writes
its tables with provenance (inputs.Inputs.write), draws its figures
(rendering.draw) and returns a JSON-able summary. Verbs and notebooks call
these; nothing here parses arguments or prints results. Every run_<experiment>
is wrapped by results_directory.atomic: it writes into `<out>.partial-<pid>/`
under the lock `<out>.lock`, and `<out>` gets its files, with COMPLETE.json,
only when the experiment returns (a pipeline called by another writes into
the outer run's folder).

    inputs            Inputs: which queries or pairs, and writing tables with this run's provenance
    rendering         every figure and display table, drawn from result tables; redraw(results_dir)
    evaluate          run_eval              retrieval metrics, per-query ranks, rank curve
    contributions     run_contributions     Fig. 3
    lens              run_lens              Fig. 4, Tables 5-6
    ablate            run_ablate            Table 3 (stage and single-layer ablations) and bar charts
    circuit           run_circuit           Table 4 and Hits@k bars
    read              run_read              Fig. 5
    stages            run_stages            stage localisation -> stages.json
    swap              run_swap              encoder swap, Table 2
    patch             run_patch             activation patching heatmaps
    attribute         run_attribute         attribution patching (AtP, AtP*) heatmaps, exact verification
"""
