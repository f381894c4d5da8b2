"""An example mnistlab plug-in: two tasks, a linear autoencoder (`linae`, linae.py) and a noise-to-image
generator (`noisegen`, noisegen.py), and a k-NN probe study stage (knn_stage.py).

This module is what `mnistlab --help` reads of the tasks (entry point group `mnistlab.task_info`):
plain data, importing nothing, so that the help lists the plug-in's tasks, roles and samplers without
importing torch. Each task module builds its TaskSpec from the same mapping (`task_fields`)."""

LINAE = {
    "description": "a linear autoencoder (a plug-in example)",
    "roles": ["encoder", "decoder", "generator"],
    "val_metrics": ["loss"],
    "samplers": ["gmm", "gaussian", "uniform"],
}

NOISEGEN = {
    "description": "a noise-to-image generator trained by moment matching (a plug-in example)",
    "roles": ["generator"],
    "val_metrics": ["mmd"],
    "samplers": ["prior"],
}
