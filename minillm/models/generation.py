"""The way from a model to the generation loop: ``model.generate(input_ids, ...)``.

The loop (sampling, KV cache, stopping) lives in ``minillm.sample``, which sits above the models
in the layers, so a model cannot import it. Instead ``minillm.sample`` registers its entry point
here when it is imported (``import minillm`` does that), and ``DecoderLM.generate`` calls it,
as ``from_pretrained`` reaches the loader through ``minillm.models.pretrained``.
"""

from minillm.errors import ConfigError

_engine = None  # engine(model, input_ids, **options) -> ids array, set by minillm.sample


def register(engine):
    """Make ``engine`` the function ``model.generate`` runs."""
    global _engine
    _engine = engine


def generate(model, input_ids, **options):
    if _engine is None:
        raise ConfigError("no generation loop is registered; `import minillm` registers it")
    return _engine(model, input_ids, **options)
