"""Request ids are made ahead in batches: they must stay unique, well-formed, and never shared with a forked worker."""

from __future__ import annotations

import os
import re

from asgigate import _request_id as request_id_module
from asgigate._request_id import new_request_id


def test_ids_are_unique_hex_across_batches() -> None:
    ids = [new_request_id() for _ in range(1000)]  # several batches of 256
    assert len(set(ids)) == 1000
    assert all(re.fullmatch(rb"[0-9a-f]{24}", i) for i in ids)


def test_a_forked_child_does_not_reuse_the_parents_prepared_ids() -> None:
    new_request_id()  # the parent now holds a batch of ids made ahead
    prepared = set(request_id_module._fresh_ids)
    assert prepared
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        try:
            os.write(write_end, b"".join(new_request_id() for _ in range(8)))
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 4096):
        data += chunk
    os.close(read_end)
    os.waitpid(pid, 0)
    child_ids = {data[i : i + 24] for i in range(0, len(data), 24)}
    assert len(child_ids) == 8
    assert not child_ids & prepared
