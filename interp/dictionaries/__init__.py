"""Dictionaries (sparse autoencoders, transcoders) on the bridge: read from SAE Lens's and sparsify's files
(`formats`), one type with the architectures' encoders (`dictionary`), spliced into the engine's forward with an
error term (`splice`), measured (`quality`), patched and attributed feature by feature (`features`), trained with
sparsify (`training`)."""

from interp.dictionaries.dictionary import Convention, Dictionary, Site
from interp.dictionaries.formats import load_dictionary

__all__ = ["Convention", "Dictionary", "Site", "load_dictionary"]
