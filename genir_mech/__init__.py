"""genir_mech: mechanistic analysis of generative IR (DSI-style) encoder-decoder models.

Layers of the package, in data-flow order:
data -> models (adapters, nnsight wrapper, docids) -> training / retrieval ->
interventions (patching) -> analyses -> figures and tables.
"""

__version__ = "0.1.0"
