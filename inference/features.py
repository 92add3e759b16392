"""Online features from Feast: one batched read for all rows of all concurrent requests."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from feature_repo.model_inputs import FEATURE_SERVICE
from feature_repo.store import FeatureStoreSettings, open_store
from inference import metrics
from inference.assembly import ONLINE_FEATURES
from inference.batching import MicroBatcher


class OnlineFeatureReader:
    """Reads customer and terminal features for (customer_id, terminal_id) rows.

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
        self.read(np.zeros((1, 2), dtype=np.int64))  # loads the registry and opens the store now, not on a request

    def read(self, keys: np.ndarray) -> np.ndarray:
        """Synchronous read: int64 [N, 2] (customer_id, terminal_id) -> float64 [N, 12], NaN where absent."""
        start = time.perf_counter()
        response = self._store.get_online_features(
            features=self._service,
            entity_rows={"customer_id": keys[:, 0].tolist(), "terminal_id": keys[:, 1].tolist()},
        )
        cols = response.to_dict()
        out = np.array([cols[name] for name in ONLINE_FEATURES], dtype=np.float64).T
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
