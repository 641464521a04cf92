"""Figures and display tables drawn from tidy result tables (never from analysis objects).

    from genir_mech.figures.decoder import plot_contributions   # Fig. 3 from a contributions table
    fig = plot_contributions(contributions_df)                 # a Figure: shown inline in a notebook
    plot_contributions(contributions_df, "fig3.png")           # ... and saved as fig3.png + fig3.pdf
    from genir_mech.figures.tables import ablation_table        # Table 3 from an ablation table

Modules here take DataFrames (and, where layers are grouped, a
StageDefinition) and return matplotlib Figures (saved as PNG and PDF when given
a path) or write Markdown and LaTeX; they import nothing from analyses,
patching or models, so a figure can be redrawn from saved CSVs alone. Figures
are made without pyplot and importing this package leaves the matplotlib
backend as it was (style.py).
"""
