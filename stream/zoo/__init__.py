"""Model zoo: descriptors, fetch + convert into the IR cache, and synthetic stand-ins."""

from stream.zoo.descriptors import ModelFile, ModelSpec, list_specs, load_spec, models_dir

__all__ = ["ModelFile", "ModelSpec", "list_specs", "load_spec", "models_dir"]
