"""What the pipeline's messages carry (the `meta` of a `codec.Message`), stage by stage.

Every entry on every stream is one `codec.Message` in the field `keys.FIELD`. Times are epoch
milliseconds (float) taken by the adapters/stages; the core never reads a clock.

frames (``fs:{p}:frames``), written by ingest or a replay:
    kind="frame", source: str, seq: int (per source, from 0, strictly increasing),
    capture_ms: float (when the frame was captured / its original timestamp),
    ingest_ms: float (when it was published), encoding: "jpeg" | "raw",
    label: str | None (optional ground truth, from replay files),
    models: [str, ...] (only for a source given models of its own: the models that classify it;
    every other model's preprocess acks its frames and end-of-stream and passes nothing on),
    fit: str (raw frames ingest made to exactly the input every reading model shares: that
    input's `geometry.ModelInput.key`; a preprocess whose model has that input and that shape
    passes the pixels on, any other fits them as usual),
    stamps: {stage: [start_ms, end_ms]} (filled in by each stage)
    array: uint8 JPEG bytes (1-D) for encoding="jpeg", uint8 HxWx3 RGB for encoding="raw"
  end of a source: kind="eos", source, seq = number of frames the source published, no array;
    error: str when the source failed (unreadable), reason: "removed" when it was removed.
  lost frame: kind="skip", source, seq, reason, no array: a stage dead-lettered that frame, so
    later stages pass the marker on and the postprocess reorder buffer does not wait for it.

tensors (``fs:{p}:tensors:<model>``), written by preprocess, or by ingest for a raw frame it made
    to the model's input (`IngestSettings.straight_to_tensors`: no preprocess stamp then): the
    frame's meta plus model: str; array: uint8 [h, w, 3] RGB at the model's input size. eos/skip pass through
    every stage (with model added), so each model's results end with the source's eos.
scores (``fs:{p}:scores:<model>``), written by infer: the meta plus
    batch_size: int, batch_wait_ms: float, model_version: int (the repository version that ran
    the frame; a seed is 1); array: float16 [1000] probabilities.
shadow (``fs:{p}:shadow:<model>``), written by a shadow version's infer loop only: the tensor's
    meta plus batch_size, batch_wait_ms, model_version (the shadow's), top_label: str,
    top_score: float, infer_ms: float (inference time per frame of its batch); array: float16
    scores. Never read by sinks, feeds or results readers: only to compare with the results.
results (``fs:{p}:results``), written by postprocess, no array:
    kind="result", source, seq, model, model_version (int: the version that ran the frame),
    label, score, top: [[label, score], ...],
    smoothed_label, latency_ms (end to end: result time - capture_ms),
    stages_ms: {stage: ms} (the stages the frame went through), batch_size, capture_ms,
    ingest_ms, result_ms, truth (ground truth or None)
    late: bool (True when the frame came after the reorder buffer gave up waiting for it, or is a
    redelivered duplicate: not fed to smoothing),
  and kind="eos" (source, model, frames, skipped, error) once a source's last frame has a result.
events (``fs:{p}:events``): kind="label_change", source, model, seq, previous, label, result_ms;
  kind="smoothing_restart", source, model, seq, model_version, previous_version, reason,
  result_ms: a new model version names other classes, so that source's smoothing starts again;
  kind="source_status" (also type="source_status"), written by ingest: source, change
  (reconnecting | stalled | recovered | failed), status, previous, reason, reconnects, time_ms.
segments (``fs:{p}:segments``), written by postprocess in the same transaction as the result (or
  the eos) that closed the segment, one entry per closed segment (`stream.core.segments`):
  kind="segment", id ("<source>/<model>/<first_seq>": the same id when written again after a
  failover), source, model, label (the smoothed label), first_seq, last_seq, start_ms, end_ms
  (capture_ms of the first and last frame), frames, score (mean smoothed score of the label),
  open=False, closed_by ("label_change" | "eos").
dead (``fs:{p}:dead``): fields stage, reason, stream, group, id, deliveries, bytes (size of the
    original bytes), d (the original bytes, when at most 1 MiB).
"""

from __future__ import annotations

__all__ = ["EOS", "FRAME", "LABEL_CHANGE", "RESULT", "SEGMENT", "SKIP", "SMOOTHING_RESTART", "STAGES"]

FRAME = "frame"
EOS = "eos"
SKIP = "skip"
RESULT = "result"
LABEL_CHANGE = "label_change"
SEGMENT = "segment"
SMOOTHING_RESTART = "smoothing_restart"
STAGES = ("ingest", "preprocess", "infer", "postprocess")
