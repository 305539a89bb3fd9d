"""Building blocks of fetching images: URL lists, checked fetching, safe decoding, tar shards.

``lists`` and ``textlists`` (reading URL lists), ``urls`` (URL and address
checks), ``headers`` (Retry-After, X-Robots-Tag), ``fetch`` (aiohttp fetcher),
``pipeline`` (background fetch + decode of a list of URLs), ``decode`` and
``resize`` (safe decoding, resizing, encoding), ``faces`` and ``nsfw``
(pluggable post-processing, ``plugins``), ``process`` (bytes to stored image),
``shardwriter`` (tar shards), ``config`` (their settings), ``client`` (small
URL lists outside the stage). The download stage, with its own parts (input
plan, rows, one partition's job, metrics, checks), is ``curation.stages.download``.
"""
