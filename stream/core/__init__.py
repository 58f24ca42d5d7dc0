"""Pure core: stdlib + numpy only. No I/O, no clocks (callers pass `now_ms`)."""
