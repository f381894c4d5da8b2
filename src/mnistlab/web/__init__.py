"""The local explorer (`mnistlab serve RUN_DIR`): a small Starlette app with a JSON API and one static page.

- `preprocess.py`: image bytes -> a 28x28 digit the MNIST way (crop, scale to 20x20, centre of mass);
- `explorer.py`: the run folder's models, maps and samplers, loaded once, and the inference on them;
- `app.py`: the HTTP routes, request checking (every bad input is a 4xx with a one-line message) and
  `serve()`, which binds to 127.0.0.1 unless told otherwise;
- `static/`: the page (plain HTML, CSS and JS; no network).
"""
