"""The bundled self-supervised trainer: the DINOv2 recipe on shard manifests.

``loop`` is the training loop, ``meta_arch`` the student/teacher pair and its
losses, ``data`` turns a manifest into batches of multi-crop views and masks,
``fsdp`` and ``checkpoint`` handle sharding and resumable distributed
checkpoints. ``cli.train_main`` is what ``curate train`` runs.
"""
