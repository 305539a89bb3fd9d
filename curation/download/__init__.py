"""The download stage's parts: URL lists in, checked fetching, safe decoding, tar shards out.

``inputs`` (URL lists, partition plan), ``urls`` (URL and address checks),
``headers`` (Retry-After, X-Robots-Tag), ``fetch`` (aiohttp fetcher),
``pipeline`` (background fetch + decode of a partition), ``decode`` and
``resize`` (safe decoding, resizing, encoding), ``faces`` and ``nsfw``
(pluggable post-processing), ``process`` (bytes to stored image), ``rows``
(the table), ``job`` (one partition), ``shardwriter`` (tar shards),
``monitor`` (stats and Ray metrics), ``client`` (small URL lists outside the
stage). The stage itself is ``curation.stages.download.stage``.
"""
