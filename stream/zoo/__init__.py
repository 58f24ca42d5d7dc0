"""Model descriptors, the model repository, and where model files come from."""

from stream.zoo.descriptors import ModelFile, ModelSpec
from stream.zoo.repository import ModelRepository, list_specs, load_spec

__all__ = ["ModelFile", "ModelRepository", "ModelSpec", "list_specs", "load_spec"]
