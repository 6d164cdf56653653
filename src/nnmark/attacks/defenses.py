"""Query defenses by name (oracle -> oracle wrappers): ``defenses()`` lists them, ``wrap_oracle``
builds one. See :mod:`nnmark.attacks.query.defenses`; ``nnmark serve --defense NAME`` calls
``wrap_oracle(NAME, TorchOracle(model), images, seed=seed, **settings)``."""

from nnmark.attacks.query.defenses import DEFENSES, defenses, register_defense, wrap_oracle

__all__ = ["DEFENSES", "defenses", "register_defense", "wrap_oracle"]
