"""The config section of a Faiss index (:func:`curation.algorithms.index.build_index`),
embedded by the dedup and retrieve sections. It lives here, not in the pure
algorithms layer, which takes any object with these fields."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from curation.section import Section


class IndexConfig(Section):
    kind: Literal["auto", "flat", "ivf_flat", "ivf_sq8", "ivf_fp16", "ivf_pq"] = Field(
        "auto",
        description="auto: flat up to exact_max vectors, else ivf_pq; or force one kind "
        "(ivf_sq8/ivf_fp16: scalar-quantised lists, 1 or 2 bytes per dimension)",
    )
    exact_max: int = Field(1_000_000, ge=0, description="auto picks the exact flat index up to this many pool vectors")
    nlist: int | None = Field(
        None, ge=1, description="inverted lists of IVF indexes (null: 4*sqrt(n), at least 39 points per list)"
    )
    nprobe: int = Field(32, ge=1, description="inverted lists visited per query (recall vs speed)")
    pq_m: int | None = Field(
        None,
        ge=1,
        description="IVF-PQ sub-quantizers, a divisor of the dimension (null: largest GPU-supported divisor <= d/4)",
    )
    pq_bits: int = Field(8, ge=4, le=12, description="bits per IVF-PQ sub-quantizer code")
    refine: bool = Field(
        True,
        description="re-rank IVF-PQ and IVF-SQ8 candidates exactly with IndexRefineFlat "
        "(keeps the float vectors in RAM)",
    )
    refine_k_factor: float = Field(
        4.0, ge=1.0, description="IVF-PQ candidates fetched per requested neighbour before re-ranking"
    )
    use_gpu: bool | None = Field(None, description="null: GPU when faiss sees one; false: CPU; true: require a GPU")
    search_batch: int = Field(65536, ge=1, description="queries per faiss search call (bounds memory)")
