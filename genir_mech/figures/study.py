"""The pretraining study's figure: several models' decoder contribution profiles with their located stages, side by side.

    fig = plot_study_profiles(profiles, stages, "study.png")   # one panel per model, in `profiles`' model order

`profiles` is a tidy table (model, component, layer, value: the mean contribution ratio over the model's correct
queries); `stages` maps a model to its located StageDefinition (None: no stages, e.g. too few correct queries).
"""
from __future__ import annotations

import pandas as pd
import seaborn as sns
from matplotlib.ticker import MaxNLocator

from ..stage_definition import StageDefinition
from .decoder import KIND_ORDER
from .saving import saved
from .style import component_palette, drop_legend, legend_outside, new_figure, shade_stages, themed


def plot_study_profiles(profiles: pd.DataFrame, stages: dict[str, StageDefinition | None], path=None, titles: dict[str, str] | None = None):
    """One panel per model: each decoder component's mean contribution ratio per layer, the located stages as bands."""
    models = list(dict.fromkeys(profiles.model))
    hue = [k for k in KIND_ORDER if k in set(profiles.component)] + sorted(set(profiles.component) - set(KIND_ORDER))
    with themed():
        fig, axes = new_figure(1, len(models), figsize=(3.2 * len(models) + 1.5, 3.2))  # own y scale: post-LN ratios are much larger
        for i, (model, ax) in enumerate(zip(models, axes[0])):
            sns.lineplot(data=profiles[profiles.model == model], x="layer", y="value", hue="component", hue_order=hue,
                         palette=component_palette(hue), marker="o", ax=ax)
            shade_stages(ax, stages.get(model))
            ax.set_title((titles or {}).get(model, model), fontsize=9, pad=14)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("decoder layer")
            ax.set_ylabel("mean contribution ratio" if i == 0 else "")
            if i < len(models) - 1:
                drop_legend(ax)
            else:
                legend_outside(ax)
    return saved(fig, path)
