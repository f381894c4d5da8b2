"""Research prototypes of models not yet in mnistlab: runnable, measured, documented in docs/history.md."""
