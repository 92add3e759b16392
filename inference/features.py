"""Online tiles from Feast: one batched read for all rows of all concurrent requests.

The store holds each entity's packed tiles (``feature_repo.tiles``); the windows are evaluated at
request time by ``inference.assembly``, so this module only moves bytes.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.model_inputs import FEATURE_SERVICE
from feature_repo.store import FeatureStoreSettings, open_store
from feature_repo.tiles import TILES_FEATURE
from inference import metrics
from inference.batching import MicroBatcher
from rtml_common.errors import ConfigurationError


class OnlineFeatureReader:
    """Reads every aggregation's packed tiles for rows of entity keys (``AGGREGATIONS`` order: customer, terminal).

    Feast's SDK read is synchronous, so it runs on a small thread pool, never on the event
    loop; rows of requests arriving together are merged into one ``get_online_features`` call.
    The feature service is resolved once; the registry is cached (``allow_registry_cache``).
    """

    def __init__(self, settings: FeatureStoreSettings, threads: int = 1, max_batch_size: int = 512):
        self._store = open_store(settings)
        self._service = self._store.get_feature_service(FEATURE_SERVICE, allow_cache=True)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="feast-read") if threads > 0 else None
        self._max_batch_size = max_batch_size
        self._batcher: MicroBatcher | None = None
        self._keys = [a.join_key for a in AGGREGATIONS]
        # Full feature names: every view's feature is called ``tiles``.
        self._columns = [f"{a.feature_view}__{TILES_FEATURE}" for a in AGGREGATIONS]
        served = {f"{p.name}__{f.name}" for p in self._service.feature_view_projections for f in p.features}
        if missing := [c for c in self._columns if c not in served]:
            raise ConfigurationError(f"feature service '{FEATURE_SERVICE}' lacks {missing}: apply the feature repo the transformer runs")
        self.read(np.zeros((1, len(AGGREGATIONS)), dtype=np.int64))  # loads the registry and opens the store now, not on a request

    def read(self, keys: np.ndarray) -> np.ndarray:
        """Synchronous read: keys [N, len(AGGREGATIONS)] -> object [N, len(AGGREGATIONS)]: tiles (bytes), None where absent."""
        start = time.perf_counter()
        response = self._store.get_online_features(
            features=self._service,
            entity_rows={key: keys[:, j].tolist() for j, key in enumerate(self._keys)},
            full_feature_names=True,
        )
        cols = response.to_dict()
        out = np.empty((len(keys), len(self._columns)), dtype=object)
        for j, name in enumerate(self._columns):
            out[:, j] = cols[name]
        metrics.FEATURE_FETCH_DURATION.observe(time.perf_counter() - start)
        metrics.FEATURE_FETCH_ROWS.observe(len(keys))
        return out

    async def fetch(self, keys: np.ndarray) -> np.ndarray:
        """``read`` off the event loop, batched with concurrent callers."""
        if self._batcher is None:
            self._batcher = MicroBatcher(self._read_async, self._max_batch_size)
        return await self._batcher.submit(keys)

    async def _read_async(self, keys: np.ndarray) -> np.ndarray:
        if self._pool is None:  # inline: a local SQLite read is CPU-bound Python, a thread only adds GIL hand-offs
            return self.read(keys)
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.read, keys)

    def close(self) -> None:
        """Stop the read threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
