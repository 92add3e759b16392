"""A faster record decoder for kafka-python's fetcher: the v2 record loop without per-field calls.

kafka-python decodes every fetched record in pure Python: six ``decode_varint`` calls, a
``DefaultRecord`` object read back through nine properties, two deserializer calls and then the
``ConsumerRecord``. At the streaming engine's rates that was a fifth of the process's time,
~15 us a record. ``install()`` replaces ``Fetcher.PartitionRecords._unpack_records`` with the
same generator whose inner loop, for the common batch (message format v2, no per-record CRC
check, no deserializers), reads the record fields straight from the batch buffer with
single-byte varints decoded inline: ~4 us a record. Everything else (the batch loop,
transactions and aborted batches, control batches, compression, the bookkeeping of
``next_fetch_offset``, ``records_read`` and ``bytes_read`` before each yield, corrupt-record
errors) is kafka-python's own logic, kept line for line; other batches take kafka-python's loop.

The patch is tied to the kafka-python versions it was checked against (``SUPPORTED``); with
any other version ``install()`` leaves the library alone. ``make_consumer`` installs it unless
``RTML_KAFKA_FAST_RECORDS=false`` (``KafkaSettings.kafka_fast_records``). The integration test
``test_kafka_records`` consumes the same topics with and without it and compares every field of
every record.
"""

from __future__ import annotations

import logging

import kafka
import kafka.errors as Errors
from kafka.consumer import fetcher as _fetcher
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.fetcher import IsolationLevel
from kafka.record.util import decode_varint

log = logging.getLogger(__name__)

SUPPORTED = ("3.0.",)
_original = _fetcher.Fetcher.PartitionRecords._unpack_records


def _fast_records(self, tp, batch):
    """The records of a v2 batch as ConsumerRecords, with the fetcher's bookkeeping before each yield."""
    batch._maybe_uncompress()  # noqa: SLF001 - kafka-python's own decompression
    buffer, pos = batch._buffer, batch._pos  # noqa: SLF001
    base_offset, first_ts, max_ts = batch.base_offset, batch.first_timestamp, batch.max_timestamp
    ts_type = batch.timestamp_type
    log_append = ts_type == batch.LOG_APPEND_TIME
    topic, partition, epoch = tp.topic, tp.partition, self.leader_epoch
    try:
        for _ in range(batch.records_count):
            # Record: length varint, attributes int8, timestamp delta varlong, offset delta varint,
            # key and value (varint length, -1 = null), header count, headers. Varints are zigzag:
            # one byte below 0x80 is the common case and is decoded inline, so are two-byte lengths
            # (records and values of 64 to 8,191 bytes) and offset deltas; longer ones by kafka-python.
            b = buffer[pos]
            if b < 0x80:
                length, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:  # two bytes: records of 64 to 8,191 bytes
                b = (b & 0x7F) | buffer[pos + 1] << 7
                length, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                length, pos = decode_varint(buffer, pos)
            start = pos
            pos += 1  # attributes: unused by format v2 records
            b = buffer[pos]
            if b < 0x80:
                ts_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                ts_delta, pos = decode_varint(buffer, pos)
            b = buffer[pos]
            if b < 0x80:
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:
                b = (b & 0x7F) | buffer[pos + 1] << 7
                offset_delta, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                offset_delta, pos = decode_varint(buffer, pos)
            b = buffer[pos]
            if b < 0x80:
                key_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            else:
                key_len, pos = decode_varint(buffer, pos)
            if key_len >= 0:
                key = bytes(buffer[pos:pos + key_len])
                pos += key_len
            else:
                key = None
            b = buffer[pos]
            if b < 0x80:
                value_len, pos = (b >> 1) ^ -(b & 1), pos + 1
            elif buffer[pos + 1] < 0x80:
                b = (b & 0x7F) | buffer[pos + 1] << 7
                value_len, pos = (b >> 1) ^ -(b & 1), pos + 2
            else:
                value_len, pos = decode_varint(buffer, pos)
            if value_len >= 0:
                value = bytes(buffer[pos:pos + value_len])
                pos += value_len
            else:
                value = None
            header_count, pos = decode_varint(buffer, pos)
            if header_count < 0:
                raise Errors.CorruptRecordError(f"Found invalid number of record headers {header_count}")
            headers = []
            header_size = -1
            if header_count:
                header_size = 0
                for _h in range(header_count):
                    h_key_len, pos = decode_varint(buffer, pos)
                    if h_key_len < 0:
                        raise Errors.CorruptRecordError(f"Invalid negative header key size {h_key_len}")
                    h_key = buffer[pos:pos + h_key_len].decode("utf-8")
                    pos += h_key_len
                    h_value_len, pos = decode_varint(buffer, pos)
                    if h_value_len >= 0:
                        h_value = bytes(buffer[pos:pos + h_value_len])
                        pos += h_value_len
                        header_size += len(h_key.encode("utf-8")) + h_value_len
                    else:
                        h_value = None
                        header_size += len(h_key.encode("utf-8"))
                    headers.append((h_key, h_value))
            if pos - start != length:
                raise Errors.CorruptRecordError(
                    f"Invalid record size: expected to read {length} bytes in record payload, but instead read {pos - start}")
            offset = base_offset + offset_delta
            self.records_read += 1
            self.bytes_read += length
            self.next_fetch_offset = offset + 1
            yield ConsumerRecord(topic, partition, epoch, offset, max_ts if log_append else first_ts + ts_delta, ts_type,
                                 key, value, headers, None, -1 if key is None else key_len,
                                 -1 if value is None else value_len, header_size)
    except (ValueError, IndexError) as err:
        raise Errors.CorruptRecordError(f"Found invalid record structure: {err!r}") from None
    if pos != len(buffer):
        raise Errors.CorruptRecordError(f"{len(buffer) - pos} unconsumed bytes after all records consumed")


def _unpack_records(self, tp, records, key_deserializer, value_deserializer):
    """kafka-python 3.0's ``PartitionRecords._unpack_records`` with ``_fast_records`` for plain v2 batches."""
    fast = not self.check_crcs and key_deserializer is None and value_deserializer is None
    try:
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch

            if self.check_crcs and not batch.validate_crc():
                raise Errors.CorruptRecordError(
                    "Record batch for partition %s at offset %s failed crc check" % (
                        self.topic_partition, batch.base_offset))

            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
                    self._consume_aborted_transactions_up_to(batch.last_offset)

                    producer_id = batch.producer_id
                    if self._contains_abort_marker(batch):
                        try:
                            self.aborted_producer_ids.remove(producer_id)
                        except KeyError:
                            pass
                    elif self._is_batch_aborted(batch):
                        log.debug("Skipping aborted record batch from partition %s with producer_id %s and"
                                  " offsets %s to %s",
                                  self.topic_partition, producer_id, batch.base_offset, batch.last_offset)
                        self.next_fetch_offset = batch.next_offset
                        batch = records.next_batch()
                        continue

                if batch.is_control_batch:
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue

                if fast:
                    yield from _fast_records(self, tp, batch)
                    batch = records.next_batch()
                    continue

            for record in batch:
                if self.check_crcs and not record.validate_crc():
                    raise Errors.CorruptRecordError(
                        "Record for partition %s at offset %s failed crc check" % (
                            self.topic_partition, record.offset))
                key_size = len(record.key) if record.key is not None else -1
                value_size = len(record.value) if record.value is not None else -1
                key = self._deserialize(key_deserializer, tp.topic, record.headers, record.key)
                value = self._deserialize(value_deserializer, tp.topic, record.headers, record.value)
                headers = record.headers
                header_size = sum(
                    len(h_key.encode("utf-8")) + (len(h_val) if h_val is not None else 0) for h_key, h_val in
                    headers) if headers else -1
                self.records_read += 1
                self.bytes_read += record.size_in_bytes
                self.next_fetch_offset = record.offset + 1
                yield ConsumerRecord(
                    tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
                    record.timestamp_type, key, value, record.headers, record.checksum,
                    key_size, value_size, header_size)

            batch = records.next_batch()
        else:
            if last_batch and last_batch.magic == 2:
                self.next_fetch_offset = last_batch.next_offset
            self.drain()

    # If unpacking raises StopIteration, it is erroneously caught by the generator (kafka-python issue 545).
    except StopIteration:
        log.exception('StopIteration raised unpacking messageset')
        raise RuntimeError('StopIteration raised unpacking messageset')


def install() -> bool:
    """Use the fast record loop in every consumer of this process; False when this kafka-python is not a checked one."""
    if not kafka.__version__.startswith(SUPPORTED):
        log.info("kafka-python %s is not one the fast record loop was checked against; using its own", kafka.__version__)
        return False
    _fetcher.Fetcher.PartitionRecords._unpack_records = _unpack_records
    return True


def uninstall() -> None:
    """Back to kafka-python's own record loop."""
    _fetcher.Fetcher.PartitionRecords._unpack_records = _original
