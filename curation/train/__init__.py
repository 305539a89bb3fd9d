"""The bundled self-supervised trainer: the DINOv2 recipe on shard manifests.

``loop`` is the training loop; ``meta_arch`` the student/teacher pair, its
losses (``losses/``) and heads (``heads``); ``data/`` turns a manifest into
batches of multi-crop views and masks; ``fsdp`` and ``checkpoint`` handle
sharding and resumable distributed checkpoints; ``schedules`` and
``param_groups`` the optimiser; ``distill``, ``knn_eval`` and ``export`` the
distillation mode, evaluation and the backbone export. ``cli.train_main`` is
what ``curate train`` runs; ``ray_job`` launches it on a Ray cluster.
"""
