"""Figures and display tables drawn from tidy result tables (never from analysis objects).

    from genir_mech.figures.decoder import plot_contributions   # Fig. 3 from a contributions table
    from genir_mech.figures.tables import ablation_table        # Table 3 from an ablation table

Modules here take DataFrames (and, where layers are grouped, a
StageDefinition) and write PNG, Markdown or LaTeX; they import nothing from
analyses, patching or models, so a figure can be redrawn from saved CSVs alone.
"""
import matplotlib

# Headless machines and CI have no display; set once, before any module here imports pyplot.
matplotlib.use("Agg")
