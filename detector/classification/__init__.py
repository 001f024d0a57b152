"""Backbones as image classifiers: ImageFolder data, training, evaluation (docs/classification.md).

- :mod:`.config`: the ``model`` / ``data`` / ``train`` sections (``parse_cls_config``);
- :mod:`.data`: ImageFolder datasets, transforms, loaders;
- :mod:`.synthetic`: the quick-start data, generated on first use;
- :mod:`.trainer`: :class:`~.trainer.ClsTrainer` (``cspdet train-cls``);
- :mod:`.evaluate`: top-1 / top-5 and the confusion summary (``cspdet eval-cls``).
"""
