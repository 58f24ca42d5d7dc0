"""preprocess: frames -> uint8 tensors at one model's input size.

One consumer group per model on the frames stream (``preprocess:<model>``), so one frames stream
feeds several models. Decodes JPEG (at a reduced DCT scale when the model input is much smaller
than the frame), resizes / center-crops per the model descriptor, and emits uint8 RGB [h, w, 3].
A frame ingest already made to this model's input (its ``fit`` meta names it, and its shape
agrees) is passed on without a resize.
A frame that cannot be decoded or has the wrong shape is dead-lettered with the reason and a
skip marker goes on in its place; end-of-stream and skip markers pass through.
"""

from __future__ import annotations

import asyncio

import numpy as np
import redis.asyncio as aioredis

from stream.adapters.media.image import fit_to_model, model_input
from stream.adapters.media.jpeg import decode_jpeg
from stream.adapters.redis.entries import DeadLetter, Entry, Output
from stream.core.codec import Message, encode_message
from stream.core.keys import PipelineKeys
from stream.core.messages import EOS, FRAME, SKIP
from stream.errors import CodecError
from stream.settings import Settings
from stream.stages.base import ConsumerStage, Handled, now_ms, skip_marker, undecoded_frame
from stream.zoo.descriptors import ModelSpec
from stream.zoo.repository import load_spec

__all__ = ["PreprocessStage", "prepare_tensor"]

_MAX_SIDE_PX = 8192


def prepare_tensor(message: Message, spec: ModelSpec) -> np.ndarray:
    """The model-input tensor of one frame message; `CodecError`/`ValueError` says what is wrong."""
    array = message.array
    encoding = message.meta.get("encoding", "jpeg")
    if array is None:
        raise ValueError("frame message carries no array")
    if encoding == "jpeg":
        if array.dtype != np.uint8 or array.ndim != 1:
            raise ValueError(f"JPEG frame must be 1-D uint8 bytes, got {array.dtype} {array.shape}")
        h, w = spec.input_hw
        need = (spec.resize_shorter, spec.resize_shorter) if spec.resize == "center-crop" else (h, w)
        rgb = decode_jpeg(array, min_hw=(need[0] or h, need[1] or w))
    elif encoding == "raw":
        rgb = array
    else:
        raise ValueError(f"unknown frame encoding {encoding!r}")
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"frame must be uint8 HxWx3, got {rgb.dtype} {rgb.shape}")
    if not (1 <= rgb.shape[0] <= _MAX_SIDE_PX and 1 <= rgb.shape[1] <= _MAX_SIDE_PX):
        raise ValueError(f"frame of {rgb.shape[1]}x{rgb.shape[0]} is outside 1..{_MAX_SIDE_PX} px")
    if message.meta.get("fit") == model_input(spec).key and rgb.shape[:2] == spec.input_hw:
        return np.ascontiguousarray(rgb)  # ingest made it to this input: passed on as it is
    return fit_to_model(rgb, spec)


class PreprocessStage(ConsumerStage):
    name = "preprocess"

    def __init__(self, settings: Settings, client: aioredis.Redis, *, consumer: str, model: str) -> None:
        super().__init__(
            settings,
            client,
            consumer=consumer,
            stream_of=lambda keys: keys.frames,
            group=PipelineKeys.group("preprocess", model),
            model=model,
        )
        self.spec = load_spec(model, settings.models.repository)
        self.output = self.keys.tensors(model)  # partition 0's; `_output` picks each entry's

    async def handle(self, items: list[tuple[Entry, Message]]) -> Handled:
        return await asyncio.to_thread(self._handle_sync, items)

    def _handle_sync(self, items: list[tuple[Entry, Message]]) -> Handled:
        out = Handled()
        for entry, message in items:
            meta = dict(message.meta)
            kind = meta.get("kind")
            chosen = meta.get("models")
            if isinstance(chosen, list) and self.model not in chosen:
                out.acks.append(entry)  # a source with models of its own, not this one: not ours
                continue
            meta["model"] = self.model
            output = self._output(entry)
            if kind in (EOS, SKIP):
                out.outputs.append(Output(output, encode_message(Message(meta=meta))))
                out.acks.append(entry)
                continue
            start = now_ms()
            try:
                if kind != FRAME:
                    raise ValueError(f"unknown message kind {kind!r}")
                tensor = prepare_tensor(message, self.spec)
            except (CodecError, ValueError) as e:
                reason = f"preprocess {self.model}: {e}"
                out.dead.append(DeadLetter(entry, reason))
                if "source" in meta and "seq" in meta:
                    out.outputs.append(Output(output, skip_marker(meta, reason)))
                continue
            meta["stamps"] = {**meta.get("stamps", {}), "preprocess": [start, now_ms()]}
            out.outputs.append(Output(output, encode_message(Message(meta=meta, array=tensor))))
            out.acks.append(entry)
        return out

    def skips_for_undecodable(self, letters: list[DeadLetter]) -> list[Output]:
        """A raw frame cut short (or any frame whose header decoded but whose pixels did not) is
        skipped like a frame that does not decode: postprocess then moves on at once."""
        out = []
        for letter in letters:
            meta = undecoded_frame(letter)
            if meta is None:
                continue
            chosen = meta.get("models")
            if isinstance(chosen, list) and self.model not in chosen:
                continue
            reason = f"preprocess {self.model}: {letter.reason}"
            out.append(Output(self._output(letter.entry), skip_marker({**meta, "model": self.model}, reason)))
        return out

    def _output(self, entry: Entry) -> str:
        return self.partition_keys(entry).tensors(self.model or "")
