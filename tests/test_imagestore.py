"""Pool images by key: a tar that its partition's marker lists must be there, else a partition error."""

import pytest

from curation.atomic import write_json
from curation.download.shardwriter import ShardWriter
from curation.errors import PartitionError
from curation.imagestore import pool_images
from curation.stages.base import files_dir
from tests.download.images import jpeg


def _committed_partition(run_dir):
    side = files_dir(run_dir / "stages/download/fetch")
    side.mkdir(parents=True)
    with ShardWriter(side / "part-000000.tar") as writer:
        writer.write_sample("000000000000", jpeg(32, 32), {"url": "http://pool.test/a.jpg"})
    write_json(
        side / "part-000000.stats.json", {"files": {"part-000000.tar": (side / "part-000000.tar").stat().st_size}}
    )
    write_json(side / "part-000001.stats.json", {"files": {}})  # a partition without images has no tar
    return side / "part-000000.tar"


def test_lost_or_torn_tar_is_a_partition_error_naming_it(tmp_path):
    tar = _committed_partition(tmp_path)
    assert pool_images(tmp_path, 0).keys() == ["000000000000"]
    assert len(pool_images(tmp_path, 1)) == 0
    tar.write_bytes(tar.read_bytes()[:-512])
    with pytest.raises(PartitionError, match=f"{tar} has .* bytes, its marker lists .*redo partition 0"):
        pool_images(tmp_path, 0)
    tar.unlink()
    with pytest.raises(PartitionError, match=f"{tar} is missing: rerun the download stage to redo partition 0"):
        pool_images(tmp_path, 0)
