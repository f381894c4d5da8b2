"""The local explorer (`mnistlab serve RUN_DIR`): a small Starlette app with a JSON API and one static page.

- `preprocess.py`: image bytes -> a 28x28 digit the MNIST way (crop, scale to 20x20, centre of mass);
- `runs.py`: which run folders make up RUN_DIR (a `mnistlab run` study or one run) and the optional
  pieces read from them (saved maps, the probe's head);
- `explorer.py`: the run folder's models, maps and samplers, loaded once, and the inference on them;
- `cache.py`: what the explorer computes at start (codes, PCA, fitted samplers), saved in the encoder's
  run folder and read back by the next start while the checkpoint and settings are the same;
- `parse.py`, `errors.py`: checking request bodies; `ApiError` (a 4xx status and a one-line message);
- `downloads.py`: sample grids as PNG and .npy files, and the run's report page (GET routes);
- `app.py`: the HTTP routes, request checking (every bad input is a 4xx with a one-line message) and
  `serve()`, which binds to 127.0.0.1 unless told otherwise;
- `static/`: the page (plain HTML, CSS and JS modules: app.js imports pad.js, map.js, samplers.js,
  ui.js; no network).
"""
