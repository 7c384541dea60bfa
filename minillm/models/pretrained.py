"""The way from a model class to the files: ``GPT.from_pretrained(path)`` reads anything
``minillm.load`` reads, and ``model.save_pretrained(dir)`` writes a directory it reads back.

The loader and the writers live in ``minillm.checkpoints``, which sits above the models in the
layers (it builds models from files), so a model cannot import them. Instead
``minillm.checkpoints`` registers its functions here when it is imported (``import minillm``
does that), and ``from_pretrained`` / ``save_pretrained`` call them.
"""

from minillm.errors import ConfigError

_loader = None  # load(path_or_name, **options) -> (model, tokenizer), set by minillm.checkpoints
_saver = None  # save(model, directory, **options) -> file names, set by minillm.checkpoints


def register_loader(load):
    """Make ``load`` the function ``from_pretrained`` reads files with."""
    global _loader
    _loader = load


def from_pretrained(cls, path_or_name, **options):
    """The model (eval mode) in ``path_or_name``, which must be a ``cls``; ``options`` go to
    the loader (dropout, device, ...)."""
    if _loader is None:
        raise ConfigError("no checkpoint loader is registered; `import minillm` registers it")
    model, _ = _loader(path_or_name, **options)
    if not isinstance(model, cls):
        raise ConfigError(f"{path_or_name} holds a {type(model).__name__}, not a {cls.__name__}; "
                          f"load it with minillm.load")
    return model


def register_saver(save):
    """Make ``save`` the function ``save_pretrained`` writes files with."""
    global _saver
    _saver = save


def save_pretrained(model, directory, **options):
    if _saver is None:
        raise ConfigError("no checkpoint writer is registered; `import minillm` registers it")
    return _saver(model, directory, **options)
